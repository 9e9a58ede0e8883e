//! The watchdog half of `notify_peer`, which the poll check in front of it
//! hides from the outside: the peer fills the counter (and clears
//! `O_NONBLOCK`) between our check and our write.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::*;

#[test]
fn a_write_that_blocks_after_the_check_is_interrupted_and_reported() {
    let ours = EventFd::new().unwrap();
    let theirs = ours.try_clone().unwrap();
    let flags = OFlag::from_bits_retain(fcntl(theirs.as_fd(), FcntlArg::F_GETFL).unwrap());
    fcntl(
        theirs.as_fd(),
        FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
    )
    .unwrap();
    unistd::write(&theirs.fd, &0xffff_ffff_ffff_fffeu64.to_ne_bytes()).unwrap();
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        // Twice: the per-thread watchdog works again after it fired.
        let _ = tx.send((ours.write_one_guarded(), ours.write_one_guarded()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the write blocked");
    assert_eq!(
        got,
        (Err(NotifyRefused::Stalled), Err(NotifyRefused::Stalled))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
