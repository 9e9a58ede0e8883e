use super::*;

const GOOD: &str = r#"
[backend]
provider = "sim"
mtu = 2048
control = "/tmp/ctl.sock"

[gateway]
tap = "ibgw0"
address = "10.77.0.1/24"

[[guest]]
name = "g1"
socket = "/tmp/g1.sock"
window = "8M"
pkeys = ["0xffff"]
ip = "10.77.0.2"

[[guest]]
name = "g2"
socket = "/tmp/g2.sock"
window = 16777216
pkeys = ["0x8001", 32770]
"#;

#[test]
fn good_file_parses() {
    let c = Config::from_toml(GOOD).expect("valid");
    assert_eq!(c.provider, ProviderConfig::Sim);
    assert_eq!(c.mtu, 2048);
    assert_eq!(c.guests.len(), 2);
    assert_eq!(c.guests[0].window, 8 << 20);
    assert_eq!(c.guests[1].pkeys, [0x8001, 0x8002]);
    assert_eq!(c.guests[0].ip, Some(Ipv4Addr::new(10, 77, 0, 2)));
    assert_eq!(
        c.guests[0].attach,
        Attach::Socket(PathBuf::from("/tmp/g1.sock"))
    );
    assert!(!c.has_xen_seats());
    assert_eq!(c.xenstore, None);
    assert_eq!(
        c.gateway,
        Some(GatewayConfig {
            tap: "ibgw0".into(),
            address: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 24,
            ipv6: None,
        })
    );
}

#[test]
fn gateway_with_both_families() {
    let flag = |g: &str| {
        let o = Overrides {
            gateway: Some(g.into()),
            ..Overrides::default()
        };
        Config::load(None, &o).map(|c| c.gateway)
    };
    let g = flag("ibgw0=10.77.0.1/24,fd77::1/64").unwrap().unwrap();
    assert_eq!(g.address, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(
        g.ipv6,
        Some(("fd77::1".parse::<std::net::Ipv6Addr>().unwrap(), 64))
    );
    // Either order.
    let g2 = flag("ibgw0=fd77::1/64,10.77.0.1/24").unwrap().unwrap();
    assert_eq!(g, g2);
    for (bad, says) in [
        ("ibgw0=10.77.0.1/24,fd77::1", "is not ADDRESS/PREFIX"),
        (
            "ibgw0=10.77.0.1/24,fd77::1/200",
            "IPv6 prefix must be 8 to 126",
        ),
        ("ibgw0=10.77.0.1/24,fe80::1/64", "not link-local"),
        (
            "ibgw0=10.77.0.1/24,fd77::1/64,fd78::1/64",
            "two IPv6 addresses",
        ),
        ("ibgw0=fd77::1/64", "no IPv4"),
        ("ibgw0=10.77.0.1/24,", "is not ADDRESS/PREFIX"),
    ] {
        let e = flag(bad).expect_err(bad).to_string();
        assert!(e.starts_with("--gateway.address"), "{bad}: {e}");
        assert!(e.contains(says), "{bad}: {e}");
    }
    // The config file takes the same value.
    let c =
        Config::from_toml("[gateway]\ntap = \"ibgw0\"\naddress = \"10.77.0.1/24,fd77::1/64\"\n")
            .unwrap();
    assert_eq!(c.gateway, Some(g));
    let e = err("[gateway]\ntap = \"ibgw0\"\naddress = \"10.77.0.1/24,fd77::x/64\"\n");
    assert!(e.starts_with("gateway.address"), "{e}");
}

fn err(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("should fail")
        .to_string()
}

#[test]
fn mistakes_name_the_field() {
    assert!(err("[backend]\nmtu = 3000\n").starts_with("backend.mtu: 3000 is not an IB MTU"));
    assert!(
        err("[backend]\nprovider = \"mlx\"\n").starts_with("backend.provider: unknown provider")
    );
    assert!(err("[backend]\nworkers = 0\n").starts_with("backend.workers"));
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nwindow = \"12Q\"\n");
    assert!(e.starts_with("guest[0].window"), "{e}");
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nwindow = 4096\n");
    assert!(
        e.starts_with("guest[0].window: 4096 bytes is outside"),
        "{e}"
    );
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nwindow = \"3M\"\n");
    assert!(
        e.starts_with("guest[0].window: 3145728 bytes is not a power of two"),
        "{e}"
    );
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\npkeys = [\"0x8000\"]\n");
    assert!(e.starts_with("guest[0].pkeys"), "{e}");
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nip = \"10.1.2\"\n");
    assert!(e.starts_with("guest[0].ip"), "{e}");
    let e = err("[[guest]]\nname = \"g 1\"\nsocket = \"/s\"\n");
    assert!(e.starts_with("guest[0].name"), "{e}");
    let e =
        err("[[guest]]\nname = \"a\"\nsocket = \"/s\"\n[[guest]]\nname = \"a\"\nsocket = \"/t\"\n");
    assert!(e.starts_with("guest[1].name: \"a\" is used twice"), "{e}");
    let e =
        err("[[guest]]\nname = \"a\"\nsocket = \"/s\"\n[[guest]]\nname = \"b\"\nsocket = \"/s\"\n");
    assert!(e.starts_with("guest[1].socket"), "{e}");
    let e = err("[gateway]\ntap = \"ibgw0\"\naddress = \"10.0.0.1\"\n");
    assert!(e.starts_with("gateway.address"), "{e}");
    // Unknown keys are refused, with the key named by the TOML parser.
    let e = err("[backend]\nmtuu = 2048\n");
    assert!(e.contains("mtuu"), "{e}");
    let e = err("[rdma]\nport = 0\n[backend]\nprovider = \"rdma\"\n");
    assert!(e.starts_with("rdma.port"), "{e}");
}

#[test]
fn flags_add_guests_and_override() {
    let o = Overrides {
        provider: Some("rdma".into()),
        rdma_device: Some("rxe0".into()),
        rdma_gid_index: Some(1),
        mtu: Some(4096),
        guests: vec!["name=h1,socket=/tmp/h1.sock,window=2M,pkey=0x8001,ip=10.77.0.9".into()],
        gateway: Some("tapx=10.9.0.1/16".into()),
        ..Overrides::default()
    };
    let c = Config::load(None, &o).expect("valid");
    assert_eq!(
        c.provider,
        ProviderConfig::Rdma {
            device: Some("rxe0".into()),
            port: 1,
            gid_index: 1
        }
    );
    assert_eq!(c.mtu, 4096);
    assert_eq!(c.guests[0].pkeys, [0x8001]);
    assert_eq!(c.guests[0].window, 2 << 20);
    assert_eq!(c.gateway.map(|g| g.prefix), Some(16));
}

#[test]
fn bad_flags_say_what_to_fix() {
    let bad = |g: &str| {
        let o = Overrides {
            guests: vec![g.into()],
            ..Overrides::default()
        };
        Config::load(None, &o).expect_err("should fail").to_string()
    };
    assert!(bad("socket=/tmp/x").contains("name: missing"));
    assert!(bad("name=x").contains("socket: missing"));
    assert!(bad("name=x,socket=/s,colour=red").contains("unknown key \"colour\""));
    assert!(bad("name=x,socket=/s,pkey=zz").contains("pkey"));
    assert!(bad("name=x,socket=/s,window").contains("not key=value"));
    let o = Overrides {
        gateway: Some("nogood".into()),
        ..Overrides::default()
    };
    assert!(Config::load(None, &o)
        .expect_err("fails")
        .to_string()
        .starts_with("--gateway"));
    let e = Config::load(
        Some(Path::new("/nonexistent/ib.toml")),
        &Overrides::default(),
    )
    .expect_err("fails");
    assert!(e
        .to_string()
        .contains("cannot read config file /nonexistent/ib.toml"));
}

#[test]
fn sizes_and_pkeys() {
    assert_eq!(parse_size("8M"), Some(8 << 20));
    assert_eq!(parse_size("512k"), Some(512 << 10));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("M"), None);
    assert_eq!(parse_size("99999999999999999999G"), None);
    assert_eq!(parse_pkey("0xffff"), Some(0xffff));
    assert_eq!(parse_pkey("0x7fff"), Some(0x7fff));
    assert_eq!(parse_pkey("0x8000"), None);
    assert_eq!(parse_pkey("0"), None);
    assert_eq!(parse_pkey("70000"), None);
}

#[test]
fn the_example_file_is_valid() {
    let text = include_str!("../../ib-backend.example.toml");
    let c = Config::from_toml(text).expect("the example configuration must parse");
    assert_eq!(c.guests.len(), 2);
    assert_eq!(c.provider, ProviderConfig::Sim);
    // Its commented-out Xen seat is valid too once uncommented.
    let xen: String = text
        .lines()
        .map(|l| l.strip_prefix("# xen: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::from_toml(&xen).expect("the example's Xen seat must parse");
    assert_eq!(c.guests.len(), 3);
    assert_eq!(c.guests[2].attach, Attach::XenDomain("ibguest-g3".into()));
    assert!(c.has_xen_seats());
}

#[test]
fn xen_seats_parse_from_file_and_flags() {
    let c = Config::from_toml(
        "[backend]\nxenstore = \"/dev/xen/xenbus\"\n\
         [[guest]]\nname = \"g1\"\nxen_domain = \"ibguest-g1\"\nwindow = \"4M\"\n\
         [[guest]]\nname = \"g2\"\nsocket = \"/tmp/g2.sock\"\n",
    )
    .expect("valid");
    assert_eq!(c.guests[0].attach, Attach::XenDomain("ibguest-g1".into()));
    assert_eq!(c.guests[0].attach.socket(), None);
    assert_eq!(c.guests[1].attach.xen_domain(), None);
    assert_eq!(c.guests[0].window, 4 << 20);
    assert_eq!(c.xenstore, Some(PathBuf::from("/dev/xen/xenbus")));
    assert!(c.has_xen_seats());
    let o = Overrides {
        guests: vec!["name=g1,xen-domain=ibguest-g1,ip=10.77.0.2,pkey=0x8001,window=2M".into()],
        xenstore: Some(PathBuf::from("/tmp/xs.sock")),
        ..Overrides::default()
    };
    let c = Config::load(None, &o).expect("valid");
    assert_eq!(c.guests[0].attach, Attach::XenDomain("ibguest-g1".into()));
    assert_eq!(c.guests[0].pkeys, [0x8001]);
    assert_eq!(c.xenstore, Some(PathBuf::from("/tmp/xs.sock")));
}

#[test]
fn xen_seat_mistakes_say_what_to_fix() {
    let e = err("[[guest]]\nname = \"g1\"\n");
    assert!(
        e.starts_with("guest[0].socket: missing") && e.contains("xen_domain"),
        "{e}"
    );
    let e = err("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nxen_domain = \"d\"\n");
    assert!(
        e.starts_with("guest[0].xen_domain: give either socket"),
        "{e}"
    );
    let e = err("[[guest]]\nname = \"g1\"\nxen_domain = \"a/b\"\n");
    assert!(
        e.starts_with("guest[0].xen_domain: \"a/b\" is not a domain name"),
        "{e}"
    );
    let e = err("[[guest]]\nname = \"g1\"\nxen_domain = \"\"\n");
    assert!(e.starts_with("guest[0].xen_domain"), "{e}");
    let e = err(
        "[[guest]]\nname = \"a\"\nxen_domain = \"d\"\n[[guest]]\nname = \"b\"\nxen_domain = \"d\"\n",
    );
    assert!(
        e.starts_with("guest[1].xen_domain: \"d\" is served by two guests"),
        "{e}"
    );
    let bad = |g: &str| {
        let o = Overrides {
            guests: vec![g.into()],
            ..Overrides::default()
        };
        Config::load(None, &o).expect_err("should fail").to_string()
    };
    let e = bad("name=x,socket=/s,xen-domain=d");
    assert!(e.contains("not both"), "{e}");
    let e = bad("name=x,xen-domain=");
    assert!(e.contains("xen-domain: \"\" is not a domain name"), "{e}");
    let e = bad("name=x");
    assert!(
        e.contains("socket: missing") && e.contains("xen-domain=NAME"),
        "{e}"
    );
    let e = bad("name=x,xen_domain=d");
    assert!(
        e.contains("unknown key \"xen_domain\"") && e.contains("xen-domain"),
        "{e}"
    );
}

#[test]
fn socket_group_is_resolved_at_load_and_a_typo_says_what_to_fix() {
    let c = Config::from_toml(GOOD).expect("valid");
    assert_eq!(c.socket_group, None, "owner-only sockets by default");
    let with = GOOD.replace(
        "control = \"/tmp/ctl.sock\"",
        "control = \"/tmp/ctl.sock\"\nsocket_group = \"root\"",
    );
    let c = Config::from_toml(&with).expect("valid");
    assert_eq!(c.socket_group.map(|g| g.gid), Some(0));
    let typo = GOOD.replace(
        "control = \"/tmp/ctl.sock\"",
        "control = \"/tmp/ctl.sock\"\nsocket_group = \"no-such-group-x9\"",
    );
    let err = Config::from_toml(&typo).unwrap_err();
    assert_eq!(err.field, "backend.socket_group");
    assert!(err.to_string().contains("no such group"), "{err}");
}

#[test]
fn busy_poll_budget() {
    let with = |text: &str| Config::from_toml(text).expect("valid").busy_poll_us;
    assert_eq!(with(""), DEFAULT_BUSY_POLL_US);
    assert_eq!(with("[backend]\nbusy_poll_us = 0\n"), 0);
    assert_eq!(with("[backend]\nbusy_poll_us = 200\n"), 200);
    assert_eq!(
        with(&format!("[backend]\nbusy_poll_us = {MAX_BUSY_POLL_US}\n")),
        MAX_BUSY_POLL_US
    );
    let e = err("[backend]\nbusy_poll_us = 10001\n");
    assert!(
        e.starts_with("backend.busy_poll_us: 10001 µs is outside 0..=10000"),
        "{e}"
    );
    let e = err("[backend]\nbusy_poll_us = -5\n");
    assert!(
        e.starts_with("backend.busy_poll_us: -5 µs is outside"),
        "{e}"
    );
    assert!(err("[backend]\nbusy_poll_us = \"fast\"\n").contains("busy_poll_us"));
    // The flag wins over the file, and is checked the same way.
    let file = toml::from_str::<FileConfig>("[backend]\nbusy_poll_us = 7\n").expect("toml");
    let flag = |us| Overrides {
        busy_poll_us: Some(us),
        ..Overrides::default()
    };
    let c = Config::build(file, &flag(0)).expect("valid");
    assert_eq!(c.busy_poll_us, 0);
    let e = Config::build(FileConfig::default(), &flag(1 << 40))
        .expect_err("too large")
        .to_string();
    assert!(
        e.starts_with("--busy-poll-us: 1099511627776 µs is outside"),
        "{e}"
    );
}

#[test]
fn busy_polling_workers_leave_half_the_cores_to_the_guests() {
    assert_eq!(default_workers(2, 0), 2);
    assert_eq!(default_workers(8, 0), 8);
    assert_eq!(default_workers(2, 50), 1);
    assert_eq!(default_workers(3, 50), 2);
    assert_eq!(default_workers(8, 50), 4);
    assert_eq!(default_workers(1, 50), 1);
    assert_eq!(default_workers(0, 0), 1);
}

fn with_dhcp(flag: &str, guests: &[&str]) -> Result<Config, ConfigError> {
    let o = Overrides {
        dhcp: Some(flag.to_owned()),
        gateway: Some("ibgw0=10.77.0.1/24".to_owned()),
        guests: guests.iter().map(|g| (*g).to_owned()).collect(),
        ..Overrides::default()
    };
    Config::build(FileConfig::default(), &o)
}

#[test]
fn dhcp_flag_and_file() {
    let c = with_dhcp(
        "10.77.0.254/24,lease=600",
        &["name=g1,socket=/tmp/a,ip=10.77.0.2"],
    )
    .expect("valid");
    let d = c.dhcp.clone().expect("dhcp");
    assert_eq!(
        (d.address, d.prefix, d.lease_secs),
        (Ipv4Addr::new(10, 77, 0, 254), 24, 600)
    );
    assert_eq!(
        d.router(c.gateway.as_ref()),
        Some(Ipv4Addr::new(10, 77, 0, 1))
    );
    let file = Config::from_toml(
        "[dhcp]\naddress = \"10.77.0.254/24\"\n[[guest]]\nname = \"g1\"\nsocket = \"/tmp/a\"\nip = \"10.77.0.2\"\n",
    )
    .expect("valid");
    let d = file.dhcp.expect("dhcp");
    assert_eq!(d.lease_secs, 3600);
    assert_eq!(d.router(None), None);
}

#[test]
fn dhcp_mistakes_name_the_field() {
    let seat = ["name=g1,socket=/tmp/a,ip=10.77.0.2"];
    let cases = [
        ("10.77.0.254", "--dhcp"),
        ("10.77.0.254/31", "--dhcp"),
        ("10.77.0.254/24,lease=5", "--dhcp lease"),
        ("10.77.0.254/24,lease=x", "--dhcp lease"),
        ("10.77.0.254/24,pool=1", "--dhcp"),
        ("10.77.0.1/24", "dhcp.address"),
        ("10.77.0.2/24", "guest[0].ip"),
        ("10.78.0.254/24", "guest[0].ip"),
    ];
    for (flag, field) in cases {
        let e = with_dhcp(flag, &seat).expect_err(flag);
        assert_eq!(e.field, field, "{flag}: {e}");
    }
}
