//! Source fragmentation for connected mode's mixed neighbourhood
//! (`docs/connected-mode.md` §8): the device's MTU is the connected MTU, so
//! a packet smoltcp makes for a datagram-only neighbour can be larger than
//! the datagram MTU. The device is then the source host's IP layer doing
//! what smoltcp would have done at the smaller MTU (smoltcp 0.14 cannot at
//! all for IPv6 on `Medium::Ip`): it cuts the packet into fragments with a
//! fresh identification.
//!
//! - IPv4 (RFC 791): smoltcp sets DF (and identification 0) on every packet
//!   it does not fragment itself, because it never fragments at the
//!   device's MTU; DF is therefore not read here. A packet is the local
//!   stack's own, so fragmenting it is the source's business, not a
//!   router's.
//! - IPv6 (RFC 8200 §4.5): a Fragment header after the IPv6 header. Only
//!   packets without extension headers that must stay unfragmented
//!   (Hop-by-Hop, Routing, Destination Options) are cut; smoltcp sends
//!   those only for MLD, which is small.

use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv6Packet};

/// The IPv6 Fragment header's length.
const FRAG6_HEADER: usize = 8;
/// The fixed IPv6 header's length.
const IPV6_HEADER: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    V4,
    /// The original next header, which the Fragment header carries.
    V6(u8),
}

/// How one packet is cut: what kind, the header bytes copied into every
/// fragment, payload bytes per fragment (a multiple of 8), payload length
/// and fragment count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    kind: Kind,
    head: usize,
    chunk: usize,
    payload: usize,
    pub count: usize,
}

impl Plan {
    fn new(kind: Kind, head: usize, extra: usize, payload: usize, mtu: usize) -> Option<Plan> {
        let chunk = mtu.checked_sub(head + extra)? & !7;
        if chunk == 0 {
            return None;
        }
        Some(Plan {
            kind,
            head,
            chunk,
            payload,
            count: payload.div_ceil(chunk).max(1),
        })
    }
}

/// The plan for an IP `packet` (v4 or v6) and fragments of at most `mtu`
/// bytes, or `None` if the packet does not parse, is already a fragment,
/// carries IPv6 extension headers that must stay whole, or the MTU leaves
/// no room.
pub(crate) fn plan(packet: &[u8], mtu: usize) -> Option<Plan> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let ihl = usize::from(ip.header_len());
            let payload = usize::from(ip.total_len()).checked_sub(ihl)?;
            Plan::new(Kind::V4, ihl, 0, payload, mtu)
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let next = ip.next_header();
            let unfragmentable = matches!(
                next,
                IpProtocol::HopByHop
                    | IpProtocol::Ipv6Route
                    | IpProtocol::Ipv6Opts
                    | IpProtocol::Ipv6Frag
            );
            if unfragmentable {
                return None;
            }
            let payload = usize::from(ip.payload_len());
            Plan::new(
                Kind::V6(next.into()),
                IPV6_HEADER,
                FRAG6_HEADER,
                payload,
                mtu,
            )
        }
        _ => None,
    }
}

/// Writes fragment `index` of `packet` into `out` with identification
/// `ident` (its low 16 bits for IPv4); returns its length, or `None` if
/// `out` is too small.
pub(crate) fn write(
    packet: &[u8],
    plan: &Plan,
    index: usize,
    ident: u32,
    out: &mut [u8],
) -> Option<usize> {
    let start = index.checked_mul(plan.chunk)?;
    let end = start.checked_add(plan.chunk)?.min(plan.payload);
    let data = packet.get(plan.head + start..plan.head + end)?;
    let more = end < plan.payload;
    let head = packet.get(..plan.head)?;
    match plan.kind {
        Kind::V4 => {
            let len = plan.head + data.len();
            let out = out.get_mut(..len)?;
            out.get_mut(..plan.head)?.copy_from_slice(head);
            out.get_mut(plan.head..)?.copy_from_slice(data);
            let mut ip = Ipv4Packet::new_unchecked(out);
            ip.set_total_len(u16::try_from(len).ok()?);
            ip.set_ident(ident as u16);
            ip.clear_flags();
            ip.set_dont_frag(false);
            ip.set_more_frags(more);
            ip.set_frag_offset(u16::try_from(start).ok()?);
            ip.fill_checksum();
            Some(len)
        }
        Kind::V6(next) => {
            let len = IPV6_HEADER + FRAG6_HEADER + data.len();
            let out = out.get_mut(..len)?;
            out.get_mut(..IPV6_HEADER)?.copy_from_slice(head);
            // Offset in 8-byte units in the top 13 bits, M in the lowest.
            let offset = u16::try_from(start).ok()? | u16::from(more);
            let [o0, o1] = offset.to_be_bytes();
            let [i0, i1, i2, i3] = ident.to_be_bytes();
            out.get_mut(IPV6_HEADER..IPV6_HEADER + FRAG6_HEADER)?
                .copy_from_slice(&[next, 0, o0, o1, i0, i1, i2, i3]);
            out.get_mut(IPV6_HEADER + FRAG6_HEADER..)?
                .copy_from_slice(data);
            let mut ip = Ipv6Packet::new_unchecked(out);
            ip.set_payload_len(u16::try_from(FRAG6_HEADER + data.len()).ok()?);
            ip.set_next_header(IpProtocol::Ipv6Frag);
            Some(len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Repr};

    fn packet(payload: usize) -> Vec<u8> {
        let repr = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 77, 0, 1),
            dst_addr: Ipv4Address::new(10, 77, 0, 2),
            next_header: IpProtocol::Udp,
            payload_len: payload,
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 20 + payload];
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[..]),
            &ChecksumCapabilities::default(),
        );
        for (i, b) in buf[20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        buf
    }

    #[test]
    fn fragments_cover_the_payload_in_order_with_valid_headers() {
        for payload in [1, 8, 2024, 2025, 3000, 65500] {
            let p = packet(payload);
            let plan = plan(&p, 2044).unwrap();
            let mut whole = Vec::new();
            for i in 0..plan.count {
                let mut out = [0u8; 2044];
                let len = write(&p, &plan, i, 0x1234, &mut out).unwrap();
                assert!(len <= 2044);
                let ip = Ipv4Packet::new_checked(&out[..len]).unwrap();
                assert!(ip.verify_checksum());
                assert!(!ip.dont_frag());
                assert_eq!(ip.ident(), 0x1234);
                assert_eq!(usize::from(ip.frag_offset()), whole.len());
                assert_eq!(ip.more_frags(), i + 1 < plan.count);
                assert_eq!(ip.src_addr(), Ipv4Address::new(10, 77, 0, 1));
                if ip.more_frags() {
                    assert_eq!(ip.payload().len() % 8, 0);
                }
                whole.extend_from_slice(ip.payload());
            }
            assert_eq!(whole, &p[20..], "payload {payload}");
        }
    }

    #[test]
    fn ipv6_fragments_carry_a_fragment_header_and_cover_the_payload() {
        use smoltcp::wire::{Ipv6Address, Ipv6FragmentHeader, Ipv6Repr};
        for payload in [1, 1992, 1993, 5000] {
            let repr = Ipv6Repr {
                src_addr: Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1),
                dst_addr: Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
                next_header: IpProtocol::Udp,
                payload_len: payload,
                hop_limit: 64,
            };
            let mut p = vec![0u8; 40 + payload];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
            for (i, b) in p[40..].iter_mut().enumerate() {
                *b = (i * 5) as u8;
            }
            let plan = plan(&p, 2044).unwrap();
            let mut whole = Vec::new();
            for i in 0..plan.count {
                let mut out = [0u8; 2044];
                let len = write(&p, &plan, i, 0xabcd_0001, &mut out).unwrap();
                assert!(len <= 2044);
                let ip = Ipv6Packet::new_checked(&out[..len]).unwrap();
                assert_eq!(ip.next_header(), IpProtocol::Ipv6Frag);
                assert_eq!(usize::from(ip.payload_len()), len - 40);
                // smoltcp's view starts after next header and reserved.
                let frag = Ipv6FragmentHeader::new_checked(&ip.payload()[2..]).unwrap();
                assert_eq!(frag.ident(), 0xabcd_0001);
                assert_eq!(usize::from(frag.frag_offset()) * 8, whole.len());
                assert_eq!(frag.more_frags(), i + 1 < plan.count);
                assert_eq!(ip.payload()[0], u8::from(IpProtocol::Udp));
                let data = &ip.payload()[8..];
                if frag.more_frags() {
                    assert_eq!(data.len() % 8, 0);
                }
                whole.extend_from_slice(data);
            }
            assert_eq!(whole, &p[40..], "payload {payload}");
        }
    }

    #[test]
    fn fragments_and_nonsense_are_not_cut() {
        let mut p = packet(3000);
        assert!(plan(&p[..10], 2044).is_none());
        assert!(plan(&p, 20).is_none(), "no room for data");
        Ipv4Packet::new_unchecked(&mut p[..]).set_more_frags(true);
        assert!(plan(&p, 2044).is_none(), "already a fragment");
        let mut out = [0u8; 100];
        let q = packet(3000);
        let plan = plan(&q, 2044).unwrap();
        assert!(write(&q, &plan, 0, 1, &mut out).is_none(), "out too small");
    }
}
