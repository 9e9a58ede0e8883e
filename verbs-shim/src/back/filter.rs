//! A hook the back end installs per guest to check what the guest sends
//! before it reaches the fabric (port security: anti-spoofing).
//!
//! The back half copies the first [`FILTER_HEAD_LEN`] bytes of each frame
//! out of the window once and hands the copy to the filter together with the
//! guest's own port identity; a frame the filter rejects is not posted, its
//! slot goes back to the guest with status `LocalProtection`, and
//! [`BackStats::tx_filtered`](super::BackStats::tx_filtered) counts it. A
//! rejected frame is policy, not a protocol violation: the guest stays
//! connected.
//!
//! The checked copy is what is sent: a frame that passes goes to the
//! provider with [`Verbs::post_send_with_head`](crate::Verbs::post_send_with_head),
//! which takes the first bytes from the copy (memory the guest cannot
//! reach) and only the rest from the guest's slot. A guest that rewrites
//! its slot after posting (before or while the HCA reads it) changes only
//! bytes the filter never judged. Seats without a filter keep the plain
//! zero-copy `post_send`.

use alloc::boxed::Box;

use ring::Window;

use crate::types::{Gid, Qpn};

/// How many bytes of a frame a filter sees: the 4-byte IPoIB header and a
/// whole IPoIB ARP packet (56 bytes), or an IPv4 header without options.
/// The back half sends exactly these bytes from its copy
/// ([`Verbs::post_send_with_head`](crate::Verbs::post_send_with_head)), so
/// it equals [`MAX_SEND_HEAD`](crate::MAX_SEND_HEAD).
pub const FILTER_HEAD_LEN: usize = crate::hca::MAX_SEND_HEAD;

/// The guest's own address on the fabric, as its port was opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SenderPort {
    pub qpn: Qpn,
    pub gid: Gid,
}

/// What the filter decided about one frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TxVerdict {
    Pass,
    Drop,
}

/// Checks one guest's outgoing frames.
pub trait TxFilter: Send {
    /// `head` is a copy of the frame's first bytes (IPoIB header first), at
    /// most [`FILTER_HEAD_LEN`]; `frame_len` is the whole frame's length.
    fn check(&mut self, sender: &SenderPort, head: &[u8], frame_len: usize) -> TxVerdict;
}

/// A filter as the back half holds it.
pub type BoxedTxFilter = Box<dyn TxFilter>;

/// The copy of a frame's head that a filter passed; the back half sends
/// these bytes, not the slot's.
#[derive(Clone, Copy, Debug)]
pub(super) struct CheckedHead {
    bytes: [u8; FILTER_HEAD_LEN],
    len: usize,
}

impl CheckedHead {
    pub(super) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// Copies the head of the frame at `offset` once and asks `filter` about
/// the copy. `Some` (the copy, to be sent as the frame's head) if it
/// passes; `None` if it is dropped, or cannot be read.
pub(super) fn check_frame(
    filter: &mut dyn TxFilter,
    sender: &SenderPort,
    region: &Window,
    offset: usize,
    len: usize,
) -> Option<CheckedHead> {
    let mut head = CheckedHead {
        bytes: [0u8; FILTER_HEAD_LEN],
        len: len.min(FILTER_HEAD_LEN),
    };
    region
        .read_bytes(offset, head.bytes.get_mut(..head.len)?)
        .ok()?;
    (filter.check(sender, head.as_slice(), len) == TxVerdict::Pass).then_some(head)
}
