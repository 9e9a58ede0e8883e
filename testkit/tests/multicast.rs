//! IPv4 multicast on the sim fabric (RFC 4391 section 4): every group has
//! its own MGID, a member attaches to it, a sender needs only a send-only
//! join, and a guest that did not join a group never sees its traffic, not
//! even on its fabric port.

use ibguest_testkit::apps::udp_socket;
use ibguest_testkit::capture::SharedCapture;
use ibguest_testkit::tshark;
use ibguest_testkit::{BoxError, GuestSpec, Net};
use ipoib::wire::ipv4_multicast_mgid;
use ipoib::{GroupError, GroupState, MAX_GROUPS};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
use verbs_shim::sim::FaultConfig;
use verbs_shim::PKey;

const GROUP_A: Ipv4Address = Ipv4Address::new(239, 1, 2, 3);
const GROUP_B: Ipv4Address = Ipv4Address::new(239, 1, 2, 4);
const PORT: u16 = 5000;

fn guests(n: u8, capture: Option<SharedCapture>) -> Result<Net, BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    for i in 1..=n {
        match (&capture, i) {
            (Some(c), 1) => net.add_captured(GuestSpec::new(i), c.clone())?,
            _ => net.add(GuestSpec::new(i))?,
        };
    }
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    Ok(net)
}

/// Joins and waits until the device says the attach is done.
fn join(net: &mut Net, g: usize, group: Ipv4Address) -> Result<(), BoxError> {
    net.guests[g].join_ipv4_group(group)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests[g].device.group_state(group) == Some(GroupState::Joined)
    })?;
    Ok(())
}

fn send(net: &mut Net, g: usize, socket: SocketHandle, group: Ipv4Address, data: &[u8]) {
    let to = IpEndpoint::new(IpAddress::Ipv4(group), PORT);
    net.guests[g]
        .sockets
        .get_mut::<udp::Socket>(socket)
        .send_slice(data, to)
        .expect("room in a fresh socket");
}

/// Every datagram waiting on guest `g`'s socket, with its destination.
fn received(net: &mut Net, g: usize, socket: SocketHandle) -> Vec<(Vec<u8>, Option<IpAddress>)> {
    let socket = net.guests[g].sockets.get_mut::<udp::Socket>(socket);
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, meta)) = socket.recv_slice(&mut buf) {
        out.push((buf[..n].to_vec(), meta.local_address));
    }
    out
}

#[test]
fn members_exchange_datagrams_and_a_non_member_sees_nothing() -> Result<(), BoxError> {
    let mut net = guests(3, None)?;
    let groups_before = net.fabric.stats().groups;
    join(&mut net, 0, GROUP_A)?;
    join(&mut net, 1, GROUP_A)?;
    // The third guest is in another group on the same partition.
    join(&mut net, 2, GROUP_B)?;
    let sockets: Vec<SocketHandle> = (0..3)
        .map(|g| udp_socket(&mut net, g, PORT))
        .collect::<Result<_, _>>()?;
    // Let the IGMP reports go out before counting the third guest's packets.
    net.run_for(Duration::from_millis(200))?;
    let rx_before = net.guests[2].device.stats().rx_packets;

    send(&mut net, 0, sockets[0], GROUP_A, b"from 0 to A");
    net.run_for(Duration::from_millis(100))?;
    send(&mut net, 1, sockets[1], GROUP_A, b"from 1 to A");
    net.run_for(Duration::from_millis(100))?;

    let at_0 = received(&mut net, 0, sockets[0]);
    let at_1 = received(&mut net, 1, sockets[1]);
    assert_eq!(
        at_1,
        [(b"from 0 to A".to_vec(), Some(IpAddress::Ipv4(GROUP_A)))]
    );
    // The sender's own copy is not looped back by the fabric.
    assert_eq!(
        at_0,
        [(b"from 1 to A".to_vec(), Some(IpAddress::Ipv4(GROUP_A)))]
    );
    assert!(received(&mut net, 2, sockets[2]).is_empty());
    assert_eq!(
        net.guests[2].device.stats().rx_packets,
        rx_before,
        "group A's traffic reached the non-member's port"
    );

    // Group B is the third guest's alone: a send-only member reaches it
    // and nobody else.
    send(&mut net, 0, sockets[0], GROUP_B, b"from 0 to B");
    net.run_for(Duration::from_millis(100))?;
    assert_eq!(
        received(&mut net, 2, sockets[2]),
        [(b"from 0 to B".to_vec(), Some(IpAddress::Ipv4(GROUP_B)))]
    );
    assert!(received(&mut net, 1, sockets[1]).is_empty());

    // A and B each got their own MGID on the fabric, beside the groups
    // the guests were already in (broadcast, IPv6 all-nodes and
    // solicited-node); nobody attached to the all-hosts group.
    assert_eq!(net.fabric.stats().groups, groups_before + 2);
    Ok(())
}

#[test]
fn a_member_that_leaves_stops_receiving() -> Result<(), BoxError> {
    let mut net = guests(2, None)?;
    join(&mut net, 0, GROUP_A)?;
    join(&mut net, 1, GROUP_A)?;
    let s0 = udp_socket(&mut net, 0, PORT)?;
    let s1 = udp_socket(&mut net, 1, PORT)?;
    send(&mut net, 0, s0, GROUP_A, b"one");
    net.run_for(Duration::from_millis(100))?;
    assert_eq!(received(&mut net, 1, s1).len(), 1);

    net.guests[1].leave_ipv4_group(GROUP_A)?;
    assert_eq!(net.guests[1].device.group_state(GROUP_A), None);
    net.run_for(Duration::from_millis(100))?;
    let rx_before = net.guests[1].device.stats().rx_packets;
    send(&mut net, 0, s0, GROUP_A, b"two");
    net.run_for(Duration::from_millis(100))?;
    assert!(received(&mut net, 1, s1).is_empty());
    assert_eq!(net.guests[1].device.stats().rx_packets, rx_before);
    assert_eq!(net.guests[1].device.stats().mcast.leaves, 1);
    Ok(())
}

#[test]
fn joins_are_checked_and_bounded() -> Result<(), BoxError> {
    let mut net = guests(1, None)?;
    let device = &mut net.guests[0].device;
    for bad in [
        Ipv4Address::new(10, 77, 0, 9),
        Ipv4Address::BROADCAST,
        Ipv4Address::UNSPECIFIED,
    ] {
        assert_eq!(
            device.join_ipv4_group(bad),
            Err(GroupError::NotMulticast(bad))
        );
    }
    assert_eq!(
        device.leave_ipv4_group(GROUP_A),
        Err(GroupError::NotJoined(GROUP_A))
    );
    for i in 0..MAX_GROUPS {
        device.join_ipv4_group(Ipv4Address::new(239, 9, 0, i as u8))?;
    }
    // Joining a group again costs nothing, a new one does not fit.
    device.join_ipv4_group(Ipv4Address::new(239, 9, 0, 0))?;
    assert_eq!(
        device.join_ipv4_group(Ipv4Address::new(239, 9, 1, 0)),
        Err(GroupError::TableFull)
    );
    assert_eq!(device.stats().mcast.joins, MAX_GROUPS as u64);
    net.run_until(Duration::from_secs(1), |n| {
        (0..MAX_GROUPS).all(|i| {
            n.guests[0]
                .device
                .group_state(Ipv4Address::new(239, 9, 0, i as u8))
                == Some(GroupState::Joined)
        })
    })?;
    Ok(())
}

/// A back end that restarts gives the guest a new device: the guest
/// attaches to its groups again and keeps receiving.
#[test]
fn groups_survive_a_back_end_restart() -> Result<(), BoxError> {
    let mut net = guests(2, None)?;
    join(&mut net, 1, GROUP_A)?;
    let s0 = udp_socket(&mut net, 0, PORT)?;
    let s1 = udp_socket(&mut net, 1, PORT)?;
    net.guests[1].restart_backend(7)?;
    net.run_until(Duration::from_secs(2), |n| {
        n.guests[1].device.link() == ipoib::LinkState::Up
            && n.guests[1].device.group_state(GROUP_A) == Some(GroupState::Joined)
    })?;
    send(&mut net, 0, s0, GROUP_A, b"after the restart");
    net.run_for(Duration::from_millis(100))?;
    assert_eq!(
        received(&mut net, 1, s1),
        [(
            b"after the restart".to_vec(),
            Some(IpAddress::Ipv4(GROUP_A))
        )]
    );
    Ok(())
}

/// Wireshark decodes the group traffic: the IGMP report and the datagram
/// to the group, each sent to the group's own MGID.
#[test]
fn tshark_decodes_igmp_and_group_traffic() -> Result<(), BoxError> {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("multicast.pcap");
    let capture = SharedCapture::create(&path)?;
    let mut net = guests(2, Some(capture.clone()))?;
    join(&mut net, 0, GROUP_A)?;
    join(&mut net, 1, GROUP_A)?;
    let s0 = udp_socket(&mut net, 0, PORT)?;
    let s1 = udp_socket(&mut net, 1, PORT)?;
    net.run_for(Duration::from_millis(200))?;
    send(&mut net, 0, s0, GROUP_A, b"captured");
    net.run_for(Duration::from_millis(100))?;
    assert_eq!(received(&mut net, 1, s1).len(), 1);
    capture.flush()?;
    let text = tshark::fields(
        &path,
        "igmp || udp.dstport == 5000",
        &["_ws.col.Protocol", "ip.dst", "igmp.maddr"],
    )?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("IGMPv2\t239.1.2.3\t239.1.2.3")),
        "no IGMPv2 report for the group: {text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("UDP\t239.1.2.3")),
        "no datagram to the group: {text}"
    );
    // The capture's link-layer destination is the group's MGID.
    let mgid = ipv4_multicast_mgid(PKey::DEFAULT, GROUP_A).to_string();
    let raw = std::fs::read(&path)?;
    let mgid_bytes = ipv4_multicast_mgid(PKey::DEFAULT, GROUP_A).0;
    assert!(
        raw.windows(16).any(|w| w == mgid_bytes),
        "the capture never names MGID {mgid}"
    );
    Ok(())
}
