//! Issue 9, part A: a compromised guest against the real `ib-backend`.
//!
//! The attackers hold the real descriptors, obtained through the real
//! ivshmem-doorbell handshake (the memfd, the back end's doorbell eventfd,
//! their own interrupt eventfd, and the socket), and try everything a
//! guest process or a compromised QEMU could: fill the interrupt counter
//! with `O_NONBLOCK` cleared, drain the doorbell in blocking mode, truncate
//! and grow the memory, ring a dead session's doorbell without end, write
//! to the socket without end, scribble over the rings, and send the control
//! socket a huge line or nothing at all. Meanwhile two honest hosted guests
//! on the same worker thread (`--workers 1`) keep moving TCP data, checked
//! by SHA-256.
//!
//! Asserted: the worker process is never replaced, every honest transfer
//! completes with matching hashes, each detectable attacker is
//! disconnected and counted, and afterwards the worker is idle while a dead
//! session's doorbell is still being rung.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivshmem::client::Connection;
use ivshmem::EventFd;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use qemu_tests::backend::Seat;
use qemu_tests::guard::{cpu_ticks_of, Guard};
use qemu_tests::{scratch_dir, Backend, HarnessError, Hosted, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::LayoutParams;
use verbs_shim::front::FrontHca;
use verbs_shim::notify::Notify;

/// The largest value an eventfd counter holds.
const COUNTER_MAX: u64 = 0xffff_ffff_ffff_fffe;
/// Bytes per honest transfer (about a second each on the sim fabric).
const TRANSFER: u64 = 32 << 20;
const ATTACKERS: [&str; 4] = ["stall", "drainer", "truncator", "talker"];

fn fail(what: impl std::fmt::Display) -> HarnessError {
    HarnessError(what.to_string())
}

/// A counter from a guest's stats line, 0 if absent (the per-kind
/// violation counters only show when non-zero).
fn count(be: &Backend, guest: &str, key: &str) -> Result<u64> {
    let stats = be.stats()?;
    let prefix = format!("guest {guest} ");
    Ok(stats
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        })
        .unwrap_or(0))
}

/// Waits until `guest`'s counter `key` is at least 1: the worker
/// publishes a seat's counters just after it closes the seat's socket, so
/// a hang-up can be seen a moment before its count.
fn wait_counted(be: &Backend, guest: &str, key: &str) -> Result<()> {
    be.wait_until(
        &format!("{guest}: {key} counted"),
        Duration::from_secs(5),
        |b| b.counter(guest, key).is_ok_and(|n| n >= 1),
    )?;
    Ok(())
}

fn clear_nonblocking(event: &EventFd) -> Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(event.as_fd(), FcntlArg::F_GETFL).map_err(fail)?);
    fcntl(
        event.as_fd(),
        FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
    )
    .map_err(fail)?;
    Ok(())
}

struct Bell(EventFd);

impl Notify for Bell {
    fn notify(&self) {
        let _ = self.0.notify();
    }
}

/// A guest process gone bad: the descriptors QEMU would hold.
struct Attacker {
    name: &'static str,
    conn: Connection,
    /// The back end's doorbell (peer 0, vector 0).
    doorbell: EventFd,
}

impl Attacker {
    fn connect(be: &Backend, name: &'static str) -> Result<Attacker> {
        let conn =
            ivshmem::client::connect(&be.socket(name), 1, Duration::from_secs(10)).map_err(fail)?;
        let doorbell = conn
            .peers
            .get(&0)
            .and_then(|v| v.first())
            .ok_or_else(|| fail("no doorbell for peer 0"))?
            .try_clone()?;
        be.wait_until(&format!("{name} attached"), Duration::from_secs(10), |b| {
            b.state(name).is_ok_and(|s| s != "waiting")
        })?;
        Ok(Attacker {
            name,
            conn,
            doorbell,
        })
    }

    fn interrupt(&self) -> Result<&EventFd> {
        self.conn
            .vectors
            .first()
            .ok_or_else(|| fail("no interrupt vector"))
    }

    /// Speaks the channel protocol far enough to be served (which makes
    /// the back end raise interrupts). Errors are ignored: the back end
    /// may already have hung up.
    fn attach_front(&self) -> Option<FrontHca<Bell>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let window = self.conn.shm.window();
        let mut front = loop {
            let bell = Bell(self.doorbell.try_clone().ok()?);
            match FrontHca::attach(window.clone(), LayoutParams::DEFAULT, bell) {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return None,
            }
        };
        while Instant::now() < deadline {
            match front.poll_connected() {
                Ok(true) => return Some(front),
                Ok(false) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits until the back end has closed our socket.
    fn wait_hung_up(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.conn
            .stream
            .set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            match self.conn.stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return Ok(()),
            }
        }
        Err(fail(format!("{}: the back end never hung up", self.name)))
    }
}

/// Honest traffic: g1 sends to g2 again and again until told to stop;
/// returns the hash of every completed send.
fn honest_traffic(
    dir: PathBuf,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<Vec<String>>> {
    std::thread::spawn(move || {
        let mut hashes = Vec::new();
        let bytes = TRANSFER.to_string();
        let mut seed = 1u64;
        while hashes.is_empty() || !stop.load(Ordering::Relaxed) {
            let out = Hosted::run(
                &dir,
                &format!("g1-send-{seed}"),
                &socket,
                "10.77.0.1/24",
                &["send", "10.77.0.2:9", &bytes, "--seed", &seed.to_string()],
                Duration::from_secs(60),
            )?;
            let sha = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("sent {bytes} bytes sha256 ")))
                .and_then(|r| r.split_whitespace().next())
                .ok_or_else(|| fail(format!("no sha in {out}")))?;
            hashes.push(sha.to_owned());
            seed += 1;
        }
        Ok(hashes)
    })
}

/// Attack 1: fill the interrupt counter with O_NONBLOCK cleared on the
/// shared file description, then get served: the back end's next
/// interrupt would block for ever.
fn stall_the_interrupt(be: &Backend, evil: &mut Attacker) -> Result<()> {
    let interrupt = evil.interrupt()?.try_clone()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = interrupt.drain();
        match nix::unistd::write(interrupt.as_fd(), &COUNTER_MAX.to_ne_bytes()) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => continue,
            Err(e) => return Err(fail(format!("cannot fill the counter: {e}"))),
        }
    }
    clear_nonblocking(&interrupt)?;
    let _front = evil.attach_front();
    evil.wait_hung_up(Duration::from_secs(10))?;
    wait_counted(be, evil.name, "violation_disconnects")?;
    let stalls = count(be, evil.name, "transport_violation.interrupt_stalled")?
        + count(be, evil.name, "transport_violation.interrupt_counter_full")?;
    assert_eq!(stalls, 1, "{}", be.stats()?);
    Ok(())
}

/// Attack 2 and 5: drain the doorbell in blocking mode from a thread that
/// races the back end for every ring; then write to the socket without end.
fn drain_then_talk(be: &Backend, evil: &mut Attacker) -> Result<()> {
    let front = evil.attach_front();
    assert!(front.is_some(), "the drainer attaches like an honest guest");
    clear_nonblocking(&evil.doorbell)?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (doorbell, stop) = (evil.doorbell.try_clone()?, stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                let _ = nix::unistd::read(doorbell.as_fd(), &mut buf);
            }
        })
    };
    for i in 0..20_000 {
        evil.doorbell.notify()?;
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    evil.doorbell.notify()?;
    let _ = reader.join();
    assert_eq!(count(be, evil.name, "violation_disconnects")?, 0);

    // Now talk on the socket, for ever (until the back end hangs up).
    let mut talker = evil.conn.stream.try_clone()?;
    talker.set_write_timeout(Some(Duration::from_secs(2)))?;
    let writer = std::thread::spawn(move || {
        let started = Instant::now();
        let chunk = [0x5au8; 4096];
        while started.elapsed() < Duration::from_secs(30) {
            if talker.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    evil.wait_hung_up(Duration::from_secs(10))?;
    wait_counted(be, evil.name, "transport_violation.socket_data")?;
    let stopped = writer.join().map_err(|_| fail("writer panicked"))?;
    assert!(stopped, "the back end never closed the talking socket");
    assert_eq!(
        count(be, evil.name, "transport_violation.socket_data")?,
        1,
        "{}",
        be.stats()?
    );
    Ok(())
}

/// Attack 3: truncate the memory to nothing and to twice its size, ring;
/// then scribble over the rings (a protocol violation the back end sees).
fn truncate_then_scribble(be: &Backend, evil: &mut Attacker) -> Result<()> {
    let len = evil.conn.shm.len() as i64;
    let memfd = evil.conn.shm.fd();
    assert!(
        nix::unistd::ftruncate(memfd, 0).is_err(),
        "shrinking must fail"
    );
    assert!(
        nix::unistd::ftruncate(memfd, 2 * len).is_err(),
        "growing must fail"
    );
    let front = evil.attach_front();
    assert!(front.is_some(), "the window is intact and served");
    for _ in 0..100 {
        evil.doorbell.notify()?;
    }
    let window = evil.conn.shm.window();
    let layout = ring::Layout::compute(LayoutParams::DEFAULT, window.len()).map_err(fail)?;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let started = Instant::now();
    while count(be, evil.name, "violation_disconnects")? == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "scribbling never disconnected the guest\n{}",
            be.stats()?
        );
        for _ in 0..64 {
            let offset = rng.gen_range(0..layout.buffers.start);
            let len = rng.gen_range(1..=8).min(layout.buffers.start - offset);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = window.write_bytes(offset, &bytes);
            let _ = evil.doorbell.notify();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    evil.wait_hung_up(Duration::from_secs(10))?;
    wait_counted(be, evil.name, "violations")?;
    assert!(count(be, evil.name, "violations")? >= 1);
    Ok(())
}

/// Attack 6: the control socket gets a megabyte without a newline, and a
/// client that says nothing; `stats` keeps answering.
fn flood_the_control_socket(be: &Backend) -> Result<()> {
    let silent = UnixStream::connect(&be.control)?;
    let mut flood = UnixStream::connect(&be.control)?;
    flood.set_write_timeout(Some(Duration::from_secs(5)))?;
    flood.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = flood.try_clone()?;
    let sender = std::thread::spawn(move || {
        let chunk = [b'x'; 4096];
        let mut sent = 0usize;
        while sent < (1 << 20) {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut reply = String::new();
    let _ = flood.read_to_string(&mut reply);
    let sent = sender.join().map_err(|_| fail("control writer panicked"))?;
    assert!(
        reply.starts_with("error: request longer than 4096 bytes"),
        "reply {reply:?}"
    );
    assert!(sent < (1 << 20), "the back end read the whole megabyte");
    let started = Instant::now();
    be.stats()?;
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
    Ok(())
}

/// Rings a disconnected session's doorbell in bursts until told to stop.
fn doorbell_storm(doorbell: EventFd, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rings = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..200 {
                if doorbell.notify().is_ok() {
                    rings += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        rings
    })
}

fn receiver_hashes(g2: &Guard) -> Vec<String> {
    g2.output()
        .lines()
        .filter(|l| l.contains(&format!(": {TRANSFER} bytes sha256 ")))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

fn seats(dir: &Path) -> Vec<Seat> {
    let mut seats = vec![Seat::new(dir, "g1"), Seat::new(dir, "g2")];
    seats.extend(ATTACKERS.iter().map(|a| Seat::new(dir, a)));
    seats
}

#[test]
fn a_compromised_guest_cannot_stall_crash_or_spin_the_worker() -> Result<()> {
    let started = Instant::now();
    let dir = scratch_dir("compromised")?;
    let be = Backend::start(&dir, &seats(&dir), &["--workers", "1"])?;
    let worker = be.worker_pid()?;
    // Owner-only sockets by default.
    for socket in [be.socket("g1"), be.control.clone()] {
        let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", socket.display());
    }
    let g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let traffic_done = Arc::new(AtomicBool::new(false));
    let traffic = honest_traffic(dir.clone(), be.socket("g1"), traffic_done.clone());
    be.wait_until("honest traffic flowing", Duration::from_secs(30), |b| {
        b.counter("g1", "tx_bytes").is_ok_and(|n| n > 1 << 20)
    })?;

    let mut stall = Attacker::connect(&be, "stall")?;
    stall_the_interrupt(&be, &mut stall)?;
    // The disconnected attacker keeps its doorbell and rings it from now
    // on, through every other attack and the idle check.
    let storm_stop = Arc::new(AtomicBool::new(false));
    let storm = doorbell_storm(stall.doorbell.try_clone()?, storm_stop.clone());

    let mut drainer = Attacker::connect(&be, "drainer")?;
    drain_then_talk(&be, &mut drainer)?;
    let mut truncator = Attacker::connect(&be, "truncator")?;
    truncate_then_scribble(&be, &mut truncator)?;
    flood_the_control_socket(&be)?;
    // A talker that writes before it even attaches.
    let mut talker = Attacker::connect(&be, "talker")?;
    talker.conn.stream.write_all(b"hello?")?;
    talker.wait_hung_up(Duration::from_secs(10))?;
    wait_counted(&be, "talker", "transport_violation.socket_data")?;
    assert_eq!(count(&be, "talker", "transport_violation.socket_data")?, 1);

    traffic_done.store(true, Ordering::Relaxed);
    let sent = traffic
        .join()
        .map_err(|_| fail("honest sender panicked"))??;
    let got = receiver_hashes(&g2);
    for sha in &sent {
        assert!(got.contains(sha), "sent {sha}, received {got:?}");
    }

    // Same worker process all along.
    assert_eq!(be.worker_pid()?, worker, "the worker was replaced");
    let stats = be.stats()?;
    let total = stats
        .lines()
        .find(|l| l.starts_with("total "))
        .ok_or_else(|| fail("no total line"))?;
    assert!(total.contains(" restarts=0 "), "{total}");
    let log = be.guard.output();
    assert!(!log.contains("died"), "{}", be.guard.tail(20));
    // Who connected is on record.
    assert!(
        log.contains(&format!(
            "guest stall: connection from pid={}",
            std::process::id()
        )),
        "{}",
        be.guard.tail(20)
    );
    for honest in ["g1", "g2"] {
        assert_eq!(count(&be, honest, "violations")?, 0, "{stats}");
        assert_eq!(count(&be, honest, "violation_disconnects")?, 0, "{stats}");
    }
    for evil in ["stall", "talker", "truncator", "drainer"] {
        assert_eq!(
            count(&be, evil, "violation_disconnects")?,
            1,
            "{evil}: {stats}"
        );
    }

    // Idle, while the dead session's doorbell is still being rung: under
    // 5% of one core over 2 s is at most 10 clock ticks.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks_of(worker)?;
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks_of(worker)? - before;
    storm_stop.store(true, Ordering::Relaxed);
    let rings = storm.join().map_err(|_| fail("storm panicked"))?;
    assert!(rings > 1000, "the storm rang only {rings} times");
    assert!(used <= 10, "the worker used {used} ticks in 2 s");
    println!(
        "compromised guest: {} honest transfers of {TRANSFER} bytes, {rings} dead doorbell rings, worker {used} ticks in 2 s idle, {:.1} s in all",
        sent.len(),
        started.elapsed().as_secs_f64()
    );
    drop(g2);
    Ok(())
}

#[test]
fn a_socket_group_that_does_not_exist_stops_the_start_with_a_hint() -> Result<()> {
    let dir = scratch_dir("socket-group")?;
    let out = std::process::Command::new(qemu_tests::bin("ib-backend")?)
        .arg("run")
        .arg("--control")
        .arg(dir.join("control.sock"))
        .arg("--guest")
        .arg(format!("name=g1,socket={}", dir.join("g1.sock").display()))
        .arg("--socket-group")
        .arg("no-such-group-x9")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--socket-group") && stderr.contains("no such group"),
        "{stderr}"
    );
    assert!(!dir.join("g1.sock").exists(), "nothing was bound");
    Ok(())
}
