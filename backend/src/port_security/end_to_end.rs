//! The filter in a back half on the sim fabric: guest A (seat `ip=`
//! 10.77.0.2) sends raw frames through the real channel to guest B.
//! Spoofed ones come back to A as `LocalProtection` and never reach B.

use std::error::Error;

use ring::{Layout, LayoutParams, Window};
use verbs_shim::back::{BackConfig, BackHalf};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{Completion, Hca, PKey, QKey, TxSlots, UdDest, Verbs, WcStatus};

use super::tests::{guest, ipv4_frame, ipv6_frame, OTHER_IP, OWN_IP, OWN_IP6};
use super::{filter_for, SeatDirectory};
use crate::config::GuestConfig;

type BoxError = Box<dyn Error>;
type Channel = (Window, BackHalf<SimPort, NoNotify>, FrontHca<NoNotify>);

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 16,
    rx_slots: 16,
    slot_size: 4096,
};

fn channel(fabric: &SimFabric, port: u16) -> Result<Channel, BoxError> {
    let window = Window::new_heap(Layout::window_len_for(PARAMS)?);
    let mut back = BackHalf::new(window.clone(), BackConfig::default(), NoNotify)?;
    let mut front = FrontHca::attach(window.clone(), PARAMS, NoNotify)?;
    let setup = back.poll_guest_init()?.ok_or("no guest init")?;
    let mut config = PortConfig::with_layout(port, PKey::DEFAULT, setup.slots);
    config.region = setup.region;
    back.connect(fabric.add_port(config)?)?;
    if !front.poll_connected()? {
        return Err("front not connected".into());
    }
    Ok((window, back, front))
}

/// What came of sending `frames` from guest A, whose seat is `seat`, to
/// guest B through the real back halves.
struct Outcome {
    /// A's send completions, in slot order.
    statuses: Vec<WcStatus>,
    /// Frames B received.
    received: usize,
    tx_filtered: u64,
}

fn send_through_filter(seat: &GuestConfig, frames: &[Vec<u8>]) -> Result<Outcome, BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let (_wa, mut back_a, mut a) = channel(&fabric, 2)?;
    let (_wb, mut back_b, mut b) = channel(&fabric, 3)?;
    let directory = SeatDirectory::for_guests(std::slice::from_ref(seat));
    back_a.set_tx_filter(filter_for(seat, Some(&directory)));
    let (mut tx, _): (TxSlots, _) = a.take_slots().ok_or("slots")?;
    let (_, mut rx) = b.take_slots().ok_or("slots")?;
    for _ in 0..4 {
        b.post_recv(rx.next().ok_or("rx slot")?)
            .map_err(|e| e.error)?;
    }
    b.flush()?;
    a.resolve(b.port_attr().gid)?;
    a.flush()?;
    let mut handle = None;
    for _ in 0..10 {
        back_a.service()?;
        back_b.service()?;
        while let Some(c) = a.poll_cq()? {
            if let Completion::Path { result, .. } = c {
                handle = Some(result.map_err(|e| format!("{e:?}"))?);
            }
        }
    }
    let dest = UdDest {
        handle: handle.ok_or("no path")?,
        qpn: b.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    for frame in frames {
        let slot = tx.next().ok_or("tx slot")?;
        a.buffers().tx.slot_mut(&slot)[..frame.len()].copy_from_slice(frame);
        a.post_send(slot, frame.len(), &dest).map_err(|e| e.error)?;
    }
    a.flush()?;
    for _ in 0..4 {
        back_a.service()?;
        back_b.service()?;
    }
    let mut statuses = Vec::new();
    while let Some(c) = a.poll_cq()? {
        if let Completion::Send { slot, status } = c {
            statuses.push((slot.index(), status));
        }
    }
    statuses.sort_by_key(|(slot, _)| *slot);
    let mut received = 0;
    while let Some(c) = b.poll_cq()? {
        if let Completion::Recv { status, .. } = c {
            assert_eq!(status, WcStatus::Success);
            received += 1;
        }
    }
    assert_eq!(back_a.stats().total_violations(), 0);
    assert!(back_a.is_connected());
    Ok(Outcome {
        statuses: statuses.into_iter().map(|(_, s)| s).collect(),
        received,
        tx_filtered: back_a.stats().tx_filtered,
    })
}

#[test]
fn spoofed_frames_never_leave_the_back_half() -> Result<(), BoxError> {
    let out = send_through_filter(
        &guest(Some(OWN_IP)),
        &[ipv4_frame(OTHER_IP), ipv4_frame(OWN_IP)],
    )?;
    assert_eq!(out.statuses, [WcStatus::LocalProtection, WcStatus::Success]);
    assert_eq!(out.received, 1);
    assert_eq!(out.tx_filtered, 1);
    Ok(())
}

#[test]
fn spoofed_ipv6_never_leaves_the_back_half() -> Result<(), BoxError> {
    let mut seat = guest(Some(OWN_IP));
    seat.ip6 = Some(OWN_IP6);
    let other = "fd77::3".parse()?;
    let out = send_through_filter(
        &seat,
        &[ipv6_frame(other), ipv6_frame(OWN_IP6), ipv4_frame(OTHER_IP)],
    )?;
    assert_eq!(
        out.statuses,
        [
            WcStatus::LocalProtection,
            WcStatus::Success,
            WcStatus::LocalProtection
        ]
    );
    assert_eq!(out.received, 1);
    assert_eq!(out.tx_filtered, 2);
    Ok(())
}
