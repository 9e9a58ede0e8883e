//! Which fabric port each seat address with `ip=` belongs to, for the
//! gateway. A seat registers its guest's port when the port is opened (and
//! its [`SourceFilter`](super::SourceFilter) again when it sees the guest's
//! first frame), and removes it when the port goes (the session ends or the
//! guest resets the channel), so a stale port never speaks for the address
//! and a reconnected guest is believed from its first packet. The gateway
//! asks [`SeatDirectory::admits`] about each packet before passing it to
//! Linux, and [`SeatDirectory::admits_arp`] about each ARP before its
//! device learns from it.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
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
}

impl SeatDirectory {
    pub fn for_guests(guests: &[GuestConfig]) -> Arc<SeatDirectory> {
        Arc::new(SeatDirectory {
            seat_ips: guests.iter().filter_map(|g| g.ip).collect(),
            ports: Mutex::new(HashMap::new()),
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
}
