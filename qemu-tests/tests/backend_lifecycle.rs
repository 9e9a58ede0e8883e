//! Issue 3, must-show 4, 6 and 7: the back end restarts under live TCP,
//! shuts down cleanly, captures the fabric, refuses a bad configuration,
//! and reports a missing RDMA device clearly.

use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::backend::Seat;
use qemu_tests::{bin, scratch_dir, Backend, HarnessError, Hosted, Result};

#[test]
fn tcp_between_guests_survives_a_worker_kill() -> Result<()> {
    let dir = scratch_dir("restart")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")], &[])?;
    let mut g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let bytes = (512u64 << 20).to_string();
    let (dir2, s1, b2) = (dir.clone(), be.socket("g1"), bytes.clone());
    let sender = std::thread::spawn(move || {
        Hosted::run(
            &dir2,
            "g1",
            &s1,
            "10.77.0.1/24",
            &["send", "10.77.0.2:9", &b2, "--seed", "9"],
            Duration::from_secs(600),
        )
    });
    be.wait_until("traffic flowing", Duration::from_secs(30), |b| {
        b.counter("g1", "tx_bytes").is_ok_and(|n| n > 20 << 20)
    })?;
    let old = be.worker_pid()?;
    let status = Command::new("kill")
        .arg("-9")
        .arg(old.to_string())
        .status()?;
    assert!(status.success());
    // The supervisor starts a new worker and hands it both guests.
    be.wait_until("a new worker", Duration::from_secs(20), |b| {
        b.worker_pid().is_ok_and(|p| p != old)
    })?;
    let out = sender
        .join()
        .map_err(|_| HarnessError("sender panicked".into()))??;
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("sent {bytes} bytes sha256 ")))
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| HarnessError(format!("no sha in {out}")))?
        .to_owned();
    let line = g2.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    assert!(line.ends_with(&sent), "sender {sent}\nreceiver {line}");
    assert_eq!(
        be.counter("g1", "restarts")? + be.counter("g2", "restarts")?,
        2,
        "{}",
        be.stats()?
    );
    // The sim fabric's own counters (the new worker's fabric): what
    // crossed it, and every drop by reason.
    let stats = be.stats()?;
    let fabric = stats
        .lines()
        .find(|l| l.starts_with("fabric sim "))
        .ok_or_else(|| HarnessError(format!("no fabric line in\n{stats}")))?;
    let count = |key: &str| -> u64 {
        fabric
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("tx_packets") > 1000, "{fabric}");
    assert!(fabric.contains(" drop_no_recv="), "{fabric}");
    // Both guests noticed the new epoch and moved over.
    assert!(g2.output().contains("re-attaching"), "{}", g2.tail(10));
    let log = be.guard.output();
    assert!(
        log.contains("died") && log.contains("restarting it"),
        "{}",
        be.guard.tail(20)
    );
    Ok(())
}

#[test]
fn sigterm_shuts_down_cleanly() -> Result<()> {
    let dir = scratch_dir("sigterm")?;
    let mut be = Backend::start(&dir, &[Seat::new(&dir, "g1")], &[])?;
    let _g1 = Hosted::serve(&dir, "g1", &be.socket("g1"), "10.77.0.1/24")?;
    be.guard.signal(15)?;
    let status = be.guard.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "{status}");
    assert!(!be.socket("g1").exists(), "the socket file is removed");
    assert!(!be.control.exists(), "the control socket is removed");
    Ok(())
}

#[test]
fn pcap_decodes_in_tshark() -> Result<()> {
    let dir = scratch_dir("pcap")?;
    let pcap = dir.join("fabric.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut be = Backend::start(
        &dir,
        &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")],
        &["--pcap", &pcap_arg],
    )?;
    let _g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let g1 = |name: &str, args: &[&str]| {
        Hosted::run(
            &dir,
            name,
            &be.socket("g1"),
            "10.77.0.1/24",
            args,
            Duration::from_secs(60),
        )
    };
    g1("g1-ping", &["ping", "10.77.0.2", "--count", "2"])?;
    g1("g1-send", &["send", "10.77.0.2:9", "100000"])?;
    be.guard.signal(15)?;
    be.guard.wait_exit(Duration::from_secs(10))?;
    let tshark = |args: &[&str]| -> Result<String> {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(args)
            .output()
            .map_err(|e| HarnessError(format!("tshark: {e} (make deps installs it)")))?;
        if !out.status.success() {
            return Err(HarnessError(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let summary = tshark(&[])?;
    assert!(
        summary.contains("ARP") && summary.contains("ICMP") && summary.contains("TCP"),
        "{summary}"
    );
    assert!(!summary.contains("Malformed"), "{summary}");
    let arp = tshark(&["-Y", "arp", "-V"])?;
    assert!(
        arp.contains("Hardware type: InfiniBand (32)") && arp.contains("Hardware size: 20"),
        "{arp}"
    );
    // Each guest-to-guest packet is recorded once, as it was sent.
    let requests = tshark(&["-Y", "icmp.type == 8", "-T", "fields", "-e", "icmp.seq"])?;
    assert_eq!(requests.lines().count(), 2, "{requests}");
    Ok(())
}

#[test]
fn bad_configuration_names_the_field() -> Result<()> {
    let out = Command::new(bin("ib-backend")?)
        .args([
            "run",
            "--mtu",
            "3000",
            "--guest",
            "name=g1,socket=/tmp/never.sock",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend.mtu: 3000 is not an IB MTU"), "{err}");
    let out = Command::new(bin("ib-backend")?)
        .args(["run", "--guest", "name=g1"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket: missing"));
    let out = Command::new(bin("ib-backend")?)
        .args(["run", "--config", "/nonexistent.toml"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml")
    );
    Ok(())
}

#[test]
fn rdma_without_a_device_says_so() -> Result<()> {
    let devices = std::fs::read_dir("/sys/class/infiniband")
        .map(|d| d.count())
        .unwrap_or(0);
    if devices > 0 {
        eprintln!("SKIPPED: this host has {devices} RDMA device(s); the no-device message cannot be checked here");
        return Ok(());
    }
    let dir = scratch_dir("nordma")?;
    let socket = dir.join("g1.sock");
    let started = Instant::now();
    let out = Command::new(bin("ib-backend")?)
        .args(["run", "--provider", "rdma", "--control"])
        .arg(dir.join("ctl"))
        .arg("--guest")
        .arg(format!("name=g1,socket={}", socket.display()))
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no RDMA device"), "{err}");
    assert!(err.contains("not restarting it"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!socket.exists(), "the socket file is cleaned up");
    Ok(())
}
