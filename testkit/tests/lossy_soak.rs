//! Issue 9, the reliability figures: a long TCP transfer between two stacks
//! on the sim fabric through 10% loss, 10% duplication, 10% reordering and
//! 10% corruption (each drawn per packet copy; a corrupted packet fails the
//! receiver's ICRC check, as on a real HCA), with matching SHA-256 at both
//! ends. `make soak` runs it with `SOAK_TCP_MIB` MiB (default 1024) and
//! prints the figures for docs/RELIABILITY.md; `make test` has the 16 MiB
//! version in two_stacks.rs.

use std::time::Instant;

use ibguest_testkit::apps::tcp_transfer;
use ibguest_testkit::{BoxError, Net};
use ipoib::LinkState;
use smoltcp::time::Duration;
use verbs_shim::sim::FaultConfig;

const MIB: usize = 1024 * 1024;

#[test]
#[ignore = "a soak: make soak"]
fn tcp_through_ten_percent_of_every_fault() -> Result<(), BoxError> {
    let mib: usize = std::env::var("SOAK_TCP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut net = Net::with_guests(2, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests.iter().all(|g| g.device.link() == LinkState::Up)
    })?;
    net.fabric
        .set_faults(FaultConfig::new(0x50a6, 0.10, 0.10, 0.10, 0.10)?);
    let wall = Instant::now();
    let report = tcp_transfer(
        &mut net,
        0,
        1,
        mib * MIB,
        0x50a6,
        Duration::from_secs(10 * 24 * 3600),
    )?;
    let took = wall.elapsed();
    assert_eq!(report.bytes, mib * MIB);
    assert_eq!(report.sent_sha256, report.received_sha256);
    let f = net.fabric.stats().totals;
    // The faults really happened, at about the rates asked for.
    assert!(f.fault_loss > 0 && f.fault_dup > 0 && f.fault_reorder > 0 && f.drop_icrc > 0);
    let hex: String = report
        .sent_sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "lossy soak: {mib} MiB through 10% loss/dup/reorder/corruption in {:.1} s wall, \
         {:.1} s virtual; SHA-256 {hex} at both ends; fabric: {} lost, {} duplicated, \
         {} reordered, {} failed the ICRC check",
        took.as_secs_f64(),
        report.virtual_time.total_millis() as f64 / 1e3,
        f.fault_loss,
        f.fault_dup,
        f.fault_reorder,
        f.drop_icrc,
    );
    Ok(())
}
