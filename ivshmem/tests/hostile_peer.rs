//! What a peer that holds the same descriptors can do to us, and that it
//! no longer hurts: a filled eventfd counter with `O_NONBLOCK` cleared, and
//! a memfd truncated or grown under the mapping.

use std::io;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ivshmem::{EventFd, NotifyRefused, SharedMemory, ShmRefused};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::{ftruncate, write};

/// The largest value an eventfd counter can hold.
const COUNTER_MAX: u64 = 0xffff_ffff_ffff_fffe;

fn clear_nonblocking(event: &EventFd) {
    let flags = OFlag::from_bits_retain(fcntl(event.as_fd(), FcntlArg::F_GETFL).unwrap());
    fcntl(
        event.as_fd(),
        FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
    )
    .unwrap();
}

/// Runs `f` on a thread and waits at most `limit` for it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the call blocked (the thread is left behind)")
}

#[test]
fn notify_peer_refuses_a_filled_counter_without_blocking() {
    let ours = EventFd::new().unwrap();
    let theirs = ours.try_clone().unwrap();
    write(theirs.as_fd(), &COUNTER_MAX.to_ne_bytes()).unwrap();
    let got = within(Duration::from_secs(5), move || ours.notify_peer());
    assert_eq!(got, Err(NotifyRefused::CounterFull));
}

#[test]
fn notify_peer_does_not_stall_when_the_peer_clears_o_nonblock() {
    let ours = EventFd::new().unwrap();
    let theirs = ours.try_clone().unwrap();
    // The peer shares the open file description: this changes our flags.
    clear_nonblocking(&theirs);
    write(theirs.as_fd(), &COUNTER_MAX.to_ne_bytes()).unwrap();
    let started = Instant::now();
    let got = within(Duration::from_secs(5), move || {
        (ours.notify_peer(), ours.notify_peer())
    });
    // Refused by the poll check, without even waiting for the watchdog
    // (the race past the check is `eventfd::tests`).
    assert_eq!(
        got,
        (
            Err(NotifyRefused::CounterFull),
            Err(NotifyRefused::CounterFull)
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_watchdog_interrupts_any_blocked_call() {
    // A blocking read of an empty eventfd would wait for ever.
    let event = EventFd::new().unwrap();
    clear_nonblocking(&event);
    let got = within(Duration::from_secs(5), move || {
        let mut buf = [0u8; 8];
        ivshmem::stall_guard::guarded(Duration::from_millis(20), || {
            nix::unistd::read(event.as_fd(), &mut buf)
        })
    });
    assert_eq!(got, Ok(Err(nix::errno::Errno::EINTR)));
}

#[test]
fn notify_peer_works_for_an_honest_peer_even_in_blocking_mode() {
    let ours = EventFd::new().unwrap();
    let theirs = ours.try_clone().unwrap();
    // QEMU clears O_NONBLOCK on every descriptor it receives: not a fault.
    clear_nonblocking(&theirs);
    let started = Instant::now();
    for _ in 0..1000 {
        ours.notify_peer().unwrap();
    }
    assert_eq!(theirs.drain().unwrap(), 1000);
    // Nothing left armed: a long blocking call afterwards is not
    // interrupted by a stray watchdog signal.
    thread::sleep(Duration::from_millis(100));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn created_memory_is_sealed_against_resizing() {
    let shm = SharedMemory::create("ivshmem-test", 8192).unwrap();
    let fd = shm.try_clone_fd().unwrap();
    assert!(ftruncate(&fd, 0).is_err(), "shrinking must be refused");
    assert!(ftruncate(&fd, 16384).is_err(), "growing must be refused");
    let seals = fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
    let seals = nix::fcntl::SealFlag::from_bits_retain(seals);
    assert!(seals.contains(ivshmem::REQUIRED_SEALS | nix::fcntl::SealFlag::F_SEAL_SEAL));
    // And what arrives by descriptor maps, at the expected size only.
    assert_eq!(
        SharedMemory::from_fd(shm.try_clone_fd().unwrap())
            .unwrap()
            .len(),
        8192
    );
    assert!(SharedMemory::from_fd_of_size(shm.try_clone_fd().unwrap(), 8192).is_ok());
    let err = SharedMemory::from_fd_of_size(fd, 4096).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let refused = err.get_ref().and_then(|e| e.downcast_ref::<ShmRefused>());
    assert_eq!(
        refused,
        Some(&ShmRefused::WrongSize {
            size: 8192,
            expected: 4096
        })
    );
}

#[test]
fn unsealed_memory_is_refused() {
    for flags in [MFdFlags::MFD_CLOEXEC, MFdFlags::MFD_ALLOW_SEALING] {
        let fd = memfd_create("ivshmem-unsealed", flags).unwrap();
        ftruncate(&fd, 8192).unwrap();
        let err = SharedMemory::from_fd(fd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("seal"), "{err}");
    }
}

#[test]
fn notify_peer_costs_a_few_microseconds() {
    let ours = EventFd::new().unwrap();
    let theirs = ours.try_clone().unwrap();
    const CALLS: u32 = 20_000;
    let plain = Instant::now();
    for _ in 0..CALLS {
        ours.notify().unwrap();
    }
    let plain = plain.elapsed() / CALLS;
    theirs.drain().unwrap();
    let guarded = Instant::now();
    for _ in 0..CALLS {
        ours.notify_peer().unwrap();
    }
    let guarded = guarded.elapsed() / CALLS;
    assert_eq!(theirs.drain().unwrap(), u64::from(CALLS));
    println!("eventfd write: plain {plain:?}, under the watchdog {guarded:?} per call");
    // Generous, for a loaded machine: the point is "no thread hop".
    assert!(guarded < Duration::from_micros(200), "{guarded:?}");
}
