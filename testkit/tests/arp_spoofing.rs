//! A guest learns a neighbour from ARP only when the ARP's sender hardware
//! address is the datagram's real source (the QPN of the receive completion
//! and the GID of the GRH). A raw port on the fabric sends ARP packets to a
//! healthy guest: lies are dropped and counted, the truth is learnt.

use ibguest_testkit::apps::ping;
use ibguest_testkit::{BoxError, Net, RawSender};
use ipoib::wire::{ArpOperation, ArpPacket, ArpRepr, EncapPacket, EncapRepr, EtherType, HwAddr};
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;
use verbs_shim::sim::FaultConfig;
use verbs_shim::{Gid, Qpn};

const ARP_FRAME_LEN: usize = 4 + 56;

fn two_guests_up() -> Result<Net, BoxError> {
    let mut net = Net::with_guests(2, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    Ok(net)
}

/// An IPoIB ARP frame carrying `arp`.
fn arp_frame(arp: &ArpRepr) -> Result<Vec<u8>, BoxError> {
    let mut frame = vec![0u8; ARP_FRAME_LEN];
    let mut packet = EncapPacket::new_unchecked(&mut frame[..]);
    EncapRepr {
        ethertype: EtherType::Arp,
    }
    .emit(&mut packet)?;
    arp.emit(&mut ArpPacket::new_unchecked(packet.payload_mut()))?;
    Ok(frame)
}

fn reply(source_hw: HwAddr, source_ip: Ipv4Address, net: &Net) -> ArpRepr {
    ArpRepr {
        operation: ArpOperation::Reply,
        source_hw,
        source_ip,
        target_hw: net.guests[0].device.hw_addr(),
        target_ip: net.guests[0].spec.ipv4(),
    }
}

#[test]
fn spoofed_arp_does_not_poison_the_neighbour_table() -> Result<(), BoxError> {
    let mut net = two_guests_up()?;
    let ip2 = net.guests[1].spec.ipv4();
    ping(&mut net, 0, ip2, 1, Duration::from_secs(5))?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let before = net.guests[0].device.stats();
    let real = raw.own_hw();
    // Claims guest 2's address with a QPN the sender does not have.
    let other_qpn = HwAddr::new(Qpn::new_truncated(real.qpn.get() ^ 0x55), real.gid);
    let lie = reply(other_qpn, ip2, &net);
    raw.send(&mut net, &arp_frame(&lie)?)?;
    // The sender's own QPN, but another GID.
    let other_gid = HwAddr::new(real.qpn, Gid::from_parts(0xfe80 << 48, 0x77));
    let lie = reply(other_gid, ip2, &net);
    raw.send(&mut net, &arp_frame(&lie)?)?;
    let after = net.guests[0].device.stats();
    assert_eq!(after.rx_drops.arp_spoofed, before.rx_drops.arp_spoofed + 2);
    assert_eq!(after.arp.learned, before.arp.learned);
    assert_eq!(after.arp.replies_received, before.arp.replies_received);
    // Guest 1 still reaches guest 2 at its real address.
    ping(&mut net, 0, ip2, 2, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn honest_arp_is_learnt_and_answered() -> Result<(), BoxError> {
    let mut net = two_guests_up()?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let before = net.guests[0].device.stats();
    let request = ArpRepr {
        operation: ArpOperation::Request,
        source_hw: raw.own_hw(),
        source_ip: Ipv4Address::new(10, 77, 0, 9),
        target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
        target_ip: net.guests[0].spec.ipv4(),
    };
    raw.send(&mut net, &arp_frame(&request)?)?;
    let after = net.guests[0].device.stats();
    assert_eq!(after.rx_drops.arp_spoofed, before.rx_drops.arp_spoofed);
    assert_eq!(
        after.arp.requests_received,
        before.arp.requests_received + 1
    );
    assert_eq!(after.arp.learned, before.arp.learned + 1);
    assert_eq!(after.arp.replies_sent, before.arp.replies_sent + 1);
    Ok(())
}
