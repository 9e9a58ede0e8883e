//! Must-show 4: a hostile guest writing into its rings and header. The back
//! half counts the violation and disconnects that guest, never panics, never
//! touches memory outside the window, and the other guests carry on.

use ibguest_testkit::apps::{ping, tcp_transfer, udp_socket};
use ibguest_testkit::{connect_channel, connect_channel_in, BoxError, GuestSpec, Net};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::desc::{CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse};
use ring::{FrontRing, Layout, Window};
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::back::{BackError, Violation, ViolationKind};
use verbs_shim::sim::FaultConfig;

const GUARD: usize = 64 * 1024;
const CANARY: u8 = 0xa5;

fn healthy_pair() -> Result<Net, BoxError> {
    let mut net = Net::with_guests(2, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    Ok(net)
}

/// A channel window with canary-filled guard regions on both sides.
fn guarded_window(spec: &GuestSpec) -> Result<(Window, Window), BoxError> {
    let len = Layout::window_len_for(spec.params)?;
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

#[test]
fn random_scribbles_disconnect_only_the_hostile_guest() -> Result<(), BoxError> {
    let mut net = healthy_pair()?;
    let b_ip = net.guests[1].spec.ipv4();
    ping(&mut net, 0, b_ip, 1, Duration::from_secs(5))?;
    let sink = udp_socket(&mut net, 1, 9)?;
    let source = udp_socket(&mut net, 0, 40001)?;
    let dest = IpEndpoint::new(IpAddress::Ipv4(b_ip), 9);
    let mut sent = 0;
    let mut received = 0;
    let mut violations = 0;
    let mut closed_by_guest = 0;
    let mut survived = 0;
    for seed in 0..40u64 {
        let spec = GuestSpec::new(100 + seed as u8);
        let (outer, window) = guarded_window(&spec)?;
        let (window, mut back, front) = connect_channel_in(&net.fabric, &spec, window)?;
        drop(front);
        let layout = Layout::compute(spec.params, window.len())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut closed = None;
        for _ in 0..2000 {
            // Scribble: mostly over the header and rings, sometimes anywhere.
            let end = if rng.gen_bool(0.9) {
                layout.buffers.start
            } else {
                window.len()
            };
            let offset = rng.gen_range(0..end);
            let len = rng.gen_range(1..=16).min(window.len() - offset);
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            window.write_bytes(offset, &bytes)?;
            let result = back.service().and_then(|_| back.arm().map(|_| 0));
            // The healthy guests keep talking meanwhile.
            if net.guests[0]
                .sockets
                .get_mut::<udp::Socket>(source)
                .send_slice(&seed.to_le_bytes(), dest)
                .is_ok()
            {
                sent += 1;
            }
            net.round()?;
            net.advance(true);
            let socket = net.guests[1].sockets.get_mut::<udp::Socket>(sink);
            while socket.recv().is_ok() {
                received += 1;
            }
            if let Err(e) = result {
                closed = Some(e);
                break;
            }
        }
        // Not every scribble breaks the protocol (a write over the response
        // area or an event index is harmless), so a guest may survive.
        match closed {
            Some(BackError::Violation(_)) => {
                violations += 1;
                assert_eq!(back.stats().total_violations(), 1, "seed {seed}");
            }
            Some(BackError::GuestClosed) => closed_by_guest += 1,
            Some(other) => panic!("seed {seed}: unexpected end {other}"),
            None => survived += 1,
        }
        if closed.is_some() {
            // Once closed, it stays closed, and its port is gone.
            assert!(back.service().is_err());
            assert!(!back.is_connected());
            assert!(back.provider().is_none());
        }
        assert!(
            guards_intact(&outer, window.len())?,
            "seed {seed}: wrote outside the window"
        );
    }
    eprintln!(
        "hostile: {violations} violations, {closed_by_guest} guest closes, {survived} survived"
    );
    assert!(
        violations >= 30,
        "{violations} violations, {closed_by_guest} guest closes, {survived} survived"
    );
    // Let the last datagrams land, then check nothing was lost.
    net.run_for(Duration::from_millis(50))?;
    let socket = net.guests[1].sockets.get_mut::<udp::Socket>(sink);
    while socket.recv().is_ok() {
        received += 1;
    }
    assert_eq!(received, sent);
    // The healthy pair still moves data with integrity.
    let report = tcp_transfer(&mut net, 0, 1, 1 << 20, 3, Duration::from_secs(60))?;
    assert_eq!(report.sent_sha256, report.received_sha256);
    Ok(())
}

/// Connects a channel, then returns the back half and raw request rings the
/// test can fill with anything.
struct Raw {
    back: verbs_shim::back::BackHalf<verbs_shim::sim::SimPort, verbs_shim::notify::NoNotify>,
    tx: FrontRing<TxRequest, TxResponse>,
    rx: FrontRing<RxRequest, RxResponse>,
    ctrl: FrontRing<CtrlRequest, CtrlResponse>,
}

fn raw_guest(net: &Net, n: u8) -> Result<Raw, BoxError> {
    let spec = GuestSpec::new(n);
    let (window, back, front) = connect_channel(&net.fabric, &spec)?;
    drop(front);
    let layout = Layout::compute(spec.params, window.len())?;
    let p = spec.params;
    let sub = |r: &std::ops::Range<usize>| window.sub(r.start, r.len());
    Ok(Raw {
        back,
        tx: FrontRing::attach(sub(&layout.tx)?, p.tx_order)?,
        rx: FrontRing::attach(sub(&layout.rx)?, p.rx_order)?,
        ctrl: FrontRing::attach(sub(&layout.ctrl)?, p.ctrl_order)?,
    })
}

fn expect_violation(raw: &mut Raw, kind: ViolationKind) {
    match raw.back.service() {
        Err(BackError::Violation(v)) => assert_eq!(v.kind(), kind, "{v}"),
        other => panic!("expected a {kind:?} violation, got {other:?}"),
    }
    assert_eq!(raw.back.stats().violations_of(kind), 1);
    assert!(raw.back.closed_reason().is_some());
}

#[test]
fn each_kind_of_bad_descriptor_is_named_and_counted() -> Result<(), BoxError> {
    let net = healthy_pair()?;
    // A handle never issued.
    let mut raw = raw_guest(&net, 51)?;
    let _ = raw.tx.push_request(&TxRequest {
        slot: 0,
        len: 100,
        dest: 7,
        ..Default::default()
    });
    raw.tx.publish_requests();
    expect_violation(&mut raw, ViolationKind::BadHandle);

    // Length beyond the slot.
    let mut raw = raw_guest(&net, 52)?;
    let _ = raw.tx.push_request(&TxRequest {
        slot: 0,
        len: 1 << 20,
        ..Default::default()
    });
    raw.tx.publish_requests();
    expect_violation(&mut raw, ViolationKind::BadLength);

    // The same RX slot posted twice.
    let mut raw = raw_guest(&net, 53)?;
    let _ = raw.rx.push_request(&RxRequest {
        slot: 3,
        ..Default::default()
    });
    let _ = raw.rx.push_request(&RxRequest {
        slot: 3,
        ..Default::default()
    });
    raw.rx.publish_requests();
    expect_violation(&mut raw, ViolationKind::SlotNotOwned);

    // RX slot out of range.
    let mut raw = raw_guest(&net, 54)?;
    let _ = raw.rx.push_request(&RxRequest {
        slot: 9999,
        ..Default::default()
    });
    raw.rx.publish_requests();
    expect_violation(&mut raw, ViolationKind::SlotOutOfRange);

    // An unknown control op.
    let mut raw = raw_guest(&net, 55)?;
    let _ = raw.ctrl.push_request(&CtrlRequest {
        op: 77,
        ..Default::default()
    });
    raw.ctrl.publish_requests();
    expect_violation(&mut raw, ViolationKind::UnknownCtrlOp);

    // A controlled Q_Key (high bit set) is not the guest's to use.
    let mut raw = raw_guest(&net, 56)?;
    let _ = raw.tx.push_request(&TxRequest {
        slot: 0,
        len: 100,
        qkey: 0x8000_0001,
        ..Default::default()
    });
    raw.tx.publish_requests();
    expect_violation(&mut raw, ViolationKind::BadAddress);

    // Reserved bits set.
    let mut raw = raw_guest(&net, 57)?;
    let _ = raw.tx.push_request(&TxRequest {
        slot: 0,
        len: 100,
        flags: 4,
        ..Default::default()
    });
    raw.tx.publish_requests();
    expect_violation(&mut raw, ViolationKind::ReservedBits);
    Ok(())
}

#[test]
fn ring_index_overflow_disconnects() -> Result<(), BoxError> {
    let net = healthy_pair()?;
    let spec = GuestSpec::new(60);
    let (window, mut back, front) = connect_channel(&net.fabric, &spec)?;
    drop(front);
    let layout = Layout::compute(spec.params, window.len())?;
    // req_prod of the RX ring jumps 1000 ahead of a 128-entry ring.
    window.store_u32(layout.rx.start, 1000, std::sync::atomic::Ordering::Release)?;
    match back.service() {
        Err(BackError::Violation(Violation::RingOverflow { ring })) => assert_eq!(ring, "rx"),
        other => panic!("expected ring overflow, got {other:?}"),
    }
    assert_eq!(back.stats().violations_of(ViolationKind::RingOverflow), 1);
    // The provider (its QP and posted buffers) is gone with the guest.
    assert!(back.provider().is_none());
    Ok(())
}

#[test]
fn epoch_mismatch_is_refused() -> Result<(), BoxError> {
    let net = healthy_pair()?;
    let spec = GuestSpec::new(61);
    let window = Window::new_heap(Layout::window_len_for(spec.params)?);
    let mut back: verbs_shim::back::BackHalf<verbs_shim::sim::SimPort, _> =
        verbs_shim::back::BackHalf::new(
            window.clone(),
            verbs_shim::back::BackConfig::default(),
            verbs_shim::notify::NoNotify,
        )?;
    let _front = verbs_shim::front::FrontHca::attach(
        window.clone(),
        spec.params,
        verbs_shim::notify::NoNotify,
    )?;
    // The guest claims an epoch the back end never announced.
    ring::Header::new(&window)?.set_guest_epoch(99);
    assert!(matches!(
        back.poll_guest_init(),
        Err(BackError::Violation(Violation::EpochMismatch {
            guest: 99,
            ..
        }))
    ));
    assert_eq!(back.stats().violations_of(ViolationKind::EpochMismatch), 1);
    drop(net);
    Ok(())
}
