//! A seat against a guest that asks too much: a slow address resolution
//! does not hold up the worker's service round (the seat's `Wake`
//! descriptor fires when it is done) and what the guest held is released
//! with it; a port that cannot be opened disconnects the guest, counted.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivshmem::EventFd;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ring::{LayoutParams, Window};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::{NoNotify, Notify};
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric};
use verbs_shim::{Completion, IbMtu, PKey, Verbs};

use crate::config::{Attach, GuestConfig};
use crate::handoff::Reporter;
use crate::provider::Fabric;
use crate::seat::{Seat, Source};
use crate::transport::{GuestNotifier, Transport};

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 8,
    rx_slots: 8,
    slot_size: 4096,
};

struct Quiet;

impl Notify for Quiet {
    fn notify(&self) {}
}

/// A heap window and an eventfd, posing as an ivshmem client.
struct HeapTransport {
    window: Window,
    events: EventFd,
}

impl Transport for HeapTransport {
    fn window(&self) -> Window {
        self.window.clone()
    }
    fn notifier(&self) -> GuestNotifier {
        Arc::new(Quiet)
    }
    fn event_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
    fn drain_events(&mut self) -> io::Result<u64> {
        self.events.drain()
    }
    fn describe(&self) -> String {
        "heap".into()
    }
    fn release(self: Box<Self>) -> String {
        "released".into()
    }
}

fn readable(fd: BorrowedFd<'_>, within: Duration) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = u16::try_from(within.as_millis()).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

fn seat_and_guest(window: &Window) -> Seat {
    let config = GuestConfig {
        name: "g1".into(),
        attach: Attach::Socket("/tmp/g1.sock".into()),
        window: 1 << 20,
        pkeys: vec![0xffff],
        ip: None,
        ip6: None,
        limits: Default::default(),
    };
    let mut seat = Seat::new(0, config, 7, None, Reporter::default());
    let transport = HeapTransport {
        window: window.clone(),
        events: EventFd::new().expect("eventfd"),
    };
    assert!(seat.adopt(Box::new(transport), false));
    seat
}

#[test]
fn a_port_that_cannot_be_opened_disconnects_the_guest_and_is_counted() {
    let sim = SimFabric::new(FaultConfig::NONE);
    let fabric = Fabric::Sim(sim.clone());
    // Seat 0's port would be fe80::1, which is taken.
    let _squatter = sim
        .add_port(PortConfig::local(1, PKey::DEFAULT))
        .expect("port");
    let window = Window::new_heap(1 << 20);
    let mut seat = seat_and_guest(&window);
    let _front = FrontHca::attach(window, PARAMS, NoNotify).expect("front");
    assert!(seat.kick(Source::Guest, &fabric, IbMtu::Mtu2048), "ended");
    let snap = seat.snapshot();
    assert!(!snap.attached);
    assert_eq!(snap.counters.port_refusals, 1);
    assert_eq!(snap.qps_open, 0, "the QP's place was given back");
}

#[test]
fn a_slow_resolution_wakes_the_seat_when_done_and_never_blocks_it() {
    let sim = SimFabric::new(FaultConfig::NONE);
    let fabric = Fabric::Sim(sim.clone());
    let peer = sim
        .add_port(PortConfig::local(9, PKey::DEFAULT))
        .expect("peer port");
    let delay = Duration::from_secs(1);
    sim.set_path_delay(peer.gid(), Some(delay));

    let window = Window::new_heap(1 << 20);
    let mut seat = seat_and_guest(&window);
    let mut front = FrontHca::attach(window, PARAMS, NoNotify).expect("front");
    assert!(!seat.kick(Source::Guest, &fabric, IbMtu::Mtu2048));
    assert!(front.poll_connected().expect("connected"));
    assert_eq!(seat.snapshot().qps_open, 1);

    let started = Instant::now();
    front.resolve(peer.gid()).expect("resolve");
    front.flush().expect("flush");
    assert!(!seat.kick(Source::Guest, &fabric, IbMtu::Mtu2048));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(200), "the round took {took:?}");
    assert!(matches!(front.poll_cq(), Ok(None)), "no answer yet");

    // The seat sleeps until its Wake descriptor fires: when the path is
    // resolved, not before.
    let wake = seat.fd(Source::Wake).expect("wake fd");
    assert!(
        !readable(wake, Duration::from_millis(300)),
        "woken too early"
    );
    assert!(readable(wake, delay * 5), "never woken");
    assert!(started.elapsed() >= delay);
    assert!(!seat.kick(Source::Wake, &fabric, IbMtu::Mtu2048));
    match front.poll_cq() {
        Ok(Some(Completion::Path { dgid, result })) => {
            assert_eq!(dgid, peer.gid());
            assert!(result.is_ok(), "{result:?}");
        }
        other => panic!("expected the path, got {other:?}"),
    }

    // The guest goes: its QP, port and handles go with it.
    seat.end_session();
    assert_eq!(seat.snapshot().qps_open, 0);
    let stats = sim.stats();
    assert_eq!((stats.ports, stats.qpns_in_use, stats.groups), (1, 1, 0));
}
