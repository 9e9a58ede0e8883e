//! Connected mode end to end through the channel: two guest-side providers
//! (`FrontHca` with `attach_with`) talk RC through their back halves over
//! the sim fabric, with the same `RcVerbs` contract the sim port offers.
#![cfg(feature = "sim")]

use std::collections::VecDeque;

use ring::{BigParams, Layout, LayoutParams, Window};
use verbs_shim::back::{BackConfig, BackHalf};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::rc::{
    BigRxSlot, BigTxSlot, BreakReason, ConnHandle, RcCompletion, RcError, RcEvent, RcRecvInfo,
    RcStatus, RcVerbs,
};
use verbs_shim::sim::{FaultConfig, PortConfig, RcSetup, SimFabric, SimPort};
use verbs_shim::{PKey, Verbs};

/// The guest's interrupts, as its back half raises them.
#[derive(Clone, Default)]
struct Interrupts(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl verbs_shim::notify::Notify for Interrupts {
    fn notify(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Interrupts {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type Back = BackHalf<SimPort, Interrupts>;
type Front = FrontHca<NoNotify>;

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 5,
    rx_order: 5,
    tx_slots: 16,
    rx_slots: 16,
    slot_size: 4096,
};

const BIG: BigParams = BigParams {
    cm_order: 4,
    tx_slots: 4,
    rx_slots: 4,
    slot_size: 65536,
};

struct Guest {
    window: Window,
    interrupts: Interrupts,
    back: Back,
    front: Front,
    big_tx: Vec<BigTxSlot>,
    events: VecDeque<RcEvent>,
    sent: Vec<(ConnHandle, RcStatus)>,
    got: Vec<(RcRecvInfo, Vec<u8>)>,
    flushed: usize,
    spare_rx: Vec<BigRxSlot>,
}

impl Guest {
    fn new(fabric: &SimFabric, n: u16, offer: bool, ask: bool) -> Guest {
        let window = Window::new_heap(Layout::window_len_with(PARAMS, Some(BIG)).unwrap());
        let config = BackConfig {
            connected_mode: offer,
            ..BackConfig::default()
        };
        let interrupts = Interrupts::default();
        let mut back = Back::new(window.clone(), config, interrupts.clone()).unwrap();
        let big = ask.then_some(BIG);
        let mut front = Front::attach_with(window.clone(), PARAMS, big, NoNotify).unwrap();
        let setup = back.poll_guest_init().unwrap().unwrap();
        let mut config = PortConfig::with_layout(n, PKey::DEFAULT, setup.slots);
        config.region = setup.region.clone();
        let mut port = fabric.add_port(config).unwrap();
        if let Some((region, big)) = back.rc_region() {
            port.enable_rc(RcSetup {
                big,
                region,
                max_conns: 8,
            })
            .unwrap();
        }
        back.connect(port).unwrap();
        assert!(front.poll_connected().unwrap());
        let _ = front.take_slots();
        let mut g = Guest {
            window,
            interrupts,
            back,
            front,
            big_tx: Vec::new(),
            events: VecDeque::new(),
            sent: Vec::new(),
            got: Vec::new(),
            flushed: 0,
            spare_rx: Vec::new(),
        };
        if let Some((tx, rx)) = g.front.take_big_slots() {
            g.big_tx = tx.collect();
            for slot in rx {
                g.front.rc_post_recv(slot).unwrap();
            }
            g.front.flush().unwrap();
        }
        g
    }

    fn gid(&self) -> verbs_shim::Gid {
        self.front.port_attr().gid
    }

    fn qpn(&self) -> verbs_shim::Qpn {
        self.front.port_attr().qpn
    }

    /// Back end and guest each take a turn.
    fn turn(&mut self) {
        self.front.flush().unwrap();
        let _ = self.back.service();
        while let Ok(Some(c)) = self.front.poll_rc() {
            match c {
                RcCompletion::Send { slot, conn, status } => {
                    self.big_tx.push(slot);
                    self.sent.push((conn, status));
                }
                RcCompletion::Recv { slot, status, info } => {
                    if status == RcStatus::Success {
                        let mut bytes = vec![0; info.byte_len as usize];
                        assert!(self.front.big_area().read(&slot, 0, &mut bytes));
                        self.got.push((info, bytes));
                        let _ = self.front.rc_post_recv(slot);
                    } else {
                        // The slot stays ours, unposted: the channel is going.
                        self.flushed += 1;
                        self.spare_rx.push(slot);
                    }
                }
                RcCompletion::Event(e) => self.events.push_back(e),
            }
        }
        while let Ok(Some(_)) = self.front.poll_cq() {}
    }
}

fn turns(guests: &mut [&mut Guest], n: usize) {
    for _ in 0..n {
        for g in guests.iter_mut() {
            g.turn();
        }
    }
}

/// Connects `a` to `b` (b accepts); returns a's handle.
fn connect(a: &mut Guest, b: &mut Guest) -> ConnHandle {
    let ca = a.front.rc_connect(b.gid(), b.qpn(), 65520).unwrap();
    turns(&mut [&mut *a, &mut *b], 3);
    let Some(RcEvent::Request { conn: cb, .. }) = b.events.pop_front() else {
        panic!("b saw no request: {:?}", b.events);
    };
    b.front.rc_accept(cb, 65520).unwrap();
    turns(&mut [&mut *b, &mut *a], 3);
    assert!(matches!(
        a.events.pop_front(),
        Some(RcEvent::Established { .. })
    ));
    assert!(matches!(
        b.events.pop_front(),
        Some(RcEvent::Established { .. })
    ));
    ca
}

/// A guest whose big TX slots are all out must be woken when one comes
/// back: it may have frames waiting for a slot. Before the fix `arm_cq`
/// armed TX completions only when the small TX slots ran short, and a
/// connected-mode receiver whose ACKs waited for big slots slept until its
/// next timer (the 0.5 s stalls of hosted transfers over RC).
#[test]
fn completions_that_free_the_last_big_tx_slots_wake_the_guest() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Guest::new(&fabric, 1, true, true);
    let mut b = Guest::new(&fabric, 2, true, true);
    let ca = connect(&mut a, &mut b);
    let send_all = |a: &mut Guest| {
        let slots: Vec<BigTxSlot> = a.big_tx.drain(..).collect();
        assert_eq!(slots.len(), usize::from(BIG.tx_slots));
        for slot in slots {
            assert!(a.front.big_area().write(&slot, 0, &[7; 1000]));
            a.front.rc_post_send(ca, slot, 1000).unwrap();
        }
        a.front.flush().unwrap();
        let _ = a.back.service();
    };
    // The first four fill b's four posted big receives; b does not look.
    send_all(&mut a);
    turns(&mut [&mut a], 2);
    assert_eq!(a.sent.len(), 4, "delivered, so completed");
    // The next four wait in the fabric for b to post receives: every big
    // TX slot of a is out, with nothing else in flight.
    send_all(&mut a);
    turns(&mut [&mut a], 2);
    assert_eq!(a.sent.len(), 4);
    assert!(a.big_tx.is_empty());
    assert!(!a.front.arm_cq().unwrap(), "nothing has come back yet");
    let before = a.interrupts.count();
    // b takes its messages and posts its receives again: a's four sends
    // complete, and a's back half must interrupt a.
    turns(&mut [&mut b], 2);
    assert_eq!(b.got.len(), 8);
    let _ = a.back.service();
    assert!(
        a.interrupts.count() > before,
        "the completions of a's last big TX slots did not interrupt it"
    );
    turns(&mut [&mut a], 1);
    assert_eq!(a.sent.len(), 8);
    assert_eq!(a.big_tx.len(), usize::from(BIG.tx_slots));
}

#[test]
fn two_guests_connect_through_their_back_ends_and_move_64k_messages() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Guest::new(&fabric, 1, true, true);
    let mut b = Guest::new(&fabric, 2, true, true);
    assert!(a.front.rc().is_some() && b.front.rc().is_some(), "agreed");
    let ca = a.front.rc_connect(b.gid(), b.qpn(), 65520).unwrap();
    turns(&mut [&mut a, &mut b], 3);
    let Some(RcEvent::Request { conn: cb, peer }) = b.events.pop_front() else {
        panic!("b saw no request: {:?}", b.events);
    };
    assert_eq!(
        (peer.gid, peer.ud_qpn, peer.recv_mtu),
        (a.gid(), a.qpn(), 65520)
    );
    b.front.rc_accept(cb, 65520).unwrap();
    turns(&mut [&mut b, &mut a], 3);
    assert_eq!(
        a.events.pop_front(),
        Some(RcEvent::Established {
            conn: ca,
            send_mtu: 65520
        })
    );
    assert!(matches!(
        b.events.pop_front(),
        Some(RcEvent::Established { conn, .. }) if conn == cb
    ));
    // Eight messages of up to the connected MTU, in order.
    for seq in 0..8u8 {
        while a.big_tx.is_empty() {
            turns(&mut [&mut a, &mut b], 1);
        }
        let slot = a.big_tx.pop().unwrap();
        let len = 65520 - usize::from(seq) * 1000;
        let msg: Vec<u8> = (0..len).map(|i| (i as u8) ^ seq).collect();
        assert!(a.front.big_area().write(&slot, 0, &msg));
        a.front.rc_post_send(ca, slot, len).unwrap();
        turns(&mut [&mut a, &mut b], 2);
    }
    turns(&mut [&mut a, &mut b], 3);
    assert_eq!(a.sent.len(), 8);
    assert!(a
        .sent
        .iter()
        .all(|&(c, s)| c == ca && s == RcStatus::Success));
    assert_eq!(b.got.len(), 8);
    for (seq, (info, bytes)) in b.got.iter().enumerate() {
        assert_eq!(info.conn, cb);
        assert_eq!(info.src_qpn, a.qpn());
        assert_eq!(bytes.len(), 65520 - seq * 1000);
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u8) ^ seq as u8));
    }
    // a's back end goes away: b hears its connection broke.
    a.back.shutdown();
    drop(a);
    turns(&mut [&mut b], 3);
    assert_eq!(
        b.events.pop_front(),
        Some(RcEvent::Broken {
            conn: cb,
            reason: BreakReason::PeerGone
        })
    );
    b.front.rc_disconnect(cb).unwrap();
    turns(&mut [&mut b], 2);
    assert_eq!(b.events.pop_front(), Some(RcEvent::Closed { conn: cb }));
    assert_eq!(b.back.rc_held(), Some((0, 0)));
    assert_eq!(b.back.stats().total_violations(), 0);
    assert_eq!(b.front.stats().violations, 0);
}

#[test]
fn without_the_offer_a_guest_that_asks_gets_datagram_mode_and_todays_layout() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut g = Guest::new(&fabric, 1, false, true);
    assert!(g.front.rc().is_none());
    assert_eq!(g.front.layout().big, None, "today's layout");
    assert_eq!(
        g.front.rc_connect(
            verbs_shim::Gid::from_parts(1, 2),
            verbs_shim::Qpn::new(0x49).unwrap(),
            4096
        ),
        Err(RcError::NotSupported)
    );
    assert_eq!(g.back.stats().total_violations(), 0);
    g.turn();
    // Offered, not asked: the same.
    let g2 = Guest::new(&fabric, 2, true, false);
    assert_eq!(g2.front.layout().big, None);
    assert_eq!(g2.back.rc_held(), None);
}

#[test]
fn a_connect_to_a_datagram_only_guest_is_rejected() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Guest::new(&fabric, 1, true, true);
    let mut ud = Guest::new(&fabric, 2, true, false);
    let ca = a.front.rc_connect(ud.gid(), ud.qpn(), 65520).unwrap();
    turns(&mut [&mut a, &mut ud], 3);
    assert_eq!(
        a.events.pop_front(),
        Some(RcEvent::Rejected {
            conn: ca,
            reason: verbs_shim::rc::RejectReason::NoListener
        })
    );
    assert_eq!(a.back.rc_held(), Some((0, 0)));
}

/// Runs `f` on a thread of its own and fails the test if it has not
/// finished within `secs` (a livelocked poll would otherwise hang the run).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    wait.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("still polling: livelock")
}

fn group(last: u8) -> verbs_shim::Gid {
    verbs_shim::Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, last,
    ])
}

/// `poll_rc` with a datagram-side answer waiting and no RC one keeps the
/// former for `poll_cq` and returns: it used to hand it back and forth
/// with the stash for ever (a connected-mode receiver flooded over UD
/// spun in `poll_rc`/`poll_cq` and answered nothing).
#[test]
fn poll_rc_with_only_a_datagram_answer_waiting_returns_and_keeps_it() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Guest::new(&fabric, 1, true, true);
    a.front.attach_mcast(group(1)).unwrap();
    a.front.flush().unwrap();
    let _ = a.back.service();
    let front = within(10, move || {
        assert!(a.front.poll_rc().unwrap().is_none(), "nothing RC");
        // Again, now that the answer sits in the stash.
        assert!(a.front.poll_rc().unwrap().is_none(), "still nothing RC");
        a
    });
    let mut a = front;
    assert!(matches!(
        a.front.poll_cq().unwrap(),
        Some(verbs_shim::Completion::Mcast {
            attach: true,
            result: Ok(()),
            ..
        })
    ));
    assert!(a.front.poll_cq().unwrap().is_none());
    assert!(!a.front.arm_cq().unwrap(), "nothing left to wake for");
}

/// RC and datagram answers interleaved: each poll hands out its own, none
/// is lost or handed out twice.
#[test]
fn rc_and_datagram_answers_interleaved_each_come_out_once() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Guest::new(&fabric, 1, true, true);
    let mut b = Guest::new(&fabric, 2, true, true);
    let ca = a.front.rc_connect(b.gid(), b.qpn(), 65520).unwrap();
    turns(&mut [&mut a, &mut b], 3);
    let Some(RcEvent::Request { conn: cb, .. }) = b.events.pop_front() else {
        panic!("b saw no request: {:?}", b.events);
    };
    b.front.rc_accept(cb, 65520).unwrap();
    turns(&mut [&mut b, &mut a], 3);
    assert!(matches!(
        a.events.pop_front(),
        Some(RcEvent::Established { .. })
    ));
    // Two messages for b, with a control answer between them.
    for seq in 0..2u8 {
        let slot = a.big_tx.pop().unwrap();
        assert!(a.front.big_area().write(&slot, 0, &[seq; 9000]));
        a.front.rc_post_send(ca, slot, 9000).unwrap();
        a.front.flush().unwrap();
        let _ = a.back.service();
        let _ = b.back.service();
        b.front.attach_mcast(group(seq)).unwrap();
        b.front.flush().unwrap();
        let _ = b.back.service();
    }
    let (b, recvs, mcasts) = within(10, move || {
        let (mut recvs, mut mcasts) = (0, 0);
        for _ in 0..8 {
            match b.front.poll_rc().unwrap() {
                Some(RcCompletion::Recv { slot, status, .. }) => {
                    assert_eq!(status, RcStatus::Success);
                    b.front.rc_post_recv(slot).unwrap();
                    recvs += 1;
                }
                Some(other) => panic!("{other:?}"),
                None => {}
            }
            if let Some(verbs_shim::Completion::Mcast { .. }) = b.front.poll_cq().unwrap() {
                mcasts += 1;
            }
        }
        (b, recvs, mcasts)
    });
    assert_eq!((recvs, mcasts), (2, 2));
    assert_eq!(b.front.stats().violations, 0);
}

mod hostile_back_end {
    //! The guest distrusts the back end's RC answers too: a forger takes
    //! the back half's side of the CM, TX and RX rings and answers with
    //! anything; the guest side never panics, and a fault closes the
    //! channel with every big slot handed back.

    use super::*;
    use proptest::prelude::*;
    use ring::desc::{
        CmRequest, CmResponse, RxRequest, RxResponse, TxRequest, TxResponse, RX_FLAG_RC,
        TX_RSP_FLAG_RC,
    };
    use ring::BackRing;
    use verbs_shim::HcaError;

    #[derive(Clone, Debug)]
    enum Forged {
        Cm(u16, u16, u32, u32, u32),
        Tx(u16, u16),
        Rx(u16, u16, u32, u32, u32),
    }

    fn forged() -> impl Strategy<Value = Forged> {
        let op = prop_oneof![1u16..=5, Just(16u16), Just(17u16), any::<u16>()];
        let small = prop_oneof![0u32..4, Just(0x1_0000u32), any::<u32>()];
        prop_oneof![
            (op, 0u16..6, 0u32..8, small.clone(), 0u32..70000)
                .prop_map(|(op, st, cookie, conn, mtu)| Forged::Cm(op, st, cookie, conn, mtu)),
            (0u16..6, 0u16..22).prop_map(|(slot, st)| Forged::Tx(slot, st)),
            (
                0u16..6,
                0u16..22,
                0u32..70000,
                small,
                prop_oneof![0u32..0x100, any::<u32>()]
            )
                .prop_map(|(slot, st, len, conn, qpn)| Forged::Rx(slot, st, len, conn, qpn)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn forged_rc_answers_never_panic_and_slots_come_back(
            script in proptest::collection::vec(forged(), 1..24)
        ) {
            let fabric = SimFabric::new(FaultConfig::NONE);
            let g = Guest::new(&fabric, 1, true, true);
            let Guest { back, mut front, window: win, .. } = g;
            let window = back.rc_region().map(|(w, _)| w);
            prop_assert!(window.is_none(), "connected, not in setup");
            drop(back);
            let layout = front.layout().clone();
            let big = layout.big.clone().ok_or_else(|| TestCaseError::fail("no big layout"))?;
            let sub = |r: &std::ops::Range<usize>| win.sub(r.start, r.len()).unwrap();
            let mut cm: BackRing<CmRequest, CmResponse> = BackRing::attach(sub(&big.cm), BIG.cm_order).unwrap();
            let mut tx: BackRing<TxRequest, TxResponse> = BackRing::attach(sub(&layout.tx), PARAMS.tx_order).unwrap();
            let mut rx: BackRing<RxRequest, RxResponse> = BackRing::attach(sub(&layout.rx), PARAMS.rx_order).unwrap();
            // Take what the guest asked for (credits, big receives) so that
            // answers are allowed.
            while let Ok(Some(_)) = cm.pop_request() {}
            while let Ok(Some(_)) = rx.pop_request() {}
            while let Ok(Some(_)) = tx.pop_request() {}
            let mut faulted = false;
            let mut flushed_rx = 0;
            for f in script {
                match f {
                    Forged::Cm(op, status, cookie, conn, mtu) => {
                        let _ = cm.push_response(&CmResponse { op, status, cookie, conn, mtu, ..CmResponse::default() });
                        cm.publish_responses();
                    }
                    Forged::Tx(slot, status) => {
                        let _ = tx.push_response(&TxResponse { slot, status, _reserved: TX_RSP_FLAG_RC });
                        tx.publish_responses();
                    }
                    Forged::Rx(slot, status, byte_len, conn, src_qpn) => {
                        let _ = rx.push_response(&RxResponse {
                            slot, status, byte_len, src_qpn, flags: RX_FLAG_RC, _reserved1: conn,
                            ..RxResponse::default()
                        });
                        rx.publish_responses();
                    }
                }
                for _ in 0..64 {
                    match front.poll_rc() {
                        Ok(Some(RcCompletion::Recv { status: RcStatus::Flushed, .. })) => flushed_rx += 1,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(HcaError::PeerViolation(_)) => faulted = true,
                        Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                    }
                }
                if front.stats().violations > 0 {
                    faulted = true;
                }
                if faulted {
                    break;
                }
            }
            prop_assert!(front.stats().violations <= 1);
            if std::env::var_os("HOSTILE_TRACE").is_some() {
                eprintln!("faulted {faulted} faults {:?}", front.stats().faults);
            }
            if faulted {
                // Every big receive still posted came back flushed.
                while let Ok(Some(c)) = front.poll_rc() {
                    if let RcCompletion::Recv { status: RcStatus::Flushed, .. } = c {
                        flushed_rx += 1;
                    }
                }
                prop_assert!(flushed_rx <= usize::from(BIG.rx_slots));
                prop_assert!(front.rc_connect(front.port_attr().gid, front.port_attr().qpn, 4096).is_err());
            }
        }
    }
}
