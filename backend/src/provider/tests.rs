//! Guests' ports on the sim fabric through `Fabric::open_port`: each in its
//! own partition, and no more QPs than the seat's limit.

use super::*;

use ring::{Layout, LayoutParams, Window};
use verbs_shim::sim::SimFabric;
use verbs_shim::{QKey, WcStatus};

use crate::config::{Attach, GuestLimits};

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 8,
    rx_slots: 8,
    slot_size: 4096,
};

fn guest(name: &str, pkey: u16, max_qps: usize) -> GuestConfig {
    GuestConfig {
        name: name.into(),
        attach: Attach::Socket(format!("/tmp/{name}.sock").into()),
        window: 1 << 20,
        pkeys: vec![pkey],
        ip: None,
        ip6: None,
        limits: GuestLimits {
            max_qps,
            ..GuestLimits::default()
        },
    }
}

fn setup() -> GuestSetup {
    let window_len = Layout::window_len_for(PARAMS).expect("layout");
    let window = Window::new_heap(window_len);
    let layout = Layout::compute(PARAMS, window_len).expect("layout");
    GuestSetup {
        region: window
            .sub(layout.buffers.start, layout.buffers.len())
            .expect("buffers"),
        slots: SlotLayout {
            tx_count: PARAMS.tx_slots,
            rx_count: PARAMS.rx_slots,
            slot_size: PARAMS.slot_size,
        },
        layout,
    }
}

fn wake() -> Arc<EventFd> {
    Arc::new(EventFd::new().expect("eventfd"))
}

fn open(fabric: &Fabric, seat: usize, g: &GuestConfig, qps: &QpGauge) -> Port {
    match fabric.open_port(seat, g, &setup(), IbMtu::Mtu2048, wake(), qps) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Everything queued on `port` (the sim answers at once).
fn drain(port: &mut Port) -> Vec<Completion> {
    let mut out = Vec::new();
    while let Ok(Some(c)) = port.poll_cq() {
        out.push(c);
    }
    out
}

/// Posts every receive slot of `port`.
fn post_receives(port: &mut Port) {
    let (_, rx) = port.take_slots().expect("rx slots");
    for slot in rx {
        port.post_recv(slot)
            .map_err(|e| e.error)
            .expect("post recv");
    }
}

/// `from` sends one packet from `slot` to `to`; returns what `to` got.
fn send(from: &mut Port, slot: TxSlot, to: &mut Port) -> Vec<Completion> {
    from.resolve(to.port_attr().gid).expect("resolve");
    let handle = drain(from)
        .into_iter()
        .find_map(|c| match c {
            Completion::Path { result, .. } => result.ok(),
            _ => None,
        })
        .expect("a path to the other port");
    let dest = UdDest {
        handle,
        qpn: to.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    from.post_send(slot, 64, &dest)
        .map_err(|e| e.error)
        .expect("send");
    drain(to)
}

#[test]
fn guests_in_different_partitions_cannot_talk() {
    let sim = SimFabric::new(FaultConfig::NONE);
    let fabric = Fabric::Sim(sim.clone());
    let qps = QpGauge::default();
    let mut a = open(&fabric, 0, &guest("a", 0x8001, 2), &qps);
    let mut b = open(&fabric, 1, &guest("b", 0x8002, 2), &QpGauge::default());
    let mut c = open(&fabric, 2, &guest("c", 0x8001, 2), &QpGauge::default());
    assert_eq!(
        a.port_attr().pkey,
        PKey(0x8001),
        "each port has its guest's key"
    );
    assert_eq!(b.port_attr().pkey, PKey(0x8002));
    let (mut a_tx, _) = a.take_slots().expect("tx slots");
    post_receives(&mut b);
    post_receives(&mut c);
    let slot = a_tx.next().expect("a tx slot");
    assert!(
        send(&mut a, slot, &mut b).is_empty(),
        "0x8001 -> 0x8002 is dropped"
    );
    assert_eq!(sim.stats().totals.drop_pkey, 1);
    let slot = a_tx.next().expect("a tx slot");
    let got = send(&mut a, slot, &mut c);
    assert!(
        matches!(
            got.as_slice(),
            [Completion::Recv {
                status: WcStatus::Success,
                ..
            }]
        ),
        "same partition: delivered, got {got:?}"
    );
}

#[test]
fn a_seat_gets_no_more_qps_than_its_limit_and_gets_them_back() {
    let fabric = Fabric::Sim(SimFabric::new(FaultConfig::NONE));
    let qps = QpGauge::default();
    let g = guest("g1", 0xffff, 1);
    let first = open(&fabric, 0, &g, &qps);
    assert_eq!(qps.open(), 1);
    let refused = fabric.open_port(1, &g, &setup(), IbMtu::Mtu2048, wake(), &qps);
    let Err(e) = refused else {
        panic!("a second QP was allowed")
    };
    assert!(e.to_string().contains("max_qps 1"), "{e}");
    assert_eq!(qps.refused(), 1);
    drop(first);
    assert_eq!(qps.open(), 0, "the QP went with its port");
    let _again = open(&fabric, 0, &g, &qps);
    assert_eq!(qps.open(), 1);
}

#[test]
fn a_sim_port_takes_connected_mode_when_asked() {
    let fabric = Fabric::Sim(SimFabric::new(verbs_shim::sim::FaultConfig::NONE));
    let qps = QpGauge::default();
    let mut port = open(&fabric, 0, &guest("g1", 0xffff, 2), &qps);
    assert!(port.rc().is_none(), "off until asked");
    let big = verbs_shim::rc::BigLayout {
        tx_count: 2,
        rx_count: 2,
        slot_size: 65536,
    };
    let region = Window::new_heap(big.region_len());
    port.enable_rc(region, big, 8).expect("rc");
    let caps = port.rc().and_then(|rc| rc.rc_caps()).expect("caps");
    assert_eq!((caps.max_conns, caps.big), (8, big));
    // Once only.
    let again = port.enable_rc(Window::new_heap(big.region_len()), big, 8);
    assert!(again.is_err());
}
