//! Port security: a guest whose seat has `ip=` may send IPv4 and ARP only
//! as itself, and one whose seat has `ip6=` IPv6 only as itself.
//!
//! [`SourceFilter`] is the [`TxFilter`] the seat installs in its back half:
//! it drops (and the back half counts, `tx_filtered`) every frame the guest
//! sends that is
//! - IPv4 with a source address other than the seat's `ip=` (save a DHCP
//!   client's broadcast from 0.0.0.0, UDP port 68 to 67: a guest with
//!   `ip=dhcp` asking for its address; see [`is_dhcp_client`]),
//! - UDP from port 67 (a DHCP server's message: the back end is the
//!   guests' DHCP server, and a guest must not answer another's DISCOVER),
//! - ARP whose sender protocol address is not the seat's `ip=`, or whose
//!   sender hardware address is not the guest's own QPN and GID,
//! - IPv6 with a source address other than the seat's `ip6=`, the guest's
//!   link-local address (from its port GID, RFC 4391) or the unspecified
//!   address,
//! - IPv4, ARP or IPv6 too short or malformed to tell.
//!
//! The filter sees the first 64 bytes of a frame, which hold the IPv6
//! header but not the whole target address or the link-layer option of a
//! neighbour advertisement. Those are checked where they are believed: each
//! `ipoib` receiver learns from an advertisement only when its link-layer
//! address is the datagram's real source, and the gateway takes an
//! advertisement for a seat's `ip6=` only from that seat's port
//! (`gateway::arp_guard`).
//!
//! Other EtherTypes, and a family the seat has no address for, pass: a
//! receiver drops what it does not understand. Drops are logged at most
//! once per [`LOG_INTERVAL`] per seat, with the number suppressed.
//!
//! [`SeatDirectory`] tells the gateway which fabric port each such seat's
//! address belongs to, so it passes to Linux only what the seat really sent.

mod directory;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipoib::wire::{ArpPacket, ArpRepr, EncapPacket, EtherType, HwAddr};
use verbs_shim::back::{BoxedTxFilter, SenderPort, TxFilter, TxVerdict};

pub use directory::SeatDirectory;

use crate::config::GuestConfig;

/// Least time between two log lines about one seat's dropped frames.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Length of an IPv4 header without options.
const IPV4_MIN_HEADER: usize = 20;
/// Where the source address sits in an IPv4 header.
const IPV4_SOURCE: std::ops::Range<usize> = 12..16;
/// Where the source address sits in an IPv6 header (and so its length).
const IPV6_SOURCE: std::ops::Range<usize> = 8..24;

/// Why a frame was dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Spoof {
    Ipv4Source(Ipv4Addr),
    ArpSenderIp(Ipv4Addr),
    ArpSenderHw(HwAddr),
    Ipv6Source(Ipv6Addr),
    /// UDP from port 67: a DHCP server's message. Guests are DHCP clients;
    /// the back end is their server, and a guest answering another's
    /// DISCOVER could hand it any address.
    DhcpServer,
    /// An IPv4, ARP or IPv6 frame too short or malformed to check.
    Malformed(EtherType),
}

impl std::fmt::Display for Spoof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spoof::Ipv4Source(a) => write!(f, "IPv4 from source address {a}"),
            Spoof::ArpSenderIp(a) => write!(f, "ARP with sender address {a}"),
            Spoof::ArpSenderHw(hw) => write!(f, "ARP with sender hardware address {hw}"),
            Spoof::Ipv6Source(a) => write!(f, "IPv6 from source address {a}"),
            Spoof::DhcpServer => f.write_str("a DHCP server's message (UDP from port 67)"),
            Spoof::Malformed(t) => write!(f, "malformed {t:?} frame"),
        }
    }
}

impl std::error::Error for Spoof {}

/// Checks the frame (IPoIB header first) a guest at `own_ip` with port
/// `sender` sends. `head` may be the frame's first bytes only.
pub fn check(own_ip: Ipv4Addr, sender: &SenderPort, head: &[u8]) -> Result<(), Spoof> {
    let Ok(encap) = EncapPacket::new_checked(head) else {
        return Ok(());
    };
    let payload = encap.payload();
    match encap.ethertype() {
        EtherType::Ipv4 => {
            let source = payload
                .get(IPV4_SOURCE)
                .filter(|_| payload.len() >= IPV4_MIN_HEADER)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .ok_or(Spoof::Malformed(EtherType::Ipv4))?;
            let source = Ipv4Addr::from(source);
            if source != own_ip && !(source.is_unspecified() && is_dhcp_client(payload)) {
                return Err(Spoof::Ipv4Source(source));
            }
            if udp_source_port(payload)? == Some(DHCP_SERVER_PORT) {
                return Err(Spoof::DhcpServer);
            }
        }
        EtherType::Arp => {
            let arp = ArpPacket::new_checked(payload)
                .and_then(|p| ArpRepr::parse(&p))
                .map_err(|_| Spoof::Malformed(EtherType::Arp))?;
            let sender_ip = Ipv4Addr::from(arp.source_ip.octets());
            if sender_ip != own_ip {
                return Err(Spoof::ArpSenderIp(sender_ip));
            }
            if arp.source_hw.qpn != sender.qpn || arp.source_hw.gid != sender.gid {
                return Err(Spoof::ArpSenderHw(arp.source_hw));
            }
        }
        _ => {}
    }
    Ok(())
}

const DHCP_SERVER_PORT: u16 = 67;

/// The UDP source port of `ip` (an IPv4 packet's first bytes): `None` if it
/// is not UDP or not the first fragment; an error if it is but the port is
/// not within the bytes checked (IPv4 options pushing it past them: the
/// guests send none).
fn udp_source_port(ip: &[u8]) -> Result<Option<u16>, Spoof> {
    let (Some(&ver_ihl), Some(&protocol), Some(frag)) = (ip.first(), ip.get(9), ip.get(6..8))
    else {
        return Err(Spoof::Malformed(EtherType::Ipv4));
    };
    let first_fragment = u16::from_be_bytes([frag[0], frag[1]]) & 0x1fff == 0;
    if protocol != 17 || !first_fragment {
        return Ok(None);
    }
    let start = usize::from(ver_ihl & 0x0f) * 4;
    ip.get(start..start + 2)
        .filter(|_| start >= IPV4_MIN_HEADER)
        .map(|p| Some(u16::from_be_bytes([p[0], p[1]])))
        .ok_or(Spoof::Malformed(EtherType::Ipv4))
}

/// True if `ip` (an IPv4 packet's first bytes) is what a DHCP client
/// without an address sends: a header without options, not a fragment, UDP
/// from port 68 to port 67 of 255.255.255.255. Only the DHCP server (and
/// other servers on port 67) listen to it; every other receiver drops it.
/// The back half sends the checked copy of these bytes, so the guest cannot
/// change them after the check.
pub fn is_dhcp_client(ip: &[u8]) -> bool {
    let Some(h) = ip.get(..IPV4_MIN_HEADER + 4) else {
        return false;
    };
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    h[0] == 0x45
        && !fragment
        && h[9] == 17
        && h[16..20] == [255, 255, 255, 255]
        && h[20..22] == 68u16.to_be_bytes()
        && h[22..24] == 67u16.to_be_bytes()
}

/// Checks the IPv6 in a frame (IPoIB header first) a guest at `own_ip6`
/// with port `sender` sends: its source must be `own_ip6`, the port's
/// link-local address or unspecified. Frames of other EtherTypes pass.
pub fn check6(own_ip6: Ipv6Addr, sender: &SenderPort, head: &[u8]) -> Result<(), Spoof> {
    let Ok(encap) = EncapPacket::new_checked(head) else {
        return Ok(());
    };
    if encap.ethertype() != EtherType::Ipv6 {
        return Ok(());
    }
    let payload = encap.payload();
    let source = payload
        .get(IPV6_SOURCE)
        .filter(|_| payload.first().map(|b| b >> 4) == Some(6))
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Ipv6Addr::from)
        .ok_or(Spoof::Malformed(EtherType::Ipv6))?;
    let link_local = Ipv6Addr::from(ipoib::wire::ipv6::link_local(&sender.gid).octets());
    if source == own_ip6 || source == link_local || source.is_unspecified() {
        Ok(())
    } else {
        Err(Spoof::Ipv6Source(source))
    }
}

/// The [`TxFilter`] of one seat with `ip=` or `ip6=`.
pub struct SourceFilter {
    seat: String,
    /// `None` for a seat with only `ip6=`: IPv4 and ARP pass.
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    directory: Option<Arc<SeatDirectory>>,
    registered: Option<SenderPort>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl SourceFilter {
    pub fn new(seat: &str, ip: Ipv4Addr, directory: Option<Arc<SeatDirectory>>) -> SourceFilter {
        SourceFilter {
            seat: seat.to_owned(),
            ip: Some(ip),
            ip6: None,
            directory,
            registered: None,
            last_log: None,
            suppressed: 0,
        }
    }

    /// The filter of a seat with `ip6=` (and `ip=` if `ip` is given).
    pub fn with_ip6(
        seat: &str,
        ip: Option<Ipv4Addr>,
        ip6: Ipv6Addr,
        directory: Option<Arc<SeatDirectory>>,
    ) -> SourceFilter {
        SourceFilter {
            seat: seat.to_owned(),
            ip,
            ip6: Some(ip6),
            directory,
            registered: None,
            last_log: None,
            suppressed: 0,
        }
    }

    fn log_drop(&mut self, why: Spoof) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let mut seat = String::new();
        if let Some(ip) = self.ip {
            seat.push_str(&format!(" ip {ip}"));
        }
        if let Some(ip6) = self.ip6 {
            seat.push_str(&format!(" ip6 {ip6}"));
        }
        log::warn!(
            "guest {}: dropped {why} (seat{seat}); {} more dropped since the last line",
            self.seat,
            self.suppressed
        );
        self.last_log = Some(now);
        self.suppressed = 0;
    }
}

impl TxFilter for SourceFilter {
    fn check(&mut self, sender: &SenderPort, head: &[u8], _frame_len: usize) -> TxVerdict {
        if self.registered != Some(*sender) {
            if let Some(d) = &self.directory {
                if let Some(ip) = self.ip {
                    d.register(ip, *sender);
                }
                if let Some(ip6) = self.ip6 {
                    d.register6(ip6, *sender);
                }
            }
            self.registered = Some(*sender);
        }
        let v4 = self.ip.map_or(Ok(()), |ip| check(ip, sender, head));
        let verdict = v4.and_then(|()| self.ip6.map_or(Ok(()), |ip6| check6(ip6, sender, head)));
        match verdict {
            Ok(()) => TxVerdict::Pass,
            Err(why) => {
                self.log_drop(why);
                TxVerdict::Drop
            }
        }
    }
}

/// The filter for `guest`'s seat: `None` (nothing checked) without `ip=`
/// or `ip6=`.
pub fn filter_for(
    guest: &GuestConfig,
    directory: Option<&Arc<SeatDirectory>>,
) -> Option<BoxedTxFilter> {
    let filter = match (guest.ip, guest.ip6) {
        (ip, Some(ip6)) => SourceFilter::with_ip6(&guest.name, ip, ip6, directory.cloned()),
        (Some(ip), None) => SourceFilter::new(&guest.name, ip, directory.cloned()),
        (None, None) => return None,
    };
    Some(Box::new(filter))
}

#[cfg(test)]
mod end_to_end;
#[cfg(test)]
mod seat_wiring;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod toctou;
