//! Issue 3, must-show 2 and 3: eight hosted guests in two partitions, and a
//! hostile client that scribbles over its window and floods doorbells.

use std::io::Read;
use std::time::{Duration, Instant};

use qemu_tests::backend::Seat;
use qemu_tests::{scratch_dir, Backend, Hosted, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::LayoutParams;
use verbs_shim::front::FrontHca;
use verbs_shim::notify::Notify;

fn ping_ok(dir: &std::path::Path, be: &Backend, from: &str, ip: &str, target: &str) -> bool {
    Hosted::run(
        dir,
        &format!("{from}-ping-{target}"),
        &be.socket(from),
        ip,
        &["ping", target, "--count", "1", "--timeout", "3"],
        Duration::from_secs(30),
    )
    .is_ok()
}

#[test]
fn eight_guests_in_two_partitions() -> Result<()> {
    let dir = scratch_dir("partitions")?;
    // g1..g4 in partition 1, g5..g8 in partition 2.
    let seats: Vec<Seat> = (1..=8)
        .map(|i| Seat::new(&dir, &format!("g{i}")).with_pkey(if i <= 4 { 0x8001 } else { 0x8002 }))
        .collect();
    let be = Backend::start(&dir, &seats, &[])?;
    // Six serve; g1 and g5 are the clients.
    let mut servers = Vec::new();
    for i in [2, 3, 4, 6, 7, 8] {
        let name = format!("g{i}");
        servers.push(Hosted::serve(
            &dir,
            &name,
            &be.socket(&name),
            &format!("10.77.0.{i}/24"),
        )?);
    }
    for (from, ip, same, other) in [
        (
            "g1",
            "10.77.0.1/24",
            ["10.77.0.2", "10.77.0.4"],
            "10.77.0.6",
        ),
        (
            "g5",
            "10.77.0.5/24",
            ["10.77.0.7", "10.77.0.8"],
            "10.77.0.3",
        ),
    ] {
        for target in same {
            assert!(
                ping_ok(&dir, &be, from, ip, target),
                "{from} -> {target} within its partition"
            );
        }
        assert!(
            !ping_ok(&dir, &be, from, ip, other),
            "{from} -> {other} crossed partitions"
        );
    }
    let stats = be.stats()?;
    assert_eq!(be.counter("total", "violations")?, 0, "{stats}");
    assert!(stats.contains("guest g6 state=connected qpn="), "{stats}");
    assert!(stats.contains("pkey=0x8002"), "{stats}");
    Ok(())
}

#[test]
fn hostile_client_is_disconnected_while_others_keep_working() -> Result<()> {
    let dir = scratch_dir("hostile")?;
    let be = Backend::start(
        &dir,
        &[
            Seat::new(&dir, "g1"),
            Seat::new(&dir, "g2"),
            Seat::new(&dir, "evil"),
        ],
        &[],
    )?;
    let _g2 = Hosted::serve(&dir, "g2", &be.socket("g2"), "10.77.0.2/24")?;
    // The hostile guest speaks the handshake properly, then misbehaves.
    let mut conn = ivshmem::client::connect(&be.socket("evil"), 1, Duration::from_secs(10))
        .map_err(|e| qemu_tests::HarnessError(e.to_string()))?;
    let window = conn.shm.window();
    let doorbell = conn
        .peers
        .get(&0)
        .and_then(|v| v.first())
        .ok_or_else(|| qemu_tests::HarnessError("no doorbell".into()))?
        .try_clone()?;
    struct Bell(ivshmem::EventFd);
    impl Notify for Bell {
        fn notify(&self) {
            let _ = self.0.notify();
        }
    }
    let params = LayoutParams::DEFAULT;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut front = loop {
        match FrontHca::attach(window.clone(), params, Bell(doorbell.try_clone()?)) {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(qemu_tests::HarnessError(format!("attach: {e}"))),
        }
    };
    while !front
        .poll_connected()
        .map_err(|e| qemu_tests::HarnessError(e.to_string()))?
    {
        assert!(Instant::now() < deadline, "evil never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile a healthy pair pings.
    let dir2 = dir.clone();
    let socket1 = be.socket("g1");
    let pinger = std::thread::spawn(move || {
        Hosted::run(
            &dir2,
            "g1",
            &socket1,
            "10.77.0.1/24",
            &["ping", "10.77.0.2", "--count", "10"],
            Duration::from_secs(60),
        )
    });
    // Scribble over the header and rings, and flood the doorbell.
    let layout = ring::Layout::compute(params, window.len())
        .map_err(|e| qemu_tests::HarnessError(e.to_string()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut disconnected = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for _ in 0..64 {
            let offset = rng.gen_range(0..layout.buffers.start);
            let len = rng.gen_range(1..=8).min(layout.buffers.start - offset);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = window.write_bytes(offset, &bytes);
            let _ = doorbell.notify();
        }
        let mut buf = [0u8; 8];
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                disconnected = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert!(
        disconnected,
        "the back end never disconnected the hostile guest\n{}",
        be.stats()?
    );
    let out = pinger
        .join()
        .map_err(|_| qemu_tests::HarnessError("pinger panicked".into()))??;
    assert!(out.contains("10 sent, 10 answered"), "{out}");
    assert!(be.counter("evil", "violation_disconnects")? >= 1);
    assert!(be.counter("evil", "violations")? >= 1);
    assert_eq!(
        be.counter("g1", "violations")? + be.counter("g2", "violations")?,
        0
    );
    let log = be.guard.output();
    assert!(
        log.contains("guest evil:") && log.contains("disconnecting it"),
        "{}",
        be.guard.tail(20)
    );
    Ok(())
}
