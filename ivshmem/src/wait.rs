//! Waiting for a descriptor to become readable or writable, with a deadline.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Waits until `fd` reports one of `events` (or an error/hang-up, which the
/// following read or write will report), or until `deadline` passes.
/// `None` waits forever. Returns whether the descriptor became ready.
pub(crate) fn wait_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                millis_rounded_up(left)
            }
        };
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue, // re-checks the deadline
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// `left` as a poll timeout, rounded up so that a sub-millisecond remainder
/// does not turn into a busy loop of zero-timeout polls.
fn millis_rounded_up(left: Duration) -> PollTimeout {
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

/// `now + timeout`, or no deadline if that does not fit in an `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Whether `fd` reports one of `events` right now (a zero-timeout poll).
pub(crate) fn ready_now(fd: BorrowedFd<'_>, events: PollFlags) -> Result<bool, Errno> {
    let mut fds = [PollFd::new(fd, events)];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => return Ok(n > 0 && fds[0].revents().is_some_and(|r| r.intersects(events))),
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(err),
        }
    }
}
