//! `NetConfig::apply` and `ipoib_config` on a real interface.

mod common;

use common::{Setup, CLIENT};
use ibguest_testkit::BoxError;
use netcore::NetConfig;
use smoltcp::wire::{IpCidr, Ipv4Address};

#[test]
fn apply_sets_the_address_and_default_route() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let iface = &mut s.net.guests[CLIENT].iface;
    let config = NetConfig::parse("ip=10.77.0.1/24 gw=10.77.0.254")?;
    config.apply(iface)?;
    assert_eq!(iface.ip_addrs(), &[IpCidr::Ipv4(config.ip)]);
    let route = iface
        .routes()
        .get_default_ipv4_route()
        .expect("a default route");
    assert_eq!(route.via_router, Ipv4Address::new(10, 77, 0, 254).into());
    NetConfig::parse("ip=10.77.0.1/24")?.apply(iface)?;
    assert!(iface.routes().get_default_ipv4_route().is_none());

    let ipoib = config.ipoib_config();
    assert_eq!(ipoib.address, config.ip);
    assert_eq!(ipoib.gateway, config.gateway);
    Ok(())
}
