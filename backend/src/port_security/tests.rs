//! The port-security filter on hand-made frames.

use std::net::Ipv4Addr;

use ipoib::wire::{ArpOperation, ArpPacket, ArpRepr, HwAddr};
use ipoib::DatagramSource;
use smoltcp::wire::Ipv4Address;
use verbs_shim::back::{SenderPort, TxFilter, TxVerdict, FILTER_HEAD_LEN};
use verbs_shim::{Gid, Qpn};

use super::{check, check6, filter_for, SeatDirectory, Spoof};
use crate::config::{Attach, GuestConfig};

pub(super) const OWN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub(super) const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

fn own_port() -> SenderPort {
    SenderPort {
        qpn: Qpn::new_truncated(0x48),
        gid: Gid::from_parts(0xfe80 << 48, 2),
    }
}

pub(super) fn ipv4_frame(source: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0x08, 0x00, 0, 0];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&84u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&source.octets());
    ip[16..20].copy_from_slice(&[10, 77, 0, 1]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&[0u8; 64]);
    frame
}

fn arp_frame(source_ip: Ipv4Addr, source_hw: HwAddr) -> Vec<u8> {
    let mut frame = vec![0x08, 0x06, 0, 0];
    frame.resize(4 + 56, 0);
    let arp = ArpRepr {
        operation: ArpOperation::Request,
        source_hw,
        source_ip: Ipv4Address::from(source_ip.octets()),
        target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
        target_ip: Ipv4Address::new(10, 77, 0, 1),
    };
    let ok = arp.emit(&mut ArpPacket::new_unchecked(&mut frame[4..]));
    assert!(ok.is_ok());
    frame
}

fn own_hw() -> HwAddr {
    HwAddr::new(own_port().qpn, own_port().gid)
}

pub(super) fn guest(ip: Option<Ipv4Addr>) -> GuestConfig {
    GuestConfig {
        name: "g2".into(),
        attach: Attach::Socket("/nonexistent".into()),
        window: 1 << 20,
        pkeys: vec![0xffff],
        ip,
        ip6: None,
        limits: Default::default(),
    }
}

/// What the back half hands the filter: at most FILTER_HEAD_LEN bytes.
fn run(filter: &mut dyn TxFilter, frame: &[u8]) -> TxVerdict {
    let head = &frame[..frame.len().min(FILTER_HEAD_LEN)];
    filter.check(&own_port(), head, frame.len())
}

#[test]
fn honest_ipv4_and_arp_pass() {
    assert_eq!(check(OWN_IP, &own_port(), &ipv4_frame(OWN_IP)), Ok(()));
    assert_eq!(
        check(OWN_IP, &own_port(), &arp_frame(OWN_IP, own_hw())),
        Ok(())
    );
    let mut filter = filter_for(&guest(Some(OWN_IP)), None).expect("a filter");
    assert_eq!(run(filter.as_mut(), &ipv4_frame(OWN_IP)), TxVerdict::Pass);
    assert_eq!(
        run(filter.as_mut(), &arp_frame(OWN_IP, own_hw())),
        TxVerdict::Pass
    );
}

#[test]
fn spoofed_ipv4_source_is_dropped() {
    assert_eq!(
        check(OWN_IP, &own_port(), &ipv4_frame(OTHER_IP)),
        Err(Spoof::Ipv4Source(OTHER_IP))
    );
    let mut filter = filter_for(&guest(Some(OWN_IP)), None).expect("a filter");
    assert_eq!(run(filter.as_mut(), &ipv4_frame(OTHER_IP)), TxVerdict::Drop);
}

#[test]
fn spoofed_arp_sender_ip_is_dropped() {
    assert_eq!(
        check(OWN_IP, &own_port(), &arp_frame(OTHER_IP, own_hw())),
        Err(Spoof::ArpSenderIp(OTHER_IP))
    );
}

#[test]
fn spoofed_arp_sender_hardware_address_is_dropped() {
    let other_qpn = HwAddr::new(Qpn::new_truncated(0x49), own_port().gid);
    assert_eq!(
        check(OWN_IP, &own_port(), &arp_frame(OWN_IP, other_qpn)),
        Err(Spoof::ArpSenderHw(other_qpn))
    );
    let other_gid = HwAddr::new(own_port().qpn, Gid::from_parts(0xfe80 << 48, 3));
    assert_eq!(
        check(OWN_IP, &own_port(), &arp_frame(OWN_IP, other_gid)),
        Err(Spoof::ArpSenderHw(other_gid))
    );
}

#[test]
fn truncated_ipv4_and_arp_are_dropped_other_ethertypes_pass() {
    let ipv4 = ipv4_frame(OWN_IP);
    assert!(check(OWN_IP, &own_port(), &ipv4[..4 + 19]).is_err());
    let arp = arp_frame(OWN_IP, own_hw());
    assert!(check(OWN_IP, &own_port(), &arp[..4 + 55]).is_err());
    // IPv6 and frames too short for an IPoIB header are not ours to judge.
    let ipv6 = [0x86, 0xdd, 0, 0, 0x60, 0, 0, 0];
    assert_eq!(check(OWN_IP, &own_port(), &ipv6), Ok(()));
    assert_eq!(check(OWN_IP, &own_port(), &[0x08]), Ok(()));
}

#[test]
fn seats_without_ip_are_not_filtered() {
    assert!(filter_for(&guest(None), None).is_none());
}

#[test]
fn the_directory_admits_a_seat_address_only_from_its_port() {
    let directory = SeatDirectory::for_guests(&[guest(Some(OWN_IP))]);
    let from_seat = DatagramSource {
        qpn: own_port().qpn,
        gid: Some(own_port().gid),
    };
    let from_elsewhere = DatagramSource {
        qpn: Qpn::new_truncated(0x99),
        gid: Some(Gid::from_parts(0xfe80 << 48, 9)),
    };
    // Not yet registered: the seat's address is believed from no one.
    assert!(!directory.admits(OWN_IP, &from_seat));
    let mut filter = filter_for(&guest(Some(OWN_IP)), Some(&directory)).expect("a filter");
    assert_eq!(run(filter.as_mut(), &ipv4_frame(OWN_IP)), TxVerdict::Pass);
    assert!(directory.admits(OWN_IP, &from_seat));
    assert!(!directory.admits(OWN_IP, &from_elsewhere));
    // The seat's port may not use another address; others may.
    assert!(!directory.admits(OTHER_IP, &from_seat));
    assert!(directory.admits(OTHER_IP, &from_elsewhere));
}

pub(super) const OWN_IP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

/// An IPoIB frame with an IPv6 header from `source` (and 40 bytes after).
pub(super) fn ipv6_frame(source: std::net::Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0x86, 0xdd, 0, 0];
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 58;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&source.octets());
    ip[24..40].copy_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&[0u8; 40]);
    frame
}

/// A UDP packet from 0.0.0.0:`sport` to `dst`:`dport`, IPoIB header first.
fn udp_from_nowhere(dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut frame = ipv4_frame(Ipv4Addr::UNSPECIFIED);
    frame[4 + 9] = 17;
    frame[4 + 16..4 + 20].copy_from_slice(&dst);
    frame[24..26].copy_from_slice(&sport.to_be_bytes());
    frame[26..28].copy_from_slice(&dport.to_be_bytes());
    frame
}

#[test]
fn ipv6_only_from_the_seats_addresses() {
    let port = own_port();
    let link_local = std::net::Ipv6Addr::from(ipoib::wire::ipv6::link_local(&port.gid).octets());
    for ok in [OWN_IP6, link_local, std::net::Ipv6Addr::UNSPECIFIED] {
        assert_eq!(check6(OWN_IP6, &port, &ipv6_frame(ok)), Ok(()), "{ok}");
    }
    let other: std::net::Ipv6Addr = "fd77::3".parse().unwrap();
    assert_eq!(
        check6(OWN_IP6, &port, &ipv6_frame(other)),
        Err(Spoof::Ipv6Source(other))
    );
    // Another port's link-local address is not ours.
    let other_ll: std::net::Ipv6Addr = "fe80::200:0:0:3".parse().unwrap();
    assert_eq!(
        check6(OWN_IP6, &port, &ipv6_frame(other_ll)),
        Err(Spoof::Ipv6Source(other_ll))
    );
    // Too short to tell, or not version 6.
    let frame = ipv6_frame(OWN_IP6);
    assert_eq!(
        check6(OWN_IP6, &port, &frame[..20]),
        Err(Spoof::Malformed(ipoib::wire::EtherType::Ipv6))
    );
    let mut v4 = frame.clone();
    v4[4] = 0x45;
    assert_eq!(
        check6(OWN_IP6, &port, &v4),
        Err(Spoof::Malformed(ipoib::wire::EtherType::Ipv6))
    );
    // IPv4 and ARP are check()'s.
    assert_eq!(check6(OWN_IP6, &port, &ipv4_frame(OTHER_IP)), Ok(()));
}

#[test]
fn filters_follow_the_seat_config() {
    let other: std::net::Ipv6Addr = "fd77::3".parse().unwrap();
    // ip= only: IPv6 is not checked.
    let mut f = filter_for(&guest(Some(OWN_IP)), None).expect("a filter");
    assert_eq!(run(&mut *f, &ipv6_frame(other)), TxVerdict::Pass);
    // ip6= only: IPv4 is not checked, IPv6 is.
    let mut seat = guest(None);
    seat.ip6 = Some(OWN_IP6);
    let mut f = filter_for(&seat, None).expect("a filter");
    assert_eq!(run(&mut *f, &ipv4_frame(OTHER_IP)), TxVerdict::Pass);
    assert_eq!(run(&mut *f, &ipv6_frame(OWN_IP6)), TxVerdict::Pass);
    assert_eq!(run(&mut *f, &ipv6_frame(other)), TxVerdict::Drop);
    // Both: both.
    seat.ip = Some(OWN_IP);
    let directory = SeatDirectory::for_guests(std::slice::from_ref(&seat));
    let mut f = filter_for(&seat, Some(&directory)).expect("a filter");
    assert_eq!(run(&mut *f, &ipv4_frame(OTHER_IP)), TxVerdict::Drop);
    assert_eq!(run(&mut *f, &ipv6_frame(other)), TxVerdict::Drop);
    assert_eq!(run(&mut *f, &ipv6_frame(OWN_IP6)), TxVerdict::Pass);
    // The first frame registered the port for both addresses.
    let source = DatagramSource {
        qpn: own_port().qpn,
        gid: Some(own_port().gid),
    };
    assert!(directory.admits6(OWN_IP6, &source));
    assert!(!directory.admits6(other, &source));
    assert!(directory.admits(OWN_IP, &source));
    assert_eq!(filter_for(&guest(None), None).map(|_| ()), None);
}

#[test]
fn a_dhcp_client_may_broadcast_from_nowhere_and_nothing_else() {
    let port = own_port();
    let dhcp = udp_from_nowhere([255; 4], 68, 67);
    assert_eq!(check(OWN_IP, &port, &dhcp), Ok(()));
    let spoof = Err(Spoof::Ipv4Source(Ipv4Addr::UNSPECIFIED));
    // Unicast, other ports, not UDP, options, fragments: all dropped.
    let cases = [
        udp_from_nowhere([10, 77, 0, 254], 68, 67),
        udp_from_nowhere([255; 4], 68, 68),
        udp_from_nowhere([255; 4], 5353, 67),
        {
            let mut f = dhcp.clone();
            f[4 + 9] = 6;
            f
        },
        {
            let mut f = dhcp.clone();
            f[4] = 0x46;
            f
        },
        {
            let mut f = dhcp.clone();
            f[4 + 6] = 0x20;
            f
        },
    ];
    for (i, frame) in cases.iter().enumerate() {
        assert_eq!(check(OWN_IP, &port, frame), spoof, "case {i}");
    }
    // Cut short before the ports: dropped too.
    assert_eq!(check(OWN_IP, &port, &dhcp[..4 + 22]), spoof);
}

#[test]
fn seat_at_finds_the_seat_of_a_port_and_no_other() {
    let mut g3 = guest(Some(OTHER_IP));
    g3.name = "g3".into();
    let d = SeatDirectory::for_guests(&[guest(Some(OWN_IP)), g3]);
    let other = SenderPort {
        qpn: Qpn::new_truncated(0x49),
        gid: Gid::from_parts(0xfe80 << 48, 3),
    };
    d.register(OWN_IP, own_port());
    d.register(OTHER_IP, other);
    let from = |p: SenderPort, grh: bool| DatagramSource {
        qpn: p.qpn,
        gid: grh.then_some(p.gid),
    };
    assert_eq!(d.seat_at(&from(own_port(), true)), Some(OWN_IP));
    assert_eq!(d.seat_at(&from(other, false)), Some(OTHER_IP));
    // The right QPN at the wrong GID, or an unknown port: no seat.
    let wrong_gid = DatagramSource {
        qpn: own_port().qpn,
        gid: Some(other.gid),
    };
    assert_eq!(d.seat_at(&wrong_gid), None);
    let stranger = SenderPort {
        qpn: Qpn::new_truncated(0x99),
        gid: own_port().gid,
    };
    assert_eq!(d.seat_at(&from(stranger, true)), None);
    // A port that went away no longer speaks for its seat.
    d.unregister(OWN_IP, own_port());
    assert_eq!(d.seat_at(&from(own_port(), true)), None);
}

#[test]
fn a_guest_may_not_act_as_a_dhcp_server() {
    let port = own_port();
    let mut offer = udp_from_nowhere([255; 4], 67, 68);
    offer[4 + 12..4 + 16].copy_from_slice(&OWN_IP.octets());
    assert_eq!(check(OWN_IP, &port, &offer), Err(Spoof::DhcpServer));
    // Other UDP from its own address passes, as does a later fragment
    // (it has no ports), and ICMP.
    let mut echo = offer.clone();
    echo[24..26].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(check(OWN_IP, &port, &echo), Ok(()));
    let mut later = offer.clone();
    later[4 + 7] = 0x10;
    assert_eq!(check(OWN_IP, &port, &later), Ok(()));
    assert_eq!(check(OWN_IP, &port, &ipv4_frame(OWN_IP)), Ok(()));
    // IPv4 options that push the ports past the checked bytes: dropped.
    let mut options = offer.clone();
    options[4] = 0x4f;
    assert_eq!(
        check(OWN_IP, &port, &options[..FILTER_HEAD_LEN]),
        Err(Spoof::Malformed(ipoib::wire::EtherType::Ipv4))
    );
}
