//! The gateway: makes the fabric a routed IPv4 (and IPv6) subnet for Linux.
//!
//! On the fabric it is an ordinary IPoIB endpoint (its own port, ARP, the
//! `ipoib` device) with the Linux host's address, so guests reach Linux as a
//! neighbour and everything beyond it through `gw=`. On the Linux side it is
//! a TAP interface carrying that address; the gateway answers ARP there for
//! every other address of the subnet (proxy ARP), so Linux reaches each guest
//! directly. Linux `ping`, `curl` and `iperf3` then talk to guests.
//!
//! With an IPv6 prefix (`--gateway ibgw0=10.77.0.1/24,fd77::1/64`) the same
//! holds for IPv6: the gateway's device has Linux's IPv6 address on the
//! fabric and does neighbour discovery there, and on the TAP it answers
//! Linux's neighbour solicitations for the rest of the prefix (proxy ND, the
//! `proxy_nd` module).

mod arp_guard;
mod proxy_nd;
#[allow(unsafe_code)]
mod tap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipoib::{DatagramSource, IpoibConfig, IpoibDevice, LinkState};
use ivshmem::EventFd;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv6Address, Ipv6Cidr, Ipv6Packet,
};
use verbs_shim::PKey;

use crate::config::GatewayConfig;
use crate::port_security::SeatDirectory;
use crate::provider::{Fabric, Port, ProviderError};
use arp_guard::ArpGuard;
use proxy_nd::{FromLinux, ProxyNd};
use tap::Tap;

/// The MAC the gateway answers with on the TAP (locally administered).
const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0x1b, 0x0b, 0x1b, 0x00, 0x01]);
const MAX_FRAME: usize = 14 + 4096;

/// Counters, readable by the control socket.
#[derive(Clone, Copy, Default, Debug)]
pub struct GatewayStats {
    pub up: bool,
    pub to_fabric: u64,
    pub to_linux: u64,
    pub arp_proxied: u64,
    /// Neighbour solicitations from Linux answered for the fabric's IPv6
    /// prefix.
    pub nd_proxied: u64,
    /// Frames from Linux that could not be sent (no TX slot, not IPv4/ARP/
    /// IPv6, malformed IPv6).
    pub dropped_from_linux: u64,
    /// Packets for Linux before Linux had said who it is.
    pub dropped_to_linux: u64,
    /// Packets for Linux whose IPv4 source disagrees with the seat they
    /// came from (port security; see [`SeatDirectory::admits`]).
    pub dropped_spoofed: u64,
    /// ARP packets from the fabric whose sender address is a seat's but
    /// that did not come from that seat's port, dropped before the
    /// gateway's device could learn from them (see the `arp_guard` module).
    pub dropped_spoofed_arp: u64,
    /// Neighbour solicitations and advertisements from the fabric that
    /// claim a seat's `ip6=` but did not come from that seat's port.
    pub dropped_spoofed_nd: u64,
}

pub type SharedGatewayStats = Arc<Mutex<GatewayStats>>;

pub struct Gateway {
    config: GatewayConfig,
    tap: Tap,
    device: IpoibDevice<ArpGuard<Port>>,
    wake: Arc<EventFd>,
    linux_mac: Option<EthernetAddress>,
    stats: SharedGatewayStats,
    origin: std::time::Instant,
    /// Seats' addresses and ports; `None` believes every source.
    directory: Option<Arc<SeatDirectory>>,
    /// The IPv6 prefix and proxy ND, when the gateway has one.
    proxy_nd: Option<ProxyNd>,
}

/// Why the gateway could not start.
pub type GatewayError = Box<dyn std::error::Error + Send + Sync>;

impl Gateway {
    /// Creates the TAP and the gateway's port. Needs CAP_NET_ADMIN.
    pub fn start(
        config: &GatewayConfig,
        fabric: &Fabric,
        port_number: u16,
        mtu: verbs_shim::IbMtu,
    ) -> Result<Gateway, GatewayError> {
        let tap = Tap::create(&config.tap)?;
        let wake = Arc::new(EventFd::new()?);
        let port = fabric
            .open_gateway_port(port_number, PKey::DEFAULT, mtu, wake.clone())
            .map_err(|ProviderError(e)| e)?;
        let cidr = Ipv4Cidr::new(config.address, config.prefix);
        let cidr6 = config
            .ipv6
            .map(|(a, p)| Ipv6Cidr::new(Ipv6Address::from(a.octets()), p));
        let mut ipoib = IpoibConfig::new(cidr);
        ipoib.ipv6 = cidr6;
        let device = IpoibDevice::new(ArpGuard::new(port, None), ipoib)
            .map_err(|e| format!("gateway: {e}"))?;
        tap.configure(config.address, config.prefix, device.mtu())?;
        if let Some((a, p)) = config.ipv6 {
            tap.configure6(a, p)?;
        }
        log::info!(
            "gateway: {} is {}/{}{} on the fabric and on Linux (mtu {})",
            config.tap,
            config.address,
            config.prefix,
            cidr6.map(|c| format!(" and {c}")).unwrap_or_default(),
            device.mtu()
        );
        Ok(Gateway {
            config: config.clone(),
            tap,
            device,
            wake,
            linux_mac: None,
            stats: Arc::new(Mutex::new(GatewayStats::default())),
            origin: std::time::Instant::now(),
            directory: None,
            proxy_nd: cidr6.map(|cidr| ProxyNd {
                cidr,
                mac: GATEWAY_MAC,
            }),
        })
    }

    /// Passes to Linux only packets whose source agrees with `directory`,
    /// and lets the gateway's device learn only from ARP that agrees too.
    pub fn with_directory(mut self, directory: Arc<SeatDirectory>) -> Gateway {
        self.device
            .hca_mut()
            .set_directory(Some(Arc::clone(&directory)));
        self.directory = Some(directory);
        self
    }

    pub fn stats(&self) -> SharedGatewayStats {
        self.stats.clone()
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.origin.elapsed().as_micros() as i64)
    }

    fn bump(&self, f: impl FnOnce(&mut GatewayStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs until `stop` is set or the fabric fails.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let mut frame = vec![0u8; MAX_FRAME];
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            if let Err(e) = self.device.service(now) {
                log::error!("gateway: the fabric port failed: {e}");
                break;
            }
            let (up, arp, nd) = (
                self.device.link() == LinkState::Up,
                self.device.hca().dropped(),
                self.device.hca().dropped_nd(),
            );
            self.bump(|s| {
                s.up = up;
                s.dropped_spoofed_arp = arp;
                s.dropped_spoofed_nd = nd;
            });
            let mut busy = self.fabric_to_linux(now);
            busy |= self.linux_to_fabric(now, &mut frame);
            if let Err(e) = self.device.service(now) {
                log::error!("gateway: the fabric port failed: {e}");
                break;
            }
            if busy {
                continue;
            }
            match self.device.arm() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    log::error!("gateway: {e}");
                    break;
                }
            }
            let timeout = self
                .device
                .poll_at()
                .map(|at| Duration::from((at - now).max(smoltcp::time::Duration::ZERO)))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            self.sleep(timeout);
        }
        log::info!("gateway: stopped");
    }

    fn sleep(&mut self, timeout: Duration) {
        let port_fd = self.device.hca().inner().event_fd();
        {
            let mut fds = vec![
                PollFd::new(self.tap.fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(fd) = port_fd {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let _ = poll(
                &mut fds,
                PollTimeout::from(timeout.as_millis().min(1000) as u16),
            );
        }
        let _ = self.wake.drain();
        self.device.hca_mut().inner_mut().ack_events();
    }

    /// IP packets the fabric sent to the gateway go to Linux.
    fn fabric_to_linux(&mut self, now: smoltcp::time::Instant) -> bool {
        let mut moved = false;
        for _ in 0..256 {
            let Some((rx, tx)) = self.device.receive(now) else {
                break;
            };
            // Nothing is sent back on the fabric from here.
            drop(tx);
            moved = true;
            let Some(dst) = self.linux_mac else {
                rx.consume(|_| ());
                self.bump(|s| s.dropped_to_linux += 1);
                continue;
            };
            let source = rx.source();
            let directory = self.directory.as_deref();
            let tap = &mut self.tap;
            let mut spoofed = false;
            let ok = rx.consume(|ip| {
                // A guest's DHCP broadcast from 0.0.0.0 is for the back
                // end's DHCP server, not for Linux; nor is it spoofing.
                if crate::port_security::is_dhcp_client(ip) {
                    return false;
                }
                if !source_admitted(directory, ip, &source) {
                    spoofed = true;
                    return false;
                }
                let ethertype = match ip.first().map(|b| b >> 4) {
                    Some(6) => EthernetProtocol::Ipv6,
                    _ => EthernetProtocol::Ipv4,
                };
                let mut out = vec![0u8; 14 + ip.len()];
                let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
                EthernetRepr {
                    src_addr: GATEWAY_MAC,
                    dst_addr: dst,
                    ethertype,
                }
                .emit(&mut eth);
                eth.payload_mut().copy_from_slice(ip);
                tap.write(&out).is_ok()
            });
            if ok {
                self.bump(|s| s.to_linux += 1);
            }
            if spoofed {
                self.bump(|s| s.dropped_spoofed += 1);
            }
        }
        moved
    }

    /// Frames Linux sent on the TAP: ARP and neighbour solicitations are
    /// answered here, IPv4 and IPv6 go onto the fabric.
    fn linux_to_fabric(&mut self, now: smoltcp::time::Instant, frame: &mut [u8]) -> bool {
        let mut moved = false;
        for _ in 0..256 {
            let n = match self.tap.read(frame) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("gateway: reading {}: {e}", self.tap.name);
                    break;
                }
            };
            moved = true;
            let Ok(eth) = EthernetFrame::new_checked(&frame[..n]) else {
                self.bump(|s| s.dropped_from_linux += 1);
                continue;
            };
            match eth.ethertype() {
                EthernetProtocol::Arp => self.answer_arp(eth.src_addr(), eth.payload()),
                EthernetProtocol::Ipv4 => {
                    self.linux_mac = Some(eth.src_addr());
                    self.send_to_fabric(now, eth.payload());
                }
                EthernetProtocol::Ipv6 if self.proxy_nd.is_some() => {
                    self.linux_mac = Some(eth.src_addr());
                    let from = eth.src_addr();
                    let verdict = self.proxy_nd.as_ref().map_or(FromLinux::Ignore, |p| {
                        p.sort_from_linux(from, eth.payload())
                    });
                    match verdict {
                        FromLinux::Forward => self.send_to_fabric(now, eth.payload()),
                        FromLinux::Answer(out) => {
                            if self.tap.write(&out).is_ok() {
                                self.bump(|s| s.nd_proxied += 1);
                            }
                        }
                        FromLinux::Ignore => {}
                        FromLinux::Malformed => self.bump(|s| s.dropped_from_linux += 1),
                    }
                }
                _ => self.bump(|s| s.dropped_from_linux += 1),
            }
        }
        moved
    }

    /// Sends one IP packet from Linux onto the fabric.
    fn send_to_fabric(&mut self, now: smoltcp::time::Instant, payload: &[u8]) {
        let sent = match self.device.transmit(now) {
            Some(tx) => {
                tx.consume(payload.len(), |buf| buf.copy_from_slice(payload));
                true
            }
            None => false,
        };
        self.bump(|s| {
            if sent {
                s.to_fabric += 1
            } else {
                s.dropped_from_linux += 1
            }
        });
    }

    /// Proxy ARP: every address of the subnet but Linux's own is behind us.
    fn answer_arp(&mut self, from: EthernetAddress, payload: &[u8]) {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return;
        };
        self.linux_mac = Some(from);
        let subnet = Ipv4Cidr::new(self.config.address, self.config.prefix);
        let ours = target_protocol_addr != self.config.address
            && subnet.contains_addr(&target_protocol_addr)
            && Some(target_protocol_addr) != subnet.broadcast()
            && target_protocol_addr != Ipv4Address::UNSPECIFIED;
        if operation != ArpOperation::Request || !ours {
            return;
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: GATEWAY_MAC,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let mut out = vec![0u8; 14 + reply.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: GATEWAY_MAC,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut eth);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        if self.tap.write(&out).is_ok() {
            self.bump(|s| s.arp_proxied += 1);
        }
    }
}

/// True if the IP packet `ip` that came from `source` may go to Linux.
/// A packet too short to have a source address is not believed either.
fn source_admitted(directory: Option<&SeatDirectory>, ip: &[u8], source: &DatagramSource) -> bool {
    let Some(directory) = directory else {
        return true;
    };
    if ip.first().map(|b| b >> 4) == Some(6) {
        return match Ipv6Packet::new_checked(ip) {
            Ok(packet) => directory.admits6(packet.src_addr(), source),
            Err(_) => false,
        };
    }
    match Ipv4Packet::new_checked(ip) {
        Ok(packet) => {
            directory.admits(std::net::Ipv4Addr::from(packet.src_addr().octets()), source)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipoib::DatagramSource;
    use verbs_shim::back::SenderPort;
    use verbs_shim::{Gid, Qpn};

    use super::source_admitted;
    use crate::config::{Attach, GuestConfig};
    use crate::port_security::SeatDirectory;

    fn ipv4(source: [u8; 4]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&source);
        ip.extend_from_slice(&[10, 77, 0, 1]);
        ip
    }

    #[test]
    fn only_a_seats_own_port_speaks_for_its_address() {
        let seat_ip = Ipv4Addr::new(10, 77, 0, 2);
        let directory = SeatDirectory::for_guests(&[GuestConfig {
            name: "g2".into(),
            attach: Attach::Socket("/nonexistent".into()),
            window: 1 << 20,
            pkeys: vec![0xffff],
            ip: Some(seat_ip),
            ip6: None,
            limits: Default::default(),
        }]);
        let port = SenderPort {
            qpn: Qpn::new_truncated(0x48),
            gid: Gid::from_parts(0xfe80 << 48, 2),
        };
        directory.register(seat_ip, port);
        let seat = DatagramSource {
            qpn: port.qpn,
            gid: Some(port.gid),
        };
        let other = DatagramSource {
            qpn: Qpn::new_truncated(0x49),
            gid: Some(port.gid),
        };
        let d = Some(&*directory);
        assert!(source_admitted(d, &ipv4([10, 77, 0, 2]), &seat));
        assert!(!source_admitted(d, &ipv4([10, 77, 0, 2]), &other));
        assert!(!source_admitted(d, &ipv4([10, 77, 0, 7]), &seat));
        assert!(source_admitted(d, &ipv4([10, 77, 0, 7]), &other));
        // Too short to have a source: not believed.
        assert!(!source_admitted(d, &ipv4([10, 77, 0, 2])[..12], &seat));
        // Without a directory everything passes, as before.
        assert!(source_admitted(None, &ipv4([10, 77, 0, 7]), &seat));
    }
}
