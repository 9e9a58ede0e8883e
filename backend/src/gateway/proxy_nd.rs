//! IPv6 on the gateway's TAP: proxy neighbour discovery for the fabric's
//! prefix (Linux asks for a guest's address and the gateway answers with its
//! own MAC, as proxy ARP does for IPv4), and the choice of what Linux sends
//! that goes on to the fabric. On the fabric side the gateway's `ipoib`
//! device does neighbour discovery itself.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr,
    IpProtocol, Ipv6Address, Ipv6Cidr, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress, IPV6_LINK_LOCAL_ALL_NODES,
};

/// What to do with an IPv6 packet Linux put on the TAP.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FromLinux {
    /// A unicast packet for the fabric: send it there.
    Forward,
    /// A neighbour solicitation for an address behind the gateway: write
    /// this Ethernet frame (the advertisement) back to Linux.
    Answer(Vec<u8>),
    /// Neighbour discovery, MLD and other link traffic of Linux's own, or a
    /// packet the fabric has no use for: nothing to do.
    Ignore,
    /// Not a valid IPv6 packet.
    Malformed,
}

/// The gateway's IPv6 side: Linux's address on the TAP (which the
/// gateway's device also holds on the fabric) and the prefix behind it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProxyNd {
    pub cidr: Ipv6Cidr,
    pub mac: EthernetAddress,
}

impl ProxyNd {
    /// True if the gateway answers for `target`: a unicast address in the
    /// prefix that is not Linux's own.
    pub fn answers_for(&self, target: Ipv6Address) -> bool {
        target != self.cidr.address()
            && self.cidr.contains_addr(&target)
            && !target.is_multicast()
            && !target.is_unspecified()
    }

    /// Sorts an IPv6 packet from Linux (the Ethernet payload), which came
    /// from `from`.
    pub fn sort_from_linux(&self, from: EthernetAddress, ip: &[u8]) -> FromLinux {
        let Ok(packet) = Ipv6Packet::new_checked(ip) else {
            return FromLinux::Malformed;
        };
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        if packet.next_header() == IpProtocol::Icmpv6 {
            if let Some(target) = solicited_target(&packet) {
                return match self.answers_for(target) {
                    true => FromLinux::Answer(self.advert(from, src, target)),
                    false => FromLinux::Ignore,
                };
            }
        }
        if dst.is_multicast() || !self.cidr.contains_addr(&dst) || dst == self.cidr.address() {
            // Linux's own link traffic (router and neighbour discovery, MLD
            // reports), or nothing the fabric's prefix holds.
            return FromLinux::Ignore;
        }
        FromLinux::Forward
    }

    /// The Ethernet frame advertising `target` at the gateway's MAC to
    /// `asker` (Linux at `asker_mac`), or to all nodes for a DAD probe.
    fn advert(
        &self,
        asker_mac: EthernetAddress,
        asker: Ipv6Address,
        target: Ipv6Address,
    ) -> Vec<u8> {
        let (dst, flags) = if asker.is_unspecified() {
            (IPV6_LINK_LOCAL_ALL_NODES, NdiscNeighborFlags::empty())
        } else {
            (asker, NdiscNeighborFlags::SOLICITED)
        };
        // RFC 4861 7.2.8: a proxy leaves the override flag clear.
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from(self.mac)),
        });
        let ip = Ipv6Repr {
            src_addr: target,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 255,
        };
        let mut out = vec![0u8; 14 + ip.buffer_len() + icmp.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: asker_mac,
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut eth);
        let mut packet = Ipv6Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut packet);
        icmp.emit(
            &target,
            &dst,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
        out
    }
}

/// The target of a valid neighbour solicitation (hop limit 255, good
/// checksum), if `packet` is one.
fn solicited_target(packet: &Ipv6Packet<&[u8]>) -> Option<Ipv6Address> {
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    let icmp = Icmpv6Packet::new_checked(packet.payload()).ok()?;
    let repr = Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default()).ok()?;
    match repr {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. })
            if packet.hop_limit() == 255 =>
        {
            Some(target_addr)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x11]);
    const GW_MAC: EthernetAddress = EthernetAddress([0x02, 0x1b, 0x0b, 0x1b, 0x00, 0x01]);

    fn proxy() -> ProxyNd {
        ProxyNd {
            cidr: Ipv6Cidr::new(Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1), 64),
            mac: GW_MAC,
        }
    }

    fn addr(last: u16) -> Ipv6Address {
        Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, last)
    }

    /// An IPv6 packet with `icmp` from `src` to `dst`.
    fn icmp_packet(src: Ipv6Address, dst: Ipv6Address, icmp: &Icmpv6Repr, hop: u8) -> Vec<u8> {
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: hop,
        };
        let mut out = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
        let mut packet = Ipv6Packet::new_unchecked(&mut out[..]);
        ip.emit(&mut packet);
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
        out
    }

    fn solicit(target: Ipv6Address) -> Icmpv6Repr<'static> {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from(LINUX_MAC)),
        })
    }

    #[test]
    fn answers_linux_for_a_guest() {
        let p = proxy();
        let ns = icmp_packet(addr(1), addr(2).solicited_node_x(), &solicit(addr(2)), 255);
        let FromLinux::Answer(frame) = p.sort_from_linux(LINUX_MAC, &ns) else {
            panic!("no answer");
        };
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), LINUX_MAC);
        assert_eq!(eth.src_addr(), GW_MAC);
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv6);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), addr(2));
        assert_eq!(ip.dst_addr(), addr(1));
        assert_eq!(ip.hop_limit(), 255);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr =
            Icmpv6Repr::parse(&addr(2), &addr(1), &icmp, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::SOLICITED,
                target_addr: addr(2),
                lladdr: Some(RawHardwareAddress::from(GW_MAC)),
            })
        );
        // A unicast probe (neighbour unreachability detection) too.
        let probe = icmp_packet(addr(1), addr(2), &solicit(addr(2)), 255);
        assert!(matches!(
            p.sort_from_linux(LINUX_MAC, &probe),
            FromLinux::Answer(_)
        ));
    }

    #[test]
    fn leaves_alone_what_is_not_behind_it() {
        let p = proxy();
        let sn = addr(1).solicited_node_x();
        // Linux's own address (its DAD probe), another prefix, a routed NS.
        for ns in [
            icmp_packet(Ipv6Address::UNSPECIFIED, sn, &solicit(addr(1)), 255),
            icmp_packet(
                addr(1),
                sn,
                &solicit(Ipv6Address::new(0xfd78, 0, 0, 0, 0, 0, 0, 2)),
                255,
            ),
        ] {
            assert_eq!(p.sort_from_linux(LINUX_MAC, &ns), FromLinux::Ignore);
        }
        // A solicitation with a hop limit other than 255 is not believed
        // (RFC 4861 7.1.1): not answered, and not for the fabric either.
        let routed = icmp_packet(addr(1), addr(2).solicited_node_x(), &solicit(addr(2)), 64);
        assert_eq!(p.sort_from_linux(LINUX_MAC, &routed), FromLinux::Ignore);
        // An MLD report or router solicitation to a group: not for the fabric.
        let rs = Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr: None });
        let rs = icmp_packet(
            addr(1),
            Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
            &rs,
            255,
        );
        assert_eq!(p.sort_from_linux(LINUX_MAC, &rs), FromLinux::Ignore);
        assert_eq!(
            p.sort_from_linux(LINUX_MAC, &[0x60; 10]),
            FromLinux::Malformed
        );
    }

    #[test]
    fn forwards_unicast_to_the_prefix() {
        let p = proxy();
        let echo = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"hi",
        };
        let ping = icmp_packet(addr(1), addr(2), &echo, 64);
        assert_eq!(p.sort_from_linux(LINUX_MAC, &ping), FromLinux::Forward);
        let elsewhere = icmp_packet(
            addr(1),
            Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            &echo,
            64,
        );
        assert_eq!(p.sort_from_linux(LINUX_MAC, &elsewhere), FromLinux::Ignore);
    }

    /// The solicited-node group, for the tests.
    trait SolicitedNode {
        fn solicited_node_x(&self) -> Ipv6Address;
    }

    impl SolicitedNode for Ipv6Address {
        fn solicited_node_x(&self) -> Ipv6Address {
            ipoib::wire::ipv6::solicited_node(*self)
        }
    }
}
