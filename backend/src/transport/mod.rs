//! What a seat needs from a transport, and the two transports.
//!
//! A session is a guest's window plus a way to notify each other. The seat
//! ([`crate::seat`]) runs the back half over [`Transport::window`], raises
//! the guest's interrupt through [`Transport::notifier`], and watches
//! [`Transport::event_fd`] for the guest's notifications; it does not know
//! which transport it holds. Dropping the transport tears it down.
//!
//! - [`ivshmem::IvshmemTransport`]: QEMU's ivshmem-doorbell (a memfd and two
//!   eventfds the supervisor handed over, plus the client's socket).
//! - [`xen::XenTransport`]: a Xen domain's granted window (gntdev) and its
//!   event channel (evtchn).

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use ring::Window;
use verbs_shim::notify::Notify;

pub mod ivshmem;
mod violation;
pub mod xen;

pub use violation::TransportViolation;

/// Raises the guest's interrupt. Never blocks.
pub type GuestNotifier = Arc<dyn Notify + Send + Sync>;

/// The notifier the back half holds.
pub struct Interrupt(pub GuestNotifier);

impl Notify for Interrupt {
    fn notify(&self) {
        self.0.notify()
    }
}

/// One guest's transport, as the seat uses it.
pub trait Transport: Send {
    /// The whole shared window.
    fn window(&self) -> Window;

    /// Raises the guest's interrupt.
    fn notifier(&self) -> GuestNotifier;

    /// Readable when the guest has notified the back end.
    fn event_fd(&self) -> BorrowedFd<'_>;

    /// Whether [`event_fd`](Transport::event_fd) must be watched
    /// edge-triggered (`EPOLLET`): its readiness is never consumed by a
    /// read, because reading a descriptor the guest also holds could block
    /// (ivshmem's doorbell eventfd).
    fn events_edge_triggered(&self) -> bool {
        false
    }

    /// Takes the guest's pending notifications without blocking and
    /// returns how many there were (edge-triggered transports read
    /// nothing and count the edge as one).
    fn drain_events(&mut self) -> io::Result<u64>;

    /// The first transport-level violation the guest committed, if any
    /// (sticky): the seat disconnects it.
    fn violation(&self) -> Option<TransportViolation> {
        None
    }

    /// Called after each service round: lets further notifications through
    /// (Xen unmasks the port here; an eventfd needs nothing).
    fn rearm(&mut self) {}

    /// A descriptor whose hang-up means the guest has gone (ivshmem's
    /// client socket), if the transport has one.
    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// `hangup_fd` fired: `Some(why)` if the guest has gone.
    fn hangup_event(&mut self) -> Option<String> {
        None
    }

    /// The Xen domain on the other end, for Xen transports.
    fn xen_domid(&self) -> Option<u16> {
        None
    }

    /// For logs: what the transport is, e.g. `ivshmem window of 8388608
    /// bytes`.
    fn describe(&self) -> String;

    /// Tears the transport down once everything else of the session (back
    /// half, port, windows) has been dropped, and says what it released,
    /// e.g. `2048 grant pages unmapped, event channel 7 (local port 45)
    /// unbound`.
    fn release(self: Box<Self>) -> String;
}
