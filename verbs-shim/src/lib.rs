//! The verbs contract that IPoIB needs, and its providers.
//!
//! - [`Verbs`] / [`Hca`]: one port, one UD QP, pre-registered slots, post
//!   send/recv, poll/arm the CQ, multicast, address resolution.
//! - [`front`]: the guest side; speaks the shared-memory channel.
//! - [`back`]: serves one channel over any [`Verbs`] provider, validating
//!   everything the guest writes.
//! - [`rc`]: connected mode, RC queue pairs beside the UD QP ([`rc::RcVerbs`]).
//! - `sim` (feature `sim`): a software fabric.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
// `unsafe` lives in `mem` (slot slices) and `rdma::ffi` (libibverbs and
// librdmacm) only.
#![deny(unsafe_code)]

extern crate alloc;

pub mod back;
pub mod front;
mod hca;
#[allow(unsafe_code)]
mod mem;
pub mod notify;
mod peer_fault;
pub mod rc;
mod slot;
pub mod types;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "rdma")]
pub mod rdma;

pub use hca::{
    check_send_head, Completion, DestHandle, Hca, HcaError, McastError, PathError, PostError,
    RecvInfo, SendWr, UdDest, Verbs, WcStatus, MAX_SEND_HEAD,
};
pub use mem::{RxArea, SlotBuffers, TxArea};
pub use peer_fault::{PeerFault, PeerFaultCounts, PeerFaultKind, RingId};
pub use slot::{RxSlot, RxSlots, SlotLayout, TxSlot, TxSlots};
pub use types::{Gid, IbMtu, Lid, Offloads, PKey, PortAttr, PortState, QKey, Qpn, GRH_LEN};
