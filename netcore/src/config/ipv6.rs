//! `ip6=ADDR/PREFIX` and `gw6=ADDR`: a static IPv6 address besides the
//! link-local one every guest has (from its port GUID), and the IPv6 next
//! hop off that prefix.

use core::str::FromStr;

use smoltcp::wire::{Ipv6Address, Ipv6Cidr};

use super::ConfigError;

/// `ADDR/PREFIX`, strictly: decimal prefix 1 to 128 without sign or
/// leading zero.
fn parse_cidr6(value: &str) -> Option<Ipv6Cidr> {
    let (addr, len) = value.split_once('/')?;
    let addr = Ipv6Address::from_str(addr).ok()?;
    let digits_ok = !len.is_empty()
        && len.len() <= 3
        && len.bytes().all(|b| b.is_ascii_digit())
        && !(len.len() > 1 && len.starts_with('0'));
    if !digits_ok {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    (len <= 128).then(|| Ipv6Cidr::new(addr, len))
}

/// Why `addr` cannot be given with `ip6=`, if it cannot.
fn host_problem6(cidr: Ipv6Cidr) -> Option<&'static str> {
    let addr = cidr.address();
    if addr.is_unspecified() {
        return Some("that is the unspecified address");
    }
    if addr.is_multicast() {
        return Some("that is a multicast address");
    }
    if addr.is_loopback() {
        return Some("that is the loopback address");
    }
    if addr.is_unicast_link_local() {
        return Some("the link-local address comes from the port GUID and is always there");
    }
    if cidr.prefix_len() == 0 {
        return Some("a /0 prefix has no subnet");
    }
    None
}

pub(super) fn parse_ip6(value: &str) -> Result<Ipv6Cidr, ConfigError> {
    let cidr = parse_cidr6(value).ok_or_else(|| ConfigError::BadIp6 {
        value: value.into(),
    })?;
    match host_problem6(cidr) {
        None => Ok(cidr),
        Some(reason) => Err(ConfigError::Ip6NotHost {
            value: value.into(),
            reason,
        }),
    }
}

/// `gw6=` must be a unicast neighbour: link-local, or in `ip6=`'s prefix.
pub(super) fn parse_gateway6(
    value: &str,
    ip6: Option<Ipv6Cidr>,
) -> Result<Ipv6Address, ConfigError> {
    let gateway = Ipv6Address::from_str(value).map_err(|_| ConfigError::BadGateway6 {
        value: value.into(),
    })?;
    if Some(gateway) == ip6.map(|c| c.address()) {
        return Err(ConfigError::Gateway6IsSelf { gateway });
    }
    let unicast = !gateway.is_multicast() && !gateway.is_unspecified() && !gateway.is_loopback();
    let on_link = gateway.is_unicast_link_local() || ip6.is_some_and(|c| c.contains_addr(&gateway));
    if !unicast || !on_link {
        return Err(ConfigError::Gateway6OffLink { gateway, ip6 });
    }
    Ok(gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn addresses() {
        let c = parse_ip6("fd77::2/64").unwrap();
        assert_eq!(c.address(), Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2));
        assert_eq!(c.prefix_len(), 64);
        assert_eq!(parse_ip6("2001:db8::1/128").unwrap().prefix_len(), 128);
        for bad in [
            "fd77::2",
            "fd77::2/",
            "fd77::2/129",
            "fd77::2/064",
            "fd77::2/+6",
            "10.0.0.1/24",
            "fd77::g/64",
        ] {
            assert_eq!(
                parse_ip6(bad),
                Err(ConfigError::BadIp6 { value: bad.into() }),
                "{bad}"
            );
        }
        for (bad, why) in [
            ("::/64", "unspecified"),
            ("ff02::1/64", "multicast"),
            ("::1/128", "loopback"),
            ("fe80::1/64", "link-local"),
            ("fd77::1/0", "/0"),
        ] {
            let e = parse_ip6(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn gateways() {
        let ip6 = parse_ip6("fd77::2/64").ok();
        assert_eq!(
            parse_gateway6("fd77::1", ip6),
            Ok(Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1))
        );
        assert!(parse_gateway6("fe80::1", None).is_ok());
        assert!(matches!(
            parse_gateway6("fd78::1", ip6),
            Err(ConfigError::Gateway6OffLink { .. })
        ));
        assert!(matches!(
            parse_gateway6("fd77::1", None),
            Err(ConfigError::Gateway6OffLink { .. })
        ));
        assert!(matches!(
            parse_gateway6("ff02::2", ip6),
            Err(ConfigError::Gateway6OffLink { .. })
        ));
        assert!(matches!(
            parse_gateway6("fd77::2", ip6),
            Err(ConfigError::Gateway6IsSelf { .. })
        ));
        assert_eq!(
            parse_gateway6("fd77:::1", ip6),
            Err(ConfigError::BadGateway6 {
                value: "fd77:::1".into()
            })
        );
    }
}
