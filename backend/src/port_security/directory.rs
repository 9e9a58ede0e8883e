//! Which fabric port each seat address with `ip=` (and `ip6=`) belongs to,
//! for the gateway. A seat registers its guest's port when the port is opened (and
//! its [`SourceFilter`](super::SourceFilter) again when it sees the guest's
//! first frame), and removes it when the port goes (the session ends or the
//! guest resets the channel), so a stale port never speaks for the address
//! and a reconnected guest is believed from its first packet. The gateway
//! asks [`SeatDirectory::admits`] about each packet before passing it to
//! Linux, and [`SeatDirectory::admits_arp`] about each ARP before its
//! device learns from it; [`SeatDirectory::admits6`] likewise for IPv6
//! sources and neighbour discovery targets.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipoib::DatagramSource;
use verbs_shim::back::SenderPort;

use crate::config::GuestConfig;

/// The seats' addresses and the ports now behind them.
#[derive(Debug, Default)]
pub struct SeatDirectory {
    /// Every `ip=` in the configuration.
    seat_ips: HashSet<Ipv4Addr>,
    ports: Mutex<HashMap<Ipv4Addr, SenderPort>>,
    /// Every `ip6=` in the configuration.
    seat_ip6s: HashSet<Ipv6Addr>,
    ports6: Mutex<HashMap<Ipv6Addr, SenderPort>>,
}

impl SeatDirectory {
    pub fn for_guests(guests: &[GuestConfig]) -> Arc<SeatDirectory> {
        Arc::new(SeatDirectory {
            seat_ips: guests.iter().filter_map(|g| g.ip).collect(),
            ports: Mutex::new(HashMap::new()),
            seat_ip6s: guests.iter().filter_map(|g| g.ip6).collect(),
            ports6: Mutex::new(HashMap::new()),
        })
    }

    /// The guest at `ip` now sends from `port`.
    pub fn register(&self, ip: Ipv4Addr, port: SenderPort) {
        self.lock().insert(ip, port);
    }

    /// The guest at `ip` no longer sends from `port` (its port was closed).
    /// An entry that names another port (a newer session's) stays. Returns
    /// true if the entry was removed.
    pub fn unregister(&self, ip: Ipv4Addr, port: SenderPort) -> bool {
        let mut ports = self.lock();
        if ports.get(&ip) == Some(&port) {
            ports.remove(&ip);
            return true;
        }
        false
    }

    /// The port now registered for `ip`, if any.
    #[cfg(test)]
    pub fn port_of(&self, ip: Ipv4Addr) -> Option<SenderPort> {
        self.lock().get(&ip).copied()
    }

    /// The seat address whose port `source` is: a DHCP request is answered
    /// for that seat only.
    pub fn seat_at(&self, source: &DatagramSource) -> Option<Ipv4Addr> {
        self.lock()
            .iter()
            .find(|(_, port)| {
                port.qpn == source.qpn && source.gid.is_none_or(|gid| gid == port.gid)
            })
            .map(|(ip, _)| *ip)
    }

    /// True if an IPv4 packet from `source_ip` that arrived from `source`
    /// may be believed: a seat address only from that seat's port, and no
    /// other address from a port of a seat with `ip=`.
    pub fn admits(&self, source_ip: Ipv4Addr, source: &DatagramSource) -> bool {
        let ports = self.lock();
        let is = |port: &SenderPort| {
            port.qpn == source.qpn && source.gid.is_none_or(|gid| gid == port.gid)
        };
        if self.seat_ips.contains(&source_ip) {
            return ports.get(&source_ip).is_some_and(is);
        }
        !ports.values().any(is)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, SenderPort>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest at `ip6` now sends from `port`.
    pub fn register6(&self, ip6: Ipv6Addr, port: SenderPort) {
        self.lock6().insert(ip6, port);
    }

    /// As [`unregister`](Self::unregister), for an `ip6=`.
    pub fn unregister6(&self, ip6: Ipv6Addr, port: SenderPort) -> bool {
        let mut ports = self.lock6();
        if ports.get(&ip6) == Some(&port) {
            ports.remove(&ip6);
            return true;
        }
        false
    }

    /// True if an IPv6 packet from `source_ip` (or a neighbour advertisement
    /// for it) that arrived from `source` may be believed: a seat's `ip6=`,
    /// or the link-local address of its port (from the port GID), only from
    /// that seat's port, and no other address from a port of a seat with
    /// `ip6=`. Seats without `ip6=` are not held to anything.
    pub fn admits6(&self, source_ip: Ipv6Addr, source: &DatagramSource) -> bool {
        let ports = self.lock6();
        let is = |port: &SenderPort| {
            port.qpn == source.qpn && source.gid.is_none_or(|gid| gid == port.gid)
        };
        if self.seat_ip6s.contains(&source_ip) {
            return ports.get(&source_ip).is_some_and(is);
        }
        let link_local_of = |port: &SenderPort| {
            ipoib::wire::ipv6::link_local(&port.gid).octets() == source_ip.octets()
        };
        if let Some(owner) = ports.values().find(|p| link_local_of(p)) {
            return is(owner);
        }
        !ports.values().any(is)
    }

    fn lock6(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv6Addr, SenderPort>> {
        self.ports6.lock().unwrap_or_else(|e| e.into_inner())
    }
}
