//! The guest's configuration, from the kernel command line.
//!
//! The command line is `netcore`'s network options plus the guest's own:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `ip`, `gw`, `services`, `log`, `name` | see `netcore::NetConfig` | the network and its services |
//! | `send` | `ADDR:PORT:BYTES` | once the network is up, send BYTES of seeded data over TCP (e.g. to a discard service on port 9) and print their SHA-256 |
//! | `fetch` | `http://ADDR[:PORT]/PATH` | once the network is up, GET this URL (retrying for 20 s while the server is not up yet) and print the status line and length |
//! | `rr` | `ADDR:PORT:COUNT:SIZE` | once the network is up (and after `send`, if given), measure UDP request/response latency against the echo service at ADDR:PORT (port 7): 100 untimed exchanges, then COUNT timed ones of SIZE bytes (8..=2016), one at a time; print `udp-rr: N round trips, median X us, p99 Y us` as the hosted guest and the benchmark's Linux peer do (`make bench-vm`) |
//! | `exit-after` | seconds | serve for this long, then exit with success (for tests) |
//! | `busy-poll` (or `busy_poll`) | microseconds, 0 to 10000 (default 50) | after a pass that moved packets, keep polling the channel this long before arming the interrupt and halting; 0 turns busy polling off. An idle guest halts at once. |
//! | `peer` | an IPv4 or IPv6 address | ping this address once the network is up and print whether it answered (how `make run` shows the guests finding each other) |
//! | `xen-fault` | `bad-ref`, `bad-port`, `huge-window`, `read-only` | under Xen, publish a broken channel on purpose: a grant reference that was never granted, an event channel that was never allocated, a window larger than the back end allows, or window pages granted read-only. The back end must refuse this guest alone. For testing the back end's checks. |
//! | `crash` | `ud2`, `pagefault`, `overflow`, `panic` | fail on purpose right after parsing: an invalid opcode, a read of an unmapped page, a stack overflow (a page fault on the stack's guard page, delivered as a double fault on its own stack) or a Rust panic. For testing the failure paths. |
//!
//! The guest's keys are taken out first and the rest goes to
//! [`netcore::NetConfig::parse`], which rejects anything it does not know.
//! Example: `ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info`.

use alloc::string::String;
use core::fmt;

use netcore::{ConfigError, NetConfig};

/// The guest's own keys, as error messages list them.
pub const GUEST_OPTIONS: &str = "peer, send, rr, fetch, exit-after, busy-poll, xen-fault, crash";
/// The busy-polling budget without `busy-poll=`, in microseconds.
pub const DEFAULT_BUSY_POLL_US: u32 = 50;
/// The largest `busy-poll=` accepted, in microseconds.
pub const MAX_BUSY_POLL_US: u32 = 10_000;
const CRASH_VALUES: &str = "ud2, pagefault, overflow, panic";
const XEN_FAULT_VALUES: &str = "bad-ref, bad-port, huge-window, read-only";

/// A broken Xen channel to publish on purpose (`xen-fault=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenFault {
    /// A directory grant reference that was never granted.
    BadRef,
    /// An event-channel port that was never allocated.
    BadPort,
    /// More window pages than the back end's `max-window-pages`.
    HugeWindow,
    /// The window's pages granted read-only.
    ReadOnly,
}

impl XenFault {
    fn parse(v: &str) -> Option<XenFault> {
        Some(match v {
            "bad-ref" => XenFault::BadRef,
            "bad-port" => XenFault::BadPort,
            "huge-window" => XenFault::HugeWindow,
            "read-only" => XenFault::ReadOnly,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            XenFault::BadRef => "bad-ref",
            XenFault::BadPort => "bad-port",
            XenFault::HugeWindow => "huge-window",
            XenFault::ReadOnly => "read-only",
        }
    }
}

/// A failure to provoke on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Execute `ud2`: invalid opcode (#UD, vector 6).
    InvalidOpcode,
    /// Read an unmapped address: page fault (#PF, vector 14) with CR2.
    PageFault,
    /// Recurse until the stack's guard page: the page fault cannot be
    /// delivered on the overflowed stack, so a double fault (#DF, vector 8)
    /// arrives on its own stack.
    StackOverflow,
    /// `panic!()`.
    Panic,
}

impl Crash {
    fn parse(v: &str) -> Option<Crash> {
        Some(match v {
            "ud2" => Crash::InvalidOpcode,
            "pagefault" => Crash::PageFault,
            "overflow" => Crash::StackOverflow,
            "panic" => Crash::Panic,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Crash::InvalidOpcode => "ud2",
            Crash::PageFault => "pagefault",
            Crash::StackOverflow => "overflow",
            Crash::Panic => "panic",
        }
    }
}

/// An `http://ADDR[:PORT]/PATH` URL for `fetch=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchUrl {
    pub addr: core::net::Ipv4Addr,
    pub port: u16,
    pub path: String,
}

impl FetchUrl {
    pub fn parse(url: &str) -> Option<FetchUrl> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (addr, port) = match host.split_once(':') {
            Some((a, p)) => (a.parse().ok()?, p.parse().ok().filter(|&p| p != 0)?),
            None => (host.parse().ok()?, 80),
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        Some(FetchUrl {
            addr,
            port,
            path: path.into(),
        })
    }
}

impl fmt::Display for FetchUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.addr, self.port, self.path)
    }
}

/// Options only the guest understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestOptions {
    pub crash: Option<Crash>,
    /// An address to ping once the network is up.
    pub peer: Option<core::net::IpAddr>,
    /// Serve for this many seconds, then exit with success.
    pub exit_after: Option<u32>,
    /// Send this many bytes over TCP to this address and port.
    pub send: Option<(core::net::Ipv4Addr, u16, u64)>,
    /// UDP request/response latency against this echo address and port:
    /// timed exchanges and payload bytes.
    pub rr: Option<(core::net::Ipv4Addr, u16, u32, usize)>,
    /// A URL to GET once the network is up.
    pub fetch: Option<FetchUrl>,
    /// Under Xen, a broken channel to publish on purpose.
    pub xen_fault: Option<XenFault>,
    /// The busy-polling budget in microseconds, if given.
    pub busy_poll: Option<u32>,
}

impl GuestOptions {
    /// The busy-polling budget in microseconds (0: off).
    pub fn busy_poll_us(&self) -> u32 {
        self.busy_poll.unwrap_or(DEFAULT_BUSY_POLL_US)
    }
}

/// The whole command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    pub net: NetConfig,
    pub guest: GuestOptions,
}

/// A command line the guest cannot run with. `Display` says what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootConfigError {
    /// A network option is wrong (or unknown).
    Net(ConfigError),
    BadCrash {
        value: String,
    },
    BadPeer {
        value: String,
    },
    BadExitAfter {
        value: String,
    },
    BadBusyPoll {
        value: String,
    },
    BadSend {
        value: String,
    },
    BadFetch {
        value: String,
    },
    BadRr {
        value: String,
    },
    BadXenFault {
        value: String,
    },
    Duplicate {
        first: String,
        second: String,
    },
}

impl fmt::Display for BootConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootConfigError::Net(ConfigError::UnknownOption { token }) => write!(
                f,
                "unknown option \"{token}\" (known: {}; guest: {GUEST_OPTIONS})",
                netcore::config::KNOWN_OPTIONS
            ),
            BootConfigError::Net(ConfigError::NotKeyValue { token }) => write!(
                f,
                "\"{token}\" is not key=value (known: {}; guest: {GUEST_OPTIONS})",
                netcore::config::KNOWN_OPTIONS
            ),
            BootConfigError::Net(e) => e.fmt(f),
            BootConfigError::BadCrash { value } => {
                write!(f, "crash={value}: not a crash kind (known: {CRASH_VALUES})")
            }
            BootConfigError::BadPeer { value } => {
                write!(
                    f,
                    "peer={value}: not an IP address (example: peer=10.77.0.2 or peer=fd77::2)"
                )
            }
            BootConfigError::BadExitAfter { value } => {
                write!(
                    f,
                    "exit-after={value}: not a number of seconds (example: exit-after=5)"
                )
            }
            BootConfigError::BadBusyPoll { value } => write!(
                f,
                "busy-poll={value}: not a number of microseconds from 0 (off) to {MAX_BUSY_POLL_US} (example: busy-poll=50)"
            ),
            BootConfigError::BadSend { value } => write!(
                f,
                "send={value}: not ADDR:PORT:BYTES (example: send=10.77.0.2:9:16777216)"
            ),
            BootConfigError::BadFetch { value } => write!(
                f,
                "fetch={value}: not http://ADDR[:PORT]/PATH with an IPv4 address (example: fetch=http://10.77.0.3/)"
            ),
            BootConfigError::BadRr { value } => write!(
                f,
                "rr={value}: not ADDR:PORT:COUNT:SIZE with SIZE 8..=2016 (example: rr=10.77.0.2:7:2000:64)"
            ),
            BootConfigError::BadXenFault { value } => write!(
                f,
                "xen-fault={value}: not a fault kind (known: {XEN_FAULT_VALUES})"
            ),
            BootConfigError::Duplicate { first, second } => write!(
                f,
                "\"{first}\" and \"{second}\": the same option twice; give each option once"
            ),
        }
    }
}

impl core::error::Error for BootConfigError {}

impl From<ConfigError> for BootConfigError {
    fn from(e: ConfigError) -> Self {
        BootConfigError::Net(e)
    }
}

impl BootConfig {
    /// Parses a whole command line; see the module documentation.
    pub fn parse(cmdline: &str) -> Result<BootConfig, BootConfigError> {
        let (guest, net) = split(cmdline)?;
        Ok(BootConfig {
            net: NetConfig::parse(&net)?,
            guest,
        })
    }
}

/// `ADDR:PORT:COUNT:SIZE` for `rr=`.
fn parse_rr(value: &str) -> Option<(core::net::Ipv4Addr, u16, u32, usize)> {
    let mut parts = value.split(':');
    let (Some(a), Some(p), Some(c), Some(s), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let size: usize = s.parse().ok()?;
    Some((
        a.parse().ok()?,
        p.parse().ok().filter(|&p| p != 0)?,
        c.parse().ok().filter(|&c| c != 0)?,
        Some(size).filter(|s| (8..=netcore::clients::UDP_RR_MAX_SIZE).contains(s))?,
    ))
}

/// Takes the guest's own options out of `cmdline`; returns them and the
/// rest, for `netcore`.
pub fn split(cmdline: &str) -> Result<(GuestOptions, String), BootConfigError> {
    let mut guest = GuestOptions::default();
    let mut crash_token: Option<&str> = None;
    let mut peer_token: Option<&str> = None;
    let mut exit_token: Option<&str> = None;
    let mut send_token: Option<&str> = None;
    let mut fetch_token: Option<&str> = None;
    let mut rr_token: Option<&str> = None;
    let mut xen_fault_token: Option<&str> = None;
    let mut busy_poll_token: Option<&str> = None;
    let mut rest = String::new();
    for token in cmdline.split_whitespace() {
        match token.split_once('=') {
            Some(("send", value)) => {
                if let Some(first) = send_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                send_token = Some(token);
                let bad = || BootConfigError::BadSend {
                    value: value.into(),
                };
                let mut parts = value.split(':');
                let (Some(a), Some(p), Some(b), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad());
                };
                guest.send = Some((
                    a.parse().map_err(|_| bad())?,
                    p.parse().map_err(|_| bad())?,
                    b.parse().map_err(|_| bad())?,
                ));
            }
            Some(("rr", value)) => {
                if let Some(first) = rr_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                rr_token = Some(token);
                guest.rr = Some(parse_rr(value).ok_or_else(|| BootConfigError::BadRr {
                    value: value.into(),
                })?);
            }
            Some(("fetch", value)) => {
                if let Some(first) = fetch_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                fetch_token = Some(token);
                guest.fetch =
                    Some(
                        FetchUrl::parse(value).ok_or_else(|| BootConfigError::BadFetch {
                            value: value.into(),
                        })?,
                    );
            }
            Some(("xen-fault", value)) => {
                if let Some(first) = xen_fault_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                xen_fault_token = Some(token);
                guest.xen_fault =
                    Some(
                        XenFault::parse(value).ok_or_else(|| BootConfigError::BadXenFault {
                            value: value.into(),
                        })?,
                    );
            }
            Some(("exit-after", value)) => {
                if let Some(first) = exit_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                exit_token = Some(token);
                guest.exit_after =
                    Some(value.parse().map_err(|_| BootConfigError::BadExitAfter {
                        value: value.into(),
                    })?);
            }
            Some(("busy-poll" | "busy_poll", value)) => {
                if let Some(first) = busy_poll_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                busy_poll_token = Some(token);
                let us = value
                    .parse::<u32>()
                    .ok()
                    .filter(|&us| us <= MAX_BUSY_POLL_US)
                    .ok_or_else(|| BootConfigError::BadBusyPoll {
                        value: value.into(),
                    })?;
                guest.busy_poll = Some(us);
            }
            Some(("peer", value)) => {
                if let Some(first) = peer_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                peer_token = Some(token);
                guest.peer = Some(value.parse().map_err(|_| BootConfigError::BadPeer {
                    value: value.into(),
                })?);
            }
            Some(("crash", value)) => {
                if let Some(first) = crash_token {
                    return Err(BootConfigError::Duplicate {
                        first: first.into(),
                        second: token.into(),
                    });
                }
                crash_token = Some(token);
                guest.crash =
                    Some(
                        Crash::parse(value).ok_or_else(|| BootConfigError::BadCrash {
                            value: value.into(),
                        })?,
                    );
            }
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(token);
            }
        }
    }
    Ok((guest, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn send_and_exit_after() {
        let c = BootConfig::parse("ip=10.77.0.3/24 send=10.77.0.2:9:1024 exit-after=5").unwrap();
        assert_eq!(
            c.guest.send,
            Some((core::net::Ipv4Addr::new(10, 77, 0, 2), 9, 1024))
        );
        assert_eq!(c.guest.exit_after, Some(5));
        assert!(BootConfig::parse("ip=10.77.0.3/24 send=10.77.0.2:9").is_err());
        assert!(BootConfig::parse("ip=10.77.0.3/24 exit-after=soon").is_err());
    }

    #[test]
    fn rr_takes_address_port_count_size() {
        let c = BootConfig::parse("ip=10.77.0.3/24 rr=10.77.0.2:7:2000:64").unwrap();
        assert_eq!(
            c.guest.rr,
            Some((core::net::Ipv4Addr::new(10, 77, 0, 2), 7, 2000, 64))
        );
        for bad in [
            "rr=10.77.0.2:7:2000",
            "rr=10.77.0.2:0:2000:64",
            "rr=10.77.0.2:7:0:64",
            "rr=10.77.0.2:7:10:4",
            "rr=10.77.0.2:7:10:5000",
        ] {
            let e = BootConfig::parse(&std::format!("ip=10.77.0.3/24 {bad}")).unwrap_err();
            assert!(e.to_string().starts_with(bad), "{e}");
        }
    }

    #[test]
    fn busy_poll_budget() {
        let c = BootConfig::parse("ip=10.77.0.3/24").unwrap();
        assert_eq!(c.guest.busy_poll_us(), DEFAULT_BUSY_POLL_US);
        let c = BootConfig::parse("ip=10.77.0.3/24 busy-poll=0").unwrap();
        assert_eq!(c.guest.busy_poll_us(), 0);
        let c = BootConfig::parse("busy_poll=10000 ip=10.77.0.3/24").unwrap();
        assert_eq!(c.guest.busy_poll_us(), 10_000);
        for bad in ["10001", "-1", "50us", ""] {
            let e =
                BootConfig::parse(&std::format!("ip=10.77.0.3/24 busy-poll={bad}")).unwrap_err();
            assert_eq!(
                e.to_string(),
                std::format!("busy-poll={bad}: not a number of microseconds from 0 (off) to 10000 (example: busy-poll=50)")
            );
        }
        let e = BootConfig::parse("ip=10.77.0.3/24 busy-poll=5 busy_poll=6").unwrap_err();
        assert!(matches!(e, BootConfigError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn fetch_takes_an_http_url() {
        let c = BootConfig::parse("ip=10.77.0.3/24 fetch=http://10.77.0.2/stats").unwrap();
        let u = c.guest.fetch.unwrap();
        assert_eq!(
            (u.addr, u.port, u.path.as_str()),
            (core::net::Ipv4Addr::new(10, 77, 0, 2), 80, "/stats")
        );
        let u = FetchUrl::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        assert_eq!(u.to_string(), "http://10.0.0.1:8080/");
        for bad in [
            "https://10.0.0.1/",
            "http://host/",
            "http://10.0.0.1:0/",
            "http://10.0.0.1:x/",
        ] {
            assert!(FetchUrl::parse(bad).is_none(), "{bad}");
        }
        let e = BootConfig::parse("ip=10.77.0.3/24 fetch=ftp://x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "fetch=ftp://x: not http://ADDR[:PORT]/PATH with an IPv4 address (example: fetch=http://10.77.0.3/)"
        );
    }

    #[test]
    fn xen_faults_parse() {
        for f in [
            XenFault::BadRef,
            XenFault::BadPort,
            XenFault::HugeWindow,
            XenFault::ReadOnly,
        ] {
            let c =
                BootConfig::parse(&std::format!("ip=10.0.0.2/24 xen-fault={}", f.name())).unwrap();
            assert_eq!(c.guest.xen_fault, Some(f));
        }
        let e = BootConfig::parse("ip=10.0.0.2/24 xen-fault=nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "xen-fault=nope: not a fault kind (known: bad-ref, bad-port, huge-window, read-only)"
        );
    }

    #[test]
    fn peer_is_an_address() {
        let c = BootConfig::parse("ip=10.77.0.3/24 peer=10.77.0.2").unwrap();
        assert_eq!(
            c.guest.peer,
            Some(core::net::IpAddr::V4(core::net::Ipv4Addr::new(
                10, 77, 0, 2
            )))
        );
        let c = BootConfig::parse("ip=10.77.0.3/24 ip6=fd77::3/64 peer=fd77::2").unwrap();
        assert_eq!(c.guest.peer, "fd77::2".parse().ok());
        let e = BootConfig::parse("ip=10.77.0.3/24 peer=nowhere").unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer=nowhere: not an IP address (example: peer=10.77.0.2 or peer=fd77::2)"
        );
    }

    #[test]
    fn network_options_go_to_netcore() {
        let c =
            BootConfig::parse("ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info").unwrap();
        assert_eq!(
            c.net.to_string(),
            "ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http log=info name=ibguest"
        );
        assert_eq!(c.guest, GuestOptions::default());
    }

    #[test]
    fn crash_is_split_off_anywhere() {
        let (g, rest) = split("  ip=10.0.0.2/24   crash=ud2 log=debug ").unwrap();
        assert_eq!(g.crash, Some(Crash::InvalidOpcode));
        assert_eq!(rest, "ip=10.0.0.2/24 log=debug");
        for (v, c) in [
            ("ud2", Crash::InvalidOpcode),
            ("pagefault", Crash::PageFault),
            ("overflow", Crash::StackOverflow),
            ("panic", Crash::Panic),
        ] {
            let cfg = BootConfig::parse(&std::format!("crash={v} ip=10.0.0.2/24")).unwrap();
            assert_eq!(cfg.guest.crash, Some(c));
            assert_eq!(c.name(), v);
        }
    }

    #[test]
    fn errors_name_the_token() {
        let e = BootConfig::parse("ip=10.0.0.2/24 crash=boom").unwrap_err();
        assert_eq!(
            e.to_string(),
            "crash=boom: not a crash kind (known: ud2, pagefault, overflow, panic)"
        );
        let e = BootConfig::parse("crash=ud2 ip=10.0.0.2/24 crash=panic").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"crash=ud2\" and \"crash=panic\": the same option twice; give each option once"
        );
        let e = BootConfig::parse("ip=10.0.0.2/24 colour=blue").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option \"colour=blue\" (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm; guest: peer, send, rr, fetch, exit-after, busy-poll, xen-fault, crash)"
        );
        let e = BootConfig::parse("ip=10.0.0.2/24 quiet").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"quiet\" is not key=value (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm; guest: peer, send, rr, fetch, exit-after, busy-poll, xen-fault, crash)"
        );
        let e = BootConfig::parse("").unwrap_err();
        assert_eq!(e, BootConfigError::Net(ConfigError::MissingIp));
        assert_eq!(
            e.to_string(),
            "missing required option ip= (example: ip=10.77.0.2/24, or ip=dhcp)"
        );
        let e = BootConfig::parse("ip=10.0.0.300/24").unwrap_err();
        assert!(e.to_string().starts_with("ip=10.0.0.300/24: "), "{e}");
    }
}
