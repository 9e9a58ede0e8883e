//! Issue 5's scenarios on QEMU guests: UDP, partitions, a guest killed and
//! rebooted, and a back-end crash under live TCP between two QEMU guests.

use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::{qemu, scratch_dir, Backend, Guard, HarnessError, Hosted, Result};

fn up(guard: &mut Guard) -> Result<()> {
    guard
        .wait_for("ibguest: network up", Duration::from_secs(60))
        .map(|_| ())
}

fn sha(line: &str) -> String {
    line.split("sha256 ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn udp_echo_from_a_hosted_guest_to_a_qemu_guest() -> Result<()> {
    let dir = scratch_dir("qemu-udp")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "h1")], &[])?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    up(&mut q1)?;
    let out = Hosted::run(
        &dir,
        "h1",
        &be.socket("h1"),
        "10.77.0.9/24",
        &["udp-echo", "10.77.0.2:7", "--count", "40", "--size", "1200"],
        Duration::from_secs(60),
    )?;
    assert!(
        out.contains("40 sent, 40 echoed intact, 0 corrupted"),
        "{out}"
    );
    Ok(())
}

#[test]
fn four_qemu_guests_in_two_partitions() -> Result<()> {
    let dir = scratch_dir("qemu-partitions")?;
    let seats = [
        Seat::new(&dir, "a1").with_pkey(0x8001),
        Seat::new(&dir, "a2").with_pkey(0x8001),
        Seat::new(&dir, "b1").with_pkey(0x8002),
        Seat::new(&dir, "b2").with_pkey(0x8002),
    ];
    let be = Backend::start(&dir, &seats, &[])?;
    let mut a1 = qemu::boot(&dir, "a1", Some(&be.socket("a1")), "ip=10.77.0.11/24")?;
    let mut b1 = qemu::boot(&dir, "b1", Some(&be.socket("b1")), "ip=10.77.0.21/24")?;
    up(&mut a1)?;
    up(&mut b1)?;
    // a2 can reach a1 but not b1; b2 can reach b1 but not a1.
    let mut a2 = qemu::boot(
        &dir,
        "a2",
        Some(&be.socket("a2")),
        "ip=10.77.0.12/24 peer=10.77.0.11",
    )?;
    let mut b2 = qemu::boot(
        &dir,
        "b2",
        Some(&be.socket("b2")),
        "ip=10.77.0.22/24 peer=10.77.0.11",
    )?;
    a2.wait_for(
        "ibguest: peer 10.77.0.11 answered 3/3",
        Duration::from_secs(60),
    )?;
    b2.wait_for(
        "ibguest: peer 10.77.0.11 did not answer",
        Duration::from_secs(60),
    )?;
    assert!(
        !b2.output().contains("peer 10.77.0.11 answered"),
        "{}",
        b2.tail(10)
    );
    let stats = be.stats()?;
    assert!(
        stats.contains("guest b2 state=connected") && stats.contains("pkey=0x8002"),
        "{stats}"
    );
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

#[test]
fn a_killed_guest_reboots_and_serves_again() -> Result<()> {
    let dir = scratch_dir("qemu-reboot")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "h1")], &[])?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    up(&mut q1)?;
    q1.signal(9)?;
    drop(q1);
    be.wait_until("q1 reclaimed", Duration::from_secs(10), |b| {
        b.state("q1").is_ok_and(|s| s == "waiting")
    })?;
    let mut q1 = qemu::boot(&dir, "q1-again", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    up(&mut q1)?;
    let page = Hosted::run(
        &dir,
        "h1",
        &be.socket("h1"),
        "10.77.0.9/24",
        &["fetch", "http://10.77.0.2/"],
        Duration::from_secs(60),
    )?;
    assert!(page.contains("HTTP 200"), "{page}");
    assert_eq!(be.counter("q1", "connects")?, 2);
    Ok(())
}

#[test]
fn tcp_between_qemu_guests_survives_a_backend_crash() -> Result<()> {
    let dir = scratch_dir("qemu-crash")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "q2")], &[])?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    up(&mut q1)?;
    let bytes: u64 = 256 << 20;
    let mut q2 = qemu::boot(
        &dir,
        "q2",
        Some(&be.socket("q2")),
        &format!("ip=10.77.0.3/24 send=10.77.0.2:9:{bytes}"),
    )?;
    up(&mut q2)?;
    be.wait_until("traffic flowing", Duration::from_secs(60), |b| {
        b.counter("q2", "tx_bytes").is_ok_and(|n| n > 16 << 20)
    })?;
    let old = be.worker_pid()?;
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(old.to_string())
        .status()?;
    assert!(status.success());
    be.wait_until("a new worker", Duration::from_secs(20), |b| {
        b.worker_pid().is_ok_and(|p| p != old)
    })?;
    let sent = q2.wait_for(
        &format!("ibguest: sent {bytes} bytes sha256 "),
        Duration::from_secs(300),
    )?;
    let received = q1.wait_for(&format!("{bytes} bytes sha256 "), Duration::from_secs(60))?;
    if sha(&sent).is_empty() {
        return Err(HarnessError(format!("no digest in {sent}")));
    }
    assert_eq!(sha(&sent), sha(&received), "{sent}\n{received}");
    assert!(q1.output().contains("re-attaching") && q2.output().contains("re-attaching"));
    assert_eq!(
        be.counter("q1", "restarts")? + be.counter("q2", "restarts")?,
        2
    );
    Ok(())
}
