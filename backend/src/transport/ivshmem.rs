//! The ivshmem-doorbell transport: the memfd window, the doorbell eventfd
//! the guest rings, the interrupt eventfd that raises its MSI-X vector, and
//! the guest's socket to the supervisor (its hang-up ends the session).
//!
//! The guest (or QEMU) holds the same memfd, eventfds and socket
//! connection, and may be hostile. So:
//!
//! - the memfd is mapped only if it is sealed against shrinking and growing
//!   and has the configured size ([`SharedMemory::from_fd_of_size`]);
//! - the doorbell is never read: the worker watches it edge-triggered, so a
//!   guest that drains it (with `O_NONBLOCK` cleared on the shared file
//!   description) cannot make us block in a read;
//! - the interrupt is raised with [`EventFd::notify_peer`], which cannot
//!   block whatever the flags; a full counter or a write that would block
//!   is a violation;
//! - the socket is read with `MSG_DONTWAIT`, at most one buffer per event:
//!   any byte from the client is a violation (clients never send).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use ivshmem::{EventFd, NotifyRefused, SharedMemory};
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use ring::Window;
use verbs_shim::notify::Notify;

use super::{GuestNotifier, Transport, TransportViolation};
use crate::handoff::SessionFds;

/// Raises the guest's interrupt: writes its vector's eventfd, never
/// blocking. The first refusal sticks: no further writes are tried, and the
/// seat disconnects the guest after the current service round.
struct VectorEventFd {
    event: EventFd,
    /// 0, or the code of a [`TransportViolation`].
    violation: AtomicU8,
}

impl VectorEventFd {
    fn violation(&self) -> Option<TransportViolation> {
        TransportViolation::from_code(self.violation.load(Ordering::Relaxed))
    }
}

impl Notify for VectorEventFd {
    fn notify(&self) {
        if self.violation().is_some() {
            return;
        }
        let found = match self.event.notify_peer() {
            Ok(()) => return,
            Err(NotifyRefused::CounterFull) => TransportViolation::InterruptCounterFull,
            Err(NotifyRefused::Stalled) => TransportViolation::InterruptStalled,
            Err(e @ NotifyRefused::Io(_)) => {
                log::warn!("cannot raise guest interrupt: {e}");
                return;
            }
        };
        self.violation.store(found.code(), Ordering::Relaxed);
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
    /// The client wrote to its socket.
    socket_violation: Option<TransportViolation>,
}

/// Bytes read from the client socket per event: any at all is a violation,
/// so one small read decides.
const SOCKET_PROBE: usize = 64;

impl IvshmemTransport {
    /// Takes over a session; `window_len` is the configured window size,
    /// which the memfd must have (and be sealed at).
    pub fn new(fds: SessionFds, window_len: usize) -> io::Result<IvshmemTransport> {
        let shm = Arc::new(SharedMemory::from_fd_of_size(fds.memory, window_len)?);
        let window = shm.window();
        Ok(IvshmemTransport {
            client: fds.client,
            shm,
            window,
            doorbell: EventFd::from_fd(fds.doorbell),
            interrupt: Arc::new(VectorEventFd {
                event: EventFd::from_fd(fds.interrupt),
                violation: AtomicU8::new(0),
            }),
            socket_violation: None,
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

    fn events_edge_triggered(&self) -> bool {
        true
    }

    /// Reads nothing: the doorbell is watched edge-triggered, and a read
    /// of an eventfd the guest also holds could block.
    fn drain_events(&mut self) -> io::Result<u64> {
        Ok(1)
    }

    fn violation(&self) -> Option<TransportViolation> {
        self.socket_violation.or_else(|| self.interrupt.violation())
    }

    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.client.as_fd())
    }

    /// One nonblocking read, whatever the socket's flags: end of stream or
    /// an error means the guest has gone, data means it broke the protocol.
    fn hangup_event(&mut self) -> Option<String> {
        let mut buf = [0u8; SOCKET_PROBE];
        match recv(self.client.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Some("disconnected".into()),
            Ok(n) => {
                self.socket_violation = Some(TransportViolation::SocketData);
                Some(format!(
                    "sent {n} byte(s) on its ivshmem socket, where clients never send anything"
                ))
            }
            // Nothing after all, or a signal: the socket is watched
            // level-triggered, so whatever is there is seen next turn.
            Err(Errno::EAGAIN | Errno::EINTR) => None,
            Err(e) => Some(format!("connection error: {e}")),
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
