//! Interface configuration: addressing and ARP (and neighbour discovery)
//! timers.

use smoltcp::time::Duration;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use verbs_shim::QKey;

/// ARP, neighbour discovery and path timers (IPv6 neighbour solicitations
/// follow the same retry schedule as ARP requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpTimers {
    /// Time between ARP requests for an unresolved address.
    pub retry_interval: Duration,
    /// ARP requests sent before the address is declared unreachable.
    pub max_requests: u8,
    /// How long a learned address stays valid without being confirmed.
    pub reachable_time: Duration,
    /// How long a packet may wait for ARP or path resolution.
    pub queue_timeout: Duration,
    /// How long a failed path is remembered before it is tried again.
    pub path_retry: Duration,
}

impl Default for ArpTimers {
    fn default() -> Self {
        ArpTimers {
            retry_interval: Duration::from_millis(1000),
            max_requests: 3,
            reachable_time: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(3),
            path_retry: Duration::from_secs(1),
        }
    }
}

/// The address of an interface that has none: `0.0.0.0/32`, which
/// contains no destination but itself, so nothing is routed by ARP.
pub const UNCONFIGURED: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::UNSPECIFIED, 32);

/// How an IPoIB interface is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpoibConfig {
    /// This interface's address and subnet.
    pub address: Ipv4Cidr,
    /// Next hop for destinations outside the subnet.
    pub gateway: Option<Ipv4Address>,
    pub timers: ArpTimers,
    /// Q_Key to send with. `None` uses the port's (the broadcast group's).
    pub qkey_override: Option<QKey>,
    /// Announce the address with a gratuitous ARP when the link comes up.
    pub announce: bool,
    /// A static IPv6 address and its on-link prefix, besides the
    /// link-local address every interface has (RFC 4391 section 8).
    pub ipv6: Option<Ipv6Cidr>,
    /// IPv6 next hop for destinations off every on-link prefix.
    pub gateway6: Option<Ipv6Address>,
}

impl IpoibConfig {
    pub fn new(address: Ipv4Cidr) -> IpoibConfig {
        IpoibConfig {
            address,
            gateway: None,
            timers: ArpTimers::default(),
            qkey_override: None,
            announce: true,
            ipv6: None,
            gateway6: None,
        }
    }

    pub fn with_ipv6(mut self, address: Ipv6Cidr) -> IpoibConfig {
        self.ipv6 = Some(address);
        self
    }

    pub fn with_gateway6(mut self, gateway: Ipv6Address) -> IpoibConfig {
        self.gateway6 = Some(gateway);
        self
    }

    /// An interface without an address yet (one that waits for DHCP): it
    /// sends only to the broadcast group, answers no ARP and announces
    /// nothing until [`IpoibDevice::set_ipv4`](crate::IpoibDevice::set_ipv4)
    /// gives it an address.
    pub fn unconfigured() -> IpoibConfig {
        IpoibConfig::new(UNCONFIGURED)
    }

    /// True once the interface has an address.
    pub fn is_configured(&self) -> bool {
        !self.address.address().is_unspecified()
    }

    pub fn with_gateway(mut self, gateway: Ipv4Address) -> IpoibConfig {
        self.gateway = Some(gateway);
        self
    }

    /// The subnet's directed broadcast address.
    pub fn subnet_broadcast(&self) -> Option<Ipv4Address> {
        self.address.broadcast()
    }
}
