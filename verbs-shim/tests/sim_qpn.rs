//! The sim fabric reuses QPNs: a guest that keeps connecting and closing
//! cannot exhaust the QPN space, and a just-freed QPN is not handed out
//! again at once.
#![cfg(feature = "sim")]

use std::collections::BTreeSet;

use ring::Window;
use verbs_shim::sim::{FaultConfig, PortConfig, SimError, SimFabric, QPN_BASE};
use verbs_shim::{PKey, SlotLayout, Verbs};

const TINY: SlotLayout = SlotLayout {
    tx_count: 1,
    rx_count: 1,
    slot_size: 256,
};

fn config(n: u16, region: &Window) -> PortConfig {
    let mut c = PortConfig::with_layout(n, PKey::DEFAULT, TINY);
    c.region = region.clone();
    c
}

#[test]
fn a_hundred_thousand_connect_close_cycles_reuse_a_small_qpn_space() {
    const SPACE: u32 = 16;
    let fabric = SimFabric::with_qpn_space(FaultConfig::NONE, SPACE);
    let region = Window::new_heap(TINY.region_len());
    // One long-lived guest, and one that cycles.
    let stays = fabric.add_port(config(1, &region)).expect("port");
    let stays_qpn = stays.port_attr().qpn.get();
    let mut seen = BTreeSet::new();
    let mut last = None;
    for i in 0..100_000u32 {
        let port = match fabric.add_port(config(2, &region)) {
            Ok(p) => p,
            Err(e) => panic!("cycle {i}: {e}"),
        };
        let qpn = port.port_attr().qpn.get();
        assert!((QPN_BASE + 1..=QPN_BASE + SPACE).contains(&qpn), "{qpn:#x}");
        assert_ne!(qpn, stays_qpn, "a QPN in use is never handed out");
        assert_ne!(
            Some(qpn),
            last,
            "cycle {i}: the just-freed QPN came back at once"
        );
        last = Some(qpn);
        seen.insert(qpn);
        drop(port);
    }
    assert_eq!(
        seen.len(),
        SPACE as usize - 1,
        "round robin over the whole space"
    );
    let stats = fabric.stats();
    assert_eq!((stats.ports, stats.qpns_in_use), (1, 1));
    drop(stays);
    assert_eq!(fabric.stats().qpns_in_use, 0);
}

#[test]
fn a_full_qpn_space_refuses_until_a_port_leaves() {
    let fabric = SimFabric::with_qpn_space(FaultConfig::NONE, 2);
    let region = Window::new_heap(TINY.region_len());
    let a = fabric.add_port(config(1, &region)).expect("port");
    let _b = fabric.add_port(config(2, &region)).expect("port");
    assert!(matches!(
        fabric.add_port(config(3, &region)),
        Err(SimError::TooManyPorts)
    ));
    let freed = a.port_attr().qpn;
    drop(a);
    let c = fabric.add_port(config(3, &region)).expect("port");
    assert_eq!(c.port_attr().qpn, freed, "the only free QPN");
}

#[test]
fn closing_a_port_frees_its_qpn_too() {
    let fabric = SimFabric::with_qpn_space(FaultConfig::NONE, 1);
    let region = Window::new_heap(TINY.region_len());
    let mut a = fabric.add_port(config(1, &region)).expect("port");
    a.close();
    assert_eq!(fabric.stats().qpns_in_use, 0);
    let _b = fabric
        .add_port(config(2, &region))
        .expect("port after close");
}
