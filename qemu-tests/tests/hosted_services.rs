//! Issue 3, must-show 1: ARP, ping, UDP echo, HTTP and a 64 MiB TCP
//! transfer between two hosted guests through the back end.

use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::{scratch_dir, Backend, Hosted, Result};

const MIB: u64 = 1024 * 1024;

fn sha_of(line_prefix: &str, text: &str) -> Option<String> {
    text.lines()
        .find(|l| l.contains(line_prefix))
        .and_then(|l| l.split("sha256 ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
}

#[test]
fn udp_echo_http_and_64_mib_tcp() -> Result<()> {
    let dir = scratch_dir("services")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")], &[])?;
    let mut g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let g1 = |name: &str, args: &[&str], secs: u64| {
        Hosted::run(
            &dir,
            name,
            &be.socket("g1"),
            "10.77.0.1/24",
            args,
            Duration::from_secs(secs),
        )
    };

    let out = g1(
        "g1-udp",
        &["udp-echo", "10.77.0.2:7", "--count", "50", "--size", "1400"],
        60,
    )?;
    assert!(
        out.contains("udp echo: 50 sent, 50 echoed intact, 0 corrupted"),
        "{out}"
    );

    let out = g1("g1-http", &["fetch", "http://10.77.0.2/stats"], 60)?;
    assert!(out.contains("HTTP 200"), "{out}");
    assert!(out.contains("ip 10.77.0.2/24"), "{out}");
    assert!(out.contains("rx_packets"), "{out}");
    let out = g1("g1-http-404", &["fetch", "http://10.77.0.2/nope"], 60);
    assert!(out.is_err(), "a missing page must not count as success");

    let bytes = (64 * MIB).to_string();
    let out = g1(
        "g1-send",
        &["send", "10.77.0.2:9", &bytes, "--seed", "42"],
        600,
    )?;
    let sent = sha_of(&format!("sent {bytes} bytes"), &out)
        .ok_or_else(|| qemu_tests::HarnessError(format!("no sha in {out}")))?;
    let line = g2.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    let received = sha_of("discard from", &line).unwrap_or_default();
    assert_eq!(sent, received, "sender {out}\nreceiver {line}");
    assert!(out.contains("MB/s"), "{out}");
    println!(
        "{}",
        out.lines().find(|l| l.starts_with("sent ")).unwrap_or("")
    );
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// Issue 11: two hosted guests with ip6= ping each other over IPv6 through
/// the back end (neighbour discovery by ipoib on both sides), and the back
/// end's `--pcap` capture decodes in tshark: ICMPv6 neighbour discovery
/// with the 20-byte IPoIB link-layer address option.
#[test]
fn hosted_guests_ping6_and_the_capture_decodes() -> Result<()> {
    let dir = scratch_dir("services6")?;
    let pcap = dir.join("fabric.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut be = Backend::start(
        &dir,
        &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")],
        &["--pcap", &pcap_arg],
    )?;
    let mut g2 = Hosted::serve_net(
        &dir,
        "g2",
        &be.socket("g2"),
        "ip=10.77.0.2/24 ip6=fd77::2/64",
    )?;
    let g1 = |name: &str, args: &[&str]| {
        Hosted::run_net(
            &dir,
            name,
            &be.socket("g1"),
            "ip=10.77.0.1/24 ip6=fd77::1/64",
            args,
            Duration::from_secs(60),
        )
    };
    let out = g1(
        "g1-ping6",
        &["ping", "fd77::2", "--count", "3", "--timeout", "2"],
    )?;
    assert!(out.contains("reply from fd77::2: seq=3"), "{out}");
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    // HTTP and a TCP transfer over IPv6 too.
    let out = g1("g1-fetch6", &["fetch", "http://[fd77::2]/stats"])?;
    assert!(
        out.contains("HTTP 200") && out.contains("ip 10.77.0.2/24"),
        "{out}"
    );
    let bytes = MIB.to_string();
    let out = g1("g1-send6", &["send", "[fd77::2]:9", &bytes, "--seed", "6"])?;
    let sent = sha_of(&format!("sent {bytes} bytes"), &out)
        .ok_or_else(|| qemu_tests::HarnessError(format!("no sha in {out}")))?;
    let line = g2.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    assert_eq!(
        sha_of("discard from", &line).unwrap_or_default(),
        sent,
        "{line}"
    );
    assert!(line.contains("fd77::1"), "{line}");
    be.guard.signal(15)?;
    be.guard.wait_exit(Duration::from_secs(10))?;
    let tshark = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(args)
            .output()
            .map_err(|e| {
                qemu_tests::HarnessError(format!("tshark: {e} (make deps installs it)"))
            })?;
        if !out.status.success() {
            return Err(qemu_tests::HarnessError(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let summary = tshark(&[])?;
    assert!(!summary.contains("Malformed"), "{summary}");
    assert!(
        summary.contains("Neighbor Solicitation for fd77::2")
            && summary.contains("Neighbor Advertisement fd77::2"),
        "{summary}"
    );
    let nd = tshark(&["-Y", "icmpv6.type == 135 || icmpv6.type == 136", "-V"])?;
    assert!(nd.contains("Source link-layer address"), "{nd}");
    assert!(nd.contains("Target link-layer address"), "{nd}");
    assert!(nd.contains("Length: 3 (24 bytes)"), "{nd}");
    // The echoes, each recorded once.
    let requests = tshark(&[
        "-Y",
        "icmpv6.type == 128",
        "-T",
        "fields",
        "-e",
        "icmpv6.echo.sequence_number",
    ])?;
    assert_eq!(requests.lines().count(), 3, "{requests}");
    Ok(())
}
