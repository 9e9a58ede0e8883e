//! One descriptor for a port's two event sources: an epoll set holding the
//! completion channel and the rdma_cm event channel (both level-triggered),
//! which is readable while either is. A worker watches it like any other
//! descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll set; closed on drop.
pub(in crate::rdma) struct EventSet(OwnedFd);

impl EventSet {
    pub(in crate::rdma) fn new() -> io::Result<EventSet> {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(EventSet(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input. The caller keeps `fd` open while it is in
    /// the set (the port owns both).
    pub(in crate::rdma) fn add(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; `ev` is valid for the call.
        let ret = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(in crate::rdma) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
