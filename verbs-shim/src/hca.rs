//! The verbs contract that IPoIB needs: one port, one UD QP, a pool of
//! pre-registered buffers, post send/recv, poll/arm the CQ, multicast
//! attach/detach and address resolution.
//!
//! [`Verbs`] is what every provider implements and what the back half of the
//! channel drives. [`Hca`] adds CPU access to the buffers, which a consumer
//! such as `ipoib` needs; the back half never touches buffer bytes.
//!
//! Slow operations (path resolution, multicast joins) are asynchronous, as on
//! a real fabric: the call queues the request and the answer arrives as a
//! [`Completion`] from [`Verbs::poll_cq`].

use alloc::vec::Vec;
use core::fmt;

use crate::mem::SlotBuffers;
use crate::slot::{RxSlot, RxSlots, SlotLayout, TxSlot, TxSlots};
use crate::types::{Gid, Lid, PKey, PortAttr, QKey, Qpn};

/// An address handle: an opaque name for a resolved destination (unicast
/// port or multicast group). Valid only on the provider that issued it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DestHandle(pub u32);

/// Where a UD send goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UdDest {
    pub handle: DestHandle,
    /// Remote QPN, or [`Qpn::MULTICAST`] for a group.
    pub qpn: Qpn,
    pub qkey: QKey,
}

/// Work completion status, a subset of `ibv_wc_status`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WcStatus {
    Success,
    /// The send was larger than the path MTU, or the receive buffer too small.
    LocalLength,
    /// The buffer or handle was not valid for this QP.
    LocalProtection,
    /// The QP is being torn down; the buffer comes back unused.
    Flushed,
    /// Any other failure.
    General,
}

impl WcStatus {
    pub const fn to_code(self) -> u16 {
        match self {
            WcStatus::Success => 0,
            WcStatus::LocalLength => 1,
            WcStatus::LocalProtection => 4,
            WcStatus::Flushed => 5,
            WcStatus::General => 21,
        }
    }

    /// Unknown codes map to `General`.
    pub const fn from_code(code: u16) -> WcStatus {
        match code {
            0 => WcStatus::Success,
            1 => WcStatus::LocalLength,
            4 => WcStatus::LocalProtection,
            5 => WcStatus::Flushed,
            _ => WcStatus::General,
        }
    }
}

/// Details of a received UD packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecvInfo {
    /// Bytes written into the slot, *including* the 40-byte GRH area.
    pub byte_len: u32,
    pub src_qpn: Qpn,
    pub src_lid: Lid,
    /// The P_Key the packet carried.
    pub pkey: PKey,
    /// True when the first 40 bytes hold a real GRH (source GID valid).
    pub grh_present: bool,
    /// True when the packet was addressed to a multicast group.
    pub multicast: bool,
}

/// Why a path could not be resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PathError {
    /// No port or group with that GID is reachable.
    Unreachable,
    /// The provider has no room for another handle.
    NoResources,
}

/// Why a multicast attach or detach failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum McastError {
    NotMulticast,
    /// The group is in a partition this port is not a member of.
    PartitionMismatch,
    NoResources,
    NotAttached,
}

/// One completion from the CQ.
///
/// `repr(u32)`: the tag is a whole word and every variant's fields start
/// 4-byte aligned, so the compiler moves a completion in whole,
/// non-overlapping words. With the default layout it copied the fields at
/// offset 1 with two overlapping 8-byte moves, and the load of the second
/// stalled on the store of the first (no store forwarding): the hottest
/// spot of the back end's reap loop in `perf annotate`.
#[derive(Debug)]
#[repr(u32)]
pub enum Completion {
    Send {
        slot: TxSlot,
        status: WcStatus,
    },
    Recv {
        slot: RxSlot,
        status: WcStatus,
        info: RecvInfo,
    },
    Path {
        dgid: Gid,
        result: Result<DestHandle, PathError>,
    },
    Mcast {
        mgid: Gid,
        attach: bool,
        result: Result<(), McastError>,
    },
    /// Port attributes changed (link state, for example); re-read them.
    PortChanged,
}

/// A fatal device-level error. After one of these the device is unusable
/// until it is reset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HcaError {
    /// The peer (back end) is gone or closed the channel.
    Disconnected,
    /// The peer broke the channel protocol; the device disconnected it.
    PeerViolation(crate::PeerFault),
    /// The request queue is full; poll and retry.
    QueueFull,
    /// An argument was invalid (for example, a handle this device never issued).
    InvalidArgument,
    /// The provider does not offer this operation.
    Unsupported,
}

impl fmt::Display for HcaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HcaError::Disconnected => f.write_str("device disconnected"),
            HcaError::PeerViolation(what) => {
                write!(f, "peer violated the channel protocol: {what}")
            }
            HcaError::QueueFull => f.write_str("request queue full"),
            HcaError::InvalidArgument => f.write_str("invalid argument"),
            HcaError::Unsupported => f.write_str("operation not supported by this provider"),
        }
    }
}

impl core::error::Error for HcaError {}

/// The most bytes [`Verbs::post_send_with_head`] takes from the caller's
/// copy rather than from the slot.
pub const MAX_SEND_HEAD: usize = 64;

/// The rule of [`Verbs::post_send_with_head`] for a provider to apply: a
/// head of at most [`MAX_SEND_HEAD`] bytes, no longer than the frame.
pub fn check_send_head(head: &[u8], len: usize) -> Result<(), HcaError> {
    if head.len() > MAX_SEND_HEAD || head.len() > len {
        Err(HcaError::InvalidArgument)
    } else {
        Ok(())
    }
}

/// One send of a batch for [`Verbs::post_sends`]: what
/// [`Verbs::post_send`] takes.
#[derive(Debug)]
pub struct SendWr {
    pub slot: TxSlot,
    pub len: usize,
    pub dest: UdDest,
}

/// A post that did not happen; the slot comes back to the caller.
#[derive(Debug)]
pub struct PostError<T> {
    pub slot: T,
    pub error: HcaError,
}

/// The provider side of the contract.
pub trait Verbs {
    fn port_attr(&self) -> PortAttr;

    /// What the provider checks or does on its user's behalf; nothing
    /// unless it says so.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads::NONE
    }

    fn layout(&self) -> SlotLayout;

    /// All slot tokens. The first call returns them; later calls return `None`.
    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)>;

    /// Queues a UD send of `len` bytes from the start of `slot`.
    /// A send larger than the path MTU completes with `LocalLength`.
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>>;

    /// Queues a UD send of `len` bytes whose first `head.len()` bytes are
    /// taken from `head`, not from the slot, and the rest from the slot at
    /// the same offsets (`head.len()..len`). The caller owns `head` (a copy
    /// it has checked); the provider copies it into memory of its own before
    /// returning, so what the caller checked is what goes on the wire, even
    /// if the slot's owner rewrites the slot meanwhile.
    ///
    /// `head` is at most [`MAX_SEND_HEAD`] bytes and no longer than `len`;
    /// otherwise the post fails with `InvalidArgument`. Completions and the
    /// other rules are those of [`Verbs::post_send`].
    ///
    /// Providers that cannot (the guest's side of the channel, which never
    /// needs to) fail with [`HcaError::Unsupported`].
    fn post_send_with_head(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: &[u8],
    ) -> Result<(), PostError<TxSlot>> {
        let _ = (len, dest, head);
        Err(PostError {
            slot,
            error: HcaError::Unsupported,
        })
    }

    /// Queues a receive buffer. The HCA writes a 40-byte GRH area and then the
    /// payload.
    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>>;

    /// Posts `sends` in order, each exactly as [`Verbs::post_send`] would;
    /// those that could not be posted are appended to `refused`, in order.
    /// A provider may take its locks or ring its doorbell once for the lot;
    /// the default posts them one by one.
    fn post_sends(
        &mut self,
        sends: &mut dyn Iterator<Item = SendWr>,
        refused: &mut Vec<PostError<TxSlot>>,
    ) {
        for wr in sends {
            if let Err(e) = self.post_send(wr.slot, wr.len, &wr.dest) {
                refused.push(e);
            }
        }
    }

    /// Posts receive buffers in order, each as [`Verbs::post_recv`] would;
    /// those that could not be posted are appended to `refused`. The
    /// default posts them one by one.
    fn post_recvs(
        &mut self,
        slots: &mut dyn Iterator<Item = RxSlot>,
        refused: &mut Vec<PostError<RxSlot>>,
    ) {
        for slot in slots {
            if let Err(e) = self.post_recv(slot) {
                refused.push(e);
            }
        }
    }

    /// Rings the doorbell for everything posted since the last flush.
    fn flush(&mut self) -> Result<(), HcaError>;

    /// Takes one completion, if any.
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError>;

    /// Asks for a notification when the next completion arrives. Returns
    /// `true` if completions are already waiting, in which case the caller
    /// must poll again instead of sleeping (the final re-check).
    fn arm_cq(&mut self) -> Result<bool, HcaError>;

    /// Starts joining a multicast group; the result arrives as
    /// [`Completion::Mcast`].
    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError>;

    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError>;

    /// Starts resolving a unicast GID or a multicast GID to a handle; the
    /// result arrives as [`Completion::Path`].
    ///
    /// Resolving a multicast GID is a send-only join: it succeeds for any
    /// MGID in the port's partition, whether or not the group has members
    /// (on InfiniBand the provider makes an SA send-only join), sends to the
    /// handle reach the group's receiving members at the time, and the port
    /// itself receives nothing from the group until it
    /// [attaches](Self::attach_mcast). Releasing the handle leaves.
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError>;

    /// Frees a handle from [`Completion::Path`].
    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError>;

    /// Connected mode (RC queue pairs), if this provider offers it now
    /// (`docs/connected-mode.md`); none unless it says so.
    fn rc(&mut self) -> Option<&mut dyn crate::rc::RcVerbs> {
        None
    }
}

/// A provider whose buffers the CPU can read and write.
pub trait Hca: Verbs {
    /// CPU access to the slots. Only slots whose token the caller holds can be
    /// reached through it.
    fn buffers(&mut self) -> SlotBuffers<'_>;

    /// Protocol faults seen from the peer, by kind, for a provider that has
    /// a peer (the guest side of the channel); `None` for the others.
    fn peer_faults(&self) -> Option<crate::PeerFaultCounts> {
        None
    }
}
