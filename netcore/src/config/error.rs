//! What can be wrong with a configuration string, each saying how to fix it.

use alloc::string::String;
use core::fmt;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

/// The options [`super::NetConfig::parse`] knows, as the errors list them.
pub const KNOWN_OPTIONS: &str = "ip, gw, services, log, name, tcp-budget, ip6, gw6, cm";
const KNOWN_SERVICES: &str = "echo, http, discard, chargen, none";
const KNOWN_LEVELS: &str = "off, error, warn, info, debug, trace";

/// Why `services=` was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServicesProblem {
    /// A name that is not a service.
    Unknown(String),
    /// An empty name: `services=`, `services=echo,,http`, a trailing comma.
    Empty,
    /// The same name twice.
    Repeated(String),
    /// `none` together with other names.
    NoneNotAlone,
}

/// A configuration string that cannot be used. `Display` names the
/// offending token and says what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A token without `=`, or with nothing before it.
    NotKeyValue { token: String },
    /// A key this crate does not know.
    UnknownOption { token: String },
    /// The same key twice.
    Duplicate { first: String, second: String },
    /// `ip=` is not `a.b.c.d/len`.
    BadIp { value: String },
    /// `ip=` parses but is not a host address on its subnet.
    IpNotHost { value: String, reason: &'static str },
    /// `gw=` is not `a.b.c.d`.
    BadGateway { value: String },
    /// `gw=` is not on `ip=`'s subnet.
    GatewayOffSubnet { gateway: Ipv4Address, ip: Ipv4Cidr },
    /// `gw=` is the guest's own address.
    GatewayIsSelf { gateway: Ipv4Address },
    /// `gw=` with `ip=dhcp`: the router comes from the DHCP server.
    GatewayWithDhcp { value: String },
    BadServices {
        value: String,
        problem: ServicesProblem,
    },
    /// `log=` is not a level.
    BadLog { value: String },
    /// `name=` is empty, too long or has characters other than
    /// `a-z A-Z 0-9 - . _`.
    BadName { value: String },
    /// `tcp-budget=` is not a number of KiB in range.
    BadTcpBudget { value: String },
    /// No `ip=`.
    MissingIp,
    /// `ip6=` is not `ADDR/PREFIX`.
    BadIp6 { value: String },
    /// `ip6=` parses but cannot be a host's address.
    Ip6NotHost { value: String, reason: &'static str },
    /// `gw6=` is not an IPv6 address.
    BadGateway6 { value: String },
    /// `gw6=` is neither link-local nor in `ip6=`'s prefix (or not unicast).
    Gateway6OffLink {
        gateway: Ipv6Address,
        ip6: Option<Ipv6Cidr>,
    },
    /// `gw6=` is the guest's own `ip6=`.
    Gateway6IsSelf { gateway: Ipv6Address },
    /// `cm=` is not `off`, `on` or an MTU in range.
    BadConnectedMode { value: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigError::*;
        match self {
            NotKeyValue { token } => {
                write!(f, "\"{token}\" is not key=value (known: {KNOWN_OPTIONS})")
            }
            UnknownOption { token } => {
                write!(f, "unknown option \"{token}\" (known: {KNOWN_OPTIONS})")
            }
            Duplicate { first, second } => write!(
                f,
                "\"{first}\" and \"{second}\": the same option twice; give each option once"
            ),
            BadIp { value } => write!(
                f,
                "ip={value}: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"
            ),
            IpNotHost { value, reason } => write!(
                f,
                "ip={value}: {reason}; give a host address on the subnet (example: ip=10.77.0.2/24)"
            ),
            BadGateway { value } => {
                write!(f, "gw={value}: not an IPv4 address (example: gw=10.77.0.1)")
            }
            GatewayOffSubnet { gateway, ip } => write!(
                f,
                "gw={gateway}: not on the subnet of ip={ip}; the gateway must be reachable directly"
            ),
            GatewayIsSelf { gateway } => write!(
                f,
                "gw={gateway}: that is this guest's own address; give the router's address or leave gw= out"
            ),
            GatewayWithDhcp { value } => write!(
                f,
                "gw={value}: with ip=dhcp the router comes from the DHCP server; leave gw= out"
            ),
            BadServices { value, problem } => {
                write!(f, "services={value}: ")?;
                match problem {
                    ServicesProblem::Unknown(name) => {
                        write!(f, "unknown service \"{name}\" (known: {KNOWN_SERVICES})")
                    }
                    ServicesProblem::Empty => write!(
                        f,
                        "empty service name; separate names with single commas (known: {KNOWN_SERVICES})"
                    ),
                    ServicesProblem::Repeated(name) => {
                        write!(f, "\"{name}\" is listed twice; list each service once")
                    }
                    ServicesProblem::NoneNotAlone => {
                        write!(f, "\"none\" must stand alone (example: services=none)")
                    }
                }
            }
            BadLog { value } => write!(f, "log={value}: not a log level (known: {KNOWN_LEVELS})"),
            BadName { value } => write!(
                f,
                "name={value}: a name is 1 to 32 of the characters a-z A-Z 0-9 - . _ (example: name=g1)"
            ),
            BadTcpBudget { value } => write!(
                f,
                "tcp-budget={value}: the KiB of socket buffers TCP services may add for bursts of clients, 0 to 1048576 (example: tcp-budget=4096)"
            ),
            MissingIp => f.write_str(
                "missing required option ip= (example: ip=10.77.0.2/24, or ip=dhcp)",
            ),
            BadIp6 { value } => write!(
                f,
                "ip6={value}: not an IPv6 address/prefix (example: ip6=fd77::2/64)"
            ),
            Ip6NotHost { value, reason } => write!(
                f,
                "ip6={value}: {reason}; give a unicast address and its prefix (example: ip6=fd77::2/64)"
            ),
            BadGateway6 { value } => {
                write!(f, "gw6={value}: not an IPv6 address (example: gw6=fd77::1)")
            }
            Gateway6OffLink { gateway, ip6 } => {
                write!(f, "gw6={gateway}: not a unicast neighbour; give a link-local address")?;
                match ip6 {
                    Some(ip6) => write!(f, " or one in ip6={ip6}'s prefix"),
                    None => f.write_str(" or give ip6= with the gateway's prefix"),
                }
            }
            Gateway6IsSelf { gateway } => write!(
                f,
                "gw6={gateway}: that is this guest's own address; give the router's address or leave gw6= out"
            ),
            BadConnectedMode { value } => write!(
                f,
                "cm={value}: connected mode is off, on (IP MTU 65520) or the connected IP MTU, 1280 to 65520 (example: cm=on, cm=32768)"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}
