//! [`ServerPort`]: a DHCP server as an endpoint of its own on the fabric.
//!
//! It is an ordinary IPoIB interface (an `IpoibDevice`, so it answers ARP
//! for its address) whose IPv4 packets it reads itself instead of through
//! smoltcp, because it needs what smoltcp does not keep: each datagram's
//! real source (the QPN and GID of the receive completion, which a guest
//! cannot forge). The caller maps that source to the one lease the client
//! behind it may have; a source with none gets no offer, and is logged.
//!
//! Everything read is untrusted: a malformed packet is dropped and counted,
//! and at most [`READ_BUDGET`] packets are handled per poll.

use smoltcp::phy::{ChecksumCapabilities, Device, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use ipoib::{Capture, DatagramSource, IpoibConfig, IpoibDevice, IpoibError, NoCapture};
use verbs_shim::Hca;

use super::log_limit::{held_text, LogLimit};
use super::server::{answer, Answer, SeatLease, Silence};
use super::wire::{DhcpRepr, MessageType, CLIENT_PORT, MAX_MESSAGE_LEN, SERVER_PORT};

/// Packets handled per poll.
pub const READ_BUDGET: usize = 64;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// What the server has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// DHCP messages from clients that parsed.
    pub requests: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// Clients at a port with no lease (a seat without `ip=`, a stranger).
    pub no_lease: u64,
    /// Packets to port 67 that are not well-formed DHCP over IPv4/UDP.
    pub malformed: u64,
    /// Well-formed messages that get no answer (see [`Silence`]).
    pub silent: u64,
    /// Replies that found no free TX slot.
    pub send_failures: u64,
}

/// The server's interface on the fabric.
pub struct ServerPort<H: Hca, C: Capture = NoCapture> {
    pub device: IpoibDevice<H, C>,
    address: Ipv4Cidr,
    stats: ServerStats,
    /// One log line a second per seat (and for all strangers together).
    logs: LogLimit,
}

/// A DHCP message to port 67, and where it came from.
struct Request {
    repr: DhcpRepr,
    source: DatagramSource,
}

impl<H: Hca> ServerPort<H> {
    /// Brings up IPoIB on `hca` at `address` (the server identifier).
    pub fn new(hca: H, address: Ipv4Cidr) -> Result<ServerPort<H>, IpoibError> {
        let device = IpoibDevice::new(hca, IpoibConfig::new(address))?;
        Ok(ServerPort::with_device(device))
    }
}

impl<H: Hca, C: Capture> ServerPort<H, C> {
    /// The server on a device already up; its address is the device's.
    pub fn with_device(device: IpoibDevice<H, C>) -> ServerPort<H, C> {
        let address = device.ipv4_cidr();
        ServerPort {
            device,
            address,
            stats: ServerStats::default(),
            logs: LogLimit::default(),
        }
    }

    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The server's own address.
    pub fn address(&self) -> Ipv4Address {
        self.address.address()
    }

    /// Services the device and answers what came in. `lease_for` names the
    /// lease of the client behind a source port, if it has one. Returns
    /// true if anything moved.
    pub fn poll(
        &mut self,
        now: Instant,
        lease_for: &mut dyn FnMut(&DatagramSource) -> Option<SeatLease>,
    ) -> Result<bool, IpoibError> {
        let mut busy = self.device.service(now)?;
        for _ in 0..READ_BUDGET {
            let Some((rx, _)) = self.device.receive(now) else {
                break;
            };
            busy = true;
            let source = rx.source();
            let parsed = rx.consume(|ip| parse_request(ip, source));
            let request = match parsed {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(()) => {
                    self.stats.malformed += 1;
                    continue;
                }
            };
            self.stats.requests += 1;
            self.handle(now, &request, lease_for);
        }
        busy |= self.device.service(now)?;
        Ok(busy)
    }

    fn handle(
        &mut self,
        now: Instant,
        request: &Request,
        lease_for: &mut dyn FnMut(&DatagramSource) -> Option<SeatLease>,
    ) {
        let src = &request.source;
        let kind = request.repr.message_type;
        let Some(lease) = lease_for(src) else {
            self.stats.no_lease += 1;
            if let Some(held) = self.logs.admit("", now) {
                log::warn!(
                    "dhcp: {kind:?} from qpn {:#x}{}: no seat with ip= at that port; no offer{}",
                    src.qpn.get(),
                    gid_text(src),
                    held_text(held)
                );
            }
            return;
        };
        let (repr, dst) = match answer(&request.repr, &lease, self.address()) {
            Answer::Reply { repr, dst } => (repr, dst),
            Answer::Silent(why) => {
                self.stats.silent += 1;
                let Some(held) = self.logs.admit(&lease.name, now) else {
                    return;
                };
                let held = held_text(held);
                match why {
                    Silence::Released | Silence::Declined => log::info!(
                        "dhcp: seat {} {} {}{held}",
                        lease.name,
                        if why == Silence::Released {
                            "released"
                        } else {
                            "declined"
                        },
                        lease.address.address()
                    ),
                    other => log::debug!("dhcp: seat {}: no answer ({other:?}){held}", lease.name),
                }
                return;
            }
        };
        if !self.send(now, &repr, dst) {
            self.stats.send_failures += 1;
            return;
        }
        match repr.message_type {
            MessageType::Offer => self.stats.offers += 1,
            MessageType::Ack => self.stats.acks += 1,
            MessageType::Nak => self.stats.naks += 1,
            _ => {}
        }
        let logged = matches!(repr.message_type, MessageType::Ack | MessageType::Nak);
        let Some(held) = logged.then(|| self.logs.admit(&lease.name, now)).flatten() else {
            return;
        };
        let held = held_text(held);
        if repr.message_type == MessageType::Ack {
            log::info!(
                "dhcp: lease {} to seat {} (qpn {:#x}), router {}, {} s{held}",
                lease.address,
                lease.name,
                src.qpn.get(),
                lease.router.map_or_else(
                    || alloc::string::String::from("none"),
                    |r| alloc::format!("{r}")
                ),
                lease.lease_secs
            );
        } else {
            log::warn!(
                "dhcp: NAK to seat {}: it asked for {}, its address is {}{held}",
                lease.name,
                request.repr.requested_ip.unwrap_or(request.repr.ciaddr),
                lease.address.address()
            );
        }
    }

    /// Wraps `repr` in UDP and IPv4 from the server to `dst` and queues it.
    fn send(&mut self, now: Instant, repr: &DhcpRepr, dst: Ipv4Address) -> bool {
        let src_addr = self.address();
        let dhcp_len = repr.buffer_len();
        let udp_len = UDP_HEADER + dhcp_len;
        // A reply (about 330 bytes of IPv4) does not fit an IB MTU of 256
        // (IPoIB MTU 252): it is not sent but counted, since a token once
        // taken sends whatever its buffer holds.
        if IPV4_HEADER + udp_len > self.device.mtu() {
            return false;
        }
        let Some(tx) = self.device.transmit(now) else {
            return false;
        };
        let ip = Ipv4Repr {
            src_addr,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let (src_ip, dst_ip) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(dst));
        tx.consume(IPV4_HEADER + udp_len, |buf| {
            if buf.len() < IPV4_HEADER + udp_len {
                return false;
            }
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut *buf), &caps);
            let udp = UdpRepr {
                src_port: SERVER_PORT,
                dst_port: CLIENT_PORT,
            };
            let mut ok = false;
            udp.emit(
                &mut UdpPacket::new_unchecked(&mut buf[IPV4_HEADER..]),
                &src_ip,
                &dst_ip,
                dhcp_len,
                |payload| ok = repr.emit(payload).is_ok(),
                &caps,
            );
            ok
        })
    }
}

/// A DHCP request in an IPv4 packet: `Ok(None)` for other traffic (not
/// UDP to port 67), `Err` for a malformed packet to port 67 or a malformed
/// IPv4 header.
fn parse_request(ip: &[u8], source: DatagramSource) -> Result<Option<Request>, ()> {
    let packet = Ipv4Packet::new_checked(ip).map_err(|_| ())?;
    let caps = ChecksumCapabilities::default();
    let ipv4 = Ipv4Repr::parse(&packet, &caps).map_err(|_| ())?;
    if ipv4.next_header != IpProtocol::Udp {
        return Ok(None);
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Ok(None);
    }
    let udp = UdpPacket::new_checked(packet.payload()).map_err(|_| ())?;
    if udp.dst_port() != SERVER_PORT {
        return Ok(None);
    }
    let (src, dst) = (
        IpAddress::Ipv4(ipv4.src_addr),
        IpAddress::Ipv4(ipv4.dst_addr),
    );
    UdpRepr::parse(&udp, &src, &dst, &caps).map_err(|_| ())?;
    if udp.src_port() != CLIENT_PORT || udp.payload().len() > MAX_MESSAGE_LEN {
        return Err(());
    }
    let repr = DhcpRepr::parse(udp.payload()).map_err(|_| ())?;
    Ok(Some(Request { repr, source }))
}

fn gid_text(src: &DatagramSource) -> alloc::string::String {
    match src.gid {
        Some(g) => alloc::format!(" gid {g}"),
        None => alloc::string::String::new(),
    }
}
