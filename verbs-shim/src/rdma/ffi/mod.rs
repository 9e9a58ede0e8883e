//! The only `unsafe` code of the provider: owning wrappers around the
//! libibverbs objects, each freed exactly once by its `Drop`.
//!
//! Ownership and order:
//! - [`Device`] owns the `ibv_context` and the protection domain. It is
//!   shared (`Arc`) by every object made from it, so it is freed last.
//! - [`Queues`] owns one port's QP, CQ, completion channel and memory
//!   region, declared (and so dropped) in that order, then a clone of the
//!   registered [`ring::Window`] (the memory outlives its registration),
//!   then its `Arc<Device>`. Its `Drop` first detaches the QP from every
//!   multicast group: the kernel will not destroy an attached QP.
//! - [`RcCore`] (connected mode's SRQ, CQ and big-region MR) is shared by
//!   the port's [`Queues`] and every [`RcQp`]; it holds the completion
//!   channel (shared with `Queues`) and the device.
//! - [`CmId`]s hold their [`CmChannel`], which is destroyed last.
//! - [`Ah`] owns one address handle and its own `Arc<Device>`, so the PD
//!   outlives it.
//!
//! Pointers never leave this module; callers see safe methods only.
//! libibverbs objects may be used from any thread (the library serialises
//! what needs it), which is what the `Send`/`Sync` impls rely on.

mod ah;
mod cm;
mod device;
mod events;
mod queues;
mod rc;

pub(super) use ah::{Ah, AhSpec, Grh};
pub(super) use cm::{CmChannel, CmEvent, CmId, ConnParams, GroupRoute, PathRecord, PortSpace};
pub(super) use device::{Device, DeviceCaps, DeviceList};
pub(super) use events::EventSet;
pub(super) use queues::{QueueSpec, Queues, POLL_BATCH};
pub(super) use rc::{RcCore, RcQp, RcWc};

use core::ffi::c_int;

/// The calling thread's `errno`.
fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The errno of a verbs call that returns 0 on success and either an errno
/// value or -1 with `errno` set on failure (the man pages allow both).
fn ret_errno(ret: c_int) -> i32 {
    if ret > 0 {
        ret
    } else {
        errno()
    }
}

/// C structs whose all-zero bit pattern is a valid value: integers, raw
/// pointers, nullable function pointers, and arrays and unions of those.
///
/// # Safety
///
/// Implement only for such types.
unsafe trait Zeroable: Sized {}

/// A zero-initialised C struct, as `memset(&x, 0, sizeof x)` gives.
fn zeroed<T: Zeroable>() -> T {
    // SAFETY: `Zeroable` promises that all-zero bytes are a valid `T`.
    unsafe { core::mem::zeroed() }
}

// SAFETY: each of these is a `repr(C)` libibverbs struct made only of
// integers, raw pointers, `Option<extern fn>`, and arrays/unions of them.
unsafe impl Zeroable for rdma_sys::ibv_qp_attr {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_qp_init_attr {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_port_attr {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_device_attr {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_send_wr {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_wc {}
// SAFETY: as above.
unsafe impl Zeroable for rdma_sys::ibv_ah_attr {}
