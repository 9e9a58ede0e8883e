//! IPv4 fragmentation (RFC 791) for connected mode's mixed neighbourhood
//! (`docs/connected-mode.md` §8): the device's MTU is the connected MTU, so
//! a packet smoltcp makes for a datagram-only neighbour can be larger than
//! the datagram MTU. The device is then the source host's IP layer doing
//! what smoltcp would have done at the smaller MTU: it cuts the packet into
//! fragments with a fresh identification.
//!
//! smoltcp sets DF (and identification 0) on every packet it does not
//! fragment itself, because it never fragments at the device's MTU; DF is
//! therefore not read here. A packet is the local stack's own, so
//! fragmenting it is the source's business, not a router's.

use smoltcp::wire::Ipv4Packet;

/// How one packet is cut: header length, payload bytes per fragment (a
/// multiple of 8), payload length and fragment count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    ihl: usize,
    chunk: usize,
    payload: usize,
    pub count: usize,
}

/// The plan for an IPv4 `packet` and fragments of at most `mtu` bytes, or
/// `None` if the packet does not parse, is already a fragment, or the MTU
/// leaves no room.
pub(crate) fn plan(packet: &[u8], mtu: usize) -> Option<Plan> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let ihl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let payload = total.checked_sub(ihl)?;
    let chunk = mtu.checked_sub(ihl)? & !7;
    if chunk == 0 {
        return None;
    }
    Some(Plan {
        ihl,
        chunk,
        payload,
        count: payload.div_ceil(chunk).max(1),
    })
}

/// Writes fragment `index` of `packet` into `out` with identification
/// `ident`; returns its length, or `None` if `out` is too small.
pub(crate) fn write(
    packet: &[u8],
    plan: &Plan,
    index: usize,
    ident: u16,
    out: &mut [u8],
) -> Option<usize> {
    let start = index.checked_mul(plan.chunk)?;
    let end = start.checked_add(plan.chunk)?.min(plan.payload);
    let len = plan.ihl + end.checked_sub(start)?;
    let out = out.get_mut(..len)?;
    out.get_mut(..plan.ihl)?
        .copy_from_slice(packet.get(..plan.ihl)?);
    out.get_mut(plan.ihl..)?
        .copy_from_slice(packet.get(plan.ihl + start..plan.ihl + end)?);
    let mut ip = Ipv4Packet::new_unchecked(out);
    ip.set_total_len(u16::try_from(len).ok()?);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_dont_frag(false);
    ip.set_more_frags(end < plan.payload);
    ip.set_frag_offset(u16::try_from(start).ok()?);
    ip.fill_checksum();
    Some(len)
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
