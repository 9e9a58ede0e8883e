//! Connected mode (RFC 4755) in the verbs contract: RC queue pairs as a
//! resource of the port, beside its UD QP (`docs/connected-mode.md`, §3).
//!
//! [`RcVerbs`] is a separate trait so that providers without RC, and every
//! consumer of [`crate::Completion`], stay as they are; a provider that has
//! it hands it out through [`crate::Verbs::rc`] (so that code generic over
//! `Verbs`, such as the back half, can find it). A provider that implements
//! it keeps one notification for both queues: `Verbs::arm_cq` counts RC
//! completions in its final re-check and fires the same notifier.
//!
//! Connections are named by a [`ConnHandle`] the provider issues; the RC
//! QPNs, PSNs and paths stay inside the provider. A connection is set up by
//! the active side ([`RcVerbs::rc_connect`], naming the target by its GID and
//! UD QPN, the RFC's Service ID), announced to the passive side as
//! [`RcEvent::Request`], and finished by [`RcVerbs::rc_accept`]. Receives
//! come from one pool of big slots per port (an SRQ), whichever connection
//! the message arrived on.
//!
//! After [`RcEvent::Rejected`], [`RcEvent::Broken`] or [`RcEvent::Closed`]
//! the handle is dead; the provider may issue its index again later (with a
//! new generation, so the old handle stays dead).

mod area;
mod error;
mod slot;

pub use area::BigArea;
pub use error::{ConnState, RcError};
pub use slot::{BigLayout, BigRxSlot, BigRxSlots, BigTxSlot, BigTxSlots};

use crate::hca::HcaError;
use crate::types::{Gid, Qpn};

/// The smallest receive MTU a connection end may advertise.
pub const MIN_RC_MTU: u32 = 256;

/// The connected MTU of RFC 4755 and Linux: the largest IP packet.
pub const DEFAULT_CONNECTED_MTU: u32 = 65520;

/// A connection, as named by the provider that issued the handle.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnHandle(pub u32);

/// What a provider offers for connected mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RcCaps {
    /// The most connections the port holds at once.
    pub max_conns: usize,
    /// The big-slot pool; a message is at most `big.slot_size` bytes.
    pub big: BigLayout,
}

/// The other end of a connection, as its request said.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RcPeer {
    pub gid: Gid,
    /// The peer's UD QPN (RFC 4755 private data).
    pub ud_qpn: Qpn,
    /// The largest message the peer accepts (RFC 4755 private data).
    pub recv_mtu: u32,
}

/// Why a connect failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RejectReason {
    /// No port with that GID.
    Unreachable,
    /// The UD QPN is not the target's, or the target does not accept
    /// connections (datagram mode only).
    NoListener,
    /// The target is in another partition.
    Partition,
    /// The target said no, or is at its connection limit.
    Refused,
    /// Nobody answered in time.
    Timeout,
}

/// Why an established (or requested) connection died.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BreakReason {
    /// A message was lost more often than the retry count allows.
    RetryExceeded,
    /// The peer's port went away (its guest died, its seat was reset).
    PeerGone,
    /// The peer disconnected.
    PeerClosed,
    /// The link failed under both ends.
    LinkDown,
    /// The provider closed it after it had been idle too long.
    Idle,
}

/// Something that happened to a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RcEvent {
    /// Passive side: a peer asks for a connection; accept or reject it.
    Request { conn: ConnHandle, peer: RcPeer },
    /// Both sides: the connection is up; messages up to `send_mtu` bytes
    /// may be sent on it.
    Established { conn: ConnHandle, send_mtu: u32 },
    /// Active side: the connect failed; the handle is dead.
    Rejected {
        conn: ConnHandle,
        reason: RejectReason,
    },
    /// The connection died; sends on it were flushed; the handle is dead.
    Broken {
        conn: ConnHandle,
        reason: BreakReason,
    },
    /// Our own disconnect finished; the handle is dead.
    Closed { conn: ConnHandle },
}

/// Status of an RC work completion, a subset of `ibv_wc_status`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RcStatus {
    Success,
    /// The message was larger than the connection's send MTU.
    LocalLength,
    /// The connection went down first; the slot comes back unused.
    Flushed,
    /// The message could not be delivered within the retry count; the
    /// connection is broken.
    RetryExceeded,
    /// Any other failure.
    General,
}

impl RcStatus {
    pub const fn to_code(self) -> u16 {
        match self {
            RcStatus::Success => 0,
            RcStatus::LocalLength => 1,
            RcStatus::Flushed => 5,
            RcStatus::RetryExceeded => 12,
            RcStatus::General => 21,
        }
    }

    /// Unknown codes map to `General`.
    pub const fn from_code(code: u16) -> RcStatus {
        match code {
            0 => RcStatus::Success,
            1 => RcStatus::LocalLength,
            5 => RcStatus::Flushed,
            12 => RcStatus::RetryExceeded,
            _ => RcStatus::General,
        }
    }
}

/// Details of a received RC message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RcRecvInfo {
    /// The connection it arrived on.
    pub conn: ConnHandle,
    /// Message bytes, from the start of the slot (no GRH area on RC).
    pub byte_len: u32,
    /// The peer's UD QPN.
    pub src_qpn: Qpn,
}

/// One completion from the RC queue.
#[derive(Debug)]
pub enum RcCompletion {
    Send {
        slot: BigTxSlot,
        conn: ConnHandle,
        status: RcStatus,
    },
    Recv {
        slot: BigRxSlot,
        status: RcStatus,
        /// Meaningful only with `RcStatus::Success`.
        info: RcRecvInfo,
    },
    Event(RcEvent),
}

/// A post that did not happen; the slot comes back to the caller.
#[derive(Debug)]
pub struct RcPostError<T> {
    pub slot: T,
    pub error: RcError,
}

/// RC queue pairs of a port (`docs/connected-mode.md`, §3).
pub trait RcVerbs {
    /// What connected mode this port offers; `None`: none.
    fn rc_caps(&self) -> Option<RcCaps>;

    /// Every big-slot token. The first call returns them; later calls (and
    /// ports without RC) return `None`.
    fn take_big_slots(&mut self) -> Option<(BigTxSlots, BigRxSlots)>;

    /// Asks the port with `dgid`, whose UD QPN is `ud_qpn`, for a
    /// connection, advertising `recv_mtu` as the largest message we accept.
    /// The handle is ours at once; the answer arrives as
    /// [`RcEvent::Established`] or [`RcEvent::Rejected`].
    fn rc_connect(&mut self, dgid: Gid, ud_qpn: Qpn, recv_mtu: u32) -> Result<ConnHandle, RcError>;

    /// Accepts a [`RcEvent::Request`], advertising `recv_mtu`. Both ends
    /// then get [`RcEvent::Established`].
    fn rc_accept(&mut self, conn: ConnHandle, recv_mtu: u32) -> Result<(), RcError>;

    /// Refuses a [`RcEvent::Request`]; the handle is dead at once, the
    /// requester gets [`RcEvent::Rejected`] with `Refused`.
    fn rc_reject(&mut self, conn: ConnHandle) -> Result<(), RcError>;

    /// Tears a connection down, in any state. Our sends still queued on it
    /// complete `Flushed`, then [`RcEvent::Closed`] arrives; the peer gets
    /// [`RcEvent::Broken`] with `PeerClosed`.
    fn rc_disconnect(&mut self, conn: ConnHandle) -> Result<(), RcError>;

    /// Queues a message of `len` bytes from the start of `slot` on an
    /// established connection. It completes when the peer has it (an RC
    /// send completes on the acknowledgement); one longer than the
    /// connection's `send_mtu` completes with `LocalLength`.
    fn rc_post_send(
        &mut self,
        conn: ConnHandle,
        slot: BigTxSlot,
        len: usize,
    ) -> Result<(), RcPostError<BigTxSlot>>;

    /// Adds a big receive slot to the port's shared pool.
    fn rc_post_recv(&mut self, slot: BigRxSlot) -> Result<(), RcPostError<BigRxSlot>>;

    /// Takes one RC completion, if any.
    fn poll_rc(&mut self) -> Result<Option<RcCompletion>, HcaError>;

    /// CPU access to the big slots whose tokens the caller holds (nothing
    /// for a provider, like the back half's, whose buffers the CPU does
    /// not touch).
    fn big_area(&mut self) -> BigArea<'_>;
}
