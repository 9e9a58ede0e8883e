use super::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Ipv4Address, Ipv4Repr, Ipv6Address, Ipv6Repr, TcpControl, TcpRepr, TcpSeqNumber,
};

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 11 + 5) as u8).collect()
}

fn v4_packet(payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: Ipv4Address::new(10, 77, 0, 1),
        dst_addr: Ipv4Address::new(10, 77, 0, 2),
        next_header: IpProtocol::Udp,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; IPV4_HEADER + payload.len()];
    ip.emit(
        &mut Ipv4Packet::new_unchecked(&mut out[..]),
        &ChecksumCapabilities::default(),
    );
    out[IPV4_HEADER..].copy_from_slice(payload);
    out
}

fn v6_packet(next_header: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1),
        dst_addr: Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
        next_header,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; IPV6_HEADER + payload.len()];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
    out[IPV6_HEADER..].copy_from_slice(payload);
    out
}

#[test]
fn ipv4_fragments_cover_the_payload() {
    let payload = data(5000);
    let frags = fragments(&v4_packet(&payload), 2044, 7).expect("fragments");
    assert_eq!(frags.len(), 3);
    let mut joined = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        assert!(f.len() <= 2044);
        let ip = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ident(), 7);
        assert!(!ip.dont_frag());
        assert_eq!(ip.more_frags(), i < 2);
        assert_eq!(usize::from(ip.frag_offset()), joined.len());
        joined.extend_from_slice(ip.payload());
    }
    assert_eq!(joined, payload);
}

#[test]
fn ipv6_fragments_reassemble() {
    let payload = data(8008);
    let packet = v6_packet(IpProtocol::Udp, &payload);
    let frags = fragments(&packet, 2044, 0x1234_5678).expect("fragments");
    // 1992 bytes a fragment (2044 less both headers, down to 8s).
    assert_eq!(frags.len(), 5);
    let mut r = crate::reassembly::Reassembler::new();
    let mut whole = None;
    for f in frags.iter().rev() {
        assert!(f.len() <= 2044);
        assert!(crate::reassembly::is_fragment(f));
        assert_eq!(
            &f[IPV6_HEADER + 4..IPV6_HEADER + 8],
            &[0x12, 0x34, 0x56, 0x78]
        );
        whole = r.push(f, smoltcp::time::Instant::ZERO).or(whole);
    }
    assert_eq!(whole.as_deref(), Some(&packet[..]));
}

#[test]
fn what_cannot_be_cut() {
    assert!(fragments(&[0x55; 100], 2044, 1).is_none());
    let mut with_options = v4_packet(&data(3000));
    with_options[0] = 0x46;
    assert!(fragments(&with_options, 2044, 1).is_none());
    assert!(fragments(&v6_packet(IpProtocol::Udp, &data(100)), 40, 1).is_none());
}

fn syn(mss: u16, ipv6: bool) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 49152,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1),
        ack_number: None,
        window_len: 1000,
        window_scale: Some(8),
        max_seg_size: Some(mss),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut segment = vec![0u8; tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let (src, dst, mut packet) = if ipv6 {
        let p = v6_packet(IpProtocol::Tcp, &segment);
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        (
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(ip.dst_addr()),
            p,
        )
    } else {
        let mut p = v4_packet(&segment);
        p[9] = 6;
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
            p,
        )
    };
    let header = if ipv6 { IPV6_HEADER } else { IPV4_HEADER };
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &src,
        &dst,
        &caps,
    );
    packet[header..].copy_from_slice(&segment);
    packet
}

fn mss_of(packet: &[u8], header: usize) -> (u16, bool) {
    let tcp = TcpPacket::new_checked(&packet[header..]).unwrap();
    let (src, dst) = match packet[0] >> 4 {
        6 => {
            let ip = Ipv6Packet::new_checked(packet).unwrap();
            (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            )
        }
        _ => {
            let ip = Ipv4Packet::new_checked(packet).unwrap();
            (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            )
        }
    };
    let repr = TcpRepr::parse(&tcp, &src, &dst, &ChecksumCapabilities::default()).unwrap();
    (repr.max_seg_size.unwrap(), tcp.verify_checksum(&src, &dst))
}

#[test]
fn syn_mss_is_clamped_to_the_mtu() {
    let mut v4 = syn(16344, false);
    assert!(clamp_mss(&mut v4, 2044));
    assert_eq!(mss_of(&v4, IPV4_HEADER), (2004, true));
    let mut v6 = syn(16324, true);
    assert!(clamp_mss(&mut v6, 2044));
    assert_eq!(mss_of(&v6, IPV6_HEADER), (1984, true));
    // Already small enough: untouched.
    let mut small = syn(1400, true);
    let before = small.clone();
    assert!(!clamp_mss(&mut small, 2044));
    assert_eq!(small, before);
    // Not TCP, or junk.
    let mut udp = v4_packet(&data(100));
    assert!(!clamp_mss(&mut udp, 2044));
    assert!(!clamp_mss(&mut [0x60, 0, 0], 2044));
}

#[test]
fn only_what_may_be_a_tcp_syn_is_parsed() {
    for v6 in [false, true] {
        let header = if v6 { IPV6_HEADER } else { IPV4_HEADER };
        let syn = syn(16344, v6);
        assert!(maybe_tcp_syn(&syn));
        // The same segment as a plain ACK: passed over without parsing,
        // and the full check agrees.
        let mut ack = syn.clone();
        ack[header + 13] = 0x10;
        assert!(!maybe_tcp_syn(&ack));
        let before = ack.clone();
        assert!(!clamp_mss(&mut ack, 2044));
        assert_eq!(ack, before);
        // Cut off before the flags: nothing to read, nothing to clamp.
        assert!(!maybe_tcp_syn(&syn[..header + 13]));
    }
    assert!(!maybe_tcp_syn(&v4_packet(&data(100))));
    assert!(!maybe_tcp_syn(&[]));
    assert!(!maybe_tcp_syn(&[0x45]));
}
