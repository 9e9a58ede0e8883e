//! `NetConfig::apply` and `ipoib_config` on a real interface.

mod common;

use common::{Setup, CLIENT};
use ibguest_testkit::BoxError;
use netcore::NetConfig;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv6Address, Ipv6Cidr};

#[test]
fn apply_sets_the_address_and_default_route() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let iface = &mut s.net.guests[CLIENT].iface;
    let config = NetConfig::parse("ip=10.77.0.1/24 gw=10.77.0.254")?;
    let ll = Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 9);
    config.apply(iface, ll)?;
    assert_eq!(
        iface.ip_addrs(),
        &[IpCidr::Ipv4(config.ip), IpCidr::Ipv6(Ipv6Cidr::new(ll, 64))]
    );
    let route = iface
        .routes()
        .get_default_ipv4_route()
        .expect("a default route");
    assert_eq!(route.via_router, Ipv4Address::new(10, 77, 0, 254).into());
    NetConfig::parse("ip=10.77.0.1/24")?.apply(iface, ll)?;
    assert!(iface.routes().get_default_ipv4_route().is_none());

    let ipoib = config.ipoib_config();
    assert_eq!(ipoib.address, config.ip);
    assert_eq!(ipoib.gateway, config.gateway);
    assert_eq!(ipoib.ipv6, None);
    Ok(())
}

#[test]
fn apply_sets_the_ipv6_addresses_and_default_route() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let iface = &mut s.net.guests[CLIENT].iface;
    let config = NetConfig::parse("ip=10.77.0.1/24 ip6=fd77::5/64 gw6=fd77::1")?;
    let ll = Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 9);
    config.apply(iface, ll)?;
    let ip6 = Ipv6Cidr::new(Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 5), 64);
    assert_eq!(
        iface.ip_addrs(),
        &[
            IpCidr::Ipv4(config.ip),
            IpCidr::Ipv6(Ipv6Cidr::new(ll, 64)),
            IpCidr::Ipv6(ip6)
        ]
    );
    let route = iface
        .routes()
        .get_default_ipv6_route()
        .expect("a default IPv6 route");
    assert_eq!(
        route.via_router,
        Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1).into()
    );
    let ipoib = config.ipoib_config();
    assert_eq!(ipoib.ipv6, Some(ip6));
    assert_eq!(ipoib.gateway6, config.gateway6);
    Ok(())
}
