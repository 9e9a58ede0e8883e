//! The guest does not trust the back end either: a forged completion closes
//! the channel and every slot comes back to the guest.

use ibguest_testkit::{connect_channel, BoxError, GuestSpec};
use ring::desc::{RxRequest, RxResponse, TxRequest, TxResponse};
use ring::{BackRing, Layout};
use verbs_shim::sim::{FaultConfig, SimFabric};
use verbs_shim::{Completion, HcaError, PeerFaultKind, Verbs, WcStatus};

#[test]
fn forged_completion_is_a_violation_and_slots_come_back() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let spec = GuestSpec::new(1);
    let (window, back, mut front) = connect_channel(&fabric, &spec)?;
    // The real back half stops; a forger takes over its side of the rings.
    drop(back);
    let layout = Layout::compute(spec.params, window.len())?;
    let (_, rx_slots) = front.take_slots().ok_or("slots")?;
    for slot in rx_slots.take(4) {
        front.post_recv(slot).map_err(|e| e.error)?;
    }
    front.flush()?;
    let mut rx: BackRing<RxRequest, RxResponse> = BackRing::attach(
        window.sub(layout.rx.start, layout.rx.len())?,
        spec.params.rx_order,
    )?;
    // Take the four posts, then answer one honestly and one with a length
    // larger than the slot.
    for _ in 0..4 {
        rx.pop_request()?.ok_or("post")?;
    }
    rx.push_response(&RxResponse {
        slot: 0,
        byte_len: 100,
        ..Default::default()
    })?;
    rx.push_response(&RxResponse {
        slot: 1,
        byte_len: 1 << 20,
        ..Default::default()
    })?;
    rx.publish_responses();
    match front.poll_cq()? {
        Some(Completion::Recv {
            slot,
            status: WcStatus::Success,
            info,
        }) => {
            assert_eq!(slot.index(), 0);
            assert_eq!(info.byte_len, 100);
        }
        other => panic!("expected the honest completion, got {other:?}"),
    }
    // The forged one closes the channel; the three slots still out come back
    // flushed, then the error.
    let drained = drain_to_violation(&mut front);
    assert_eq!(drained.fault, PeerFaultKind::BadLength);
    assert_eq!(drained.rx_flushed, [1, 2, 3]);
    assert!(drained.tx_flushed.is_empty());
    assert_eq!(front.stats().violations, 1);
    assert_eq!(front.stats().faults.of(PeerFaultKind::BadLength), 1);
    assert_eq!(
        ring::Header::new(&window)?.guest_state(),
        ring::State::Closing
    );
    Ok(())
}

/// The guest copies responses out of the rings in runs. A forged one in
/// the middle of a run ends it there: the honest answers before it are
/// handed out, the ones after it are never taken for true (their slots
/// come back flushed, like every other slot still out), and a TX answer
/// published in the same batch is not handed out either.
#[test]
fn a_forgery_in_the_middle_of_a_run_ends_the_run() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let spec = GuestSpec::new(1);
    let (window, back, mut front) = connect_channel(&fabric, &spec)?;
    drop(back);
    let layout = Layout::compute(spec.params, window.len())?;
    let (tx_slots, rx_slots) = front.take_slots().ok_or("slots")?;
    for slot in rx_slots.take(4) {
        front.post_recv(slot).map_err(|e| e.error)?;
    }
    let tx_slot = tx_slots.into_iter().next().ok_or("a TX slot")?;
    let tx_index = tx_slot.index();
    let dest = verbs_shim::UdDest {
        handle: verbs_shim::DestHandle(0),
        qpn: verbs_shim::Qpn::new(2).ok_or("qpn")?,
        qkey: verbs_shim::QKey::IPOIB_DEFAULT,
    };
    front.post_send(tx_slot, 64, &dest).map_err(|e| e.error)?;
    front.flush()?;
    let mut rx: BackRing<RxRequest, RxResponse> = BackRing::attach(
        window.sub(layout.rx.start, layout.rx.len())?,
        spec.params.rx_order,
    )?;
    let mut tx: BackRing<TxRequest, TxResponse> = BackRing::attach(
        window.sub(layout.tx.start, layout.tx.len())?,
        spec.params.tx_order,
    )?;
    for _ in 0..4 {
        rx.pop_request()?.ok_or("post")?;
    }
    tx.pop_request()?.ok_or("send")?;
    // Honest, forged (slot 5 was never posted), honest: one run.
    for slot in [0, 5, 2] {
        rx.push_response(&RxResponse {
            slot,
            byte_len: 100,
            ..Default::default()
        })?;
    }
    rx.publish_responses();
    tx.push_response(&TxResponse {
        slot: tx_index,
        ..Default::default()
    })?;
    tx.publish_responses();

    match front.poll_cq()? {
        Some(Completion::Recv {
            slot,
            status: WcStatus::Success,
            ..
        }) => assert_eq!(slot.index(), 0),
        other => panic!("expected the first honest answer, got {other:?}"),
    }
    let drained = drain_to_violation(&mut front);
    assert_eq!(drained.fault, PeerFaultKind::SlotNotInFlight);
    assert_eq!(drained.rx_flushed, [1, 2, 3]);
    assert_eq!(drained.tx_flushed, [tx_index]);
    assert_eq!(front.stats().violations, 1);
    Ok(())
}

/// What a channel closed by a violation handed back.
struct Drained {
    /// RX and TX slots that came back flushed, sorted.
    rx_flushed: Vec<u16>,
    tx_flushed: Vec<u16>,
    /// The violation it ended with.
    fault: PeerFaultKind,
}

/// Polls until the violation surfaces, collecting the flushed slots; any
/// other completion or error fails the test.
fn drain_to_violation(front: &mut impl Verbs) -> Drained {
    let (mut rx_flushed, mut tx_flushed) = (Vec::new(), Vec::new());
    let fault = loop {
        match front.poll_cq() {
            Ok(Some(Completion::Recv {
                slot,
                status: WcStatus::Flushed,
                ..
            })) => rx_flushed.push(slot.index()),
            Ok(Some(Completion::Send {
                slot,
                status: WcStatus::Flushed,
            })) => tx_flushed.push(slot.index()),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(HcaError::PeerViolation(what)) => break what.kind(),
            Err(e) => panic!("unexpected error {e}"),
        }
    };
    rx_flushed.sort();
    tx_flushed.sort();
    Drained {
        rx_flushed,
        tx_flushed,
        fault,
    }
}
