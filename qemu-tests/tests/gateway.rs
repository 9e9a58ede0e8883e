//! Issue 3, must-show 5: Linux `ping` and `curl` reach a hosted guest
//! through the gateway's TAP, in a network namespace the test creates.

use std::process::Command;
use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::clients::{http_burst, service_burst};
use qemu_tests::{bin, scratch_dir, Guard, HarnessError, Hosted, Result};

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Result<Option<Netns>> {
        let out = Command::new("ip").args(["netns", "add", name]).output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("Permission denied") || err.contains("Operation not permitted") {
                eprintln!("SKIPPED: cannot create a network namespace here (needs CAP_SYS_ADMIN/CAP_NET_ADMIN): {err}");
                return Ok(None);
            }
            return Err(HarnessError(format!("ip netns add {name}: {err}")));
        }
        let ns = Netns(name.to_owned());
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(Some(ns))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn exec(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).output()?;
        if !out.status.success() {
            return Err(HarnessError(format!(
                "{args:?} in {} failed: {}{}",
                self.0,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `ib-backend run` inside `ns` (so its TAP appears there) with the
/// gateway `gateway`, `options` and seat g2 (`g2_spec` after its socket),
/// up and ready.
struct GatewayBackend {
    guard: Guard,
    seat: Seat,
    control: std::path::PathBuf,
}

impl GatewayBackend {
    fn start(
        ns: &Netns,
        dir: &std::path::Path,
        gateway: &str,
        options: &[&str],
        g2_spec: &str,
    ) -> Result<GatewayBackend> {
        let seat = Seat::new(dir, "g2");
        let control = dir.join("control.sock");
        let backend = bin("ib-backend")?;
        let g2 = format!("name=g2,socket={}{g2_spec}", seat.socket.display());
        let mut args = vec![
            backend.to_str().unwrap_or_default(),
            "run",
            "--control",
            control.to_str().unwrap_or_default(),
            "--gateway",
            gateway,
        ];
        args.extend_from_slice(options);
        args.extend(["--guest", &g2]);
        let mut cmd = ns.command(&args);
        cmd.env("RUST_LOG", "info");
        let mut guard = Guard::spawn("backend", cmd, &dir.join("backend.log"))?;
        guard.wait_for("ib-backend: provider", Duration::from_secs(20))?;
        Ok(GatewayBackend {
            guard,
            seat,
            control,
        })
    }

    /// `ib-backend stats`: the whole output and its `gateway` line.
    fn stats(&self) -> Result<(String, String)> {
        let out = Command::new(bin("ib-backend")?)
            .args(["stats", "--control"])
            .arg(&self.control)
            .output()?;
        let stats = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stats
            .lines()
            .find(|l| l.starts_with("gateway "))
            .unwrap_or_default()
            .to_owned();
        Ok((stats, line))
    }
}

/// Python that sends an 8000-byte datagram to `addr`'s UDP echo service
/// (`family`: AF_INET or AF_INET6) and prints "echoed 8000 bytes" if it
/// comes back byte for byte (three tries: the first may wait on ARP or
/// neighbour discovery).
fn udp_echo_8000(family: &str, addr: &str) -> String {
    format!(
        r#"
import socket
data = bytes((i * 7 + 3) % 256 for i in range(8000))
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
s.settimeout(2)
for attempt in range(3):
    s.sendto(data, ("{addr}", 7))
    try:
        back = s.recv(65536)
    except socket.timeout:
        continue
    print("echoed %d bytes" % len(back) if back == data else "mismatch: %d bytes" % len(back))
    break
else:
    print("no echo")
"#
    )
}

#[test]
fn linux_ping_and_curl_reach_a_guest_through_the_gateway() -> Result<()> {
    let dir = scratch_dir("gateway")?;
    let Some(ns) = Netns::create(&format!("ibgw-{}", std::process::id()))? else {
        return Ok(());
    };
    // The back end runs inside the namespace, so its TAP appears there.
    let be = GatewayBackend::start(&ns, &dir, "ibgw0=10.77.0.1/24", &[], "")?;
    let seat = &be.seat;
    let mut g2 = Hosted::serve(&dir, "g2", &seat.socket, "10.77.0.2/24")?;
    let _ = &mut g2;
    let ping = ns.exec(&["ping", "-c", "3", "-W", "2", "10.77.0.2"])?;
    assert!(ping.contains("3 received"), "{ping}");
    // Issue 11: larger than the IPoIB MTU (2044), so Linux fragments the
    // requests and the guest reassembles them, and the other way round for
    // the replies.
    let ping = ns.exec(&["ping", "-c", "3", "-s", "3000", "-W", "2", "10.77.0.2"])?;
    assert!(ping.contains("3 received"), "{ping}");
    let echo = ns.exec(&["python3", "-c", &udp_echo_8000("AF_INET", "10.77.0.2")])?;
    assert!(echo.contains("echoed 8000 bytes"), "{echo}");
    // Issue 11: a burst of 1000 clients at once, none refused.
    let burst = ns.exec(&["python3", "-c", &http_burst("10.77.0.2", 1000)])?;
    assert!(burst.contains("1000 ok, 0 refused, 0 failed"), "{burst}");
    let page = ns.exec(&["curl", "-sS", "-m", "10", "http://10.77.0.2/stats"])?;
    let stat = |key: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(stat("http_connections ") >= 1000, "{page}");
    // And every other TCP service: echo, discard, chargen, one after the
    // other (a service's lingering burst sockets must not starve the next).
    for (port, name) in [(7, "echo"), (9, "discard"), (19, "chargen")] {
        let started = std::time::Instant::now();
        let burst = ns.exec(&["python3", "-c", &service_burst("10.77.0.2", port, 1000)])?;
        println!(
            "{name} burst: {} in {:.1?}",
            burst.trim(),
            started.elapsed()
        );
        if !burst.contains("1000 ok, 0 refused, 0 failed") {
            let page = ns.exec(&["curl", "-sS", "-m", "10", "http://10.77.0.2/stats"])?;
            panic!("{name}: {burst}\n{page}");
        }
    }
    let after = ns.exec(&["curl", "-sS", "-m", "10", "http://10.77.0.2/stats"])?;
    for key in ["syn_deferred ", "syn_duplicates "] {
        if let Some(line) = after.lines().find(|l| l.starts_with(key)) {
            println!("{line}");
        }
    }
    let page = ns.exec(&["curl", "-sS", "-m", "10", "http://10.77.0.2/stats"])?;
    assert!(page.contains("ip 10.77.0.2/24"), "{page}");
    let index = ns.exec(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://10.77.0.2/",
    ])?;
    assert_eq!(index.trim(), "200");
    let (stats, line) = be.stats()?;
    assert!(
        line.contains("up=1") && line.contains("arp_proxied="),
        "{stats}"
    );
    assert!(!line.contains("to_fabric=0 "), "{stats}");
    Ok(())
}

/// Issue 11: IPv6 through the gateway. Linux `ping -6` and an HTTP GET
/// over IPv6 reach a hosted guest with `ip6=`: proxy ND on the TAP, IPoIB
/// neighbour discovery on the fabric, and port security on the seat's
/// `ip6=`.
#[test]
fn linux_ping6_and_curl_reach_a_guest_over_ipv6() -> Result<()> {
    let dir = scratch_dir("gateway6")?;
    let Some(ns) = Netns::create(&format!("ibgw6-{}", std::process::id()))? else {
        return Ok(());
    };
    let be = GatewayBackend::start(
        &ns,
        &dir,
        "ibgw0=10.77.0.1/24,fd77::1/64",
        &[],
        ",ip=10.77.0.2,ip6=fd77::2",
    )?;
    let seat = &be.seat;
    let _g2 = Hosted::serve_net(
        &dir,
        "g2",
        &seat.socket,
        "ip=10.77.0.2/24 gw=10.77.0.1 ip6=fd77::2/64 gw6=fd77::1",
    )?;
    let addrs = ns.exec(&["ip", "-6", "addr", "show", "dev", "ibgw0"])?;
    assert!(addrs.contains("fd77::1/64"), "{addrs}");
    let ping = ns.exec(&["ping", "-6", "-c", "3", "-W", "2", "fd77::2"])?;
    assert!(ping.contains("3 received"), "{ping}");
    // Larger than the MTU: Linux fragments the requests and the guest's
    // ipoib reassembles them; the guest's ipoib fragments the replies
    // (smoltcp 0.14 has no IPv6 fragmentation of its own).
    let ping = ns.exec(&["ping", "-6", "-c", "3", "-s", "3000", "-W", "2", "fd77::2"])?;
    assert!(ping.contains("3 received"), "{ping}");
    let echo = ns.exec(&["python3", "-c", &udp_echo_8000("AF_INET6", "fd77::2")])?;
    assert!(echo.contains("echoed 8000 bytes"), "{echo}");
    let page = ns.exec(&["curl", "-sS", "-m", "10", "http://[fd77::2]/stats"])?;
    assert!(page.contains("ip 10.77.0.2/24"), "{page}");
    let stat = |key: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    // The guest answered the gateway's solicitation with the IPoIB option.
    assert!(stat("nd_solicits_received ") >= 1, "{page}");
    assert!(stat("nd_adverts_sent ") >= 1, "{page}");
    assert_eq!(stat("rx_drop_malformed "), 0, "{page}");
    // The three 3000-byte pings and the 8000-byte datagram: each
    // reassembled once by the guest, and each answer fragmented by it.
    assert_eq!(stat("ipv6_reassembled "), 4, "{page}");
    assert_eq!(stat("tx_fragmented "), 4, "{page}");
    let code = ns.exec(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://[fd77::2]/",
    ])?;
    assert_eq!(code.trim(), "200");
    // IPv4 still works beside it.
    let ping = ns.exec(&["ping", "-c", "1", "-W", "2", "10.77.0.2"])?;
    assert!(ping.contains("1 received"), "{ping}");
    let (stats, line) = be.stats()?;
    assert!(line.contains("up=1"), "{stats}");
    assert!(!line.contains("nd_proxied=0"), "{stats}");
    assert!(line.contains("dropped_spoofed=0 "), "{stats}");
    assert!(line.ends_with("dropped_spoofed_nd=0"), "{stats}");
    // The seat's port security (ip=, ip6=) let every honest frame through.
    let seat_line = stats
        .lines()
        .find(|l| l.starts_with("guest g2 "))
        .unwrap_or_default();
    assert!(seat_line.contains(" tx_filtered=0 "), "{stats}");
    Ok(())
}

/// Issue 11: a guest with `ip=dhcp` behind the gateway gets the gateway as
/// its router from the back end's DHCP server, and Linux reaches it at the
/// leased address (the gateway believes the address from the seat's port,
/// as for a static one).
#[test]
fn a_dhcp_guest_gets_the_gateway_as_router_and_linux_reaches_it() -> Result<()> {
    let dir = scratch_dir("gateway-dhcp")?;
    let Some(ns) = Netns::create(&format!("ibgwd-{}", std::process::id()))? else {
        return Ok(());
    };
    let mut be = GatewayBackend::start(
        &ns,
        &dir,
        "ibgw0=10.77.0.1/24",
        &["--dhcp", "10.77.0.254/24"],
        ",ip=10.77.0.2",
    )?;
    let seat = &be.seat;
    // Linux speaks first (an ARP for a guest not there yet), so the gateway
    // knows where Linux is by the time the DHCP broadcasts come.
    let _ = ns
        .command(&["ping", "-c", "1", "-W", "1", "10.77.0.9"])
        .output()?;
    let mut g2 = Hosted::serve(&dir, "g2", &seat.socket, "dhcp")?;
    g2.wait_for(
        "dhcp: lease 10.77.0.2/24 gw 10.77.0.1",
        Duration::from_secs(20),
    )?;
    be.guard.wait_for(
        "dhcp: lease 10.77.0.2/24 to seat g2 (qpn",
        Duration::from_secs(5),
    )?;
    let ping = ns.exec(&["ping", "-c", "3", "-W", "2", "10.77.0.2"])?;
    assert!(ping.contains("3 received"), "{ping}");
    let page = ns.exec(&["curl", "-sS", "-m", "10", "http://10.77.0.2/stats"])?;
    assert!(
        page.contains("ip 10.77.0.2/24") && page.contains("gateway 10.77.0.1"),
        "{page}"
    );
    // The guest's DHCP broadcasts reached the gateway too: they are not for
    // Linux, and not spoofing either.
    let (stats, line) = be.stats()?;
    assert!(line.contains(" dropped_spoofed=0 "), "{stats}");
    Ok(())
}

#[test]
fn gateway_without_privileges_says_what_is_missing() -> Result<()> {
    // Drop CAP_NET_ADMIN with setpriv when it is available; skip otherwise.
    if Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("SKIPPED: setpriv is not installed");
        return Ok(());
    }
    let dir = scratch_dir("gateway-noperm")?;
    let backend = bin("ib-backend")?;
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_admin", "--"])
        .arg(&backend)
        .args(["run", "--gateway", "ibgwx=10.88.0.1/24", "--control"])
        .arg(dir.join("ctl"))
        .arg("--guest")
        .arg(format!("name=g1,socket={}", dir.join("g1.sock").display()))
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    Ok(())
}
