use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

fn err(s: &str) -> String {
    match NetConfig::parse(s) {
        Ok(c) => panic!("{s:?} parsed as {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_the_example() {
    let c = NetConfig::parse("ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info name=g1")
        .unwrap();
    assert_eq!(c.ip, Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, 2), 24));
    assert_eq!(c.gateway, Some(Ipv4Address::new(10, 77, 0, 1)));
    assert_eq!(
        c.services,
        Services {
            echo: true,
            http: true,
            discard: false,
            chargen: false
        }
    );
    assert_eq!(c.log, LevelFilter::Info);
    assert_eq!(c.name.as_str(), "g1");
}

#[test]
fn defaults_apply() {
    let c = NetConfig::parse("  ip=192.168.7.9/16\n").unwrap();
    assert_eq!(
        c,
        NetConfig::new(Ipv4Cidr::new(Ipv4Address::new(192, 168, 7, 9), 16))
    );
    assert_eq!(c.gateway, None);
    assert_eq!(c.services, Services::ALL);
    assert_eq!(c.log, LevelFilter::Info);
    assert_eq!(c.name.as_str(), "ibguest");
    assert_eq!(
        c.to_string(),
        "ip=192.168.7.9/16 services=echo,http,discard,chargen log=info name=ibguest"
    );
}

#[test]
fn order_and_case_of_level() {
    let c = NetConfig::parse("log=DEBUG services=none name=a.b_c-1 ip=10.0.0.1/8").unwrap();
    assert_eq!(c.log, LevelFilter::Debug);
    assert!(c.services.is_none());
    assert_eq!(
        c.to_string(),
        "ip=10.0.0.1/8 services=none log=debug name=a.b_c-1"
    );
    let c = NetConfig::parse("ip=10.0.0.1/32 services=chargen,echo").unwrap();
    assert_eq!(c.services.to_string(), "echo,chargen");
    // /31 and /32 have no network or broadcast address to avoid.
    assert!(NetConfig::parse("ip=10.0.0.0/31 gw=10.0.0.1").is_ok());
}

#[test]
fn every_error_says_what_to_fix() {
    let cases: &[(&str, &str)] = &[
        (
            "ip=10.77.0.2/24 foo=1",
            "unknown option \"foo=1\" (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm)",
        ),
        (
            "ip=10.77.0.2/24 quiet",
            "\"quiet\" is not key=value (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm)",
        ),
        (
            "=5 ip=10.77.0.2/24",
            "\"=5\" is not key=value (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm)",
        ),
        (
            "ip=10.77.0.2/24 ip=10.77.0.3/24",
            "\"ip=10.77.0.2/24\" and \"ip=10.77.0.3/24\": the same option twice; give each option once",
        ),
        (
            "ip=10.77.0.300/24",
            "ip=10.77.0.300/24: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)",
        ),
        ("ip=10.77.0.2", "ip=10.77.0.2: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"),
        ("ip=10.77.0.2/33", "ip=10.77.0.2/33: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"),
        ("ip=10.77.0.2/+4", "ip=10.77.0.2/+4: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"),
        ("ip=10.77.0.2/024", "ip=10.77.0.2/024: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"),
        ("ip=", "ip=: not an IPv4 address/prefix or dhcp (example: ip=10.77.0.2/24, ip=dhcp)"),
        (
            "ip=10.77.0.0/24",
            "ip=10.77.0.0/24: that is the subnet's network address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=10.77.0.255/24",
            "ip=10.77.0.255/24: that is the subnet's broadcast address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=0.0.0.0/8",
            "ip=0.0.0.0/8: that is the unspecified address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=255.255.255.255/32",
            "ip=255.255.255.255/32: that is the limited broadcast address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=224.0.0.5/24",
            "ip=224.0.0.5/24: that is a multicast address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=127.0.0.1/8",
            "ip=127.0.0.1/8: that is a loopback address; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=10.1.2.3/0",
            "ip=10.1.2.3/0: a /0 prefix has no subnet; give a host address on the subnet (example: ip=10.77.0.2/24)",
        ),
        (
            "ip=10.77.0.2/24 gw=10.77.0",
            "gw=10.77.0: not an IPv4 address (example: gw=10.77.0.1)",
        ),
        (
            "ip=10.77.0.2/24 gw=10.78.0.1",
            "gw=10.78.0.1: not on the subnet of ip=10.77.0.2/24; the gateway must be reachable directly",
        ),
        (
            "ip=10.77.0.2/24 gw=10.77.0.255",
            "gw=10.77.0.255: not on the subnet of ip=10.77.0.2/24; the gateway must be reachable directly",
        ),
        (
            "ip=10.77.0.2/24 gw=10.77.0.2",
            "gw=10.77.0.2: that is this guest's own address; give the router's address or leave gw= out",
        ),
        (
            "ip=10.77.0.2/24 services=echo,ftp",
            "services=echo,ftp: unknown service \"ftp\" (known: echo, http, discard, chargen, none)",
        ),
        (
            "ip=10.77.0.2/24 services=",
            "services=: empty service name; separate names with single commas (known: echo, http, discard, chargen, none)",
        ),
        (
            "ip=10.77.0.2/24 services=echo,,http",
            "services=echo,,http: empty service name; separate names with single commas (known: echo, http, discard, chargen, none)",
        ),
        (
            "ip=10.77.0.2/24 services=http,http",
            "services=http,http: \"http\" is listed twice; list each service once",
        ),
        (
            "ip=10.77.0.2/24 services=echo,none",
            "services=echo,none: \"none\" must stand alone (example: services=none)",
        ),
        (
            "ip=10.77.0.2/24 log=loud",
            "log=loud: not a log level (known: off, error, warn, info, debug, trace)",
        ),
        (
            "ip=10.77.0.2/24 name=",
            "name=: a name is 1 to 32 of the characters a-z A-Z 0-9 - . _ (example: name=g1)",
        ),
        (
            "ip=10.77.0.2/24 name=a/b",
            "name=a/b: a name is 1 to 32 of the characters a-z A-Z 0-9 - . _ (example: name=g1)",
        ),
        (
            "ip=10.77.0.2/24 name=abcdefghijklmnopqrstuvwxyz0123456",
            "name=abcdefghijklmnopqrstuvwxyz0123456: a name is 1 to 32 of the characters a-z A-Z 0-9 - . _ (example: name=g1)",
        ),
        ("", "missing required option ip= (example: ip=10.77.0.2/24, or ip=dhcp)"),
        ("name=g1 log=warn", "missing required option ip= (example: ip=10.77.0.2/24, or ip=dhcp)"),
    ];
    for (input, message) in cases {
        assert_eq!(err(input), *message, "input {input:?}");
    }
}

#[test]
fn unknown_option_wins_over_later_bad_values() {
    // Options are checked for shape first, then values in key order.
    assert!(err("ip=bad foo=1").starts_with("unknown option \"foo=1\""));
    assert!(err("log=x ip=bad").starts_with("ip=bad:"));
}

#[test]
fn name_of_exactly_32_is_fine() {
    let name = "abcdefghijklmnopqrstuvwxyz012345";
    let c = NetConfig::parse(&alloc::format!("ip=10.0.0.2/24 name={name}")).unwrap();
    assert_eq!(c.name.as_str(), name);
}

fn arb_level() -> impl Strategy<Value = LevelFilter> {
    prop::sample::select(LEVELS.iter().map(|(_, l)| *l).collect::<Vec<_>>())
}

fn arb_name() -> impl Strategy<Value = Name> {
    "[a-zA-Z0-9._-]{1,32}".prop_map(|s| {
        let mut n = Name::new();
        n.push_str(&s).unwrap();
        n
    })
}

/// A valid config: a host address on a /1../30 subnet and maybe a gateway
/// on it.
fn arb_config() -> impl Strategy<Value = NetConfig> {
    (
        1u8..=30,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<[bool; 4]>(),
        arb_level(),
        arb_name(),
        prop_oneof![Just(DEFAULT_TCP_BUDGET_KIB), 0..=MAX_TCP_BUDGET_KIB],
        prop_oneof![
            Just(None),
            Just(Some(DEFAULT_CONNECTED_MTU)),
            (MIN_CONNECTED_MTU..=MAX_CONNECTED_MTU).prop_map(Some),
        ],
    )
        .prop_filter_map(
            "not a usable host address",
            |(len, net, host, gw_host, has_gw, svc, log, name, budget_kib, connected_mtu)| {
                let host_mask = u32::MAX >> len;
                let usable = |h: u32| 1 + h % (host_mask - 1);
                let net = net & !host_mask;
                let ip = Ipv4Cidr::new(Ipv4Address::from(net | usable(host)), len);
                if host_problem(ip).is_some() {
                    return None;
                }
                let gw = Ipv4Address::from(net | usable(gw_host));
                let gateway = (has_gw && gw != ip.address()).then_some(gw);
                let services = Services {
                    echo: svc[0],
                    http: svc[1],
                    discard: svc[2],
                    chargen: svc[3],
                };
                Some(NetConfig {
                    ip,
                    dhcp: false,
                    gateway,
                    services,
                    log,
                    name,
                    tcp_budget: budget_kib * 1024,
                    ip6: None,
                    gateway6: None,
                    connected_mtu,
                })
            },
        )
}

proptest! {
    #[test]
    fn display_round_trips(config in arb_config()) {
        let text = config.to_string();
        prop_assert_eq!(NetConfig::parse(&text), Ok(config));
    }

    #[test]
    fn token_order_does_not_matter(config in arb_config(), seed in any::<u64>()) {
        let text = config.to_string();
        let mut tokens: Vec<&str> = text.split(' ').collect();
        let n = tokens.len();
        tokens.rotate_left((seed as usize) % n);
        prop_assert_eq!(NetConfig::parse(&tokens.join("  \t")), Ok(config));
    }

    #[test]
    fn any_input_parses_or_errors_without_panic(s in "\\PC{0,80}") {
        if let Ok(c) = NetConfig::parse(&s) {
            prop_assert_eq!(NetConfig::parse(&c.to_string()), Ok(c));
        }
    }

    #[test]
    fn option_shaped_input_never_panics(
        tokens in prop::collection::vec(
            ("(ip|gw|services|log|name|x)", "[0-9a-z./,=]{0,20}"),
            0..6,
        )
    ) {
        let s: Vec<String> = tokens.iter().map(|(k, v)| alloc::format!("{k}={v}")).collect();
        let s = s.join(" ");
        match NetConfig::parse(&s) {
            Ok(c) => prop_assert_eq!(NetConfig::parse(&c.to_string()), Ok(c)),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn tcp_budget_is_kib_in_range() {
    let c = NetConfig::parse("ip=10.77.0.2/24").unwrap();
    assert_eq!(c.tcp_budget, DEFAULT_TCP_BUDGET_KIB * 1024);
    assert!(!c.to_string().contains("tcp-budget"));
    let c = NetConfig::parse("ip=10.77.0.2/24 tcp-budget=0").unwrap();
    assert_eq!(c.tcp_budget, 0);
    assert!(c.to_string().ends_with(" tcp-budget=0"), "{c}");
    let c = NetConfig::parse("tcp-budget=1048576 ip=10.77.0.2/24").unwrap();
    assert_eq!(c.tcp_budget, 1 << 30);
    for bad in ["", "-1", "1048577", "4M", "0x10", "99999999999"] {
        let e = NetConfig::parse(&format!("ip=10.77.0.2/24 tcp-budget={bad}")).unwrap_err();
        assert_eq!(e, ConfigError::BadTcpBudget { value: bad.into() });
        assert!(
            e.to_string().starts_with(&format!("tcp-budget={bad}: ")),
            "{e}"
        );
    }
}

#[test]
fn cm_is_off_on_or_an_mtu_in_range() {
    let c = NetConfig::parse("ip=10.77.0.2/24").unwrap();
    assert_eq!(c.connected_mtu, None);
    assert_eq!(c.ipoib_config().connected_mtu, None);
    assert!(!c.to_string().contains("cm="), "{c}");
    let c = NetConfig::parse("ip=10.77.0.2/24 cm=off").unwrap();
    assert_eq!(c.connected_mtu, None);
    let c = NetConfig::parse("cm=on ip=10.77.0.2/24").unwrap();
    assert_eq!(c.connected_mtu, Some(65520));
    assert_eq!(c.ipoib_config().connected_mtu, Some(65520));
    assert!(c.to_string().ends_with(" cm=on"), "{c}");
    let c = NetConfig::parse("ip=10.77.0.2/24 cm=32768").unwrap();
    assert_eq!(c.connected_mtu, Some(32768));
    assert!(c.to_string().ends_with(" cm=32768"), "{c}");
    assert_eq!(
        NetConfig::parse("ip=10.77.0.2/24 cm=1280")
            .unwrap()
            .connected_mtu,
        Some(1280)
    );
    for bad in [
        "", "yes", "ON", "1279", "65521", "065520", "-1", "99999999", "0",
    ] {
        let e = NetConfig::parse(&format!("ip=10.77.0.2/24 cm={bad}")).unwrap_err();
        assert_eq!(e, ConfigError::BadConnectedMode { value: bad.into() });
        assert!(e.to_string().starts_with(&format!("cm={bad}: ")), "{e}");
        assert!(e.to_string().contains("cm=on"), "{e}");
    }
    let e = NetConfig::parse("ip=10.77.0.2/24 cm=on cm=off").unwrap_err();
    assert!(matches!(e, ConfigError::Duplicate { .. }), "{e}");
}

#[test]
fn ip6_and_gw6() {
    let c = NetConfig::parse("ip=10.77.0.2/24 ip6=fd77::2/64 gw6=fd77::1 name=g1").unwrap();
    assert_eq!(
        c.ip6,
        Some(smoltcp::wire::Ipv6Cidr::new(
            smoltcp::wire::Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
            64
        ))
    );
    assert_eq!(
        c.gateway6,
        Some(smoltcp::wire::Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1))
    );
    assert_eq!(
        c.to_string(),
        "ip=10.77.0.2/24 ip6=fd77::2/64 gw6=fd77::1 services=echo,http,discard,chargen log=info name=g1"
    );
    assert_eq!(NetConfig::parse(&c.to_string()), Ok(c.clone()));
    // gw6= is checked against ip6= whatever the order.
    assert_eq!(
        NetConfig::parse("gw6=fd77::1 ip6=fd77::2/64 ip=10.77.0.2/24"),
        Ok(c.clone()).map(|mut c: NetConfig| {
            c.name = NetConfig::new(c.ip).name;
            c
        })
    );
    assert_eq!(
        err("ip=10.77.0.2/24 ip6=fd77::2"),
        "ip6=fd77::2: not an IPv6 address/prefix (example: ip6=fd77::2/64)"
    );
    assert!(err("ip=10.77.0.2/24 ip6=fe80::2/64").contains("link-local"));
    assert_eq!(
        err("ip=10.77.0.2/24 ip6=fd77::2/64 gw6=fd78::1"),
        "gw6=fd78::1: not a unicast neighbour; give a link-local address or one in ip6=fd77::2/64's prefix"
    );
    assert!(err("ip=10.77.0.2/24 ip6=fd77::2/64 ip6=fd77::3/64").contains("the same option twice"));
    assert!(err("ip=10.77.0.2/24 ip7=x").contains("ip6, gw6"));
}

proptest! {
    #[test]
    fn ip6_display_round_trips(addr in any::<[u8; 16]>(), len in 1u8..=128, gw in any::<bool>()) {
        let mut addr = addr;
        addr[0] = 0xfd;
        let addr = smoltcp::wire::Ipv6Address::from(addr);
        let mut text = alloc::format!("ip=10.77.0.2/24 ip6={addr}/{len}");
        if gw {
            text.push_str(" gw6=fe80::1");
        }
        let c = NetConfig::parse(&text).unwrap();
        prop_assert_eq!(NetConfig::parse(&c.to_string()), Ok(c));
    }
}

#[test]
fn ip_dhcp_parses_displays_and_refuses_gw() {
    let c = NetConfig::parse("ip=dhcp name=g1").unwrap();
    assert!(c.dhcp);
    assert_eq!(c.ip, ipoib::UNCONFIGURED);
    assert_eq!(c.gateway, None);
    assert_eq!(
        c.to_string(),
        "ip=dhcp services=echo,http,discard,chargen log=info name=g1"
    );
    assert_eq!(NetConfig::parse(&c.to_string()), Ok(c.clone()));
    assert!(!c.ipoib_config().is_configured());
    assert_eq!(
        NetConfig::parse("ip=dhcp gw=10.77.0.1"),
        Err(ConfigError::GatewayWithDhcp {
            value: "10.77.0.1".into()
        })
    );
    assert!(NetConfig::parse("ip=DHCP").is_err());
    assert!(!NetConfig::parse("ip=10.77.0.2/24").unwrap().dhcp);
}
