//! Double fetch (XSA-155): the guest rewrites its descriptors, slots and
//! header while the back half is reading them, from another thread. The
//! back half copies each descriptor out once and validates the copy, so
//! whatever it reads it either posts a valid request or disconnects the
//! guest with a named violation. It never panics, never writes outside the
//! window, and once closed stays closed with the same error.
//!
//! Each round: a guest thread posts valid sends to a peer and, right after
//! each batch, scribbles random bytes over the TX/RX/control request
//! arrays, its ring indices, its header fields and its TX slots; the main
//! thread services the back half (and the peer) as fast as it can, with a
//! TX filter installed that reads each frame's head as it is rewritten.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ibguest_testkit::{connect_channel, connect_channel_in, BoxError, GuestSpec, SimFront};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::{Layout, Window};
use verbs_shim::back::{BackError, SenderPort, TxFilter, TxVerdict, FILTER_HEAD_LEN};
use verbs_shim::sim::{FaultConfig, SimFabric};
use verbs_shim::{Completion, Gid, QKey, Qpn, UdDest, Verbs};

const GUARD: usize = 64 * 1024;
const CANARY: u8 = 0xa5;
const ROUNDS: u64 = 12;
const ROUND_TIME: Duration = Duration::from_millis(150);

fn guarded_window(len: usize) -> Result<(Window, Window), BoxError> {
    let outer = Window::new_heap(len + 2 * GUARD);
    outer.fill(0, GUARD, CANARY)?;
    outer.fill(GUARD + len, GUARD, CANARY)?;
    let inner = outer.sub(GUARD, len)?;
    Ok((outer, inner))
}

fn guards_intact(outer: &Window, inner_len: usize) -> Result<bool, BoxError> {
    let mut head = vec![0u8; GUARD];
    let mut tail = vec![0u8; GUARD];
    outer.read_bytes(0, &mut head)?;
    outer.read_bytes(GUARD + inner_len, &mut tail)?;
    Ok(head.iter().chain(tail.iter()).all(|&b| b == CANARY))
}

/// A TX filter that reads the frame head under the rewrites and drops
/// frames by their first byte, so both of its outcomes race the guest.
struct FirstByteFilter;

impl TxFilter for FirstByteFilter {
    fn check(&mut self, _sender: &SenderPort, head: &[u8], frame_len: usize) -> TxVerdict {
        assert!(head.len() <= FILTER_HEAD_LEN && head.len() <= frame_len);
        match head.first() {
            Some(b) if b & 1 == 1 => TxVerdict::Drop,
            _ => TxVerdict::Pass,
        }
    }
}

/// Where the guest may scribble: everything the guest owns; in every third
/// round only its TX slots (the data, so the channel survives).
fn guest_owned(
    layout: &Layout,
    slot_size: usize,
    tx_slots: usize,
    seed: u64,
) -> Vec<std::ops::Range<usize>> {
    let slots = layout.buffers.start..layout.buffers.start + tx_slots * slot_size;
    if seed.is_multiple_of(3) {
        return vec![slots];
    }
    vec![
        128..152, // the guest's header fields
        layout.ctrl.clone(),
        layout.tx.clone(),
        layout.rx.clone(),
        slots,
    ]
}

/// The hostile guest: valid sends, each batch followed by a burst of
/// rewrites. Ends when `stop` is set or the channel is gone.
fn hostile_guest(
    mut front: SimFront,
    window: Window,
    targets: Vec<std::ops::Range<usize>>,
    peer: (Gid, Qpn),
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some((tx, _rx)) = front.take_slots() else {
        return;
    };
    let mut free: Vec<_> = tx.collect();
    if front.resolve(peer.0).and_then(|()| front.flush()).is_err() {
        return;
    }
    let mut handle = None;
    while handle.is_none() && !stop.load(Ordering::Relaxed) {
        match front.poll_cq() {
            Ok(Some(Completion::Path { result: Ok(h), .. })) => handle = Some(h),
            Ok(_) => thread::yield_now(),
            Err(_) => return,
        }
    }
    let Some(handle) = handle else {
        return;
    };
    let dest = UdDest {
        handle,
        qpn: peer.1,
        qkey: QKey::IPOIB_DEFAULT,
    };
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..rng.gen_range(1..8) {
            let Some(slot) = free.pop() else {
                break;
            };
            let len = rng.gen_range(1..2048);
            if let Err(e) = front.post_send(slot, len, &dest) {
                free.push(e.slot);
                break;
            }
        }
        if front.flush().is_err() {
            return;
        }
        // Race the back end's read of what was just published.
        for _ in 0..rng.gen_range(1..64) {
            let range = &targets[rng.gen_range(0..targets.len())];
            let at = rng.gen_range(range.clone());
            let len = rng.gen_range(1..=8).min(range.end - at);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = window.write_bytes(at, &bytes);
        }
        loop {
            match front.poll_cq() {
                Ok(Some(Completion::Send { slot, .. })) => free.push(slot),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[test]
fn rewriting_descriptors_while_the_back_half_reads_them() -> Result<(), BoxError> {
    let mut closed = 0;
    let mut survived = 0;
    for seed in 0..ROUNDS {
        let fabric = SimFabric::new(FaultConfig::NONE);
        let (_wp, mut back_peer, mut peer) = connect_channel(&fabric, &GuestSpec::new(2))?;
        let (_, mut peer_rx) = peer.take_slots().ok_or("peer slots")?;
        let spec = GuestSpec::new(1);
        let len = Layout::window_len_for(spec.params)?;
        let (outer, inner) = guarded_window(len)?;
        let (_w, mut back, front) = connect_channel_in(&fabric, &spec, inner.clone())?;
        let layout = Layout::compute(spec.params, len)?;
        let targets = guest_owned(
            &layout,
            spec.params.slot_size as usize,
            usize::from(spec.params.tx_slots),
            seed,
        );
        back.set_tx_filter(Some(Box::new(FirstByteFilter)));
        let peer_addr = (peer.port_attr().gid, peer.port_attr().qpn);
        let stop = Arc::new(AtomicBool::new(false));
        let guest = {
            let (window, stop) = (inner.clone(), stop.clone());
            thread::spawn(move || hostile_guest(front, window, targets, peer_addr, seed, stop))
        };
        let mut first_error: Option<BackError> = None;
        let started = Instant::now();
        while started.elapsed() < ROUND_TIME {
            let result = back.service().and_then(|_| back.arm());
            match (first_error, result) {
                (None, Err(e)) => first_error = Some(e),
                (Some(e), r) => assert_eq!(r, Err(e), "the back half did not stay closed"),
                (None, Ok(_)) => {}
            }
            // The peer keeps receiving, so sends complete.
            for slot in peer_rx.by_ref() {
                let _ = peer.post_recv(slot);
            }
            let _ = peer.flush();
            let _ = back_peer.service();
            while let Ok(Some(_)) = peer.poll_cq() {}
        }
        stop.store(true, Ordering::Relaxed);
        guest.join().map_err(|_| "the guest thread panicked")?;
        assert!(guards_intact(&outer, len)?, "a write outside the window");
        let stats = *back.stats();
        assert!(stats.tx_completions <= stats.tx_requests, "{stats:?}");
        if seed.is_multiple_of(3) {
            assert!(
                stats.tx_filtered > 0 && stats.tx_completions > 0,
                "{stats:?}"
            );
        }
        match first_error {
            Some(BackError::Violation(_)) | Some(BackError::GuestClosed) => closed += 1,
            None => survived += 1,
            Some(e) => panic!("unexpected end: {e}"),
        }
    }
    eprintln!("{ROUNDS} rounds: {closed} disconnected the guest, {survived} survived");
    assert!(closed > 0, "the rewrites never reached the back half");
    assert!(
        survived > 0,
        "rewriting only slot data disconnected the guest"
    );
    Ok(())
}
