//! `ibguest-hosted`: a guest's network core as a Linux process.

mod latency;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ibguest_hosted::{HostedError, Runtime};
use netcore::clients::{HttpGetConfig, LocalPorts, PingConfig, TcpSenderConfig};
use netcore::pattern::Payload;
use netcore::{DiscardMode, HttpGet, NetConfig, Pinger, TcpSender};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

#[derive(Parser)]
#[command(
    name = "ibguest-hosted",
    version,
    about = "An ibguest guest as a Linux process, attached to ib-backend"
)]
struct Cli {
    /// The back end's socket for this guest (what QEMU's -chardev socket,path= names).
    #[arg(long)]
    socket: PathBuf,
    /// The guest configuration, in the unikernel's command-line syntax:
    /// "ip=10.77.0.2/24 gw=10.77.0.1 ip6=fd77::2/64 services=echo,http,discard,chargen",
    /// or "ip=dhcp ..." to take the address from the back end's DHCP server.
    /// "cm=on" (or "cm=MTU") asks for connected mode (RC, IP MTU 65520) if
    /// the back end offers it (`ib-backend --guest ...,max-rc-conns=N`).
    #[arg(long)]
    net: Option<String>,
    /// Shorthand for --net "ip=ADDR/PREFIX".
    #[arg(long)]
    ip: Option<String>,
    /// The discard service only counts what it reads (no SHA-256; its
    /// reports carry no hash): a raw sink for benchmarks.
    #[arg(long)]
    raw_discard: bool,
    /// Busy polling: microseconds to keep polling the channel after the
    /// last packet before arming the interrupt and sleeping (0: off, at
    /// most 10000). An idle guest does not spin.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    busy_poll_us: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM (the default).
    Serve,
    /// Ping an address (IPv4 or IPv6); exit 0 if every echo is answered.
    Ping {
        target: std::net::IpAddr,
        #[arg(long, default_value_t = 3)]
        count: u16,
        /// Seconds each request waits for its reply.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Send BYTES of seeded data over TCP to ADDR:PORT (e.g. a discard
    /// service on port 9) and print their SHA-256.
    Send {
        to: String,
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Send BYTES of whatever the socket buffer holds (zeros), with no
        /// generation and no hashing; prints `raw` for the hash.
        #[arg(long, conflicts_with = "seed")]
        raw: bool,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Fetch http://ADDR[:PORT]/PATH and print the status and body.
    Fetch {
        url: String,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Send COUNT datagrams to a UDP echo service at ADDR:PORT and check
    /// that each comes back intact.
    UdpEcho {
        to: String,
        #[arg(long, default_value_t = 10)]
        count: u16,
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// UDP request/response latency: send one datagram to a UDP echo
    /// service at ADDR:PORT, wait for its echo, repeat COUNT times (after
    /// a few warm-up exchanges); print the median and p99 round trip.
    UdpRr {
        to: String,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

/// Set by SIGUSR1: print the status page's counters and the TCP sockets
/// to stderr at the next pass.
static DUMP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// What SIGUSR1 asks for: the counters `/stats` would serve, then one line
/// per TCP socket (for a transfer that seems stuck).
fn dump_status(rt: &Runtime) {
    let mut out = String::from("ibguest-hosted: status (SIGUSR1)\n");
    let _ = rt.stack.write_status(&mut out);
    for (_, socket) in rt.stack.sockets.iter() {
        if let smoltcp::socket::Socket::Tcp(t) = socket {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "tcp {:?} -> {:?} {} send_queue {} recv_queue {}\n",
                    t.local_endpoint(),
                    t.remote_endpoint(),
                    t.state(),
                    t.send_queue(),
                    t.recv_queue()
                ),
            );
        }
    }
    eprint!("{out}");
}

/// Runs the loop until `step` says it is done or `stop` is set.
fn drive<T>(
    rt: &mut Runtime,
    stop: &AtomicBool,
    mut step: impl FnMut(&mut Runtime) -> Poll<T>,
) -> Result<Option<T>, HostedError> {
    while !stop.load(Ordering::Relaxed) {
        if DUMP.swap(false, Ordering::Relaxed) {
            dump_status(rt);
        }
        let progress = rt.poll()?;
        while let Some(report) = rt.stack.services.pop_discard_report() {
            println!("{report}");
        }
        if let Poll::Ready(v) = step(rt) {
            rt.poll()?;
            return Ok(Some(v));
        }
        if !progress {
            rt.idle_wait()?;
        }
    }
    Ok(None)
}

/// How long `ip=dhcp` waits for its lease before giving up.
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// With `ip=dhcp`: runs the network until the DHCP client has a lease (and
/// says so on stdout), or fails after [`DHCP_TIMEOUT`]. False if stopped.
fn wait_for_lease(rt: &mut Runtime, stop: &AtomicBool) -> Result<bool, HostedError> {
    let started = Instant::now();
    let got = drive(rt, stop, |rt| {
        if rt.stack.has_address() {
            Poll::Ready(true)
        } else if started.elapsed() > DHCP_TIMEOUT {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    })?;
    match got {
        Some(true) => {
            let c = rt.stack.config();
            let gw = c.gateway.map_or_else(|| "none".to_owned(), |g| g.to_string());
            println!("dhcp: lease {} gw {gw}", c.ip);
            Ok(true)
        }
        Some(false) => Err(HostedError::Protocol(format!(
            "ip=dhcp: no lease within {} s (is ib-backend running with --dhcp, and does this seat have ip=?)",
            DHCP_TIMEOUT.as_secs()
        ))),
        None => Ok(false),
    }
}

/// `ADDR:PORT`, IPv4 (`10.77.0.2:9`) or IPv6 in brackets (`[fd77::2]:9`).
fn endpoint(text: &str) -> Result<IpEndpoint, HostedError> {
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        HostedError::Protocol(format!(
            "{text:?} is not ADDR:PORT (e.g. 10.77.0.2:9 or [fd77::2]:9)"
        ))
    })?;
    Ok(IpEndpoint::new(IpAddress::from(addr.ip()), addr.port()))
}

fn client_error(e: netcore::ClientError) -> HostedError {
    HostedError::Protocol(format!("{e}"))
}

/// In connected mode, what went over RC each way: "connected mode: P
/// packets, B bytes sent over RC, P packets, B bytes received" (the tests
/// read it).
fn print_rc_totals(rt: &Runtime) {
    let cm = rt.stack.device.stats().cm;
    if cm.enabled {
        println!(
            "connected mode: {} packets, {} bytes sent over RC, {} packets, {} bytes received",
            cm.tx_packets, cm.tx_bytes, cm.rx_packets, cm.rx_bytes
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(cli: Cli, stop: &AtomicBool) -> Result<bool, HostedError> {
    let net_text = match (cli.net, cli.ip) {
        (Some(n), None) => n,
        (None, Some(ip)) => format!("ip={ip}"),
        (Some(_), Some(_)) => {
            return Err(HostedError::Protocol(
                "give either --net or --ip, not both".into(),
            ))
        }
        (None, None) => {
            return Err(HostedError::Protocol(
                "missing --net \"ip=ADDR/PREFIX ...\" (or --ip ADDR/PREFIX)".into(),
            ))
        }
    };
    let net =
        NetConfig::parse(&net_text).map_err(|e| HostedError::Protocol(format!("--net: {e}")))?;
    let mut rt = Runtime::start(&cli.socket, &net)?;
    if cli.raw_discard {
        rt.stack.services.set_discard_mode(DiscardMode::Count);
    }
    rt.set_busy_poll(Duration::from_micros(cli.busy_poll_us));
    if net.dhcp && !wait_for_lease(&mut rt, stop)? {
        return Ok(false);
    }
    log::info!(
        "ibguest-hosted: {} up, hw {}, ip6 {}/64{}, {} mode, MTU {}",
        rt.stack.config().ip,
        rt.stack.device.hw_addr(),
        rt.stack.device.ipv6_link_local(),
        net.ip6.map(|c| format!(" {c}")).unwrap_or_default(),
        if rt.stack.device.stats().cm.enabled {
            "connected"
        } else {
            "datagram"
        },
        rt.stack.device.mtu()
    );
    let mut ports = LocalPorts::new((std::process::id() % 1000) as u16);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            drive::<()>(&mut rt, stop, |_| Poll::Pending)?;
            Ok(true)
        }
        Command::Ping {
            target,
            count,
            timeout,
        } => {
            let mut config = PingConfig::new(IpAddress::from(target));
            config.count = count;
            config.timeout = smoltcp::time::Duration::from_secs(timeout);
            config.interval = smoltcp::time::Duration::from_millis(200);
            config.ident = std::process::id() as u16;
            let mut pinger = Pinger::new(&mut rt.stack.sockets, config).map_err(client_error)?;
            let report = drive(&mut rt, stop, |rt| {
                let now = rt.now();
                pinger.poll(&mut rt.stack.sockets, now)
            })?;
            let Some(report) = report else {
                return Ok(false);
            };
            let report = report.map_err(client_error)?;
            for (i, rtt) in report.rtts.iter().enumerate() {
                match rtt {
                    Some(d) => println!(
                        "reply from {target}: seq={} time={:.3} ms",
                        i + 1,
                        d.total_micros() as f64 / 1e3
                    ),
                    None => println!("no reply from {target}: seq={}", i + 1),
                }
            }
            println!(
                "{} sent, {} answered",
                report.transmitted(),
                report.received()
            );
            Ok(report.lost() == 0)
        }
        Command::Send {
            to,
            bytes,
            seed,
            raw,
            timeout,
        } => {
            let remote = endpoint(&to)?;
            let mut config = TcpSenderConfig::new(remote, ports.next(), bytes);
            config.payload = Payload::Seeded(seed);
            config.raw = raw;
            config.timeout = smoltcp::time::Duration::from_secs(timeout);
            config.window = rt.stack.tcp_window();
            let mut sender =
                TcpSender::new(rt.stack.iface.context(), &mut rt.stack.sockets, config)
                    .map_err(client_error)?;
            let started = Instant::now();
            let report = drive(&mut rt, stop, |rt| {
                let now = rt.now();
                sender.poll(&mut rt.stack.sockets, now)
            })?;
            let Some(report) = report else {
                return Ok(false);
            };
            let report = report.map_err(client_error)?;
            let secs = started.elapsed().as_secs_f64();
            let hash = if raw {
                "raw".to_owned()
            } else {
                hex(&report.sent_sha256)
            };
            println!(
                "sent {} bytes sha256 {hash} in {secs:.3} s ({:.1} MB/s)",
                report.sent,
                report.sent as f64 / secs / 1e6
            );
            print_rc_totals(&rt);
            Ok(report.sent == bytes)
        }
        Command::Fetch { url, timeout } => {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| HostedError::Protocol(format!("{url:?} is not an http:// URL")))?;
            let (host, path) = rest
                .split_once('/')
                .map(|(h, p)| (h, format!("/{p}")))
                .unwrap_or((rest, "/".into()));
            // A port after the host (`10.77.0.2:8080`, `[fd77::2]:8080`),
            // or 80.
            let has_port = match host.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => host.contains(':'),
            };
            let remote = if has_port {
                endpoint(host)?
            } else {
                endpoint(&format!("{host}:80"))?
            };
            let mut config = HttpGetConfig::new(remote, ports.next(), &path);
            config.timeout = smoltcp::time::Duration::from_secs(timeout);
            let mut get = HttpGet::new(rt.stack.iface.context(), &mut rt.stack.sockets, config)
                .map_err(client_error)?;
            let response = drive(&mut rt, stop, |rt| {
                let now = rt.now();
                get.poll(&mut rt.stack.sockets, now)
            })?;
            let Some(response) = response else {
                return Ok(false);
            };
            let response = response.map_err(client_error)?;
            println!("HTTP {} {}", response.status, response.reason);
            println!("{}", String::from_utf8_lossy(&response.body));
            print_rc_totals(&rt);
            Ok(response.status == 200)
        }
        Command::UdpEcho {
            to,
            count,
            size,
            timeout,
        } => udp_echo(
            &mut rt,
            stop,
            endpoint(&to)?,
            count,
            size,
            Duration::from_secs(timeout),
            ports.next(),
        ),
        Command::UdpRr {
            to,
            count,
            size,
            timeout,
        } => {
            let config = latency::RrConfig {
                to: endpoint(&to)?,
                local_port: ports.next(),
                count,
                size,
                timeout: Duration::from_secs(timeout),
            };
            let Some(report) = latency::udp_rr(&mut rt, stop, config)? else {
                return Ok(false);
            };
            println!("{}", report.line());
            log::info!(
                "busy polling {} us: {} idle passes spun, {} backoffs after losing the CPU, {} sleeps",
                rt.busy.budget_us(),
                rt.busy.spins,
                rt.busy.backoffs,
                rt.sleeps
            );
            if report.lost > 0 {
                println!(
                    "udp-rr: {} exchanges lost (no echo within {:?})",
                    report.lost,
                    latency::EXCHANGE_TIMEOUT
                );
            }
            Ok(true)
        }
    }
}

/// Datagrams in flight at once.
const UDP_WINDOW: u16 = 8;

fn udp_echo(
    rt: &mut Runtime,
    stop: &AtomicBool,
    to: IpEndpoint,
    count: u16,
    size: usize,
    timeout: Duration,
    port: u16,
) -> Result<bool, HostedError> {
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 128 * 1024]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 128 * 1024]);
    let mut socket = udp::Socket::new(rx, tx);
    socket
        .bind(port)
        .map_err(|e| HostedError::Protocol(format!("udp bind: {e}")))?;
    let handle = rt.stack.sockets.add(socket);
    let payload = |i: u16| -> Vec<u8> {
        (0..size)
            .map(|j| (j as u16).wrapping_mul(31).wrapping_add(i) as u8)
            .collect()
    };
    let mut sent = 0u16;
    let mut good = 0u16;
    let mut bad = 0u16;
    let deadline = Instant::now() + timeout;
    drive(rt, stop, |rt| {
        let s = rt.stack.sockets.get_mut::<udp::Socket>(handle);
        // A window of datagrams in flight, so the echo server's buffers are
        // not simply overrun.
        while sent < count && s.can_send() && sent - good - bad < UDP_WINDOW {
            sent += 1;
            if s.send_slice(&payload(sent), to).is_err() {
                break;
            }
        }
        let mut buf = vec![0u8; size.max(1) + 64];
        while let Ok((n, _)) = s.recv_slice(&mut buf) {
            let seq_ok = (1..=sent).any(|i| buf[..n] == payload(i)[..]);
            if seq_ok {
                good += 1;
            } else {
                bad += 1;
            }
        }
        if good + bad >= count || Instant::now() >= deadline {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })?;
    println!("udp echo: {sent} sent, {good} echoed intact, {bad} corrupted");
    Ok(good == count && bad == 0)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ibguest-hosted: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, DUMP.clone()) {
        eprintln!("ibguest-hosted: cannot handle SIGUSR1: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli, &stop) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ibguest-hosted: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_poll_option_is_checked() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from([&["ibguest-hosted", "--socket", "/s"][..], extra].concat())
        };
        assert_eq!(parse(&[]).expect("valid").busy_poll_us, 50);
        assert_eq!(
            parse(&["--busy-poll-us", "0"]).expect("valid").busy_poll_us,
            0
        );
        for bad in ["10001", "-1", "fast"] {
            let e = parse(&["--busy-poll-us", bad]).err().expect("refused");
            let text = e.to_string();
            assert!(text.contains("--busy-poll-us"), "{text}");
        }
        let e = parse(&["--busy-poll-us", "20000"]).err().expect("refused");
        assert!(e.to_string().contains("0..=10000"), "{e}");
    }
}
