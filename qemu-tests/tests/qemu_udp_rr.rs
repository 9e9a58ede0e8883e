//! The unikernel's `rr=` client (netcore's `UdpRr`, used by `make bench-vm`):
//! one QEMU guest measures UDP round trips against another one's echo
//! service, after a TCP `send=` to its discard service, and prints the same
//! `udp-rr:` line as the hosted guest and the benchmark's Linux peer.

use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::{qemu, scratch_dir, Backend, Result};

#[test]
fn qemu_guest_measures_udp_round_trips_after_a_send() -> Result<()> {
    let dir = scratch_dir("qemu-udp-rr")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "q2")], &[])?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    q1.wait_for("ibguest: network up", Duration::from_secs(60))?;
    let mut q2 = qemu::boot(
        &dir,
        "q2",
        Some(&be.socket("q2")),
        "ip=10.77.0.3/24 send=10.77.0.2:9:1048576 rr=10.77.0.2:7:300:64",
    )?;
    let sent = q2.wait_for("ibguest: sent 1048576 bytes", Duration::from_secs(120))?;
    let rr = q2.wait_for("ibguest: udp-rr: ", Duration::from_secs(120))?;
    println!("{}\n{}", sent.trim(), rr.trim());
    assert!(rr.contains("udp-rr: 300 round trips, median "), "{rr}");
    let us = |key: &str| -> f64 {
        rr.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let (median, p99) = (us("median "), us("p99 "));
    assert!(median > 0.0 && p99 >= median, "{rr}");
    assert!(
        q2.output().find("ibguest: sent").unwrap() < q2.output().find("udp-rr").unwrap(),
        "rr= must start after send= has finished"
    );
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}
