//! Issue 9, the reliability figures: a guest killed (SIGKILL, no goodbye)
//! and reconnected over and over leaves the back end as it found it. The
//! worker process is never replaced; its open descriptors and its memory are
//! flat from the first cycles to the last; an honest guest on the same
//! worker thread still answers at the end.
//!
//! `make test` runs a short version (`reconnect_cycles_leave_no_trace`, 20
//! cycles); `make soak` runs `reconnect_soak` with `SOAK_CYCLES` cycles
//! (default 1000) and prints the figures for docs/RELIABILITY.md.

use std::time::{Duration, Instant};

use qemu_tests::backend::Seat;
use qemu_tests::{scratch_dir, Backend, HarnessError, Hosted, Result};

/// What a process holds, from /proc.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Footprint {
    fds: usize,
    rss_kib: u64,
}

fn footprint(pid: u32) -> Result<Footprint> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HarnessError(format!("no VmRSS for pid {pid}")))?;
    Ok(Footprint { fds, rss_kib })
}

struct Figures {
    cycles: usize,
    took: Duration,
    worker_warm: Footprint,
    worker_end: Footprint,
    supervisor_warm: Footprint,
    supervisor_end: Footprint,
}

/// Cycles after which the footprints are taken as the baseline: the first
/// sessions grow pools and caches once.
const WARM_UP: usize = 5;

/// `cycles` times: a hosted guest on seat g1 comes up (joins the broadcast
/// group), is killed with SIGKILL, and the back end notices. g2 stays up on
/// the same worker thread all along.
fn reconnect_cycles(name: &str, cycles: usize) -> Result<Figures> {
    let dir = scratch_dir(name)?;
    let be = Backend::start(
        &dir,
        &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")],
        &["--workers", "1"],
    )?;
    let supervisor = be.guard.pid();
    let worker = be.worker_pid()?;
    let _g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let start = Instant::now();
    let mut worker_warm = footprint(worker)?;
    let mut supervisor_warm = footprint(supervisor)?;
    for cycle in 1..=cycles {
        let g1 = Hosted::serve(&dir, "g1", &be.socket("g1"), "10.77.0.1/24")?;
        g1.signal(9)?;
        drop(g1);
        be.wait_until(
            &format!("cycle {cycle}: g1's session ends"),
            Duration::from_secs(20),
            |b| {
                b.counter("g1", "disconnects")
                    .is_ok_and(|n| n == cycle as u64)
            },
        )?;
        if cycle == WARM_UP.min(cycles) {
            worker_warm = footprint(worker)?;
            supervisor_warm = footprint(supervisor)?;
        }
    }
    let took = start.elapsed();
    // The worker was never replaced, and g2 (same worker thread) still
    // answers a fresh guest on g1.
    assert_eq!(be.worker_pid()?, worker, "the worker was replaced");
    assert_eq!(be.counter("total", "restarts")?, 0, "{}", be.stats()?);
    let out = Hosted::run(
        &dir,
        "g1-last",
        &be.socket("g1"),
        "10.77.0.1/24",
        &["ping", "10.77.0.2", "--count", "3"],
        Duration::from_secs(60),
    )?;
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    Ok(Figures {
        cycles,
        took,
        worker_warm,
        worker_end: footprint(worker)?,
        supervisor_warm,
        supervisor_end: footprint(supervisor)?,
    })
}

fn report(f: &Figures) {
    println!(
        "reconnect soak: {} kill/reconnect cycles in {:.1} s; worker fds {} -> {}, \
         RSS {} -> {} KiB; supervisor fds {} -> {}, RSS {} -> {} KiB",
        f.cycles,
        f.took.as_secs_f64(),
        f.worker_warm.fds,
        f.worker_end.fds,
        f.worker_warm.rss_kib,
        f.worker_end.rss_kib,
        f.supervisor_warm.fds,
        f.supervisor_end.fds,
        f.supervisor_warm.rss_kib,
        f.supervisor_end.rss_kib,
    );
}

/// Flat: no more descriptors than after the warm-up (the last guest of the
/// check ping has gone too), and memory within `rss_slack_kib`.
fn assert_flat(f: &Figures, rss_slack_kib: u64) {
    assert!(
        f.worker_end.fds <= f.worker_warm.fds,
        "the worker holds {} descriptors after {} cycles, {} after {WARM_UP}",
        f.worker_end.fds,
        f.cycles,
        f.worker_warm.fds
    );
    assert!(
        f.supervisor_end.fds <= f.supervisor_warm.fds,
        "the supervisor holds {} descriptors after {} cycles, {} after {WARM_UP}",
        f.supervisor_end.fds,
        f.cycles,
        f.supervisor_warm.fds
    );
    for (who, warm, end) in [
        ("worker", f.worker_warm, f.worker_end),
        ("supervisor", f.supervisor_warm, f.supervisor_end),
    ] {
        assert!(
            end.rss_kib <= warm.rss_kib + rss_slack_kib,
            "the {who}'s RSS grew from {} to {} KiB over {} cycles",
            warm.rss_kib,
            end.rss_kib,
            f.cycles
        );
    }
}

#[test]
fn reconnect_cycles_leave_no_trace() -> Result<()> {
    let f = reconnect_cycles("reconnect-short", 20)?;
    report(&f);
    assert_flat(&f, 2048);
    Ok(())
}

#[test]
#[ignore = "a soak: make soak"]
fn reconnect_soak() -> Result<()> {
    let cycles = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let f = reconnect_cycles("reconnect-soak", cycles)?;
    report(&f);
    assert_flat(&f, 4096);
    Ok(())
}
