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
//! The guest can still rewrite its slot between the check and the
//! provider's read of it (the send is zero copy). CHANNEL.md ("Port
//! security") says what that leaves open.

use alloc::boxed::Box;

use ring::Window;

use crate::types::{Gid, Qpn};

/// How many bytes of a frame a filter sees: the 4-byte IPoIB header and a
/// whole IPoIB ARP packet (56 bytes), or an IPv4 header without options.
pub const FILTER_HEAD_LEN: usize = 64;

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

/// Copies the head of the frame at `offset` and asks `filter`. A frame that
/// cannot be read is dropped.
pub(super) fn check_frame(
    filter: &mut dyn TxFilter,
    sender: &SenderPort,
    region: &Window,
    offset: usize,
    len: usize,
) -> TxVerdict {
    let mut head = [0u8; FILTER_HEAD_LEN];
    let head = &mut head[..len.min(FILTER_HEAD_LEN)];
    if region.read_bytes(offset, head).is_err() {
        return TxVerdict::Drop;
    }
    filter.check(sender, head, len)
}
