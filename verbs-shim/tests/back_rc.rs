//! Connected mode through the channel's back half (`docs/connected-mode.md`,
//! §5), over the sim fabric: negotiation (an old guest still attaches, a
//! guest asking for what was not offered is disconnected), the CM ring and
//! the RC data path driven by a raw guest, and a hostile guest writing
//! random RC descriptors that never panics or stalls the back end.
#![cfg(feature = "sim")]

use proptest::prelude::*;
use ring::desc::{
    cm_op, cm_reason, cm_status, CmRequest, CmResponse, CtrlRequest, CtrlResponse, RxRequest,
    RxResponse, TxRequest, TxResponse, RX_FLAG_RC, RX_REQ_FLAG_BIG, TX_FLAG_RC, TX_RSP_FLAG_RC,
};
use ring::header::features;
use ring::{BigParams, FrontRing, Header, Layout, LayoutParams, State, Window};
use verbs_shim::back::{BackConfig, BackError, BackHalf, Refusal, ViolationKind};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, RcSetup, SimFabric, SimPort};
use verbs_shim::{Completion, Offloads, PKey, Verbs};

type Back = BackHalf<SimPort, NoNotify>;

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

fn offering() -> BackConfig {
    BackConfig {
        connected_mode: true,
        max_rc_conns: 4,
        ..BackConfig::default()
    }
}

/// The back half's provider for a guest: a sim port over the guest's
/// buffer area, with RC over its big-slot area when the guest asked.
fn provide(fabric: &SimFabric, n: u16, back: &mut Back, rc: bool) -> Result<(), BackError> {
    let setup = back.poll_guest_init()?.expect("guest set up");
    let mut config = PortConfig::with_layout(n, PKey::DEFAULT, setup.slots);
    config.region = setup.region.clone();
    let mut port = fabric.add_port(config).expect("port");
    if let (Some((region, big)), true) = (back.rc_region(), rc) {
        port.enable_rc(RcSetup {
            big,
            region,
            max_conns: 8,
        })
        .expect("rc");
    }
    back.connect(port)
}

#[test]
fn an_old_guest_attaches_to_a_back_end_that_offers_connected_mode() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let window = Window::new_heap(Layout::window_len_for(PARAMS).unwrap());
    let mut back = Back::new(window.clone(), offering(), NoNotify).unwrap();
    let header = Header::new(&window).unwrap();
    assert_eq!(
        header.backend_features(),
        features::CONNECTED_MODE,
        "offered"
    );
    // Today's front half knows nothing of connected mode.
    let mut front = FrontHca::attach(window.clone(), PARAMS, NoNotify).unwrap();
    assert_eq!(header.guest_features(), 0);
    provide(&fabric, 1, &mut back, true).unwrap();
    assert!(front.poll_connected().unwrap());
    assert!(back.rc_region().is_none());
    assert_eq!(back.rc_held(), None, "not agreed");
    assert_eq!(
        header.backend_features(),
        Offloads { rx_checksums: true }.to_features(),
        "connected mode not agreed, offloads as before"
    );
    assert_eq!(front.offloads(), Offloads { rx_checksums: true });
    // And it works: a resolve goes round the control ring.
    let (_tx, _rx) = front.take_slots().unwrap();
    front.resolve(front.port_attr().gid).unwrap();
    front.flush().unwrap();
    let mut answered = false;
    for _ in 0..10 {
        back.service().unwrap();
        while let Some(c) = front.poll_cq().unwrap() {
            answered |= matches!(c, Completion::Path { .. });
        }
    }
    assert!(answered);
    assert_eq!(back.stats().total_violations(), 0);
}

/// A guest that speaks the channel by hand, with connected mode.
struct RawGuest {
    window: Window,
    back: Back,
    layout: Layout,
    cm: FrontRing<CmRequest, CmResponse>,
    tx: FrontRing<TxRequest, TxResponse>,
    rx: FrontRing<RxRequest, RxResponse>,
    _ctrl: FrontRing<CtrlRequest, CtrlResponse>,
    gid: [u8; 16],
    qpn: u32,
    cookie: u32,
}

impl RawGuest {
    /// Attaches asking for connected mode (`features` in the guest word).
    fn attach(config: BackConfig, guest_features: u32) -> (Window, Back) {
        let len = Layout::window_len_with(PARAMS, Some(BIG)).unwrap();
        let window = Window::new_heap(len);
        let back = Back::new(window.clone(), config, NoNotify).unwrap();
        let h = Header::new(&window).unwrap();
        assert_eq!(h.backend_state(), State::InitWait);
        h.write_params(&PARAMS);
        h.write_big_params(&BIG);
        h.set_guest_features(guest_features);
        h.set_guest_epoch(h.epoch());
        h.set_guest_state(State::Initialised);
        (window, back)
    }

    fn new(fabric: &SimFabric, n: u16) -> RawGuest {
        let (window, mut back) = RawGuest::attach(offering(), features::CONNECTED_MODE);
        provide(fabric, n, &mut back, true).unwrap();
        let h = Header::new(&window).unwrap();
        assert_eq!(h.backend_state(), State::Connected);
        assert_ne!(h.backend_features() & features::CONNECTED_MODE, 0, "agreed");
        let layout = Layout::compute_with(PARAMS, Some(BIG), window.len()).unwrap();
        let big = layout.big.clone().unwrap();
        let ring = |r: &std::ops::Range<usize>| window.sub(r.start, r.len()).unwrap();
        let port = h.read_port().unwrap();
        RawGuest {
            cm: FrontRing::attach(ring(&big.cm), BIG.cm_order).unwrap(),
            tx: FrontRing::attach(ring(&layout.tx), PARAMS.tx_order).unwrap(),
            rx: FrontRing::attach(ring(&layout.rx), PARAMS.rx_order).unwrap(),
            _ctrl: FrontRing::attach(ring(&layout.ctrl), PARAMS.ctrl_order).unwrap(),
            gid: port.gid,
            qpn: port.qpn,
            cookie: 0,
            window,
            back,
            layout,
        }
    }

    fn cm(&mut self, op: u16, conn: u32, qpn: u32, mtu: u32, gid: [u8; 16]) -> u32 {
        self.cookie += 1;
        let req = CmRequest {
            op,
            cookie: self.cookie,
            conn,
            qpn,
            mtu,
            gid,
            ..CmRequest::default()
        };
        self.cm.push_request(&req).unwrap();
        self.cm.publish_requests();
        self.cookie
    }

    fn cm_answers(&mut self) -> Vec<CmResponse> {
        let mut out = Vec::new();
        while let Some(r) = self.cm.pop_response().unwrap() {
            out.push(r);
        }
        out
    }

    fn post_big_rx(&mut self, slot: u16) {
        let req = RxRequest {
            slot,
            _reserved0: RX_REQ_FLAG_BIG,
            _reserved1: 0,
        };
        self.rx.push_request(&req).unwrap();
        self.rx.publish_requests();
    }

    fn send_rc(&mut self, conn: u32, slot: u16, bytes: &[u8]) {
        let at = self
            .layout
            .big
            .as_ref()
            .unwrap()
            .tx_slot(slot)
            .unwrap()
            .start;
        self.window.write_bytes(at, bytes).unwrap();
        let req = TxRequest {
            slot,
            flags: TX_FLAG_RC,
            len: bytes.len() as u32,
            dest: conn,
            ..TxRequest::default()
        };
        self.tx.push_request(&req).unwrap();
        self.tx.publish_requests();
    }

    fn service(&mut self) {
        for _ in 0..4 {
            self.back.service().unwrap();
        }
    }
}

#[test]
fn two_raw_guests_connect_and_move_a_connected_mtu_message() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = RawGuest::new(&fabric, 1);
    let mut b = RawGuest::new(&fabric, 2);
    b.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
    b.post_big_rx(0);
    b.service();
    let (b_gid, b_qpn) = (b.gid, b.qpn);
    let connect = a.cm(cm_op::CONNECT, 0, b_qpn, 65520, b_gid);
    a.service();
    b.service();
    let req = b.cm_answers();
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].op, cm_op::EVENT_REQUEST);
    assert_eq!((req[0].gid, req[0].qpn, req[0].mtu), (a.gid, a.qpn, 65520));
    let b_conn = req[0].conn;
    b.cm(cm_op::ACCEPT, b_conn, 0, 65520, [0; 16]);
    b.service();
    a.service();
    let acc = b.cm_answers();
    assert_eq!(
        (acc[0].op, acc[0].status, acc[0].conn),
        (cm_op::ACCEPT, cm_status::OK, b_conn)
    );
    let up = a.cm_answers();
    assert_eq!(
        (up[0].op, up[0].status, up[0].cookie),
        (cm_op::CONNECT, cm_status::OK, connect)
    );
    assert_eq!(up[0].mtu, 65520, "b's receive MTU");
    let a_conn = up[0].conn;
    let message: Vec<u8> = (0..65520u32).map(|i| (i * 7 + 3) as u8).collect();
    a.send_rc(a_conn, 2, &message);
    a.service();
    b.service();
    a.service();
    let sent = a.tx.pop_response().unwrap().unwrap();
    assert_eq!(
        (sent.slot, sent.status, sent._reserved),
        (2, 0, TX_RSP_FLAG_RC)
    );
    let got = b.rx.pop_response().unwrap().unwrap();
    assert_eq!((got.slot, got.status, got.flags), (0, 0, RX_FLAG_RC));
    assert_eq!(
        (got.byte_len, got.src_qpn, got._reserved1),
        (65520, a.qpn, b_conn)
    );
    let at = b.layout.big.as_ref().unwrap().rx_slot(0).unwrap().start;
    let mut bytes = vec![0; 65520];
    b.window.read_bytes(at, &mut bytes).unwrap();
    assert_eq!(bytes, message);
    assert_eq!(b.back.rc_held(), Some((1, 0)));
    // a dies: b hears it on a credit, and the handle stays until released.
    drop(a);
    b.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
    b.service();
    let broken = b.cm_answers();
    assert_eq!(
        (broken[0].op, broken[0].conn),
        (cm_op::EVENT_BROKEN, b_conn)
    );
    assert_eq!(broken[0].reason, cm_reason::PEER_GONE);
    // A send on it now is flushed, not a violation.
    b.send_rc(b_conn, 0, b"late");
    b.service();
    let flushed = b.tx.pop_response().unwrap().unwrap();
    assert_eq!(flushed.status, 5);
    b.cm(cm_op::DISCONNECT, b_conn, 0, 0, [0; 16]);
    b.service();
    assert_eq!(b.cm_answers()[0].status, cm_status::OK);
    assert_eq!(b.back.rc_held(), Some((0, 0)));
    // Released: now the handle is a violation.
    b.cm(cm_op::DISCONNECT, b_conn, 0, 0, [0; 16]);
    assert!(b.back.service().is_err());
    assert_eq!(b.back.stats().violations_of(ViolationKind::BadHandle), 1);
}

#[test]
fn limits_and_missing_credits_are_refusals_not_violations() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = RawGuest::new(&fabric, 1);
    let mut b = RawGuest::new(&fabric, 2);
    // No credit at b: a's request is rejected and counted.
    a.cm(cm_op::CONNECT, 0, b.qpn, 65520, b.gid);
    a.service();
    b.service();
    a.service();
    let r = a.cm_answers();
    assert_eq!(
        (r[0].status, r[0].reason),
        (cm_status::REJECTED, cm_reason::REFUSED)
    );
    assert_eq!(b.back.stats().refusals_of(Refusal::RcNoCredit), 1);
    // An MTU the big slots cannot take.
    a.cm(cm_op::CONNECT, 0, b.qpn, 65537, b.gid);
    a.service();
    assert_eq!(a.cm_answers()[0].status, cm_status::NO_RESOURCES);
    assert_eq!(a.back.stats().refusals_of(Refusal::RcMtu), 1);
    // Four connections (the limit) to nowhere in flight... they are
    // rejected at once by the fabric, so fill the table with real ones.
    let mut peers: Vec<RawGuest> = (3..=7).map(|n| RawGuest::new(&fabric, n)).collect();
    for p in &mut peers {
        p.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
        p.service();
        a.cm(cm_op::CONNECT, 0, p.qpn, 65520, p.gid);
    }
    a.service();
    let answers = a.cm_answers();
    assert_eq!(answers.len(), 1, "the fifth is refused at once");
    assert_eq!(answers[0].status, cm_status::NO_RESOURCES);
    assert_eq!(a.back.stats().refusals_of(Refusal::RcConns), 1);
    assert_eq!(a.back.rc_held(), Some((4, 0)));
    assert!(a.back.is_connected());
    assert_eq!(a.back.stats().total_violations(), 0);
}

#[test]
fn asking_for_what_was_not_offered_is_a_violation() {
    let (_w, mut back) = RawGuest::attach(BackConfig::default(), features::CONNECTED_MODE);
    assert!(matches!(
        back.poll_guest_init(),
        Err(BackError::Violation(_))
    ));
    assert_eq!(back.stats().violations_of(ViolationKind::BadFeatures), 1);
    let (_w, mut back) = RawGuest::attach(offering(), 1 << 7);
    assert!(back.poll_guest_init().is_err());
    assert_eq!(back.stats().violations_of(ViolationKind::BadFeatures), 1);
    let (w, mut back) = RawGuest::attach(offering(), features::CONNECTED_MODE);
    w.write_bytes(152, &[0]).unwrap();
    assert!(back.poll_guest_init().is_err(), "cm_order 0");
    assert_eq!(back.stats().violations_of(ViolationKind::BadParams), 1);
}

#[test]
fn a_provider_without_rc_leaves_the_guest_in_datagram_mode() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let (window, mut back) = RawGuest::attach(offering(), features::CONNECTED_MODE);
    provide(&fabric, 1, &mut back, false).unwrap();
    let h = Header::new(&window).unwrap();
    assert_eq!(h.backend_state(), State::Connected);
    assert_eq!(
        h.backend_features() & features::CONNECTED_MODE,
        0,
        "not agreed"
    );
    assert_eq!(back.rc_held(), None);
    // An RC flag then is a reserved bit.
    let layout = Layout::compute_with(PARAMS, Some(BIG), window.len()).unwrap();
    let mut tx: FrontRing<TxRequest, TxResponse> =
        FrontRing::attach(window.sub(layout.tx.start, layout.tx.len()).unwrap(), 5).unwrap();
    tx.push_request(&TxRequest {
        flags: TX_FLAG_RC,
        len: 10,
        ..TxRequest::default()
    })
    .unwrap();
    tx.publish_requests();
    assert!(back.service().is_err());
    assert_eq!(back.stats().violations_of(ViolationKind::ReservedBits), 1);
}

/// One request on one of the three rings an RC guest writes: mostly
/// well-formed (so that sessions live long enough to reach deep states:
/// connections coming and going, slots in flight, credits), sometimes with
/// one field made hostile.
#[derive(Clone, Debug)]
struct Step {
    ring: u8,
    op: u16,
    /// Index into the handles a guest may plausibly hold.
    conn: usize,
    slot: u16,
    len: u32,
    mtu: u32,
    /// Connect to the honest peer (else to a GID nobody has).
    to_peer: bool,
    /// `Some((field, value))`: one field overwritten with `value`.
    mutation: Option<(u8, u32)>,
}

/// What a sloppy but mostly honest guest keeps track of: the connection
/// handles it learnt and the big slots it owns.
#[derive(Default)]
struct Known {
    handles: Vec<u32>,
    /// Handles that were established (sending on the others is a
    /// violation, which the mutations still reach).
    established: Vec<u32>,
    big_tx: Vec<u16>,
    big_rx: Vec<u16>,
}

impl Known {
    fn new() -> Known {
        Known {
            handles: Vec::new(),
            established: Vec::new(),
            big_tx: (0..BIG.tx_slots).collect(),
            big_rx: (0..BIG.rx_slots).collect(),
        }
    }

    /// Reads every answer the guest got, as a guest would.
    fn learn(&mut self, g: &mut RawGuest) {
        for a in g.cm_answers() {
            let new = (a.op == cm_op::CONNECT && a.status == cm_status::OK)
                || a.op == cm_op::EVENT_REQUEST;
            if new && !self.handles.contains(&a.conn) {
                self.handles.push(a.conn);
            }
            let up = (a.op == cm_op::CONNECT || a.op == cm_op::ACCEPT) && a.status == cm_status::OK;
            if up && !self.established.contains(&a.conn) {
                self.established.push(a.conn);
            }
            let released =
                (a.op == cm_op::DISCONNECT || a.op == cm_op::REJECT) && a.status == cm_status::OK;
            if released {
                self.handles.retain(|&h| h != a.conn);
                self.established.retain(|&h| h != a.conn);
            }
        }
        while let Ok(Some(r)) = g.tx.pop_response() {
            if r._reserved == TX_RSP_FLAG_RC {
                self.big_tx.push(r.slot);
            }
        }
        while let Ok(Some(r)) = g.rx.pop_response() {
            if r.flags & RX_FLAG_RC != 0 {
                self.big_rx.push(r.slot);
            }
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let ops = prop_oneof![
        Just(cm_op::CONNECT),
        Just(cm_op::ACCEPT),
        Just(cm_op::REJECT),
        Just(cm_op::DISCONNECT),
        Just(cm_op::EVENT_CREDIT),
    ];
    let mutation = prop_oneof![
        40 => Just(None),
        1 => (0u8..6, any::<u32>()).prop_map(Some),
    ];
    (
        0u8..3,
        ops,
        0usize..4,
        0u16..4,
        1u32..=65536,
        256u32..=65536,
        any::<bool>(),
        mutation,
    )
        .prop_map(|(ring, op, conn, slot, len, mtu, to_peer, mutation)| Step {
            ring,
            op,
            conn,
            slot,
            len,
            mtu,
            to_peer,
            mutation,
        })
}

impl RawGuest {
    /// Writes `step` (without waiting for anything).
    fn hostile(&mut self, step: &Step, peer: ([u8; 16], u32), known: &mut Known) {
        let mut step = step.clone();
        let needs_handle =
            step.ring == 1 || ![cm_op::CONNECT, cm_op::EVENT_CREDIT].contains(&step.op);
        if needs_handle && known.handles.is_empty() {
            // Nothing to name: connect instead.
            (step.ring, step.op) = (0, cm_op::CONNECT);
        }
        let no_slot = (step.ring == 1 && known.big_tx.is_empty())
            || (step.ring == 2 && known.big_rx.is_empty());
        if no_slot {
            (step.ring, step.op) = (0, cm_op::EVENT_CREDIT);
        }
        let pool = if step.ring == 1 {
            &known.established
        } else {
            &known.handles
        };
        let conn = match pool.len() {
            0 => 0x1_0000,
            n => pool[step.conn % n],
        };
        let m = |field: u8, normal: u32| match step.mutation {
            Some((f, v)) if f == field => v,
            _ => normal,
        };
        match step.ring {
            0 => {
                let (gid, qpn) = if step.to_peer {
                    peer
                } else {
                    ([0xfe; 16], 0x4a)
                };
                let connect = step.op == cm_op::CONNECT;
                let with_mtu = connect || step.op == cm_op::ACCEPT;
                let req = CmRequest {
                    op: m(0, u32::from(step.op)) as u16,
                    cookie: 9,
                    conn: m(
                        1,
                        if connect || step.op == cm_op::EVENT_CREDIT {
                            0
                        } else {
                            conn
                        },
                    ),
                    qpn: m(2, if connect { qpn } else { 0 }),
                    mtu: m(3, if with_mtu { step.mtu } else { 0 }),
                    _reserved1: m(4, 0),
                    gid: if connect { gid } else { [0; 16] },
                    ..CmRequest::default()
                };
                let _ = self.cm.push_request(&req);
                self.cm.publish_requests();
            }
            1 => {
                let slot = match known.big_tx.len() {
                    0 => step.slot,
                    n => known.big_tx.swap_remove(usize::from(step.slot) % n),
                };
                let req = TxRequest {
                    slot: m(0, u32::from(slot)) as u16,
                    flags: m(1, u32::from(TX_FLAG_RC)) as u16,
                    len: m(2, step.len),
                    dest: m(3, conn),
                    remote_qpn: m(4, 0),
                    ..TxRequest::default()
                };
                let _ = self.tx.push_request(&req);
                self.tx.publish_requests();
            }
            _ => {
                let slot = match known.big_rx.len() {
                    0 => step.slot,
                    n => known.big_rx.swap_remove(usize::from(step.slot) % n),
                };
                let req = RxRequest {
                    slot: m(0, u32::from(slot)) as u16,
                    _reserved0: m(1, u32::from(RX_REQ_FLAG_BIG)) as u16,
                    _reserved1: m(2, 0),
                };
                let _ = self.rx.push_request(&req);
                self.rx.publish_requests();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever an RC guest writes, the back end neither panics nor loops:
    /// each service pass returns, and a session that ends, ends with one
    /// counted violation; an honest peer on the same fabric is unharmed.
    #[test]
    fn a_hostile_rc_guest_never_crashes_or_stalls_the_back_end(
        script in proptest::collection::vec(step(), 1..120)
    ) {
        let fabric = SimFabric::new(FaultConfig::NONE);
        let mut evil = RawGuest::new(&fabric, 1);
        let mut honest = RawGuest::new(&fabric, 2);
        honest.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
        honest.post_big_rx(0);
        honest.service();
        // A real connection first, so handles and slots have something to hit.
        evil.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
        evil.cm(cm_op::CONNECT, 0, honest.qpn, 65520, honest.gid);
        evil.service();
        honest.service();
        if let Some(req) = honest.cm_answers().first() {
            honest.cm(cm_op::ACCEPT, req.conn, 0, 65520, [0; 16]);
            honest.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
        }
        honest.service();
        evil.service();
        // And one the honest guest asks the evil one for, which the evil
        // one may accept, reject, disconnect or misuse.
        let (evil_gid, evil_qpn) = (evil.gid, evil.qpn);
        honest.cm(cm_op::CONNECT, 0, evil_qpn, 65520, evil_gid);
        honest.service();
        evil.service();
        prop_assert_eq!(evil.back.rc_held(), Some((2, 0)), "live connections to hit");
        let mut ended = None;
        let mut steps = 0;
        let mut known = Known::new();
        known.learn(&mut evil);
        for step in script {
            // A full ring just drops the request: the script goes on.
            evil.hostile(&step, (honest.gid, honest.qpn), &mut known);
            steps += 1;
            match evil.back.service() {
                Ok(_) => {}
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
            known.learn(&mut evil);
            honest.back.service().unwrap();
            // The honest peer answers what it is asked, as a guest would.
            for ev in honest.cm_answers() {
                if ev.op == cm_op::EVENT_REQUEST {
                    honest.cm(cm_op::ACCEPT, ev.conn, 0, 65520, [0; 16]);
                }
                if ev.op == cm_op::EVENT_REQUEST || ev.op == cm_op::EVENT_BROKEN {
                    honest.cm(cm_op::EVENT_CREDIT, 0, 0, 0, [0; 16]);
                }
            }
            while let Ok(Some(r)) = honest.rx.pop_response() {
                honest.post_big_rx(r.slot);
            }
        }
        let violations = evil.back.stats().total_violations();
        if std::env::var_os("HOSTILE_TRACE").is_some() {
            eprintln!("steps {steps} ended {ended:?} stats {:?}", evil.back.stats());
        }
        match ended {
            Some(BackError::Violation(_)) => prop_assert_eq!(violations, 1),
            Some(other) => prop_assert!(false, "ended with {other:?}"),
            None => prop_assert_eq!(violations, 0),
        }
        // The honest guest's back half is still serving.
        honest.back.service().unwrap();
        prop_assert!(honest.back.is_connected());
        prop_assert_eq!(honest.back.stats().total_violations(), 0);
    }
}
