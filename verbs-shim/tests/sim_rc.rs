//! Connected mode on the sim fabric through the public RC contract
//! (`docs/connected-mode.md`, §6): set-up and rejections, in-order
//! delivery under every wire fault, broken connections as error
//! completions, limits, RNR, and ports that die.
#![cfg(feature = "sim")]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use verbs_shim::rc::{
    BigRxSlot, BigTxSlot, BreakReason, ConnHandle, ConnState, RcCompletion, RcError, RcEvent,
    RcRecvInfo, RcStatus, RcVerbs, RejectReason, DEFAULT_CONNECTED_MTU, MIN_RC_MTU,
};
use verbs_shim::sim::{FaultConfig, PortConfig, RcSetup, SimError, SimFabric, SimPort};
use verbs_shim::{Gid, PKey, Qpn, Verbs};

/// A port with connected mode and the bookkeeping a consumer would do.
struct Node {
    port: SimPort,
    big_tx: Vec<BigTxSlot>,
    /// Big RX slots not posted (for the RNR tests).
    big_rx: Vec<BigRxSlot>,
    events: VecDeque<RcEvent>,
    sends: Vec<(ConnHandle, RcStatus)>,
    recvs: Vec<(RcRecvInfo, Vec<u8>)>,
    flushed_recvs: usize,
}

impl Node {
    fn new(fabric: &SimFabric, n: u16, max_conns: usize) -> Node {
        Node::with(
            fabric,
            PortConfig::local(n, PKey::DEFAULT),
            max_conns,
            usize::MAX,
        )
    }

    fn with(fabric: &SimFabric, config: PortConfig, max_conns: usize, posted: usize) -> Node {
        let mut port = fabric.add_port(config).unwrap();
        port.enable_rc(RcSetup::local(8, 8, max_conns)).unwrap();
        let (tx, rx) = port.take_big_slots().unwrap();
        assert!(
            port.take_big_slots().is_none(),
            "tokens are handed out once"
        );
        let mut big_rx: Vec<BigRxSlot> = rx.collect();
        let post = big_rx.len().min(posted);
        for slot in big_rx.drain(..post) {
            port.rc_post_recv(slot).unwrap();
        }
        Node {
            port,
            big_tx: tx.collect(),
            big_rx,
            events: VecDeque::new(),
            sends: Vec::new(),
            recvs: Vec::new(),
            flushed_recvs: 0,
        }
    }

    fn gid(&self) -> Gid {
        self.port.port_attr().gid
    }

    fn qpn(&self) -> Qpn {
        self.port.port_attr().qpn
    }

    /// Reaps every RC completion; big receives are copied out and reposted.
    fn poll(&mut self) {
        while let Some(c) = self.port.poll_rc().unwrap() {
            match c {
                RcCompletion::Send { slot, conn, status } => {
                    self.big_tx.push(slot);
                    self.sends.push((conn, status));
                }
                RcCompletion::Recv { slot, status, info } => {
                    if status == RcStatus::Success {
                        let mut bytes = vec![0; info.byte_len as usize];
                        assert!(self.port.big_area().read(&slot, 0, &mut bytes));
                        self.recvs.push((info, bytes));
                        if !self.port.is_closed() {
                            self.port.rc_post_recv(slot).unwrap();
                        }
                    } else {
                        assert_eq!(status, RcStatus::Flushed);
                        self.flushed_recvs += 1;
                    }
                }
                RcCompletion::Event(e) => self.events.push_back(e),
            }
        }
    }

    fn event(&mut self) -> RcEvent {
        self.poll();
        self.events.pop_front().expect("an RC event")
    }

    /// Sends `payload` on `conn` from a free big slot.
    fn send(&mut self, conn: ConnHandle, payload: &[u8]) {
        let slot = self.big_tx.pop().expect("a free big TX slot");
        assert!(self.port.big_area().write(&slot, 0, payload));
        self.port.rc_post_send(conn, slot, payload.len()).unwrap();
    }
}

/// Connects `a` to `b` and has `b` accept; returns (a's handle, b's).
fn connect(a: &mut Node, b: &mut Node, a_mtu: u32, b_mtu: u32) -> (ConnHandle, ConnHandle) {
    let ca = a.port.rc_connect(b.gid(), b.qpn(), a_mtu).unwrap();
    let RcEvent::Request { conn: cb, peer } = b.event() else {
        panic!("expected a request");
    };
    assert_eq!(peer.gid, a.gid());
    assert_eq!(peer.ud_qpn, a.qpn());
    assert_eq!(peer.recv_mtu, a_mtu);
    b.port.rc_accept(cb, b_mtu).unwrap();
    assert_eq!(
        a.event(),
        RcEvent::Established {
            conn: ca,
            send_mtu: b_mtu
        }
    );
    assert_eq!(
        b.event(),
        RcEvent::Established {
            conn: cb,
            send_mtu: a_mtu
        }
    );
    (ca, cb)
}

/// A message that says which one it is, `len` bytes long.
fn message(seq: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq.wrapping_mul(31)) as u8)
        .collect();
    m[..4].copy_from_slice(&seq.to_le_bytes());
    m
}

#[test]
fn a_connection_carries_connected_mtu_messages_both_ways() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 4);
    let mut b = Node::new(&fabric, 2, 4);
    let (ca, cb) = connect(&mut a, &mut b, DEFAULT_CONNECTED_MTU, DEFAULT_CONNECTED_MTU);
    assert_eq!(fabric.rc_connections(), 1);
    assert_eq!((a.port.rc_held(), b.port.rc_held()), (1, 1));
    let big = message(1, DEFAULT_CONNECTED_MTU as usize);
    a.send(ca, &big);
    b.send(cb, &message(2, 100));
    a.poll();
    b.poll();
    assert_eq!(a.sends, vec![(ca, RcStatus::Success)]);
    assert_eq!(b.sends, vec![(cb, RcStatus::Success)]);
    assert_eq!(b.recvs.len(), 1);
    assert_eq!(b.recvs[0].0.conn, cb);
    assert_eq!(b.recvs[0].0.src_qpn, a.qpn());
    assert_eq!(b.recvs[0].1, big);
    assert_eq!(a.recvs[0].1, message(2, 100));
    let stats = a.port.rc_stats();
    assert_eq!((stats.established, stats.tx_msgs, stats.rx_msgs), (1, 1, 1));
    assert_eq!(stats.tx_bytes, u64::from(DEFAULT_CONNECTED_MTU));
}

/// Sends `count` numbered messages a → b through `faults` and checks they
/// all arrive once, in order, intact, with every send successful.
fn in_order_through(faults: FaultConfig, count: u32) -> (u64, u64) {
    let fabric = SimFabric::new(faults);
    let mut a = Node::new(&fabric, 1, 4);
    let mut b = Node::new(&fabric, 2, 4);
    let (ca, _) = connect(&mut a, &mut b, 65536, 65536);
    for seq in 0..count {
        if a.big_tx.is_empty() {
            a.poll();
        }
        a.send(ca, &message(seq, 64 + (seq as usize * 997) % 9000));
        b.poll();
    }
    a.poll();
    b.poll();
    assert!(a.events.is_empty() && b.events.is_empty(), "{:?}", a.events);
    assert_eq!(a.sends.len(), count as usize);
    assert!(a
        .sends
        .iter()
        .all(|&(c, s)| c == ca && s == RcStatus::Success));
    assert_eq!(b.recvs.len(), count as usize, "nothing lost, nothing twice");
    for (seq, (_, bytes)) in b.recvs.iter().enumerate() {
        assert_eq!(
            *bytes,
            message(seq as u32, bytes.len()),
            "message {seq} in order"
        );
    }
    (a.port.rc_stats().retransmits, b.port.rc_stats().duplicates)
}

#[test]
fn loss_becomes_retransmission() {
    let (retransmits, _) = in_order_through(FaultConfig::new(11, 0.2, 0.0, 0.0, 0.0).unwrap(), 500);
    assert!(retransmits > 50, "{retransmits}");
}

#[test]
fn corruption_becomes_retransmission() {
    let (retransmits, _) = in_order_through(FaultConfig::new(12, 0.0, 0.0, 0.0, 0.2).unwrap(), 500);
    assert!(retransmits > 50, "{retransmits}");
}

#[test]
fn duplicates_are_dropped_by_the_receiver() {
    let (_, duplicates) = in_order_through(FaultConfig::new(13, 0.0, 0.3, 0.0, 0.0).unwrap(), 500);
    assert!(duplicates > 50, "{duplicates}");
}

#[test]
fn reordering_becomes_go_back_n() {
    let (retransmits, _) = in_order_through(FaultConfig::new(14, 0.0, 0.0, 0.3, 0.0).unwrap(), 500);
    assert!(retransmits > 50, "{retransmits}");
}

#[test]
fn every_fault_at_once_still_delivers_in_order() {
    let (retransmits, duplicates) =
        in_order_through(FaultConfig::new(15, 0.1, 0.1, 0.1, 0.1).unwrap(), 1000);
    assert!(
        retransmits > 100 && duplicates > 50,
        "{retransmits} {duplicates}"
    );
}

#[test]
fn a_hard_fault_breaks_the_connection_with_an_error_completion() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 4);
    let mut b = Node::new(&fabric, 2, 4);
    let (ca, cb) = connect(&mut a, &mut b, 65536, 65536);
    fabric.set_faults(FaultConfig::new(1, 1.0, 0.0, 0.0, 0.0).unwrap());
    a.send(ca, &message(0, 1000));
    a.poll();
    b.poll();
    assert_eq!(a.sends, vec![(ca, RcStatus::RetryExceeded)]);
    let broken = |conn| RcEvent::Broken {
        conn,
        reason: BreakReason::RetryExceeded,
    };
    assert_eq!(a.events.pop_front(), Some(broken(ca)));
    assert_eq!(b.events.pop_front(), Some(broken(cb)));
    assert!(b.recvs.is_empty());
    let stats = a.port.rc_stats();
    assert_eq!(stats.retransmits, 8, "the first attempt and 7 retries");
    assert_eq!(stats.broken, 1);
    assert_eq!(fabric.rc_connections(), 0);
    // The handle is dead at both ends.
    let slot = a.big_tx.pop().unwrap();
    let err = a.port.rc_post_send(ca, slot, 10).unwrap_err();
    assert_eq!(err.error, RcError::UnknownConnection(ca));
    assert_eq!(
        b.port.rc_disconnect(cb),
        Err(RcError::UnknownConnection(cb))
    );
}

#[test]
fn a_link_failure_breaks_every_connection_and_flushes_queued_sends() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 4);
    // c posts no big receives: a's message to it waits (RNR).
    let mut b = Node::new(&fabric, 2, 4);
    let mut c = Node::with(&fabric, PortConfig::local(3, PKey::DEFAULT), 4, 0);
    let (ab, ba) = connect(&mut a, &mut b, 65536, 65536);
    let (ac, ca) = connect(&mut a, &mut c, 65536, 65536);
    a.send(ac, &message(0, 500));
    a.poll();
    assert!(a.sends.is_empty(), "waiting for a receive at c");
    assert_eq!(fabric.break_rc(a.gid()), 2);
    a.poll();
    b.poll();
    c.poll();
    assert_eq!(a.sends, vec![(ac, RcStatus::Flushed)]);
    let down = |conn| RcEvent::Broken {
        conn,
        reason: BreakReason::LinkDown,
    };
    assert!(a.events.contains(&down(ab)) && a.events.contains(&down(ac)));
    assert_eq!(b.events.pop_front(), Some(down(ba)));
    assert_eq!(c.events.pop_front(), Some(down(ca)));
    assert_eq!(a.big_tx.len(), 8, "every big TX slot came back");
    assert_eq!(fabric.rc_connections(), 0);
}

#[test]
fn a_message_waits_for_a_receive_and_keeps_its_place() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 4);
    let mut b = Node::with(&fabric, PortConfig::local(2, PKey::DEFAULT), 4, 0);
    let (ab, _) = connect(&mut a, &mut b, 65536, 65536);
    for seq in 0..3 {
        a.send(ab, &message(seq, 300));
    }
    a.poll();
    assert!(a.sends.is_empty());
    assert!(a.port.rc_stats().rnr_waits >= 1);
    // One receive at a time: one message at a time, in order.
    let slot = b.big_rx.pop().unwrap();
    b.port.rc_post_recv(slot).unwrap();
    a.poll();
    assert_eq!(a.sends.len(), 1);
    let rest: Vec<_> = b.big_rx.drain(..).collect();
    for slot in rest {
        b.port.rc_post_recv(slot).unwrap();
    }
    a.poll();
    b.poll();
    assert_eq!(a.sends.len(), 3);
    let seqs: Vec<u8> = b.recvs.iter().map(|(_, m)| m[0]).collect();
    assert_eq!(seqs, [0, 1, 2]);
}

#[test]
fn limits_are_refused_with_a_typed_error_and_counted() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 2);
    let mut b = Node::new(&fabric, 2, 8);
    let mut c = Node::new(&fabric, 3, 8);
    let mut d = Node::new(&fabric, 4, 8);
    connect(&mut a, &mut b, 65536, 65536);
    connect(&mut a, &mut c, 65536, 65536);
    assert_eq!(
        a.port.rc_connect(d.gid(), d.qpn(), 65536),
        Err(RcError::TooManyConnections { limit: 2 })
    );
    assert_eq!(a.port.rc_stats().over_limit, 1);
    // At the passive side: d's request to a, which is full, is rejected.
    let dc = d.port.rc_connect(a.gid(), a.qpn(), 65536).unwrap();
    assert_eq!(
        d.event(),
        RcEvent::Rejected {
            conn: dc,
            reason: RejectReason::Refused
        }
    );
    assert_eq!(a.port.rc_stats().refused_at_limit, 1);
    a.poll();
    assert!(a.events.is_empty(), "a never saw the request");
    assert_eq!(d.port.rc_held(), 0);
}

#[test]
fn requests_that_cannot_be_served_are_rejected_with_a_reason() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 8);
    let b = Node::new(&fabric, 2, 8);
    let plain = fabric
        .add_port(PortConfig::local(3, PKey::DEFAULT))
        .unwrap();
    let other = Node::with(&fabric, PortConfig::local(4, PKey(0x8123)), 8, 8);
    let cases = [
        (Gid::from_parts(1, 99), b.qpn(), RejectReason::Unreachable),
        (b.gid(), Qpn::new(0x1234).unwrap(), RejectReason::NoListener),
        (plain.gid(), plain.port_attr().qpn, RejectReason::NoListener),
        (other.gid(), other.qpn(), RejectReason::Partition),
        (a.gid(), a.qpn(), RejectReason::Unreachable),
    ];
    for (gid, qpn, reason) in cases {
        let conn = a.port.rc_connect(gid, qpn, 65536).unwrap();
        assert_eq!(a.event(), RcEvent::Rejected { conn, reason }, "{gid}");
    }
    assert_eq!(a.port.rc_held(), 0);
    // The passive side refuses.
    let mut b = b;
    let conn = a.port.rc_connect(b.gid(), b.qpn(), 65536).unwrap();
    let RcEvent::Request { conn: cb, .. } = b.event() else {
        panic!("expected a request");
    };
    b.port.rc_reject(cb).unwrap();
    assert_eq!(
        a.event(),
        RcEvent::Rejected {
            conn,
            reason: RejectReason::Refused
        }
    );
    assert_eq!(b.port.rc_reject(cb), Err(RcError::UnknownConnection(cb)));
}

#[test]
fn calls_out_of_place_are_refused() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 8);
    let mut b = Node::new(&fabric, 2, 8);
    assert_eq!(
        a.port.rc_connect(b.gid(), b.qpn(), 65537),
        Err(RcError::BadMtu {
            mtu: 65537,
            max: 65536
        })
    );
    assert!(matches!(
        a.port.rc_connect(b.gid(), b.qpn(), MIN_RC_MTU - 1),
        Err(RcError::BadMtu { .. })
    ));
    let ca = a.port.rc_connect(b.gid(), b.qpn(), 4096).unwrap();
    let RcEvent::Request { conn: cb, .. } = b.event() else {
        panic!("expected a request");
    };
    // Not yet established: no sends, and the active side cannot accept.
    let slot = a.big_tx.pop().unwrap();
    let err = a.port.rc_post_send(ca, slot, 10).unwrap_err();
    assert_eq!(
        err.error,
        RcError::WrongState {
            conn: ca,
            state: ConnState::Connecting
        }
    );
    a.big_tx.push(err.slot);
    assert!(matches!(
        a.port.rc_accept(ca, 4096),
        Err(RcError::WrongState { .. })
    ));
    // Handles are per port: one a never issued means nothing to it.
    let foreign = ConnHandle(cb.0 + 5);
    assert_eq!(
        a.port.rc_disconnect(foreign),
        Err(RcError::UnknownConnection(foreign))
    );
    b.port.rc_accept(cb, 2048).unwrap();
    assert_eq!(
        b.port.rc_accept(cb, 2048),
        Err(RcError::WrongState {
            conn: cb,
            state: ConnState::Established
        })
    );
    a.poll();
    b.poll();
    // b accepts 2048: a's 2049-byte message is too long.
    a.send(ca, &message(0, 2049));
    a.poll();
    assert_eq!(a.sends, vec![(ca, RcStatus::LocalLength)]);
    assert_eq!(a.port.rc_stats().oversize, 1);
    // Disconnect: Closed here, Broken (PeerClosed) there.
    a.port.rc_disconnect(ca).unwrap();
    a.poll();
    b.poll();
    assert_eq!(a.events.pop_back(), Some(RcEvent::Closed { conn: ca }));
    assert_eq!(
        b.events.pop_back(),
        Some(RcEvent::Broken {
            conn: cb,
            reason: BreakReason::PeerClosed
        })
    );
    assert_eq!(fabric.rc_connections(), 0);
}

#[test]
fn a_dying_port_tears_its_connections_down() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 8);
    let mut b = Node::with(&fabric, PortConfig::local(2, PKey::DEFAULT), 8, 0);
    let mut c = Node::new(&fabric, 3, 8);
    let (ab, ba) = connect(&mut a, &mut b, 65536, 65536);
    let (ca, _) = connect(&mut c, &mut a, 65536, 65536);
    // b queues a message to a and a to b (b posts no receives: it waits).
    a.send(ab, &message(0, 100));
    b.send(ba, &message(1, 100));
    b.poll();
    a.poll();
    assert_eq!(b.sends.len(), 1, "b's message reached a");
    assert!(a.sends.is_empty(), "a's message waits at b");
    // a dies.
    a.port.close();
    a.poll();
    assert_eq!(a.sends, vec![(ab, RcStatus::Flushed)]);
    assert_eq!(
        a.flushed_recvs, 8,
        "every big receive (the used one was reposted)"
    );
    assert_eq!(a.recvs.len(), 1);
    b.poll();
    c.poll();
    let gone = |conn| RcEvent::Broken {
        conn,
        reason: BreakReason::PeerGone,
    };
    assert_eq!(b.events.pop_back(), Some(gone(ba)));
    assert_eq!(c.events.pop_back(), Some(gone(ca)));
    assert_eq!(fabric.rc_connections(), 0);
    assert_eq!((b.port.rc_held(), c.port.rc_held()), (0, 0));
    assert_eq!(
        a.port.rc_connect(b.gid(), b.qpn(), 4096),
        Err(RcError::Disconnected)
    );
    // Dropping a port without closing it does the same.
    let (bc, cb) = connect(&mut b, &mut c, 65536, 65536);
    let _ = bc;
    drop(b);
    c.poll();
    assert_eq!(c.events.pop_back(), Some(gone(cb)));
    assert_eq!(fabric.rc_connections(), 0);
}

#[test]
fn rc_completions_fire_the_one_notifier() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, 1, 8);
    let mut b = Node::new(&fabric, 2, 8);
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    b.port.set_notifier(Some(Arc::new(move || {
        c.fetch_add(1, Ordering::Relaxed);
    })));
    assert!(!b.port.arm_cq().unwrap());
    a.port.rc_connect(b.gid(), b.qpn(), 4096).unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 1, "the request woke b");
    assert!(b.port.arm_cq().unwrap(), "an RC completion is waiting");
    b.poll();
    assert!(!b.port.arm_cq().unwrap());
}

#[test]
fn ports_without_connected_mode_say_so() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut plain = fabric
        .add_port(PortConfig::local(1, PKey::DEFAULT))
        .unwrap();
    assert_eq!(plain.rc_caps(), None);
    assert!(
        Verbs::rc(&mut plain).is_none(),
        "found through Verbs only when on"
    );
    assert!(plain.take_big_slots().is_none());
    assert_eq!(
        plain.rc_connect(Gid::from_parts(1, 2), Qpn::new(0x49).unwrap(), 4096),
        Err(RcError::NotSupported)
    );
    assert!(plain.poll_rc().unwrap().is_none());
    let mut setup = RcSetup::local(1, 1, 1);
    setup.region = ring::Window::new_heap(100);
    assert!(matches!(
        plain.enable_rc(setup),
        Err(SimError::RegionTooSmall { .. })
    ));
    plain.enable_rc(RcSetup::local(1, 1, 1)).unwrap();
    assert!(Verbs::rc(&mut plain).is_some_and(|rc| rc.rc_caps().is_some()));
    assert!(matches!(
        plain.enable_rc(RcSetup::local(1, 1, 1)),
        Err(SimError::RcRefused(_))
    ));
    let caps = plain.rc_caps().unwrap();
    assert_eq!((caps.max_conns, caps.big.slot_size), (1, 65536));
}

#[test]
fn an_unanswered_request_times_out_at_both_ends() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    fabric.set_cm_timeout(std::time::Duration::from_millis(20));
    let mut a = Node::new(&fabric, 1, 4);
    let mut b = Node::new(&fabric, 2, 4);
    let ca = a.port.rc_connect(b.gid(), b.qpn(), 4096).unwrap();
    let RcEvent::Request { conn: cb, .. } = b.event() else {
        panic!("expected a request");
    };
    // b never answers.
    a.poll();
    assert!(a.events.is_empty(), "not yet");
    std::thread::sleep(std::time::Duration::from_millis(30));
    a.poll();
    b.poll();
    assert_eq!(
        a.events.pop_front(),
        Some(RcEvent::Rejected {
            conn: ca,
            reason: RejectReason::Timeout
        })
    );
    assert_eq!(
        b.events.pop_front(),
        Some(RcEvent::Broken {
            conn: cb,
            reason: BreakReason::PeerClosed
        })
    );
    assert_eq!(fabric.rc_connections(), 0);
    assert_eq!((a.port.rc_held(), b.port.rc_held()), (0, 0));
    assert!(b.port.rc_accept(cb, 4096).is_err(), "too late");
}
