//! The check-to-send gap: a guest rewrites its TX slot after the filter
//! checked it. Guest A (seat `ip=` 10.77.0.2) sends to guest B over the sim
//! fabric; whatever A writes into its slot after posting, B never receives
//! a frame whose source the filter did not see.
//!
//! Two ways in: a provider wrapper that rewrites the slot at the last
//! moment, between the back half's check and the provider's read (the
//! worst case, deterministic), and a guest thread that keeps flipping the
//! source while frames go out.

use std::error::Error;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use ring::{Layout, LayoutParams, Window};
use verbs_shim::back::{BackConfig, BackHalf, BoxedTxFilter};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort};
use verbs_shim::{
    Completion, DestHandle, Gid, Hca, HcaError, PKey, PortAttr, PostError, QKey, RxSlot, RxSlots,
    SlotLayout, TxSlot, TxSlots, UdDest, Verbs, GRH_LEN,
};

use super::tests::{guest, ipv4_frame, OTHER_IP, OWN_IP};
use super::{filter_for, SeatDirectory};

type BoxError = Box<dyn Error>;

const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 4,
    tx_order: 4,
    rx_order: 4,
    tx_slots: 16,
    rx_slots: 16,
    slot_size: 4096,
};

/// Where the IPv4 source sits in a frame (after the 4-byte IPoIB header).
const SOURCE_AT: usize = 4 + 12;
/// A byte past the filter's head: still sent from the slot.
const TAIL_AT: usize = 80;

/// A sim port that, playing the guest, rewrites the slot of every send just
/// before the provider reads it.
struct Rewriter {
    inner: SimPort,
    region: Window,
    slots: SlotLayout,
    /// The source address written into the slot.
    source: Ipv4Addr,
    /// The byte written at `TAIL_AT`.
    tail: u8,
}

impl Rewriter {
    fn rewrite(&self, slot: &TxSlot) {
        let Some(offset) = self.slots.tx_offset(slot.index()) else {
            return;
        };
        let source = self
            .region
            .write_bytes(offset + SOURCE_AT, &self.source.octets());
        let tail = self.region.write_bytes(offset + TAIL_AT, &[self.tail]);
        assert!(source.is_ok() && tail.is_ok());
    }
}

impl Verbs for Rewriter {
    fn port_attr(&self) -> PortAttr {
        self.inner.port_attr()
    }
    fn layout(&self) -> SlotLayout {
        self.inner.layout()
    }
    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        self.inner.take_slots()
    }
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        self.rewrite(&slot);
        self.inner.post_send(slot, len, dest)
    }
    fn post_send_with_head(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: &[u8],
    ) -> Result<(), PostError<TxSlot>> {
        self.rewrite(&slot);
        self.inner.post_send_with_head(slot, len, dest, head)
    }
    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        self.inner.post_recv(slot)
    }
    fn flush(&mut self) -> Result<(), HcaError> {
        self.inner.flush()
    }
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        self.inner.poll_cq()
    }
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        self.inner.arm_cq()
    }
    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.inner.attach_mcast(mgid)
    }
    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.inner.detach_mcast(mgid)
    }
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        self.inner.resolve(dgid)
    }
    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        self.inner.release_dest(handle)
    }
}

/// A guest window, its back half over `wrap(sim port)`, and its front;
/// also the slot area and layout as the back end sees them.
struct Guest<V: Verbs> {
    back: BackHalf<V, NoNotify>,
    front: FrontHca<NoNotify>,
    region: Window,
    slots: SlotLayout,
}

fn guest_on<V: Verbs>(
    fabric: &SimFabric,
    port: u16,
    wrap: impl FnOnce(SimPort, Window, SlotLayout) -> V,
) -> Result<Guest<V>, BoxError> {
    let window = Window::new_heap(Layout::window_len_for(PARAMS)?);
    let mut back = BackHalf::new(window.clone(), BackConfig::default(), NoNotify)?;
    let mut front = FrontHca::attach(window, PARAMS, NoNotify)?;
    let setup = back.poll_guest_init()?.ok_or("no guest init")?;
    let mut config = PortConfig::with_layout(port, PKey::DEFAULT, setup.slots);
    config.region = setup.region.clone();
    let sim = fabric.add_port(config)?;
    back.connect(wrap(sim, setup.region.clone(), setup.slots))?;
    if !front.poll_connected()? {
        return Err("front not connected".into());
    }
    Ok(Guest {
        back,
        front,
        region: setup.region,
        slots: setup.slots,
    })
}

fn seat_filter() -> Option<BoxedTxFilter> {
    let directory = SeatDirectory::for_guests(&[guest(Some(OWN_IP))]);
    filter_for(&guest(Some(OWN_IP)), Some(&directory))
}

/// Services both back halves a few times.
fn pump<V: Verbs>(a: &mut Guest<V>, b: &mut Guest<SimPort>) -> Result<(), BoxError> {
    for _ in 0..4 {
        a.back.service()?;
        b.back.service()?;
    }
    Ok(())
}

/// A resolves B's GID; the destination for sends to B.
fn path_to<V: Verbs>(a: &mut Guest<V>, b: &mut Guest<SimPort>) -> Result<UdDest, BoxError> {
    a.front.resolve(b.front.port_attr().gid)?;
    a.front.flush()?;
    pump(a, b)?;
    let mut handle = None;
    while let Some(c) = a.front.poll_cq()? {
        if let Completion::Path { result, .. } = c {
            handle = Some(result.map_err(|e| format!("{e:?}"))?);
        }
    }
    Ok(UdDest {
        handle: handle.ok_or("no path")?,
        qpn: b.front.port_attr().qpn,
        qkey: QKey::IPOIB_DEFAULT,
    })
}

/// B's received frames (IPoIB header first); their slots are posted again.
fn received(b: &mut Guest<SimPort>) -> Result<Vec<Vec<u8>>, BoxError> {
    let mut frames = Vec::new();
    let mut done = Vec::new();
    while let Some(c) = b.front.poll_cq()? {
        if let Completion::Recv { slot, status, info } = c {
            if status == verbs_shim::WcStatus::Success {
                let data = b.front.buffers().rx.slot(&slot);
                let end = (info.byte_len as usize).min(data.len());
                frames.push(data.get(GRH_LEN..end).ok_or("short")?.to_vec());
            }
            done.push(slot);
        }
    }
    for slot in done {
        b.front.post_recv(slot).map_err(|e| e.error)?;
    }
    b.front.flush()?;
    Ok(frames)
}

fn source_of(frame: &[u8]) -> Option<Ipv4Addr> {
    let b = frame.get(SOURCE_AT..SOURCE_AT + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Sends one honest frame from A through a provider that rewrites the slot
/// after the check; returns what B received.
fn send_rewritten(filter: Option<BoxedTxFilter>) -> Result<Vec<Vec<u8>>, BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = guest_on(&fabric, 2, |inner, region, slots| Rewriter {
        inner,
        region,
        slots,
        source: OTHER_IP,
        tail: 0xee,
    })?;
    let mut b = guest_on(&fabric, 3, |p, _, _| p)?;
    a.back.set_tx_filter(filter);
    let (_, mut rx) = b.front.take_slots().ok_or("slots")?;
    for _ in 0..4 {
        b.front
            .post_recv(rx.next().ok_or("rx slot")?)
            .map_err(|e| e.error)?;
    }
    b.front.flush()?;
    let dest = path_to(&mut a, &mut b)?;
    let (mut tx, _) = a.front.take_slots().ok_or("slots")?;
    let frame = ipv4_frame(OWN_IP);
    assert!(frame.len() > TAIL_AT);
    let slot = tx.next().ok_or("tx slot")?;
    a.front.buffers().tx.slot_mut(&slot)[..frame.len()].copy_from_slice(&frame);
    a.front
        .post_send(slot, frame.len(), &dest)
        .map_err(|e| e.error)?;
    a.front.flush()?;
    pump(&mut a, &mut b)?;
    assert_eq!(
        a.back.stats().tx_filtered,
        0,
        "the check saw an honest frame"
    );
    received(&mut b)
}

#[test]
fn a_rewrite_after_the_check_does_not_reach_the_fabric() -> Result<(), BoxError> {
    let frames = send_rewritten(seat_filter())?;
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    // The head is the checked copy...
    assert_eq!(source_of(frame), Some(OWN_IP));
    assert_eq!(frame[..64], ipv4_frame(OWN_IP)[..64]);
    // ...and the rest comes from the slot, as the guest left it.
    assert_eq!(frame[TAIL_AT], 0xee);
    assert_eq!(frame.len(), ipv4_frame(OWN_IP).len());
    Ok(())
}

#[test]
fn without_a_filter_the_rewrite_goes_out_as_written() -> Result<(), BoxError> {
    // The control: the hook does rewrite what an unfiltered seat sends
    // (zero copy, as before), so the test above means something.
    let frames = send_rewritten(None)?;
    assert_eq!(frames.len(), 1);
    assert_eq!(source_of(&frames[0]), Some(OTHER_IP));
    Ok(())
}

#[test]
fn a_guest_thread_flipping_the_source_never_gets_a_spoof_out() -> Result<(), BoxError> {
    const ROUNDS: usize = 2000;
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = guest_on(&fabric, 2, |p, _, _| p)?;
    let mut b = guest_on(&fabric, 3, |p, _, _| p)?;
    a.back.set_tx_filter(seat_filter());
    let (_, mut rx) = b.front.take_slots().ok_or("slots")?;
    for _ in 0..16 {
        b.front
            .post_recv(rx.next().ok_or("rx slot")?)
            .map_err(|e| e.error)?;
    }
    b.front.flush()?;
    let dest = path_to(&mut a, &mut b)?;
    let (mut tx, _) = a.front.take_slots().ok_or("slots")?;
    let mut slot = Some(tx.next().ok_or("tx slot")?);
    let offset = a.slots.tx_offset(0).ok_or("slot 0")?;
    // The hostile half of the guest: keeps flipping slot 0's source. All
    // writes go through the window (volatile), never through a slice.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(2));
    let flipper = {
        let (region, stop, started) = (a.region.clone(), stop.clone(), started.clone());
        std::thread::spawn(move || {
            let mut flips = 0u64;
            started.wait();
            while !stop.load(Ordering::Relaxed) {
                for ip in [OTHER_IP, OWN_IP] {
                    let _ = region.write_bytes(offset + SOURCE_AT, &ip.octets());
                    // Hold each value a while, so the back half's check and
                    // the provider's read both fall on either.
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
                flips += 1;
            }
            flips
        })
    };
    started.wait();
    let frame = ipv4_frame(OWN_IP);
    let (mut sent, mut passed, mut spoofed, mut got) = (0, 0u64, 0, 0);
    for _ in 0..ROUNDS {
        let s = slot.take().ok_or("slot 0 did not come back")?;
        assert_eq!(s.index(), 0);
        a.region.write_bytes(offset, &frame)?;
        a.front
            .post_send(s, frame.len(), &dest)
            .map_err(|e| e.error)?;
        a.front.flush()?;
        sent += 1;
        pump(&mut a, &mut b)?;
        while let Some(c) = a.front.poll_cq()? {
            if let Completion::Send { slot: s, status } = c {
                if status == verbs_shim::WcStatus::Success {
                    passed += 1;
                }
                slot = Some(s);
            }
        }
        for f in received(&mut b)? {
            got += 1;
            if source_of(&f) != Some(OWN_IP) {
                spoofed += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().map_err(|_| "flipper panicked")?;
    assert!(flips > 0);
    assert_eq!(
        spoofed, 0,
        "{spoofed} of {got} received frames were spoofed"
    );
    assert_eq!(got, passed, "every frame that passed arrived, no other");
    assert_eq!(passed + a.back.stats().tx_filtered, sent);
    eprintln!(
        "{sent} sends: {passed} passed, {} filtered; {flips} flips",
        a.back.stats().tx_filtered
    );
    Ok(())
}

#[test]
fn the_guests_front_does_not_offer_sends_with_a_head() -> Result<(), BoxError> {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = guest_on(&fabric, 2, |p, _, _| p)?;
    let mut b = guest_on(&fabric, 3, |p, _, _| p)?;
    let dest = path_to(&mut a, &mut b)?;
    let (mut tx, _) = a.front.take_slots().ok_or("slots")?;
    let slot = tx.next().ok_or("tx slot")?;
    let err = a
        .front
        .post_send_with_head(slot, 100, &dest, &[0; 64])
        .err()
        .ok_or("the front accepted a send with a head")?;
    assert_eq!(err.error, HcaError::Unsupported);
    assert_eq!(err.slot.index(), 0, "the slot comes back");
    Ok(())
}
