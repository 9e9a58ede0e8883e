use super::*;
use crate::xen::fake::FakeStore;
use crate::xen::store::{Perms, NO_TX};

const MAX: u32 = 2048;

/// A one-line summary of a handoff, to compare.
fn brief(h: &Handoff) -> String {
    match h {
        Handoff::Xen {
            seat,
            restart,
            domid,
            publication: p,
        } => format!(
            "xen seat={seat} domid={domid} restart={restart} pages={} dirs={:?} port={}",
            p.window_pages, p.dir_refs, p.event_channel
        ),
        Handoff::End {
            seat,
            domid,
            reason,
        } => format!("end seat={seat} domid={domid} {reason:?}"),
        Handoff::XenRefused { seat, domid } => format!("refused seat={seat} domid={domid}"),
        Handoff::Session { seat, .. } => format!("session seat={seat}"),
        Handoff::Refused { seat } => format!("ivshmem-refused seat={seat}"),
    }
}

struct Harness {
    xs: FakeStore,
    dev: Devices,
    out: Vec<Handoff>,
}

impl Harness {
    fn new(seats: &[(&str, &str)]) -> Harness {
        Harness::with_store(FakeStore::new(), seats)
    }

    fn with_store(xs: FakeStore, seats: &[(&str, &str)]) -> Harness {
        let specs = seats
            .iter()
            .enumerate()
            .map(|(i, (name, domain))| SeatSpec {
                seat: i as u32,
                name: (*name).into(),
                domain: (*domain).into(),
                max_pages: MAX,
            })
            .collect();
        let mut h = Harness {
            xs,
            dev: Devices::new(0, specs),
            out: Vec::new(),
        };
        h.dev.start(&mut h.xs, &mut h.out).expect("start");
        h.deliver();
        h
    }

    /// Delivers every fired watch, as the supervisor loop does.
    fn deliver(&mut self) {
        for _ in 0..1000 {
            let Some((path, token)) = self.xs.events.pop_front() else {
                return;
            };
            self.dev
                .watch_event(&mut self.xs, &path, &token, &mut self.out)
                .expect("watch event");
        }
        panic!("watch events never settle");
    }

    fn take(&mut self) -> Vec<String> {
        self.out.drain(..).map(|h| brief(&h)).collect()
    }

    fn fe(&self, domid: u16, node: &str) -> Option<String> {
        self.xs
            .get(&format!("/local/domain/{domid}/device/ibchan/0/{node}"))
    }

    fn be(&self, domid: u16, node: &str) -> Option<String> {
        self.xs
            .get(&format!("/local/domain/0/backend/ibchan/{domid}/0/{node}"))
    }

    /// The guest writes a node of its frontend.
    fn guest_writes(&mut self, domid: u16, node: &str, value: &str) {
        self.xs.put(
            &format!("/local/domain/{domid}/device/ibchan/0/{node}"),
            value,
        );
        self.deliver();
    }

    /// The guest publishes a good channel and goes Initialised.
    fn publish(&mut self, domid: u16, pages: u32, port: u32) {
        self.write_publication(domid, pages, port);
        self.guest_writes(domid, "state", "3");
    }

    /// The guest writes a good channel's nodes (not its state).
    fn write_publication(&mut self, domid: u16, pages: u32, port: u32) {
        let dirs = pages.div_ceil(1024);
        self.guest_writes(domid, "window-pages", &pages.to_string());
        self.guest_writes(domid, "dir-pages", &dirs.to_string());
        for i in 0..dirs {
            self.guest_writes(domid, &format!("dir-ref-{i}"), &(100 + i).to_string());
        }
        self.guest_writes(domid, "event-channel", &port.to_string());
        self.guest_writes(domid, "protocol", "ibchan-1");
    }

    fn report(&mut self, r: Report) {
        self.dev.report(&mut self.xs, &r).expect("report");
        self.deliver();
    }

    fn connected(&mut self, seat: u32, domid: u16) {
        self.report(Report::XenConnected { seat, domid });
    }
}

#[test]
fn a_domain_is_attached_served_released_and_attached_again() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    assert!(h.take().is_empty());
    assert!(!h.xs.exists("/local/domain/0/backend/ibchan"));

    // The domain appears: the back end writes the device nodes.
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    assert!(h.take().is_empty());
    assert_eq!(
        h.be(5, "frontend").as_deref(),
        Some("/local/domain/5/device/ibchan/0")
    );
    assert_eq!(h.be(5, "frontend-id").as_deref(), Some("5"));
    assert_eq!(h.be(5, "seat").as_deref(), Some("g1"));
    assert_eq!(h.be(5, "max-window-pages").as_deref(), Some("2048"));
    assert_eq!(h.be(5, "state").as_deref(), Some("2"), "InitWait");
    assert_eq!(
        h.fe(5, "backend").as_deref(),
        Some("/local/domain/0/backend/ibchan/5/0")
    );
    assert_eq!(h.fe(5, "backend-id").as_deref(), Some("0"));
    assert_eq!(h.fe(5, "state").as_deref(), Some("1"), "Initialising");
    // The back end owns its directory and the guest may read it; the guest
    // owns the frontend directory and the back end may read it.
    let backend = Perms {
        owner: 0,
        readers: vec![5],
    };
    let frontend = Perms {
        owner: 5,
        readers: vec![0],
    };
    for node in [
        "",
        "/frontend",
        "/frontend-id",
        "/seat",
        "/max-window-pages",
        "/state",
    ] {
        let path = format!("/local/domain/0/backend/ibchan/5/0{node}");
        assert_eq!(h.xs.perms(&path).as_ref(), Some(&backend), "{path}");
    }
    for node in ["", "/backend", "/backend-id", "/state"] {
        let path = format!("/local/domain/5/device/ibchan/0{node}");
        assert_eq!(h.xs.perms(&path).as_ref(), Some(&frontend), "{path}");
    }

    // The frontend publishes: one handoff, with what it published.
    h.publish(5, 2048, 7);
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=5 restart=false pages=2048 dirs=[100, 101] port=7"]
    );
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
    h.connected(0, 5);
    assert_eq!(h.be(5, "state").as_deref(), Some("4"), "Connected");
    h.guest_writes(5, "state", "4");
    assert!(h.take().is_empty());
    // A new worker would get the session back.
    let again: Vec<String> = h.dev.sessions().iter().map(brief).collect();
    assert_eq!(
        again,
        ["xen seat=0 domid=5 restart=true pages=2048 dirs=[100, 101] port=7"]
    );

    // The domain is destroyed: the session ends, the nodes go, nothing is
    // recreated under the dead domain's home.
    h.xs.destroy_domain(5);
    h.deliver();
    assert_eq!(h.take(), ["end seat=0 domid=5 DomainGone"]);
    assert!(!h.xs.exists("/local/domain/0/backend/ibchan/5"));
    assert!(!h.xs.nodes.keys().any(|k| k.starts_with("/local/domain/5")));
    assert!(h.dev.sessions().is_empty());
    assert_eq!(h.dev.bound_domid(0), None);

    // Same name, new domid: everything starts fresh.
    h.xs.create_domain(6, "ibguest-g1");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(6));
    assert_eq!(h.be(6, "state").as_deref(), Some("2"));
    assert_eq!(h.fe(6, "state").as_deref(), Some("1"));
    assert_eq!(
        h.fe(6, "backend").as_deref(),
        Some("/local/domain/0/backend/ibchan/6/0")
    );
    h.publish(6, 1, 3);
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=6 restart=false pages=1 dirs=[100] port=3"]
    );
    let c = h.dev.counters();
    assert_eq!((c.bound, c.handed, c.connected, c.released), (2, 2, 1, 1));
}

#[test]
fn bad_publications_are_refused_and_counted_and_other_seats_carry_on() {
    let mut h = Harness::new(&[("g1", "ibguest-g1"), ("g2", "ibguest-g2")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.xs.create_domain(6, "ibguest-g2");
    h.deliver();

    // Each of these is refused; the guest resets (Initialising) in between.
    let bad: &[(&str, &str)] = &[
        ("window-pages", "4096"), // over the seat's limit
        ("window-pages", "0"),
        ("window-pages", "lots"),
        ("dir-pages", "3"),
        ("dir-ref-1", "2"), // a reserved ref
        ("event-channel", "0"),
        ("event-channel", "131072"),
        ("protocol", "ibchan-2"),
    ];
    for (node, value) in bad {
        h.guest_writes(5, "state", "1");
        assert_eq!(h.be(5, "state").as_deref(), Some("2"), "{node}={value}");
        h.write_publication(5, 2048, 7);
        h.guest_writes(5, node, value);
        h.guest_writes(5, "state", "3");
        assert_eq!(h.take(), ["refused seat=0 domid=5"], "{node}={value}");
        assert_eq!(
            h.be(5, "state").as_deref(),
            Some("6"),
            "{node}={value}: Closed"
        );
        // Re-publishing without a reset is ignored.
        h.guest_writes(5, "state", "3");
        assert!(h.take().is_empty());
    }
    assert_eq!(h.dev.counters().refused, bad.len() as u64);
    // A missing node is refused too.
    h.guest_writes(5, "state", "1");
    h.xs.rm(NO_TX, "/local/domain/5/device/ibchan/0/protocol")
        .unwrap();
    h.guest_writes(5, "state", "3");
    assert_eq!(h.take(), ["refused seat=0 domid=5"]);

    // The other seat is untouched and connects.
    h.publish(6, 512, 4);
    assert_eq!(
        h.take(),
        ["xen seat=1 domid=6 restart=false pages=512 dirs=[100] port=4"]
    );
    h.connected(1, 6);
    assert_eq!(h.be(6, "state").as_deref(), Some("4"));

    // And the refused guest can still connect once it behaves.
    h.guest_writes(5, "state", "6");
    assert_eq!(h.be(5, "state").as_deref(), Some("2"), "Closed -> InitWait");
    h.publish(5, 2048, 7);
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=5 restart=false pages=2048 dirs=[100, 101] port=7"]
    );
}

#[test]
fn a_worker_failure_closes_the_device_until_the_frontend_resets() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    h.publish(5, 64, 9);
    assert_eq!(h.take().len(), 1);
    h.report(Report::XenFailed {
        seat: 0,
        domid: 5,
        reason: "cannot map its 64-page window read-write".into(),
    });
    assert_eq!(h.be(5, "state").as_deref(), Some("6"));
    assert_eq!(h.dev.counters().failed, 1);
    assert!(h.dev.sessions().is_empty());
    // A late "connected" for the failed session changes nothing.
    h.connected(0, 5);
    assert_eq!(h.be(5, "state").as_deref(), Some("6"));
    h.guest_writes(5, "state", "5");
    assert_eq!(h.be(5, "state").as_deref(), Some("6"));
    h.guest_writes(5, "state", "6");
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
    h.guest_writes(5, "state", "3");
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=5 restart=false pages=64 dirs=[100] port=9"]
    );
}

#[test]
fn a_closing_frontend_ends_the_session_and_may_connect_again() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    h.publish(5, 2048, 7);
    h.connected(0, 5);
    h.guest_writes(5, "state", "4");
    h.take();
    h.guest_writes(5, "state", "5");
    assert_eq!(h.take(), ["end seat=0 domid=5 FrontendClosed"]);
    assert_eq!(h.be(5, "state").as_deref(), Some("6"));
    h.guest_writes(5, "state", "6");
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
    assert!(h.take().is_empty());
    h.guest_writes(5, "state", "3");
    assert_eq!(h.take().len(), 1);
    // A frontend that resets to Initialising while connected also ends it.
    h.connected(0, 5);
    h.guest_writes(5, "state", "1");
    assert_eq!(h.take(), ["end seat=0 domid=5 FrontendClosed"]);
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
    assert_eq!(h.dev.counters().closed, 2);
}

#[test]
fn a_removed_frontend_directory_is_written_again() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    h.publish(5, 2048, 7);
    h.connected(0, 5);
    h.take();
    h.xs.rm(NO_TX, "/local/domain/5/device/ibchan").unwrap();
    h.deliver();
    assert_eq!(h.take(), ["end seat=0 domid=5 FrontendClosed"]);
    assert_eq!(h.fe(5, "state").as_deref(), Some("1"));
    assert_eq!(h.fe(5, "backend-id").as_deref(), Some("0"));
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
}

fn published_store(frontend_state: &str, with_backend: bool) -> FakeStore {
    let mut xs = FakeStore::new();
    xs.put("/local/domain/5/name", "ibguest-g1");
    xs.introduced.insert(5);
    let fe = "/local/domain/5/device/ibchan/0";
    for (node, value) in [
        ("window-pages", "2048"),
        ("dir-pages", "2"),
        ("dir-ref-0", "100"),
        ("dir-ref-1", "101"),
        ("event-channel", "7"),
        ("protocol", "ibchan-1"),
        ("backend", "/local/domain/0/backend/ibchan/5/0"),
        ("backend-id", "0"),
        ("state", frontend_state),
    ] {
        xs.put(&format!("{fe}/{node}"), value);
    }
    if with_backend {
        xs.put("/local/domain/0/backend/ibchan/5/0/state", "4");
    }
    xs
}

#[test]
fn a_restarted_supervisor_adopts_a_connected_frontend() {
    let mut h = Harness::with_store(published_store("4", true), &[("g1", "ibguest-g1")]);
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=5 restart=true pages=2048 dirs=[100, 101] port=7"]
    );
    // Nothing of the guest's was rewritten.
    assert_eq!(h.fe(5, "state").as_deref(), Some("4"));
    h.connected(0, 5);
    assert_eq!(h.be(5, "state").as_deref(), Some("4"));
    assert_eq!(h.dev.sessions().len(), 1);
}

#[test]
fn a_frontend_that_published_first_keeps_its_state() {
    let mut h = Harness::with_store(published_store("3", false), &[("g1", "ibguest-g1")]);
    assert_eq!(
        h.take(),
        ["xen seat=0 domid=5 restart=false pages=2048 dirs=[100, 101] port=7"]
    );
    assert_eq!(h.fe(5, "state").as_deref(), Some("3"));
    assert_eq!(h.be(5, "frontend-id").as_deref(), Some("5"));
}

#[test]
fn conflicting_transactions_are_retried() {
    let mut xs = FakeStore::new();
    xs.conflicts = 2;
    let mut h = Harness::with_store(xs, &[("g1", "ibguest-g1")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    assert_eq!(h.xs.commits, 3);
    assert_eq!(h.be(5, "state").as_deref(), Some("2"));
    assert_eq!(h.fe(5, "backend-id").as_deref(), Some("0"));
}

#[test]
fn a_refused_write_fails_that_seat_only() {
    let mut xs = FakeStore::new();
    xs.read_only = Some("/local/domain/5".into());
    let mut h = Harness::with_store(xs, &[("g1", "ibguest-g1"), ("g2", "ibguest-g2")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.xs.read_only = Some("/local/domain/5/device".into());
    h.xs.create_domain(6, "ibguest-g2");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(5));
    assert_eq!(h.fe(5, "state"), None);
    assert_eq!(h.be(6, "state").as_deref(), Some("2"));
    h.publish(6, 16, 3);
    assert_eq!(h.take().len(), 1);
}

#[test]
fn domains_under_construction_dead_homes_and_namesakes_are_handled() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    // Named but not yet introduced (the toolstack is still building it):
    // not bound until its @introduceDomain.
    h.xs.put("/local/domain/5/name", "ibguest-g1");
    h.xs.create_domain(3, "other");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), None);
    h.xs.introduced.insert(5);
    h.xs.fire_special("@introduceDomain");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(5));
    // Another domain's death does not release it.
    h.xs.destroy_domain(3);
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(5));
    // A second domain of the same name is ignored while the first lives.
    h.xs.create_domain(8, "ibguest-g1");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(5));
    assert!(!h.xs.exists("/local/domain/8/device/ibchan"));
    // xenstored forgets domain 5 but its home is left behind: released
    // (and not bound again), and the namesake gets the seat.
    h.xs.introduced.remove(&5);
    h.xs.fire_special("@releaseDomain");
    h.deliver();
    assert_eq!(h.dev.bound_domid(0), Some(8));
    assert_eq!(h.be(8, "state").as_deref(), Some("2"));
    assert!(!h.xs.exists("/local/domain/5/device/ibchan/0"));
    assert!(!h.xs.exists("/local/domain/0/backend/ibchan/5"));
    assert_eq!(h.dev.counters().released, 1);
}

#[test]
fn a_renamed_domain_loses_its_seat() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    h.xs.create_domain(5, "ibguest-g1");
    h.deliver();
    h.publish(5, 8, 2);
    h.take();
    h.xs.put("/local/domain/5/name", "something-else");
    h.xs.fire_special("@releaseDomain");
    h.deliver();
    assert_eq!(h.take(), ["end seat=0 domid=5 DomainGone"]);
    assert_eq!(h.dev.bound_domid(0), None);
    // Its home is still there, so its frontend directory is cleaned up too.
    assert!(!h.xs.exists("/local/domain/5/device/ibchan/0"));
}

#[test]
fn stale_reports_and_unknown_watches_are_ignored() {
    let mut h = Harness::new(&[("g1", "ibguest-g1")]);
    h.connected(0, 9);
    h.report(Report::XenFailed {
        seat: 3,
        domid: 9,
        reason: "x".into(),
    });
    h.dev
        .watch_event(&mut h.xs, "/x", "ibchan:fe:0:not-a-domid", &mut h.out)
        .unwrap();
    h.dev
        .watch_event(&mut h.xs, "/x", "someone-else", &mut h.out)
        .unwrap();
    assert!(h.take().is_empty());
    assert_eq!(h.dev.counters(), DeviceCounters::default());
}
