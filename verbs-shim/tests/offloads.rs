//! The provider's offloads reach the guest through the channel's back-end
//! features: the sim fabric's checked receive checksums are announced, a
//! provider that promises nothing announces nothing.
#![cfg(feature = "sim")]

use ring::{Layout, LayoutParams, Window};
use verbs_shim::back::{BackConfig, BackHalf};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{
    Completion, DestHandle, Gid, HcaError, Offloads, PKey, PortAttr, PostError, RxSlot, RxSlots,
    SlotLayout, TxSlot, TxSlots, UdDest, Verbs,
};

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 5,
    tx_order: 6,
    rx_order: 6,
    tx_slots: 8,
    rx_slots: 8,
    slot_size: 4096,
};

/// A sim port that keeps the default offloads (none), as rdma does.
struct Plain(SimPort);

impl Verbs for Plain {
    fn port_attr(&self) -> PortAttr {
        self.0.port_attr()
    }
    fn layout(&self) -> SlotLayout {
        self.0.layout()
    }
    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        self.0.take_slots()
    }
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        self.0.post_send(slot, len, dest)
    }
    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        self.0.post_recv(slot)
    }
    fn flush(&mut self) -> Result<(), HcaError> {
        self.0.flush()
    }
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        self.0.poll_cq()
    }
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        self.0.arm_cq()
    }
    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.0.attach_mcast(mgid)
    }
    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.0.detach_mcast(mgid)
    }
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        self.0.resolve(dgid)
    }
    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        self.0.release_dest(handle)
    }
}

/// Connects a front half through a back half over the port `wrap` makes;
/// the offloads the front half then reports.
fn announced<V: Verbs>(n: u16, wrap: impl FnOnce(SimPort) -> V) -> Offloads {
    let fabric = SimFabric::new(FaultConfig::default());
    let window = Window::new_heap(Layout::window_len_for(PARAMS).expect("layout"));
    let mut back = BackHalf::<V, NoNotify>::new(window.clone(), BackConfig::default(), NoNotify)
        .expect("back");
    let mut front = FrontHca::attach(window, PARAMS, NoNotify).expect("front");
    assert_eq!(front.offloads(), Offloads::NONE, "nothing before Connected");
    let setup = back.poll_guest_init().expect("init").expect("guest set up");
    let mut port = PortConfig::with_layout(n, PKey::DEFAULT, setup.slots);
    port.region = setup.region;
    let port = fabric.add_port(port).expect("port");
    back.connect(wrap(port)).expect("connect");
    assert!(front.poll_connected().expect("connected"));
    front.offloads()
}

#[test]
fn the_sim_fabric_announces_checked_receive_checksums() {
    let offloads = announced(1, |p| p);
    assert!(offloads.rx_checksums);
}

#[test]
fn a_provider_that_promises_nothing_announces_nothing() {
    assert_eq!(announced(2, Plain), Offloads::NONE);
}
