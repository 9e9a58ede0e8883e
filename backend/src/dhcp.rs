//! The back end's DHCP server (RFC 4390 over RFC 2131), like a libvirt
//! network's: it hands each seat the `ip=` of its configuration.
//!
//! It is an endpoint of its own on the fabric (netcore's
//! [`ServerPort`]: an IPoIB port at `--dhcp`'s address, in the default
//! partition), on a thread of its own. A request is answered for the seat
//! whose port it really came from: the receive completion's QPN and GID,
//! looked up in the [`SeatDirectory`] that port security keeps, never the
//! client identifier or anything else the guest wrote. So a guest can only
//! ever be offered its own seat's address; a port that is no seat with
//! `ip=` (a seat without it, another host's guest) gets no offer, logged.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivshmem::EventFd;
use netcore::dhcp::{SeatLease, ServerPort, ServerStats};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use verbs_shim::PKey;

use crate::config::{Config, DhcpConfig};
use crate::port_security::SeatDirectory;
use crate::provider::{Fabric, Port, ProviderError};

pub type DhcpError = Box<dyn std::error::Error + Send + Sync>;

/// The server's counters, readable by the control socket.
pub type SharedDhcpStats = Arc<Mutex<ServerStats>>;

/// The server and what it serves.
pub struct DhcpServer {
    port: Box<ServerPort<Port>>,
    wake: Arc<EventFd>,
    directory: Arc<SeatDirectory>,
    /// Each seat address's lease.
    leases: HashMap<Ipv4Addr, SeatLease>,
    origin: std::time::Instant,
    stats: SharedDhcpStats,
}

fn v4(a: Ipv4Addr) -> Ipv4Address {
    Ipv4Address::from(a.octets())
}

/// The lease of every seat with `ip=`.
fn leases(config: &Config, dhcp: &DhcpConfig) -> HashMap<Ipv4Addr, SeatLease> {
    let router = dhcp.router(config.gateway.as_ref()).map(v4);
    config
        .guests
        .iter()
        .filter_map(|g| {
            let ip = g.ip?;
            Some((
                ip,
                SeatLease {
                    name: g.name.clone(),
                    address: Ipv4Cidr::new(v4(ip), dhcp.prefix),
                    router,
                    lease_secs: dhcp.lease_secs,
                },
            ))
        })
        .collect()
}

impl DhcpServer {
    /// Opens the server's port (fabric port `port_number`) and brings it up.
    pub fn start(
        config: &Config,
        dhcp: &DhcpConfig,
        fabric: &Fabric,
        port_number: u16,
        mtu: verbs_shim::IbMtu,
        directory: Arc<SeatDirectory>,
    ) -> Result<DhcpServer, DhcpError> {
        let wake = Arc::new(EventFd::new()?);
        let port = fabric
            .open_gateway_port(port_number, PKey::DEFAULT, mtu, wake.clone())
            .map_err(|ProviderError(e)| format!("dhcp: {e}"))?;
        let address = Ipv4Cidr::new(v4(dhcp.address), dhcp.prefix);
        let port = ServerPort::new(port, address).map_err(|e| format!("dhcp: {e}"))?;
        let leases = leases(config, dhcp);
        log::info!(
            "dhcp: serving {} seat(s) from {address}, router {}, lease {} s",
            leases.len(),
            dhcp.router(config.gateway.as_ref())
                .map_or_else(|| "none".to_owned(), |r| r.to_string()),
            dhcp.lease_secs
        );
        Ok(DhcpServer {
            port: Box::new(port),
            wake,
            directory,
            leases,
            origin: std::time::Instant::now(),
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> SharedDhcpStats {
        self.stats.clone()
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.origin.elapsed().as_micros() as i64)
    }

    /// Runs until `stop` is set or the fabric fails.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            let directory = &self.directory;
            let leases = &self.leases;
            let mut lookup = |src: &ipoib::DatagramSource| {
                directory
                    .seat_at(src)
                    .and_then(|ip| leases.get(&ip).cloned())
            };
            let busy = match self.port.poll(now, &mut lookup) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("dhcp: the fabric port failed: {e}");
                    break;
                }
            };
            if busy {
                *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = self.port.stats();
                continue;
            }
            match self.port.device.arm() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    log::error!("dhcp: {e}");
                    break;
                }
            }
            let timeout = self
                .port
                .device
                .poll_at()
                .map(|at| Duration::from((at - now).max(smoltcp::time::Duration::ZERO)))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            self.sleep(timeout);
        }
        log::info!("dhcp: stopped ({:?})", self.port.stats());
    }

    fn sleep(&mut self, timeout: Duration) {
        {
            let port_fd = self.port.device.hca().event_fd();
            let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
            if let Some(fd) = port_fd {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let _ = poll(
                &mut fds,
                PollTimeout::from(timeout.as_millis().min(1000) as u16),
            );
        }
        let _ = self.wake.drain();
        self.port.device.hca_mut().ack_events();
    }
}
