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
