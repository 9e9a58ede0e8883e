//! Wire vectors written out by hand from RFC 4391, Linux (`ip_ib_mc_map`,
//! `arp_create`, `ip link` output) and Wireshark's LINKTYPE_IPOIB layout,
//! checked in both directions, plus malformed input.
//!
//! The two ports: A = GID fe80::2, QPN 0x48, 10.0.0.1, flags 0x80 (Linux
//! with connected mode compiled in); B = GID fe80::3, QPN 0x49, 10.0.0.2,
//! flags 0x00.

use ipoib::pcap::{PcapSink, PcapWriter};
use ipoib::wire::mgid::{broadcast_hwaddr, MgidKind};
use ipoib::wire::{
    broadcast_mgid, build_grh, classify_mgid, encap, fuzz_parse, ipv4_multicast_mgid, ArpOperation,
    ArpPacket, ArpRepr, EncapPacket, EncapRepr, EtherType, GrhRepr, HwAddr, WireError,
};
use proptest::prelude::*;
use smoltcp::time::Instant;
use smoltcp::wire::Ipv4Address;
use verbs_shim::{Gid, PKey, Qpn};

#[rustfmt::skip]
const ARP_REQUEST: [u8; 56] = [
    0x00, 0x20,             // hardware type 32 (InfiniBand)
    0x08, 0x00,             // protocol type IPv4
    0x14,                   // hardware length 20
    0x04,                   // protocol length 4
    0x00, 0x01,             // request
    // sender hardware address: flags, QPN 0x000048, GID fe80::2
    0x80, 0x00, 0x00, 0x48,
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x0a, 0x00, 0x00, 0x01, // sender IP 10.0.0.1
    // target hardware address: unknown, all zero (Linux arp_create)
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0a, 0x00, 0x00, 0x02, // target IP 10.0.0.2
];

#[rustfmt::skip]
const ARP_REPLY: [u8; 56] = [
    0x00, 0x20, 0x08, 0x00, 0x14, 0x04,
    0x00, 0x02,             // reply
    // sender: B
    0x00, 0x00, 0x00, 0x49,
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
    0x0a, 0x00, 0x00, 0x02,
    // target: A
    0x80, 0x00, 0x00, 0x48,
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x0a, 0x00, 0x00, 0x01,
];

/// `brd` of an ib0 in the default partition, as `ip link` prints it.
#[rustfmt::skip]
const BROADCAST_HWADDR: [u8; 20] = [
    0x00, 0xff, 0xff, 0xff,
    0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
];

fn gid_a() -> Gid {
    Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
}

fn gid_b() -> Gid {
    Gid([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3])
}

fn hw_a() -> HwAddr {
    HwAddr {
        flags: 0x80,
        qpn: Qpn::new(0x48).unwrap(),
        gid: gid_a(),
    }
}

fn hw_b() -> HwAddr {
    HwAddr {
        flags: 0,
        qpn: Qpn::new(0x49).unwrap(),
        gid: gid_b(),
    }
}

fn request() -> ArpRepr {
    ArpRepr {
        operation: ArpOperation::Request,
        source_hw: hw_a(),
        source_ip: Ipv4Address::new(10, 0, 0, 1),
        target_hw: HwAddr::default(),
        target_ip: Ipv4Address::new(10, 0, 0, 2),
    }
}

fn reply() -> ArpRepr {
    ArpRepr {
        operation: ArpOperation::Reply,
        source_hw: hw_b(),
        source_ip: Ipv4Address::new(10, 0, 0, 2),
        target_hw: hw_a(),
        target_ip: Ipv4Address::new(10, 0, 0, 1),
    }
}

fn emit_arp(repr: &ArpRepr) -> [u8; 56] {
    let mut buf = [0xeeu8; 56];
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]))
        .unwrap();
    buf
}

// ---- ARP -------------------------------------------------------------------

#[test]
fn arp_request_both_directions() {
    let pkt = ArpPacket::new_checked(&ARP_REQUEST[..]).unwrap();
    assert_eq!(pkt.hardware_type(), 32);
    assert_eq!(pkt.protocol_type(), 0x0800);
    assert_eq!(pkt.hardware_len(), 20);
    assert_eq!(pkt.protocol_len(), 4);
    assert_eq!(pkt.operation(), ArpOperation::Request);
    assert_eq!(ArpRepr::parse(&pkt), Ok(request()));
    assert_eq!(request().buffer_len(), 56);
    assert_eq!(emit_arp(&request()), ARP_REQUEST);
}

#[test]
fn arp_reply_both_directions() {
    let pkt = ArpPacket::new_checked(&ARP_REPLY[..]).unwrap();
    assert_eq!(pkt.source_hardware_addr(), hw_b());
    assert_eq!(pkt.target_hardware_addr(), hw_a());
    assert_eq!(pkt.source_protocol_addr(), Ipv4Address::new(10, 0, 0, 2));
    assert_eq!(ArpRepr::parse(&pkt), Ok(reply()));
    assert_eq!(emit_arp(&reply()), ARP_REPLY);
}

#[test]
fn arp_trailing_bytes_are_ignored() {
    let mut long = [0u8; 60];
    long[..56].copy_from_slice(&ARP_REQUEST);
    let pkt = ArpPacket::new_checked(&long[..]).unwrap();
    assert_eq!(ArpRepr::parse(&pkt), Ok(request()));
}

#[test]
fn arp_every_truncation_is_an_error() {
    for len in 0..56 {
        let short = &ARP_REQUEST[..len];
        assert_eq!(
            ArpPacket::new_checked(short).err(),
            Some(WireError::Truncated),
            "len {len}"
        );
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_unchecked(short)),
            Err(WireError::Truncated),
            "len {len}"
        );
    }
}

#[test]
fn arp_wrong_fixed_fields() {
    let cases: [(usize, &[u8], WireError); 4] = [
        (0, &[0x00, 0x01], WireError::BadHardwareType(1)),
        (2, &[0x86, 0xdd], WireError::BadProtocolType(0x86dd)),
        (4, &[0x06], WireError::BadHardwareLen(6)),
        (5, &[0x10], WireError::BadProtocolLen(16)),
    ];
    for (at, bytes, err) in cases {
        let mut bad = ARP_REQUEST;
        bad[at..at + bytes.len()].copy_from_slice(bytes);
        let parsed = ArpPacket::new_checked(&bad[..]).and_then(|p| ArpRepr::parse(&p));
        assert_eq!(parsed, Err(err));
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_unchecked(&bad[..])),
            Err(err)
        );
    }
}

#[test]
fn arp_emit_into_short_buffer() {
    for len in 0..56 {
        let mut buf = [0u8; 56];
        let res = request().emit(&mut ArpPacket::new_unchecked(&mut buf[..len]));
        assert_eq!(
            res,
            Err(WireError::BufferTooSmall {
                needed: 56,
                available: len
            })
        );
        assert_eq!(buf, [0; 56], "nothing written on error");
    }
}

// ---- encapsulation header ---------------------------------------------------

#[test]
fn encap_ipv4_both_directions() {
    // IPoIB header + the first bytes of an IPv4 header.
    let frame = [0x08, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x54];
    let pkt = EncapPacket::new_checked(&frame[..]).unwrap();
    assert_eq!(pkt.ethertype(), EtherType::Ipv4);
    assert_eq!(pkt.reserved(), 0);
    assert_eq!(pkt.payload(), &[0x45, 0x00, 0x00, 0x54]);
    let repr = EncapRepr::parse(&pkt);
    assert_eq!(repr.ethertype, EtherType::Ipv4);
    assert_eq!(repr.buffer_len(), encap::HEADER_LEN);

    let mut out = [0xffu8; 8];
    let mut pkt = EncapPacket::new_unchecked(&mut out[..]);
    repr.emit(&mut pkt).unwrap();
    pkt.payload_mut().copy_from_slice(&[0x45, 0x00, 0x00, 0x54]);
    assert_eq!(out, frame);
}

#[test]
fn encap_arp_frame_both_directions() {
    let mut frame = [0u8; 60];
    frame[..4].copy_from_slice(&[0x08, 0x06, 0x00, 0x00]);
    frame[4..].copy_from_slice(&ARP_REQUEST);

    let pkt = EncapPacket::new_checked(&frame[..]).unwrap();
    assert_eq!(pkt.ethertype(), EtherType::Arp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(pkt.payload()).unwrap());
    assert_eq!(arp, Ok(request()));

    let mut out = [0u8; 60];
    let mut pkt = EncapPacket::new_unchecked(&mut out[..]);
    EncapRepr {
        ethertype: EtherType::Arp,
    }
    .emit(&mut pkt)
    .unwrap();
    request()
        .emit(&mut ArpPacket::new_unchecked(pkt.payload_mut()))
        .unwrap();
    assert_eq!(out, frame);
}

#[test]
fn encap_truncations() {
    let frame = [0x08, 0x06, 0x00, 0x00];
    for len in 0..4 {
        assert_eq!(
            EncapPacket::new_checked(&frame[..len]).err(),
            Some(WireError::Truncated)
        );
    }
    assert!(EncapPacket::new_checked(&frame[..])
        .unwrap()
        .payload()
        .is_empty());
}

// ---- hardware addresses and MGIDs ------------------------------------------

#[test]
fn hwaddr_display_like_ip_link() {
    assert_eq!(
        hw_a().to_string(),
        "80:00:00:48:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02"
    );
    assert_eq!(
        broadcast_hwaddr(PKey(0xffff)).to_string(),
        "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff"
    );
    assert_eq!(HwAddr::parse(&ARP_REQUEST[8..28]), Ok(hw_a()));
    assert_eq!(hw_b().to_bytes(), ARP_REPLY[8..28]);
}

#[test]
fn broadcast_mgid_vectors() {
    #[rustfmt::skip]
    let default: [u8; 16] = [
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
    ];
    // 0x7fff (limited member) and 0xffff name the same group.
    assert_eq!(broadcast_mgid(PKey(0x7fff)).0, default);
    assert_eq!(broadcast_mgid(PKey(0xffff)).0, default);
    assert_eq!(broadcast_hwaddr(PKey(0x7fff)).to_bytes(), BROADCAST_HWADDR);
    assert_eq!(
        HwAddr::parse(&BROADCAST_HWADDR),
        Ok(broadcast_hwaddr(PKey(0xffff)))
    );
    assert_eq!(
        classify_mgid(&Gid(default)),
        Some(MgidKind::Broadcast { pkey: PKey(0xffff) })
    );

    #[rustfmt::skip]
    let partition_1: [u8; 16] = [
        0xff, 0x12, 0x40, 0x1b, 0x80, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(broadcast_mgid(PKey(0x0001)).0, partition_1);
    assert_eq!(
        classify_mgid(&Gid(partition_1)),
        Some(MgidKind::Broadcast { pkey: PKey(0x8001) })
    );
}

#[test]
fn ipv4_multicast_mgid_vectors() {
    #[rustfmt::skip]
    let all_hosts: [u8; 16] = [
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];
    #[rustfmt::skip]
    let ssdp: [u8; 16] = [
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0f, 0xff, 0xff, 0xfa,
    ];
    let pkey = PKey(0xffff);
    assert_eq!(
        ipv4_multicast_mgid(pkey, Ipv4Address::new(224, 0, 0, 1)).0,
        all_hosts
    );
    assert_eq!(
        ipv4_multicast_mgid(pkey, Ipv4Address::new(239, 255, 255, 250)).0,
        ssdp
    );
    assert_eq!(
        classify_mgid(&Gid(all_hosts)),
        Some(MgidKind::Ipv4Multicast { pkey, low28: 1 })
    );
    assert_eq!(
        classify_mgid(&Gid(ssdp)),
        Some(MgidKind::Ipv4Multicast {
            pkey,
            low28: 0x0fff_fffa
        })
    );
    assert_eq!(classify_mgid(&gid_a()), None);
}

// ---- GRH and pcap -------------------------------------------------------------

struct VecSink(Vec<u8>);

impl PcapSink for VecSink {
    fn write_all(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }
}

#[test]
fn grh_vector() {
    #[rustfmt::skip]
    let expected: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
        0x00, 0x54,             // payload length 84
        0x1b,                   // next header: IBA transport
        0x01,                   // hop limit
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // SGID fe80::3
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03,
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DGID fe80::2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    ];
    assert_eq!(build_grh(&gid_b(), &gid_a(), 84), expected);
    let r = GrhRepr::parse(&expected).unwrap();
    assert_eq!(
        (r.sgid, r.dgid, r.payload_len, r.hop_limit),
        (gid_b(), gid_a(), 84, 1)
    );
    assert_eq!(r.to_bytes(), expected);
}

#[test]
fn pcap_exact_bytes() {
    let mut frame = [0u8; 60];
    frame[..4].copy_from_slice(&[0x08, 0x06, 0x00, 0x00]);
    frame[4..].copy_from_slice(&ARP_REQUEST);
    let mut reply = [0u8; 60];
    reply[..4].copy_from_slice(&[0x08, 0x06, 0x00, 0x00]);
    reply[4..].copy_from_slice(&ARP_REPLY);
    let grh = build_grh(&gid_b(), &gid_a(), 84);

    let mut w = PcapWriter::new(VecSink(Vec::new()), 0);
    w.write_tx(
        Instant::from_micros(1_000_002),
        &broadcast_hwaddr(PKey::DEFAULT),
        &frame,
    );
    w.write_rx(Instant::from_micros(2_000_003), &grh, &reply);
    let out = w.into_inner().0;

    #[rustfmt::skip]
    let global: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, // magic, little-endian
        0x02, 0x00, 0x04, 0x00, // version 2.4
        0x00, 0x00, 0x00, 0x00, // thiszone
        0x00, 0x00, 0x00, 0x00, // sigfigs
        0xff, 0xff, 0x00, 0x00, // snaplen 65535
        0xf2, 0x00, 0x00, 0x00, // LINKTYPE_IPOIB 242
    ];
    #[rustfmt::skip]
    let tx_header: [u8; 16] = [
        0x01, 0x00, 0x00, 0x00, // 1 s
        0x02, 0x00, 0x00, 0x00, // 2 us
        0x64, 0x00, 0x00, 0x00, // incl_len 100 = 40 + 4 + 56
        0x64, 0x00, 0x00, 0x00, // orig_len 100
    ];
    #[rustfmt::skip]
    let rx_header: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, // 2 s
        0x03, 0x00, 0x00, 0x00, // 3 us
        0x64, 0x00, 0x00, 0x00,
        0x64, 0x00, 0x00, 0x00,
    ];
    let mut expected = Vec::new();
    expected.extend_from_slice(&global);
    expected.extend_from_slice(&tx_header);
    expected.extend_from_slice(&[0u8; 20]);
    expected.extend_from_slice(&BROADCAST_HWADDR);
    expected.extend_from_slice(&frame);
    expected.extend_from_slice(&rx_header);
    expected.extend_from_slice(&grh);
    expected.extend_from_slice(&reply);
    assert_eq!(out, expected);
    assert_eq!(out.len(), 24 + 2 * (16 + 100));
}

#[test]
fn pcap_snaplen_cuts_the_record() {
    let mut w = PcapWriter::new(VecSink(Vec::new()), 48);
    w.write_tx(
        Instant::ZERO,
        &hw_b(),
        &[0x08, 0x06, 0, 0, 1, 2, 3, 4, 5, 6],
    );
    let out = w.into_inner().0;
    let rec = &out[24..];
    assert_eq!(&rec[8..16], &[48, 0, 0, 0, 50, 0, 0, 0]);
    assert_eq!(rec.len(), 16 + 48);
    assert_eq!(&rec[16 + 20..16 + 40], &hw_b().to_bytes());
    assert_eq!(&rec[16 + 40..], &[0x08, 0x06, 0, 0, 1, 2, 3, 4]);
}

// ---- properties ---------------------------------------------------------------

fn any_hwaddr() -> impl Strategy<Value = HwAddr> {
    (any::<u8>(), 0..=0x00ff_ffffu32, any::<[u8; 16]>()).prop_map(|(flags, qpn, gid)| HwAddr {
        flags,
        qpn: Qpn::new_truncated(qpn),
        gid: Gid(gid),
    })
}

fn any_arp() -> impl Strategy<Value = ArpRepr> {
    (
        any::<u16>(),
        any_hwaddr(),
        any::<u32>(),
        any_hwaddr(),
        any::<u32>(),
    )
        .prop_map(|(op, sh, si, th, ti)| ArpRepr {
            operation: ArpOperation::from(op),
            source_hw: sh,
            source_ip: Ipv4Address::from(si),
            target_hw: th,
            target_ip: Ipv4Address::from(ti),
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        fuzz_parse(&data);
        let _ = ArpRepr::parse(&ArpPacket::new_unchecked(&data[..]));
        let _ = GrhRepr::parse(&data);
        let _ = HwAddr::parse(&data);
        if let Ok(p) = EncapPacket::new_checked(&data[..]) {
            prop_assert_eq!(p.payload(), &data[4..]);
        }
    }

    #[test]
    fn random_arp_header_fields(head in any::<[u8; 8]>(), len in 0usize..64) {
        let mut buf = [0u8; 64];
        buf[..56].copy_from_slice(&ARP_REQUEST);
        buf[..8].copy_from_slice(&head);
        let res = ArpRepr::parse(&ArpPacket::new_unchecked(&buf[..len]));
        let fixed_ok = head[..6] == ARP_REQUEST[..6];
        prop_assert_eq!(res.is_ok(), fixed_ok && len >= 56);
        fuzz_parse(&buf[..len]);
    }

    #[test]
    fn arp_round_trip(repr in any_arp()) {
        let buf = emit_arp(&repr);
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()), Ok(repr));
        fuzz_parse(&buf);
    }

    #[test]
    fn mgid_round_trip(pkey in any::<u16>(), group in any::<u32>()) {
        let pkey = PKey(pkey);
        let g = ipv4_multicast_mgid(pkey, Ipv4Address::from(group));
        prop_assert_eq!(
            classify_mgid(&g),
            Some(MgidKind::Ipv4Multicast { pkey: pkey.as_full(), low28: group & 0x0fff_ffff })
        );
        prop_assert_eq!(
            classify_mgid(&broadcast_mgid(pkey)),
            Some(MgidKind::Broadcast { pkey: pkey.as_full() })
        );
        fuzz_parse(&g.0);
    }
}
