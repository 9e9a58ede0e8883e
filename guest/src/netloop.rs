//! The guest's network: netcore's `NetStack` (the same core the hosted guest
//! runs) on `FrontHca` over the transport's window (ivshmem or Xen). Interrupts from the back end
//! wake the CPU from HLT; smoltcp's timers set the deadline.

use core::task::Poll;

use guest::config::BootConfig;
use guest::exit::{fail, ExitCode};
use guest::println;
use guest::transport::Transport;
use ipoib::IpoibError;
use netcore::clients::HttpGetConfig;
use netcore::clients::PingConfig;
use netcore::clients::TcpSenderConfig;
use netcore::clients::{UdpRr, UdpRrConfig};
use netcore::pattern::Payload;
use netcore::{HttpGet, NetStack, Pinger, TcpSender};
use ring::{BigParams, LayoutParams};
use smoltcp::time::{Duration, Instant};
use verbs_shim::front::{AttachError, FrontHca};
use verbs_shim::HcaError;

/// 256 TX and 256 RX slots of 4 KiB: 2 MiB of the window, rings to match.
pub const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 8,
    rx_order: 8,
    tx_slots: 256,
    rx_slots: 256,
    slot_size: 4096,
};
/// Connected mode (`cm=on` or `cm=MTU`, RFC 4755): the same small slots and
/// the big-slot pool [`BigParams::DEFAULT`] (16 TX and 32 RX slots of 64
/// KiB, 3 MiB), which travel on the same rings, so the rings double. The
/// window needs about 5 MiB; ib-backend's default is 8 MiB (ivshmem), and a
/// Xen guest grants what it needs.
pub const CM_PARAMS: LayoutParams = LayoutParams {
    tx_order: 9,
    rx_order: 9,
    ..PARAMS
};

/// The channel to ask for: connected mode's when the configuration asks
/// for it (granted only if the back end offers it).
pub fn channel(net: &netcore::NetConfig) -> (LayoutParams, Option<BigParams>) {
    match net.connected_mtu {
        Some(_) => (CM_PARAMS, Some(BigParams::DEFAULT)),
        None => (PARAMS, None),
    }
}

/// How long to wait for the back end when attaching.
const ATTACH_MICROS: u64 = 30_000_000;
/// Longest sleep without a timer.
const MAX_SLEEP_MICROS: u64 = 1_000_000;
/// `peer=` and `fetch=` try again (a second apart) for this long while the
/// other guest is not up yet; then they report the failure.
const CLIENT_RETRY_MICROS: u64 = 20_000_000;
/// How long `ip=dhcp` waits for its lease.
const DHCP_MICROS: u64 = 30_000_000;

fn now() -> Instant {
    Instant::from_micros(guest::now_micros() as i64)
}

/// Attaches to the channel and waits until the back end has connected it.
fn attach(dev: &Transport, net: &netcore::NetConfig) -> FrontHca<impl Fn()> {
    let start = guest::now_micros();
    let deadline = start + ATTACH_MICROS;
    let (params, big) = channel(net);
    loop {
        let bell = dev.bell();
        match FrontHca::attach_with(dev.window(), params, big, move || bell.ring()) {
            Ok(mut front) => loop {
                match front.poll_connected() {
                    Ok(true) => {
                        println!(
                            "ibguest: channel connected after {} us",
                            guest::now_micros().saturating_sub(start)
                        );
                        if big.is_some() {
                            use verbs_shim::Verbs;
                            println!(
                                "ibguest: connected mode {}",
                                if front.rc().is_some() {
                                    "agreed (RC connections to neighbours that offer it)"
                                } else {
                                    "not agreed (the seat has no max-rc-conns=, or the window is too small): datagram mode"
                                }
                            );
                        }
                        return front;
                    }
                    Ok(false) if guest::now_micros() < deadline => {
                        guest::wait_for_interrupt(Some(guest::now_micros() + 50_000))
                    }
                    Ok(false) => fail(
                        ExitCode::NetworkFailure,
                        format_args!("the back end did not connect the channel"),
                    ),
                    Err(e) => fail(
                        ExitCode::NetworkFailure,
                        format_args!("channel failed: {e}"),
                    ),
                }
            },
            Err(AttachError::NotReady) if guest::now_micros() < deadline => {
                guest::wait_for_interrupt(Some(guest::now_micros() + 50_000));
            }
            Err(e) => fail(
                ExitCode::NetworkFailure,
                format_args!("cannot attach to the channel: {e}"),
            ),
        }
    }
}

/// Runs the network until `exit-after` (if given) expires.
pub fn run(config: &BootConfig, dev: &Transport) {
    let front = attach(dev, &config.net);
    let seed = guest::arch::cpu::random_seed();
    // A burst of clients may take the whole TCP budget: keep it within a
    // quarter of the heap that is still free, so it cannot run the guest
    // out of memory.
    let mut net = config.net.clone();
    let (_, free) = guest::boot::heap::usage();
    if net.tcp_budget > free / 4 {
        net.tcp_budget = free / 4;
        println!(
            "ibguest: tcp-budget lowered to {} KiB, a quarter of the free heap",
            net.tcp_budget / 1024
        );
    }
    let mut stack = NetStack::new(front, &net, now(), seed)
        .unwrap_or_else(|e| fail(ExitCode::NetworkFailure, format_args!("network stack: {e}")));
    if net.dhcp {
        wait_for_lease(&mut stack);
    }
    let ip6 = stack.device.ipv6_addr();
    println!(
        "ibguest: network up: {} hw {} mtu {} ip6 {}/64{}{}",
        stack.config().ip,
        stack.device.hw_addr(),
        stack.device.mtu(),
        stack.device.ipv6_link_local(),
        if ip6.is_some() { " " } else { "" },
        Ip6(ip6)
    );
    let new_pinger = |stack: &mut NetStack<FrontHca<_>>, peer: core::net::IpAddr| {
        let mut ping = PingConfig::new(smoltcp::wire::IpAddress::from(peer));
        ping.count = 3;
        ping.interval = Duration::from_millis(200);
        ping.timeout = Duration::from_secs(2);
        Pinger::new(&mut stack.sockets, ping)
            .unwrap_or_else(|e| fail(ExitCode::NetworkFailure, format_args!("ping {peer}: {e}")))
    };
    let mut pinger = config.guest.peer.map(|peer| new_pinger(&mut stack, peer));
    let mut ping_attempts = 1u32;
    let new_fetch = |stack: &mut NetStack<FrontHca<_>>, port_offset: u32| {
        let url = config.guest.fetch.as_ref()?;
        let remote =
            smoltcp::wire::IpEndpoint::new(smoltcp::wire::IpAddress::Ipv4(url.addr), url.port);
        let local = 40000 + ((seed as u32).wrapping_add(port_offset) % 9000) as u16;
        let mut cfg = HttpGetConfig::new(remote, local, &url.path);
        cfg.timeout = Duration::from_secs(10);
        match HttpGet::new(stack.iface.context(), &mut stack.sockets, cfg) {
            Ok(g) => Some(g),
            Err(e) => fail(ExitCode::NetworkFailure, format_args!("fetch {url}: {e}")),
        }
    };
    let mut fetch = new_fetch(&mut stack, 0);
    let mut fetch_attempts = 1u32;
    let mut retry_at: (Option<u64>, Option<u64>) = (None, None);
    let clients_started = guest::now_micros();
    let mut sender = config.guest.send.map(|(addr, port, bytes)| {
        let remote = smoltcp::wire::IpEndpoint::new(smoltcp::wire::IpAddress::Ipv4(addr), port);
        let mut cfg = TcpSenderConfig::new(remote, 49152 + (seed % 1000) as u16, bytes);
        cfg.payload = Payload::Seeded(1);
        cfg.timeout = Duration::from_secs(600);
        cfg.window = stack.tcp_window();
        TcpSender::new(stack.iface.context(), &mut stack.sockets, cfg)
            .unwrap_or_else(|e| fail(ExitCode::NetworkFailure, format_args!("send: {e}")))
    });
    let mut send_started = 0u64;
    // `rr=` starts once `send=` (if any) has finished.
    let mut rr: Option<UdpRr> = None;
    let mut rr_pending = config.guest.rr.is_some();
    let end = config
        .guest
        .exit_after
        .map(|s| guest::now_micros() + u64::from(s) * 1_000_000);
    let mut interrupts = 0;
    let mut reattaches = 0u32;
    // Busy polling: after a pass that moved something, keep polling (no
    // interrupt armed, no HLT) until the budget has passed since it. An idle
    // guest halts at once.
    let mut busy_poll = netcore::BusyPoll::new(u64::from(config.guest.busy_poll_us()));
    loop {
        let t = now();
        let busy = match stack.poll(t) {
            Ok(b) => b,
            Err(IpoibError::Device(HcaError::Disconnected)) => {
                println!("ibguest: the back end went away (new epoch); re-attaching");
                let front = attach(dev, &config.net);
                if let Err(e) = stack.replace_device(front) {
                    fail(
                        ExitCode::NetworkFailure,
                        format_args!("re-attach failed: {e}"),
                    );
                }
                reattaches += 1;
                true
            }
            Err(e) => fail(
                ExitCode::NetworkFailure,
                format_args!("network failed: {e}"),
            ),
        };
        if let Some(p) = &mut pinger {
            if let Poll::Ready(result) = p.poll(&mut stack.sockets, t) {
                let mut retry = false;
                match result {
                    Ok(report) if report.received() > 0 => println!(
                        "ibguest: peer {} answered {}/{} pings, first in {} us",
                        report.target,
                        report.received(),
                        report.transmitted(),
                        report
                            .rtts
                            .iter()
                            .flatten()
                            .next()
                            .map(|d| d.total_micros())
                            .unwrap_or(0)
                    ),
                    Ok(_) if guest::now_micros() < clients_started + CLIENT_RETRY_MICROS => {
                        retry = true
                    }
                    Ok(report) => println!(
                        "ibguest: peer {} did not answer ({ping_attempts} attempts)",
                        report.target
                    ),
                    Err(e) => println!("ibguest: ping failed: {e}"),
                }
                if let Some(p) = pinger.take() {
                    p.release(&mut stack.sockets);
                }
                if retry {
                    retry_at.0 = Some(guest::now_micros() + 1_000_000);
                }
            }
        }
        if retry_at.0.is_some_and(|at| guest::now_micros() >= at) {
            retry_at.0 = None;
            ping_attempts += 1;
            pinger = config.guest.peer.map(|peer| new_pinger(&mut stack, peer));
        }
        if let Some(g) = &mut fetch {
            if let Poll::Ready(result) = g.poll(&mut stack.sockets, t) {
                let url = config.guest.fetch.as_ref();
                let mut retry = false;
                match result {
                    Ok(r) => println!(
                        "ibguest: fetch {}: HTTP {} {}, {} bytes",
                        url.map_or(alloc::string::String::new(), |u| alloc::format!("{u}")),
                        r.status,
                        r.reason,
                        r.body.len()
                    ),
                    Err(_) if guest::now_micros() < clients_started + CLIENT_RETRY_MICROS => {
                        retry = true
                    }
                    Err(e) => {
                        println!("ibguest: fetch failed after {fetch_attempts} attempts: {e}")
                    }
                }
                if let Some(g) = fetch.take() {
                    g.release(&mut stack.sockets);
                }
                if retry {
                    retry_at.1 = Some(guest::now_micros() + 1_000_000);
                }
            }
        }
        if retry_at.1.is_some_and(|at| guest::now_micros() >= at) {
            retry_at.1 = None;
            fetch = new_fetch(&mut stack, fetch_attempts);
            fetch_attempts += 1;
        }
        if let Some(s) = &mut sender {
            if send_started == 0 {
                send_started = guest::now_micros();
            }
            if let Poll::Ready(result) = s.poll(&mut stack.sockets, t) {
                match result {
                    Ok(r) => {
                        let micros = guest::now_micros().saturating_sub(send_started).max(1);
                        println!(
                            "ibguest: sent {} bytes sha256 {} in {} ms ({} KB/s)",
                            r.sent,
                            Hex(&r.sent_sha256),
                            micros / 1000,
                            r.sent * 1000 / micros
                        );
                        let cm = stack.device.stats().cm;
                        if cm.enabled {
                            println!(
                                "ibguest: connected mode: {} packets, {} bytes sent over RC, {} packets, {} bytes received",
                                cm.tx_packets, cm.tx_bytes, cm.rx_packets, cm.rx_bytes
                            );
                        }
                    }
                    Err(e) => println!("ibguest: send failed: {e}"),
                }
                sender = None;
            }
        }
        if rr_pending && sender.is_none() {
            rr_pending = false;
            rr = config.guest.rr.map(|(addr, port, count, size)| {
                let to = smoltcp::wire::IpEndpoint::new(smoltcp::wire::IpAddress::Ipv4(addr), port);
                let cfg = UdpRrConfig::new(to, 51000 + (seed % 1000) as u16, count, size);
                UdpRr::new(&mut stack.sockets, cfg)
                    .unwrap_or_else(|e| fail(ExitCode::NetworkFailure, format_args!("rr: {e}")))
            });
        }
        let mut rr_sent = false;
        if let Some(c) = &mut rr {
            match c.poll(&mut stack.sockets, now()) {
                Poll::Ready(result) => {
                    match result {
                        Ok(r) => {
                            println!("ibguest: {r}");
                            if r.lost > 0 {
                                println!(
                                    "ibguest: udp-rr: {} exchanges lost (no echo within 1 s)",
                                    r.lost
                                );
                            }
                        }
                        Err(e) => {
                            let (done, lost) = c.progress();
                            println!("ibguest: udp-rr failed after {done} round trips ({lost} lost): {e}");
                        }
                    }
                    if let Some(c) = rr.take() {
                        c.release(&mut stack.sockets);
                    }
                }
                Poll::Pending => rr_sent = c.wants_poll(),
            }
        }
        while let Some(report) = stack.services.pop_discard_report() {
            println!("ibguest: {report}");
        }
        interrupts += dev.take_interrupts();
        if let Some(end) = end {
            if guest::now_micros() >= end {
                let s = stack.device.stats();
                println!(
                    "ibguest: {interrupts} interrupt(s) from the back end; rx {} tx {} packets; {reattaches} re-attach(es)",
                    s.rx_packets, s.tx_packets
                );
                return;
            }
        }
        if busy || rr_sent {
            busy_poll.worked(guest::now_micros());
            continue;
        }
        if busy_poll.spin_on(guest::now_micros()) {
            core::hint::spin_loop();
            continue;
        }
        match stack.arm() {
            Ok(true) => continue,
            Ok(false) => {}
            Err(IpoibError::Device(HcaError::Disconnected)) => continue,
            Err(e) => fail(
                ExitCode::NetworkFailure,
                format_args!("network failed: {e}"),
            ),
        }
        let t = now();
        let mut deadline = guest::now_micros() + MAX_SLEEP_MICROS;
        if let Some(at) = stack.next_deadline(t) {
            deadline = deadline.min(at.total_micros().max(0) as u64);
        }
        if let Some(at) = pinger.as_ref().and_then(|p| p.poll_at()) {
            deadline = deadline.min(at.total_micros().max(0) as u64);
        }
        if let Some(at) = rr.as_ref().and_then(|c| c.poll_at()) {
            deadline = deadline.min(at.total_micros().max(0) as u64);
        }
        for at in [retry_at.0, retry_at.1].into_iter().flatten() {
            deadline = deadline.min(at);
        }
        if let Some(end) = end {
            deadline = deadline.min(end);
        }
        guest::wait_for_interrupt(Some(deadline));
    }
}

/// `ip=dhcp`: runs the network until the DHCP client has a lease, and says
/// so on the console; fails with a network failure after
/// [`DHCP_MICROS`] without one.
fn wait_for_lease<H: verbs_shim::Hca>(stack: &mut NetStack<H>) {
    let deadline = guest::now_micros() + DHCP_MICROS;
    while !stack.has_address() {
        let t = now();
        let busy = stack.poll(t).unwrap_or_else(|e| {
            fail(
                ExitCode::NetworkFailure,
                format_args!("network failed while waiting for DHCP: {e}"),
            )
        });
        if guest::now_micros() >= deadline {
            fail(
                ExitCode::NetworkFailure,
                format_args!(
                    "ip=dhcp: no lease within {} s (does the back end run --dhcp, and does this seat have ip=?)",
                    DHCP_MICROS / 1_000_000
                ),
            );
        }
        if busy || matches!(stack.arm(), Ok(true)) {
            continue;
        }
        let mut wake = (guest::now_micros() + MAX_SLEEP_MICROS).min(deadline);
        if let Some(at) = stack.next_deadline(t) {
            wake = wake.min(at.total_micros().max(0) as u64);
        }
        guest::wait_for_interrupt(Some(wake));
    }
    let c = stack.config();
    match c.gateway {
        Some(gw) => println!("ibguest: dhcp: lease {} gw {gw}", c.ip),
        None => println!("ibguest: dhcp: lease {} (no gateway)", c.ip),
    }
}

/// Lower-case hex, for digests.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// An optional IPv6 address and prefix, shown as nothing when absent.
struct Ip6(Option<smoltcp::wire::Ipv6Cidr>);

impl core::fmt::Display for Ip6 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(cidr) => write!(f, "{cidr}"),
            None => Ok(()),
        }
    }
}
