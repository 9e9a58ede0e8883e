//! `EventFd`: notify/drain/wait semantics.

use std::os::fd::OwnedFd;
use std::thread;
use std::time::{Duration, Instant};

use ivshmem::EventFd;
use nix::sys::eventfd::{self, EfdFlags};

#[test]
fn notify_adds_and_drain_resets() {
    let event = EventFd::new().unwrap();
    assert_eq!(
        event.drain().unwrap(),
        0,
        "nothing pending, and no blocking"
    );
    for _ in 0..3 {
        event.notify().unwrap();
    }
    assert_eq!(event.drain().unwrap(), 3);
    assert_eq!(event.drain().unwrap(), 0);
}

#[test]
fn clones_share_the_counter() {
    let event = EventFd::new().unwrap();
    let clone = event.try_clone().unwrap();
    clone.notify().unwrap();
    assert_eq!(event.drain().unwrap(), 1);
    assert_eq!(clone.drain().unwrap(), 0);
}

#[test]
fn wait_timeout_times_out_without_notification() {
    let event = EventFd::new().unwrap();
    let start = Instant::now();
    assert!(!event.wait_timeout(Some(Duration::from_millis(30))).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!event.wait_timeout(Some(Duration::ZERO)).unwrap());
}

#[test]
fn wait_timeout_returns_pending_notification_and_drains_it() {
    let event = EventFd::new().unwrap();
    event.notify().unwrap();
    event.notify().unwrap();
    assert!(event.wait_timeout(Some(Duration::from_secs(1))).unwrap());
    assert_eq!(event.drain().unwrap(), 0);
}

#[test]
fn wait_wakes_on_notification_from_another_thread() {
    let event = EventFd::new().unwrap();
    let remote = event.try_clone().unwrap();
    let ringer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        remote.notify().unwrap();
    });
    assert!(event.wait_timeout(None).unwrap());
    ringer.join().unwrap();
}

#[test]
fn notify_on_a_full_counter_is_not_an_error() {
    let event = EventFd::new().unwrap();
    // The counter's maximum is u64::MAX - 1; a further write would block.
    nix::unistd::write(event.as_fd(), &(u64::MAX - 1).to_ne_bytes()).unwrap();
    event.notify().unwrap();
    assert_eq!(event.drain().unwrap(), u64::MAX - 1);
}

#[test]
fn from_fd_makes_a_blocking_eventfd_nonblocking() {
    let blocking: OwnedFd = eventfd::EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
        .unwrap()
        .into();
    let event = EventFd::from_fd(blocking);
    assert_eq!(event.drain().unwrap(), 0, "would have blocked forever");
    event.notify().unwrap();
    assert!(event.wait_timeout(Some(Duration::from_secs(1))).unwrap());
}

#[test]
fn owned_fd_round_trip() {
    let event = EventFd::new().unwrap();
    let fd: OwnedFd = event.try_clone().unwrap().into();
    let back = EventFd::from_fd(fd);
    back.notify().unwrap();
    assert_eq!(event.drain().unwrap(), 1);
}
