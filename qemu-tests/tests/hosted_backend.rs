//! Issue 3, must-show 1, 3 and 4: one `ib-backend` (sim provider) with
//! hosted guests as separate processes, attached through ivshmem-doorbell
//! sockets exactly as QEMU attaches.

use std::time::Duration;

use qemu_tests::backend::Seat;
use qemu_tests::guard::cpu_ticks_of;
use qemu_tests::{scratch_dir, Backend, Hosted, Result};

const PING_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn hosted_guests_ping_and_sleep_when_idle() -> Result<()> {
    let dir = scratch_dir("ping_idle")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")], &[])?;
    let g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    let out = Hosted::run(
        &dir,
        "g1",
        &be.socket("g1"),
        "10.77.0.1/24",
        &["ping", "10.77.0.2", "--count", "3"],
        PING_TIMEOUT,
    )?;
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    // The back end counted the traffic and the interrupts it forwarded.
    assert!(be.counter("g2", "rx_packets")? >= 4);
    assert!(be.counter("g2", "interrupts")? >= 2);
    assert!(be.counter("g2", "doorbells")? >= 2);
    assert_eq!(be.counter("total", "violations")?, 0);
    // Idle: the guest and the back end sleep on their eventfds. Under 2% of
    // one core over 5 s is at most 10 clock ticks.
    let worker = be.worker_pid()?;
    let (g0, b0, w0) = (
        g2.cpu_ticks()?,
        be.guard.cpu_ticks()?,
        cpu_ticks_of(worker)?,
    );
    std::thread::sleep(Duration::from_secs(5));
    let (g1, b1, w1) = (
        g2.cpu_ticks()?,
        be.guard.cpu_ticks()?,
        cpu_ticks_of(worker)?,
    );
    assert!(g1 - g0 <= 10, "idle guest used {} ticks in 5 s", g1 - g0);
    assert!(
        b1 - b0 <= 10,
        "idle supervisor used {} ticks in 5 s",
        b1 - b0
    );
    assert!(w1 - w0 <= 10, "idle worker used {} ticks in 5 s", w1 - w0);
    println!(
        "idle over 5 s: guest {} ticks, supervisor {}, worker {}",
        g1 - g0,
        b1 - b0,
        w1 - w0
    );
    Ok(())
}

#[test]
fn busy_polling_guests_and_back_end_spin_only_within_their_budget() -> Result<()> {
    // The longest budget there is (10 ms) everywhere: during the exchanges
    // nobody sleeps, and 10 ms after the last one everybody does.
    let dir = scratch_dir("busy_poll")?;
    let busy = ["--busy-poll-us", "10000"];
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")], &busy)?;
    let g2 = Hosted::serve_with(&dir, "g2", &be.socket("g2"), "10.77.0.2/24", &busy)?;
    // The back end found work by polling, and the serving guest, polling
    // too, asked for fewer interrupts than it received datagrams (without
    // busy polling it takes about one each; with it, next to none: 547
    // for 20102 on a quiet machine). A spinner that keeps losing its CPU
    // backs off by design (netcore's BusyPoll), so on a machine busy with
    // other work a round gets more (13484 for 20102 was seen): up to three
    // rounds, and one must stay under nine tenths.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let irq0 = be.counter("g2", "interrupts")?;
        let rx0 = be.counter("g2", "rx_packets")?;
        let out = Hosted::run(
            &dir,
            "g1",
            &be.socket("g1"),
            "10.77.0.1/24",
            &[&busy[..], &["udp-rr", "10.77.0.2:7", "--count", "20000"]].concat(),
            PING_TIMEOUT,
        )?;
        assert!(out.contains("udp-rr: 20000 round trips"), "{out}");
        let irqs = be.counter("g2", "interrupts")? - irq0;
        let received = be.counter("g2", "rx_packets")? - rx0;
        assert!(received >= 20000);
        rounds.push((irqs, received));
        if irqs < received * 9 / 10 {
            break;
        }
    }
    assert!(be.counter("g2", "busy_polled")? > 0);
    let (irqs, received) = *rounds.last().expect("a round");
    assert!(
        irqs < received * 9 / 10,
        "interrupts and datagrams per round: {rounds:?}"
    );
    // Then idle: no spinning left.
    std::thread::sleep(Duration::from_millis(100));
    let worker = be.worker_pid()?;
    let (g0, w0) = (g2.cpu_ticks()?, cpu_ticks_of(worker)?);
    std::thread::sleep(Duration::from_secs(5));
    let (g1, w1) = (g2.cpu_ticks()?, cpu_ticks_of(worker)?);
    assert!(g1 - g0 <= 10, "idle guest used {} ticks in 5 s", g1 - g0);
    assert!(w1 - w0 <= 10, "idle worker used {} ticks in 5 s", w1 - w0);
    println!(
        "after busy polling, idle over 5 s: guest {} ticks, worker {}; {irqs} interrupts to g2 for {received} datagrams",
        g1 - g0,
        w1 - w0
    );
    Ok(())
}

#[test]
fn killed_guest_is_reclaimed_and_the_seat_serves_again() -> Result<()> {
    let dir = scratch_dir("kill9")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1"), Seat::new(&dir, "g2")], &[])?;
    let g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    be.wait_until("g2 connected", Duration::from_secs(10), |b| {
        b.state("g2").is_ok_and(|s| s == "connected")
    })?;
    g2.signal(9)?;
    drop(g2);
    be.wait_until("g2 reclaimed", Duration::from_secs(10), |b| {
        b.state("g2").is_ok_and(|s| s == "waiting")
            && b.counter("g2", "reclaims").is_ok_and(|n| n >= 1)
    })?;
    // The seat takes a new guest, which works.
    let _g2 = Hosted::serve(&dir, "g2-again", &be.socket("g2"), "10.77.0.2/24")?;
    let out = Hosted::run(
        &dir,
        "g1",
        &be.socket("g1"),
        "10.77.0.1/24",
        &["ping", "10.77.0.2", "--count", "2"],
        PING_TIMEOUT,
    )?;
    assert!(out.contains("2 sent, 2 answered"), "{out}");
    assert_eq!(be.counter("g2", "connects")?, 2);
    Ok(())
}

#[test]
fn second_connection_to_a_busy_seat_is_refused() -> Result<()> {
    let dir = scratch_dir("refuse")?;
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1")], &[])?;
    let _g1 = Hosted::serve(&dir, "g1", &be.socket("g1"), "10.77.0.1/24")?;
    let err = Hosted::run(
        &dir,
        "intruder",
        &be.socket("g1"),
        "10.77.0.9/24",
        &["ping", "10.77.0.1", "--count", "1"],
        PING_TIMEOUT,
    );
    assert!(err.is_err(), "a second guest on one seat must not attach");
    be.wait_until("refusal counted", Duration::from_secs(5), |b| {
        b.counter("g1", "refused").is_ok_and(|n| n >= 1)
    })?;
    assert_eq!(be.state("g1")?, "connected");
    Ok(())
}
