//! Real QEMU as the client (ignored by default: needs `qemu-system-x86_64`,
//! from Debian's `qemu-system-x86`). Run with
//! `cargo test -p ivshmem --test qemu -- --ignored`.
//!
//! QEMU's ivshmem-doorbell device reads the version, its id and the shared
//! memory while it starts and exits with an error if they are wrong; so a
//! QEMU that is still running after the handshake accepted it.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::TempDir;
use ivshmem::{server, wire, EventFd, SharedMemory};

const QEMU: &str = "qemu-system-x86_64";
/// A power of two: QEMU maps it as BAR2.
const SHM_LEN: usize = 4 << 20;
const VECTORS: usize = 2;
/// QEMU's id; the back end is peer 0.
const GUEST_ID: u16 = 1;

/// A QEMU process, killed on drop.
struct Qemu(Child);

impl Qemu {
    fn start(sock: &Path, extra: &[&str]) -> Qemu {
        let chardev = format!("socket,path={},id=ib", sock.display());
        let device = format!("ivshmem-doorbell,chardev=ib,vectors={VECTORS}");
        let child = Command::new(QEMU)
            .args([
                "-accel", "tcg", "-machine", "q35", "-m", "64M", "-display", "none", "-nic", "none",
            ])
            .args(["-chardev", &chardev, "-device", &device])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run {QEMU} (apt-get install qemu-system-x86): {err}")
            });
        Qemu(child)
    }

    /// `Some(stderr)` if QEMU has exited.
    fn exited(&mut self) -> Option<String> {
        let status = self.0.try_wait().unwrap()?;
        let mut stderr = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        Some(format!("{status}: {stderr}"))
    }

    /// Waits up to `timeout` for QEMU to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(why) = self.exited() {
                return Some(why);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for QEMU to connect (it does so while it starts).
fn accept(listener: &UnixListener, qemu: &mut Qemu) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("accept: {err}"),
        }
        if let Some(why) = qemu.exited() {
            panic!("QEMU exited before connecting: {why}");
        }
        assert!(Instant::now() < deadline, "QEMU did not connect");
        thread::sleep(Duration::from_millis(20));
    }
}

struct Backend {
    _stream: UnixStream,
    shm: Arc<SharedMemory>,
    _own: Vec<EventFd>,
    _guest: Vec<EventFd>,
}

/// The whole handshake: the back end is peer 0, QEMU peer 1, both with
/// `VECTORS` vectors.
fn handshake(stream: UnixStream) -> Backend {
    let shm = Arc::new(SharedMemory::create("ivshmem-qemu-test", SHM_LEN).unwrap());
    let vectors = || {
        (0..VECTORS)
            .map(|_| EventFd::new().unwrap())
            .collect::<Vec<_>>()
    };
    let (own, guest) = (vectors(), vectors());
    server::send_handshake(&stream, GUEST_ID, shm.fd(), &[(0, &own)], &guest).unwrap();
    Backend {
        _stream: stream,
        shm,
        _own: own,
        _guest: guest,
    }
}

#[test]
#[ignore = "needs qemu-system-x86_64; run with --ignored"]
fn qemu_accepts_the_handshake() {
    let dir = TempDir::new("qemu");
    let sock = dir.socket();
    let listener = server::bind(&sock).unwrap();
    let mut qemu = Qemu::start(&sock, &["-S", "-nodefaults"]);
    let stream = accept(&listener, &mut qemu);
    let _backend = handshake(stream);
    if let Some(why) = qemu.wait_exit(Duration::from_secs(2)) {
        panic!("QEMU rejected the handshake: {why}");
    }
}

/// The negative control: the same harness sees QEMU reject a bad handshake,
/// so the test above means something.
#[test]
#[ignore = "needs qemu-system-x86_64; run with --ignored"]
fn qemu_rejects_a_wrong_version() {
    let dir = TempDir::new("qemu-bad");
    let sock = dir.socket();
    let listener = server::bind(&sock).unwrap();
    let mut qemu = Qemu::start(&sock, &["-S", "-nodefaults"]);
    let stream = accept(&listener, &mut qemu);
    wire::send(&stream, 1, None).unwrap();
    let why = qemu
        .wait_exit(Duration::from_secs(10))
        .expect("QEMU kept running after protocol version 1");
    assert!(why.contains("version"), "{why}");
}

/// The HMP monitor on a UNIX socket: one command, its output.
struct Monitor(BufReader<UnixStream>);

impl Monitor {
    fn connect(path: &Path) -> Monitor {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(err) => panic!("monitor: {err}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut monitor = Monitor(BufReader::new(stream));
        monitor.until_prompt();
        monitor
    }

    fn until_prompt(&mut self) -> String {
        let mut out = Vec::new();
        while !out.ends_with(b"(qemu) ") {
            let buf = self.0.fill_buf().unwrap();
            assert!(!buf.is_empty(), "monitor closed");
            let n = buf.len();
            out.extend_from_slice(buf);
            self.0.consume(n);
        }
        String::from_utf8_lossy(&out).replace('\r', "")
    }

    fn command(&mut self, cmd: &str) -> String {
        writeln!(self.0.get_mut(), "{cmd}").unwrap();
        self.until_prompt()
    }
}

/// The guest-physical address of BAR2 of the ivshmem device, once the
/// firmware has assigned it.
fn bar2(info_pci: &str) -> Option<u64> {
    let device = info_pci
        .split("Bus ")
        .find(|dev| dev.contains("1af4:1110"))?;
    let line = device
        .lines()
        .find(|line| line.trim_start().starts_with("BAR2:"))?;
    let at = line.split(" at 0x").nth(1)?;
    let addr = u64::from_str_radix(at.split_whitespace().next()?, 16).ok()?;
    (addr != u64::MAX && addr != 0).then_some(addr)
}

/// What the back end writes into the shared memory shows up in the guest's
/// physical memory at BAR2: QEMU mapped the very memfd we sent.
#[test]
#[ignore = "needs qemu-system-x86_64; run with --ignored"]
fn qemu_maps_the_shared_memory_as_bar2() {
    let dir = TempDir::new("qemu-bar2");
    let sock = dir.socket();
    let mon = dir.path().join("monitor.sock");
    let listener = server::bind(&sock).unwrap();
    let monitor_arg = format!("unix:{},server=on,wait=off", mon.display());
    // No -S: SeaBIOS must run to assign the BARs.
    let mut qemu = Qemu::start(&sock, &["-nodefaults", "-monitor", &monitor_arg]);
    let stream = accept(&listener, &mut qemu);
    let backend = handshake(stream);
    let window = backend.shm.window();
    window
        .write_bytes(0, &0x1122_3344_5566_7788u64.to_le_bytes())
        .unwrap();
    window
        .write_bytes(SHM_LEN - 4, &0xcafe_f00du32.to_le_bytes())
        .unwrap();

    let mut monitor = Monitor::connect(&mon);
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        if let Some(why) = qemu.exited() {
            panic!("QEMU exited: {why}");
        }
        let info = monitor.command("info pci");
        if let Some(addr) = bar2(&info) {
            break addr;
        }
        assert!(Instant::now() < deadline, "BAR2 never assigned:\n{info}");
        thread::sleep(Duration::from_millis(100));
    };
    let first = monitor.command(&format!("xp /2wx {base:#x}"));
    assert!(
        first.contains("0x55667788") && first.contains("0x11223344"),
        "{first}"
    );
    let last = monitor.command(&format!("xp /1wx {:#x}", base + SHM_LEN as u64 - 4));
    assert!(last.contains("0xcafef00d"), "{last}");
}
