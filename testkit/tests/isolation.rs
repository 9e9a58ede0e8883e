//! Must-show 2: partitions, Q_Keys and the MTU are enforced.

use ibguest_testkit::apps::ping;
use ibguest_testkit::{connect_channel, BoxError, GuestSpec, Net};
use ipoib::LinkState;
use smoltcp::time::Duration;
use verbs_shim::sim::FaultConfig;
use verbs_shim::{Completion, Hca, PKey, QKey, UdDest, Verbs, WcStatus};

fn up(net: &mut Net) -> Result<(), BoxError> {
    net.run_until(Duration::from_secs(1), |n| {
        n.guests.iter().all(|g| g.device.link() == LinkState::Up)
    })
}

fn port_stats(net: &Net, g: usize) -> verbs_shim::sim::PortStats {
    net.guests[g]
        .back
        .provider()
        .map(|p| p.stats())
        .unwrap_or_default()
}

#[test]
fn different_partitions_cannot_reach_each_other() -> Result<(), BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    net.add(GuestSpec::new(1).with_pkey(PKey(0x8001)))?;
    net.add(GuestSpec::new(2).with_pkey(PKey(0x8002)))?;
    net.add(GuestSpec::new(3).with_pkey(PKey(0x8001)))?;
    up(&mut net)?;
    let ip2 = net.guests[1].spec.ipv4();
    let ip3 = net.guests[2].spec.ipv4();
    assert!(ping(&mut net, 0, ip2, 1, Duration::from_secs(5)).is_err());
    // The ARP request went to partition 0x0001's broadcast group only.
    assert_eq!(net.guests[1].device.stats().arp.requests_received, 0);
    assert_eq!(net.guests[0].device.stats().arp.failures, 1);
    // Within the partition all is well.
    ping(&mut net, 0, ip3, 2, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn limited_members_reach_full_members_but_not_each_other() -> Result<(), BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    net.add(GuestSpec::new(1).with_pkey(PKey(0x0005)))?; // limited
    net.add(GuestSpec::new(2).with_pkey(PKey(0x0005)))?; // limited
    net.add(GuestSpec::new(3).with_pkey(PKey(0x8005)))?; // full
    up(&mut net)?;
    let ip2 = net.guests[1].spec.ipv4();
    let ip3 = net.guests[2].spec.ipv4();
    assert!(ping(&mut net, 0, ip2, 1, Duration::from_secs(5)).is_err());
    assert!(
        port_stats(&net, 1).drop_pkey > 0,
        "{:?}",
        port_stats(&net, 1)
    );
    ping(&mut net, 0, ip3, 2, Duration::from_secs(5))?;
    ping(&mut net, 2, ip2, 3, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn wrong_qkey_is_dropped_and_counted() -> Result<(), BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    net.add(GuestSpec::new(1).with_qkey_override(QKey(0x1234)))?;
    net.add(GuestSpec::new(2))?;
    up(&mut net)?;
    let ip2 = net.guests[1].spec.ipv4();
    assert!(ping(&mut net, 0, ip2, 1, Duration::from_secs(5)).is_err());
    let stats = port_stats(&net, 1);
    // Everything A sent (announcement, ARP, echo request) was refused at
    // B's QP, and counted there.
    let a_sent = net.guests[0].device.stats().tx_packets;
    assert!(a_sent >= 2);
    assert_eq!(stats.drop_qkey, a_sent, "{stats:?}");
    assert_eq!(stats.rx_packets, 0, "{stats:?}");
    assert_eq!(net.guests[1].device.stats().arp.requests_received, 0);
    Ok(())
}

#[test]
fn oversize_send_fails_cleanly_through_the_channel() -> Result<(), BoxError> {
    let net = Net::new(FaultConfig::NONE);
    let (_wa, mut back_a, mut a) = connect_channel(&net.fabric, &GuestSpec::new(1))?;
    let (_wb, mut back_b, mut b) = connect_channel(&net.fabric, &GuestSpec::new(2))?;
    let (mut tx, _) = a.take_slots().ok_or("slots")?;
    let (_, mut rx) = b.take_slots().ok_or("slots")?;
    b.post_recv(rx.next().ok_or("rx slot")?)
        .map_err(|e| e.error)?;
    b.flush()?;
    a.resolve(b.port_attr().gid)?;
    a.flush()?;
    let mut handle = None;
    for _ in 0..10 {
        back_a.service()?;
        back_b.service()?;
        while let Some(c) = a.poll_cq()? {
            if let Completion::Path { result, .. } = c {
                handle = Some(result.map_err(|e| format!("{e:?}"))?);
            }
        }
    }
    let dest = UdDest {
        handle: handle.ok_or("no path")?,
        qpn: b.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    // 2049 bytes on a 2048 path MTU.
    let slot = tx.next().ok_or("tx slot")?;
    a.buffers().tx.slot_mut(&slot)[..4].copy_from_slice(b"big!");
    a.post_send(slot, 2049, &dest).map_err(|e| e.error)?;
    // Exactly the MTU is fine.
    let slot = tx.next().ok_or("tx slot")?;
    a.post_send(slot, 2048, &dest).map_err(|e| e.error)?;
    a.flush()?;
    back_a.service()?;
    back_b.service()?;
    let mut statuses = Vec::new();
    while let Some(c) = a.poll_cq()? {
        if let Completion::Send { slot, status } = c {
            statuses.push((slot.index(), status));
        }
    }
    assert_eq!(
        statuses,
        [(0, WcStatus::LocalLength), (1, WcStatus::Success)]
    );
    assert_eq!(back_a.provider().ok_or("port")?.stats().oversize, 1);
    let mut received = Vec::new();
    while let Some(c) = b.poll_cq()? {
        if let Completion::Recv { info, .. } = c {
            received.push(info.byte_len);
        }
    }
    assert_eq!(received, [40 + 2048]);
    assert_eq!(back_a.stats().total_violations(), 0);
    Ok(())
}
