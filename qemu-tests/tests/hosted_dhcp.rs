//! Issue 11, must-show 2 (hosted): guests with `ip=dhcp` get their seats'
//! addresses from `ib-backend --dhcp`, say so, and talk; a seat without
//! `ip=` gets no offer; the `--pcap` capture decodes as DHCP over IPoIB.

use std::process::Command;
use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::{scratch_dir, Backend, HarnessError, Hosted, Result};

#[test]
fn hosted_guests_lease_their_seat_addresses() -> Result<()> {
    let dir = scratch_dir("dhcp")?;
    let pcap = dir.join("fabric.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let seats = [
        Seat::new(&dir, "g1").with_ip("10.77.0.2"),
        Seat::new(&dir, "g2").with_ip("10.77.0.3"),
        Seat::new(&dir, "g3"),
    ];
    let mut be = Backend::start(
        &dir,
        &seats,
        &["--dhcp", "10.77.0.254/24,lease=10", "--pcap", &pcap_arg],
    )?;
    be.guard
        .wait_for("dhcp: serving 2 seat(s)", Duration::from_secs(10))?;

    // g1 serves with ip=dhcp: it leases 10.77.0.2 and says so.
    let mut g1 = Hosted::serve(&dir, "g1", &be.socket("g1"), "dhcp")?;
    // The stack's log line, then the hosted guest's own.
    let line = g1.wait_for("dhcp: lease 10.77.0.2/24 from", Duration::from_secs(20))?;
    assert!(
        line.contains("from 10.77.0.254, no gw, lease 10 s"),
        "{line}"
    );
    g1.wait_for("dhcp: lease 10.77.0.2/24 gw none", Duration::from_secs(5))?;
    let line = be.guard.wait_for(
        "dhcp: lease 10.77.0.2/24 to seat g1",
        Duration::from_secs(10),
    )?;
    assert!(line.contains("10 s"), "{line}");

    // g2, also ip=dhcp, leases 10.77.0.3 and pings g1 at its leased address.
    let out = Hosted::run(
        &dir,
        "g2-ping",
        &be.socket("g2"),
        "dhcp",
        &["ping", "10.77.0.2", "--count", "3"],
        Duration::from_secs(60),
    )?;
    assert!(out.contains("dhcp: lease 10.77.0.3/24"), "{out}");
    assert!(out.contains("3 sent, 3 answered"), "{out}");

    // g3's seat has no ip=: its DISCOVER gets no offer, and the back end
    // says why.
    let _g3 = Hosted::serve(&dir, "g3", &be.socket("g3"), "dhcp")?;
    let line = be.guard.wait_for("no offer", Duration::from_secs(10))?;
    assert!(line.contains("no seat with ip= at that port"), "{line}");

    // The server's counters (published after each busy pass): two seats
    // leased, one port refused.
    let dhcp_line = |be: &Backend| -> String {
        let stats = be.stats().unwrap_or_default();
        let line = stats.lines().find(|l| l.starts_with("dhcp "));
        line.unwrap_or("").to_owned()
    };
    be.wait_until("the dhcp counters", Duration::from_secs(5), |be| {
        dhcp_line(be).contains(" acks=2 naks=0 no_lease=1 malformed=0")
    })?;
    // Port security let the DHCP broadcasts from 0.0.0.0 through and
    // nothing else was filtered.
    assert_eq!(be.counter("g1", "tx_filtered")?, 0);
    assert_eq!(be.counter("total", "violations")?, 0);

    // At T1 (5 s into the 10 s lease) g1 renews by unicast to the server,
    // through port security, and keeps its address.
    be.wait_until("g1's renewal", Duration::from_secs(15), |be| {
        dhcp_line(be).contains(" acks=3 ")
    })?;
    assert!(!g1.output().contains("removed"), "{}", g1.tail(10));
    assert_eq!(be.counter("g1", "tx_filtered")?, 0);
    be.guard.signal(15)?;
    be.guard.wait_exit(Duration::from_secs(10))?;
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "dhcp.hw.type == 32", "-T", "fields"])
        .args([
            "-e",
            "dhcp.option.dhcp",
            "-e",
            "dhcp.hw.len",
            "-e",
            "dhcp.ip.your",
        ])
        .args([
            "-e",
            "dhcp.client_id.duid_ll_hw_type",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
        ])
        .output()
        .map_err(|e| HarnessError(format!("tshark: {e} (make deps installs it)")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let acks: Vec<&str> = rows.iter().filter(|r| r[0] == "5").map(|r| r[2]).collect();
    assert!(
        acks.contains(&"10.77.0.2") && acks.contains(&"10.77.0.3"),
        "{text}"
    );
    for kind in ["1", "2", "3"] {
        assert!(
            rows.iter().any(|r| r[0] == kind),
            "no message type {kind}: {text}"
        );
    }
    assert!(rows.iter().all(|r| r[1] == "0" && r[3] == "32"), "{text}");
    // The renewal: a REQUEST from g1's address to the server, and the ACK
    // back to it, both unicast.
    let unicast = |kind: &str, src: &str, dst: &str| {
        rows.iter()
            .any(|r| r[0] == kind && r[4] == src && r[5] == dst)
    };
    assert!(unicast("3", "10.77.0.2", "10.77.0.254"), "{text}");
    assert!(unicast("5", "10.77.0.254", "10.77.0.2"), "{text}");
    Ok(())
}
