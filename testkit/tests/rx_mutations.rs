//! Property: whatever bytes land in a guest's RX slot, the guest neither
//! panics nor stops working. Honest frames (ARP request, ICMP echo, UDP,
//! TCP SYN) are mutated at random offsets (and cut or padded) and sent to
//! a guest from a raw fabric port, so the device's validation, its ARP
//! handling and smoltcp's parsers all see them from the RX slot; then an
//! honest ping must still be answered.

use ibguest_testkit::apps::ping;
use ibguest_testkit::{BoxError, Net, RawSender};
use ipoib::wire::{ArpOperation, ArpPacket, ArpRepr, HwAddr};
use proptest::prelude::*;
use smoltcp::time::Duration;
use smoltcp::wire::Ipv4Address;
use verbs_shim::sim::FaultConfig;
use verbs_shim::{Gid, Qpn};

const GUEST: [u8; 4] = [10, 77, 0, 1];
const SENDER: [u8; 4] = [10, 77, 0, 9];

/// An IPv4 header (checksum filled in) before `rest`, IPoIB header first.
fn ipv4_frame(protocol: u8, rest: &[u8]) -> Vec<u8> {
    let total = 20 + rest.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        protocol,
        0,
        0,
    ];
    ip.extend_from_slice(&SENDER);
    ip.extend_from_slice(&GUEST);
    let sum = !ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .fold(0u32, |a, b| {
            let s = a + b;
            (s & 0xffff) + (s >> 16)
        }) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![0x08, 0x00, 0, 0];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(rest);
    frame
}

fn base_frame(kind: u8, sender: HwAddr) -> Vec<u8> {
    match kind % 4 {
        0 => {
            let mut frame = vec![0x08, 0x06, 0, 0];
            frame.resize(4 + 56, 0);
            let arp = ArpRepr {
                operation: ArpOperation::Request,
                source_hw: sender,
                source_ip: Ipv4Address::from(SENDER),
                target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
                target_ip: Ipv4Address::from(GUEST),
            };
            let _ = arp.emit(&mut ArpPacket::new_unchecked(&mut frame[4..]));
            frame
        }
        1 => ipv4_frame(1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]),
        2 => ipv4_frame(17, &[0x30, 0x39, 0, 7, 0, 12, 0, 0, b'a', b'b', b'c', b'd']),
        _ => ipv4_frame(
            6,
            &[
                0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0,
            ],
        ),
    }
}

fn mutate_and_send(kind: u8, mutations: &[(u16, u8)], resize: Option<u16>) -> Result<(), BoxError> {
    let mut net = Net::with_guests(1, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests[0].device.link() == ipoib::LinkState::Up
    })?;
    let mut raw = RawSender::new(&mut net, 9)?;
    let mut frame = base_frame(kind, raw.own_hw());
    if let Some(len) = resize {
        frame.resize(usize::from(len % 2044).max(1), 0x5a);
    }
    for &(at, byte) in mutations {
        let i = usize::from(at) % frame.len();
        frame[i] = byte;
    }
    raw.send(&mut net, &frame)?;
    net.run_for(Duration::from_millis(50))?;
    // Still a working guest: an honest ping from another guest is answered.
    let mut net2 = net;
    net2.add(ibguest_testkit::GuestSpec::new(2))?;
    net2.run_until(Duration::from_secs(1), |n| {
        n.guests[1].device.link() == ipoib::LinkState::Up
    })?;
    let ip1 = net2.guests[0].spec.ipv4();
    ping(&mut net2, 1, ip1, 1, Duration::from_secs(5))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn mutated_rx_slots_never_break_the_guest(
        kind in 0u8..4,
        mutations in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..12),
        resize in proptest::option::weighted(0.2, any::<u16>()),
    ) {
        let result = mutate_and_send(kind, &mutations, resize);
        prop_assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
    }
}
