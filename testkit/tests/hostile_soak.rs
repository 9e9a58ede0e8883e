//! Issue 9, the reliability figures: hostile guests, one after another,
//! scribble over their own channel windows while an honest pair moves TCP
//! data on the same fabric. Each round is one hostile guest's life: it
//! connects, writes random bytes (mostly over the header and rings, now and
//! then anywhere) while the back half services it, until the back half
//! disconnects it or it has written `SCRIBBLES` times. Every round must end
//! in a counted violation, a guest close, or survival, never a panic; no
//! write may land outside the window (canary guards); every honest transfer
//! must arrive with the same SHA-256.
//!
//! `make test` runs 300 rounds (`hostile_rounds_short`); `make soak` runs
//! `SOAK_ROUNDS` (default 100000) and prints the figures.

use std::time::Instant;

use ibguest_testkit::apps::tcp_transfer_with;
use ibguest_testkit::guest::Channel;
use ibguest_testkit::{connect_channel_in, BoxError, GuestSpec, Net};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::{Layout, Window};
use smoltcp::time::Duration;
use verbs_shim::back::BackError;
use verbs_shim::sim::FaultConfig;

const GUARD: usize = 4096;
const CANARY: u8 = 0xa5;
/// Writes before a hostile guest that is still connected is let go.
const SCRIBBLES: usize = 200;
/// The honest pair's transfers, one after another.
const TRANSFER: usize = 4 << 20;

#[derive(Default, Debug)]
struct Tally {
    rounds: u64,
    violations: u64,
    guest_closes: u64,
    survived: u64,
    scribbles: u64,
    transfers: u64,
    bytes: u64,
}

/// One hostile guest: its guarded window and its back half.
struct Hostile {
    outer: Window,
    channel: Channel,
    layout: Layout,
    writes: usize,
}

impl Hostile {
    fn connect(net: &Net, spec: &GuestSpec) -> Result<Hostile, BoxError> {
        let len = Layout::window_len_for(spec.params)?;
        let outer = Window::new_heap(len + 2 * GUARD);
        outer.fill(0, GUARD, CANARY)?;
        outer.fill(GUARD + len, GUARD, CANARY)?;
        let inner = outer.sub(GUARD, len)?;
        let channel = connect_channel_in(&net.fabric, spec, inner)?;
        let layout = Layout::compute(spec.params, channel.0.len())?;
        Ok(Hostile {
            outer,
            channel,
            layout,
            writes: 0,
        })
    }

    fn guards_intact(&self) -> Result<bool, BoxError> {
        let len = self.channel.0.len();
        let mut head = vec![0u8; GUARD];
        let mut tail = vec![0u8; GUARD];
        self.outer.read_bytes(0, &mut head)?;
        self.outer.read_bytes(GUARD + len, &mut tail)?;
        Ok(head.iter().chain(tail.iter()).all(|&b| b == CANARY))
    }

    /// One scribble and one service pass: `Some(end)` when the back half
    /// has let the guest go.
    fn step(&mut self, rng: &mut ChaCha8Rng) -> Result<Option<BackError>, BoxError> {
        let (window, back, _front) = &mut self.channel;
        let end = if rng.gen_bool(0.9) {
            self.layout.buffers.start
        } else {
            window.len()
        };
        let offset = rng.gen_range(0..end);
        let len = rng.gen_range(1..=16).min(window.len() - offset);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        window.write_bytes(offset, &bytes)?;
        self.writes += 1;
        Ok(back.service().and_then(|_| back.arm().map(|_| ())).err())
    }
}

fn run_rounds(rounds: u64) -> Result<Tally, BoxError> {
    let mut net = Net::with_guests(2, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    let spec = GuestSpec::new(200);
    let mut rng = ChaCha8Rng::seed_from_u64(0x4057);
    let mut tally = Tally::default();
    let mut hostile: Option<Hostile> = None;
    let mut failure: Option<String> = None;
    let mut seed = 1u64;
    while tally.rounds < rounds && failure.is_none() {
        let report = tcp_transfer_with(
            &mut net,
            0,
            1,
            TRANSFER,
            seed,
            Duration::from_secs(3600),
            |net, _| {
                for _ in 0..8 {
                    if tally.rounds >= rounds || failure.is_some() {
                        return Ok(());
                    }
                    let h = match &mut hostile {
                        Some(h) => h,
                        None => hostile.insert(Hostile::connect(net, &spec)?),
                    };
                    let end = h.step(&mut rng)?;
                    tally.scribbles += 1;
                    let done = match end {
                        Some(BackError::Violation(_)) => {
                            tally.violations += 1;
                            true
                        }
                        Some(BackError::GuestClosed) => {
                            tally.guest_closes += 1;
                            true
                        }
                        Some(other) => {
                            failure =
                                Some(format!("round {}: unexpected end {other}", tally.rounds));
                            true
                        }
                        None if h.writes >= SCRIBBLES => {
                            tally.survived += 1;
                            true
                        }
                        None => false,
                    };
                    if done {
                        if !h.guards_intact()? {
                            failure = Some(format!(
                                "round {}: a write outside the window",
                                tally.rounds
                            ));
                        }
                        tally.rounds += 1;
                        hostile = None;
                    }
                }
                Ok(())
            },
        )?;
        if report.sent_sha256 != report.received_sha256 {
            failure = Some(format!("transfer {}: SHA-256 differs", tally.transfers));
        }
        tally.transfers += 1;
        tally.bytes += report.bytes as u64;
        seed += 1;
    }
    if let Some(f) = failure {
        return Err(f.into());
    }
    Ok(tally)
}

fn check(t: &Tally) {
    // Random scribbles over the rings break the protocol often (about 3 in
    // 10 guests within 200 writes; a write over a response area or an event
    // index is harmless): the attacks really land.
    assert!(
        t.violations * 5 > t.rounds,
        "only {} violations in {} rounds: {t:?}",
        t.violations,
        t.rounds
    );
    assert!(t.transfers >= 1 && t.bytes > 0, "{t:?}");
}

#[test]
fn hostile_rounds_short() -> Result<(), BoxError> {
    let t = run_rounds(300)?;
    check(&t);
    Ok(())
}

#[test]
#[ignore = "a soak: make soak"]
fn hostile_rounds_soak() -> Result<(), BoxError> {
    let rounds = std::env::var("SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let wall = Instant::now();
    let t = run_rounds(rounds)?;
    println!(
        "hostile soak: {} hostile guests ({} scribbles) in {:.1} s: {} disconnected for a \
         violation, {} closed, {} survived {SCRIBBLES} writes; meanwhile {} honest TCP \
         transfers, {} MiB, every SHA-256 equal; no write outside a window",
        t.rounds,
        t.scribbles,
        wall.elapsed().as_secs_f64(),
        t.violations,
        t.guest_closes,
        t.survived,
        t.transfers,
        t.bytes >> 20,
    );
    check(&t);
    Ok(())
}
