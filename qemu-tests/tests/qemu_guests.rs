//! Issue 4, must-show 1-4: the PVH image under QEMU (TCG) on the channel,
//! talking to hosted guests, to another QEMU guest and to Linux, and
//! sleeping in HLT when idle.

use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::backend::Seat;
use qemu_tests::clients::http_burst;
use qemu_tests::{qemu, scratch_dir, Backend, Guard, HarnessError, Hosted, Result};

fn booted(guard: &mut Guard) -> Result<()> {
    guard.wait_for("ibguest: network up", Duration::from_secs(60))?;
    Ok(())
}

#[test]
fn image_answers_ping_from_a_hosted_guest() -> Result<()> {
    let dir = scratch_dir("qemu-ping")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "h1")], &[])?;
    let started = Instant::now();
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    // Ping until the first reply: the time from QEMU start to it is the
    // boot-to-network time.
    let mut answered = None;
    for attempt in 0..20 {
        let out = Hosted::run(
            &dir,
            &format!("h1-ping-{attempt}"),
            &be.socket("h1"),
            "10.77.0.9/24",
            &["ping", "10.77.0.2", "--count", "1", "--timeout", "2"],
            Duration::from_secs(30),
        );
        if let Ok(out) = out {
            answered = Some(out);
            break;
        }
    }
    let out = answered
        .ok_or_else(|| HarnessError(format!("the QEMU guest never answered\n{}", q1.tail(20))))?;
    let elapsed = started.elapsed();
    println!(
        "QEMU start to first ping reply: {:.3} s",
        elapsed.as_secs_f64()
    );
    assert!(out.contains("1 sent, 1 answered"), "{out}");
    booted(&mut q1)?;
    assert!(be.counter("q1", "interrupts")? > 0);
    Ok(())
}

#[test]
fn two_qemu_guests_ping_move_16_mib_and_serve_http() -> Result<()> {
    let dir = scratch_dir("qemu-pair")?;
    let be = Backend::start(
        &dir,
        &[
            Seat::new(&dir, "q1"),
            Seat::new(&dir, "q2"),
            Seat::new(&dir, "h1"),
        ],
        &[],
    )?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    booted(&mut q1)?;
    let mut q2 = qemu::boot(
        &dir,
        "q2",
        Some(&be.socket("q2")),
        "ip=10.77.0.3/24 peer=10.77.0.2 send=10.77.0.2:9:16777216",
    )?;
    q2.wait_for(
        "ibguest: peer 10.77.0.2 answered 3/3",
        Duration::from_secs(60),
    )?;
    let sent = q2.wait_for(
        "ibguest: sent 16777216 bytes sha256 ",
        Duration::from_secs(300),
    )?;
    let received = q1.wait_for("ibguest: discard from 10.77.0.3:", Duration::from_secs(30))?;
    let sha = |line: &str| {
        line.split("sha256 ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(sha(&sent), sha(&received), "{sent}\n{received}");
    assert!(received.contains("16777216 bytes"), "{received}");
    println!("{}", sent.trim());
    // A hosted guest fetches the QEMU guest's status page.
    let page = Hosted::run(
        &dir,
        "h1",
        &be.socket("h1"),
        "10.77.0.9/24",
        &["fetch", "http://10.77.0.3/stats"],
        Duration::from_secs(60),
    )?;
    assert!(
        page.contains("HTTP 200") && page.contains("ip 10.77.0.3/24"),
        "{page}"
    );
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// Issue 11: the unikernel pings over IPv6 (`peer=fd77::9`): it solicits a
/// hosted guest's address with the IPoIB link-layer option and gets its
/// echoes back.
#[test]
fn qemu_guest_pings_a_hosted_guest_over_ipv6() -> Result<()> {
    let dir = scratch_dir("qemu-ping6")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "h1")], &[])?;
    let _h1 = Hosted::serve_net(
        &dir,
        "h1",
        &be.socket("h1"),
        "ip=10.77.0.9/24 ip6=fd77::9/64",
    )?;
    let mut q1 = qemu::boot(
        &dir,
        "q1",
        Some(&be.socket("q1")),
        "ip=10.77.0.2/24 ip6=fd77::2/64 peer=fd77::9",
    )?;
    let line = q1.wait_for("ibguest: peer fd77::9 answered", Duration::from_secs(60))?;
    assert!(line.contains("answered 3/3"), "{line}");
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// Issue 11, must-show 2 (QEMU): the image with `ip=dhcp` leases its
/// seat's address from `ib-backend --dhcp`, says so on its console, and
/// answers a hosted guest's ping there.
#[test]
fn qemu_guest_with_ip_dhcp_leases_its_seat_address() -> Result<()> {
    let dir = scratch_dir("qemu-dhcp")?;
    let be = Backend::start(
        &dir,
        &[
            Seat::new(&dir, "q1").with_ip("10.77.0.2"),
            Seat::new(&dir, "h1").with_ip("10.77.0.9"),
        ],
        &["--dhcp", "10.77.0.254/24"],
    )?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=dhcp name=q1")?;
    let line = q1.wait_for("ibguest: dhcp: lease", Duration::from_secs(60))?;
    assert!(
        line.contains("ibguest: dhcp: lease 10.77.0.2/24 (no gateway)"),
        "{line}"
    );
    let up = q1.wait_for("ibguest: network up", Duration::from_secs(10))?;
    assert!(up.contains("network up: 10.77.0.2/24"), "{up}");
    let out = Hosted::run(
        &dir,
        "h1-ping",
        &be.socket("h1"),
        "10.77.0.9/24",
        &["ping", "10.77.0.2", "--count", "2"],
        Duration::from_secs(30),
    )?;
    assert!(out.contains("2 sent, 2 answered"), "{out}");
    Ok(())
}

#[test]
fn idle_qemu_guest_sleeps_in_hlt() -> Result<()> {
    let dir = scratch_dir("qemu-idle")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1")], &[])?;
    let mut q1 = qemu::boot(&dir, "q1", Some(&be.socket("q1")), "ip=10.77.0.2/24")?;
    booted(&mut q1)?;
    std::thread::sleep(Duration::from_secs(1));
    let t0 = q1.cpu_ticks()?;
    std::thread::sleep(Duration::from_secs(10));
    let t1 = q1.cpu_ticks()?;
    println!("idle QEMU guest: {} clock ticks in 10 s", t1 - t0);
    // Under 5% of one core over 10 s is under 50 ticks (100 Hz).
    assert!(t1 - t0 < 50, "idle QEMU used {} ticks in 10 s", t1 - t0);
    Ok(())
}

#[test]
fn busy_polling_qemu_guest_serves_then_sleeps_in_hlt() -> Result<()> {
    // The longest budget (10 ms): the guest spins after every exchange,
    // and halts 10 ms after the last one.
    let dir = scratch_dir("qemu-busy-poll")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "q1"), Seat::new(&dir, "h1")], &[])?;
    let mut q1 = qemu::boot(
        &dir,
        "q1",
        Some(&be.socket("q1")),
        "ip=10.77.0.2/24 busy-poll=10000",
    )?;
    booted(&mut q1)?;
    let out = Hosted::run(
        &dir,
        "h1",
        &be.socket("h1"),
        "10.77.0.9/24",
        &["udp-rr", "10.77.0.2:7", "--count", "200"],
        Duration::from_secs(120),
    )?;
    assert!(out.contains("udp-rr: 200 round trips"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    let t0 = q1.cpu_ticks()?;
    std::thread::sleep(Duration::from_secs(10));
    let t1 = q1.cpu_ticks()?;
    println!(
        "busy-polling QEMU guest, idle after 200 exchanges: {} clock ticks in 10 s",
        t1 - t0
    );
    assert!(t1 - t0 < 50, "idle QEMU used {} ticks in 10 s", t1 - t0);
    Ok(())
}

#[test]
fn linux_curl_reaches_a_qemu_guest_through_the_gateway() -> Result<()> {
    let dir = scratch_dir("qemu-gateway")?;
    let ns = format!("ibqgw-{}", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &ns]).output()?;
    if !out.status.success() {
        eprintln!(
            "SKIPPED: cannot create a network namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(());
    }
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(ns.clone());
    let seat = Seat::new(&dir, "q1");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns])
        .arg(qemu_tests::bin("ib-backend")?)
        .args([
            "run",
            "--gateway",
            "ibgw0=10.77.0.1/24,fd77::1/64",
            "--control",
        ])
        .arg(dir.join("control.sock"))
        .arg("--guest")
        .arg(format!(
            "name=q1,socket={},ip6=fd77::2",
            seat.socket.display()
        ));
    let mut be = Guard::spawn("backend", cmd, &dir.join("backend.log"))?;
    be.wait_for("ib-backend: provider", Duration::from_secs(20))?;
    let mut q1 = qemu::boot(
        &dir,
        "q1",
        Some(&seat.socket),
        "ip=10.77.0.2/24 gw=10.77.0.1 ip6=fd77::2/64",
    )?;
    let up = q1.wait_for("ibguest: network up", Duration::from_secs(60))?;
    // The unikernel names its IPv6 addresses: link-local from the port
    // GUID, and ip6=.
    assert!(
        up.contains(" ip6 fe80::") && up.contains(" fd77::2/64"),
        "{up}"
    );
    // Issue 11: IPv6 through the gateway (proxy ND on the TAP, IPoIB
    // neighbour discovery on the fabric).
    // Every check runs in the namespace and must print what it is given.
    let in_ns = |args: &[&str], want: &str| -> Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let what = args.first().copied().unwrap_or_default();
        println!("{what}: {}", text.lines().last().unwrap_or(""));
        assert!(
            out.status.success() && text.contains(want),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    in_ns(
        &["ping", "-6", "-c", "3", "-W", "3", "fd77::2"],
        "3 received",
    )?;
    // Larger than the MTU: the unikernel reassembles and fragments IPv6.
    in_ns(
        &["ping", "-6", "-c", "3", "-s", "3000", "-W", "3", "fd77::2"],
        "3 received",
    )?;
    let curl = |url| ["curl", "-sS", "-m", "20", "--retry", "3", url];
    in_ns(&curl("http://[fd77::2]/stats"), "ip 10.77.0.2/24")?;
    in_ns(&curl("http://10.77.0.2/stats"), "ip 10.77.0.2/24")?;
    // Larger than the IPoIB MTU: the unikernel reassembles Linux's
    // fragments and fragments its replies.
    in_ns(
        &["ping", "-c", "3", "-s", "3000", "-W", "3", "10.77.0.2"],
        "3 received",
    )?;
    // 1000 clients at once: none refused (issue 11).
    in_ns(
        &["python3", "-c", &http_burst("10.77.0.2", 1000)],
        "1000 ok, 0 refused, 0 failed",
    )?;
    Ok(())
}

/// Issue 12: the image itself in connected mode (`cm=on`): on a seat that
/// offers it (`max-rc-conns`), it agrees to it, sends 16 MiB of TCP to a
/// hosted guest in connected mode over an RC connection (its console
/// counts the bytes that went over RC), and the hash matches. A second
/// image with `cm=on` on a seat without `max-rc-conns` falls back to
/// datagram mode and still talks to the same hosted guest.
#[test]
fn qemu_guest_in_connected_mode_sends_over_rc() -> Result<()> {
    let dir = scratch_dir("qemu-cm")?;
    let be = Backend::start(
        &dir,
        &[
            Seat::new(&dir, "q1").with_max_rc_conns(4),
            Seat::new(&dir, "q2"),
            Seat::new(&dir, "h1").with_max_rc_conns(4),
        ],
        &[],
    )?;
    let mut h1 = Hosted::serve_net(&dir, "h1", &be.socket("h1"), "ip=10.77.0.9/24 cm=on")?;
    h1.wait_for("ibguest-hosted: 10.77.0.9/24 up", Duration::from_secs(10))?;
    let bytes: u64 = 16 << 20;
    let mut q1 = qemu::boot(
        &dir,
        "q1",
        Some(&be.socket("q1")),
        &format!("ip=10.77.0.2/24 cm=on send=10.77.0.9:9:{bytes}"),
    )?;
    q1.wait_for("ibguest: connected mode agreed", Duration::from_secs(60))?;
    let up = q1.wait_for("ibguest: network up", Duration::from_secs(60))?;
    assert!(up.contains("mtu 65520"), "{up}");
    let sent = q1.wait_for(
        &format!("ibguest: sent {bytes} bytes sha256 "),
        Duration::from_secs(300),
    )?;
    let rc = q1.wait_for("ibguest: connected mode: ", Duration::from_secs(5))?;
    let words: Vec<&str> = rc.split_whitespace().collect();
    let rc_bytes: u64 = words
        .iter()
        .position(|w| *w == "packets,")
        .and_then(|i| words.get(i + 1))
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| HarnessError(format!("cannot read {rc:?}")))?;
    assert!(
        rc_bytes >= bytes * 9 / 10,
        "at least 90 % of the stream went over RC: {rc}"
    );
    let received = h1.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    let sha = |line: &str| {
        line.split("sha256 ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(sha(&sent), sha(&received), "{sent}\n{received}");
    println!("{}\n{}", sent.trim(), rc.trim());

    // No max-rc-conns on q2's seat: datagram mode, and it still talks.
    let mut q2 = qemu::boot(
        &dir,
        "q2",
        Some(&be.socket("q2")),
        "ip=10.77.0.3/24 cm=on peer=10.77.0.9 send=10.77.0.9:9:1048576",
    )?;
    q2.wait_for(
        "ibguest: connected mode not agreed",
        Duration::from_secs(60),
    )?;
    q2.wait_for(
        "ibguest: peer 10.77.0.9 answered 3/3",
        Duration::from_secs(60),
    )?;
    let sent = q2.wait_for(
        "ibguest: sent 1048576 bytes sha256 ",
        Duration::from_secs(120),
    )?;
    let received = h1.wait_for(": 1048576 bytes sha256", Duration::from_secs(30))?;
    assert_eq!(sha(&sent), sha(&received), "{sent}\n{received}");
    assert!(
        !q2.output().contains("ibguest: connected mode: "),
        "{}",
        q2.tail(10)
    );
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}
