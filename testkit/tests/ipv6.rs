//! IPv6 over IPoIB between in-process guests on the sim fabric (RFC 4391):
//! link-local addresses from the port GUIDs, neighbour discovery with the
//! 20-byte link-layer option done by `ipoib`, ping6 and TCP over IPv6, and
//! the unhappy paths: a spoofed advertisement, a malformed option, a full
//! neighbour table; a fragmented IPv6 datagram reassembled by `ipoib`. A
//! capture of it all decodes in tshark.

use ibguest_testkit::apps::{ping, ping_with, tcp_transfer_to, udp_echo_step, udp_socket};
use ibguest_testkit::capture::SharedCapture;
use ibguest_testkit::tshark;
use ibguest_testkit::{BoxError, GuestSpec, Net, RawSender};
use ipoib::wire::ipv6::{link_local, solicited_node};
use ipoib::wire::{EncapPacket, EncapRepr, EtherType, HwAddr, NdKind, NdRepr};
use smoltcp::phy::{ChecksumCapabilities, Device, TxToken};
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr};
use verbs_shim::sim::FaultConfig;
use verbs_shim::{Gid, Qpn};

fn up(net: &mut Net) -> Result<(), BoxError> {
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })
}

/// Guests 1 and 2 with fd77::1 and fd77::2 besides their link-local
/// addresses; guest 1's packets go to `capture`.
fn two_guests(capture: SharedCapture) -> Result<Net, BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    net.add_captured(GuestSpec::new(1).with_ip6(), capture)?;
    net.add(GuestSpec::new(2).with_ip6())?;
    up(&mut net)?;
    Ok(net)
}

fn ip6(net: &Net, g: usize) -> Ipv6Address {
    net.guests[g]
        .spec
        .ip6
        .map(|c| c.address())
        .unwrap_or(Ipv6Address::UNSPECIFIED)
}

#[test]
fn link_local_from_the_guid_and_groups_joined() -> Result<(), BoxError> {
    let net = two_guests(SharedCapture::none())?;
    let d = &net.guests[1].device;
    // Port 2 of the sim fabric has GID fe80::2: GUID 0...02, u/l bit inverted.
    assert_eq!(d.hw_addr().gid, Gid::from_parts(0xfe80 << 48, 2));
    assert_eq!(
        d.ipv6_link_local(),
        Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 2)
    );
    // all-nodes, and one solicited-node group: fe80::200:0:0:2 and fd77::2
    // share their low 24 bits.
    assert_eq!(d.stats().nd.groups_joined, 2);
    assert_eq!(d.stats().nd.join_failures, 0);
    Ok(())
}

#[test]
fn ping6_both_addresses_and_tcp() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let ll2 = net.guests[1].device.ipv6_link_local();
    let ll1 = net.guests[0].device.ipv6_link_local();
    ping(&mut net, 0, ll2, 1, Duration::from_secs(5))?;
    ping(&mut net, 1, ll1, 2, Duration::from_secs(5))?;
    let g2 = ip6(&net, 1);
    ping(&mut net, 0, g2, 3, Duration::from_secs(5))?;
    let (s1, s2) = (net.guests[0].device.stats(), net.guests[1].device.stats());
    // Guest 1 asked for both of guest 2's addresses; guest 2 learnt guest 1
    // from the solicitations and needed no solicitation of its own.
    assert_eq!(s1.nd.solicits_sent, 2, "{s1:?}");
    assert_eq!(s2.nd.solicits_received, 2, "{s2:?}");
    assert_eq!(s2.nd.adverts_sent, 2, "{s2:?}");
    assert_eq!(s1.nd.adverts_received, 2, "{s1:?}");
    assert_eq!(s2.nd.solicits_sent, 0, "{s2:?}");
    assert_eq!(s1.rx_drops.malformed + s2.rx_drops.malformed, 0);
    // No IPv4 ARP was needed for any of it.
    assert_eq!(s1.arp.requests_sent, 0);

    let report = tcp_transfer_to(
        &mut net,
        0,
        1,
        IpAddress::Ipv6(g2),
        1 << 20,
        6,
        Duration::from_secs(30),
    )?;
    assert_eq!(report.bytes, 1 << 20);
    assert_eq!(report.sent_sha256, report.received_sha256);
    // The SYNs' MSS was clamped to one IPoIB packet, so no segment needed
    // fragmenting.
    for g in 0..2 {
        let s = net.guests[g].device.stats();
        assert_eq!(s.frag_tx.mss_clamped, 1, "{s:?}");
        assert_eq!(s.frag_tx.datagrams, 0, "{s:?}");
    }
    // And IPv4 alongside.
    let ip2 = net.guests[1].spec.ipv4();
    ping(&mut net, 0, ip2, 4, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn unknown_neighbour_fails_and_counts() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let nobody = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x99);
    assert!(ping(&mut net, 0, nobody, 1, Duration::from_secs(5)).is_err());
    let s = net.guests[0].device.stats();
    // Three solicitations (ArpTimers::max_requests), then given up.
    assert_eq!(s.nd.solicits_sent, 3, "{s:?}");
    assert_eq!(s.nd.failures, 1, "{s:?}");
    // Off-link with no gw6: no route at all.
    let far = Ipv6Address::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    assert!(ping(&mut net, 0, far, 2, Duration::from_millis(500)).is_err());
    Ok(())
}

/// An IPoIB frame with an IPv6 ND message from `src` to `dst`.
fn nd_frame(src: Ipv6Address, dst: Ipv6Address, nd: &NdRepr, hop_limit: u8) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: nd.buffer_len(),
        hop_limit,
    };
    let mut frame = vec![0u8; 4 + 40 + nd.buffer_len()];
    let mut encap = EncapPacket::new_unchecked(&mut frame[..]);
    EncapRepr {
        ethertype: EtherType::Ipv6,
    }
    .emit(&mut encap)
    .expect("room for the header");
    let mut packet = Ipv6Packet::new_unchecked(encap.payload_mut());
    ip.emit(&mut packet);
    nd.emit(packet.payload_mut(), &src, &dst)
        .expect("room for the message");
    frame
}

fn advert(target: Ipv6Address, lla: HwAddr) -> NdRepr {
    NdRepr {
        kind: NdKind::Advert {
            router: false,
            solicited: false,
            override_: true,
        },
        target,
        lla: Some(lla),
    }
}

#[test]
fn spoofed_advertisement_does_not_poison_the_table() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let g2 = ip6(&net, 1);
    ping(&mut net, 0, g2, 1, Duration::from_secs(5))?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let real = raw.own_hw();
    let before = net.guests[0].device.stats();
    let src = link_local(&real.gid);
    let all = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // Claims guest 2's address with a QPN the sender does not have...
    let lie = HwAddr::new(Qpn::new_truncated(real.qpn.get() ^ 0x55), real.gid);
    raw.send(&mut net, &nd_frame(src, all, &advert(g2, lie), 255))?;
    // ...and with another port's GID.
    let lie = HwAddr::new(real.qpn, Gid::from_parts(0xfe80 << 48, 0x77));
    raw.send(&mut net, &nd_frame(src, all, &advert(g2, lie), 255))?;
    let after = net.guests[0].device.stats();
    assert_eq!(after.rx_drops.nd_spoofed, before.rx_drops.nd_spoofed + 2);
    assert_eq!(after.nd.learned, before.nd.learned);
    // Guest 1 still reaches guest 2 where it really is.
    ping(&mut net, 0, g2, 2, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn malformed_messages_are_dropped_and_counted() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let real = raw.own_hw();
    let src = link_local(&real.gid);
    let target = ip6(&net, 0);
    let solicit = NdRepr {
        kind: NdKind::Solicit,
        target,
        lla: Some(real),
    };
    let dst = solicited_node(target);
    let good = nd_frame(src, dst, &solicit, 255);
    let before = net.guests[0].device.stats();
    // An Ethernet-sized (1 unit) source link-layer option.
    let mut frame = good.clone();
    frame[4 + 40 + 25] = 1;
    raw.send(&mut net, &frame)?;
    // A routed solicitation (hop limit 64).
    raw.send(&mut net, &nd_frame(src, dst, &solicit, 64))?;
    // A bad checksum.
    let mut frame = good.clone();
    frame[4 + 40 + 2] ^= 0xff;
    raw.send(&mut net, &frame)?;
    // A zero-length option.
    let mut frame = good.clone();
    frame[4 + 40 + 25] = 0;
    raw.send(&mut net, &frame)?;
    // A multicast source address.
    let all = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    raw.send(&mut net, &nd_frame(all, dst, &solicit, 255))?;
    let after = net.guests[0].device.stats();
    assert_eq!(after.rx_drops.malformed, before.rx_drops.malformed + 5);
    assert_eq!(after.nd.solicits_received, before.nd.solicits_received);
    assert_eq!(after.nd.adverts_sent, before.nd.adverts_sent);
    // The good one is answered.
    raw.send(&mut net, &good)?;
    let after = net.guests[0].device.stats();
    assert_eq!(after.nd.solicits_received, before.nd.solicits_received + 1);
    assert_eq!(after.nd.adverts_sent, before.nd.adverts_sent + 1);
    Ok(())
}

#[test]
fn a_flood_of_solicitations_fills_a_bounded_table() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let real = raw.own_hw();
    let target = ip6(&net, 0);
    let solicit = NdRepr {
        kind: NdKind::Solicit,
        target,
        lla: Some(real),
    };
    let dst = solicited_node(target);
    // 100 sources, each learnt (the solicitation is for our address) until
    // the table is full, then evicting the least recently used.
    for i in 0..100u16 {
        let src = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 1, i);
        raw.send(&mut net, &nd_frame(src, dst, &solicit, 255))?;
    }
    let s = net.guests[0].device.stats();
    assert_eq!(s.nd.solicits_received, 100);
    assert_eq!(s.nd.learned, 100);
    // The table held: guest 1 still resolves and reaches guest 2.
    let g2 = ip6(&net, 1);
    ping(&mut net, 0, g2, 1, Duration::from_secs(5))?;
    let ll2 = net.guests[1].device.ipv6_link_local();
    ping(&mut net, 0, ll2, 2, Duration::from_secs(5))?;
    Ok(())
}

/// Wireshark decodes the neighbour discovery with the 20-byte IPoIB
/// link-layer address option, the echoes and the TCP.
#[test]
fn tshark_decodes_ipv6_neighbour_discovery() -> Result<(), BoxError> {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipv6.pcap");
    let capture = SharedCapture::create(&path)?;
    let mut net = two_guests(capture.clone())?;
    let g2 = ip6(&net, 1);
    ping(&mut net, 0, g2, 1, Duration::from_secs(5))?;
    tcp_transfer_to(
        &mut net,
        0,
        1,
        IpAddress::Ipv6(g2),
        4096,
        1,
        Duration::from_secs(5),
    )?;
    capture.flush()?;
    let nd = tshark::read(
        &path,
        &["-Y", "icmpv6.type == 135 || icmpv6.type == 136", "-V"],
    )?;
    assert!(nd.contains("Neighbor Solicitation"), "{nd}");
    assert!(nd.contains("Neighbor Advertisement"), "{nd}");
    assert!(nd.contains("Source link-layer address"), "{nd}");
    assert!(nd.contains("Target link-layer address"), "{nd}");
    // Length 3 (24 bytes): the 20-byte IPoIB address and 2 bytes of padding.
    assert!(nd.contains("Length: 3 (24 bytes)"), "{nd}");
    assert!(!nd.contains("Malformed"), "{nd}");
    let summary = tshark::read(&path, &[])?;
    assert!(summary.contains("Echo (ping) request"), "{summary}");
    assert!(summary.contains("Echo (ping) reply"), "{summary}");
    assert!(summary.contains("TCP"), "{summary}");
    assert!(summary.contains("fd77::1"), "{summary}");
    assert!(!summary.contains("Malformed"), "{summary}");
    Ok(())
}

/// A UDP datagram from guest `from`'s `fd77::` address, port 40000, to
/// `to`:`port`, cut into IPv6 fragments of `size` bytes (a multiple of 8)
/// of the UDP header and data, with fragment identification `ident`.
fn udp_fragments(
    from: Ipv6Address,
    to: Ipv6Address,
    port: u16,
    data: &[u8],
    size: usize,
    ident: u32,
) -> Vec<Vec<u8>> {
    let udp = UdpRepr {
        src_port: 40_000,
        dst_port: port,
    };
    let mut body = vec![0u8; 8 + data.len()];
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut body[..]),
        &IpAddress::Ipv6(from),
        &IpAddress::Ipv6(to),
        data.len(),
        |b| b.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let ip = Ipv6Repr {
                src_addr: from,
                dst_addr: to,
                next_header: IpProtocol::Ipv6Frag,
                payload_len: 8 + chunk.len(),
                hop_limit: 64,
            };
            let mut packet = vec![0u8; 40 + 8 + chunk.len()];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut packet[..]));
            let offset_flags = ((((i * size) / 8) as u16) << 3) | u16::from(i + 1 < n);
            packet[40] = 17;
            packet[42..44].copy_from_slice(&offset_flags.to_be_bytes());
            packet[44..48].copy_from_slice(&ident.to_be_bytes());
            packet[48..].copy_from_slice(chunk);
            packet
        })
        .collect()
}

/// Sends an IP packet from guest `g` as smoltcp would: through its
/// device's transmit token (which routes it and resolves the neighbour).
fn send_packet(net: &mut Net, g: usize, packet: &[u8]) -> Result<(), BoxError> {
    let now = net.now;
    let token = net.guests[g].device.transmit(now).ok_or("no TX slot")?;
    token.consume(packet.len(), |buf| buf.copy_from_slice(packet));
    Ok(())
}

/// Waits for one datagram on guest `g`'s socket; returns it.
fn receive_datagram(
    net: &mut Net,
    g: usize,
    socket: smoltcp::iface::SocketHandle,
    limit: Duration,
) -> Result<Option<Vec<u8>>, BoxError> {
    let mut got = None;
    let result = net.run_until(limit, |net| {
        let s = net.guests[g].sockets.get_mut::<udp::Socket>(socket);
        if let Ok((data, _)) = s.recv() {
            got = Some(data.to_vec());
        }
        got.is_some()
    });
    Ok(result.ok().and(got))
}

#[test]
fn a_fragmented_ipv6_datagram_is_reassembled() -> Result<(), BoxError> {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipv6-fragments.pcap");
    let capture = SharedCapture::create(&path)?;
    let mut net = two_guests(capture.clone())?;
    let (a, b) = (ip6(&net, 0), ip6(&net, 1));
    // Resolve the neighbour first, as smoltcp's ping does.
    ping(&mut net, 0, b, 1, Duration::from_secs(5))?;
    let socket = udp_socket(&mut net, 1, 7000)?;
    let data: Vec<u8> = (0..8000u32).map(|i| (i * 13 + 1) as u8).collect();
    // In order, then shuffled with the last fragment first.
    let mut frags = udp_fragments(a, b, 7000, &data, 1448, 1);
    for f in &frags {
        send_packet(&mut net, 0, f)?;
    }
    let got = receive_datagram(&mut net, 1, socket, Duration::from_secs(2))?;
    assert_eq!(got.as_deref(), Some(&data[..]));
    frags = udp_fragments(a, b, 7000, &data[..5000], 1024, 2);
    frags.rotate_right(1);
    frags.swap(1, 3);
    for f in &frags {
        send_packet(&mut net, 0, f)?;
    }
    let got = receive_datagram(&mut net, 1, socket, Duration::from_secs(2))?;
    assert_eq!(got.as_deref(), Some(&data[..5000]));
    let s = net.guests[1].device.stats();
    assert_eq!(s.frag6.reassembled, 2, "{s:?}");
    assert_eq!(s.frag6.fragments, 6 + 5, "{s:?}");

    // Overlapping fragments: the datagram is dropped whole and counted.
    let mut frags = udp_fragments(a, b, 7000, &data[..3000], 1024, 3);
    let mut overlap = frags[1].clone();
    // The second fragment again, from byte 1016: 8 bytes over the first.
    overlap[42..44].copy_from_slice(&(((1016u16 / 8) << 3) | 1).to_be_bytes());
    frags.insert(1, overlap);
    for f in &frags {
        send_packet(&mut net, 0, f)?;
    }
    assert_eq!(
        receive_datagram(&mut net, 1, socket, Duration::from_millis(500))?,
        None
    );
    assert_eq!(net.guests[1].device.stats().frag6.overlaps, 1);

    // A datagram missing a piece is given up after the timeout: this one,
    // and the fragment of the overlapping datagram that came after the
    // overlap (it started a datagram of its own).
    let frags = udp_fragments(a, b, 7000, &data[..3000], 1024, 4);
    send_packet(&mut net, 0, &frags[0])?;
    net.run_for(Duration::from_secs(61))?;
    assert_eq!(net.guests[1].device.stats().frag6.timeouts, 2);
    // The guests still talk.
    ping(&mut net, 0, b, 2, Duration::from_secs(5))?;

    capture.flush()?;
    let text = tshark::fields(
        &path,
        "ipv6.reassembled.length",
        &["ipv6.reassembled.length"],
    )?;
    // The UDP header and data: 8008 and 5008 bytes.
    let lengths: Vec<&str> = text.lines().collect();
    assert!(
        lengths.contains(&"8008") && lengths.contains(&"5008"),
        "{text}"
    );
    Ok(())
}

/// Larger than the IPoIB MTU both ways: the sender's ipoib fragments (smoltcp
/// has no IPv6 fragmentation on `Medium::Ip`), the receiver's reassembles.
#[test]
fn large_ipv6_pings_and_udp_echoes_are_fragmented_both_ways() -> Result<(), BoxError> {
    let mut net = two_guests(SharedCapture::none())?;
    let b = ip6(&net, 1);
    for (seq, len) in [(1u16, 3000usize), (2, 8000), (3, 16000)] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 3 + seq as usize) as u8).collect();
        ping_with(&mut net, 0, b, seq, &payload, Duration::from_secs(5))?;
    }
    let (s0, s1) = (net.guests[0].device.stats(), net.guests[1].device.stats());
    assert_eq!(s0.frag_tx.datagrams, 3, "{s0:?}");
    assert_eq!(s1.frag_tx.datagrams, 3, "{s1:?}");
    assert_eq!(s0.frag6.reassembled, 3, "{s0:?}");
    assert_eq!(s1.frag6.reassembled, 3, "{s1:?}");
    // A 12345-byte UDP echo over IPv6.
    let echo = udp_socket(&mut net, 1, 7)?;
    let client = udp_socket(&mut net, 0, 40_001)?;
    let data: Vec<u8> = (0..12345u32).map(|i| (i * 17) as u8).collect();
    let to = smoltcp::wire::IpEndpoint::new(IpAddress::Ipv6(b), 7);
    net.guests[0]
        .sockets
        .get_mut::<udp::Socket>(client)
        .send_slice(&data, to)?;
    let mut ok = false;
    net.run_until(Duration::from_secs(5), |net| {
        udp_echo_step(net, 1, echo);
        let s = net.guests[0].sockets.get_mut::<udp::Socket>(client);
        if let Ok((got, _)) = s.recv() {
            ok = got == &data[..];
        }
        ok
    })?;
    // Past what the reassembly buffers take: dropped, and the guests go on.
    let too_big = vec![0u8; 17000];
    net.guests[0]
        .sockets
        .get_mut::<udp::Socket>(client)
        .send_slice(&too_big, to)?;
    net.run_for(Duration::from_millis(200))?;
    ping(&mut net, 0, b, 9, Duration::from_secs(5))?;
    Ok(())
}
