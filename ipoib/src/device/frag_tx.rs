//! Fragmenting on transmit, for both families, and clamping TCP's MSS.
//!
//! smoltcp 0.14 fragments IPv4 but drops IPv6 packets larger than the MTU
//! (it has no IPv6 fragmentation on `Medium::Ip`). With the `alloc`
//! feature the device therefore tells smoltcp it takes IP packets up to
//! [`MAX_DATAGRAM`] bytes and fragments whatever exceeds the IPoIB MTU
//! itself: IPv4 as RFC 791 does (offsets in 8-byte units, MF, a fresh
//! identification), IPv6 with a Fragment header after the fixed header
//! (RFC 8200 section 4.5). So that TCP does not send segments that large,
//! the MSS option of every outgoing SYN is lowered to what one IPoIB packet
//! carries (as a router clamps it), and the peer sends no more either.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// The largest IP packet smoltcp may hand the device: what netcore's IPv4
/// reassembly buffers and `frag6` take.
pub const MAX_DATAGRAM: usize = 16 * 1024;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const FRAG_HEADER: usize = 8;
const TCP_HEADER: usize = 20;
const MSS_OPTION: u8 = 2;

/// `packet` cut into IP packets of at most `mtu` bytes with fragment
/// identification `ident`; `None` if it is not an IPv4 or IPv6 packet this
/// can fragment (IPv4 with options, a header that does not parse).
pub(super) fn fragments(packet: &[u8], mtu: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    match packet.first()? >> 4 {
        4 => fragments_v4(packet, mtu, ident as u16),
        6 => fragments_v6(packet, mtu, ident),
        _ => None,
    }
}

fn fragments_v4(packet: &[u8], mtu: usize, ident: u16) -> Option<Vec<Vec<u8>>> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if usize::from(ip.header_len()) != IPV4_HEADER || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let payload = ip.payload();
    let chunk = (mtu.checked_sub(IPV4_HEADER)? / 8) * 8;
    if chunk == 0 {
        return None;
    }
    let header = packet.get(..IPV4_HEADER)?;
    let n = payload.len().div_ceil(chunk);
    let mut out = Vec::with_capacity(n);
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let mut frag = vec![0u8; IPV4_HEADER + piece.len()];
        frag[..IPV4_HEADER].copy_from_slice(header);
        frag[IPV4_HEADER..].copy_from_slice(piece);
        let mut f = Ipv4Packet::new_unchecked(&mut frag[..]);
        f.set_total_len((IPV4_HEADER + piece.len()) as u16);
        f.set_ident(ident);
        f.set_dont_frag(false);
        f.set_more_frags(i + 1 < n);
        f.set_frag_offset((i * chunk) as u16);
        f.fill_checksum();
        out.push(frag);
    }
    Some(out)
}

fn fragments_v6(packet: &[u8], mtu: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    let next_header = u8::from(ip.next_header());
    let payload = ip.payload();
    let chunk = (mtu.checked_sub(IPV6_HEADER + FRAG_HEADER)? / 8) * 8;
    if chunk == 0 {
        return None;
    }
    let header = packet.get(..IPV6_HEADER)?;
    let n = payload.len().div_ceil(chunk);
    let mut out = Vec::with_capacity(n);
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let mut frag = vec![0u8; IPV6_HEADER + FRAG_HEADER + piece.len()];
        frag[..IPV6_HEADER].copy_from_slice(header);
        let offset_flags = (((i * chunk) / 8) as u16) << 3 | u16::from(i + 1 < n);
        let fh = &mut frag[IPV6_HEADER..IPV6_HEADER + FRAG_HEADER];
        fh[0] = next_header;
        fh[2..4].copy_from_slice(&offset_flags.to_be_bytes());
        fh[4..8].copy_from_slice(&ident.to_be_bytes());
        frag[IPV6_HEADER + FRAG_HEADER..].copy_from_slice(piece);
        let mut f = Ipv6Packet::new_unchecked(&mut frag[..]);
        f.set_payload_len((FRAG_HEADER + piece.len()) as u16);
        f.set_next_header(IpProtocol::Ipv6Frag);
        out.push(frag);
    }
    Some(out)
}

/// False when `packet` is certainly not a TCP SYN: its protocol byte is
/// not TCP, or the SYN flag where the TCP header would start is clear. Two
/// or three loads instead of validating the IP header (about 30
/// instructions per datagram, callgrind, in-process UDP); whatever it lets
/// through is checked in full.
#[inline]
pub(super) fn maybe_tcp_syn(packet: &[u8]) -> bool {
    const TCP: u8 = 6;
    const SYN: u8 = 0x02;
    /// The flags byte's offset in the TCP header.
    const FLAGS: usize = 13;
    let header = match packet.first() {
        Some(b) if b >> 4 == 4 && packet.get(9) == Some(&TCP) => usize::from(b & 0x0f) * 4,
        Some(b) if b >> 4 == 6 && packet.get(6) == Some(&TCP) => IPV6_HEADER,
        _ => return false,
    };
    packet
        .get(header + FLAGS)
        .is_some_and(|flags| flags & SYN != 0)
}

/// Lowers the MSS option of a TCP SYN in `packet` (an unfragmented IPv4
/// packet, or IPv6 with TCP right after the fixed header) to what an
/// `mtu`-byte packet carries, and fixes the checksum. Leaves everything
/// else alone. Returns true if it changed the packet.
pub(super) fn clamp_mss(packet: &mut [u8], mtu: usize) -> bool {
    if !maybe_tcp_syn(packet) {
        return false;
    }
    let (header, src, dst) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return false;
            }
            let header = usize::from(ip.header_len());
            (
                header,
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            )
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(&*packet) else {
                return false;
            };
            if ip.next_header() != IpProtocol::Tcp {
                return false;
            }
            (
                IPV6_HEADER,
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            )
        }
        _ => return false,
    };
    let Some(most) = mtu.checked_sub(header + TCP_HEADER) else {
        return false;
    };
    let most = u16::try_from(most).unwrap_or(u16::MAX);
    let Some(segment) = packet.get_mut(header..) else {
        return false;
    };
    let Ok(mut tcp) = TcpPacket::new_checked(&mut *segment) else {
        return false;
    };
    if !tcp.syn() {
        return false;
    }
    let options = tcp.options_mut();
    let mut at = 0;
    let mut changed = false;
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => break,
            1 => at += 1,
            _ => {
                let Some(&len) = options.get(at + 1) else {
                    break;
                };
                let len = usize::from(len);
                if len < 2 {
                    break;
                }
                if kind == MSS_OPTION && len == 4 {
                    if let Some(v) = options.get_mut(at + 2..at + 4) {
                        let mss = u16::from_be_bytes([v[0], v[1]]);
                        if mss > most {
                            v.copy_from_slice(&most.to_be_bytes());
                            changed = true;
                        }
                    }
                }
                at += len;
            }
        }
    }
    if changed {
        tcp.fill_checksum(&src, &dst);
    }
    changed
}

#[cfg(test)]
mod tests;
