//! A seat with `ip=` over a software transport and the sim fabric: the
//! seat installs the filter in every back half it builds, a spoofed send
//! comes back to the guest as `LocalProtection`, the seat's stats (and so
//! `ib-backend stats`) count it, and the directory learns the guest's port.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ipoib::DatagramSource;
use ivshmem::EventFd;
use ring::{Layout, LayoutParams, Window};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::{NoNotify, Notify};
use verbs_shim::sim::{FaultConfig, SimFabric};
use verbs_shim::{Completion, Hca, IbMtu, QKey, UdDest, Verbs, WcStatus};

use super::tests::{guest, ipv4_frame, OTHER_IP, OWN_IP};
use super::SeatDirectory;
use crate::handoff::Reporter;
use crate::provider::Fabric;
use crate::seat::{Seat, Source};
use crate::transport::{GuestNotifier, Transport};

struct Quiet;

impl Notify for Quiet {
    fn notify(&self) {}
}

/// A heap window and an eventfd, posing as a guest's transport.
struct SoftTransport {
    window: Window,
    events: Arc<EventFd>,
}

impl Transport for SoftTransport {
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
        "soft".into()
    }
    fn release(self: Box<Self>) -> String {
        "released".into()
    }
}

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 16,
    rx_slots: 16,
    slot_size: 4096,
};

#[test]
fn a_seat_with_ip_drops_and_counts_spoofed_sends() -> Result<(), Box<dyn std::error::Error>> {
    let (worker, _supervisor) = UnixStream::pair()?;
    let directory = SeatDirectory::for_guests(&[guest(Some(OWN_IP))]);
    let mut seat = Seat::new(0, guest(Some(OWN_IP)), 0x21, None, Reporter::new(worker))
        .with_directory(directory.clone());
    let fabric = Fabric::Sim(SimFabric::new(FaultConfig::NONE));
    let window = Window::new_heap(Layout::window_len_for(PARAMS)?);
    let events = Arc::new(EventFd::new()?);
    let transport = SoftTransport {
        window: window.clone(),
        events,
    };
    assert!(seat.adopt(Box::new(transport), false));
    let mut front = FrontHca::attach(window, PARAMS, NoNotify)?;
    let mut kick = |front: &mut FrontHca<NoNotify>| -> Result<(), Box<dyn std::error::Error>> {
        front.flush()?;
        assert!(!seat_kick(&mut seat, &fabric), "the session ended");
        Ok(())
    };
    // Handshake: the seat connects the guest on its next kick.
    kick(&mut front)?;
    assert!(front.poll_connected()?);
    let own = front.port_attr();
    // A path to itself, to have a destination handle.
    front.resolve(own.gid)?;
    kick(&mut front)?;
    let mut handle = None;
    while let Some(c) = front.poll_cq()? {
        if let Completion::Path { result, .. } = c {
            handle = result.ok();
        }
    }
    let dest = UdDest {
        handle: handle.ok_or("no path")?,
        qpn: own.qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    let (mut tx, _) = front.take_slots().ok_or("slots")?;
    for source in [OTHER_IP, OWN_IP] {
        let frame = ipv4_frame(source);
        let slot = tx.next().ok_or("tx slot")?;
        front.buffers().tx.slot_mut(&slot)[..frame.len()].copy_from_slice(&frame);
        front
            .post_send(slot, frame.len(), &dest)
            .map_err(|e| e.error)?;
    }
    kick(&mut front)?;
    kick(&mut front)?;
    let mut statuses = Vec::new();
    while let Some(c) = front.poll_cq()? {
        if let Completion::Send { slot, status } = c {
            statuses.push((slot.index(), status));
        }
    }
    statuses.sort_by_key(|(slot, _)| *slot);
    assert_eq!(
        statuses,
        [(0, WcStatus::LocalProtection), (1, WcStatus::Success)]
    );
    let snap = seat.snapshot();
    assert_eq!(snap.back.tx_filtered, 1);
    assert_eq!(snap.back.total_violations(), 0);
    assert!(snap.connected);
    let report = crate::stats::render("sim", 0x21, &[snap]);
    assert!(report.contains(" tx_filtered=1 "), "{report}");
    // The gateway now believes the seat's address from its port only.
    let from_seat = DatagramSource {
        qpn: own.qpn,
        gid: Some(own.gid),
    };
    assert!(directory.admits(OWN_IP, &from_seat));
    assert!(!directory.admits(OTHER_IP, &from_seat));
    Ok(())
}

fn seat_kick(seat: &mut Seat, fabric: &Fabric) -> bool {
    seat.kick(Source::Guest, fabric, IbMtu::Mtu2048)
}

/// Attaches a fresh guest window to `seat` and kicks until connected.
fn connect_guest(
    seat: &mut Seat,
    fabric: &Fabric,
) -> Result<FrontHca<NoNotify>, Box<dyn std::error::Error>> {
    let window = Window::new_heap(Layout::window_len_for(PARAMS)?);
    let transport = SoftTransport {
        window: window.clone(),
        events: Arc::new(EventFd::new()?),
    };
    assert!(seat.adopt(Box::new(transport), false));
    let mut front = FrontHca::attach(window, PARAMS, NoNotify)?;
    front.flush()?;
    assert!(!seat_kick(seat, fabric), "the session ended");
    assert!(front.poll_connected()?);
    Ok(front)
}

fn source_of(front: &FrontHca<NoNotify>) -> DatagramSource {
    let attr = front.port_attr();
    DatagramSource {
        qpn: attr.qpn,
        gid: Some(attr.gid),
    }
}

#[test]
fn the_directory_follows_the_seats_sessions() -> Result<(), Box<dyn std::error::Error>> {
    let (worker, _supervisor) = UnixStream::pair()?;
    let directory = SeatDirectory::for_guests(&[guest(Some(OWN_IP))]);
    let mut seat = Seat::new(0, guest(Some(OWN_IP)), 0x21, None, Reporter::new(worker))
        .with_directory(directory.clone());
    let fabric = Fabric::Sim(SimFabric::new(FaultConfig::NONE));

    // Registered when the port opens, before the guest sends anything.
    let first = connect_guest(&mut seat, &fabric)?;
    let old = source_of(&first);
    assert_eq!(directory.port_of(OWN_IP).map(|p| p.qpn), Some(old.qpn));
    assert!(directory.admits(OWN_IP, &old));

    // The session ends: the old port no longer speaks for the address, and
    // is no longer a seat's port for other addresses either.
    assert!(seat.end_session().is_some());
    drop(first);
    assert_eq!(directory.port_of(OWN_IP), None);
    assert!(!directory.admits(OWN_IP, &old));
    assert!(directory.admits(OTHER_IP, &old));

    // A new session: its port is believed at once, the old one is not.
    let second = connect_guest(&mut seat, &fabric)?;
    let new = source_of(&second);
    assert_ne!(new.qpn, old.qpn, "the sim fabric hands out a new QPN");
    assert!(directory.admits(OWN_IP, &new));
    assert!(!directory.admits(OWN_IP, &old));

    // The guest resets the channel on the same connection: the port is
    // closed, so its entry goes with it until the next port opens.
    let mut second = second;
    second.close();
    assert!(!seat_kick(&mut seat, &fabric), "a reset keeps the session");
    assert_eq!(directory.port_of(OWN_IP), None);
    assert!(!directory.admits(OWN_IP, &new));
    Ok(())
}

#[test]
fn an_ended_session_does_not_remove_a_newer_entry() {
    let directory = SeatDirectory::for_guests(&[guest(Some(OWN_IP))]);
    let old = verbs_shim::back::SenderPort {
        qpn: verbs_shim::Qpn::new_truncated(0x49),
        gid: verbs_shim::Gid::from_parts(0xfe80 << 48, 2),
    };
    let new = verbs_shim::back::SenderPort {
        qpn: verbs_shim::Qpn::new_truncated(0x4a),
        ..old
    };
    directory.register(OWN_IP, old);
    directory.register(OWN_IP, new);
    assert!(!directory.unregister(OWN_IP, old));
    assert_eq!(directory.port_of(OWN_IP), Some(new));
    assert!(directory.unregister(OWN_IP, new));
    assert_eq!(directory.port_of(OWN_IP), None);
}
