//! The addresses and private data librdmacm carries for connected mode,
//! built and parsed as bytes (no `unsafe`; the `ffi` module passes the
//! bytes to librdmacm as a `struct sockaddr`).
//!
//! A port's connection endpoint is named by its GID and its UD QPN:
//! - RoCE: the GID is an IP address (IPv6, or IPv4-mapped `::ffff:a.b.c.d`);
//!   rdma_cm's TCP port space, port = the low 16 bits of the UD QPN. A
//!   link-local IPv6 address needs the network device's interface index as
//!   its scope.
//! - InfiniBand: `AF_IB` with the GID and the P_Key, service ID
//!   `RDMA_IB_IP_PS_IB | port` (rdma_cm accepts only its own port spaces
//!   on `AF_IB`, so not RFC 4755's `0x1000000 | QPN`; see
//!   `docs/connected-mode.md`).
//!
//! The private data (after rdma_cm's own header) is RFC 4755's, extended:
//! the sender's UD QPN and the largest message it accepts, each a
//! big-endian 32-bit word, then (in a request) the UD QPN the request is
//! for, so that a listener refuses a request meant for another QP whose
//! QPN shares the low 16 bits.

use crate::types::{Gid, Qpn};

/// `AF_INET`, `AF_INET6`, `AF_IB` on Linux.
pub(super) const AF_INET: u16 = 2;
pub(super) const AF_INET6: u16 = 10;
pub(super) const AF_IB: u16 = 27;

/// `RDMA_IB_IP_PS_IB` (rdma/rdma_cma.h): the service ID prefix of
/// `RDMA_PS_IB` on `AF_IB`.
const RDMA_IB_IP_PS_IB: u64 = 0x0000_0000_013F_0000;
/// `RDMA_IB_IP_PS_UDP`: the same for `RDMA_PS_UDP` (multicast joins).
const RDMA_IB_IP_PS_UDP: u64 = 0x0000_0000_0111_0000;

/// Room for any socket address (`struct sockaddr_storage`), 8-aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
pub(super) struct RawSockaddr(pub [u8; 128]);

/// An rdma_cm endpoint address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum CmAddr {
    V4 {
        addr: [u8; 4],
        port: u16,
    },
    V6 {
        addr: [u8; 16],
        port: u16,
        scope: u32,
    },
    Ib {
        gid: [u8; 16],
        pkey: u16,
        sid: u64,
    },
}

/// Which addresses a port's endpoints use.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum AddrKind {
    /// RoCE: IP addresses; link-local IPv6 ones get this scope.
    Ip { scope: u32 },
    /// InfiniBand: `AF_IB` in this partition.
    Ib { pkey: u16 },
}

/// The rdma_cm port that stands for a UD QPN; `None` for a QPN whose low
/// 16 bits are 0 (port 0 means "any" to rdma_cm).
pub(super) fn service_port(qpn: Qpn) -> Option<u16> {
    let port = (qpn.get() & 0xffff) as u16;
    (port != 0).then_some(port)
}

fn is_v4_mapped(gid: &[u8; 16]) -> bool {
    gid[..10].iter().all(|b| *b == 0) && gid[10] == 0xff && gid[11] == 0xff
}

fn is_link_local(gid: &[u8; 16]) -> bool {
    gid[0] == 0xfe && gid[1] & 0xc0 == 0x80
}

impl CmAddr {
    /// The endpoint of the port with `gid` and service `port`.
    pub(super) fn endpoint(gid: Gid, port: u16, kind: AddrKind) -> CmAddr {
        let g = gid.0;
        match kind {
            AddrKind::Ib { pkey } => CmAddr::Ib {
                gid: g,
                pkey,
                sid: RDMA_IB_IP_PS_IB | u64::from(port),
            },
            AddrKind::Ip { .. } if is_v4_mapped(&g) => CmAddr::V4 {
                addr: [g[12], g[13], g[14], g[15]],
                port,
            },
            AddrKind::Ip { scope } => CmAddr::V6 {
                addr: g,
                port,
                scope: if is_link_local(&g) { scope } else { 0 },
            },
        }
    }

    /// `gid`'s address in rdma_cm's UDP port space, any port: where
    /// multicast joins are made from, and both ends of a path resolution
    /// (`path_cm`).
    pub(super) fn udp_endpoint(gid: Gid, kind: AddrKind) -> CmAddr {
        match (CmAddr::endpoint(gid, 0, kind), kind) {
            (CmAddr::Ib { gid, pkey, .. }, _) => CmAddr::Ib {
                gid,
                pkey,
                sid: RDMA_IB_IP_PS_UDP,
            },
            (addr, _) => addr,
        }
    }

    /// A multicast group: the MGID itself (an IPv6 multicast address on
    /// RoCE, scoped to the network device; the MGID in `AF_IB`).
    pub(super) fn group(mgid: Gid, kind: AddrKind) -> CmAddr {
        match kind {
            AddrKind::Ib { pkey } => CmAddr::Ib {
                gid: mgid.0,
                pkey,
                sid: RDMA_IB_IP_PS_UDP,
            },
            AddrKind::Ip { scope } => CmAddr::V6 {
                addr: mgid.0,
                port: 0,
                scope,
            },
        }
    }

    /// The GID the address names (an IPv4 address as `::ffff:a.b.c.d`).
    pub(super) fn gid(&self) -> Gid {
        match *self {
            CmAddr::V4 { addr, .. } => {
                let mut g = [0; 16];
                g[10] = 0xff;
                g[11] = 0xff;
                g[12..].copy_from_slice(&addr);
                Gid(g)
            }
            CmAddr::V6 { addr, .. } => Gid(addr),
            CmAddr::Ib { gid, .. } => Gid(gid),
        }
    }

    /// The bytes of the matching `struct sockaddr_in`, `sockaddr_in6` or
    /// `sockaddr_ib` (families in host order, the rest in network order).
    pub(super) fn encode(&self) -> RawSockaddr {
        let mut b = [0u8; 128];
        match *self {
            CmAddr::V4 { addr, port } => {
                b[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
                b[2..4].copy_from_slice(&port.to_be_bytes());
                b[4..8].copy_from_slice(&addr);
            }
            CmAddr::V6 { addr, port, scope } => {
                b[0..2].copy_from_slice(&AF_INET6.to_ne_bytes());
                b[2..4].copy_from_slice(&port.to_be_bytes());
                b[8..24].copy_from_slice(&addr);
                b[24..28].copy_from_slice(&scope.to_ne_bytes());
            }
            CmAddr::Ib { gid, pkey, sid } => {
                b[0..2].copy_from_slice(&AF_IB.to_ne_bytes());
                b[2..4].copy_from_slice(&pkey.to_be_bytes());
                b[8..24].copy_from_slice(&gid);
                b[24..32].copy_from_slice(&sid.to_be_bytes());
                b[32..40].copy_from_slice(&u64::MAX.to_be_bytes());
            }
        }
        RawSockaddr(b)
    }

    /// Parses what [`CmAddr::encode`] makes (and what librdmacm reports);
    /// `None` for another family.
    pub(super) fn decode(raw: &RawSockaddr) -> Option<CmAddr> {
        let b = &raw.0;
        let u16_at = |i: usize| [b[i], b[i + 1]];
        let bytes16 = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[i..i + 16]);
            a
        };
        match u16::from_ne_bytes(u16_at(0)) {
            AF_INET => Some(CmAddr::V4 {
                addr: [b[4], b[5], b[6], b[7]],
                port: u16::from_be_bytes(u16_at(2)),
            }),
            AF_INET6 => Some(CmAddr::V6 {
                addr: bytes16(8),
                port: u16::from_be_bytes(u16_at(2)),
                scope: u32::from_ne_bytes([b[24], b[25], b[26], b[27]]),
            }),
            AF_IB => {
                let mut sid = [0u8; 8];
                sid.copy_from_slice(&b[24..32]);
                Some(CmAddr::Ib {
                    gid: bytes16(8),
                    pkey: u16::from_be_bytes(u16_at(2)),
                    sid: u64::from_be_bytes(sid),
                })
            }
            _ => None,
        }
    }
}

/// What a connection request or answer carries (RFC 4755 private data,
/// plus the target's UD QPN in a request).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct PrivateData {
    /// The sender's UD QPN.
    pub ud_qpn: u32,
    /// The largest message the sender accepts.
    pub recv_mtu: u32,
    /// Requests only: the UD QPN of the port asked.
    pub target_qpn: Option<u32>,
}

impl PrivateData {
    pub(super) const REQUEST_LEN: usize = 12;
    pub(super) const ANSWER_LEN: usize = 8;

    pub(super) fn encode(&self) -> ([u8; Self::REQUEST_LEN], usize) {
        let mut b = [0u8; Self::REQUEST_LEN];
        b[0..4].copy_from_slice(&(self.ud_qpn & 0x00ff_ffff).to_be_bytes());
        b[4..8].copy_from_slice(&self.recv_mtu.to_be_bytes());
        match self.target_qpn {
            Some(t) => {
                b[8..12].copy_from_slice(&(t & 0x00ff_ffff).to_be_bytes());
                (b, Self::REQUEST_LEN)
            }
            None => (b, Self::ANSWER_LEN),
        }
    }

    /// Parses a request (`request`: the target QPN must be there) or an
    /// answer. Longer data is accepted (rdma_cm pads private data to the
    /// CM message's size); `None` if it is too short.
    pub(super) fn decode(bytes: &[u8], request: bool) -> Option<PrivateData> {
        let word = |i: usize| -> Option<u32> {
            let w = bytes.get(i..i + 4)?;
            Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        };
        Some(PrivateData {
            ud_qpn: word(0)? & 0x00ff_ffff,
            recv_mtu: word(4)?,
            target_qpn: if request {
                Some(word(8)? & 0x00ff_ffff)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ports_are_the_low_bits_of_the_qpn() {
        assert_eq!(service_port(Qpn::new_truncated(0x11)), Some(0x11));
        assert_eq!(service_port(Qpn::new_truncated(0x12_3456)), Some(0x3456));
        assert_eq!(service_port(Qpn::new_truncated(0x01_0000)), None);
    }

    #[test]
    fn roce_addresses_follow_the_gid() {
        let ll = Gid([
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x52, 0x0c, 0x01,
        ]);
        let a = CmAddr::endpoint(ll, 17, AddrKind::Ip { scope: 2 });
        assert_eq!(
            a,
            CmAddr::V6 {
                addr: ll.0,
                port: 17,
                scope: 2
            }
        );
        assert_eq!(CmAddr::decode(&a.encode()), Some(a));
        assert_eq!(a.gid(), ll);
        let raw = a.encode().0;
        assert_eq!(&raw[0..4], &[10, 0, 0, 17], "family (LE host) and port");
        assert_eq!(&raw[8..24], &ll.0);

        let mut global = ll;
        global.0[0] = 0x20;
        global.0[1] = 0x01;
        match CmAddr::endpoint(global, 17, AddrKind::Ip { scope: 2 }) {
            CmAddr::V6 { scope, .. } => assert_eq!(scope, 0, "no scope off link"),
            other => panic!("{other:?}"),
        }

        let mut v4 = [0u8; 16];
        v4[10] = 0xff;
        v4[11] = 0xff;
        v4[12..].copy_from_slice(&[10, 0, 2, 15]);
        let a = CmAddr::endpoint(Gid(v4), 0x4455, AddrKind::Ip { scope: 2 });
        assert_eq!(
            a,
            CmAddr::V4 {
                addr: [10, 0, 2, 15],
                port: 0x4455
            }
        );
        assert_eq!(a.gid(), Gid(v4));
        assert_eq!(CmAddr::decode(&a.encode()), Some(a));
        assert_eq!(&a.encode().0[0..8], &[2, 0, 0x44, 0x55, 10, 0, 2, 15]);
    }

    #[test]
    fn infiniband_addresses_use_af_ib() {
        let gid = Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0xc9, 3, 0, 1, 2, 3]);
        let a = CmAddr::endpoint(gid, 0x11, AddrKind::Ib { pkey: 0xffff });
        let raw = a.encode().0;
        assert_eq!(&raw[0..4], &[27, 0, 0xff, 0xff]);
        assert_eq!(&raw[24..32], &[0, 0, 0, 0, 0x01, 0x3f, 0, 0x11]);
        assert_eq!(&raw[32..40], &[0xff; 8]);
        assert_eq!(CmAddr::decode(&a.encode()), Some(a));
        assert_eq!(a.gid(), gid);
        assert_eq!(CmAddr::decode(&RawSockaddr([0; 128])), None);
    }

    #[test]
    fn groups_are_their_mgid() {
        let mgid = Gid([
            0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        let roce = CmAddr::group(mgid, AddrKind::Ip { scope: 3 });
        assert_eq!(
            roce,
            CmAddr::V6 {
                addr: mgid.0,
                port: 0,
                scope: 3
            }
        );
        let ib = CmAddr::group(mgid, AddrKind::Ib { pkey: 0xffff });
        assert_eq!(&ib.encode().0[24..32], &[0, 0, 0, 0, 1, 0x11, 0, 0]);
        assert_eq!(ib.gid(), mgid);
        match CmAddr::udp_endpoint(mgid, AddrKind::Ib { pkey: 0x8001 }) {
            CmAddr::Ib { pkey, sid, .. } => assert_eq!((pkey, sid), (0x8001, RDMA_IB_IP_PS_UDP)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn private_data_round_trips_and_short_data_is_refused() {
        let req = PrivateData {
            ud_qpn: 0x11,
            recv_mtu: 65520,
            target_qpn: Some(0x12),
        };
        let (bytes, len) = req.encode();
        assert_eq!(len, 12);
        assert_eq!(
            &bytes[..len],
            &[0, 0, 0, 0x11, 0, 0, 0xff, 0xf0, 0, 0, 0, 0x12]
        );
        let mut padded = bytes[..len].to_vec();
        padded.resize(56, 0);
        assert_eq!(PrivateData::decode(&padded, true), Some(req));
        assert_eq!(PrivateData::decode(&bytes[..8], true), None);
        let ans = PrivateData {
            target_qpn: None,
            ..req
        };
        let (bytes, len) = ans.encode();
        assert_eq!(len, 8);
        assert_eq!(PrivateData::decode(&bytes[..len], false), Some(ans));
        assert_eq!(PrivateData::decode(&bytes[..7], false), None);
        // A QPN is 24 bits: the top byte never leaks into the word.
        let (bytes, _) = PrivateData {
            ud_qpn: 0xff12_3456,
            ..ans
        }
        .encode();
        assert_eq!(&bytes[0..4], &[0, 0x12, 0x34, 0x56]);
    }
}
