//! When the guest notices that its back end went away. `FrontHca::poll_cq`
//! reads the back end's state before every run of at most 32 completions
//! it copies out of the rings, not on every completion (that read was a
//! tenth of the guest's own work per packet). So a back end that
//! restarts while its answers are still coming is noticed within 32 of
//! them; the answers it published before are handed out as they are (they
//! are true: the datagrams are in the slots), and the guest's other slots
//! come back flushed.

use ibguest_testkit::{connect_channel, BoxError, GuestSpec};
use verbs_shim::back::{BackConfig, BackHalf};
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{Completion, HcaError, PKey, QKey, UdDest, Verbs, WcStatus};

/// Datagrams the back end answers before it restarts.
const SENT: usize = 60;
/// Completions the guest takes before the restart.
const BEFORE: usize = 5;
/// `PEER_CHECK_EVERY` in `verbs-shim/src/front/verbs.rs`.
const CHECK_EVERY: usize = 32;

#[test]
fn a_restart_is_noticed_within_a_batch_of_answers() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let (window, mut back, mut front) = connect_channel(&fabric, &GuestSpec::new(1))?;
    let (_tx, rx) = front.take_slots().ok_or("slots handed out twice")?;
    let mut posted = 0;
    for slot in rx {
        front
            .post_recv(slot)
            .map_err(|e| format!("post_recv: {}", e.error))?;
        posted += 1;
    }
    front.flush()?;
    back.service()?;
    assert!(posted > SENT);

    // Another port sends SENT datagrams; the back half answers them all.
    let (mut sender, dest) = sender_to(&fabric, &front)?;
    let (free, _) = sender.take_slots().ok_or("sender slots handed out twice")?;
    let mut free: Vec<_> = free.collect();
    for _ in 0..SENT {
        let slot = free.pop().ok_or("the sender ran out of slots")?;
        sender
            .post_send(slot, 64, &dest)
            .map_err(|e| format!("post_send: {}", e.error))?;
        while let Some(c) = sender.poll_cq()? {
            if let Completion::Send { slot, status } = c {
                assert_eq!(status, WcStatus::Success);
                free.push(slot);
            }
        }
    }
    while back.service()? > 0 {}

    // The guest takes a few answers; then its back end restarts, as a new
    // worker would (a new epoch in the header; the rings are left as they
    // are until the guest attaches again).
    for _ in 0..BEFORE {
        match front.poll_cq()? {
            Some(Completion::Recv {
                status: WcStatus::Success,
                ..
            }) => {}
            other => return Err(format!("expected a datagram, got {other:?}").into()),
        }
    }
    let config = BackConfig {
        epoch: 2,
        ..BackConfig::default()
    };
    let _restarted: BackHalf<SimPort, NoNotify> = BackHalf::new(window.clone(), config, NoNotify)?;

    let (mut answers, mut flushed) = (0, 0);
    loop {
        match front.poll_cq() {
            Ok(Some(Completion::Recv {
                status: WcStatus::Success,
                ..
            })) => answers += 1,
            Ok(Some(Completion::Recv {
                status: WcStatus::Flushed,
                ..
            })) => flushed += 1,
            Ok(other) => return Err(format!("unexpected while draining: {other:?}").into()),
            Err(HcaError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Noticed within the batch: not every published answer was handed out,
    // and no more than one batch's worth were.
    assert!(answers >= 1, "the answers published before were dropped");
    assert!(
        BEFORE + answers <= CHECK_EVERY + 1,
        "{answers} answers after the restart: not noticed within a batch"
    );
    assert!(BEFORE + answers < SENT);
    // Every slot came back: answered before, or flushed.
    assert_eq!(BEFORE + answers + flushed, posted);
    Ok(())
}

/// A port on the fabric and a datagram destination at `front`'s QPN.
fn sender_to(fabric: &SimFabric, front: &impl Verbs) -> Result<(SimPort, UdDest), BoxError> {
    let mut port = fabric.add_port(PortConfig::local(9, PKey::DEFAULT))?;
    port.resolve(front.port_attr().gid)?;
    let handle = loop {
        match port.poll_cq()? {
            Some(Completion::Path { result, .. }) => {
                break result.map_err(|e| format!("path: {e:?}"))?;
            }
            Some(_) => continue,
            None => return Err("no path completion".into()),
        }
    };
    let dest = UdDest {
        handle,
        qpn: front.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    Ok((port, dest))
}
