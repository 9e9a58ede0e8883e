//! The pure parts of talking to the CQ: work request ids, work completions
//! and what a receive buffer's GRH area says.

use crate::hca::WcStatus;
use crate::types::{Gid, PKey, GRH_LEN};

/// What a work request id names. Each port has its own CQ, so the kind and
/// the slot index are all a completion needs to find its token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum WrId {
    Send(u16),
    Recv(u16),
}

const TAG_SHIFT: u32 = 32;
const TAG_SEND: u64 = 0x5344; // "SD"
const TAG_RECV: u64 = 0x5243; // "RC"

impl WrId {
    pub(super) const fn encode(self) -> u64 {
        match self {
            WrId::Send(index) => (TAG_SEND << TAG_SHIFT) | index as u64,
            WrId::Recv(index) => (TAG_RECV << TAG_SHIFT) | index as u64,
        }
    }

    /// `None` for an id this provider never made.
    pub(super) const fn decode(id: u64) -> Option<WrId> {
        let low = id & 0xffff_ffff;
        if low > u16::MAX as u64 {
            return None;
        }
        let index = low as u16;
        match id >> TAG_SHIFT {
            TAG_SEND => Some(WrId::Send(index)),
            TAG_RECV => Some(WrId::Recv(index)),
            _ => None,
        }
    }
}

/// `ibv_wc_status` codes this provider tells apart.
pub(super) mod status {
    pub const SUCCESS: u32 = 0;
    pub const LOC_LEN_ERR: u32 = 1;
    pub const LOC_PROT_ERR: u32 = 4;
    pub const WR_FLUSH_ERR: u32 = 5;
}

/// `ibv_wc_status` to [`WcStatus`]. Everything without a counterpart
/// (QP operation, access, remote, retry, fatal and general errors) is
/// `General`.
pub(super) const fn wc_status(code: u32) -> WcStatus {
    match code {
        status::SUCCESS => WcStatus::Success,
        status::LOC_LEN_ERR => WcStatus::LocalLength,
        status::LOC_PROT_ERR => WcStatus::LocalProtection,
        status::WR_FLUSH_ERR => WcStatus::Flushed,
        _ => WcStatus::General,
    }
}

/// `IBV_WC_GRH`: the first 40 bytes of the receive buffer hold a GRH.
pub(super) const WC_GRH: u32 = 1;

/// The fields of an `ibv_wc` this provider reads, copied out of the CQ.
/// On an error completion only `wr_id`, `status` and `vendor_err` are
/// meaningful (ibv_poll_cq(3)).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct Wc {
    pub wr_id: u64,
    pub status: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    pub slid: u16,
}

/// Whether the packet in a receive buffer was sent to a multicast address,
/// judged from its GRH area (IBA 8.3, and the RoCEv2 annex A17).
///
/// - a GRH (InfiniBand, RoCEv1, RoCEv2 over IPv6) has IP version 6 in the
///   top nibble of byte 0 and the destination GID in bytes 24..40: multicast
///   when byte 24 is 0xff;
/// - RoCEv2 over IPv4 leaves bytes 0..20 undefined and puts the IPv4 header
///   in bytes 20..40: multicast when the destination address (bytes 36..40)
///   is in 224.0.0.0/4.
///
/// Anything else (or no GRH at all: `ibv_wc` has no multicast flag and
/// `dlid_path_bits` does not tell) is taken as unicast.
pub(super) fn grh_says_multicast(grh: &[u8; GRH_LEN]) -> bool {
    if grh[0] >> 4 == 6 {
        grh[24] == 0xff
    } else if grh[20] >> 4 == 4 {
        grh[36] & 0xf0 == 0xe0
    } else {
        false
    }
}

/// The P_Key an MGID names, IPoIB style (RFC 4391: bytes 4..6), the same
/// rule the sim fabric applies to joins.
pub(super) fn mgid_pkey(mgid: Gid) -> PKey {
    let b = mgid.as_bytes();
    PKey(u16::from_be_bytes([b[4], b[5]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_ids_round_trip() {
        for index in [0, 1, 0x7fff, u16::MAX] {
            for id in [WrId::Send(index), WrId::Recv(index)] {
                assert_eq!(WrId::decode(id.encode()), Some(id));
            }
            assert_ne!(WrId::Send(index).encode(), WrId::Recv(index).encode());
        }
        assert_eq!(WrId::Send(7).encode(), 0x5344_0000_0007);
        assert_eq!(WrId::Recv(7).encode(), 0x5243_0000_0007);
    }

    #[test]
    fn foreign_wr_ids_are_rejected() {
        assert_eq!(WrId::decode(0), None);
        assert_eq!(WrId::decode(7), None);
        assert_eq!(WrId::decode(u64::MAX), None);
        assert_eq!(WrId::decode(0x5344_0001_0000), None);
        assert_eq!(WrId::decode(0x0001_5344_0000_0001), None);
    }

    #[test]
    fn status_mapping() {
        assert_eq!(wc_status(0), WcStatus::Success);
        assert_eq!(wc_status(1), WcStatus::LocalLength);
        assert_eq!(wc_status(4), WcStatus::LocalProtection);
        assert_eq!(wc_status(5), WcStatus::Flushed);
        // LOC_QP_OP_ERR, LOC_EEC_OP_ERR, MW_BIND, BAD_RESP, LOC_ACCESS,
        // REM_*, RETRY_EXC, RNR_RETRY_EXC, ..., FATAL, RESP_TIMEOUT, GENERAL.
        for code in [2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 19, 20, 21, 22, 1000] {
            assert_eq!(wc_status(code), WcStatus::General, "{code}");
        }
        // The codes the channel carries are the verbs codes.
        for code in [0, 1, 4, 5, 21] {
            assert_eq!(u32::from(wc_status(code).to_code()), code);
        }
    }

    fn grh_v6(dgid0: u8) -> [u8; GRH_LEN] {
        let mut g = [0; GRH_LEN];
        g[0] = 0x60;
        g[6] = 0x1b;
        g[24] = dgid0;
        g
    }

    fn grh_v4(dst: [u8; 4]) -> [u8; GRH_LEN] {
        let mut g = [0; GRH_LEN];
        g[20] = 0x45;
        g[29] = 17;
        g[36..40].copy_from_slice(&dst);
        g
    }

    #[test]
    fn multicast_from_grh_area() {
        assert!(grh_says_multicast(&grh_v6(0xff)));
        assert!(!grh_says_multicast(&grh_v6(0xfe)));
        assert!(grh_says_multicast(&grh_v4([239, 1, 2, 3])));
        assert!(grh_says_multicast(&grh_v4([224, 0, 0, 1])));
        assert!(!grh_says_multicast(&grh_v4([10, 0, 2, 15])));
        assert!(!grh_says_multicast(&grh_v4([240, 0, 0, 1])));
        assert!(!grh_says_multicast(&[0; GRH_LEN]));
    }

    #[test]
    fn mgid_partition() {
        let mgid = Gid([
            0xff, 0x12, 0x40, 0x1b, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(mgid_pkey(mgid), PKey(0x8001));
    }
}
