//! Linux-side client programs the tests run (in a network namespace) against
//! guests: Python scripts, because `python3` is on every test machine.

/// A Python program that opens `count` HTTP/1.0 GETs of `/` to `addr`:80
/// at once, each on its own connection and thread, and prints
/// `N ok, R refused, F failed`: answers whose status line says 200,
/// connections refused (reset), and everything else (timeouts included).
pub fn http_burst(addr: &str, count: usize) -> String {
    format!(
        r#"
import socket, threading
ok = refused = failed = 0
lock = threading.Lock()
def get():
    global ok, refused, failed
    try:
        s = socket.create_connection(("{addr}", 80), timeout=120)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        good = data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
        with lock:
            if good: ok += 1
            else: failed += 1
    except ConnectionRefusedError:
        with lock: refused += 1
    except Exception:
        with lock: failed += 1
threads = [threading.Thread(target=get) for _ in range({count})]
for t in threads: t.start()
for t in threads: t.join()
print("%d ok, %d refused, %d failed" % (ok, refused, failed))
"#
    )
}

/// A Python program that opens `count` connections at once to `addr`:`port`
/// and uses each as its service expects: echo (7) must return 16 bytes
/// sent, discard (9) takes 16 KiB and closes, chargen (19) must send at
/// least 1000 bytes. Prints `N ok, R refused, F failed` like
/// [`http_burst`].
pub fn service_burst(addr: &str, port: u16, count: usize) -> String {
    format!(
        r#"
import socket, threading
ok = refused = failed = 0
lock = threading.Lock()
def use(s):
    if {port} == 7:
        msg = b"0123456789abcdef"
        s.sendall(msg)
        back = b""
        while len(back) < len(msg):
            chunk = s.recv(64)
            if not chunk:
                return False
            back += chunk
        return back == msg
    if {port} == 9:
        s.sendall(bytes(16384))
        s.shutdown(socket.SHUT_WR)
        return s.recv(64) == b""
    got = 0
    while got < 1000:
        chunk = s.recv(4096)
        if not chunk:
            return False
        got += len(chunk)
    return True
why = {{}}
def one():
    global ok, refused, failed
    stage = "connect"
    try:
        s = socket.create_connection(("{addr}", {port}), timeout=120)
        stage = "use"
        good = use(s)
        s.close()
        with lock:
            if good: ok += 1
            else:
                failed += 1
                why["short"] = why.get("short", 0) + 1
    except Exception as e:
        with lock:
            if stage == "connect" and isinstance(e, (ConnectionRefusedError, ConnectionResetError)):
                refused += 1
            else:
                failed += 1
            k = stage + ": " + type(e).__name__
            why[k] = why.get(k, 0) + 1
threads = [threading.Thread(target=one) for _ in range({count})]
for t in threads: t.start()
for t in threads: t.join()
print("%d ok, %d refused, %d failed" % (ok, refused, failed), why if why else "")
"#
    )
}
