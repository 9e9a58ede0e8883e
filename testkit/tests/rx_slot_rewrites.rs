//! A back end that keeps rewriting a guest's RX slots while the guest
//! parses them (the slots are handed to `ipoib` and smoltcp as `&[u8]` over
//! shared memory, so a torn read is possible). The guest may drop or
//! misread those packets, but it must never panic, and once the rewriting
//! stops it works as before. See CHANNEL.md, "Trust model".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use ibguest_testkit::apps::{ping, ping_with};
use ibguest_testkit::{BoxError, GuestSpec, Net};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::{Layout, Window};
use smoltcp::time::Duration;
use verbs_shim::sim::FaultConfig;
use verbs_shim::GRH_LEN;

/// Bytes at the start of each RX slot that the scribbler aims at: the GRH
/// area, the IPoIB header and the IPv4/ICMP/ARP headers (or the IPv6
/// header and its fragment header or neighbour discovery) behind it (the
/// scribbler skips the GRH area, which only the source-GID check reads).
const HEADER_SPAN: usize = GRH_LEN + 4 + 64;

/// Rewrites random header bytes of the RX slots until `stop` is set.
fn scribble(
    window: Window,
    rx_slots: std::ops::Range<usize>,
    slot_size: usize,
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let slots = rx_slots.len() / slot_size;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let slot = rng.gen_range(0..slots);
            let at = rx_slots.start + slot * slot_size + rng.gen_range(GRH_LEN..HEADER_SPAN);
            let byte: u8 = rng.gen();
            if window.write_bytes(at, &[byte]).is_ok() {
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        thread::yield_now();
    }
}

#[test]
fn rewriting_rx_slots_during_parsing_never_panics_the_guest() -> Result<(), BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    // Few RX slots, so that the scribbler often hits one being parsed.
    let mut victim = GuestSpec::new(1).with_ip6();
    victim.params.rx_order = 3;
    victim.params.rx_slots = 8;
    net.add(victim)?;
    net.add(GuestSpec::new(2).with_ip6())?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    let victim = &net.guests[0];
    let params = victim.spec.params;
    let layout = Layout::compute(params, victim.window.len())?;
    let slot_size = params.slot_size as usize;
    let rx_start = layout.buffers.start + usize::from(params.tx_slots) * slot_size;
    let rx_slots = rx_start..rx_start + usize::from(params.rx_slots) * slot_size;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let scribbler = {
        let (window, stop, writes) = (victim.window.clone(), stop.clone(), writes.clone());
        thread::spawn(move || scribble(window, rx_slots, slot_size, stop, writes))
    };
    let ip1 = net.guests[0].spec.ipv4();
    let ip2 = net.guests[1].spec.ipv4();
    let ip6 = |g: usize| net.guests[g].spec.ip6.map(|c| c.address());
    let (ip6_1, ip6_2) = (ip6(0).ok_or("ip6")?, ip6(1).ok_or("ip6")?);
    // Larger than the MTU: fragments, and the reassembly, under rewriting.
    let big = vec![0x5a; 3000];
    let mut answered = 0;
    let started = std::time::Instant::now();
    let mut seq = 0u16;
    while started.elapsed() < std::time::Duration::from_secs(3) {
        seq = seq.wrapping_add(1);
        // Guest 1 receives both the requests and the replies.
        answered += u32::from(ping(&mut net, 1, ip1, seq, Duration::from_millis(200)).is_ok());
        answered += u32::from(ping(&mut net, 0, ip2, seq, Duration::from_millis(200)).is_ok());
        // IPv6: neighbour discovery, and fragments both ways.
        let limit = Duration::from_millis(200);
        answered += u32::from(ping(&mut net, 1, ip6_1, seq, limit).is_ok());
        answered += u32::from(ping_with(&mut net, 0, ip6_2, seq, &big, limit).is_ok());
    }
    stop.store(true, Ordering::Relaxed);
    scribbler.join().map_err(|_| "scribbler panicked")?;
    let stats = net.guests[0].device.stats();
    eprintln!(
        "{} byte rewrites; {seq} ping rounds, {answered} answered; guest 1: {stats:?}",
        writes.load(Ordering::Relaxed)
    );
    assert!(writes.load(Ordering::Relaxed) > 10_000);
    // The rewrites did reach packets being parsed.
    let hit = stats.rx_drops.malformed + stats.rx_drops.unknown_ethertype;
    assert!(hit > 0 || answered < 4 * u32::from(seq), "{stats:?}");
    // Quiet again: the guest still works. Ping as a user would, once a
    // second: an ARP resolution that the rewriting spoiled may still be
    // running when it stops (up to 3 requests, 1 s apart), and when it
    // fails it drops what was queued behind it, as Linux does. The next
    // echo request starts a fresh one.
    for (from, to) in [
        (1, ip1.into()),
        (0, ip2.into()),
        (1, smoltcp::wire::IpAddress::Ipv6(ip6_1)),
        (0, smoltcp::wire::IpAddress::Ipv6(ip6_2)),
    ] {
        let mut result = Err("no attempt".into());
        for _ in 0..5 {
            seq = seq.wrapping_add(1);
            result = ping(&mut net, from, to, seq, Duration::from_secs(1));
            if result.is_ok() {
                break;
            }
        }
        result.map_err(|e| format!("guest {from} never reached {to} again: {e}"))?;
    }
    Ok(())
}
