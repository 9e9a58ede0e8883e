//! `make bench`: ibguest's ring, UDP and TCP paths against peers measured in
//! the same run on the same machine. Prints a Markdown table.
//!
//! Usage: `ibguest-bench [--quick]`.

mod loopback;
mod measure;
mod ring_bench;
mod table;
mod tcp_bench;
mod udp_bench;

use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ibguest_testkit::BoxError;

use measure::{compare, Plan};
use table::Row;

const USAGE: &str = "usage: ibguest-bench [--quick]

Measures ibguest against peers in the same run and prints a Markdown table:
  ring descriptors/s  (FrontRing/BackRing vs two rtrb rings)
  UDP packets/s       (two guests on the sim fabric vs smoltcp Loopback)
  TCP MB/s            (apps::tcp_transfer vs the same loop on smoltcp Loopback)

options:
  --quick     a tenth of the work and one timed run instead of three
  -h, --help  this message";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Args {
    Run(Plan),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut plan = Plan::FULL;
    for arg in args {
        match arg.as_str() {
            "--quick" => plan = Plan::QUICK,
            "-h" | "--help" => return Ok(Args::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args::Run(plan))
}

/// Today (UTC) as YYYY-MM-DD, from the days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn utc_date(unix_secs: u64) -> String {
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `git rev-parse --short HEAD`, or "unknown".
fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// CPU count and model, e.g. "2 CPUs (AMD EPYC ...)".
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
    });
    match model {
        Some(m) => format!("{cpus} CPUs ({m})"),
        None => format!("{cpus} CPUs"),
    }
}

fn progress(what: &str, started: Instant) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

fn run(plan: Plan) -> Result<Vec<Row>, BoxError> {
    let t0 = Instant::now();
    let mut rows = Vec::new();

    progress("ring: FrontRing/BackRing vs rtrb", t0);
    let n = plan.ring_descriptors;
    let (ours, peer) = compare(plan.runs, n / 10, n, ring_bench::ours, ring_bench::rtrb)?;
    rows.push(Row {
        benchmark: format!(
            "ring: {}M × 24 B TxRequest (+ 8 B TxResponse back), {} entries, 2 threads; peer: rtrb",
            n / 1_000_000,
            1u32 << ring_bench::ORDER
        ),
        ours,
        peer,
        unit: "Mdesc/s",
    });

    progress("UDP: two guests vs smoltcp Loopback", t0);
    let k = plan.udp_datagrams;
    let (mut lost_ours, mut lost_peer) = (0, 0);
    let (ours, peer) = compare(
        plan.runs,
        k / 10,
        k,
        |k| {
            let r = udp_bench::ours(k)?;
            lost_ours = lost_ours.max(r.lost);
            Ok(r.rate / 1e3)
        },
        |k| {
            let r = udp_bench::loopback(k)?;
            lost_peer = lost_peer.max(r.lost);
            Ok(r.rate / 1e3)
        },
    )?;
    rows.push(Row {
        benchmark: format!(
            "UDP: {}k × {} B datagrams received, guest 0 → guest 1 (lost: {lost_ours}); peer: smoltcp Loopback (lost: {lost_peer})",
            k / 1000,
            udp_bench::PAYLOAD
        ),
        ours,
        peer,
        unit: "kpackets/s",
    });

    let bytes = plan.tcp_bytes;
    let mib = bytes / (1024 * 1024);
    progress("TCP: two guests vs smoltcp Loopback", t0);
    let (ours, peer) = compare(plan.runs, bytes / 8, bytes, tcp_bench::ours, |b| {
        tcp_bench::loopback(b, None)
    })?;
    rows.push(Row {
        benchmark: format!(
            "TCP: {mib} MiB, SHA-256 checked, 256 KiB buffers; peer: smoltcp Loopback (MTU 65535, no checksums)"
        ),
        ours,
        peer,
        unit: "MB/s",
    });

    progress(
        "TCP: two guests vs Loopback with IPoIB's MTU and checksums",
        t0,
    );
    let caps = tcp_bench::ipoib_caps()?;
    let (ours, peer) = compare(plan.runs, bytes / 8, bytes, tcp_bench::ours, |b| {
        tcp_bench::loopback(b, Some(&caps))
    })?;
    rows.push(Row {
        benchmark: format!(
            "TCP: same; peer: smoltcp Loopback reporting IPoIB's MTU ({}) and checksum duties",
            caps.max_transmission_unit
        ),
        ours,
        peer,
        unit: "MB/s",
    });
    progress("done", t0);
    Ok(rows)
}

fn main() -> ExitCode {
    let plan = match parse_args(std::env::args().skip(1)) {
        Ok(Args::Run(plan)) => plan,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ibguest-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or_else(|_| "unknown".to_owned(), |d| utc_date(d.as_secs()));
    let quick = plan.runs == 1;
    match run(plan) {
        Ok(rows) => {
            println!("{}", table::render(&rows));
            println!("- date: {date} (UTC)");
            println!("- commit: {}", git_commit());
            println!("- machine: {}", machine());
            println!(
                "- mode: {}; median of {} timed run(s) per side after one warm-up, ours and peer alternating",
                if quick { "--quick" } else { "full" },
                plan.runs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ibguest-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        assert!(matches!(args(&[]), Ok(Args::Run(p)) if p.runs == 3));
        assert!(matches!(args(&["--quick"]), Ok(Args::Run(p)) if p.runs == 1));
        assert_eq!(args(&["--help"]), Ok(Args::Help));
        assert!(args(&["--fast"]).unwrap_err().contains("--fast"));
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01");
    }
}
