//! A worker thread over real ivshmem sessions (memfd, eventfds, socket),
//! with the test playing a guest that holds the same descriptors and
//! misuses them.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivshmem::SharedMemory;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use ring::LayoutParams;
use verbs_shim::front::FrontHca;
use verbs_shim::notify::Notify;
use verbs_shim::sim::{FaultConfig, SimFabric};
use verbs_shim::{Completion, Gid, Verbs};

use super::*;
use crate::config::{Attach, GuestConfig};
use crate::handoff::{Reporter, SessionFds};
use crate::transport::TransportViolation;

const WINDOW: usize = 1 << 20;
const COUNTER_MAX: u64 = 0xffff_ffff_ffff_fffe;

/// What the guest holds: its copies of the session's descriptors.
struct GuestSide {
    socket: UnixStream,
    memory: OwnedFd,
    doorbell: EventFd,
    interrupt: EventFd,
}

fn session() -> (SessionFds, GuestSide) {
    let shm = SharedMemory::create("worker-test", WINDOW).unwrap();
    let doorbell = EventFd::new().unwrap();
    let interrupt = EventFd::new().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let guest = GuestSide {
        socket: theirs,
        memory: shm.try_clone_fd().unwrap(),
        doorbell: doorbell.try_clone().unwrap(),
        interrupt: interrupt.try_clone().unwrap(),
    };
    let fds = SessionFds {
        client: ours,
        memory: shm.try_clone_fd().unwrap(),
        doorbell: doorbell.into(),
        interrupt: interrupt.into(),
    };
    (fds, guest)
}

struct Rig {
    inbox: Sender<Handoff>,
    bell: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    snapshots: Snapshots,
    /// The worker thread's kernel id, for its CPU time.
    tid: i32,
    thread: Option<JoinHandle<()>>,
    _supervisor: UnixStream,
}

impl Rig {
    fn start() -> Rig {
        Rig::start_busy(Duration::ZERO)
    }

    /// A worker that busy-polls for `busy_poll` after real work.
    fn start_busy(busy_poll: Duration) -> Rig {
        let (link, supervisor) = UnixStream::pair().unwrap();
        let config = GuestConfig {
            name: "g1".into(),
            attach: Attach::Socket("/nonexistent/g1.sock".into()),
            window: WINDOW,
            pkeys: vec![0xffff],
            ip: None,
            ip6: None,
            limits: Default::default(),
        };
        let seat = Seat::new(0, config, 0x11, None, Reporter::new(link));
        let (tx, rx) = channel();
        let bell = Arc::new(EventFd::new().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let snapshots: Snapshots = Arc::new(Mutex::new(vec![None]));
        let worker = Worker {
            seats: vec![seat],
            fabric: Fabric::Sim(SimFabric::new(FaultConfig::NONE)),
            mtu: IbMtu::Mtu2048,
            stop: stop.clone(),
            snapshots: snapshots.clone(),
            inbox: rx,
            bell: bell.clone(),
            watched: Vec::new(),
            busy_poll,
        };
        let (tid_tx, tid_rx) = channel();
        let thread = std::thread::spawn(move || {
            let _ = tid_tx.send(nix::unistd::gettid().as_raw());
            worker.run();
        });
        let tid = tid_rx.recv().unwrap();
        Rig {
            inbox: tx,
            bell,
            stop,
            snapshots,
            tid,
            thread: Some(thread),
            _supervisor: supervisor,
        }
    }

    fn hand_over(&self, fds: SessionFds) {
        self.inbox
            .send(Handoff::Session {
                seat: 0,
                restart: false,
                fds,
            })
            .unwrap();
        self.bell.notify().unwrap();
    }

    fn snapshot(&self) -> Option<SeatSnapshot> {
        self.snapshots.lock().unwrap()[0].clone()
    }

    fn wait_until(&self, what: &str, check: impl Fn(&SeatSnapshot) -> bool) -> SeatSnapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.snapshot().filter(|s| check(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen: {:?}",
                self.snapshot()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The worker thread's CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", self.tid)).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime); field 3 is fields[0].
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(t) = self.thread.take() else { return };
        // A worker stuck in a system call would hang the test here; leave it
        // behind instead, so the test fails on its assertion.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

fn clear_nonblocking(fd: std::os::fd::BorrowedFd<'_>) {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    fcntl(fd, FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK))).unwrap();
}

#[test]
fn a_disconnected_guest_ringing_its_doorbell_does_not_make_the_worker_spin() {
    let rig = Rig::start();
    let (fds, mut guest) = session();
    rig.hand_over(fds);
    rig.wait_until("attach", |s| s.attached);
    // The memory is sealed: the guest cannot truncate it under us.
    assert!(nix::unistd::ftruncate(&guest.memory, 0).is_err());
    // Clients never talk on their socket: one byte is a violation.
    guest.socket.write_all(b"x").unwrap();
    let snap = rig.wait_until("disconnect", |s| !s.attached);
    assert_eq!(
        snap.counters.transport_violations[TransportViolation::SocketData as usize],
        1
    );
    assert_eq!(snap.counters.violation_disconnects, 1);
    // The guest still holds its doorbell and rings it: a registration left
    // in the epoll set would wake the worker for ever.
    for _ in 0..100 {
        guest.doorbell.notify().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = rig.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = rig.cpu_ticks() - before;
    assert!(
        used <= 5,
        "the worker used {used} ticks in 1 s after the disconnect"
    );
}

#[test]
fn a_guest_that_fills_its_interrupt_counter_is_disconnected() {
    let rig = Rig::start();
    let (fds, guest) = session();
    clear_nonblocking(guest.interrupt.as_fd());
    nix::unistd::write(guest.interrupt.as_fd(), &COUNTER_MAX.to_ne_bytes()).unwrap();
    rig.hand_over(fds);
    // The back half announces InitWait with an interrupt at once.
    let snap = rig.wait_until("disconnect", |s| s.counters.violation_disconnects == 1);
    let c = snap.counters.transport_violations;
    assert_eq!(
        c[TransportViolation::InterruptCounterFull as usize]
            + c[TransportViolation::InterruptStalled as usize],
        1,
        "{snap:?}"
    );
    assert!(!snap.attached);
    // The worker still serves: a new session on the seat attaches.
    let (fds, _guest2) = session();
    rig.hand_over(fds);
    rig.wait_until("second attach", |s| s.attached && s.counters.connects == 2);
}

#[test]
fn a_guest_that_drains_its_doorbell_in_blocking_mode_does_not_block_the_worker() {
    let rig = Rig::start();
    let (fds, guest) = session();
    rig.hand_over(fds);
    rig.wait_until("attach", |s| s.attached);
    // The guest clears O_NONBLOCK on the shared file description and keeps
    // a thread blocked reading the doorbell: every ring races the worker
    // for the count, and a worker that reads after losing would block.
    clear_nonblocking(guest.doorbell.as_fd());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (doorbell, stop) = (guest.doorbell.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            while !stop.load(Ordering::Relaxed) {
                let _ = nix::unistd::read(doorbell.as_fd(), &mut buf);
            }
        })
    };
    for i in 0..2000 {
        guest.doorbell.notify().unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    guest.doorbell.notify().unwrap();
    let _ = reader.join();
    // A later handoff is still taken: the worker is not stuck in a read.
    let (fds2, _guest2) = session();
    drop(guest);
    rig.hand_over(fds2);
    rig.wait_until("replaced", |s| s.attached && s.counters.connects == 2);
}

#[test]
fn memory_that_is_unsealed_or_of_the_wrong_size_is_refused() {
    let rig = Rig::start();
    let mut refused = Vec::new();
    for len in [WINDOW / 2, WINDOW * 2] {
        let (mut fds, guest) = session();
        fds.memory = SharedMemory::create("worker-test", len)
            .unwrap()
            .try_clone_fd()
            .unwrap();
        rig.hand_over(fds);
        refused.push(guest);
    }
    let (mut fds, guest) = session();
    let unsealed =
        nix::sys::memfd::memfd_create("unsealed", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::ftruncate(&unsealed, WINDOW as i64).unwrap();
    fds.memory = unsealed;
    rig.hand_over(fds);
    refused.push(guest);
    // None of them attached, and each was hung up on; a proper one attaches.
    for guest in &mut refused {
        guest
            .socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(guest.socket.read(&mut buf).unwrap(), 0, "hung up");
    }
    let (fds, _guest) = session();
    rig.hand_over(fds);
    let snap = rig.wait_until("attach", |s| s.attached);
    assert_eq!(snap.counters.connects, 1);
}

#[test]
fn taking_the_guests_notifications_never_reads_the_doorbell() {
    // The race the worker loses against a guest that drains its doorbell
    // in blocking mode, made deterministic: epoll said "readable", the
    // guest has taken the count since, and O_NONBLOCK is cleared. A read
    // now would block the worker thread for good.
    let (fds, guest) = session();
    let mut transport = IvshmemTransport::new(fds, WINDOW).unwrap();
    clear_nonblocking(guest.doorbell.as_fd());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(transport.drain_events().map_err(|e| e.to_string()));
    });
    let got = rx.recv_timeout(Duration::from_secs(5));
    assert!(
        matches!(got, Ok(Ok(_))),
        "drain_events blocked or failed: {got:?}"
    );
    // The count is still the guest's: nothing was read.
    guest.doorbell.notify().unwrap();
    assert_eq!(guest.doorbell.drain().unwrap(), 1);
}

/// Small rings, so the channel fits the 1 MiB window.
const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 8,
    rx_slots: 8,
    slot_size: 4096,
};

/// The guest's doorbell, which the test can silence: a silenced guest
/// posts requests the worker only finds by polling.
struct Bell {
    doorbell: EventFd,
    on: Arc<AtomicBool>,
}

impl Notify for Bell {
    fn notify(&self) {
        if self.on.load(Ordering::Relaxed) {
            let _ = self.doorbell.notify();
        }
    }
}

/// Waits up to `within` for the answer to a resolve of `gid`.
fn resolved(front: &mut FrontHca<Bell>, gid: Gid, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match front.poll_cq() {
            Ok(Some(Completion::Path { dgid, result })) => {
                assert_eq!(dgid, gid);
                assert!(result.is_ok(), "{result:?}");
                return true;
            }
            Ok(Some(other)) => panic!("unexpected completion {other:?}"),
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    false
}

fn ask(front: &mut FrontHca<Bell>, gid: Gid) {
    front.resolve(gid).unwrap();
    front.flush().unwrap();
}

#[test]
fn busy_polling_serves_without_doorbells_within_its_budget_then_sleeps() {
    let budget = Duration::from_millis(300);
    let rig = Rig::start_busy(budget);
    let (fds, guest) = session();
    rig.hand_over(fds);
    rig.wait_until("attach", |s| s.attached);
    let shm = Arc::new(SharedMemory::from_fd(guest.memory.try_clone().unwrap()).unwrap());
    let on = Arc::new(AtomicBool::new(true));
    let bell = Bell {
        doorbell: guest.doorbell.try_clone().unwrap(),
        on: on.clone(),
    };
    let mut front = FrontHca::attach(shm.window(), PARAMS, bell).unwrap();
    guest.doorbell.notify().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !front.poll_connected().unwrap() {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(1));
    }
    let gid = front.port_attr().gid;

    // Real work: the worker spins for the budget after it...
    ask(&mut front, gid);
    guest.doorbell.notify().unwrap();
    assert!(resolved(&mut front, gid, Duration::from_secs(5)));
    // ...so requests the guest does not ring for are served meanwhile,
    // each one extending the spinning. (A worker that loses its CPU while
    // spinning stops spinning for netcore::busy_poll::BACKOFF_US; on a busy
    // machine that can happen, so a miss is rung for, and the next try
    // waits out the backoff.)
    on.store(false, Ordering::Relaxed);
    let mut polled = 0;
    for _ in 0..20 {
        ask(&mut front, gid);
        if resolved(&mut front, gid, budget / 2) {
            polled += 1;
            if polled == 5 {
                break;
            }
        } else {
            guest.doorbell.notify().unwrap();
            assert!(resolved(&mut front, gid, Duration::from_secs(5)));
            std::thread::sleep(Duration::from_micros(netcore::busy_poll::BACKOFF_US));
            ask(&mut front, gid);
            guest.doorbell.notify().unwrap();
            assert!(resolved(&mut front, gid, Duration::from_secs(5)));
        }
    }
    assert_eq!(polled, 5, "requests found by busy polling");
    let snap = rig.wait_until("busy_polled published", |s| s.counters.busy_polled >= 5);
    assert!(snap.attached);

    // Idle: once the budget is over the worker arms the rings and sleeps,
    // so it uses no CPU...
    std::thread::sleep(budget + Duration::from_millis(200));
    let before = rig.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = rig.cpu_ticks() - before;
    assert!(used <= 5, "the idle worker used {used} ticks in 1 s");
    // ...and no longer polls: a request without a doorbell waits for one.
    ask(&mut front, gid);
    assert!(
        !resolved(&mut front, gid, Duration::from_millis(300)),
        "served without a doorbell after the budget"
    );
    guest.doorbell.notify().unwrap();
    assert!(resolved(&mut front, gid, Duration::from_secs(5)));
}

#[test]
fn busy_polling_is_bounded_by_its_budget() {
    // A long budget: the worker spins for it after the last work, then
    // stops for good.
    let budget = Duration::from_millis(500);
    let rig = Rig::start_busy(budget);
    let (fds, guest) = session();
    rig.hand_over(fds);
    rig.wait_until("attach", |s| s.attached);
    let shm = Arc::new(SharedMemory::from_fd(guest.memory.try_clone().unwrap()).unwrap());
    let bell = Bell {
        doorbell: guest.doorbell.try_clone().unwrap(),
        on: Arc::new(AtomicBool::new(true)),
    };
    let mut front = FrontHca::attach(shm.window(), PARAMS, bell).unwrap();
    guest.doorbell.notify().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !front.poll_connected().unwrap() {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(1));
    }
    let gid = front.port_attr().gid;
    let before = rig.cpu_ticks();
    ask(&mut front, gid);
    guest.doorbell.notify().unwrap();
    assert!(resolved(&mut front, gid, Duration::from_secs(5)));
    // The guest's doorbell rings on, with nothing behind it: not work, so
    // it does not extend the spinning.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        guest.doorbell.notify().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let spun = rig.cpu_ticks() - before;
    let before = rig.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let idle = rig.cpu_ticks() - before;
    // 2 s of ringing; the spinning takes at most the budget (50 ticks)
    // plus the doorbells' own cost.
    assert!(spun <= 70, "the worker used {spun} ticks in 2 s");
    assert!(idle <= 5, "the idle worker used {idle} ticks in 1 s");
}
