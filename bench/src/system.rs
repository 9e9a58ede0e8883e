//! The system benchmarks: real processes, real wake-ups. Ours: two release
//! `ibguest-hosted` guests attached to a release `ib-backend` (sim fabric)
//! over ivshmem-doorbell sockets. Peer: Linux's own UDP and TCP between two
//! network namespaces over a veth pair with IPoIB's MTU, measured in the
//! same run, runs of the two alternating.
//!
//! - UDP request/response latency: the guests' `udp-rr` against the echo
//!   service, and the same client and server (re-executions of this binary)
//!   on Linux sockets;
//! - TCP throughput: the guests' `send` to the discard service, and the same
//!   data and hashing over Linux TCP, once with TSO/GSO/GRO off and once on;
//! - raw TCP throughput ([`raw`]): the same without the data work at
//!   either end, against a raw Linux sender and sink, and iperf3;
//! - interrupts and doorbells per packet in our TCP runs (`ib-backend
//!   stats` before and after), against NET_RX softirqs per packet in Linux's
//!   offloads-off runs.

mod raw;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ibguest_testkit::BoxError;
use qemu_tests::Guard;

use crate::cleanup::{self, die_with_parent};
use crate::hosted_net::{self, stats_since, Counters, HostedNet, SERVER_IP};
use crate::linux_peer::{self, RR_WARMUP};
use crate::measure::{median, Plan};
use crate::netns::{self, Side, VethPair, ADDR_B};
use crate::sockperf;
use crate::table::{Goal, Row};
use crate::{about, progress};

/// IPoIB's MTU at IB MTU 2048: the veth pair gets the same.
pub const IPOIB_MTU: u32 = 2044;
/// UDP payload of each request and response.
pub const RR_SIZE: usize = 64;
const ECHO_PORT: u16 = 7;
const DISCARD_PORT: u16 = 9;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Busy polling off, for the back end and the guests alike.
const BUSY_POLL_OFF: [&str; 2] = ["--busy-poll-us", "0"];
/// Busy polling on at the default budget, for the back end and the guests.
const BUSY_POLL_ON: [&str; 2] = ["--busy-poll-us", "50"];

/// The system table and the lines printed under it.
pub struct SystemReport {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// "SKIPPED: ..." with the reason, if some Linux peers were not measured.
    pub skipped: Option<String>,
}

/// The Linux peer's servers in namespace B; clients run in namespace A.
struct LinuxPeers {
    /// Kept for its `Drop`, which stops the server.
    _echo: Guard,
    sink: Guard,
    /// Dropped after the servers.
    pair: VethPair,
    exe: PathBuf,
    dir: PathBuf,
    clients: usize,
    sends: usize,
}

impl LinuxPeers {
    /// Creates the namespaces and starts the servers. `Err` is the reason
    /// the Linux peers cannot be measured.
    fn start(dir: &Path) -> Result<LinuxPeers, String> {
        let pair = VethPair::create(IPOIB_MTU)?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
        let server = |name: &str, program: &str, port: u16| -> Result<Guard, String> {
            let mut cmd = pair.exec(Side::B, &exe);
            cmd.args(["__peer", program, &format!("{ADDR_B}:{port}")]);
            die_with_parent(&mut cmd);
            let mut g = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))
                .map_err(|e| e.to_string())?;
            g.wait_for("listening on", Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok(g)
        };
        let echo = server("linux-echo", "udp-echo", ECHO_PORT)?;
        let sink = server("linux-sink", "tcp-sink", DISCARD_PORT)?;
        Ok(LinuxPeers {
            _echo: echo,
            sink,
            pair,
            exe,
            dir: dir.to_owned(),
            clients: 0,
            sends: 0,
        })
    }

    /// Runs `__peer ARGS` in namespace A to completion; its output.
    fn client(&mut self, args: &[&str]) -> Result<String, BoxError> {
        self.clients += 1;
        let name = format!("linux-client-{}", self.clients);
        let mut cmd = self.pair.exec(Side::A, &self.exe);
        cmd.arg("__peer").args(args);
        die_with_parent(&mut cmd);
        let mut guard = Guard::spawn(&name, cmd, &self.dir.join(format!("{name}.log")))?;
        let status = guard.wait_exit(CLIENT_TIMEOUT)?;
        if !status.success() {
            return Err(format!("{name} {args:?} failed ({status}):\n{}", guard.tail(30)).into());
        }
        Ok(guard.output())
    }

    fn rr(&mut self, count: u32) -> Result<(f64, f64), BoxError> {
        let to = format!("{ADDR_B}:{ECHO_PORT}");
        let out = self.client(&["udp-rr", &to, &count.to_string(), &RR_SIZE.to_string()])?;
        parse_rr(&out, count)
    }

    /// One transfer; (MB/s, sender's SHA-256), checked against the sink.
    fn send(&mut self, bytes: u64) -> Result<Sent, BoxError> {
        let to = format!("{ADDR_B}:{DISCARD_PORT}");
        let out = self.client(&["tcp-send", &to, &bytes.to_string()])?;
        let sent = parse_sent(&out, bytes)?;
        self.sends += 1;
        let report = hosted_net::wait_reports(&self.sink, self.sends, Duration::from_secs(10))?;
        check_report(&report, bytes, &sent.sha256, "Linux sink")?;
        Ok(sent)
    }
}

/// What a sender printed.
struct Sent {
    mbps: f64,
    sha256: String,
}

/// Reads `udp-rr: N round trips, median X us, p99 Y us`.
fn parse_rr(out: &str, count: u32) -> Result<(f64, f64), BoxError> {
    let line = out
        .lines()
        .find(|l| l.starts_with("udp-rr:") && l.contains("round trips"))
        .ok_or_else(|| format!("no udp-rr line in:\n{out}"))?;
    let word_after = |key: &str| -> Option<&str> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()
    };
    let n: u32 = line
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("bad udp-rr line {line:?}"))?;
    if n != count {
        return Err(format!("udp-rr measured {n} of {count} round trips: {line:?}").into());
    }
    let median = word_after("median").and_then(|w| w.parse().ok());
    let p99 = word_after("p99").and_then(|w| w.parse().ok());
    match (median, p99) {
        (Some(m), Some(p)) => Ok((m, p)),
        _ => Err(format!("bad udp-rr line {line:?}").into()),
    }
}

/// Reads `sent N bytes sha256 X in T s (R MB/s)`; the rate is recomputed
/// from N and T.
fn parse_sent(out: &str, bytes: u64) -> Result<Sent, BoxError> {
    let line = out
        .lines()
        .find(|l| l.starts_with("sent "))
        .ok_or_else(|| format!("no `sent` line in:\n{out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("bad `sent` line {line:?}");
    if w.len() < 8 || w[2] != "bytes" || w[3] != "sha256" || w[5] != "in" {
        return Err(bad().into());
    }
    let n: u64 = w[1].parse().map_err(|_| bad())?;
    let secs: f64 = w[6].parse().map_err(|_| bad())?;
    if n != bytes {
        return Err(format!("sent {n} of {bytes} bytes: {line:?}").into());
    }
    Ok(Sent {
        mbps: n as f64 / secs / 1e6,
        sha256: w[4].to_owned(),
    })
}

/// Checks a `discard from ...: N bytes sha256 X` line.
fn check_report(report: &str, bytes: u64, sha256: &str, who: &str) -> Result<(), BoxError> {
    let want = format!(": {bytes} bytes sha256 {sha256}");
    if report.ends_with(&want) {
        Ok(())
    } else {
        Err(
            format!("{who} received something else than was sent: {report:?}, expected {want:?}")
                .into(),
        )
    }
}

fn list(values: &[f64]) -> String {
    if values.is_empty() {
        return "skipped".into();
    }
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn med(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        median(&mut values.to_vec())
    }
}

fn per(n: u64, d: u64) -> f64 {
    if d == 0 {
        f64::NAN
    } else {
        n as f64 / d as f64
    }
}

/// One Linux TCP transfer with the offloads in the given state; MB/s, and
/// (NET_RX softirqs, packets) over the transfer.
fn linux_tcp(
    linux: &mut LinuxPeers,
    bytes: u64,
    offloads: bool,
    sha_seen: &mut Option<String>,
) -> Result<(f64, u64, u64), BoxError> {
    linux.pair.set_offloads(offloads)?;
    let (irq0, pk0) = (netns::net_rx_softirqs()?, linux.pair.tx_packets()?);
    let sent = linux.send(bytes)?;
    let (irq1, pk1) = (netns::net_rx_softirqs()?, linux.pair.tx_packets()?);
    same_sha(sha_seen, &sent.sha256)?;
    Ok((
        sent.mbps,
        irq1.saturating_sub(irq0),
        pk1.saturating_sub(pk0),
    ))
}

/// Every full-size transfer sends the same bytes, so the same SHA-256.
fn same_sha(seen: &mut Option<String>, sha: &str) -> Result<(), BoxError> {
    match seen {
        Some(s) if s != sha => {
            Err(format!("SHA-256 differs between transfers of the same data: {s} vs {sha}").into())
        }
        Some(_) => Ok(()),
        None => {
            *seen = Some(sha.to_owned());
            Ok(())
        }
    }
}

fn ours_send(
    net: &mut HostedNet,
    sends: &mut usize,
    bytes: u64,
) -> Result<(Sent, hosted_net::Stats), BoxError> {
    let before = net.stats()?;
    let to = format!("{SERVER_IP}:{DISCARD_PORT}");
    let out = net.client(&["send", &to, &bytes.to_string()], CLIENT_TIMEOUT)?;
    let sent = parse_sent(&out, bytes)?;
    *sends += 1;
    let report = net.discard_report(*sends, Duration::from_secs(10))?;
    check_report(&report, bytes, &sent.sha256, "the serving guest")?;
    let after = net.stats()?;
    Ok((sent, stats_since(&after, &before)))
}

fn ours_rr(net: &mut HostedNet, count: u32) -> Result<(f64, f64), BoxError> {
    let to = format!("{SERVER_IP}:{ECHO_PORT}");
    let out = net.client(
        &[
            "udp-rr",
            &to,
            "--count",
            &count.to_string(),
            "--size",
            &RR_SIZE.to_string(),
        ],
        CLIENT_TIMEOUT,
    )?;
    parse_rr(&out, count)
}

fn describe_counters(what: &str, c: &Counters) -> String {
    let packets = c.tx_packets + c.rx_packets;
    format!(
        "{what}: {:.3} interrupts and {:.3} doorbells per packet sent or received ({} packets)",
        per(c.interrupts, packets),
        per(c.doorbells, packets),
        packets
    )
}

/// Runs the system benchmarks.
pub fn run(plan: &Plan, started: Instant) -> Result<SystemReport, BoxError> {
    cleanup::install();
    progress(
        "system: building release ib-backend and ibguest-hosted",
        started,
    );
    let bins = hosted_net::build_release()?;
    let dir = hosted_net::scratch_dir()?;
    progress(
        &format!(
            "system: starting ib-backend and guests in {}",
            dir.display()
        ),
        started,
    );
    let mut net = HostedNet::start(&bins, &dir)?;
    // The same, with busy polling off (and so a worker per core), and with
    // it on and a worker per core (the default with it on is one per two).
    let mut net_off = HostedNet::start_with(
        &bins,
        &dir.join("busy-poll-off"),
        &BUSY_POLL_OFF,
        &BUSY_POLL_OFF,
    )?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    let mut net_per_core = HostedNet::start_with(
        &bins,
        &dir.join("worker-per-core"),
        &[&BUSY_POLL_ON[..], &["--workers", &cores]].concat(),
        &BUSY_POLL_ON,
    )?;
    let mut skipped = None;
    let mut linux = match LinuxPeers::start(&dir) {
        Ok(l) => Some(l),
        Err(reason) => {
            eprintln!("           SKIPPED: Linux peers: {reason}");
            skipped = Some(reason);
            None
        }
    };
    let tcp_skipped = match (&linux, netns::have_ethtool()) {
        (Some(_), false) => Some("ethtool is not installed (apt-get install ethtool)".to_owned()),
        (None, _) => skipped.clone(),
        (Some(_), true) => None,
    };
    if let (Some(_), Some(r)) = (&linux, &tcp_skipped) {
        eprintln!("           SKIPPED: Linux TCP peers: {r}");
    }
    let runs = plan.runs;

    // UDP request/response.
    progress("UDP RR: hosted guests vs Linux over veth", started);
    let count = plan.rr_exchanges;
    let (mut om, mut op, mut pm, mut pp) = (vec![], vec![], vec![], vec![]);
    let (mut off_m, mut off_p, mut pc_m, mut pc_p) = (vec![], vec![], vec![], vec![]);
    let rr_before = net.stats()?;
    let off_before = net_off.stats()?;
    for _ in 0..runs {
        let (m, p) = ours_rr(&mut net, count)?;
        om.push(m);
        op.push(p);
        if let Some(l) = &mut linux {
            let (m, p) = l.rr(count)?;
            pm.push(m);
            pp.push(p);
        }
        let (m, p) = ours_rr(&mut net_off, count)?;
        off_m.push(m);
        off_p.push(p);
        let (m, p) = ours_rr(&mut net_per_core, count)?;
        pc_m.push(m);
        pc_p.push(p);
    }
    let rr_delta = stats_since(&net.stats()?, &rr_before);
    let off_delta = stats_since(&net_off.stats()?, &off_before);
    drop((net_off, net_per_core));
    eprintln!(
        "           median us: ours {}; busy polling off {}; on, a worker per core {}; peer {}\n           p99 us: ours {}; busy polling off {}; on, a worker per core {}; peer {}",
        list(&om),
        list(&off_m),
        list(&pc_m),
        list(&pm),
        list(&op),
        list(&off_p),
        list(&pc_p),
        list(&pp)
    );
    let sockperf_note = match &linux {
        None => None,
        Some(_) if !sockperf::installed() => Some(
            "Linux UDP RR cross-check: SKIPPED: sockperf is not installed (make deps installs it)"
                .to_owned(),
        ),
        Some(l) => {
            let seconds = if *plan == Plan::QUICK { 2 } else { 5 };
            progress("UDP RR: Linux over veth with sockperf ping-pong", started);
            Some(match sockperf::ping_pong(&l.pair, &dir, seconds) {
                Ok(rt) => format!(
                    "Linux UDP RR cross-check: sockperf ping-pong ({RR_SIZE} B, {seconds} s, same veth pair): median round trip {:.1} µs, p99 {:.1} µs (twice the half round trips it prints); our peer's udp-rr: median {:.1} µs",
                    rt.median,
                    rt.p99,
                    med(&pm)
                ),
                Err(e) => format!("Linux UDP RR cross-check: sockperf failed: {e}"),
            })
        }
    };

    // TCP throughput.
    progress(
        "TCP: hosted guests vs Linux over veth (MTU 2044; offloads off, on)",
        started,
    );
    let bytes = plan.tcp_bytes as u64;
    let mut sends = 0;
    let mut sha_seen = None;
    let mut warm_sha = None;
    ours_send(&mut net, &mut sends, bytes / 8)?;
    let mut linux_tcp_on = linux.as_mut().filter(|_| tcp_skipped.is_none());
    let mut offload_states = (String::new(), String::new());
    if let Some(l) = &mut linux_tcp_on {
        linux_tcp(l, bytes / 8, false, &mut warm_sha)?;
        offload_states.0 = l.pair.offloads()?;
        linux_tcp(l, bytes / 8, true, &mut warm_sha)?;
        offload_states.1 = l.pair.offloads()?;
    }
    let (mut ours_mbps, mut off_mbps, mut on_mbps) = (vec![], vec![], vec![]);
    let mut load = hosted_net::Stats::new();
    let (mut softirqs, mut linux_packets) = (0u64, 0u64);
    for _ in 0..runs {
        let (sent, delta) = ours_send(&mut net, &mut sends, bytes)?;
        same_sha(&mut sha_seen, &sent.sha256)?;
        ours_mbps.push(sent.mbps);
        for (k, v) in &delta {
            load.entry(k.clone()).or_default().add(v);
        }
        if let Some(l) = &mut linux_tcp_on {
            let (mbps, irq, pk) = linux_tcp(l, bytes, false, &mut sha_seen)?;
            off_mbps.push(mbps);
            softirqs += irq;
            linux_packets += pk;
            on_mbps.push(linux_tcp(l, bytes, true, &mut sha_seen)?.0);
        }
    }
    eprintln!(
        "           MB/s: ours {}; Linux offloads off {}; on {}",
        list(&ours_mbps),
        list(&off_mbps),
        list(&on_mbps)
    );
    let raw = raw::run(
        &mut net,
        linux_tcp_on.as_deref_mut(),
        runs,
        bytes,
        started,
        raw::RawMode::DATAGRAM,
    )?;
    drop(net);
    // Connected mode: both hosted guests on RC (IP MTU 65520) against
    // Linux over the same veth at MTU 65520.
    let mut net_cm = HostedNet::start_connected(&bins, &dir.join("connected"))?;
    let raw_cm = raw::run(
        &mut net_cm,
        linux_tcp_on.as_deref_mut(),
        runs,
        bytes,
        started,
        raw::RawMode::CONNECTED,
    )?;
    drop(net_cm);
    progress("TCP: the data work alone", started);
    let mut alone: Vec<f64> = (0..runs).map(|_| linux_peer::data_only(bytes)).collect();
    let alone = median(&mut alone);
    progress("system: done", started);

    let total = load.get("total").copied().unwrap_or_default();
    let (irq_ours, db_ours) = (
        per(total.interrupts, total.tx_packets),
        per(total.doorbells, total.tx_packets),
    );
    let irq_peer = if linux_tcp_on.is_some() {
        per(softirqs, linux_packets)
    } else {
        f64::NAN
    };
    let mib = bytes / (1024 * 1024);
    let rr_what = format!(
        "{RR_SIZE} B UDP datagram to the echo service and back, one at a time, {count} timed round trips per run; ours: hosted guest → hosted guest through ib-backend (sim), defaults (busy polling 50 µs, a worker thread per two cores); peer: Linux UDP between two netns over veth"
    );
    let tcp_what = format!(
        "TCP: {mib} MiB of seeded data (netcore's generator), SHA-256 at both ends, to the discard service; ours: hosted guest → hosted guest through ib-backend (sim); peer: the same data and hashing over Linux TCP, veth MTU {IPOIB_MTU}"
    );
    let rows = vec![
        Row {
            name: "UDP RR median".into(),
            benchmark: format!("UDP RR median (lower is better): {rr_what}"),
            ours: med(&om),
            peer: med(&pm),
            unit: "µs",
            goal: Some(Goal::RatioAtMost(1.2)),
        },
        Row {
            name: "UDP RR p99".into(),
            benchmark: "UDP RR p99 (lower is better): the same".into(),
            ours: med(&op),
            peer: med(&pp),
            unit: "µs",
            goal: None,
        },
        Row {
            name: "UDP RR median, busy polling off".into(),
            benchmark: "UDP RR median, busy polling off (--busy-poll-us 0 for ib-backend and both guests; a worker thread per core): the same".into(),
            ours: med(&off_m),
            peer: med(&pm),
            unit: "µs",
            goal: None,
        },
        Row {
            name: "UDP RR median, busy polling on, a worker per core".into(),
            benchmark: format!("UDP RR median, busy polling on (50 µs) with a worker thread per core (--workers {cores}): the same"),
            ours: med(&pc_m),
            peer: med(&pm),
            unit: "µs",
            goal: None,
        },
        Row {
            name: "hosted TCP (hashed)".into(),
            benchmark: format!("{tcp_what}, TSO/GSO/GRO off (like for like)"),
            ours: med(&ours_mbps),
            peer: med(&off_mbps),
            unit: "MB/s",
            goal: Some(Goal::RatioAtLeast(0.8)),
        },
        Row {
            name: "hosted TCP (hashed) vs offloads on".into(),
            benchmark: "TCP: the same; peer: veth with TSO/GSO/GRO on".into(),
            ours: med(&ours_mbps),
            peer: med(&on_mbps),
            unit: "MB/s",
            goal: None,
        },
        Row {
            name: "interrupts per packet".into(),
            benchmark: "interrupts (back end → guests) per packet on the fabric, our TCP runs (lower is better); peer: NET_RX softirqs per packet on the veth pair, Linux offloads-off runs".into(),
            ours: irq_ours,
            peer: irq_peer,
            unit: "per packet",
            goal: Some(Goal::OursAtMost(0.1)),
        },
        Row {
            name: "doorbells per packet".into(),
            benchmark: "doorbells (guests → back end) per packet on the fabric, our TCP runs (lower is better); peer: the same NET_RX softirqs per packet".into(),
            ours: db_ours,
            peer: irq_peer,
            unit: "per packet",
            goal: Some(Goal::OursAtMost(0.1)),
        },
    ];

    let mut rows = rows;
    rows.extend(raw.rows);
    rows.extend(raw_cm.rows);
    let mut notes = vec![
        format!("date: {} (UTC)", about::today()),
        format!("commit: {}", about::git_commit()),
        format!("machine: {}", about::machine()),
        format!(
            "method: UDP RR: {runs} run(s) per side, ours (defaults), the peer, ours with busy polling off and ours with it on and a worker per core alternating, each {count} timed round trips after {RR_WARMUP} warm-up ones; the medians of the runs' medians and of their p99s. TCP: one warm-up of {} MiB per side, then the median of {runs} run(s) per side, alternating (ours, Linux off, Linux on){}",
            mib / 8,
            if *plan == Plan::QUICK { " (--quick)" } else { "" }
        ),
        format!(
            "TCP context: generating the data and hashing it at both ends, on one thread with no network, runs at {alone:.0} MB/s on this machine; every TCP column includes that work (ours on 3 processes: sender, back end, receiver; Linux on 2)"
        ),
        describe_counters("our TCP runs, sending guest g1", load.get("g1").unwrap_or(&Counters::default())),
        describe_counters("our TCP runs, receiving guest g2", load.get("g2").unwrap_or(&Counters::default())),
        format!(
            "our UDP RR runs (one datagram in flight): {} interrupts and {} doorbells per packet on the fabric",
            fmt3(per(rr_delta["total"].interrupts, rr_delta["total"].tx_packets)),
            fmt3(per(rr_delta["total"].doorbells, rr_delta["total"].tx_packets))
        ),
        format!(
            "the same with busy polling off: {} interrupts and {} doorbells per packet",
            fmt3(per(off_delta["total"].interrupts, off_delta["total"].tx_packets)),
            fmt3(per(off_delta["total"].doorbells, off_delta["total"].tx_packets))
        ),
    ];
    notes.extend(sockperf_note);
    if linux_tcp_on.is_some() {
        notes.push(format!(
            "veth offloads as ethtool -k reported them: off runs: {}; on runs: {}",
            offload_states.0, offload_states.1
        ));
        notes.push(format!(
            "Linux offloads-off runs: {softirqs} NET_RX softirqs (all CPUs, whole machine) for {linux_packets} packets"
        ));
    }
    if let Some(sha) = &sha_seen {
        notes.push(format!(
            "every {mib} MiB transfer{} delivered SHA-256 {}…, checked at the receiver",
            if linux_tcp_on.is_some() {
                ", ours and Linux's,"
            } else {
                ""
            },
            &sha[..16.min(sha.len())]
        ));
    }
    notes.extend(raw.notes);
    notes.extend(raw_cm.notes);
    let skipped = match (&skipped, &tcp_skipped) {
        (Some(r), _) => Some(format!("SKIPPED: Linux peers (UDP RR, TCP, softirqs): {r}")),
        (None, Some(r)) => Some(format!("SKIPPED: Linux TCP peers: {r}")),
        (None, None) => None,
    };
    drop(linux);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SystemReport {
        rows,
        notes,
        skipped,
    })
}

fn fmt3(v: f64) -> String {
    format!("{v:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_lines() {
        let rr = "[log]\nudp-rr: 100 round trips, median 80.5 us, p99 120.0 us\n";
        assert_eq!(parse_rr(rr, 100).unwrap(), (80.5, 120.0));
        assert!(parse_rr(rr, 200).is_err());
        let sent = "sent 1000000 bytes sha256 abcd in 0.500 s (2.0 MB/s)\n";
        let s = parse_sent(sent, 1_000_000).unwrap();
        assert_eq!(s.sha256, "abcd");
        assert!((s.mbps - 2.0).abs() < 1e-9);
        assert!(parse_sent(sent, 5).is_err());
        assert!(check_report(
            "discard from 10.77.0.1:49152: 1000000 bytes sha256 abcd",
            1_000_000,
            "abcd",
            "x"
        )
        .is_ok());
        assert!(check_report(
            "discard from 10.77.0.1:49152: 999 bytes sha256 abcd",
            1_000_000,
            "abcd",
            "x"
        )
        .is_err());
    }
}
