//! The ivshmem-doorbell transport: the memfd window, the doorbell eventfd
//! the guest rings, the interrupt eventfd that raises its MSI-X vector, and
//! the guest's socket to the supervisor (its hang-up ends the session).

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ivshmem::{EventFd, SharedMemory};
use ring::Window;
use verbs_shim::notify::Notify;

use super::{GuestNotifier, Transport};
use crate::handoff::SessionFds;

/// Raises the guest's interrupt: writes its vector's eventfd.
struct VectorEventFd(EventFd);

impl Notify for VectorEventFd {
    fn notify(&self) {
        if let Err(e) = self.0.notify() {
            log::warn!("cannot raise guest interrupt: {e}");
        }
    }
}

/// An ivshmem guest's session, from the descriptors the supervisor handed
/// over.
pub struct IvshmemTransport {
    client: UnixStream,
    /// Kept so the mapping and memfd live as long as the session.
    shm: Arc<SharedMemory>,
    window: Window,
    doorbell: EventFd,
    interrupt: Arc<VectorEventFd>,
}

impl IvshmemTransport {
    pub fn new(fds: SessionFds) -> io::Result<IvshmemTransport> {
        let shm = Arc::new(SharedMemory::from_fd(fds.memory)?);
        let window = shm.window();
        fds.client.set_nonblocking(true)?;
        Ok(IvshmemTransport {
            client: fds.client,
            shm,
            window,
            doorbell: EventFd::from_fd(fds.doorbell),
            interrupt: Arc::new(VectorEventFd(EventFd::from_fd(fds.interrupt))),
        })
    }
}

impl Transport for IvshmemTransport {
    fn window(&self) -> Window {
        self.window.clone()
    }

    fn notifier(&self) -> GuestNotifier {
        self.interrupt.clone()
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        self.doorbell.as_fd()
    }

    fn drain_events(&mut self) -> io::Result<u64> {
        self.doorbell.drain()
    }

    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.client.as_fd())
    }

    fn hangup_event(&mut self) -> Option<String> {
        let mut buf = [0u8; 64];
        loop {
            match self.client.read(&mut buf) {
                Ok(0) => return Some("disconnected".into()),
                // Clients have nothing to say in this protocol; ignore it.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(format!("connection error: {e}")),
            }
        }
    }

    fn describe(&self) -> String {
        format!("ivshmem window of {} bytes", self.shm.len())
    }

    fn release(self: Box<Self>) -> String {
        let _ = self.client.shutdown(std::net::Shutdown::Both);
        "shared memory and eventfds released, socket closed".into()
    }
}
