//! Connected mode (RFC 4755, issue 12) between in-process guests: each
//! through its own channel and back half, over the sim fabric with RC.
//! Two connected-mode guests move TCP in 64 KiB segments over RC; a
//! connected-mode guest and a datagram-only one (an old guest) still talk,
//! over UD, with TCP's MSS keeping segments within the smaller MTU.

use ibguest_testkit::apps::{ping, tcp_transfer, udp_echo_step, udp_socket};
use ibguest_testkit::{BoxError, GuestSpec, Net};
use ipoib::wire::HwAddr;
use ipoib::LinkState;
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::sim::FaultConfig;

const MIB: usize = 1024 * 1024;

fn net_of(specs: Vec<GuestSpec>, faults: FaultConfig) -> Result<Net, BoxError> {
    let mut net = Net::new(faults);
    for spec in specs {
        net.add(spec)?;
    }
    net.run_until(Duration::from_secs(1), |n| {
        n.guests.iter().all(|g| g.device.link() == LinkState::Up)
    })?;
    Ok(net)
}

#[test]
fn two_connected_guests_move_tcp_in_64k_segments_over_rc() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        GuestSpec::new(2).with_connected_mode(65520),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    for g in &net.guests {
        assert_eq!(g.device.mtu(), 65520);
        assert_ne!(g.device.hw_addr().flags & HwAddr::FLAG_CONNECTED_MODE, 0);
        assert!(g.device.stats().cm.enabled);
    }
    let b_ip = net.guests[1].spec.ipv4();
    ping(&mut net, 0, b_ip, 1, Duration::from_secs(5))?;
    let report = tcp_transfer(&mut net, 0, 1, 8 * MIB, 3, Duration::from_secs(600));
    if report.is_err() {
        for g in &net.guests {
            eprintln!(
                "{:?}\n{:?}\n{:?}",
                g.device.stats(),
                g.back.stats(),
                g.back.rc_held()
            );
        }
    }
    let report = report?;
    assert_eq!(report.bytes, 8 * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    let a = net.guests[0].device.stats().cm;
    let b = net.guests[1].device.stats().cm;
    // One connection each way, as Linux's IPoIB-CM: each end sends on
    // the one it opened (b's for its echo replies and ACKs) and accepts the
    // other's; each saw both established.
    assert_eq!((a.connects, a.accepted, a.established), (1, 1, 2), "{a:?}");
    assert_eq!((b.connects, b.accepted, b.established), (1, 1, 2), "{b:?}");
    // Most of the data went over RC, in packets far above the UD MTU.
    assert!(a.tx_bytes > 7 * MIB as u64, "{a:?}");
    assert!(a.tx_bytes / a.tx_packets > 16 * 1024, "{a:?}");
    // Big segments are written in place in a free big slot; when every
    // big slot is out they go through the scratch buffer (a copy at
    // flush). Here 128 of 225 went in place.
    assert!(a.tx_in_place * 3 >= a.tx_packets, "{a:?}");
    assert_eq!(b.rx_packets, a.tx_packets, "{b:?}");
    // And b's ACKs came back over RC too, not over UD.
    assert!(
        b.tx_packets > 0 && a.rx_packets == b.tx_packets,
        "{a:?}\n{b:?}"
    );
    assert_eq!(a.tx_too_big + a.tx_no_connection + a.tx_errors, 0, "{a:?}");
    // Every back half saw an honest guest.
    for g in &net.guests {
        assert_eq!(g.back.stats().total_violations(), 0);
        assert_eq!(g.back.rc_held(), Some((2, 0)));
    }
    // With the connection up, small packets to that neighbour follow the
    // big ones over it (an echo request), so none overtakes them.
    net.run_until(Duration::from_secs(1), |_| false).ok();
    let before = net.guests[0].device.stats().cm;
    ping(&mut net, 0, b_ip, 1, Duration::from_secs(5))?;
    let after = net.guests[0].device.stats().cm;
    assert_eq!(
        after.tx_packets,
        before.tx_packets + 1,
        "{before:?} {after:?}"
    );
    let bytes = after.tx_bytes - before.tx_bytes;
    assert!(bytes < 200, "one small packet: {bytes} bytes");
    Ok(())
}

#[test]
fn a_datagram_only_guest_still_talks_to_a_connected_one() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        // An old guest: it neither asks for connected mode nor advertises it.
        GuestSpec::new(2),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    assert_eq!(net.guests[0].device.mtu(), 65520);
    assert_eq!(net.guests[1].device.mtu(), 2044);
    assert_eq!(net.guests[1].device.hw_addr().flags, 0);
    let (a_ip, b_ip) = (net.guests[0].spec.ipv4(), net.guests[1].spec.ipv4());
    ping(&mut net, 0, b_ip, 1, Duration::from_secs(5))?;
    ping(&mut net, 1, a_ip, 2, Duration::from_secs(5))?;
    // TCP both ways: the datagram-only side's MSS keeps the connected
    // side's segments within 2044 bytes, so everything goes over UD.
    let there = tcp_transfer(&mut net, 0, 1, 2 * MIB, 5, Duration::from_secs(600))?;
    assert_eq!(there.sent_sha256, there.received_sha256);
    let back = tcp_transfer(&mut net, 1, 0, 2 * MIB, 6, Duration::from_secs(600))?;
    assert_eq!(back.sent_sha256, back.received_sha256);
    let a = net.guests[0].device.stats().cm;
    assert!(a.enabled);
    assert_eq!((a.connects, a.tx_packets, a.rx_packets), (0, 0, 0), "{a:?}");
    assert_eq!(a.tx_too_big, 0, "TCP never sent one too big: {a:?}");
    // A UDP datagram above the datagram MTU to the old guest: the
    // connected side cuts it into IPv4 fragments over UD (frag_tx, as any
    // packet above the datagram MTU), and the old guest puts it back
    // together.
    let server = udp_socket(&mut net, 1, 9)?;
    let client = udp_socket(&mut net, 0, 40000)?;
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    net.guests[0]
        .sockets
        .get_mut::<udp::Socket>(client)
        .send_slice(&big, IpEndpoint::new(IpAddress::Ipv4(b_ip), 9))?;
    let mut got = Vec::new();
    net.run_until(Duration::from_secs(2), |n| {
        let socket = n.guests[1].sockets.get_mut::<udp::Socket>(server);
        if let Ok((data, _)) = socket.recv() {
            got = data.to_vec();
        }
        !got.is_empty()
    })?;
    assert_eq!(got, big);
    let frag = net.guests[0].device.stats().frag_tx;
    assert_eq!((frag.datagrams, frag.fragments), (1, 2), "{frag:?}");
    assert_eq!(net.guests[0].device.stats().cm.tx_too_big, 0);
    // Small ones still go.
    ping(&mut net, 0, b_ip, 3, Duration::from_secs(5))?;
    assert_eq!(net.guests[1].back.rc_held(), None, "not agreed");
    Ok(())
}

#[test]
fn wire_faults_become_retransmissions_and_tcp_stays_whole() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        GuestSpec::new(2).with_connected_mode(65520),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    // Loss, duplication, reordering and corruption on every packet copy:
    // UD (ARP, ACKs) loses some, RC recovers all of its own.
    net.fabric
        .set_faults(FaultConfig::new(0x12, 0.1, 0.05, 0.05, 0.02)?);
    let report = tcp_transfer(&mut net, 0, 1, 8 * MIB, 9, Duration::from_secs(3600))?;
    assert_eq!(report.sent_sha256, report.received_sha256);
    let a = net.guests[0].device.stats().cm;
    let b = net.guests[1].device.stats().cm;
    assert!(a.tx_packets > 50, "{a:?}");
    assert_eq!(a.tx_packets, b.rx_packets, "RC lost nothing: {a:?} {b:?}");
    assert_eq!(a.broken + a.tx_errors, 0, "{a:?}");
    // The sim fabric's RC transport retransmitted and dropped duplicates.
    let rc = net.guests[0]
        .back
        .provider()
        .map(|p| p.rc_stats())
        .ok_or("no provider")?;
    let peer = net.guests[1]
        .back
        .provider()
        .map(|p| p.rc_stats())
        .ok_or("no provider")?;
    assert!(rc.retransmits > 10, "{rc:?}");
    assert!(peer.duplicates > 0, "{peer:?}");
    Ok(())
}

#[test]
fn tcp_over_rc_survives_a_backend_restart() -> Result<(), BoxError> {
    use ibguest_testkit::apps::tcp_transfer_with;
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        GuestSpec::new(2).with_connected_mode(65520),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    let mut restarted = false;
    let report = tcp_transfer_with(
        &mut net,
        0,
        1,
        8 * MIB,
        5,
        Duration::from_secs(300),
        |net, received| {
            if !restarted && received >= 2 * MIB {
                // Guest 0's back end dies mid-transfer; a new one (epoch 2)
                // takes the window over. Its RC connection dies with it.
                net.guests[0].restart_backend(2)?;
                restarted = true;
            }
            Ok(())
        },
    )?;
    assert!(restarted);
    assert_eq!(report.bytes, 8 * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    assert_eq!(net.guests[0].reattaches, 1);
    // The restarted side opened a new connection; the peer saw the old one
    // (the passive end) break.
    let a = net.guests[0].device.stats().cm;
    let b = net.guests[1].device.stats().cm;
    assert!(a.enabled && a.connects >= 1 && a.tx_packets > 0, "{a:?}");
    assert!(b.broken >= 1 && b.accepted >= 2, "{b:?}");
    assert_eq!(net.guests[0].back.stats().total_violations(), 0);
    assert_eq!(net.guests[1].back.stats().total_violations(), 0);
    Ok(())
}

#[test]
fn an_idle_connection_is_closed_and_opened_again_when_needed() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        GuestSpec::new(2).with_connected_mode(65520),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    let first = tcp_transfer(&mut net, 0, 1, MIB, 1, Duration::from_secs(60))?;
    assert_eq!(first.sent_sha256, first.received_sha256);
    // One connection each way (the receiver's ACKs opened the other).
    assert_eq!(net.guests[0].back.rc_held(), Some((2, 0)));
    // A quiet minute: both connections are closed at both ends, and both
    // back halves let go of them.
    net.run_until(Duration::from_secs(120), |n| {
        n.guests
            .iter()
            .all(|g| g.device.stats().cm.idle_closed == 1)
            && n.guests.iter().all(|g| g.back.rc_held() == Some((0, 0)))
    })?;
    // The next packets open new ones.
    let second = tcp_transfer(&mut net, 0, 1, MIB, 2, Duration::from_secs(60))?;
    assert_eq!(second.sent_sha256, second.received_sha256);
    let a = net.guests[0].device.stats().cm;
    assert_eq!(
        (a.connects, a.accepted, a.established, a.idle_closed),
        (2, 2, 4, 1),
        "{a:?}"
    );
    assert_eq!(net.guests[1].device.stats().cm.accepted, 2);
    Ok(())
}

#[test]
fn large_ipv6_to_a_datagram_only_guest_goes_in_fragments() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520).with_ip6(),
        GuestSpec::new(2).with_ip6(),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    let b6 = net.guests[1].spec.ip6.ok_or("no ip6")?.address();
    let server = udp_socket(&mut net, 1, 9)?;
    let client = udp_socket(&mut net, 0, 40000)?;
    let big: Vec<u8> = (0..5000u32).map(|i| (i * 11) as u8).collect();
    let mut got = Vec::new();
    // The first send may wait for neighbour discovery; send until one
    // arrives.
    for _ in 0..5 {
        net.guests[0]
            .sockets
            .get_mut::<udp::Socket>(client)
            .send_slice(&big, IpEndpoint::new(IpAddress::Ipv6(b6), 9))?;
        let _ = net.run_until(Duration::from_secs(2), |n| {
            let socket = n.guests[1].sockets.get_mut::<udp::Socket>(server);
            if let Ok((data, _)) = socket.recv() {
                got = data.to_vec();
            }
            !got.is_empty()
        });
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, big, "reassembled by the old guest's ipoib::frag6");
    let frag = net.guests[0].device.stats().frag_tx;
    assert!(frag.datagrams >= 1 && frag.fragments >= 3, "{frag:?}");
    assert!(net.guests[1].device.stats().frag6.reassembled >= 1);
    Ok(())
}

/// Runs `f` on a thread of its own; an error if it has not finished within
/// `secs` of real time (a livelocked device would otherwise hang the run).
fn within(
    secs: u64,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), BoxError> {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match wait.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(result) => Ok(result?),
        Err(_) => Err(format!("no answer within {secs} s of real time: livelock").into()),
    }
}

/// A connected-mode guest receiving a burst of fragmented datagrams from a
/// datagram-only one: its queue of reassembled datagrams fills, `service`
/// stops taking datagram completions (back-pressure) and goes on to the RC
/// ones with datagram answers waiting. `poll_rc` used to spin there for
/// ever (the stalled bulk TCP from a datagram-mode sender).
#[test]
fn a_connected_guest_under_datagram_back_pressure_keeps_going() -> Result<(), BoxError> {
    within(60, || {
        let run = || -> Result<(), BoxError> {
            let specs = vec![
                GuestSpec::new(1),
                GuestSpec::new(2).with_connected_mode(65520),
            ];
            let mut net = net_of(specs, FaultConfig::NONE)?;
            let echo = udp_socket(&mut net, 1, 7)?;
            let client = udp_socket(&mut net, 0, 40000)?;
            let to = IpEndpoint::new(IpAddress::Ipv4(net.guests[1].spec.ipv4()), 7);
            let datagram = |i: u8| -> Vec<u8> { (0..3000u32).map(|j| (j as u8) ^ i).collect() };
            for i in 0..10u8 {
                net.guests[0]
                    .sockets
                    .get_mut::<udp::Socket>(client)
                    .send_slice(&datagram(i), to)?;
            }
            let mut back = Vec::new();
            let _ = net.run_until(Duration::from_secs(3), |net| {
                udp_echo_step(net, 1, echo);
                let socket = net.guests[0].sockets.get_mut::<udp::Socket>(client);
                let mut buf = [0u8; 4096];
                while let Ok((n, _)) = socket.recv_slice(&mut buf) {
                    back.push(buf[..n].to_vec());
                }
                back.len() == 10
            });
            let b = net.guests[1].device.stats().frag4;
            assert_eq!(back.len(), 10, "{b:?}");
            for i in 0..10u8 {
                assert!(back.contains(&datagram(i)), "datagram {i}");
            }
            assert!(b.reassembled == 10 && b.queue_full == 0, "{b:?}");
            // Bulk TCP from the datagram-only side into the connected one.
            let report = tcp_transfer(&mut net, 0, 1, 4 * MIB, 7, Duration::from_secs(600))?;
            assert_eq!(report.sent_sha256, report.received_sha256);
            Ok(())
        };
        run().map_err(|e| e.to_string())
    })
}

/// Two connected-mode guests after a transfer, their connection still up
/// (short of the idle timeout): nothing keeps either busy. Every round
/// that did something, and every one where a guest's next timer was
/// already due (a hosted guest would not sleep), is counted.
#[test]
fn an_idle_connection_keeps_nobody_busy() -> Result<(), BoxError> {
    let specs = vec![
        GuestSpec::new(1).with_connected_mode(65520),
        GuestSpec::new(2).with_connected_mode(65520),
    ];
    let mut net = net_of(specs, FaultConfig::NONE)?;
    let report = tcp_transfer(&mut net, 0, 1, MIB, 4, Duration::from_secs(60))?;
    assert_eq!(report.sent_sha256, report.received_sha256);
    assert!(net.guests[0].device.stats().cm.tx_packets > 0);
    // Let the last ACKs and the socket close settle.
    net.run_for(Duration::from_secs(2))?;
    let (mut busy, mut due, mut rounds) = (0, 0, 0);
    let end = net.now + Duration::from_secs(40);
    while net.now < end {
        let now = net.now;
        if net
            .guests
            .iter_mut()
            .any(|g| g.poll_at(now).is_some_and(|t| t <= now))
        {
            due += 1;
        }
        let progress = net.round()?;
        busy += u32::from(progress);
        rounds += 1;
        net.advance(progress);
    }
    // The connections (one each way) are still there, both ends.
    for g in &net.guests {
        assert_eq!(g.back.rc_held(), Some((2, 0)));
    }
    assert_eq!(net.guests[0].device.stats().cm.idle_closed, 0);
    // And each would sleep: arming finds nothing waiting.
    for g in &mut net.guests {
        assert!(!g.device.arm()?, "guest {} has work waiting", g.spec.ipv4());
    }
    eprintln!("idle with a connection up: {busy} busy and {due} due of {rounds} rounds");
    // A few timers (ARP refresh, say) may fire; nothing polls on and on.
    assert!(
        busy <= 20 && due <= 20,
        "{busy} busy and {due} due of {rounds} rounds"
    );
    Ok(())
}
