//! Property tests for the IPv6 pieces of the wire module: neighbour
//! discovery messages with the IPoIB link-layer option, the IPv6 MGIDs and
//! the interface identifier.

use ipoib::wire::ipv6::{interface_id, link_local, solicited_node};
use ipoib::wire::{
    classify_mgid, fuzz_parse, ipv6_multicast_mgid, HwAddr, MgidKind, NdKind, NdRepr,
};
use proptest::prelude::*;
use smoltcp::wire::{Icmpv6Packet, Ipv6Address};
use verbs_shim::{Gid, PKey, Qpn};

fn any_hwaddr() -> impl Strategy<Value = HwAddr> {
    (any::<u8>(), 0u32..0x100_0000, any::<[u8; 16]>()).prop_map(|(flags, qpn, gid)| HwAddr {
        flags,
        qpn: Qpn::new_truncated(qpn),
        gid: Gid(gid),
    })
}

fn any_nd() -> impl Strategy<Value = NdRepr> {
    (
        prop_oneof![
            Just(NdKind::Solicit),
            (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(router, solicited, override_)| {
                    NdKind::Advert {
                        router,
                        solicited,
                        override_,
                    }
                }
            ),
        ],
        any::<[u8; 16]>().prop_filter("unicast target", |a| a[0] != 0xff),
        proptest::option::of(any_hwaddr()),
    )
        .prop_map(|(kind, target, lla)| NdRepr {
            kind,
            target: Ipv6Address::from(target),
            lla,
        })
}

proptest! {
    #[test]
    fn nd_round_trip(repr in any_nd(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
        let (src, dst) = (Ipv6Address::from(src), Ipv6Address::from(dst));
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf, &src, &dst).unwrap();
        prop_assert!(Icmpv6Packet::new_unchecked(&buf[..]).verify_checksum(&src, &dst));
        prop_assert_eq!(NdRepr::parse(&buf), Ok(repr));
        if repr.lla.is_some() {
            prop_assert_eq!(&buf[24..26], &[if repr.kind == NdKind::Solicit { 1 } else { 2 }, 3][..]);
            prop_assert_eq!(&buf[46..48], &[0, 0][..]);
        }
        fuzz_parse(&buf);
    }

    #[test]
    fn nd_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = NdRepr::parse(&data);
        fuzz_parse(&data);
    }

    #[test]
    fn nd_mutated_options_are_judged(repr in any_nd(), at in 24usize..48, byte in any::<u8>()) {
        // Any change to the option area parses to an error or to a message
        // that re-emits; it never panics or reads past the end.
        let repr = NdRepr { lla: repr.lla.or(Some(HwAddr::default())), ..repr };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf, &Ipv6Address::UNSPECIFIED, &Ipv6Address::UNSPECIFIED).unwrap();
        buf[at] = byte;
        if let Ok(parsed) = NdRepr::parse(&buf) {
            let mut out = vec![0u8; parsed.buffer_len()];
            parsed.emit(&mut out, &Ipv6Address::UNSPECIFIED, &Ipv6Address::UNSPECIFIED).unwrap();
            prop_assert_eq!(NdRepr::parse(&out), Ok(parsed));
        }
    }

    #[test]
    fn ipv6_mgid_round_trip(pkey in any::<u16>(), group in any::<[u8; 16]>()) {
        let mut group = group;
        group[0] = 0xff;
        let g = ipv6_multicast_mgid(PKey(pkey), Ipv6Address::from(group));
        let mut low80 = [0u8; 10];
        low80.copy_from_slice(&group[6..]);
        prop_assert_eq!(
            classify_mgid(&g),
            Some(MgidKind::Ipv6Multicast { pkey: PKey(pkey).as_full(), scope: group[1] & 0x0f, low80 })
        );
        fuzz_parse(&g.0);
    }

    #[test]
    fn link_local_carries_the_guid(gid in any::<[u8; 16]>()) {
        let gid = Gid(gid);
        let ll = link_local(&gid).octets();
        prop_assert_eq!(&ll[..8], &[0xfe, 0x80, 0, 0, 0, 0, 0, 0][..]);
        prop_assert_eq!(ll[8] ^ 0x02, gid.0[8]);
        prop_assert_eq!(&ll[9..], &gid.0[9..]);
        prop_assert_eq!(&interface_id(&gid)[..], &ll[8..]);
        let sn = solicited_node(link_local(&gid)).octets();
        prop_assert_eq!(&sn[13..], &gid.0[13..]);
    }
}
