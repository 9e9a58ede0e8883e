//! `make bench`: ibguest's ring, UDP and TCP paths against peers measured in
//! the same run on the same machine. Prints Markdown tables on stdout and
//! progress (with every timed value) on stderr: first the in-process
//! benchmarks, then the system ones (real processes: hosted guests and
//! `ib-backend` against Linux over a veth pair).
//!
//! Usage: `ibguest-bench [--quick] [--only in-process|system]`.

mod about;
mod cleanup;
mod hosted_net;
mod linux_peer;
mod loopback;
mod measure;
mod netns;
mod ring_bench;
mod sockperf;
mod system;
mod table;
mod tcp_bench;
mod udp_bench;

use std::process::ExitCode;
use std::time::Instant;

use ibguest_testkit::BoxError;
use smoltcp::phy::DeviceCapabilities;

use measure::{compare, median, Compared, Plan};
use table::{Goal, Row};

const USAGE: &str = "usage: ibguest-bench [--quick] [--only in-process|system]

Measures ibguest against peers in the same run and prints Markdown tables.
In-process (one process, virtual clock):
  ring descriptors/s  (FrontRing/BackRing vs two rtrb rings)
  UDP packets/s       (two guests on the sim fabric vs smoltcp Loopback)
  TCP MB/s            (apps::tcp_transfer vs the same loop on smoltcp Loopback)
System (release ib-backend and ibguest-hosted processes vs Linux between two
network namespaces over veth; the Linux side needs root and ethtool):
  UDP RR latency      (median and p99 of one-at-a-time round trips)
  TCP MB/s            (veth MTU 2044, TSO/GSO/GRO off and on)
  interrupts and doorbells per packet under TCP load

options:
  --quick     less work and one timed run instead of five (in process)
              and three (system)
  --only X    run only the in-process or only the system benchmarks
  -h, --help  this message";

/// Which tables to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts {
    in_process: bool,
    system: bool,
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Args {
    Run(Plan, Parts),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut plan = Plan::FULL;
    let mut parts = Parts {
        in_process: true,
        system: true,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::QUICK,
            "--only" => {
                let which = args.next().unwrap_or_default();
                parts = match which.as_str() {
                    "in-process" => Parts {
                        in_process: true,
                        system: false,
                    },
                    "system" => Parts {
                        in_process: false,
                        system: true,
                    },
                    other => {
                        return Err(format!(
                            "--only takes `in-process` or `system`, not `{other}`"
                        ))
                    }
                };
            }
            "-h" | "--help" => return Ok(Args::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args::Run(plan, parts))
}

/// The table and the lines printed under it.
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

pub(crate) fn progress(what: &str, started: Instant) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

fn ring_row(plan: &Plan, pairs: &mut Vec<String>) -> Result<Row, BoxError> {
    let n = plan.ring_descriptors;
    let c = compare(
        "Mdesc/s",
        plan.in_process_runs,
        n / 10,
        n,
        ring_bench::ours,
        ring_bench::rtrb,
    )?;
    let benchmark = format!(
        "ring: {}M × 24 B TxRequest (+ 8 B TxResponse back), {} entries, 2 threads, batches of up to 32 moved with the batch calls, published unchecked, the notification check made when a side runs dry; peer: 2 rtrb rings with their chunk API (no notifications)",
        n / 1_000_000,
        1u32 << ring_bench::ORDER
    );
    let goal = Some(Goal::RatioAtLeast(1.0));
    Ok(row_of(&c, benchmark, "Mdesc/s", ("ring", goal), pairs))
}

/// The table row for `c`; its ratio in each alternating pair goes to
/// `pairs` as `name 0.93, 0.95, ...`.
fn row_of(
    c: &Compared,
    benchmark: String,
    unit: &'static str,
    (name, goal): (&str, Option<Goal>),
    pairs: &mut Vec<String>,
) -> Row {
    pairs.push(format!("{name} {}", c.pair_ratios_text()));
    Row {
        name: name.to_owned(),
        benchmark,
        ours: c.ours,
        peer: c.peer,
        unit,
        goal,
    }
}

/// UDP against `Loopback` as it is (the goal's row), and against a
/// `Loopback` with the IPoIB device's MTU and checksum duties (as the
/// matched TCP row).
fn udp_rows(plan: &Plan, started: Instant, pairs: &mut Vec<String>) -> Result<Vec<Row>, BoxError> {
    let plain = udp_row(plan, None, pairs)?;
    progress(
        "UDP: two guests vs Loopback with IPoIB's MTU and checksums",
        started,
    );
    let caps = tcp_bench::ipoib_caps()?;
    let matched = udp_row(plan, Some(&caps), pairs)?;
    Ok(vec![plain, matched])
}

fn udp_row(
    plan: &Plan,
    caps: Option<&DeviceCapabilities>,
    pairs: &mut Vec<String>,
) -> Result<Row, BoxError> {
    let k = plan.udp_datagrams;
    let (mut lost_ours, mut lost_peer) = (0, 0);
    let c = compare(
        "kpackets/s",
        plan.in_process_runs,
        k / 10,
        k,
        |k| {
            let r = udp_bench::ours(k)?;
            lost_ours = lost_ours.max(r.lost);
            Ok(r.rate / 1e3)
        },
        |k| {
            let r = udp_bench::loopback_with(k, caps)?;
            lost_peer = lost_peer.max(r.lost);
            Ok(r.rate / 1e3)
        },
    )?;
    let benchmark = match caps {
        None => format!(
            "UDP: {}k × {} B datagrams received, guest 0 → guest 1 (lost: {lost_ours}); peer: smoltcp Loopback as is (no checksums; lost: {lost_peer})",
            k / 1000,
            udp_bench::PAYLOAD
        ),
        Some(caps) => format!(
            "UDP: the same (lost: {lost_ours}); peer: smoltcp Loopback reporting IPoIB's MTU ({}) and checksum duties (lost: {lost_peer})",
            caps.max_transmission_unit
        ),
    };
    // The goal is on the row against `Loopback` as it is (issue 10).
    let name = match caps {
        None => ("UDP", Some(Goal::RatioAtLeast(0.6))),
        Some(_) => ("UDP (matched peer)", None),
    };
    Ok(row_of(&c, benchmark, "kpackets/s", name, pairs))
}

/// One in-process TCP row: `ours` against the Loopback reporting `caps`
/// (`None`: `Loopback`'s own), compared over `plan`'s in-process runs.
fn tcp_row(
    plan: &Plan,
    ours: fn(usize) -> Result<f64, BoxError>,
    caps: Option<&DeviceCapabilities>,
    benchmark: String,
    name: (&str, Option<Goal>),
    pairs: &mut Vec<String>,
) -> Result<Row, BoxError> {
    let bytes = plan.tcp_bytes;
    let c = compare("MB/s", plan.in_process_runs, bytes / 8, bytes, ours, |b| {
        tcp_bench::loopback(b, caps)
    })?;
    Ok(row_of(&c, benchmark, "MB/s", name, pairs))
}

fn tcp_rows(
    plan: &Plan,
    started: Instant,
    pairs: &mut Vec<String>,
) -> Result<(Vec<Row>, String), BoxError> {
    let bytes = plan.tcp_bytes;
    let mib = bytes / (1024 * 1024);
    let runs = plan.in_process_runs;
    let plain = tcp_row(
        plan,
        tcp_bench::ours,
        None,
        format!(
            "TCP: {mib} MiB, SHA-256 checked, 256 KiB buffers, guest 0 → guest 1; peer: smoltcp Loopback as is (MTU 65535, no checksums)"
        ),
        ("TCP", None),
        pairs,
    )?;

    progress(
        "TCP: two guests vs Loopback with IPoIB's MTU and checksums",
        started,
    );
    let caps = tcp_bench::ipoib_caps()?;
    let matched = tcp_row(
        plan,
        tcp_bench::ours,
        Some(&caps),
        format!(
            "TCP: the same; peer: smoltcp Loopback reporting IPoIB's MTU ({}) and checksum duties",
            caps.max_transmission_unit
        ),
        ("TCP (matched peer)", Some(Goal::RatioAtLeast(0.95))),
        pairs,
    )?;

    progress(
        "TCP: two guests in connected mode vs Loopback at MTU 65520",
        started,
    );
    let caps = tcp_bench::connected_caps()?;
    let connected = tcp_row(
        plan,
        tcp_bench::ours_connected,
        Some(&caps),
        format!(
            "TCP: the same, both guests in connected mode (RC, IP MTU {}); peer: smoltcp Loopback reporting that MTU and our checksum duties",
            caps.max_transmission_unit
        ),
        ("TCP connected mode", None),
        pairs,
    )?;

    progress("TCP: the data work alone", started);
    let mut alone = Vec::with_capacity(runs);
    for _ in 0..runs {
        alone.push(tcp_bench::data_only(bytes)?);
    }
    let note = format!(
        "TCP context: generating the data (ChaCha8) and hashing it at both ends (SHA-256), with no stack at all, runs at {:.0} MB/s on this machine; both TCP columns include that work",
        median(&mut alone)
    );
    Ok((vec![plain, matched, connected], note))
}

fn run(plan: Plan) -> Result<Report, BoxError> {
    let started = Instant::now();
    progress("ring: FrontRing/BackRing vs rtrb", started);
    let mut pairs = Vec::new();
    let ring = ring_row(&plan, &mut pairs)?;
    progress("UDP: two guests vs smoltcp Loopback", started);
    let udp = udp_rows(&plan, started, &mut pairs)?;
    progress("TCP: two guests vs smoltcp Loopback", started);
    let (tcp, tcp_note) = tcp_rows(&plan, started, &mut pairs)?;
    progress("done", started);

    let mut rows = vec![ring];
    rows.extend(udp);
    rows.extend(tcp);
    Ok(Report {
        rows,
        notes: vec![
            format!("date: {} (UTC)", about::today()),
            format!("commit: {}", about::git_commit()),
            format!("machine: {}", about::machine()),
            format!(
                "method: one warm-up, then the median of {} timed run(s) per side, ours and peer alternating{}",
                plan.in_process_runs,
                if plan == Plan::QUICK { " (--quick)" } else { "" }
            ),
            format!(
                "ours/peer in each alternating pair, in run order (the machine's noise): {}",
                pairs.join("; ")
            ),
            tcp_note,
        ],
    })
}

fn print_report(rows: &[Row], notes: &[String]) {
    println!("{}", table::render(rows));
    if let Some(goals) = table::goals_summary(rows) {
        println!("- {goals}");
    }
    for note in notes {
        println!("- {note}");
    }
}

/// `__profile udp|udp-loopback|udp-loopback-ipoib|tcp|tcp-loopback|tcp-loopback-ipoib ROUNDS
/// [MIB]`: runs one side of an in-process row ROUNDS times and prints each
/// rate (the command BENCHMARKS.md's profiles were taken with, under `perf
/// record` or valgrind). A TCP run moves MIB MiB, 256 unless given (fewer
/// keep a cache simulation short). `tcp-loopback-ipoib` is the peer of the
/// goal's TCP row: the loopback reporting the IPoIB device's MTU and
/// checksum duties; `udp-loopback-ipoib` the same for UDP.
fn profile(args: &[String]) -> ExitCode {
    let rounds: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(5);
    let bytes: usize = args
        .get(2)
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(256)
        .saturating_mul(1 << 20);
    for _ in 0..rounds {
        let rate = match args.first().map(String::as_str) {
            Some("udp") => udp_bench::ours(1_000_000).map(|r| r.rate / 1e3),
            Some("udp-loopback") => udp_bench::loopback(1_000_000).map(|r| r.rate / 1e3),
            Some("udp-loopback-ipoib") => tcp_bench::ipoib_caps()
                .and_then(|caps| udp_bench::loopback_with(1_000_000, Some(&caps)))
                .map(|r| r.rate / 1e3),
            Some("tcp") => tcp_bench::ours(bytes),
            Some("tcp-loopback") => tcp_bench::loopback(bytes, None),
            Some("tcp-loopback-ipoib") => {
                tcp_bench::ipoib_caps().and_then(|caps| tcp_bench::loopback(bytes, Some(&caps)))
            }
            _ => {
                eprintln!(
                    "usage: ibguest-bench __profile udp|udp-loopback|udp-loopback-ipoib|tcp|tcp-loopback|tcp-loopback-ipoib [ROUNDS [MIB]]"
                );
                return ExitCode::from(2);
            }
        };
        match rate {
            Ok(r) => println!("{r:.1}"),
            Err(e) => {
                eprintln!("ibguest-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The Linux peer's programs: this binary re-executed in a namespace.
    if argv.first().map(String::as_str) == Some("__peer") {
        return linux_peer::main(&argv[1..]);
    }
    // One side of one in-process row, over and over, for `perf record`.
    if argv.first().map(String::as_str) == Some("__profile") {
        return profile(&argv[1..]);
    }
    let (plan, parts) = match parse_args(argv) {
        Ok(Args::Run(plan, parts)) => (plan, parts),
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ibguest-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if parts.in_process {
        match run(plan) {
            Ok(report) => print_report(&report.rows, &report.notes),
            Err(e) => {
                eprintln!("ibguest-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if parts.system {
        match system::run(&plan, Instant::now()) {
            Ok(report) => {
                if parts.in_process {
                    println!();
                }
                if let Some(line) = &report.skipped {
                    println!("{line}\n");
                }
                print_report(&report.rows, &report.notes);
            }
            Err(e) => {
                eprintln!("ibguest-bench: system benchmarks: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    const ALL: Parts = Parts {
        in_process: true,
        system: true,
    };

    #[test]
    fn parses_flags() {
        assert_eq!(args(&[]), Ok(Args::Run(Plan::FULL, ALL)));
        assert_eq!(args(&["--quick"]), Ok(Args::Run(Plan::QUICK, ALL)));
        assert_eq!(
            args(&["--only", "system", "--quick"]),
            Ok(Args::Run(
                Plan::QUICK,
                Parts {
                    in_process: false,
                    system: true
                }
            ))
        );
        assert!(args(&["--only", "x"]).unwrap_err().contains("`x`"));
        assert_eq!(args(&["--help"]), Ok(Args::Help));
        assert_eq!(args(&["-h"]), Ok(Args::Help));
        assert!(args(&["--fast"]).unwrap_err().contains("--fast"));
        assert!(args(&["--quick", "extra"]).unwrap_err().contains("extra"));
    }
}
