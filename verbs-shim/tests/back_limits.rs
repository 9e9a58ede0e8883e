//! The back half's per-guest limits and its asynchronous address
//! resolution, over the sim fabric with real front halves: refusals are
//! answered and counted, what a guest held is released when it goes, and a
//! slow resolution for one guest does not hold up the others.
#![cfg(feature = "sim")]

use std::time::{Duration, Instant};

use ring::{Layout, LayoutParams, Window};
use verbs_shim::back::{BackConfig, BackHalf, Refusal};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{
    Completion, DestHandle, Gid, McastError, PKey, PathError, QKey, RxSlot, TxSlot, UdDest, Verbs,
    WcStatus,
};

type Back = BackHalf<SimPort, NoNotify>;
type Front = FrontHca<NoNotify>;

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 5,
    tx_order: 6,
    rx_order: 6,
    tx_slots: 64,
    rx_slots: 64,
    slot_size: 4096,
};

/// One guest: its back half on a sim port, and its front half.
struct Guest {
    back: Back,
    front: Front,
    tx: Vec<TxSlot>,
    rx: Vec<RxSlot>,
    events: Vec<Completion>,
}

impl Guest {
    fn new(fabric: &SimFabric, n: u16, config: BackConfig) -> Guest {
        let window = Window::new_heap(Layout::window_len_for(PARAMS).expect("layout"));
        let mut back = Back::new(window.clone(), config, NoNotify).expect("back half");
        let mut front = Front::attach(window, PARAMS, NoNotify).expect("front half");
        let setup = back.poll_guest_init().expect("init").expect("guest set up");
        let mut port = PortConfig::with_layout(n, PKey::DEFAULT, setup.slots);
        port.region = setup.region;
        back.connect(fabric.add_port(port).expect("port"))
            .expect("connect");
        assert!(front.poll_connected().expect("connected"));
        let (tx, rx) = front.take_slots().expect("slots");
        Guest {
            back,
            front,
            tx: tx.collect(),
            rx: rx.collect(),
            events: Vec::new(),
        }
    }

    fn gid(&self) -> Gid {
        self.front.port_attr().gid
    }

    /// One round of the back end's worker for this guest, then the guest
    /// reaps what came back. Returns how long the back end's part took.
    fn pump(&mut self) -> Duration {
        self.front.flush().expect("front flush");
        let started = Instant::now();
        self.back.service().expect("service");
        let took = started.elapsed();
        while let Some(c) = self.front.poll_cq().expect("front poll") {
            match c {
                Completion::Send { slot, .. } => self.tx.push(slot),
                other => self.events.push(other),
            }
        }
        took
    }

    /// Pumps until `done` holds, at most `rounds` times.
    fn pump_until(&mut self, rounds: usize, mut done: impl FnMut(&Guest) -> bool) {
        for _ in 0..rounds {
            self.pump();
            if done(self) {
                return;
            }
        }
        panic!("no progress after {rounds} rounds: {:?}", self.events);
    }

    fn paths(&self) -> Vec<Result<DestHandle, PathError>> {
        self.events
            .iter()
            .filter_map(|c| match c {
                Completion::Path { result, .. } => Some(*result),
                _ => None,
            })
            .collect()
    }

    fn joins(&self) -> Vec<Result<(), McastError>> {
        self.events
            .iter()
            .filter_map(|c| match c {
                Completion::Mcast {
                    attach: true,
                    result,
                    ..
                } => Some(*result),
                _ => None,
            })
            .collect()
    }

    fn received(&self) -> usize {
        self.events
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Completion::Recv {
                        status: WcStatus::Success,
                        ..
                    }
                )
            })
            .count()
    }
}

fn group(last: u8) -> Gid {
    Gid([
        0xff, 0x12, 0x40, 0x1b, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, last,
    ])
}

fn config() -> BackConfig {
    BackConfig::default()
}

#[test]
fn multicast_groups_past_the_limit_are_refused_and_counted() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let limits = BackConfig {
        max_mcast_groups: 2,
        ..config()
    };
    let mut g = Guest::new(&fabric, 1, limits);
    for last in 1..=3 {
        g.front.attach_mcast(group(last)).expect("attach");
    }
    g.pump_until(10, |g| g.joins().len() == 3);
    assert_eq!(
        g.joins(),
        [Ok(()), Ok(()), Err(McastError::NoResources)],
        "the third group is refused"
    );
    assert_eq!(g.back.stats().refusals_of(Refusal::McastGroups), 1);
    assert_eq!(
        fabric.stats().groups,
        2,
        "the refused group was not created"
    );
    // Joining a group it already has costs nothing; leaving one makes room
    // once the leave is answered.
    g.front.attach_mcast(group(1)).expect("attach");
    g.front.detach_mcast(group(2)).expect("detach");
    g.pump_until(10, |g| {
        g.events.iter().any(|c| {
            matches!(
                c,
                Completion::Mcast {
                    attach: false,
                    result: Ok(()),
                    ..
                }
            )
        })
    });
    g.front.attach_mcast(group(3)).expect("attach");
    g.pump_until(10, |g| g.joins().len() == 5);
    assert_eq!(g.joins()[3..], [Ok(()), Ok(())]);
    assert_eq!(g.back.stats().refusals_of(Refusal::McastGroups), 1);
    assert_eq!(g.back.held().map(|h| h.mcast_groups), Some(2));
    assert!(g.back.is_connected(), "a refusal is not a disconnect");
}

#[test]
fn destination_handles_past_the_limit_are_refused_and_counted() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let peers: Vec<Guest> = (2..=4).map(|n| Guest::new(&fabric, n, config())).collect();
    let limits = BackConfig {
        max_dests: 2,
        ..config()
    };
    let mut g = Guest::new(&fabric, 1, limits);
    for p in &peers {
        g.front.resolve(p.gid()).expect("resolve");
    }
    g.pump_until(10, |g| g.paths().len() == 3);
    let paths = g.paths();
    assert!(paths[0].is_ok() && paths[1].is_ok(), "{paths:?}");
    assert_eq!(paths[2], Err(PathError::NoResources));
    assert_eq!(g.back.stats().refusals_of(Refusal::Dests), 1);
    assert_eq!(g.back.held().map(|h| h.dests), Some(2));
}

#[test]
fn resolutions_in_progress_are_bounded_per_guest() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let slow = Guest::new(&fabric, 2, config());
    fabric.set_path_delay(slow.gid(), Some(Duration::from_millis(200)));
    let limits = BackConfig {
        max_pending_resolves: 2,
        ..config()
    };
    let mut g = Guest::new(&fabric, 1, limits);
    for _ in 0..3 {
        g.front.resolve(slow.gid()).expect("resolve");
    }
    g.pump();
    assert_eq!(g.back.stats().refusals_of(Refusal::PendingResolves), 1);
    assert_eq!(g.back.held().map(|h| h.pending_resolves), Some(2));
    // The back half answers in request order: the refusal waits behind the
    // two slow ones, then all three arrive.
    let started = Instant::now();
    while g.paths().len() < 3 && started.elapsed() < Duration::from_secs(5) {
        g.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    let paths = g.paths();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths[0].is_ok() && paths[1].is_ok(), "{paths:?}");
    assert_eq!(paths[2], Err(PathError::NoResources));
    assert_eq!(g.back.held().map(|h| h.pending_resolves), Some(0));
}

#[test]
fn a_slow_resolution_does_not_hold_up_other_guests() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let slow_peer = Guest::new(&fabric, 9, config());
    let delay = Duration::from_secs(1);
    fabric.set_path_delay(slow_peer.gid(), Some(delay));
    let mut a = Guest::new(&fabric, 1, config());
    let mut b = Guest::new(&fabric, 2, config());
    let mut c = Guest::new(&fabric, 3, config());
    for slot in c.rx.drain(..) {
        c.front.post_recv(slot).expect("post recv");
    }

    // Guest A asks for the slow path; the worker goes on at once.
    let started = Instant::now();
    a.front.resolve(slow_peer.gid()).expect("resolve");
    let took = a.pump();
    assert!(took < Duration::from_millis(100), "service took {took:?}");

    // Meanwhile B resolves C, sends it 32 packets, and C gets them, all on
    // the same (single) worker thread that also serves A.
    b.front.resolve(c.gid()).expect("resolve");
    let mut slowest = Duration::ZERO;
    let mut sent = 0;
    while c.received() < 32 {
        assert!(started.elapsed() < delay / 2, "B was held up");
        slowest = slowest.max(a.pump()).max(b.pump()).max(c.pump());
        let handle = b.paths().first().copied().map(|p| p.expect("B's path"));
        while let (Some(handle), true) = (handle, sent < 32) {
            let Some(slot) = b.tx.pop() else { break };
            let dest = UdDest {
                handle,
                qpn: c.front.port_attr().qpn,
                qkey: QKey::IPOIB_DEFAULT,
            };
            b.front.post_send(slot, 64, &dest).expect("send");
            sent += 1;
        }
    }
    assert!(a.paths().is_empty(), "A's path is still being resolved");
    assert!(
        slowest < Duration::from_millis(100),
        "a round took {slowest:?}"
    );

    // A's answer comes when the resolution finishes.
    while a.paths().is_empty() {
        assert!(started.elapsed() < delay * 5, "A's answer never came");
        a.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(started.elapsed() >= delay);
    assert!(a.paths()[0].is_ok(), "{:?}", a.paths());
}

#[test]
fn what_a_guest_held_is_released_when_it_goes() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let peer = Guest::new(&fabric, 2, config());
    let mut g = Guest::new(&fabric, 1, config());
    g.front.attach_mcast(group(1)).expect("attach");
    g.front.attach_mcast(group(2)).expect("attach");
    g.front.resolve(peer.gid()).expect("resolve");
    g.front.resolve(group(1)).expect("resolve");
    g.pump_until(10, |g| g.joins().len() == 2 && g.paths().len() == 2);
    let held = g.back.held().expect("connected");
    assert_eq!((held.dests, held.mcast_groups), (2, 2));
    let stats = fabric.stats();
    assert_eq!((stats.ports, stats.groups, stats.qpns_in_use), (2, 2, 2));
    drop(g);
    drop(peer);
    let stats = fabric.stats();
    assert_eq!((stats.ports, stats.groups, stats.qpns_in_use), (0, 0, 0));
}

/// Every receive a guest queued goes to the provider in the same service
/// pass, before its sends, whatever the batch: a peer answering those sends
/// at once must find them posted. With only a batch of receives first, a
/// TCP receiver's ACK went out with most of its reposts still in the ring,
/// and the sender's next burst was dropped for want of a receive.
#[test]
fn one_pass_posts_every_receive_before_the_sends() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let small_batch = BackConfig {
        batch: 4,
        ..config()
    };
    let mut a = Guest::new(&fabric, 1, config());
    let mut b = Guest::new(&fabric, 2, small_batch);
    for slot in a.rx.drain(..) {
        a.front.post_recv(slot).expect("post recv");
    }
    a.front.resolve(b.gid()).expect("resolve");
    a.pump_until(10, |g| g.paths().len() == 1);
    let handle = a.paths()[0].expect("A's path to B");
    b.front.resolve(a.gid()).expect("resolve");
    b.pump_until(10, |g| g.paths().len() == 1);
    let to_a = b.paths()[0].expect("B's path to A");

    // B posts all its receives and sends one packet, in one doorbell; one
    // service pass of its back half.
    let receives = b.rx.len();
    assert!(receives > 4 * 8, "{receives} receives");
    for slot in b.rx.drain(..) {
        b.front.post_recv(slot).expect("post recv");
    }
    let slot = b.tx.pop().expect("a TX slot");
    let dest = UdDest {
        handle: to_a,
        qpn: a.front.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    b.front.post_send(slot, 64, &dest).expect("send");
    b.front.flush().expect("flush");
    b.back.service().expect("service");

    // A answers with as many packets as B has receives: none is dropped.
    for _ in 0..receives {
        let slot = a.tx.pop().expect("a TX slot");
        let dest = UdDest {
            handle,
            qpn: b.front.port_attr().qpn,
            qkey: QKey::IPOIB_DEFAULT,
        };
        a.front.post_send(slot, 64, &dest).expect("send");
        if a.tx.is_empty() {
            a.pump();
        }
    }
    a.pump();
    assert_eq!(fabric.stats().totals.drop_no_recv, 0);
    b.pump_until(10, |g| g.received() == receives);
}
