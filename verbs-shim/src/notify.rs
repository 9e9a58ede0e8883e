//! How a side of the channel tells the other that there is work.
//!
//! Under QEMU this is an ivshmem doorbell / MSI-X vector, under Xen an event
//! channel, and in-process a closure.

/// Rings the peer's doorbell.
pub trait Notify {
    fn notify(&self);
}

/// A notifier that does nothing, for polled use.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNotify;

impl Notify for NoNotify {
    fn notify(&self) {}
}

impl<F: Fn()> Notify for F {
    fn notify(&self) {
        self()
    }
}
