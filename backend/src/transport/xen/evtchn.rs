//! `/dev/xen/evtchn`: one interdomain event channel to the guest.
//!
//! The descriptor is ours alone (opened per session, `O_NONBLOCK`). It is
//! readable while a bound port has fired; `read(2)` gives the fired ports
//! as `u32`s, and a fired port stays masked until its number is written
//! back. The seat drains, services the rings, then unmasks
//! ([`EventChannel::unmask`]), so a guest that spams its channel gets at
//! most one wake-up per service round, as with the ivshmem doorbell.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use verbs_shim::notify::Notify;

use super::sys;

/// Where the Linux evtchn driver lives.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";
/// Reads per drain: the channel has one port, so one read normally takes
/// everything; the bound keeps a misbehaving driver from holding us.
const MAX_READS: usize = 4;

/// A bound interdomain channel; unbound (and the descriptor closed) on
/// drop.
pub struct EventChannel {
    fd: OwnedFd,
    local: u32,
    remote_domid: u16,
    remote_port: u32,
    /// A fired port was read and not yet written back.
    masked: AtomicBool,
}

impl EventChannel {
    /// Binds `remote_port` of `domid`, which the domain allocated unbound
    /// for the back end's domain.
    pub fn bind(domid: u16, remote_port: u32) -> io::Result<EventChannel> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(EVTCHN_PATH)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open {EVTCHN_PATH}: {e} (is this dom0 with xen-evtchn loaded?)"
                    ),
                )
            })?;
        let fd = OwnedFd::from(file);
        let local = sys::bind_interdomain(fd.as_fd(), domid, remote_port).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "IOCTL_EVTCHN_BIND_INTERDOMAIN to port {remote_port} of domain {domid}: {e}"
                ),
            )
        })?;
        Ok(EventChannel {
            fd,
            local,
            remote_domid: domid,
            remote_port,
            masked: AtomicBool::new(false),
        })
    }

    pub fn local_port(&self) -> u32 {
        self.local
    }

    pub fn remote_port(&self) -> u32 {
        self.remote_port
    }

    /// Readable when the guest has notified us.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes the fired ports without blocking: how many times ours fired.
    pub fn drain(&self) -> io::Result<u64> {
        let mut fired = 0u64;
        let mut buf = [0u8; 256];
        for _ in 0..MAX_READS {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => {
                    for port in buf[..n].chunks_exact(4) {
                        let port = u32::from_ne_bytes([port[0], port[1], port[2], port[3]]);
                        if port == self.local {
                            fired += 1;
                        }
                    }
                    self.masked.store(true, Ordering::Relaxed);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EFBIG) => {
                    // The driver's buffer overflowed: reset it, and treat it
                    // as a notification (the port is masked until written).
                    sys::reset(self.fd.as_fd())?;
                    self.masked.store(true, Ordering::Relaxed);
                    fired += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(fired)
    }

    /// Lets the port fire again after a drain that took it.
    pub fn unmask(&self) -> io::Result<()> {
        if !self.masked.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        loop {
            match nix::unistd::write(&self.fd, &self.local.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Signals the guest. An ioctl: it never blocks.
    pub fn send(&self) -> io::Result<()> {
        sys::notify(self.fd.as_fd(), self.local)
    }
}

impl Notify for EventChannel {
    fn notify(&self) {
        if let Err(e) = self.send() {
            log::warn!(
                "cannot notify domain {} on event channel {}: {e}",
                self.remote_domid,
                self.remote_port
            );
        }
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        if let Err(e) = sys::unbind(self.fd.as_fd(), self.local) {
            log::warn!("evtchn: unbinding local port {} failed: {e}", self.local);
        }
    }
}
