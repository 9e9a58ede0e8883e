//! [`EventFd`]: one ivshmem interrupt vector.
//!
//! QEMU rings a peer by writing the 8-byte integer 1 to the peer's eventfd
//! and takes an interrupt by reading (and so resetting) its own
//! (`docs/specs/ivshmem-spec.rst`, "The ivshmem Client-Client Protocol").

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::PollFlags;
use nix::sys::eventfd::{self, EfdFlags};
use nix::unistd;

use crate::{stall_guard, wait};

/// How long [`EventFd::notify_peer`] lets a write block before it gives up
/// on the peer (also the watchdog's period, see `stall_guard`).
pub const NOTIFY_STALL_LIMIT: Duration = Duration::from_millis(20);

/// Why [`EventFd::notify_peer`] did not ring: each one means the other
/// holder of the eventfd is not behaving (an honest reader keeps the counter
/// far from its maximum), except [`NotifyRefused::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyRefused {
    /// The counter is at its maximum (`EAGAIN`): someone filled it.
    CounterFull,
    /// The write blocked (the counter is full and `O_NONBLOCK` was cleared
    /// on the shared file description) and the watchdog interrupted it.
    Stalled,
    /// The write failed otherwise, or wrote other than 8 bytes.
    Io(Errno),
}

impl fmt::Display for NotifyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyRefused::CounterFull => {
                f.write_str("eventfd counter is at its maximum: the peer filled it")
            }
            NotifyRefused::Stalled => f.write_str(
                "eventfd write blocked (counter full, O_NONBLOCK cleared by the peer) and was interrupted",
            ),
            NotifyRefused::Io(errno) => write!(f, "eventfd write failed: {errno}"),
        }
    }
}

impl std::error::Error for NotifyRefused {}

/// A nonblocking, close-on-exec eventfd.
///
/// [`notify`](EventFd::notify) adds 1 to its counter; [`drain`](EventFd::drain)
/// reads and resets it. Clones ([`try_clone`](EventFd::try_clone)) and the
/// copies that travel to other processes share the one counter.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> io::Result<EventFd> {
        let efd = eventfd::EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(EventFd { fd: efd.into() })
    }

    /// Wraps a descriptor that is (or is alleged to be) an eventfd, for
    /// example one that arrived from an ivshmem server.
    ///
    /// The descriptor is switched to nonblocking mode so that
    /// [`drain`](EventFd::drain) never blocks. That flag belongs to the open
    /// file description, which other holders of the same eventfd share; for
    /// an eventfd that only affects whether *their* reads block. If it cannot
    /// be set (the descriptor is not usable at all), a warning is logged and
    /// the error shows up on first use instead.
    pub fn from_fd(fd: OwnedFd) -> EventFd {
        if let Err(err) = set_nonblocking(fd.as_fd()) {
            log::warn!("ivshmem: cannot make eventfd nonblocking: {err}");
        }
        EventFd { fd }
    }

    /// Rings: adds 1 to the counter, waking whoever waits on it.
    ///
    /// A counter at its maximum (`EAGAIN`) is not an error: a notification
    /// is pending then anyway. This trusts the descriptor's `O_NONBLOCK`:
    /// for an eventfd an untrusted peer also holds, use
    /// [`notify_peer`](EventFd::notify_peer).
    pub fn notify(&self) -> io::Result<()> {
        loop {
            match unistd::write(&self.fd, &1u64.to_ne_bytes()) {
                Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Rings an eventfd that an untrusted peer also holds, without ever
    /// blocking and without trusting the file's flags.
    ///
    /// The peer shares the open file description: it can clear
    /// `O_NONBLOCK` and fill the counter, and then a plain write blocks
    /// forever. So:
    ///
    /// 1. `poll(POLLOUT, 0)` first: a counter already full is
    ///    [`NotifyRefused::CounterFull`] at once, without writing;
    /// 2. the write then runs under a per-thread watchdog timer
    ///    (`stall_guard`), which closes the race left by the check (the
    ///    peer filling the counter, with `O_NONBLOCK` cleared, between the
    ///    poll and the write): a blocked write is interrupted within
    ///    [`NOTIFY_STALL_LIMIT`] and reported as [`NotifyRefused::Stalled`].
    ///
    /// `O_NONBLOCK` itself is neither checked nor trusted: QEMU clears it
    /// on every descriptor it receives, so a cleared flag means nothing.
    /// An honest peer (QEMU reads its vector's eventfd on every interrupt)
    /// never has a full counter, so both refusals are violations to the
    /// caller. Cost: `poll`, two `timer_settime` and the write, on the
    /// calling thread.
    ///
    /// If the watchdog cannot be set up on this thread (a resource limit),
    /// the write goes ahead after the poll alone, and the error is logged.
    pub fn notify_peer(&self) -> Result<(), NotifyRefused> {
        if !wait::ready_now(self.fd.as_fd(), PollFlags::POLLOUT).map_err(NotifyRefused::Io)? {
            return Err(NotifyRefused::CounterFull);
        }
        self.write_one_guarded()
    }

    /// Step 2 of [`notify_peer`](EventFd::notify_peer): the write under the
    /// watchdog.
    pub(crate) fn write_one_guarded(&self) -> Result<(), NotifyRefused> {
        let one = 1u64.to_ne_bytes();
        let result =
            match stall_guard::guarded(NOTIFY_STALL_LIMIT, || unistd::write(&self.fd, &one)) {
                Ok(result) => result,
                Err(unavailable) => {
                    log::error!("ivshmem: {unavailable}; writing after the poll check alone");
                    unistd::write(&self.fd, &one)
                }
            };
        match result {
            Ok(8) => Ok(()),
            Ok(_) => Err(NotifyRefused::Io(Errno::EINVAL)),
            Err(Errno::EAGAIN) => Err(NotifyRefused::CounterFull),
            // Only a write that was sleeping (counter full) can see EINTR.
            Err(Errno::EINTR) => Err(NotifyRefused::Stalled),
            Err(errno) => Err(NotifyRefused::Io(errno)),
        }
    }

    /// Reads and resets the counter: how many notifications arrived since
    /// the last drain, 0 if none (without blocking).
    pub fn drain(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        loop {
            match unistd::read(&self.fd, &mut buf) {
                Ok(8) => return Ok(u64::from_ne_bytes(buf)),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("eventfd read returned {n} bytes, not 8: not an eventfd?"),
                    ))
                }
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Waits until the eventfd fires or `timeout` passes (`None`: forever),
    /// then drains it. Returns whether it fired.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.and_then(wait::deadline_after);
        loop {
            if self.drain()? > 0 {
                return Ok(true);
            }
            if timeout.is_some() && deadline.is_none() {
                // A timeout too large for an `Instant`: wait forever.
                wait::wait_for(self.fd.as_fd(), PollFlags::POLLIN, None)?;
            } else if !wait::wait_for(self.fd.as_fd(), PollFlags::POLLIN, deadline)? {
                // Timed out; one last look in case it fired at the very end.
                return Ok(self.drain()? > 0);
            }
        }
    }

    /// The descriptor, for sending it to a peer or polling it.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second handle onto the same counter.
    pub fn try_clone(&self) -> io::Result<EventFd> {
        Ok(EventFd {
            fd: self.fd.try_clone()?,
        })
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(event: EventFd) -> OwnedFd {
        event.fd
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
