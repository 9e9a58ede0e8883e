//! `--dhcp ADDRESS/PREFIX[,lease=SECS]` (or `[dhcp]` in the file): the back
//! end's DHCP server for its seats. It answers at ADDRESS (its own endpoint
//! on the fabric, which must be no seat's and not the gateway's) and hands
//! each seat with `ip=` that address on the PREFIX subnet, with the gateway
//! as router when there is one on the subnet.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{ConfigError, GatewayConfig, GuestConfig};

/// Lease time when none is given: an hour.
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// The shortest lease accepted (the client takes none shorter than 8 s).
pub const MIN_LEASE_SECS: u32 = 10;

/// The DHCP server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's own address (the server identifier).
    pub address: Ipv4Addr,
    /// The seats' subnet.
    pub prefix: u8,
    pub lease_secs: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDhcp {
    address: String,
    lease: Option<i64>,
}

impl DhcpConfig {
    /// The router the seats are given: the gateway, if it is on the subnet.
    pub fn router(&self, gateway: Option<&GatewayConfig>) -> Option<Ipv4Addr> {
        gateway
            .map(|g| g.address)
            .filter(|a| self.contains(*a) && *a != self.address)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(a) & mask == u32::from(self.address) & mask
    }
}

fn parse_address(field: &str, text: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    text.split_once('/')
        .and_then(|(a, p)| {
            Some((
                a.parse::<Ipv4Addr>().ok()?,
                p.parse::<u8>().ok().filter(|p| (8..=30).contains(p))?,
            ))
        })
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("{text:?} is not ADDRESS/PREFIX, prefix 8 to 30 (e.g. 10.77.0.254/24: the server's own address on the seats' subnet)"),
            )
        })
}

fn check_lease(field: &str, secs: i64) -> Result<u32, ConfigError> {
    match u32::try_from(secs) {
        Ok(s) if s >= MIN_LEASE_SECS => Ok(s),
        _ => Err(ConfigError::new(
            field,
            format!("{secs} is not a lease time in seconds ({MIN_LEASE_SECS} to 4294967295; default {DEFAULT_LEASE_SECS})"),
        )),
    }
}

/// `--dhcp ADDRESS/PREFIX[,lease=SECS]`.
pub(super) fn from_flag(flag: &str) -> Result<DhcpConfig, ConfigError> {
    let mut parts = flag.split(',');
    let (address, prefix) = parse_address("--dhcp", parts.next().unwrap_or(""))?;
    let mut lease_secs = DEFAULT_LEASE_SECS;
    for part in parts {
        match part.split_once('=') {
            Some(("lease", v)) => {
                let secs = v.parse::<i64>().map_err(|_| {
                    ConfigError::new("--dhcp lease", format!("{v:?} is not a number of seconds"))
                })?;
                lease_secs = check_lease("--dhcp lease", secs)?;
            }
            _ => {
                return Err(ConfigError::new(
                    "--dhcp",
                    format!("{part:?}: unknown (known: lease=SECS)"),
                ))
            }
        }
    }
    Ok(DhcpConfig {
        address,
        prefix,
        lease_secs,
    })
}

pub(super) fn from_file(d: &FileDhcp) -> Result<DhcpConfig, ConfigError> {
    let (address, prefix) = parse_address("dhcp.address", &d.address)?;
    let lease_secs = match d.lease {
        Some(s) => check_lease("dhcp.lease", s)?,
        None => DEFAULT_LEASE_SECS,
    };
    Ok(DhcpConfig {
        address,
        prefix,
        lease_secs,
    })
}

/// The server's address is nobody else's, and every seat's `ip=` is on its
/// subnet (a seat off it could never be answered).
pub(super) fn check(
    dhcp: &DhcpConfig,
    guests: &[GuestConfig],
    gateway: Option<&GatewayConfig>,
) -> Result<(), ConfigError> {
    if gateway.is_some_and(|g| g.address == dhcp.address) {
        return Err(ConfigError::new(
            "dhcp.address",
            format!(
                "{} is the gateway's address; the DHCP server needs one of its own",
                dhcp.address
            ),
        ));
    }
    for (i, g) in guests.iter().enumerate() {
        let Some(ip) = g.ip else { continue };
        if ip == dhcp.address {
            return Err(ConfigError::new(
                format!("guest[{i}].ip"),
                format!("{ip} is the DHCP server's address"),
            ));
        }
        if !dhcp.contains(ip) {
            return Err(ConfigError::new(
                format!("guest[{i}].ip"),
                format!(
                    "{ip} is not on the DHCP server's subnet {}/{}",
                    dhcp.address, dhcp.prefix
                ),
            ));
        }
    }
    Ok(())
}
