//! Issue 12: connected mode end to end between hosted guests on
//! `ib-backend` (sim provider, seats with `max-rc-conns`): a hashed 64 MiB
//! TCP transfer goes over RC, and a guest in datagram mode still talks to
//! one in connected mode.

use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::guard::cpu_ticks_of;
use qemu_tests::{scratch_dir, Backend, HarnessError, Hosted, Result};

const MIB: u64 = 1024 * 1024;

fn sha_of(line_prefix: &str, text: &str) -> Option<String> {
    text.lines()
        .find(|l| l.contains(line_prefix))
        .and_then(|l| l.split("sha256 ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
}

/// `key N` from a status page or the sender's "connected mode:" line.
fn number_after(text: &str, key: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| HarnessError(format!("no \"{key}\" in:\n{text}")))
}

/// The numbers of a client's "connected mode: P packets, B bytes sent
/// over RC, P packets, B bytes received" line: (packets, bytes) sent and
/// (packets, bytes) received over RC.
fn over_rc(out: &str) -> Result<((u64, u64), (u64, u64))> {
    let line = out
        .lines()
        .find(|l| l.starts_with("connected mode: "))
        .ok_or_else(|| HarnessError(format!("no connected-mode line in:\n{out}")))?;
    let bad = || HarnessError(format!("cannot read {line:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> Result<u64> { words.get(i).and_then(|w| w.parse().ok()).ok_or_else(bad) };
    Ok(((n(2)?, n(4)?), (n(9)?, n(11)?)))
}

/// (packets, bytes) a client sent over RC.
fn sent_over_rc(out: &str) -> Result<(u64, u64)> {
    over_rc(out).map(|(sent, _)| sent)
}

fn seats(dir: &std::path::Path, names: &[&str]) -> Vec<Seat> {
    names
        .iter()
        .map(|n| Seat::new(dir, n).with_max_rc_conns(8))
        .collect()
}

#[test]
fn a_64_mib_transfer_goes_over_rc() -> Result<()> {
    let dir = scratch_dir("cm-e2e")?;
    let be = Backend::start(&dir, &seats(&dir, &["g1", "g2", "g3"]), &[])?;
    let mut g2 = Hosted::serve_net(&dir, "g2", &be.socket("g2"), "ip=10.77.0.2/24 cm=on")?;
    let up = g2.wait_for("ibguest-hosted: 10.77.0.2/24 up", Duration::from_secs(5))?;
    assert!(up.contains("connected mode, MTU 65520"), "{up}");
    let g1 = |name: &str, args: &[&str]| {
        Hosted::run_net(
            &dir,
            name,
            &be.socket("g1"),
            "ip=10.77.0.1/24 cm=on",
            args,
            Duration::from_secs(120),
        )
    };

    let bytes = (64 * MIB).to_string();
    let out = g1("g1-send", &["send", "10.77.0.2:9", &bytes, "--seed", "12"])?;
    let sent = sha_of(&format!("sent {bytes} bytes"), &out)
        .ok_or_else(|| HarnessError(format!("no sha in {out}")))?;
    let line = g2.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    assert_eq!(
        sha_of("discard from", &line).unwrap_or_default(),
        sent,
        "{out}\n{line}"
    );
    // The sender put nearly all of it on RC (segments that fit the
    // datagram MTU, such as a short last one, go over UD), in packets far
    // above the datagram MTU (2044).
    let (packets, rc_bytes) = sent_over_rc(&out)?;
    assert!(rc_bytes >= 63 * MIB, "{out}");
    assert!(rc_bytes / packets.max(1) > 16 * 1024, "{out}");
    println!(
        "{}\n{}",
        out.lines().find(|l| l.starts_with("sent ")).unwrap_or(""),
        out.lines()
            .find(|l| l.starts_with("connected mode"))
            .unwrap_or("")
    );

    // The receiver's status page: connected mode on, the bulk came in
    // over RC, one passive connection accepted, nothing broken. Read by a
    // datagram-mode guest first (so the counters are the transfer's).
    let page = Hosted::run_net(
        &dir,
        "g3-stats",
        &be.socket("g3"),
        "ip=10.77.0.3/24",
        &["fetch", "http://10.77.0.2/stats"],
        Duration::from_secs(60),
    )?;
    assert!(page.contains("HTTP 200"), "{page}");
    assert_eq!(number_after(&page, "cm_enabled ")?, 1, "{page}");
    assert!(number_after(&page, "cm_rx_bytes ")? >= 63 * MIB, "{page}");
    assert!(number_after(&page, "cm_accepted ")? >= 1, "{page}");
    // The sender's process has exited, and both connections with it (its
    // own, and the one the receiver opened for its ACKs) went down with it
    // (the sim fabric's PeerGone): two breaks, nothing else.
    assert_eq!(number_after(&page, "cm_broken ")?, 2, "{page}");
    assert_eq!(number_after(&page, "cm_connects ")?, 1, "{page}");
    assert_eq!(number_after(&page, "cm_rx_dropped ")?, 0, "{page}");
    // Then by a new connected-mode guest on the sender's seat, right after
    // the sender left it: the page (larger than the datagram MTU) comes
    // back over a connection the server opens.
    let page = Hosted::run_net(
        &dir,
        "g1-stats",
        &be.socket("g1"),
        "ip=10.77.0.1/24 cm=on",
        &["fetch", "http://10.77.0.2/stats"],
        Duration::from_secs(60),
    )?;
    assert!(page.contains("HTTP 200"), "{page}");
    let (_, (packets, bytes)) = over_rc(&page)?;
    assert!(packets >= 1 && bytes > 2044, "{page}");
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// One guest in connected mode, the other in datagram mode (`cm=` not
/// given) on a seat that offers it: they ping, echo UDP and move TCP both
/// ways; nothing uses RC.
#[test]
fn a_datagram_mode_guest_still_talks_to_a_connected_one() -> Result<()> {
    let dir = scratch_dir("cm-mixed")?;
    let be = Backend::start(&dir, &seats(&dir, &["cm", "cm2", "dm", "dm2"]), &[])?;
    let cm_net = "ip=10.77.0.1/24 cm=on";
    let dm_net = "ip=10.77.0.2/24";
    let mut dm = Hosted::serve_net(&dir, "dm", &be.socket("dm"), dm_net)?;
    let up = dm.wait_for("ibguest-hosted: 10.77.0.2/24 up", Duration::from_secs(5))?;
    assert!(up.contains("datagram mode, MTU 2044"), "{up}");
    let run = |name: &str, seat: &str, net: &str, args: &[&str]| {
        Hosted::run_net(
            &dir,
            name,
            &be.socket(seat),
            net,
            args,
            Duration::from_secs(60),
        )
    };

    let out = run(
        "cm-ping",
        "cm",
        cm_net,
        &["ping", "10.77.0.2", "--count", "3"],
    )?;
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    let out = run(
        "cm-udp",
        "cm",
        cm_net,
        &["udp-echo", "10.77.0.2:7", "--count", "5", "--size", "1400"],
    )?;
    assert!(
        out.contains("5 sent, 5 echoed intact, 0 corrupted"),
        "{out}"
    );

    // Connected-mode sender to the datagram-only guest: all over UD.
    let bytes = (8 * MIB).to_string();
    let out = run(
        "cm-send",
        "cm",
        cm_net,
        &["send", "10.77.0.2:9", &bytes, "--seed", "3"],
    )?;
    let sent = sha_of(&format!("sent {bytes} bytes"), &out)
        .ok_or_else(|| HarnessError(format!("no sha in {out}")))?;
    let line = dm.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    assert_eq!(sha_of("discard from", &line).unwrap_or_default(), sent);
    assert_eq!(sent_over_rc(&out)?, (0, 0), "{out}");

    // And the other way: the datagram-only guest pings and echoes UDP off
    // a connected one and fetches its status page (bulk TCP this way: the
    // test below). On a seat of its own: a guest
    // attaching to "cm" right after the last client left it once never
    // joined the broadcast group.
    let _cm = Hosted::serve_net(&dir, "cm-serve", &be.socket("cm2"), cm_net)?;
    let out = run(
        "dm-ping",
        "dm2",
        dm_net,
        &["ping", "10.77.0.1", "--count", "3"],
    )?;
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    let out = run(
        "dm-udp",
        "dm2",
        dm_net,
        &["udp-echo", "10.77.0.1:7", "--count", "5", "--size", "1400"],
    )?;
    assert!(
        out.contains("5 sent, 5 echoed intact, 0 corrupted"),
        "{out}"
    );
    let page = run(
        "dm-stats",
        "dm2",
        dm_net,
        &["fetch", "http://10.77.0.1/stats"],
    )?;
    assert_eq!(number_after(&page, "cm_enabled ")?, 1, "{page}");
    assert_eq!(number_after(&page, "cm_rx_packets ")?, 0, "{page}");
    assert_eq!(number_after(&page, "cm_tx_packets ")?, 0, "{page}");
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// A datagram-only guest sends 8 MiB to a guest in connected mode: all of
/// it over UD (the sender's MSS), intact. This stalled after about 1.5 MiB
/// while the receiver's `poll_rc` handed a datagram completion back and
/// forth with its stash for ever.
#[test]
fn a_datagram_mode_sender_moves_8_mib_to_a_connected_receiver() -> Result<()> {
    let dir = scratch_dir("cm-mixed-8m")?;
    let be = Backend::start(&dir, &seats(&dir, &["cm", "dm", "dm2"]), &[])?;
    let mut cm = Hosted::serve_net(&dir, "cm", &be.socket("cm"), "ip=10.77.0.1/24 cm=on")?;
    let up = cm.wait_for("ibguest-hosted: 10.77.0.1/24 up", Duration::from_secs(5))?;
    assert!(up.contains("connected mode, MTU 65520"), "{up}");
    let dm = |name: &str, seat: &str, args: &[&str]| {
        Hosted::run_net(
            &dir,
            name,
            &be.socket(seat),
            "ip=10.77.0.2/24",
            args,
            Duration::from_secs(60),
        )
    };
    let bytes = (8 * MIB).to_string();
    let out = dm(
        "dm-send",
        "dm",
        &[
            "send",
            "10.77.0.1:9",
            &bytes,
            "--seed",
            "5",
            "--timeout",
            "40",
        ],
    )?;
    let sent = sha_of(&format!("sent {bytes} bytes"), &out)
        .ok_or_else(|| HarnessError(format!("no sha in {out}")))?;
    let line = cm.wait_for(&format!(": {bytes} bytes sha256"), Duration::from_secs(30))?;
    assert_eq!(sha_of("discard from", &line).unwrap_or_default(), sent);
    // The receiver still answers, and took all of it over UD.
    let page = dm("dm-stats", "dm2", &["fetch", "http://10.77.0.1/stats"])?;
    assert!(page.contains("HTTP 200"), "{page}");
    assert_eq!(number_after(&page, "cm_enabled ")?, 1, "{page}");
    assert_eq!(number_after(&page, "cm_rx_packets ")?, 0, "{page}");
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}

/// A connected-mode guest killed (SIGKILL) in the middle of a transfer
/// over RC: the back end reclaims its seat and tears its connection down,
/// so the receiver sees it break; receiver and worker then sleep; and a
/// new connected-mode guest on the seat moves data over RC again.
#[test]
fn a_killed_connected_guest_tears_its_connection_down() -> Result<()> {
    let dir = scratch_dir("cm-kill9")?;
    let be = Backend::start(&dir, &seats(&dir, &["srv", "cm", "probe"]), &[])?;
    let srv = Hosted::serve_net(&dir, "srv", &be.socket("srv"), "ip=10.77.0.2/24 cm=on")?;
    let cm_net = "ip=10.77.0.1/24 cm=on";
    let stats = |name: &str| -> Result<String> {
        let page = Hosted::run_net(
            &dir,
            name,
            &be.socket("probe"),
            "ip=10.77.0.3/24",
            &["fetch", "http://10.77.0.2/stats"],
            Duration::from_secs(60),
        )?;
        assert!(page.contains("HTTP 200"), "{page}");
        Ok(page)
    };
    let huge = (1u64 << 40).to_string();
    let sender = Hosted::spawn_net(
        &dir,
        "cm-send",
        &be.socket("cm"),
        cm_net,
        &["send", "10.77.0.2:9", &huge, "--raw"],
    )?;
    // Wait until the bulk flows over RC, then kill the sender.
    let mut page = String::new();
    for i in 0..100 {
        page = stats(&format!("probe-{i}"))?;
        if number_after(&page, "cm_rx_bytes ")? > 8 * MIB {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(number_after(&page, "cm_rx_bytes ")? > 8 * MIB, "{page}");
    assert_eq!(number_after(&page, "cm_broken ")?, 0, "{page}");
    sender.signal(9)?;
    drop(sender);
    be.wait_until("cm reclaimed", Duration::from_secs(10), |b| {
        b.state("cm").is_ok_and(|s| s == "waiting")
            && b.counter("cm", "reclaims").is_ok_and(|n| n >= 1)
    })?;
    // The receiver heard both connections with the sender (one each way)
    // break (the sim fabric's PeerGone) and let them go.
    let page = stats("probe-after")?;
    assert_eq!(number_after(&page, "cm_accepted ")?, 1, "{page}");
    assert_eq!(number_after(&page, "cm_broken ")?, 2, "{page}");
    assert_eq!(number_after(&page, "cm_rx_dropped ")?, 0, "{page}");
    // Nobody spins over what is left of it.
    std::thread::sleep(Duration::from_millis(200));
    let worker = be.worker_pid()?;
    let (g0, w0) = (srv.cpu_ticks()?, cpu_ticks_of(worker)?);
    std::thread::sleep(Duration::from_secs(5));
    let (g1, w1) = (srv.cpu_ticks()?, cpu_ticks_of(worker)?);
    assert!(g1 - g0 <= 10, "idle receiver used {} ticks in 5 s", g1 - g0);
    assert!(w1 - w0 <= 10, "idle worker used {} ticks in 5 s", w1 - w0);
    println!(
        "after the kill, idle over 5 s: receiver {} ticks, worker {}",
        g1 - g0,
        w1 - w0
    );
    // The seat serves again, over a new connection.
    let bytes = (8 * MIB).to_string();
    let out = Hosted::run_net(
        &dir,
        "cm-again",
        &be.socket("cm"),
        cm_net,
        &["send", "10.77.0.2:9", &bytes, "--seed", "4"],
        Duration::from_secs(60),
    )?;
    assert!(out.contains(&format!("sent {bytes} bytes")), "{out}");
    assert!(sent_over_rc(&out)?.1 >= 7 * MIB, "{out}");
    let page = stats("probe-last")?;
    assert_eq!(number_after(&page, "cm_accepted ")?, 2, "{page}");
    assert_eq!(be.counter("total", "violations")?, 0);
    Ok(())
}
