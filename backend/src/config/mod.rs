//! Configuration: a TOML file or command-line flags, validated into
//! [`Config`]. Every error names the field and says what to fix.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod dhcp;
pub use dhcp::DhcpConfig;
mod limits;
pub use limits::GuestLimits;
mod socket_group;
pub use socket_group::SocketGroup;

/// Smallest window: header, rings and a handful of slots.
pub const MIN_WINDOW: usize = 1 << 20;
/// Largest window one guest may have.
pub const MAX_WINDOW: usize = 1 << 30;
/// The busy-polling budget when none is configured, in microseconds: a
/// worker keeps polling its guests' rings for this long after the last
/// real work before it arms their notifications and sleeps. An idle
/// system never spins.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;
/// The largest busy-polling budget accepted: beyond a few milliseconds
/// spinning only burns a core.
pub const MAX_BUSY_POLL_US: u32 = 10_000;

/// Which fabric the guests are served on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderConfig {
    /// The software fabric, in process.
    Sim,
    /// libibverbs.
    Rdma {
        device: Option<String>,
        port: u8,
        gid_index: u8,
    },
}

/// How a seat's guest reaches the back end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// ivshmem-doorbell: the UNIX socket QEMU's `-chardev socket,path=`
    /// (or a hosted guest) connects to.
    Socket(PathBuf),
    /// Xen: the name of the domain (as `xl list` shows it) whose `ibchan`
    /// device this seat serves.
    ///
    /// A seat names a domain rather than a domid, and the back end writes
    /// the device's xenstore nodes itself (the backend directory and the
    /// frontend's `backend`/`backend-id`) as soon as a domain of that name
    /// appears. So attaching a domain needs nothing in its xl
    /// configuration, a rebooted domain (new domid, same name) finds its
    /// seat again, and no toolstack hotplug script is involved.
    XenDomain(String),
}

impl Attach {
    /// The socket, for ivshmem seats.
    pub fn socket(&self) -> Option<&Path> {
        match self {
            Attach::Socket(p) => Some(p),
            Attach::XenDomain(_) => None,
        }
    }

    /// The domain name, for Xen seats.
    pub fn xen_domain(&self) -> Option<&str> {
        match self {
            Attach::Socket(_) => None,
            Attach::XenDomain(d) => Some(d),
        }
    }
}

/// One guest's seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    pub name: String,
    /// Where the guest comes from: a socket (QEMU) or a Xen domain.
    pub attach: Attach,
    /// Size of the shared window in bytes.
    pub window: usize,
    /// P_Keys this guest may use; the first is its port's.
    pub pkeys: Vec<u16>,
    /// A fixed IPv4 address, if the guest has one: the back end then lets
    /// the guest send IPv4 and ARP only as this address (port security,
    /// `crate::port_security`), and the gateway believes it only from this
    /// seat.
    pub ip: Option<Ipv4Addr>,
    /// A fixed IPv6 address (`ip6=`): the back end then lets the guest send
    /// IPv6 only from it or its link-local address, and neighbour discovery
    /// only about them with its own link-layer address; the gateway believes
    /// it only from this seat.
    pub ip6: Option<Ipv6Addr>,
    /// What this guest may hold in the back end.
    pub limits: GuestLimits,
}

/// The gateway between the fabric and a Linux TAP interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub tap: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Linux's IPv6 address on the TAP and its prefix, routed to the fabric
    /// (`--gateway ibgw0=10.77.0.1/24,fd77::1/64`).
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

/// Everything the daemon needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub provider: ProviderConfig,
    /// IB MTU in bytes (256..=4096, a power of two).
    pub mtu: usize,
    pub control: PathBuf,
    pub pcap: Option<PathBuf>,
    pub workers: Option<usize>,
    /// Busy polling: how long (µs) a worker keeps polling its guests'
    /// rings after the last real work before it sleeps; 0 turns it off.
    pub busy_poll_us: u32,
    pub gateway: Option<GatewayConfig>,
    /// The DHCP server for the seats (`--dhcp`), if any.
    pub dhcp: Option<DhcpConfig>,
    /// The xenstore to use instead of the default (`/run/xenstored/socket`,
    /// else `/dev/xen/xenbus`). Only used when a seat has a Xen domain.
    pub xenstore: Option<PathBuf>,
    pub guests: Vec<GuestConfig>,
    /// Who besides the owner may connect to the back end's sockets
    /// (`None`: nobody, mode 0600).
    pub socket_group: Option<SocketGroup>,
}

impl Config {
    /// Whether any seat serves a Xen domain (the supervisor then opens
    /// xenstore).
    pub fn has_xen_seats(&self) -> bool {
        self.guests.iter().any(|g| g.attach.xen_domain().is_some())
    }
}

/// A configuration mistake, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---- the file format ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    backend: FileBackend,
    rdma: Option<FileRdma>,
    gateway: Option<FileGateway>,
    dhcp: Option<dhcp::FileDhcp>,
    #[serde(default)]
    guest: Vec<FileGuest>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    provider: Option<String>,
    mtu: Option<usize>,
    control: Option<PathBuf>,
    pcap: Option<PathBuf>,
    workers: Option<usize>,
    busy_poll_us: Option<i64>,
    xenstore: Option<PathBuf>,
    socket_group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRdma {
    device: Option<String>,
    port: Option<u8>,
    gid_index: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGateway {
    tap: String,
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGuest {
    name: String,
    socket: Option<PathBuf>,
    xen_domain: Option<String>,
    window: Option<toml::Value>,
    pkeys: Option<Vec<toml::Value>>,
    ip: Option<String>,
    ip6: Option<String>,
    max_mcast_groups: Option<toml::Value>,
    max_dests: Option<toml::Value>,
    max_qps: Option<toml::Value>,
    max_pending_resolves: Option<toml::Value>,
    max_rc_conns: Option<toml::Value>,
}

/// Command-line overrides and additions, as parsed by clap.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub provider: Option<String>,
    pub mtu: Option<usize>,
    pub control: Option<PathBuf>,
    pub pcap: Option<PathBuf>,
    pub workers: Option<usize>,
    /// `--busy-poll-us N`
    pub busy_poll_us: Option<i64>,
    pub rdma_device: Option<String>,
    pub rdma_port: Option<u8>,
    pub rdma_gid_index: Option<u8>,
    /// `--gateway TAP=ADDR/PREFIX[,ADDR6/PREFIX6]`
    pub gateway: Option<String>,
    /// `--xenstore PATH`
    pub xenstore: Option<PathBuf>,
    /// `--dhcp ADDRESS/PREFIX[,lease=SECS]`
    pub dhcp: Option<String>,
    /// `--guest name=g1,socket=/path[,window=8M][,pkey=0xffff][,ip=10.77.0.2]`
    /// or `--guest name=g1,xen-domain=NAME[,...]`, with the limits of
    /// [`GuestLimits`] as further keys (`max-dests=64`, ...)
    pub guests: Vec<String>,
    /// `--socket-group NAME`
    pub socket_group: Option<String>,
}

pub const DEFAULT_CONTROL: &str = "/tmp/ib-backend.control";

impl Config {
    /// Reads a TOML file, then applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new("", format!("cannot read config file {}: {e}", p.display()))
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    ConfigError::new("", format!("{}: {}", p.display(), e.to_string().trim_end()))
                })?
            }
            None => FileConfig::default(),
        };
        Config::build(file, overrides)
    }

    /// Parses TOML text.
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file = toml::from_str::<FileConfig>(text)
            .map_err(|e| ConfigError::new("", e.to_string().trim_end().to_owned()))?;
        Config::build(file, &Overrides::default())
    }

    fn build(file: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let provider_name = o
            .provider
            .clone()
            .or(file.backend.provider.clone())
            .unwrap_or_else(|| "sim".to_owned());
        let provider = match provider_name.as_str() {
            "sim" => ProviderConfig::Sim,
            "rdma" => {
                let r = file.rdma.as_ref();
                ProviderConfig::Rdma {
                    device: o
                        .rdma_device
                        .clone()
                        .or_else(|| r.and_then(|r| r.device.clone())),
                    port: o.rdma_port.or(r.and_then(|r| r.port)).unwrap_or(1),
                    gid_index: o
                        .rdma_gid_index
                        .or(r.and_then(|r| r.gid_index))
                        .unwrap_or(0),
                }
            }
            other => {
                return Err(ConfigError::new(
                    "backend.provider",
                    format!("unknown provider {other:?} (use \"sim\" or \"rdma\")"),
                ))
            }
        };
        if let ProviderConfig::Rdma { port: 0, .. } = provider {
            return Err(ConfigError::new("rdma.port", "ports are numbered from 1"));
        }
        let mtu = o.mtu.or(file.backend.mtu).unwrap_or(2048);
        if !(256..=4096).contains(&mtu) || !mtu.is_power_of_two() {
            return Err(ConfigError::new(
                "backend.mtu",
                format!("{mtu} is not an IB MTU (256, 512, 1024, 2048 or 4096)"),
            ));
        }
        let workers = o.workers.or(file.backend.workers);
        if workers == Some(0) {
            return Err(ConfigError::new("backend.workers", "must be at least 1"));
        }
        let busy_poll_us = match (o.busy_poll_us, file.backend.busy_poll_us) {
            (Some(us), _) => check_busy_poll("--busy-poll-us", us)?,
            (None, Some(us)) => check_busy_poll("backend.busy_poll_us", us)?,
            (None, None) => DEFAULT_BUSY_POLL_US,
        };
        let gateway = match (&o.gateway, &file.gateway) {
            (Some(flag), _) => Some(parse_gateway_flag(flag)?),
            (None, Some(g)) => Some(parse_gateway(&g.tap, &g.address, "gateway")?),
            (None, None) => None,
        };
        let mut guests = Vec::new();
        for (i, g) in file.guest.iter().enumerate() {
            guests.push(guest_from_file(i, g)?);
        }
        for (i, flag) in o.guests.iter().enumerate() {
            guests.push(guest_from_flag(i, flag)?);
        }
        check_unique(&guests)?;
        let dhcp = match (&o.dhcp, &file.dhcp) {
            (Some(flag), _) => Some(dhcp::from_flag(flag)?),
            (None, Some(d)) => Some(dhcp::from_file(d)?),
            (None, None) => None,
        };
        if let Some(d) = &dhcp {
            dhcp::check(d, &guests, gateway.as_ref())?;
        }
        let socket_group = match (&o.socket_group, &file.backend.socket_group) {
            (Some(name), _) => Some(socket_group::resolve(name, "--socket-group")?),
            (None, Some(name)) => Some(socket_group::resolve(name, "backend.socket_group")?),
            (None, None) => None,
        };
        Ok(Config {
            provider,
            mtu,
            control: o
                .control
                .clone()
                .or(file.backend.control)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL)),
            pcap: o.pcap.clone().or(file.backend.pcap),
            workers,
            busy_poll_us,
            gateway,
            dhcp,
            xenstore: o.xenstore.clone().or(file.backend.xenstore),
            guests,
            socket_group,
        })
    }
}

/// Worker threads when the configuration does not say: one per core, or,
/// with busy polling on, one per two cores. A busy-polling worker keeps its
/// core while its guests are active, and the guests need cores too: on 2
/// cores, one worker for two guests took UDP RR from 13–59 µs (a worker
/// each) to 7–13 µs, with TCP unchanged (docs/busy-polling.md).
pub fn default_workers(cores: usize, busy_poll_us: u32) -> usize {
    if busy_poll_us == 0 {
        cores.max(1)
    } else {
        cores.div_ceil(2).max(1)
    }
}

/// A busy-polling budget in microseconds: 0 (off) to [`MAX_BUSY_POLL_US`].
fn check_busy_poll(field: &str, us: i64) -> Result<u32, ConfigError> {
    match u32::try_from(us) {
        Ok(us) if us <= MAX_BUSY_POLL_US => Ok(us),
        _ => Err(ConfigError::new(
            field,
            format!(
                "{us} µs is outside 0..={MAX_BUSY_POLL_US} (microseconds to keep polling after the last work before sleeping; 0 turns busy polling off, {DEFAULT_BUSY_POLL_US} is the default)"
            ),
        )),
    }
}

fn check_unique(guests: &[GuestConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut sockets = HashSet::new();
    let mut domains = HashSet::new();
    let mut ips = HashSet::new();
    let mut ip6s = HashSet::new();
    for (i, g) in guests.iter().enumerate() {
        if !names.insert(&g.name) {
            return Err(ConfigError::new(
                format!("guest[{i}].name"),
                format!("{:?} is used twice", g.name),
            ));
        }
        match &g.attach {
            Attach::Socket(socket) => {
                if !sockets.insert(socket.clone()) {
                    return Err(ConfigError::new(
                        format!("guest[{i}].socket"),
                        format!("{} is used by two guests", socket.display()),
                    ));
                }
            }
            Attach::XenDomain(domain) => {
                if !domains.insert(domain.clone()) {
                    return Err(ConfigError::new(
                        format!("guest[{i}].xen_domain"),
                        format!("{domain:?} is served by two guests"),
                    ));
                }
            }
        }
        if let Some(ip) = g.ip {
            if !ips.insert(ip) {
                return Err(ConfigError::new(
                    format!("guest[{i}].ip"),
                    format!("{ip} is used by two guests"),
                ));
            }
        }
        if let Some(ip6) = g.ip6 {
            if !ip6s.insert(ip6) {
                return Err(ConfigError::new(
                    format!("guest[{i}].ip6"),
                    format!("{ip6} is used by two guests"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses sizes like `8M`, `1G`, `65536`, `512K`.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 1usize << 10),
        (i, 'M' | 'm') => (&t[..i], 1 << 20),
        (i, 'G' | 'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(mult)
}

/// Parses a P_Key like `0xffff`, `0x8001` or `32769`.
pub fn parse_pkey(text: &str) -> Option<u16> {
    let t = text.trim();
    let value = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok()?,
        None => t.parse::<u16>().ok()?,
    };
    (value & 0x7fff != 0).then_some(value)
}

fn check_window(field: &str, window: usize) -> Result<usize, ConfigError> {
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        return Err(ConfigError::new(
            field,
            format!(
                "{window} bytes is outside {}..={} (e.g. window = \"8M\")",
                MIN_WINDOW, MAX_WINDOW
            ),
        ));
    }
    if !window.is_power_of_two() {
        return Err(ConfigError::new(
            field,
            format!("{window} bytes is not a power of two (QEMU maps the window as a PCI BAR; e.g. \"8M\")"),
        ));
    }
    Ok(window)
}

fn guest_from_file(i: usize, g: &FileGuest) -> Result<GuestConfig, ConfigError> {
    let field = |f: &str| format!("guest[{i}].{f}");
    check_name(&field("name"), &g.name)?;
    let window = match &g.window {
        None => 8 << 20,
        Some(toml::Value::Integer(n)) => usize::try_from(*n)
            .map_err(|_| ConfigError::new(field("window"), format!("{n} is not a size")))?,
        Some(toml::Value::String(s)) => parse_size(s).ok_or_else(|| {
            ConfigError::new(
                field("window"),
                format!("{s:?} is not a size (e.g. \"8M\")"),
            )
        })?,
        Some(other) => {
            return Err(ConfigError::new(
                field("window"),
                format!("{other} is not a size (e.g. \"8M\")"),
            ))
        }
    };
    let window = check_window(&field("window"), window)?;
    let pkeys = match &g.pkeys {
        None => vec![0xffff],
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                field("pkeys"),
                "needs at least one P_Key (e.g. [\"0xffff\"])",
            ))
        }
        Some(list) => list
            .iter()
            .map(|v| {
                match v {
                    toml::Value::String(s) => parse_pkey(s),
                    toml::Value::Integer(n) => u16::try_from(*n).ok().filter(|k| k & 0x7fff != 0),
                    _ => None,
                }
                .ok_or_else(|| {
                    ConfigError::new(
                        field("pkeys"),
                        format!("{v} is not a P_Key (e.g. \"0xffff\" or \"0x8001\")"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ip =
        match &g.ip {
            None => None,
            Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                ConfigError::new(field("ip"), format!("{s:?} is not an IPv4 address"))
            })?),
        };
    let ip6 = match &g.ip6 {
        None => None,
        Some(s) => Some(parse_seat_ip6(s, &field("ip6"))?),
    };
    let attach = match (&g.socket, &g.xen_domain) {
        (Some(socket), None) => Attach::Socket(socket.clone()),
        (None, Some(domain)) => {
            check_domain(&field("xen_domain"), domain)?;
            Attach::XenDomain(domain.clone())
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field("xen_domain"),
                "give either socket (a QEMU guest) or xen_domain (a Xen domain), not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                field("socket"),
                "missing (socket = \"/tmp/g1.sock\" for a QEMU guest, or xen_domain = \"NAME\" for a Xen domain)",
            ))
        }
    };
    let limits = GuestLimits::from_file(
        &[
            ("max_mcast_groups", g.max_mcast_groups.as_ref()),
            ("max_dests", g.max_dests.as_ref()),
            ("max_qps", g.max_qps.as_ref()),
            ("max_pending_resolves", g.max_pending_resolves.as_ref()),
            ("max_rc_conns", g.max_rc_conns.as_ref()),
        ],
        field,
    )?;
    Ok(GuestConfig {
        name: g.name.clone(),
        attach,
        window,
        pkeys,
        ip,
        ip6,
        limits,
    })
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::new(
            field,
            format!("{name:?} must be 1-32 letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

/// A Xen domain name as `xl create` accepts it and xenstore stores it; the
/// back end only compares it with `/local/domain/<id>/name`.
fn check_domain(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ',' && c != '/')
    {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a domain name (1-64 printable characters, no ',' or '/')"),
        ));
    }
    Ok(())
}

fn guest_from_flag(i: usize, flag: &str) -> Result<GuestConfig, ConfigError> {
    let field = |f: &str| format!("--guest #{} {f}", i + 1);
    let mut name = None;
    let mut socket = None;
    let mut domain = None;
    let mut window = 8 << 20;
    let mut pkeys = Vec::new();
    let mut ip = None;
    let mut ip6 = None;
    let mut limits = GuestLimits::default();
    for part in flag.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(ConfigError::new(
                field(""),
                format!("{part:?} is not key=value (e.g. --guest name=g1,socket=/tmp/g1.sock)"),
            ));
        };
        match k {
            "name" => name = Some(v.to_owned()),
            "socket" => socket = Some(PathBuf::from(v)),
            "xen-domain" => {
                check_domain(&field("xen-domain"), v)?;
                domain = Some(v.to_owned());
            }
            "window" => {
                let size = parse_size(v).ok_or_else(|| {
                    ConfigError::new(field("window"), format!("{v:?} is not a size (e.g. 8M)"))
                })?;
                window = check_window(&field("window"), size)?;
            }
            "pkey" => pkeys.push(parse_pkey(v).ok_or_else(|| {
                ConfigError::new(field("pkey"), format!("{v:?} is not a P_Key (e.g. 0xffff)"))
            })?),
            "ip" => {
                ip = Some(v.parse::<Ipv4Addr>().map_err(|_| {
                    ConfigError::new(field("ip"), format!("{v:?} is not an IPv4 address"))
                })?)
            }
            "ip6" => ip6 = Some(parse_seat_ip6(v, &field("ip6"))?),
            other => {
                if !limits.set(other, v.parse::<u64>().ok(), &field(other))? {
                    return Err(ConfigError::new(
                        field(""),
                        format!(
                            "unknown key {other:?} (known: name, socket, xen-domain, window, \
                             pkey, ip, ip6, {})",
                            limits::FLAG_KEYS
                        ),
                    ));
                }
            }
        }
    }
    let name = name.ok_or_else(|| ConfigError::new(field("name"), "missing (e.g. name=g1)"))?;
    check_name(&field("name"), &name)?;
    let attach = match (socket, domain) {
        (Some(socket), None) => Attach::Socket(socket),
        (None, Some(domain)) => Attach::XenDomain(domain),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field(""),
                "give socket= (a QEMU guest) or xen-domain= (a Xen domain), not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                field("socket"),
                "missing (e.g. socket=/tmp/g1.sock, or xen-domain=NAME for a Xen domain)",
            ))
        }
    };
    if pkeys.is_empty() {
        pkeys.push(0xffff);
    }
    Ok(GuestConfig {
        name,
        attach,
        window,
        pkeys,
        ip,
        ip6,
        limits,
    })
}

/// A seat's `ip6=`: a unicast address that is not link-local (the
/// link-local address comes from the port GUID).
fn parse_seat_ip6(v: &str, field: &str) -> Result<Ipv6Addr, ConfigError> {
    v.parse::<Ipv6Addr>()
        .ok()
        .filter(|a| {
            !a.is_multicast()
                && !a.is_unspecified()
                && !a.is_loopback()
                && !a.is_unicast_link_local()
        })
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("{v:?} is not a unicast IPv6 address (not link-local; e.g. fd77::2)"),
            )
        })
}

fn parse_gateway(tap: &str, address: &str, field: &str) -> Result<GatewayConfig, ConfigError> {
    if tap.is_empty() || tap.len() > 15 {
        return Err(ConfigError::new(
            format!("{field}.tap"),
            format!("{tap:?} is not an interface name (1-15 characters)"),
        ));
    }
    let bad = |what: &str| {
        ConfigError::new(
            format!("{field}.address"),
            format!(
                "{address:?}: {what} (e.g. 10.77.0.1/24, or 10.77.0.1/24,fd77::1/64 for both families)"
            ),
        )
    };
    let mut ipv4 = None;
    let mut ipv6 = None;
    for part in address.split(',') {
        let (a, p) = part
            .split_once('/')
            .ok_or_else(|| bad(&format!("{part:?} is not ADDRESS/PREFIX")))?;
        if let Ok(a) = a.parse::<Ipv4Addr>() {
            let p = p
                .parse::<u8>()
                .ok()
                .filter(|p| (8..=30).contains(p))
                .ok_or_else(|| bad(&format!("{part:?}: the IPv4 prefix must be 8 to 30")))?;
            if ipv4.replace((a, p)).is_some() {
                return Err(bad("two IPv4 addresses"));
            }
        } else if let Ok(a) = a.parse::<Ipv6Addr>() {
            let p = p
                .parse::<u8>()
                .ok()
                .filter(|p| (8..=126).contains(p))
                .ok_or_else(|| bad(&format!("{part:?}: the IPv6 prefix must be 8 to 126")))?;
            if a.is_multicast()
                || a.is_unspecified()
                || a.is_loopback()
                || a.is_unicast_link_local()
            {
                return Err(bad(&format!(
                    "{part:?} is not a unicast address for a subnet (not link-local)"
                )));
            }
            if ipv6.replace((a, p)).is_some() {
                return Err(bad("two IPv6 addresses"));
            }
        } else {
            return Err(bad(&format!("{part:?} is not ADDRESS/PREFIX")));
        }
    }
    let (ip, prefix) = ipv4.ok_or_else(|| bad("no IPv4 ADDRESS/PREFIX"))?;
    Ok(GatewayConfig {
        tap: tap.to_owned(),
        address: ip,
        prefix,
        ipv6,
    })
}

fn parse_gateway_flag(flag: &str) -> Result<GatewayConfig, ConfigError> {
    let (tap, address) = flag.split_once('=').ok_or_else(|| {
        ConfigError::new(
            "--gateway",
            format!(
                "{flag:?} is not TAP=ADDRESS/PREFIX[,ADDRESS6/PREFIX6] (e.g. ibgw0=10.77.0.1/24,fd77::1/64)"
            ),
        )
    })?;
    parse_gateway(tap, address, "--gateway")
}

#[cfg(test)]
mod tests;
