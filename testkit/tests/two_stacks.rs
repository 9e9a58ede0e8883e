//! Must-show 1: two stacks on the sim fabric, each through its own
//! front/back channel: ARP, ICMP echo, UDP, and 16 MiB TCP transfers with and
//! without wire faults.

use ibguest_testkit::apps::{ping, tcp_transfer, udp_echo_step, udp_socket};
use ibguest_testkit::{BoxError, Net};
use ipoib::LinkState;
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::sim::FaultConfig;

const MIB: usize = 1024 * 1024;

fn two_guests(faults: FaultConfig) -> Result<Net, BoxError> {
    let mut net = Net::with_guests(2, faults)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests.iter().all(|g| g.device.link() == LinkState::Up)
    })?;
    Ok(net)
}

#[test]
fn arp_resolves_and_ping_answers() -> Result<(), BoxError> {
    let mut net = two_guests(FaultConfig::NONE)?;
    let b_ip = net.guests[1].spec.ipv4();
    ping(&mut net, 0, b_ip, 1, Duration::from_secs(5))?;
    let a = net.guests[0].device.stats();
    let b = net.guests[1].device.stats();
    // A asked for B, B answered; B learned A from the request itself.
    assert!(a.arp.requests_sent >= 1, "{a:?}");
    assert_eq!(a.arp.replies_received, 1, "{a:?}");
    // B heard A's request and A's announcement.
    assert_eq!(
        b.arp.requests_received,
        a.arp.requests_sent + a.arp.gratuitous_sent,
        "{b:?}"
    );
    assert_eq!(b.arp.replies_sent, 1, "{b:?}");
    assert!(b.arp.learned >= 1);
    // Both announced themselves when the link came up.
    assert_eq!(a.arp.gratuitous_sent, 1);
    // A second ping needs no more ARP.
    ping(&mut net, 0, b_ip, 2, Duration::from_secs(5))?;
    assert_eq!(
        net.guests[0].device.stats().arp.requests_sent,
        a.arp.requests_sent
    );
    // And the reverse direction is already resolved from the request.
    let a_ip = net.guests[0].spec.ipv4();
    ping(&mut net, 1, a_ip, 3, Duration::from_secs(5))?;
    assert_eq!(net.guests[1].device.stats().arp.requests_sent, 0);
    Ok(())
}

#[test]
fn ping_to_absent_address_times_out_and_counts() -> Result<(), BoxError> {
    let mut net = two_guests(FaultConfig::NONE)?;
    let nobody = smoltcp::wire::Ipv4Address::new(10, 77, 0, 99);
    assert!(ping(&mut net, 0, nobody, 1, Duration::from_secs(8)).is_err());
    let stats = net.guests[0].device.stats();
    assert_eq!(stats.arp.requests_sent, 3, "{stats:?}");
    assert_eq!(stats.arp.failures, 1, "{stats:?}");
    assert_eq!(stats.tx_drops.arp_timeout, 1, "{stats:?}");
    Ok(())
}

#[test]
fn udp_echo_round_trip() -> Result<(), BoxError> {
    let mut net = two_guests(FaultConfig::NONE)?;
    let server = udp_socket(&mut net, 1, 7)?;
    let client = udp_socket(&mut net, 0, 40000)?;
    let b = IpEndpoint::new(IpAddress::Ipv4(net.guests[1].spec.ipv4()), 7);
    let messages: Vec<Vec<u8>> = (0..50u32)
        .map(|i| (0..(i * 37 % 2000 + 1)).map(|j| (i + j) as u8).collect())
        .collect();
    for m in &messages {
        net.guests[0]
            .sockets
            .get_mut::<udp::Socket>(client)
            .send_slice(m, b)?;
    }
    let mut got = Vec::new();
    net.run_until(Duration::from_secs(5), |net| {
        udp_echo_step(net, 1, server);
        let socket = net.guests[0].sockets.get_mut::<udp::Socket>(client);
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = socket.recv_slice(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got.len() == messages.len()
    })?;
    assert_eq!(got, messages);
    Ok(())
}

#[test]
fn tcp_16mib_sha256_matches() -> Result<(), BoxError> {
    let mut net = two_guests(FaultConfig::NONE)?;
    let report = tcp_transfer(&mut net, 0, 1, 16 * MIB, 7, Duration::from_secs(600))?;
    assert_eq!(report.bytes, 16 * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    Ok(())
}

#[test]
fn tcp_16mib_sha256_matches_through_faults() -> Result<(), BoxError> {
    let faults = FaultConfig::new(0x1b_0b1b, 0.05, 0.02, 0.02, 0.01)?;
    let mut net = two_guests(FaultConfig::NONE)?;
    net.fabric.set_faults(faults);
    let report = tcp_transfer(&mut net, 0, 1, 16 * MIB, 11, Duration::from_secs(3600))?;
    assert_eq!(report.bytes, 16 * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    // The faults really happened.
    let f = net.fabric.stats();
    assert!(f.totals.fault_loss > 100, "{f:?}");
    assert!(f.totals.fault_dup > 50, "{f:?}");
    assert!(f.totals.fault_reorder > 50, "{f:?}");
    assert!(f.totals.drop_icrc > 20, "{f:?}");
    Ok(())
}

#[test]
fn tcp_survives_a_backend_restart() -> Result<(), BoxError> {
    use ibguest_testkit::apps::tcp_transfer_with;
    let mut net = two_guests(FaultConfig::NONE)?;
    let mut restarted = false;
    let report = tcp_transfer_with(
        &mut net,
        0,
        1,
        4 * MIB,
        5,
        Duration::from_secs(120),
        |net, received| {
            if !restarted && received >= MIB {
                // Guest 0's back end dies mid-transfer and a new one (new epoch)
                // takes over the same window.
                net.guests[0].restart_backend(2)?;
                restarted = true;
            }
            Ok(())
        },
    )?;
    assert!(restarted);
    assert_eq!(report.bytes, 4 * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    assert_eq!(net.guests[0].reattaches, 1);
    // The new port announced itself, so the peer learned its new QPN.
    assert!(net.guests[0].device.stats().arp.gratuitous_sent >= 2);
    Ok(())
}

/// Both guests' back ends restart at once (as one `ib-backend` does): both
/// ports come back with new QPNs. Each guest's neighbour cache held the
/// other's old QPN, and a guest that attached after its peer missed the
/// peer's announcement: its packets went to a QPN nobody had until the
/// entry expired (60 s; hosted transfers across a worker kill took 70 s in
/// about half the runs). The cache goes with the old device now.
#[test]
fn tcp_survives_a_restart_of_every_back_end_without_waiting_for_arp() -> Result<(), BoxError> {
    use ibguest_testkit::apps::tcp_transfer_with;
    let mut net = two_guests(FaultConfig::NONE)?;
    let mut restarted_at = None;
    let report = tcp_transfer_with(
        &mut net,
        0,
        1,
        4 * MIB,
        5,
        Duration::from_secs(120),
        |net, received| {
            if restarted_at.is_none() && received >= MIB {
                net.guests[0].restart_backend(2)?;
                net.guests[1].restart_backend(2)?;
                restarted_at = Some(net.now);
                // Guest 0 attaches again and announces its new QPN while
                // guest 1 is still away (it misses the announcement).
                for _ in 0..200 {
                    net.now += Duration::from_millis(1);
                    let now = net.now;
                    net.guests[0].poll(now)?;
                }
                assert_eq!(net.guests[0].reattaches, 1);
            }
            Ok(())
        },
    )?;
    let restarted_at = restarted_at.ok_or("no restart")?;
    assert_eq!(report.sent_sha256, report.received_sha256);
    assert_eq!((net.guests[0].reattaches, net.guests[1].reattaches), (1, 1));
    let took = net.now - restarted_at;
    assert!(
        took < Duration::from_secs(5),
        "{took} from the restart to the end of the transfer"
    );
    Ok(())
}
