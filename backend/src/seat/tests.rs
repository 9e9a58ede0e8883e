//! The seat over a software transport: how a Xen session's life is
//! reported to the supervisor, counted and released, without Xen.

use super::*;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use verbs_shim::notify::Notify;
use verbs_shim::sim::{FaultConfig, SimFabric};

use crate::config::Attach;
use crate::handoff::recv_report;

#[derive(Default)]
struct Counter(AtomicU64);

impl Notify for Counter {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A heap window and an eventfd, posing as domain `domid`'s transport.
struct SoftTransport {
    window: Window,
    events: Arc<EventFd>,
    interrupts: Arc<Counter>,
    rearms: Arc<AtomicU64>,
    released: Arc<AtomicBool>,
    domid: Option<u16>,
}

impl Transport for SoftTransport {
    fn window(&self) -> Window {
        self.window.clone()
    }
    fn notifier(&self) -> GuestNotifier {
        self.interrupts.clone()
    }
    fn event_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
    fn drain_events(&mut self) -> io::Result<u64> {
        self.events.drain()
    }
    fn rearm(&mut self) {
        self.rearms.fetch_add(1, Ordering::Relaxed);
    }
    fn xen_domid(&self) -> Option<u16> {
        self.domid
    }
    fn describe(&self) -> String {
        "soft".into()
    }
    fn release(self: Box<Self>) -> String {
        self.released.store(true, Ordering::Relaxed);
        "released".into()
    }
}

struct Rig {
    seat: Seat,
    supervisor: UnixStream,
    fabric: Fabric,
    window: Window,
    events: Arc<EventFd>,
    interrupts: Arc<Counter>,
    rearms: Arc<AtomicU64>,
    released: Arc<AtomicBool>,
}

const EPOCH: u32 = 0x11;

fn rig() -> Rig {
    let (worker, supervisor) = UnixStream::pair().unwrap();
    let config = GuestConfig {
        name: "g1".into(),
        attach: Attach::XenDomain("ibguest-g1".into()),
        window: 1 << 20,
        pkeys: vec![0xffff],
        ip: None,
        ip6: None,
        limits: Default::default(),
    };
    let seat = Seat::new(0, config, EPOCH, None, Reporter::new(worker));
    Rig {
        seat,
        supervisor,
        fabric: Fabric::Sim(SimFabric::new(FaultConfig::NONE)),
        window: Window::new_heap(1 << 20),
        events: Arc::new(EventFd::new().unwrap()),
        interrupts: Arc::default(),
        rearms: Arc::default(),
        released: Arc::default(),
    }
}

impl Rig {
    fn transport(&self, domid: u16) -> Box<dyn Transport> {
        Box::new(SoftTransport {
            window: self.window.clone(),
            events: self.events.clone(),
            interrupts: self.interrupts.clone(),
            rearms: self.rearms.clone(),
            released: self.released.clone(),
            domid: Some(domid),
        })
    }

    fn kick(&mut self) -> bool {
        self.seat.kick(Source::Guest, &self.fabric, IbMtu::Mtu2048)
    }

    /// The next report, if one was sent.
    fn report(&self) -> Option<Report> {
        self.supervisor.set_nonblocking(true).unwrap();
        let r = match recv_report(&self.supervisor) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        };
        self.supervisor.set_nonblocking(false).unwrap();
        r
    }
}

#[test]
fn a_xen_session_is_reported_served_and_disconnected_on_a_violation() {
    let mut r = rig();
    assert!(r.seat.adopt(r.transport(5), false));
    assert_eq!(r.report(), Some(Report::XenConnected { seat: 0, domid: 5 }));
    let header = ring::Header::new(&r.window).unwrap();
    assert_eq!(header.backend_state(), ring::State::InitWait);
    assert_eq!(header.epoch(), EPOCH);
    assert!(
        r.interrupts.0.load(Ordering::Relaxed) >= 1,
        "InitWait is notified"
    );

    // Guest notifications are drained, counted, and re-armed after the
    // service round.
    r.events.notify().unwrap();
    r.events.notify().unwrap();
    assert!(!r.kick());
    assert_eq!(r.seat.snapshot().counters.doorbells, 2);
    assert_eq!(r.rearms.load(Ordering::Relaxed), 1);

    // The guest attaches to an epoch we never announced: disconnected,
    // counted, released, and the supervisor told why.
    header.set_guest_epoch(0x999);
    header.set_guest_state(ring::State::Initialised);
    r.events.notify().unwrap();
    assert!(r.kick(), "the session ended");
    match r.report() {
        Some(Report::XenFailed {
            seat: 0,
            domid: 5,
            reason,
        }) => assert!(reason.contains("epoch"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(r.released.load(Ordering::Relaxed));
    let snap = r.seat.snapshot();
    assert!(!snap.attached);
    assert_eq!(snap.counters.violation_disconnects, 1);
    assert_eq!(snap.counters.disconnects, 1);
}

#[test]
fn the_supervisor_ends_only_the_session_of_that_domain() {
    let mut r = rig();
    assert!(r.seat.adopt(r.transport(5), false));
    r.report();
    r.seat.end_xen(6, EndReason::DomainGone);
    assert!(
        r.seat.snapshot().attached,
        "another domain's end is ignored"
    );
    assert!(!r.released.load(Ordering::Relaxed));
    r.seat.end_xen(5, EndReason::DomainGone);
    assert!(r.released.load(Ordering::Relaxed));
    let snap = r.seat.snapshot();
    assert!(!snap.attached);
    assert_eq!(snap.counters.domain_releases, 1);
    assert_eq!(snap.counters.reclaims, 1);
    assert_eq!(r.report(), None, "the supervisor asked; nothing to report");

    // A restarted worker takes the same domain over with a new epoch.
    assert!(r.seat.adopt(r.transport(5), true));
    assert_eq!(r.report(), Some(Report::XenConnected { seat: 0, domid: 5 }));
    let header = ring::Header::new(&r.window).unwrap();
    assert_ne!(header.epoch(), EPOCH, "the guest must see the epoch change");
    assert_eq!(r.seat.snapshot().counters.restarts, 1);
    r.seat.end_xen(5, EndReason::FrontendClosed);
    assert_eq!(r.seat.snapshot().counters.guest_closes, 1);
}

#[test]
fn failed_and_refused_setups_are_counted() {
    let mut r = rig();
    r.seat
        .xen_failed(5, "cannot bind its event channel 9: EINVAL".into());
    assert_eq!(
        r.report(),
        Some(Report::XenFailed {
            seat: 0,
            domid: 5,
            reason: "cannot bind its event channel 9: EINVAL".into()
        })
    );
    r.seat.xen_refused(5);
    let c = r.seat.snapshot().counters;
    assert_eq!((c.xen_failures, c.xen_refused), (1, 1));
    // A window too small for the header cannot be served.
    r.window = Window::new_heap(64);
    assert!(!r.seat.adopt(r.transport(5), false));
    assert!(matches!(
        r.report(),
        Some(Report::XenFailed { domid: 5, .. })
    ));
    assert_eq!(r.seat.snapshot().counters.xen_failures, 2);
}

#[test]
fn snapshot_into_reuses_the_name_and_matches_snapshot() {
    let r = rig();
    let mut slot = None;
    r.seat.snapshot_into(&mut slot);
    let first = slot.as_ref().map(|s| (s.name.clone(), s.name.as_ptr()));
    r.seat.snapshot_into(&mut slot);
    let snap = slot.expect("a snapshot");
    let fresh = r.seat.snapshot();
    assert_eq!(snap.name, fresh.name);
    assert_eq!(snap.attached, fresh.attached);
    // The second publication kept the first one's string.
    assert_eq!(first, Some((snap.name.clone(), snap.name.as_ptr())));
}
