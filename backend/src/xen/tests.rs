//! `XenSeats` (the real xenstore client and the device logic together)
//! against a fake xenstored on a UNIX socket.

use super::*;
use crate::config::{Attach, GuestConfig};
use crate::xen::fake::{FakeStore, FakeXenstored};
use std::time::Duration;

fn config(xenstore: &Path) -> Config {
    let mut c = Config::load(None, &crate::config::Overrides::default()).unwrap();
    c.xenstore = Some(xenstore.to_path_buf());
    c.guests = vec![GuestConfig {
        name: "g1".into(),
        attach: Attach::XenDomain("ibguest-g1".into()),
        window: 8 << 20,
        pkeys: vec![0xffff],
        ip: None,
        ip6: None,
        limits: Default::default(),
    }];
    c
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ibxs-{name}-{}.sock", std::process::id()))
}

/// Runs the supervisor's part of the loop until `done` holds or 5 s pass.
fn run_until(
    xen: &mut XenSeats,
    server: &FakeXenstored,
    out: &mut Vec<Handoff>,
    mut done: impl FnMut(&mut FakeStore, &[Handoff]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if server.with(|s| done(s, out)) {
            return;
        }
        let readable = xen.fd().is_some_and(|fd| {
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16)).unwrap_or(0) > 0
        });
        if readable {
            xen.readable(out);
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        xen.tick(out);
    }
    panic!("timed out");
}

fn publish(s: &mut FakeStore, domid: u16) {
    let fe = format!("/local/domain/{domid}/device/ibchan/0");
    for (node, value) in [
        ("window-pages", "2048"),
        ("dir-pages", "2"),
        ("dir-ref-0", "100"),
        ("dir-ref-1", "101"),
        ("event-channel", "7"),
        ("protocol", "ibchan-1"),
        ("state", "3"),
    ] {
        s.put(&format!("{fe}/{node}"), value);
    }
}

const BE5: &str = "/local/domain/0/backend/ibchan/5/0/state";

#[test]
fn a_domain_is_served_over_a_real_connection_and_survives_a_reconnect() {
    let path = socket_path("serve");
    let server = FakeXenstored::start(&path, FakeStore::new());
    let mut xen = XenSeats::open(&config(&path)).unwrap().expect("a Xen seat");
    let mut out = Vec::new();
    xen.start(&mut out).unwrap();
    assert!(out.is_empty());

    server.with(|s| s.create_domain(5, "ibguest-g1"));
    run_until(&mut xen, &server, &mut out, |s, _| {
        s.get(BE5).as_deref() == Some("2")
    });
    server.with(|s| publish(s, 5));
    run_until(&mut xen, &server, &mut out, |_, out| !out.is_empty());
    assert!(matches!(
        out.as_slice(),
        [Handoff::Xen {
            seat: 0,
            domid: 5,
            restart: false,
            ..
        }]
    ));
    out.clear();

    // xenstored drops us just as the worker reports the session connected:
    // the connection is reopened, the watches set again, the lost write
    // made, and the device followed as before.
    server.disconnect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while xen.fd().is_some() {
        assert!(
            Instant::now() < deadline,
            "the lost connection went unnoticed"
        );
        xen.readable(&mut out);
        std::thread::sleep(Duration::from_millis(10));
    }
    xen.report(&Report::XenConnected { seat: 0, domid: 5 }, &mut out);
    run_until(&mut xen, &server, &mut out, |s, _| {
        s.watches
            .iter()
            .any(|(p, _)| p.ends_with("/ibchan/0/state"))
            && s.get(BE5).as_deref() == Some("4")
    });
    assert!(out.is_empty(), "the session carries on");
    assert_eq!(xen.sessions().len(), 1);
    server.with(|s| s.destroy_domain(5));
    run_until(&mut xen, &server, &mut out, |_, out| !out.is_empty());
    assert!(matches!(
        out.as_slice(),
        [Handoff::End {
            seat: 0,
            domid: 5,
            reason: crate::handoff::EndReason::DomainGone
        }]
    ));
    assert!(!server.with(|s| s.exists("/local/domain/0/backend/ibchan/5")));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_own_domid_comes_from_xenstore() {
    let path = socket_path("domid");
    let mut store = FakeStore::new();
    store.nodes.clear();
    store.put("/local/domain/3/name", "driver-domain");
    // The fake resolves relative paths as-is; the daemon would resolve
    // "domid" to /local/domain/<own>/domid.
    store.put("domid", "3");
    let server = FakeXenstored::start(&path, store);
    let mut xen = XenSeats::open(&config(&path)).unwrap().expect("a Xen seat");
    let mut out = Vec::new();
    xen.start(&mut out).unwrap();
    server.with(|s| s.create_domain(5, "ibguest-g1"));
    run_until(&mut xen, &server, &mut out, |s, _| {
        s.get("/local/domain/3/backend/ibchan/5/0/state").as_deref() == Some("2")
    });
    assert_eq!(
        server.with(|s| s.get("/local/domain/5/device/ibchan/0/backend-id")),
        Some("3".into())
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_missing_xenstore_is_named() {
    let e = xenstore_path(Some(Path::new("/nonexistent/xs"))).unwrap_err();
    assert!(e.contains("no xenstore at /nonexistent/xs"), "{e}");
    if !Path::new(XENSTORED_SOCKET).exists() && !Path::new(XENBUS_DEVICE).exists() {
        let e = xenstore_path(None).unwrap_err();
        assert_eq!(
            e,
            "no xenstore: /run/xenstored/socket and /dev/xen/xenbus are absent; is this dom0 with xenstored running?"
        );
    }
    let mut c = config(Path::new("/nonexistent/xs"));
    assert!(XenSeats::open(&c).is_err());
    c.guests[0].attach = Attach::Socket("/tmp/x.sock".into());
    assert!(
        XenSeats::open(&c).unwrap().is_none(),
        "no Xen seat, no xenstore"
    );
}
