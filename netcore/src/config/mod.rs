//! The guest's network configuration, parsed from a kernel-command-line-style
//! string:
//!
//! ```
//! # use netcore::NetConfig;
//! let config = NetConfig::parse("ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info name=g1")?;
//! assert_eq!(config.to_string(), "ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info name=g1");
//! # Ok::<(), netcore::ConfigError>(())
//! ```
//!
//! Tokens are separated by whitespace and each is `key=value`:
//!
//! | key | value | default |
//! |---|---|---|
//! | `ip` | `a.b.c.d/len`, a host address on its subnet, or `dhcp` (RFC 4390: the address, prefix and router come from a DHCP server) | required |
//! | `gw` | `a.b.c.d` on that subnet (not with `ip=dhcp`) | none |
//! | `services` | `none` or a list of `echo`, `http`, `discard`, `chargen` | all |
//! | `log` | `off`, `error`, `warn`, `info`, `debug`, `trace` | `info` |
//! | `name` | 1 to 32 of `a-z A-Z 0-9 - . _` | `ibguest` |
//! | `tcp-budget` | KiB of socket buffers the TCP services may add for bursts of clients, 0 to 1048576 | 4096 (about 200 more HTTP connections) |
//! | `ip6` | `ADDR/PREFIX`, a unicast IPv6 address (not link-local) and its on-link prefix | none (the link-local address from the port GUID is always there) |
//! | `gw6` | an IPv6 address: link-local, or in `ip6`'s prefix | none |
//! | `cm` | connected mode (RFC 4755, `docs/connected-mode.md`): `off`, `on` (IP MTU 65520, as Linux), or the connected IP MTU, 1280 to 65520; used only if the back end offers it, otherwise the guest stays in datagram mode | `off` |
//!
//! Anything else (unknown keys, bare words, a key given twice, a bad value)
//! is a [`ConfigError`] whose message names the token and what to write
//! instead. `Display` writes a string that parses back to the same config.

mod error;
mod ipv6;
mod services;
#[cfg(test)]
mod tests;

use core::fmt;
use core::str::FromStr;

use ipoib::IpoibConfig;
use log::LevelFilter;
use smoltcp::iface::{Interface, RouteTableFull};
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

pub use error::{ConfigError, ServicesProblem, KNOWN_OPTIONS};
pub use services::{Services, SERVICE_NAMES};

/// Longest `name=`.
pub const NAME_LEN: usize = 32;
/// A guest's name, as shown on the status page.
pub type Name = heapless::String<NAME_LEN>;
/// The name when `name=` is not given.
pub const DEFAULT_NAME: &str = "ibguest";

/// How the guest's network is set up and which services it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest's address and subnet; with [`dhcp`](Self::dhcp), the
    /// address of the lease held ([`ipoib::UNCONFIGURED`] until there is
    /// one).
    pub ip: Ipv4Cidr,
    /// `ip=dhcp`: the address comes from a DHCP server.
    pub dhcp: bool,
    /// Next hop for destinations off the subnet.
    pub gateway: Option<Ipv4Address>,
    pub services: Services,
    /// The most verbose level to log.
    pub log: LevelFilter,
    /// The guest's name: the status page's title.
    pub name: Name,
    /// Bytes of socket buffers the TCP services may add for bursts of
    /// clients (`tcp-budget=KIB`), beyond the sockets they start with.
    pub tcp_budget: usize,
    /// A static IPv6 address and its prefix (`ip6=`), besides the
    /// link-local address.
    pub ip6: Option<Ipv6Cidr>,
    /// IPv6 next hop off the `ip6=` prefix (`gw6=`).
    pub gateway6: Option<Ipv6Address>,
    /// Connected mode with this IP MTU (`cm=`), if the back end offers it;
    /// `None`: datagram mode only.
    pub connected_mtu: Option<u32>,
}

impl NetConfig {
    /// `ip` with every default: no gateway, all services, `info`, `ibguest`.
    pub fn new(ip: Ipv4Cidr) -> NetConfig {
        let mut name = Name::new();
        // DEFAULT_NAME is shorter than NAME_LEN.
        let _ = name.push_str(DEFAULT_NAME);
        NetConfig {
            ip,
            dhcp: false,
            gateway: None,
            services: Services::ALL,
            log: LevelFilter::Info,
            name,
            tcp_budget: DEFAULT_TCP_BUDGET_KIB * 1024,
            ip6: None,
            gateway6: None,
            connected_mtu: None,
        }
    }

    /// `ip=dhcp` with every other default.
    pub fn dhcp() -> NetConfig {
        NetConfig {
            dhcp: true,
            ..NetConfig::new(ipoib::UNCONFIGURED)
        }
    }

    /// Parses a whitespace-separated list of `key=value` options; see the
    /// module documentation.
    pub fn parse(s: &str) -> Result<NetConfig, ConfigError> {
        let mut seen: [Option<&str>; KEYS.len()] = [None; KEYS.len()];
        for token in s.split_whitespace() {
            let (key, _) = split_token(token)?;
            let slot = option_index(key).ok_or_else(|| ConfigError::UnknownOption {
                token: token.into(),
            })?;
            if let Some(first) = seen[slot] {
                return Err(ConfigError::Duplicate {
                    first: first.into(),
                    second: token.into(),
                });
            }
            seen[slot] = Some(token);
        }
        let value = |i: usize| seen[i].and_then(|t| t.split_once('=')).map(|(_, v)| v);
        let ip_value = value(0).ok_or(ConfigError::MissingIp)?;
        let mut config = if ip_value == "dhcp" {
            NetConfig::dhcp()
        } else {
            NetConfig::new(parse_ip(ip_value)?)
        };
        if let Some(v) = value(1) {
            if config.dhcp {
                return Err(ConfigError::GatewayWithDhcp { value: v.into() });
            }
            config.gateway = Some(parse_gateway(v, config.ip)?);
        }
        if let Some(v) = value(2) {
            config.services = Services::parse(v)?;
        }
        if let Some(v) = value(3) {
            config.log = parse_level(v)?;
        }
        if let Some(v) = value(4) {
            config.name = parse_name(v)?;
        }
        if let Some(v) = value(5) {
            config.tcp_budget = parse_tcp_budget(v)? * 1024;
        }
        if let Some(v) = value(6) {
            config.ip6 = Some(ipv6::parse_ip6(v)?);
        }
        if let Some(v) = value(7) {
            config.gateway6 = Some(ipv6::parse_gateway6(v, config.ip6)?);
        }
        if let Some(v) = value(8) {
            config.connected_mtu = parse_cm(v)?;
        }
        Ok(config)
    }
}

impl NetConfig {
    /// The IPoIB device's settings for this address and gateway (ARP
    /// timers and the rest at their defaults); with `ip=dhcp`, an interface
    /// without an address until the lease.
    pub fn ipoib_config(&self) -> IpoibConfig {
        let mut config = IpoibConfig::new(self.ip);
        config.gateway = self.gateway;
        config.ipv6 = self.ip6;
        config.gateway6 = self.gateway6;
        config.connected_mtu = self.connected_mtu;
        config
    }

    /// Makes `iface`'s addresses this IPv4 one, the IPv6 `link_local` (the
    /// device's, from its port GUID) and `ip6=`, and its default routes the
    /// gateways (or none). An unconfigured IPv4 address (`ip=dhcp` before
    /// the lease) is left out.
    pub fn apply(
        &self,
        iface: &mut Interface,
        link_local: Ipv6Address,
    ) -> Result<(), RouteTableFull> {
        let ip = self.ip;
        let ip6 = self.ip6;
        iface.update_ip_addrs(|addrs| {
            addrs.clear();
            // Three addresses always fit (ipoib sets iface-max-addr-count-3).
            if !ip.address().is_unspecified() {
                let _ = addrs.push(IpCidr::Ipv4(ip));
            }
            let _ = addrs.push(IpCidr::Ipv6(Ipv6Cidr::new(link_local, 64)));
            if let Some(ip6) = ip6 {
                let _ = addrs.push(IpCidr::Ipv6(ip6));
            }
        });
        let routes = iface.routes_mut();
        routes.remove_default_ipv4_route();
        routes.remove_default_ipv6_route();
        if let Some(gw) = self.gateway {
            routes.add_default_ipv4_route(gw)?;
        }
        if let Some(gw) = self.gateway6 {
            routes.add_default_ipv6_route(gw)?;
        }
        Ok(())
    }
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<NetConfig, ConfigError> {
        NetConfig::parse(s)
    }
}

impl fmt::Display for NetConfig {
    /// Every option, in the order ip, gw, ip6, gw6, services, log, name,
    /// tcp-budget, cm; `gw=`, `ip6=` and `gw6=` only when set, `tcp-budget=`
    /// only when it is not the default, `cm=` only when connected mode is
    /// asked for (`cm=on` for the default MTU).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dhcp {
            f.write_str("ip=dhcp")?;
        } else {
            write!(f, "ip={}", self.ip)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " gw={gw}")?;
        }
        if let Some(ip6) = self.ip6 {
            write!(f, " ip6={ip6}")?;
        }
        if let Some(gw6) = self.gateway6 {
            write!(f, " gw6={gw6}")?;
        }
        write!(
            f,
            " services={} log={} name={}",
            self.services,
            level_name(self.log),
            self.name
        )?;
        if self.tcp_budget != DEFAULT_TCP_BUDGET_KIB * 1024 {
            write!(f, " tcp-budget={}", self.tcp_budget / 1024)?;
        }
        match self.connected_mtu {
            None => {}
            Some(DEFAULT_CONNECTED_MTU) => f.write_str(" cm=on")?,
            Some(mtu) => write!(f, " cm={mtu}")?,
        }
        Ok(())
    }
}

/// The options' keys (`parse` finds each value by its index here).
const KEYS: [&str; 9] = [
    "ip",
    "gw",
    "services",
    "log",
    "name",
    "tcp-budget",
    "ip6",
    "gw6",
    "cm",
];

/// The connected IP MTU of `cm=on`: 65520, Linux IPoIB's connected-mode
/// MTU.
pub const DEFAULT_CONNECTED_MTU: u32 = 65520;
/// The smallest `cm=MTU`: IPv6's minimum link MTU.
pub const MIN_CONNECTED_MTU: u32 = 1280;
/// The largest `cm=MTU` (as Linux: 64 KiB less the IPoIB header and the
/// IP layer's headroom).
pub const MAX_CONNECTED_MTU: u32 = 65520;

/// `cm=off|on|MTU`: `None` (datagram mode only) or the connected IP MTU.
fn parse_cm(value: &str) -> Result<Option<u32>, ConfigError> {
    match value {
        "off" => return Ok(None),
        "on" => return Ok(Some(DEFAULT_CONNECTED_MTU)),
        _ => {}
    }
    let bad = || ConfigError::BadConnectedMode {
        value: value.into(),
    };
    let digits_ok = !value.is_empty()
        && value.len() <= 5
        && value.bytes().all(|b| b.is_ascii_digit())
        && !value.starts_with('0');
    if !digits_ok {
        return Err(bad());
    }
    let mtu: u32 = value.parse().map_err(|_| bad())?;
    if !(MIN_CONNECTED_MTU..=MAX_CONNECTED_MTU).contains(&mtu) {
        return Err(bad());
    }
    Ok(Some(mtu))
}

/// `tcp-budget=` when not given: 4 MiB, about 200 more HTTP connections.
pub const DEFAULT_TCP_BUDGET_KIB: usize = 4 * 1024;
/// The largest `tcp-budget=`: 1 GiB.
pub const MAX_TCP_BUDGET_KIB: usize = 1024 * 1024;

/// `tcp-budget=KIB`: a decimal number of KiB, 0 (no growth) to
/// [`MAX_TCP_BUDGET_KIB`].
fn parse_tcp_budget(value: &str) -> Result<usize, ConfigError> {
    let bad = || ConfigError::BadTcpBudget {
        value: value.into(),
    };
    if value.is_empty() || value.len() > 7 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let kib: usize = value.parse().map_err(|_| bad())?;
    if kib > MAX_TCP_BUDGET_KIB {
        return Err(bad());
    }
    Ok(kib)
}

fn option_index(key: &str) -> Option<usize> {
    KEYS.iter().position(|k| *k == key)
}

fn split_token(token: &str) -> Result<(&str, &str), ConfigError> {
    match token.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => Err(ConfigError::NotKeyValue {
            token: token.into(),
        }),
    }
}

/// `a.b.c.d/len`, strictly: decimal prefix without sign or leading zero.
fn parse_cidr(value: &str) -> Option<Ipv4Cidr> {
    let (addr, len) = value.split_once('/')?;
    let addr = Ipv4Address::from_str(addr).ok()?;
    let digits_ok = !len.is_empty()
        && len.len() <= 2
        && len.bytes().all(|b| b.is_ascii_digit())
        && !(len.len() > 1 && len.starts_with('0'));
    if !digits_ok {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    (len <= 32).then(|| Ipv4Cidr::new(addr, len))
}

fn parse_ip(value: &str) -> Result<Ipv4Cidr, ConfigError> {
    let cidr = parse_cidr(value).ok_or_else(|| ConfigError::BadIp {
        value: value.into(),
    })?;
    match host_problem(cidr) {
        None => Ok(cidr),
        Some(reason) => Err(ConfigError::IpNotHost {
            value: value.into(),
            reason,
        }),
    }
}

/// Why `cidr` cannot be this guest's address, if it cannot.
fn host_problem(cidr: Ipv4Cidr) -> Option<&'static str> {
    let addr = cidr.address();
    if addr.is_unspecified() {
        return Some("that is the unspecified address");
    }
    if addr.is_broadcast() {
        return Some("that is the limited broadcast address");
    }
    if addr.is_multicast() {
        return Some("that is a multicast address");
    }
    if addr.is_loopback() {
        return Some("that is a loopback address");
    }
    if cidr.prefix_len() == 0 {
        return Some("a /0 prefix has no subnet");
    }
    if cidr.prefix_len() <= 30 {
        if addr == cidr.network().address() {
            return Some("that is the subnet's network address");
        }
        if Some(addr) == cidr.broadcast() {
            return Some("that is the subnet's broadcast address");
        }
    }
    None
}

fn parse_gateway(value: &str, ip: Ipv4Cidr) -> Result<Ipv4Address, ConfigError> {
    let gateway = Ipv4Address::from_str(value).map_err(|_| ConfigError::BadGateway {
        value: value.into(),
    })?;
    if gateway == ip.address() {
        return Err(ConfigError::GatewayIsSelf { gateway });
    }
    let on_link = ip.contains_addr(&gateway)
        && gateway != ip.network().address()
        && (ip.prefix_len() > 30 || Some(gateway) != ip.broadcast());
    if !on_link {
        return Err(ConfigError::GatewayOffSubnet { gateway, ip });
    }
    Ok(gateway)
}

const LEVELS: [(&str, LevelFilter); 6] = [
    ("off", LevelFilter::Off),
    ("error", LevelFilter::Error),
    ("warn", LevelFilter::Warn),
    ("info", LevelFilter::Info),
    ("debug", LevelFilter::Debug),
    ("trace", LevelFilter::Trace),
];

/// Case-insensitive, as `log` itself is.
fn parse_level(value: &str) -> Result<LevelFilter, ConfigError> {
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, level)| *level)
        .ok_or_else(|| ConfigError::BadLog {
            value: value.into(),
        })
}

/// The lower-case name `log=` takes.
pub fn level_name(level: LevelFilter) -> &'static str {
    LEVELS
        .iter()
        .find(|(_, l)| *l == level)
        .map_or("info", |(name, _)| name)
}

fn parse_name(value: &str) -> Result<Name, ConfigError> {
    let bad = || ConfigError::BadName {
        value: value.into(),
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if value.is_empty() || !value.chars().all(ok_char) {
        return Err(bad());
    }
    let mut name = Name::new();
    name.push_str(value).map_err(|_| bad())?;
    Ok(name)
}
