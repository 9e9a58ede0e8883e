//! The guest's whole network core in one value: the IPoIB device over any
//! `Hca`, the smoltcp interface, the sockets and the services. A platform
//! (the hosted guest, the unikernel) only supplies the device, the time and
//! a way to sleep until an interrupt:
//!
//! ```text
//! loop {
//!     let busy = stack.poll(now())?;
//!     if !busy && !stack.arm()? {
//!         sleep_until_interrupt_or(stack.next_deadline(now()));
//!     }
//! }
//! ```

use alloc::boxed::Box;

use smoltcp::iface::{Config, Interface, PollResult, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, Ipv4Address};

use ipoib::{GroupError, IpoibDevice, IpoibError, LinkState};
use verbs_shim::Hca;

use crate::config::NetConfig;
use crate::dhcp::{self, DhcpSocket, Event, Lease};
use crate::services::{Gated, ServiceHost};
use crate::status::StatusSource;

/// Why the stack could not start.
#[derive(Debug)]
pub enum StackError {
    Ipoib(IpoibError),
    /// The routing table had no room for the default route.
    Routes,
}

impl core::fmt::Display for StackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StackError::Ipoib(e) => write!(f, "{e}"),
            StackError::Routes => f.write_str("no room for the default route"),
        }
    }
}

impl core::error::Error for StackError {}

/// The console line for a lease.
fn log_lease(lease: &Lease) {
    let secs = lease.duration.map_or_else(
        || alloc::string::String::from("infinite"),
        |d| alloc::format!("{} s", d.secs()),
    );
    match lease.router {
        Some(gw) => log::info!(
            "dhcp: lease {} from {}, gw {gw}, lease {secs}",
            lease.address,
            lease.server
        ),
        None => log::info!(
            "dhcp: lease {} from {}, no gw, lease {secs}",
            lease.address,
            lease.server
        ),
    }
}

pub struct NetStack<H: Hca> {
    /// On the heap: the device is about 90 KiB (its slot tables), and moving
    /// it around by value while the stack is built put several copies on
    /// the unikernel's boot stack (512 KiB overflowed).
    pub device: Box<IpoibDevice<H>>,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub services: ServiceHost,
    /// The DHCP client, with `ip=dhcp`.
    pub dhcp: Option<DhcpSocket>,
    config: NetConfig,
}

impl<H: Hca> NetStack<H> {
    /// Brings IPoIB up on `hca` (already connected) and starts the services
    /// `config` names. `seed` seeds smoltcp's initial sequence numbers.
    pub fn new(
        hca: H,
        config: &NetConfig,
        now: Instant,
        seed: u64,
    ) -> Result<NetStack<H>, StackError> {
        let mut device =
            Box::new(IpoibDevice::new(hca, config.ipoib_config()).map_err(StackError::Ipoib)?);
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, &mut *device, now);
        config
            .apply(&mut iface, device.ipv6_link_local())
            .map_err(|_| StackError::Routes)?;
        let mut sockets = SocketSet::new(alloc::vec::Vec::new());
        let window = crate::services::tcp_window(device.rx_slots());
        let services = ServiceHost::with_window(config, &mut sockets, window);
        let dhcp = config.dhcp.then(|| {
            let id = dhcp::client_id(&device.hw_addr());
            DhcpSocket::new(&mut sockets, id, now, seed)
        });
        Ok(NetStack {
            device,
            iface,
            sockets,
            services,
            dhcp,
            config: config.clone(),
        })
    }

    /// The configuration, with the address and gateway of the DHCP lease
    /// when there is one.
    /// The TCP window for this device's receive slots
    /// ([`crate::services::tcp_window`]): discard offers it, and a
    /// [`crate::TcpSender`] should send with as much buffered.
    pub fn tcp_window(&self) -> usize {
        crate::services::tcp_window(self.device.rx_slots())
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// True once the interface has an address: at once for a static one,
    /// after the lease with `ip=dhcp`.
    pub fn has_address(&self) -> bool {
        !self.config.ip.address().is_unspecified()
    }

    /// Runs the DHCP client (once the link is up, so that its first
    /// DISCOVER is not lost to a broadcast group not yet joined) and applies
    /// what it decides. True if the address changed.
    fn poll_dhcp(&mut self, now: Instant) -> Result<bool, StackError> {
        let Some(client) = &mut self.dhcp else {
            return Ok(false);
        };
        if self.device.link() != LinkState::Up {
            return Ok(false);
        }
        match client.poll(&mut self.sockets, now) {
            Some(Event::Configured(lease)) => {
                log_lease(&lease);
                self.set_address(lease.address, lease.router)?;
                Ok(true)
            }
            Some(Event::Deconfigured { address }) => {
                log::warn!("dhcp: {address} removed");
                self.set_address(ipoib::UNCONFIGURED, None)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Moves the interface, the device and the services to a new address.
    fn set_address(
        &mut self,
        ip: smoltcp::wire::Ipv4Cidr,
        gateway: Option<smoltcp::wire::Ipv4Address>,
    ) -> Result<(), StackError> {
        self.config.ip = ip;
        self.config.gateway = gateway;
        self.config
            .apply(&mut self.iface, self.device.ipv6_link_local())
            .map_err(|_| StackError::Routes)?;
        self.device.set_ipv4(ip, gateway);
        self.services.set_address(ip, gateway);
        Ok(())
    }

    /// One pass: completions and timers, smoltcp, the services, then post
    /// what they queued with one doorbell. Returns true if anything moved.
    pub fn poll(&mut self, now: Instant) -> Result<bool, IpoibError> {
        let mut busy = self.device.service(now)?;
        match self.poll_dhcp(now) {
            Ok(changed) => busy |= changed,
            // `apply` removes the old default route before adding the
            // lease's, so the table has room; say so if it ever had not.
            Err(e) => log::error!("dhcp: cannot apply the lease: {e}"),
        }
        let mut device = Gated {
            device: &mut *self.device,
            gate: self.services.gate(&self.sockets),
        };
        busy |= ipoib::poll_interface(&mut self.iface, now, &mut device, &mut self.sockets)
            != PollResult::None;
        let device_stats = self.device.stats();
        let service_stats = self.services.stats();
        let peer_faults = self.device.hca().peer_faults();
        let sources: [&dyn StatusSource; 3] = [&device_stats, &peer_faults, &service_stats];
        let status: &[&dyn StatusSource] = &sources;
        if self.services.poll(&mut self.sockets, &status) {
            busy = true;
            // What the services wrote goes out in this pass.
            let mut device = Gated {
                device: &mut *self.device,
                gate: self.services.gate(&self.sockets),
            };
            ipoib::poll_interface(&mut self.iface, now, &mut device, &mut self.sockets);
        }
        // Meet a burst of clients (or give back what the last one took).
        self.services.resize(&mut self.sockets, now);
        busy |= self.device.service(now)?;
        Ok(busy)
    }

    /// Asks for an interrupt on the next completion; true if work is already
    /// waiting and the caller must not sleep.
    pub fn arm(&mut self) -> Result<bool, IpoibError> {
        self.device.arm()
    }

    /// The latest time the caller may sleep until.
    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        let a = self.iface.poll_at(now, &self.sockets);
        let b = self.device.poll_at();
        let c = self.dhcp.as_ref().map(|d| d.poll_at());
        [a, b, c].into_iter().flatten().min()
    }

    /// Joins the IPv4 multicast group `group`: the device attaches to the
    /// group's MGID (RFC 4391 section 4) and smoltcp accepts datagrams to it
    /// and sends the IGMP membership report. Sending to a group needs no
    /// join. Joining twice is fine.
    pub fn join_ipv4_group(&mut self, group: Ipv4Address) -> Result<(), GroupError> {
        self.device.join_ipv4_group(group)?;
        if self.iface.join_multicast_group(group).is_err() {
            // smoltcp's table is larger than the device's, so this is only
            // reached for an address the device took and smoltcp did not.
            let _ = self.device.leave_ipv4_group(group);
            return Err(GroupError::TableFull);
        }
        Ok(())
    }

    /// Leaves `group`: smoltcp sends the IGMP leave and the device detaches.
    pub fn leave_ipv4_group(&mut self, group: Ipv4Address) -> Result<(), GroupError> {
        let _ = self.iface.leave_multicast_group(group);
        self.device.leave_ipv4_group(group)
    }

    /// The status page's counters (the device's, the back end's faults,
    /// the services'), as `key value` lines: what `/stats` serves, for a
    /// caller that reports them another way (the hosted guest on SIGUSR1).
    pub fn write_status(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        let device_stats = self.device.stats();
        let service_stats = self.services.stats();
        let peer_faults = self.device.hca().peer_faults();
        let sources: [&dyn StatusSource; 3] = [&device_stats, &peer_faults, &service_stats];
        sources[..].write_status(out)
    }

    /// Moves onto a new device after the back end restarted; sockets and
    /// connections carry on, neighbours are asked for again (their QPNs
    /// changed with the back end).
    pub fn replace_device(&mut self, hca: H) -> Result<H, IpoibError> {
        self.device.replace_device(hca)
    }
}
