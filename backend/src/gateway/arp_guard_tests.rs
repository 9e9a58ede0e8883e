//! The ARP guard on the sim fabric, in front of an `ipoib` device as the
//! gateway runs it: a port of a seat without `ip=` claims a registered
//! seat's address; the gateway's device never hears of it.

use std::error::Error;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipoib::wire::{ArpOperation, ArpPacket, ArpRepr, HwAddr};
use ipoib::{IpoibConfig, IpoibDevice, LinkState};
use smoltcp::time::Instant;
use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Packet, Ipv6Repr};
use verbs_shim::back::SenderPort;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{
    Completion, Gid, Hca, Lid, PKey, PortAttr, QKey, Qpn, RecvInfo, TxSlot, UdDest, Verbs, GRH_LEN,
};

use super::{arp_spoof, nd_spoof, ArpGuard};
use crate::config::{Attach, GuestConfig};
use crate::port_security::SeatDirectory;

type BoxError = Box<dyn Error>;

const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);
const SEAT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const FREE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

fn seat(ip: Option<Ipv4Addr>) -> GuestConfig {
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

/// An IPoIB ARP request frame (IPoIB header first) from `source_ip` at
/// `hw`, asking for the gateway.
fn arp_frame(source_ip: Ipv4Addr, hw: HwAddr) -> Vec<u8> {
    let mut frame = vec![0x08, 0x06, 0, 0];
    frame.resize(4 + 56, 0);
    let arp = ArpRepr {
        operation: ArpOperation::Request,
        source_hw: hw,
        source_ip: Ipv4Address::from(source_ip.octets()),
        target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
        target_ip: GATEWAY_IP,
    };
    assert!(arp
        .emit(&mut ArpPacket::new_unchecked(&mut frame[4..]))
        .is_ok());
    frame
}

/// A raw fabric port that sends hand-made frames to the gateway.
struct Raw {
    port: SimPort,
    tx: Vec<TxSlot>,
    dest: UdDest,
}

impl Raw {
    fn new(fabric: &SimFabric, n: u16, gateway: PortAttr) -> Result<Raw, BoxError> {
        let mut port = fabric.add_port(PortConfig::local(n, PKey::DEFAULT))?;
        let (tx, _) = port.take_slots().ok_or("slots taken")?;
        port.resolve(gateway.gid)?;
        let mut handle = None;
        while let Some(c) = port.poll_cq()? {
            if let Completion::Path { result, .. } = c {
                handle = result.ok();
            }
        }
        Ok(Raw {
            port,
            tx: tx.collect(),
            dest: UdDest {
                handle: handle.ok_or("no path")?,
                qpn: gateway.qpn,
                qkey: QKey::IPOIB_DEFAULT,
            },
        })
    }

    fn hw(&self) -> HwAddr {
        let a = self.port.port_attr();
        HwAddr::new(a.qpn, a.gid)
    }

    fn sender(&self) -> SenderPort {
        let a = self.port.port_attr();
        SenderPort {
            qpn: a.qpn,
            gid: a.gid,
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), BoxError> {
        while let Some(c) = self.port.poll_cq()? {
            if let Completion::Send { slot, .. } = c {
                self.tx.push(slot);
            }
        }
        let slot = self.tx.pop().ok_or("tx slot")?;
        self.port.buffers().tx.slot_mut(&slot)[..frame.len()].copy_from_slice(frame);
        self.port
            .post_send(slot, frame.len(), &self.dest)
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// The gateway's device over a guarded sim port, link up.
fn gateway(
    fabric: &SimFabric,
    directory: Arc<SeatDirectory>,
) -> Result<IpoibDevice<ArpGuard<SimPort>>, BoxError> {
    let port = fabric.add_port(PortConfig::local(1, PKey::DEFAULT))?;
    let guard = ArpGuard::new(port, Some(directory));
    let mut device = IpoibDevice::new(guard, IpoibConfig::new(Ipv4Cidr::new(GATEWAY_IP, 24)))?;
    for _ in 0..10 {
        device.service(Instant::ZERO)?;
    }
    assert_eq!(device.link(), LinkState::Up);
    Ok(device)
}

#[test]
fn only_the_seats_own_port_may_claim_its_address_to_the_gateway() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let directory = SeatDirectory::for_guests(&[seat(Some(SEAT_IP))]);
    let mut device = gateway(&fabric, Arc::clone(&directory))?;
    let gw = device.hca().port_attr();
    // The seat's port, and a port of a seat without ip=.
    let mut honest = Raw::new(&fabric, 2, gw)?;
    let mut attacker = Raw::new(&fabric, 3, gw)?;
    directory.register(SEAT_IP, honest.sender());

    // The attacker claims the seat's address with its own (true) hardware
    // address, which the device's own check would accept.
    attacker.send(&arp_frame(SEAT_IP, attacker.hw()))?;
    device.service(Instant::ZERO)?;
    let stats = device.stats();
    assert_eq!(device.hca().dropped(), 1);
    assert_eq!(stats.arp.requests_received, 0, "the device never saw it");
    assert_eq!(stats.arp.learned, 0);
    assert_eq!(stats.rx_drops.error_status, 0, "the slot went back quietly");

    // The seat itself is believed.
    honest.send(&arp_frame(SEAT_IP, honest.hw()))?;
    device.service(Instant::ZERO)?;
    let stats = device.stats();
    assert_eq!(stats.arp.requests_received, 1);
    assert_eq!(stats.arp.learned, 1);

    // An address no seat has is anyone's to claim, as before.
    attacker.send(&arp_frame(FREE_IP, attacker.hw()))?;
    device.service(Instant::ZERO)?;
    assert_eq!(device.stats().arp.requests_received, 2);
    assert_eq!(device.hca().dropped(), 1);

    // The slots the guard reposted keep working: a burst of spoofs, more
    // than the gateway has receive slots, all dropped, then the seat again.
    let rx = usize::from(device.hca().layout().rx_count);
    for _ in 0..rx + 8 {
        attacker.send(&arp_frame(SEAT_IP, attacker.hw()))?;
        device.service(Instant::ZERO)?;
    }
    assert_eq!(device.hca().dropped(), 1 + rx as u64 + 8);
    honest.send(&arp_frame(SEAT_IP, honest.hw()))?;
    device.service(Instant::ZERO)?;
    assert_eq!(device.stats().arp.requests_received, 3);
    Ok(())
}

fn info(src_qpn: Qpn, grh_present: bool) -> RecvInfo {
    RecvInfo {
        byte_len: 0,
        src_qpn,
        src_lid: Lid(3),
        pkey: PKey::DEFAULT,
        grh_present,
        multicast: false,
    }
}

/// A receive buffer: a GRH from `sgid`, then `frame`.
fn buffer(sgid: Gid, frame: &[u8]) -> Vec<u8> {
    let mut data = ipoib::wire::build_grh(&sgid, &Gid::ZERO, frame.len() as u16).to_vec();
    assert_eq!(data.len(), GRH_LEN);
    data.extend_from_slice(frame);
    data
}

#[test]
fn the_rule_on_hand_made_buffers() {
    let directory = SeatDirectory::for_guests(&[seat(Some(SEAT_IP))]);
    let seat_port = SenderPort {
        qpn: Qpn::new_truncated(0x49),
        gid: Gid::from_parts(0xfe80 << 48, 2),
    };
    let other = HwAddr::new(Qpn::new_truncated(0x4a), Gid::from_parts(0xfe80 << 48, 3));
    // Not yet registered: nobody may claim the seat's address.
    let data = buffer(other.gid, &arp_frame(SEAT_IP, other));
    assert_eq!(
        arp_spoof(&directory, &data, &info(other.qpn, true)),
        Some(SEAT_IP)
    );
    directory.register(SEAT_IP, seat_port);
    assert_eq!(
        arp_spoof(&directory, &data, &info(other.qpn, true)),
        Some(SEAT_IP)
    );
    // The seat's own port, with or without a GRH.
    let own = HwAddr::new(seat_port.qpn, seat_port.gid);
    let data = buffer(seat_port.gid, &arp_frame(SEAT_IP, own));
    assert_eq!(
        arp_spoof(&directory, &data, &info(seat_port.qpn, true)),
        None
    );
    assert_eq!(
        arp_spoof(&directory, &data, &info(seat_port.qpn, false)),
        None
    );
    // The seat's QPN from another GID is not the seat.
    let data = buffer(other.gid, &arp_frame(SEAT_IP, own));
    assert_eq!(
        arp_spoof(&directory, &data, &info(seat_port.qpn, true)),
        Some(SEAT_IP)
    );
    // Other addresses, IPv4 and malformed ARP are not the guard's business.
    let data = buffer(other.gid, &arp_frame(FREE_IP, other));
    assert_eq!(arp_spoof(&directory, &data, &info(other.qpn, true)), None);
    let mut ipv4 = vec![0x08, 0x00, 0, 0, 0x45];
    ipv4.resize(4 + 20, 0);
    let data = buffer(other.gid, &ipv4);
    assert_eq!(arp_spoof(&directory, &data, &info(other.qpn, true)), None);
    let data = buffer(other.gid, &arp_frame(SEAT_IP, other)[..30]);
    assert_eq!(arp_spoof(&directory, &data, &info(other.qpn, true)), None);
    assert_eq!(
        arp_spoof(&directory, &data[..10], &info(other.qpn, true)),
        None
    );
}

const SEAT_IP6: Ipv6Address = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const GATEWAY_IP6: Ipv6Address = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);

fn seat6() -> GuestConfig {
    GuestConfig {
        ip6: Some(std::net::Ipv6Addr::from(SEAT_IP6.octets())),
        ..seat(None)
    }
}

/// An IPoIB frame with a neighbour advertisement for `target` at `hw`,
/// from `src` to the gateway.
fn advert_frame(src: Ipv6Address, target: Ipv6Address, hw: HwAddr) -> Vec<u8> {
    use ipoib::wire::{NdKind, NdRepr};
    let nd = NdRepr {
        kind: NdKind::Advert {
            router: false,
            solicited: false,
            override_: true,
        },
        target,
        lla: Some(hw),
    };
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: GATEWAY_IP6,
        next_header: IpProtocol::Icmpv6,
        payload_len: nd.buffer_len(),
        hop_limit: 255,
    };
    let mut frame = vec![0x86, 0xdd, 0, 0];
    frame.resize(4 + 40 + nd.buffer_len(), 0);
    let mut packet = Ipv6Packet::new_unchecked(&mut frame[4..]);
    ip.emit(&mut packet);
    assert!(nd.emit(packet.payload_mut(), &src, &GATEWAY_IP6).is_ok());
    frame
}

#[test]
fn only_the_seats_own_port_may_advertise_its_ipv6_address() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let directory = SeatDirectory::for_guests(&[seat6()]);
    let port = fabric.add_port(PortConfig::local(1, PKey::DEFAULT))?;
    let guard = ArpGuard::new(port, Some(Arc::clone(&directory)));
    let config = IpoibConfig::new(Ipv4Cidr::new(GATEWAY_IP, 24))
        .with_ipv6(smoltcp::wire::Ipv6Cidr::new(GATEWAY_IP6, 64));
    let mut device = IpoibDevice::new(guard, config)?;
    for _ in 0..10 {
        device.service(Instant::ZERO)?;
    }
    let gw = device.hca().port_attr();
    let mut honest = Raw::new(&fabric, 2, gw)?;
    let mut attacker = Raw::new(&fabric, 3, gw)?;
    directory.register6(std::net::Ipv6Addr::from(SEAT_IP6.octets()), honest.sender());
    let attacker_ll = ipoib::wire::ipv6::link_local(&attacker.hw().gid);
    // The attacker advertises the seat's address with its own (true)
    // link-layer address, which the device's own check would accept.
    attacker.send(&advert_frame(attacker_ll, SEAT_IP6, attacker.hw()))?;
    device.service(Instant::ZERO)?;
    assert_eq!(device.hca().dropped_nd(), 1, "{:?}", device.stats());
    assert_eq!(
        device.stats().nd.adverts_received,
        0,
        "the device never saw it"
    );
    // The seat's own port is believed.
    let honest_ll = ipoib::wire::ipv6::link_local(&honest.hw().gid);
    honest.send(&advert_frame(honest_ll, SEAT_IP6, honest.hw()))?;
    device.service(Instant::ZERO)?;
    assert_eq!(device.stats().nd.adverts_received, 1);
    assert_eq!(device.hca().dropped_nd(), 1);
    Ok(())
}

#[test]
fn the_nd_rule_on_hand_made_buffers() {
    let directory = SeatDirectory::for_guests(&[seat6()]);
    let seat_port = SenderPort {
        qpn: Qpn::new_truncated(0x49),
        gid: Gid::from_parts(0xfe80 << 48, 2),
    };
    directory.register6(std::net::Ipv6Addr::from(SEAT_IP6.octets()), seat_port);
    let own = HwAddr::new(seat_port.qpn, seat_port.gid);
    let other = HwAddr::new(Qpn::new_truncated(0x4a), Gid::from_parts(0xfe80 << 48, 3));
    let ll = |hw: HwAddr| ipoib::wire::ipv6::link_local(&hw.gid);
    let seat_ip6 = std::net::Ipv6Addr::from(SEAT_IP6.octets());
    // Another port advertising the seat's address, or sending from it.
    let data = buffer(other.gid, &advert_frame(ll(other), SEAT_IP6, other));
    assert_eq!(
        nd_spoof(&directory, &data, &info(other.qpn, true)),
        Some(seat_ip6)
    );
    let free = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 9);
    let data = buffer(other.gid, &advert_frame(SEAT_IP6, free, other));
    assert_eq!(
        nd_spoof(&directory, &data, &info(other.qpn, true)),
        Some(seat_ip6)
    );
    // The seat itself, and another port about an address no seat has.
    let data = buffer(seat_port.gid, &advert_frame(ll(own), SEAT_IP6, own));
    assert_eq!(
        nd_spoof(&directory, &data, &info(seat_port.qpn, true)),
        None
    );
    let data = buffer(other.gid, &advert_frame(ll(other), free, other));
    assert_eq!(nd_spoof(&directory, &data, &info(other.qpn, true)), None);
    // The seat's port about somebody else's address: a seat with ip6= has
    // only its own.
    let data = buffer(seat_port.gid, &advert_frame(ll(own), free, own));
    assert_eq!(
        nd_spoof(&directory, &data, &info(seat_port.qpn, true)),
        Some(std::net::Ipv6Addr::from(free.octets()))
    );
    // Truncated: not the guard's business.
    let data = buffer(other.gid, &advert_frame(ll(other), SEAT_IP6, other)[..50]);
    assert_eq!(nd_spoof(&directory, &data, &info(other.qpn, true)), None);
}
