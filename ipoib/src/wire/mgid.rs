//! IPoIB multicast GIDs (RFC 4391 section 4; Linux `ip_ib_mc_map`).
//!
//! ```text
//! | 8 bits | 4  | 4    | 16 bits         | 16 bits | 48 bits | 32 bits     |
//! |  0xff  |0001| scope | IPoIB signature | P_Key   | 0...0   | group       |
//! ```
//!
//! - flags 0001 (transient), scope 2 (link-local);
//! - signature 0x401B for IPv4;
//! - P_Key with the full-membership bit (0x8000) set;
//! - group: `0xFFFFFFFF` for the broadcast GID, or the low 28 bits of an
//!   IPv4 multicast address.
//!
//! So the default broadcast MGID is `ff12:401b:ffff:0000:0000:0000:ffff:ffff`.
//!
//! IPv6 groups (RFC 4391 section 4; Linux `ipv6_ib_mc_map`):
//!
//! ```text
//! | 8 bits | 4  | 4    | 16 bits | 16 bits | 80 bits                     |
//! |  0xff  |0001| scope | 0x601B  | P_Key   | low 80 bits of the group    |
//! ```
//!
//! The scope is the IPv6 group's own (2 for `ff02::1` and the
//! solicited-node groups, as in Linux, which copies the broadcast MGID's).

use smoltcp::wire::{Ipv4Address, Ipv6Address};
use verbs_shim::{Gid, PKey};

use super::HwAddr;

/// First two bytes of every MGID built here: multicast, transient, link-local.
pub const IPOIB_MGID_PREFIX: [u8; 2] = [0xff, 0x12];
/// The IPoIB IPv4 signature in bytes 2..4 of the MGID.
pub const IPOIB_MGID_SIGNATURE: u16 = 0x401b;
/// The IPoIB IPv6 signature in bytes 2..4 of an IPv6 group's MGID.
pub const IPOIB_IPV6_MGID_SIGNATURE: u16 = 0x601b;

const GROUP_MASK: u32 = 0x0fff_ffff;
const BROADCAST_GROUP: u32 = 0xffff_ffff;

/// What an MGID means to IPoIB.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MgidKind {
    /// The partition's broadcast group (all IPoIB ports, carries ARP).
    Broadcast { pkey: PKey },
    /// An IPv4 multicast group; `low28` is the group address minus the
    /// leading `1110`.
    Ipv4Multicast { pkey: PKey, low28: u32 },
    /// An IPv6 multicast group: its scope nibble and the low 80 bits of
    /// the group address.
    Ipv6Multicast {
        pkey: PKey,
        scope: u8,
        low80: [u8; 10],
    },
    /// A multicast GID that is not one of the three above (other scope,
    /// signature, limited-member P_Key, non-zero padding...).
    Other,
}

fn ipoib_mgid(pkey: PKey, group: u32) -> Gid {
    let [s0, s1] = IPOIB_MGID_SIGNATURE.to_be_bytes();
    let [p0, p1] = pkey.as_full().0.to_be_bytes();
    let [g0, g1, g2, g3] = group.to_be_bytes();
    let [m0, m1] = IPOIB_MGID_PREFIX;
    Gid([m0, m1, s0, s1, p0, p1, 0, 0, 0, 0, 0, 0, g0, g1, g2, g3])
}

/// The broadcast MGID of a partition: `ff12:401b:<pkey|0x8000>::ffff:ffff`.
pub fn broadcast_mgid(pkey: PKey) -> Gid {
    ipoib_mgid(pkey, BROADCAST_GROUP)
}

/// The hardware address of the partition's broadcast group.
pub fn broadcast_hwaddr(pkey: PKey) -> HwAddr {
    HwAddr::multicast(broadcast_mgid(pkey))
}

/// The MGID of an IPv4 multicast group: `ff12:401b:<pkey|0x8000>::` with
/// the low 28 bits of `group` in the last 4 bytes (as Linux `ip_ib_mc_map`).
/// The caller should pass a multicast address (224.0.0.0/4); the top four
/// bits are dropped either way.
pub fn ipv4_multicast_mgid(pkey: PKey, group: Ipv4Address) -> Gid {
    ipoib_mgid(pkey, u32::from(group) & GROUP_MASK)
}

/// The hardware address of an IPv4 multicast group.
pub fn ipv4_multicast_hwaddr(pkey: PKey, group: Ipv4Address) -> HwAddr {
    HwAddr::multicast(ipv4_multicast_mgid(pkey, group))
}

/// The MGID of an IPv6 multicast group:
/// `ff1<scope>:601b:<pkey|0x8000>:<low 80 bits of group>`. The caller should
/// pass a multicast address (`ff00::/8`).
pub fn ipv6_multicast_mgid(pkey: PKey, group: Ipv6Address) -> Gid {
    let g = group.octets();
    let [s0, s1] = IPOIB_IPV6_MGID_SIGNATURE.to_be_bytes();
    let [p0, p1] = pkey.as_full().0.to_be_bytes();
    let mut mgid = [
        0xff,
        0x10 | (g[1] & 0x0f),
        s0,
        s1,
        p0,
        p1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    mgid[6..].copy_from_slice(&g[6..]);
    Gid(mgid)
}

/// The hardware address of an IPv6 multicast group.
pub fn ipv6_multicast_hwaddr(pkey: PKey, group: Ipv6Address) -> HwAddr {
    HwAddr::multicast(ipv6_multicast_mgid(pkey, group))
}

/// Classifies a GID: `None` for a unicast GID, otherwise what kind of
/// multicast group it names. Only MGIDs that [`broadcast_mgid`],
/// [`ipv4_multicast_mgid`] or [`ipv6_multicast_mgid`] could have produced
/// are recognised, so a recognised MGID always rebuilds to itself.
pub fn classify_mgid(gid: &Gid) -> Option<MgidKind> {
    if !gid.is_multicast() {
        return None;
    }
    if let Some(kind) = classify_ipv6(gid) {
        return Some(kind);
    }
    let [m0, m1, s0, s1, p0, p1, z0, z1, z2, z3, z4, z5, g0, g1, g2, g3] = gid.0;
    let pkey = PKey(u16::from_be_bytes([p0, p1]));
    let group = u32::from_be_bytes([g0, g1, g2, g3]);
    let ipoib = [m0, m1] == IPOIB_MGID_PREFIX
        && u16::from_be_bytes([s0, s1]) == IPOIB_MGID_SIGNATURE
        && pkey.is_full_member()
        && [z0, z1, z2, z3, z4, z5] == [0; 6];
    Some(if !ipoib {
        MgidKind::Other
    } else if group == BROADCAST_GROUP {
        MgidKind::Broadcast { pkey }
    } else if group & !GROUP_MASK == 0 {
        MgidKind::Ipv4Multicast { pkey, low28: group }
    } else {
        MgidKind::Other
    })
}

fn classify_ipv6(gid: &Gid) -> Option<MgidKind> {
    let [_, flags_scope, s0, s1, p0, p1, ..] = gid.0;
    let pkey = PKey(u16::from_be_bytes([p0, p1]));
    let ipv6 = flags_scope & 0xf0 == 0x10
        && u16::from_be_bytes([s0, s1]) == IPOIB_IPV6_MGID_SIGNATURE
        && pkey.is_full_member();
    if !ipv6 {
        return None;
    }
    let mut low80 = [0u8; 10];
    low80.copy_from_slice(&gid.0[6..]);
    Some(MgidKind::Ipv6Multicast {
        pkey,
        scope: flags_scope & 0x0f,
        low80,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_default_partition() {
        let g = broadcast_mgid(PKey(0xffff));
        assert_eq!(
            g.0,
            [0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // A limited-member key maps to the same group.
        assert_eq!(broadcast_mgid(PKey(0x7fff)), g);
        assert_eq!(
            classify_mgid(&g),
            Some(MgidKind::Broadcast { pkey: PKey(0xffff) })
        );
    }

    #[test]
    fn ipv4_all_hosts() {
        let g = ipv4_multicast_mgid(PKey(0xffff), Ipv4Address::new(224, 0, 0, 1));
        assert_eq!(
            g.0,
            [0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            classify_mgid(&g),
            Some(MgidKind::Ipv4Multicast {
                pkey: PKey(0xffff),
                low28: 1
            })
        );
    }

    #[test]
    fn others() {
        assert_eq!(classify_mgid(&Gid::from_parts(0xfe80 << 48, 2)), None);
        let mut g = broadcast_mgid(PKey(0x8001));
        g.0[1] = 0x15; // site-local scope
        assert_eq!(classify_mgid(&g), Some(MgidKind::Other));
        let mut g = broadcast_mgid(PKey(0x8001));
        g.0[4] = 0x00; // limited-member P_Key in the MGID
        assert_eq!(classify_mgid(&g), Some(MgidKind::Other));
        let mut g = broadcast_mgid(PKey(0x8001));
        g.0[12] = 0x1f; // neither broadcast nor 28-bit group
        assert_eq!(classify_mgid(&g), Some(MgidKind::Other));
        let mut g = broadcast_mgid(PKey(0x8001));
        g.0[2] = 0x61; // neither signature
        assert_eq!(classify_mgid(&g), Some(MgidKind::Other));
    }

    #[test]
    fn ipv6_all_nodes_and_solicited_node() {
        let all = ipv6_multicast_mgid(PKey(0xffff), Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(
            all.0,
            [0xff, 0x12, 0x60, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        let sn = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x0002);
        let g = ipv6_multicast_mgid(PKey(0x0001), sn);
        // A limited-member key maps to the full member's group.
        assert_eq!(
            g.0,
            [0xff, 0x12, 0x60, 0x1b, 0x80, 0x01, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2]
        );
        assert_eq!(
            classify_mgid(&g),
            Some(MgidKind::Ipv6Multicast {
                pkey: PKey(0x8001),
                scope: 2,
                low80: [0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2]
            })
        );
        // The scope is the group's: a site-local group gets 5.
        let site = ipv6_multicast_mgid(PKey(0xffff), Ipv6Address::new(0xff05, 0, 0, 0, 0, 0, 0, 2));
        assert_eq!(site.0[1], 0x15);
        assert_eq!(
            ipv6_multicast_hwaddr(PKey::DEFAULT, sn).qpn.get(),
            0xff_ffff
        );
    }

    #[test]
    fn hwaddrs() {
        let h = broadcast_hwaddr(PKey::DEFAULT);
        assert_eq!(h.flags, 0);
        assert_eq!(h.qpn.get(), 0xff_ffff);
        assert_eq!(h.gid, broadcast_mgid(PKey::DEFAULT));
        let m = ipv4_multicast_hwaddr(PKey::DEFAULT, Ipv4Address::new(239, 1, 2, 3));
        assert_eq!(&m.gid.0[12..], &[0x0f, 1, 2, 3]);
    }
}
