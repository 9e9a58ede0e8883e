//! A hostile guest against the back half.
//!
//! Each input builds a fresh channel, the way `testkit::guest::connect_channel`
//! does (a heap `Window`, a `BackHalf` serving it over a `SimPort` of a
//! `SimFabric`), plus a second, well-behaved port on the same fabric that the
//! guest can send to and that sends to the guest. The guest side is not a
//! `FrontHca`: the fuzz input is a script of raw guest actions on the shared
//! window (arbitrary bytes at arbitrary offsets, ring indices, well- or
//! ill-formed descriptors, header words), interleaved with `service()` and
//! `arm()` calls on the back half and with traffic from the peer port.
//!
//! Checked on every input:
//! - nothing panics (the back half validates everything; `Window` bounds every
//!   access, so the harness may aim writes past the end);
//! - once `service`, `arm` or `poll_guest_init` returns `Err(e)`, the back
//!   half stays closed: every later call returns the same `Err(e)`;
//! - while connected, `service` does at most `5 * batch` units of work (three
//!   rings of `batch` requests, `2 * batch` completions);
//! - the back half and the fabric write only back-end-owned bytes: the
//!   back-end half of the header page, `req_event`/`rsp_prod` and the
//!   response arrays of the rings, and the RX buffers (where the fabric DMAs
//!   received packets). Guest-owned words, request arrays and TX buffers keep
//!   what the guest last wrote (checked against a shadow copy when the back
//!   half closes, which every input ends with);
//! - the completion counters never exceed the requests they answer;
//! - a guest that sets Closing is disconnected with `GuestClosed`.
//!
//! Input format (no `arbitrary`; a short input just reads zeros):
//!
//! ```text
//! flags u8     bits 0-1 layout preset, 2 guest picks its own parameters,
//!              3 fabric faults on, 4-6 guest port MTU code - 1 (mod 5),
//!              7 peer stays out of the broadcast group
//! config u8    bits 0-1 max_dests - 1, 2-5 batch - 1, 6 a TX filter (drops
//!              frames whose first byte is odd), 7 guest P_Key 0x7fff
//! [seed u32]                                  if flags bit 3
//! [params 12 bytes, sel u8, [epoch u32 if sel & 1], [state u8 if sel & 2]]
//!                                             if flags bit 2
//! then ops until the input runs out, [op u8] [operands], op % 16:
//!   0, 1  raw write     offset u32 (mod window len + 32), len u8, bytes
//!   2     raw write     offset u16 (mod end of the rings), len u8 (mod 64), bytes
//!   3 service   4 arm   5 service/arm until idle
//!   6     raw request   ring u8, 32 bytes (truncated to the descriptor size)
//!   7     TX request    sel u8, slot, len, dest, qpn sel u8, qkey, ... (see code)
//!   8     RX request    sel u8 (& 3 == 3: post every slot), slot, reserved
//!   9     ctrl request  sel u8 (op), gid sel u8, arg, reserved
//!   10    ring index    ring u8, sel u8 (field, nudge i8 or value u32)
//!   11    header word   word u8 (guest half), value u32
//!   12    peer sends    sel u8, len u16, fill u8, [qkey u32]
//!   13    peer reaps its CQ
//!   14    guest closes  u8
//!   15    poll_guest_init / connect out of turn, u8 [, port u8]
//! ```
//!
//! `fuzz/seeds/make_seeds.py` writes seeds in this format.

#![no_main]

use core::mem::size_of;
use core::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use ring::desc::{CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse};
use ring::layout::RING_INDEX_BYTES;
use ring::{Header, Layout, LayoutParams, State, Window};
use verbs_shim::back::{
    BackConfig, BackError, BackHalf, SenderPort, TxFilter, TxVerdict, FILTER_HEAD_LEN,
};
use verbs_shim::notify::NoNotify;
use verbs_shim::sim::{FaultConfig, PortConfig, SimFabric, SimPort, LINK_LOCAL_PREFIX};
use verbs_shim::{
    Completion, DestHandle, Gid, IbMtu, Lid, PKey, QKey, RxSlot, SlotLayout, TxSlot, UdDest, Verbs,
};

/// A TX filter (config bit 6) that drops frames whose first byte is odd,
/// so the back half's refuse path runs under the same checks.
struct OddFirstByteFilter;

impl TxFilter for OddFirstByteFilter {
    fn check(&mut self, _sender: &SenderPort, head: &[u8], frame_len: usize) -> TxVerdict {
        assert!(head.len() <= FILTER_HEAD_LEN && head.len() <= frame_len);
        match head.first() {
            Some(b) if b & 1 == 1 => TxVerdict::Drop,
            _ => TxVerdict::Pass,
        }
    }
}

/// The epoch the back half announces.
const EPOCH: u32 = 7;
/// Window size when the guest picks its own parameters.
const HOSTILE_WINDOW: usize = 64 * 1024;

/// Parameters a well-behaved handshake picks from (`flags & 3`).
const PRESETS: [LayoutParams; 4] = [
    LayoutParams {
        ctrl_order: 2,
        tx_order: 3,
        rx_order: 3,
        tx_slots: 8,
        rx_slots: 8,
        slot_size: 256,
    },
    // Rings smaller than the slot counts, and the other way round.
    LayoutParams {
        ctrl_order: 1,
        tx_order: 1,
        rx_order: 1,
        tx_slots: 3,
        rx_slots: 2,
        slot_size: 320,
    },
    LayoutParams {
        ctrl_order: 3,
        tx_order: 2,
        rx_order: 4,
        tx_slots: 16,
        rx_slots: 4,
        slot_size: 2112,
    },
    // Slots bigger than most MTUs: oversize sends complete with LocalLength.
    LayoutParams {
        ctrl_order: 2,
        tx_order: 4,
        rx_order: 4,
        tx_slots: 4,
        rx_slots: 8,
        slot_size: 4160,
    },
];

/// The peer port's slots: room for a 2048-byte MTU packet behind the GRH.
const PEER_LAYOUT: SlotLayout = SlotLayout {
    tx_count: 4,
    rx_count: 8,
    slot_size: 2112,
};

/// Reads operands off the front of the input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Exactly `N` bytes, zero-padded.
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
}

#[derive(Clone, Copy)]
enum RingId {
    Ctrl,
    Tx,
    Rx,
}

impl RingId {
    fn from(b: u8) -> RingId {
        match b % 3 {
            0 => RingId::Ctrl,
            1 => RingId::Tx,
            _ => RingId::Rx,
        }
    }

    fn req_size(self) -> usize {
        match self {
            RingId::Ctrl => size_of::<CtrlRequest>(),
            RingId::Tx => size_of::<TxRequest>(),
            RingId::Rx => size_of::<RxRequest>(),
        }
    }

    fn rsp_size(self) -> usize {
        match self {
            RingId::Ctrl => size_of::<CtrlResponse>(),
            RingId::Tx => size_of::<TxResponse>(),
            RingId::Rx => size_of::<RxResponse>(),
        }
    }
}

/// Ring index words (CHANNEL.md "Rings").
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 64;
const RSP_PROD: usize = 128;
const RSP_EVENT: usize = 192;

/// Guest header fields (CHANNEL.md "Header page").
const GUEST_STATE: usize = 128;
const GUEST_EPOCH: usize = 132;
const PARAMS: usize = 140;
/// Bytes 0..128 of the header page belong to the back end.
const BACKEND_HEADER: usize = 128;
const HEADER_PAGE: usize = 4096;

/// The hostile guest: it knows the layout it asked for and the window.
///
/// Every write the guest makes goes through `write`/`store`, which mirror it
/// into `shadow`. Only the back half and the fabric write the window
/// otherwise, so wherever they may not write, window and shadow must agree.
struct Guest {
    window: Window,
    shadow: Vec<u8>,
    layout: Layout,
    own_gid: Gid,
    own_qpn: u32,
    peer_gid: Gid,
    peer_qpn: u32,
    pkey: PKey,
}

impl Guest {
    fn ring(&self, r: RingId) -> (usize, u8) {
        let p = self.layout.params;
        match r {
            RingId::Ctrl => (self.layout.ctrl.start, p.ctrl_order),
            RingId::Tx => (self.layout.tx.start, p.tx_order),
            RingId::Rx => (self.layout.rx.start, p.rx_order),
        }
    }

    fn load(&self, offset: usize) -> u32 {
        self.window.load_u32(offset, Ordering::Acquire).unwrap_or(0)
    }

    /// Copies what the window holds at `offset..offset + len` (just written
    /// by the guest) into the shadow.
    fn mirror(&mut self, offset: usize, len: usize) {
        if let Some(dst) = offset
            .checked_add(len)
            .and_then(|end| self.shadow.get_mut(offset..end))
        {
            let _ = self.window.read_bytes(offset, dst);
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        if self.window.write_bytes(offset, bytes).is_ok() {
            self.mirror(offset, bytes.len());
        }
    }

    fn store(&mut self, offset: usize, value: u32) {
        if self
            .window
            .store_u32(offset, value, Ordering::Release)
            .is_ok()
        {
            self.mirror(offset, 4);
        }
    }

    /// Writes a request at the guest's `req_prod` (as it stands in the
    /// window, whatever wrote it) with `write(window, offset)` and publishes
    /// one more request.
    fn push_with(&mut self, r: RingId, write: impl FnOnce(&Window, usize)) {
        let (start, order) = self.ring(r);
        let prod = self.load(start + REQ_PROD);
        let slot = (prod & ((1u32 << order) - 1)) as usize;
        let at = start + RING_INDEX_BYTES + slot * r.req_size();
        write(&self.window, at);
        self.mirror(at, r.req_size());
        self.store(start + REQ_PROD, prod.wrapping_add(1));
    }

    /// Pushes raw request bytes.
    fn push(&mut self, r: RingId, req: &[u8]) {
        self.push_with(r, |w, at| {
            let _ = w.write_bytes(at, &req[..req.len().min(r.req_size())]);
        });
    }

    fn gid(&self, sel: u8, inp: &mut Input) -> Gid {
        match sel % 8 {
            0 | 1 => self.peer_gid,
            2 => self.own_gid,
            3 => ipoib::wire::broadcast_mgid(self.pkey),
            4 => ipoib::wire::broadcast_mgid(PKey(0x7fff)),
            5 => Gid::from_parts(LINK_LOCAL_PREFIX, u64::from(inp.u8())),
            6 => ipoib::wire::ipv4_multicast_mgid(self.pkey, [224, 0, 0, inp.u8()].into()),
            _ => Gid(inp.array()),
        }
    }

    fn qpn(&self, sel: u8, inp: &mut Input) -> u32 {
        match sel % 6 {
            0 | 1 => self.peer_qpn,
            2 => self.own_qpn,
            3 => 0x00ff_ffff,
            4 => u32::from(inp.u8()),
            _ => inp.u32(),
        }
    }

    /// Byte ranges the back half may write during `service`/`arm`.
    fn backend_writable(&self) -> Vec<(usize, usize)> {
        let mut v = vec![(0, BACKEND_HEADER)];
        for r in [RingId::Ctrl, RingId::Tx, RingId::Rx] {
            let (start, order) = self.ring(r);
            let entries = 1usize << order;
            v.push((start + REQ_EVENT, start + REQ_EVENT + 4));
            v.push((start + RSP_PROD, start + RSP_PROD + 4));
            let rsp = start + RING_INDEX_BYTES + entries * r.req_size();
            v.push((rsp, rsp + entries * r.rsp_size()));
        }
        let rx = self.layout.rx_buffers();
        v.push((rx.start, rx.end));
        v.sort_unstable();
        v
    }
}

/// The well-behaved port on the same fabric.
struct Peer {
    port: SimPort,
    region: Window,
    tx: Vec<TxSlot>,
    to_guest: Option<DestHandle>,
    to_bcast: Option<DestHandle>,
    guest_gid: Gid,
    bcast: Gid,
}

impl Peer {
    /// Takes every completion: slots go back into use, handles are kept.
    fn reap(&mut self) {
        for _ in 0..64 {
            match self.port.poll_cq() {
                Ok(Some(c)) => self.complete(c),
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn complete(&mut self, c: Completion) {
        match c {
            Completion::Send { slot, .. } => self.tx.push(slot),
            Completion::Recv { slot, .. } => self.repost(slot),
            Completion::Path { dgid, result } => match result {
                Ok(h) if dgid == self.guest_gid && self.to_guest.is_none() => {
                    self.to_guest = Some(h)
                }
                Ok(h) if dgid == self.bcast && self.to_bcast.is_none() => self.to_bcast = Some(h),
                Ok(h) => {
                    let _ = self.port.release_dest(h);
                }
                Err(_) => {}
            },
            Completion::Mcast { .. } | Completion::PortChanged => {}
        }
    }

    fn repost(&mut self, slot: RxSlot) {
        // A failed post hands the slot back; drop it then (the peer just has
        // one receive buffer fewer).
        let _ = self.port.post_recv(slot);
    }

    fn send(&mut self, inp: &mut Input, guest_qpn: u32) {
        let sel = inp.u8();
        let len = usize::from(inp.u16()) % (PEER_LAYOUT.slot_size as usize + 64);
        let fill = inp.u8();
        let qkey = if sel & 0x80 != 0 {
            QKey(inp.u32())
        } else {
            QKey::IPOIB_DEFAULT
        };
        let (handle, qpn) = if sel & 1 == 0 {
            (self.to_guest, guest_qpn)
        } else {
            (self.to_bcast, 0x00ff_ffff)
        };
        let (Some(handle), Some(qpn)) = (handle, verbs_shim::Qpn::new(qpn)) else {
            return;
        };
        let Some(slot) = self.tx.pop() else {
            return;
        };
        if let Some(off) = PEER_LAYOUT.tx_offset(slot.index()) {
            let n = len.min(PEER_LAYOUT.slot_size as usize);
            let _ = self.region.fill(off, n, fill);
            // An ARP-ish encapsulation header now and then.
            if sel & 2 != 0 {
                let _ = self.region.write_bytes(off, &[0x08, 0x06, 0, 0]);
            }
        }
        let dest = UdDest { handle, qpn, qkey };
        if let Err(e) = self.port.post_send(slot, len, &dest) {
            self.tx.push(e.slot);
        }
        let _ = self.port.flush();
    }
}

/// What the harness knows about the back half's state.
struct Harness {
    back: BackHalf<SimPort, NoNotify>,
    batch: usize,
    closed: Option<BackError>,
    guest: Guest,
    writable: Vec<(usize, usize)>,
    /// Scratch for `check_guest_bytes`.
    now: Vec<u8>,
}

impl Harness {
    /// Every byte outside the back-end-writable ranges is as the guest
    /// left it. Reads only those ranges (whole-window copies would dominate
    /// the run time).
    fn check_guest_bytes(&mut self, when: &str) {
        let len = self.guest.shadow.len();
        let mut at = 0;
        for &(start, end) in self.writable.iter().chain(core::iter::once(&(len, len))) {
            let start = start.min(len);
            if at < start {
                let now = &mut self.now[at..start];
                let _ = self.guest.window.read_bytes(at, now);
                let shadow = &self.guest.shadow[at..start];
                if shadow != now {
                    let first = (0..now.len()).find(|&i| shadow[i] != now[i]).unwrap_or(0);
                    panic!(
                        "{when}: the back end changed guest-owned byte {:#x}: {:#04x} -> {:#04x}",
                        at + first,
                        shadow[first],
                        now[first]
                    );
                }
            }
            at = at.max(end);
        }
    }

    fn check_stats(&self) {
        let s = self.back.stats();
        assert!(s.tx_completions <= s.tx_requests, "{s:?}");
        assert!(s.rx_completions <= s.rx_requests, "{s:?}");
        assert!(s.tx_errors <= s.tx_requests, "{s:?}");
    }

    fn closed(&mut self, e: BackError, what: &str) {
        assert!(
            self.closed.is_none(),
            "{what}: second close {e:?} after {:?}",
            self.closed
        );
        self.closed = Some(e);
        assert!(
            !self.back.is_connected(),
            "{what} returned {e:?} but still connected"
        );
        assert_eq!(self.back.closed_reason(), Some(e));
        let header = Header::new(&self.guest.window).unwrap();
        assert_eq!(
            header.backend_state(),
            State::Closed,
            "{what} returned {e:?}"
        );
        self.check_guest_bytes(what);
    }

    fn service(&mut self) -> usize {
        let r = self.back.service();
        self.check_stats();
        match (self.closed, r) {
            (Some(e), r) => {
                assert_eq!(r, Err(e), "service after close");
                0
            }
            (None, Ok(n)) => {
                assert!(self.back.is_connected());
                assert!(
                    n <= 5 * self.batch,
                    "service did {n} > 5 * {} units",
                    self.batch
                );
                n
            }
            (None, Err(e)) => {
                self.closed(e, "service");
                0
            }
        }
    }

    fn arm(&mut self) -> bool {
        let r = self.back.arm();
        match (self.closed, r) {
            (Some(e), r) => {
                assert_eq!(r, Err(e), "arm after close");
                false
            }
            (None, Ok(p)) => p,
            (None, Err(e)) => {
                self.closed(e, "arm");
                false
            }
        }
    }

    /// Services until idle, like a back-end thread would before sleeping.
    fn drain(&mut self) {
        for _ in 0..32 {
            let n = self.service();
            if self.closed.is_some() {
                return;
            }
            if n == 0 && !self.arm() {
                return;
            }
        }
    }
}

/// A back half that did not get to Connected: whatever it returned must
/// stick.
fn check_stays(back: &mut BackHalf<SimPort, NoNotify>, e: BackError) {
    assert!(!back.is_connected());
    assert_eq!(back.closed_reason(), Some(e));
    for _ in 0..2 {
        assert_eq!(back.poll_guest_init().err(), Some(e));
        assert_eq!(back.service(), Err(e));
        assert_eq!(back.arm(), Err(e));
    }
}

fn run(data: &[u8]) {
    let mut inp = Input(data);
    let flags = inp.u8();
    let config = inp.u8();
    let preset = PRESETS[usize::from(flags & 3)];
    let hostile_handshake = flags & 4 != 0;
    let faults = if flags & 8 != 0 {
        FaultConfig {
            seed: u64::from(inp.u32()),
            loss: 0.1,
            duplicate: 0.1,
            reorder: 0.2,
            corrupt: 0.1,
        }
    } else {
        FaultConfig::NONE
    };
    let mtu = IbMtu::from_code(1 + (flags >> 4) % 5).unwrap_or(IbMtu::Mtu2048);
    let peer_joins = flags & 0x80 == 0;
    // A limited member of the default partition cannot talk to another
    // limited member: sometimes make the guest one.
    let pkey = if config & 0x80 != 0 {
        PKey(0x7fff)
    } else {
        PKey::DEFAULT
    };
    let back_config = BackConfig {
        epoch: EPOCH,
        max_dests: 1 + usize::from(config & 3),
        batch: 1 + usize::from((config >> 2) & 15),
        ..BackConfig::default()
    };

    let fabric = SimFabric::new(faults);
    let window_len = if hostile_handshake {
        HOSTILE_WINDOW
    } else {
        Layout::window_len_for(preset).expect("preset fits")
    };
    let window = Window::new_heap(window_len);
    let mut back =
        BackHalf::new(window.clone(), back_config, NoNotify).expect("window holds a header");
    if config & 0x40 != 0 {
        back.set_tx_filter(Some(Box::new(OddFirstByteFilter)));
    }
    let header = Header::new(&window).expect("window holds a header");
    assert_eq!(header.backend_state(), State::InitWait);

    // Handshake step 2, by hand. The window is fresh, so the ring indices
    // are already zero.
    if hostile_handshake {
        let params: [u8; 12] = inp.array();
        let _ = window.write_bytes(PARAMS, &params);
        let sel = inp.u8();
        let epoch = if sel & 1 == 0 { EPOCH } else { inp.u32() };
        let _ = window.store_u32(GUEST_EPOCH, epoch, Ordering::Relaxed);
        let state = if sel & 2 == 0 {
            State::Initialised.to_u32()
        } else {
            u32::from(inp.u8())
        };
        let _ = window.store_u32(GUEST_STATE, state, Ordering::Release);
    } else {
        header.write_params(&preset);
        header.set_guest_epoch(EPOCH);
        header.set_guest_state(State::Initialised);
    }
    if let Ok(layout) = Layout::compute(header.read_params(), window_len) {
        for r in [layout.ctrl.start, layout.tx.start, layout.rx.start] {
            let _ = window.store_u32(r + RSP_EVENT, 1, Ordering::Relaxed);
        }
    }

    let setup = match back.poll_guest_init() {
        Ok(Some(setup)) => setup,
        Ok(None) => {
            // Not initialised: nothing to serve yet.
            assert_eq!(back.service(), Ok(0));
            assert_eq!(back.arm(), Ok(false));
            assert!(back.closed_reason().is_none());
            return;
        }
        Err(e) => {
            assert!(matches!(e, BackError::Violation(_)), "{e:?}");
            assert_eq!(header.backend_state(), State::Closed);
            check_stays(&mut back, e);
            return;
        }
    };
    // Asking again hands out the same setup.
    let again = back
        .poll_guest_init()
        .expect("setup twice")
        .expect("setup twice");
    assert_eq!(again.layout, setup.layout);
    assert_eq!(setup.slots.region_len(), setup.region.len());

    // The peer: port 2, in the default partition, every RX slot posted.
    let peer_region = Window::new_heap(PEER_LAYOUT.region_len());
    let peer_template = PortConfig {
        gid: Gid::from_parts(LINK_LOCAL_PREFIX, 2),
        lid: Lid(2),
        pkey: PKey::DEFAULT,
        qkey: QKey::IPOIB_DEFAULT,
        mtu: IbMtu::Mtu2048,
        layout: PEER_LAYOUT,
        region: peer_region.clone(),
    };
    let peer_config = peer_template.clone();
    let mut peer_port = fabric.add_port(peer_config).expect("peer port");
    let (peer_tx, peer_rx) = peer_port.take_slots().expect("fresh port");
    for slot in peer_rx {
        assert!(peer_port.post_recv(slot).is_ok());
    }
    let bcast = ipoib::wire::broadcast_mgid(PKey::DEFAULT);
    if peer_joins {
        let _ = peer_port.attach_mcast(bcast);
    }
    let guest_gid = Gid::from_parts(LINK_LOCAL_PREFIX, 1);
    let mut peer = Peer {
        port: peer_port,
        region: peer_region,
        tx: peer_tx.collect(),
        to_guest: None,
        to_bcast: None,
        guest_gid,
        bcast,
    };
    let peer_qpn = peer.port.port_attr().qpn.get();
    let peer_gid = peer.port.gid();

    // The guest's port, over the guest's buffer area (handshake step 3).
    let guest_config = PortConfig {
        gid: guest_gid,
        lid: Lid(1),
        pkey,
        qkey: QKey::IPOIB_DEFAULT,
        mtu,
        layout: setup.slots,
        region: setup.region.clone(),
    };
    let guest_port = fabric.add_port(guest_config).expect("guest port");
    let own_qpn = guest_port.port_attr().qpn.get();
    back.connect(guest_port).expect("connect");
    assert!(back.is_connected());
    assert_eq!(header.backend_state(), State::Connected);

    // Now the guest exists, the peer can resolve it.
    let _ = peer.port.resolve(guest_gid);
    let _ = peer.port.resolve(bcast);
    peer.reap();

    // The guest has written only the header page and the `rsp_event`s so
    // far; everything else it owns is still zero.
    let mut shadow = vec![0; window_len];
    let _ = window.read_bytes(0, &mut shadow[..HEADER_PAGE]);
    for r in [
        setup.layout.ctrl.start,
        setup.layout.tx.start,
        setup.layout.rx.start,
    ] {
        let _ = window.read_bytes(r + RSP_EVENT, &mut shadow[r + RSP_EVENT..r + RSP_EVENT + 4]);
    }
    let guest = Guest {
        window: window.clone(),
        shadow,
        layout: setup.layout.clone(),
        own_gid: guest_gid,
        own_qpn,
        peer_gid,
        peer_qpn,
        pkey,
    };
    let writable = guest.backend_writable();
    let mut h = Harness {
        back,
        batch: back_config.batch,
        closed: None,
        guest,
        writable,
        now: vec![0; window_len],
    };

    while !inp.is_empty() {
        let op = inp.u8();
        match op % 16 {
            // Arbitrary bytes anywhere, sometimes past the end.
            0 | 1 => {
                let offset = inp.u32() as usize % (window_len + 32);
                let len = usize::from(inp.u8());
                let bytes = inp.bytes(len);
                h.guest.write(offset, bytes);
            }
            // Arbitrary bytes inside the ring and header area (denser).
            2 => {
                let offset = usize::from(inp.u16()) % h.guest.layout.rx.end;
                let len = usize::from(inp.u8() % 64);
                let bytes = inp.bytes(len);
                h.guest.write(offset, bytes);
            }
            3 => {
                h.service();
            }
            4 => {
                h.arm();
            }
            5 => h.drain(),
            // A raw descriptor on any ring.
            6 => {
                let r = RingId::from(inp.u8());
                let req: [u8; 32] = inp.array();
                h.guest.push(r, &req[..r.req_size()]);
            }
            // A mostly well-formed TX request.
            7 => {
                let sel = inp.u8();
                let slot = if sel & 1 == 0 {
                    u16::from(inp.u8()) % h.guest.layout.params.tx_slots
                } else {
                    inp.u16()
                };
                let len = if sel & 2 == 0 {
                    1 + u32::from(inp.u16()) % h.guest.layout.params.slot_size
                } else {
                    inp.u32()
                };
                let dest = if sel & 4 == 0 {
                    u32::from(inp.u8() & 7)
                } else {
                    inp.u32()
                };
                let qpn_sel = inp.u8();
                let remote_qpn = h.guest.qpn(qpn_sel, &mut inp);
                let qkey = match (sel >> 3) & 3 {
                    0 | 1 => QKey::IPOIB_DEFAULT.0,
                    2 => 0x8000_0000 | inp.u32(),
                    _ => inp.u32(),
                };
                let (flags, reserved) = if sel & 0x20 != 0 {
                    (inp.u16(), inp.u32())
                } else {
                    (0, 0)
                };
                let req = TxRequest {
                    slot,
                    flags,
                    len,
                    dest,
                    remote_qpn,
                    qkey,
                    _reserved: reserved,
                };
                // Payload: something in the slot, sometimes.
                if sel & 0x40 != 0 {
                    if let Some(r) = h.guest.layout.tx_slot(slot) {
                        let n = usize::from(inp.u8());
                        let bytes = inp.bytes(n);
                        h.guest.write(r.start, bytes);
                    }
                }
                h.guest.push_with(RingId::Tx, |w, at| {
                    let _ = w.write_pod(at, &req);
                });
            }
            // A mostly well-formed RX request; sometimes post them all.
            8 => {
                let sel = inp.u8();
                let rx_slots = h.guest.layout.params.rx_slots;
                if sel & 3 == 3 {
                    for slot in 0..rx_slots.min(1 << h.guest.layout.params.rx_order) {
                        let req = RxRequest {
                            slot,
                            ..RxRequest::default()
                        };
                        h.guest.push_with(RingId::Rx, |w, at| {
                            let _ = w.write_pod(at, &req);
                        });
                    }
                } else {
                    let slot = if sel & 1 == 0 {
                        u16::from(inp.u8()) % rx_slots
                    } else {
                        inp.u16()
                    };
                    let (r0, r1) = if sel & 2 != 0 {
                        (inp.u16(), inp.u32())
                    } else {
                        (0, 0)
                    };
                    let req = RxRequest {
                        slot,
                        _reserved0: r0,
                        _reserved1: r1,
                    };
                    h.guest.push_with(RingId::Rx, |w, at| {
                        let _ = w.write_pod(at, &req);
                    });
                }
            }
            // A mostly well-formed control request.
            9 => {
                let sel = inp.u8();
                let op = match sel % 8 {
                    0 | 1 => 1, // RESOLVE
                    2 => 2,     // RELEASE_DEST
                    3 | 4 => 3, // MCAST_ATTACH
                    5 => 4,     // MCAST_DETACH
                    _ => inp.u16(),
                };
                let gid_sel = inp.u8();
                let gid = h.guest.gid(gid_sel, &mut inp).0;
                let arg = if sel & 0x10 == 0 {
                    u32::from(inp.u8() & 7)
                } else {
                    inp.u32()
                };
                let (r0, r1) = if sel & 0x20 != 0 {
                    (inp.u16(), inp.u32())
                } else {
                    (0, 0)
                };
                let req = CtrlRequest {
                    op,
                    _reserved0: r0,
                    cookie: u32::from(sel),
                    gid,
                    arg,
                    _reserved1: r1,
                };
                h.guest.push_with(RingId::Ctrl, |w, at| {
                    let _ = w.write_pod(at, &req);
                });
            }
            // A ring index word: a nudge or any value.
            10 => {
                let r = RingId::from(inp.u8());
                let sel = inp.u8();
                let (start, _) = h.guest.ring(r);
                let field = [REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT][usize::from(sel & 3)];
                let old = h.guest.load(start + field);
                let new = if sel & 4 == 0 {
                    old.wrapping_add(inp.u8() as i8 as u32)
                } else {
                    inp.u32()
                };
                h.guest.store(start + field, new);
            }
            // A header word, guest half (state, epoch, features, params).
            11 => {
                let word = usize::from(inp.u8() % 6);
                let value = inp.u32();
                h.guest.store(GUEST_STATE + 4 * word, value);
            }
            // The peer sends to the guest (unicast or broadcast).
            12 => peer.send(&mut inp, own_qpn),
            13 => peer.reap(),
            // The guest closes the channel.
            14 => {
                let state = if inp.u8() & 1 == 0 {
                    State::Closing
                } else {
                    State::Closed
                };
                h.guest.store(GUEST_STATE, state.to_u32());
                let was_open = h.closed.is_none();
                h.service();
                if was_open {
                    assert_eq!(h.closed, Some(BackError::GuestClosed));
                }
            }
            // Handshake calls out of turn: harmless while connected.
            _ => {
                let r = h.back.poll_guest_init();
                match h.closed {
                    Some(e) => assert_eq!(r.err(), Some(e)),
                    None => assert!(matches!(r, Ok(None)), "poll_guest_init while connected"),
                }
                if inp.u8() & 1 == 1 {
                    let n = 10 + u16::from(inp.u8() % 16);
                    let config = PortConfig {
                        gid: Gid::from_parts(LINK_LOCAL_PREFIX, u64::from(n)),
                        lid: Lid(n),
                        layout: setup.slots,
                        region: setup.region.clone(),
                        ..peer_template.clone()
                    };
                    if let Ok(port) = fabric.add_port(config) {
                        assert_eq!(h.back.connect(port), Err(BackError::NotReady));
                    }
                    match h.closed {
                        Some(e) => assert_eq!(h.back.closed_reason(), Some(e)),
                        None => assert!(h.back.is_connected()),
                    }
                }
            }
        }
    }

    // Let everything settle, then close like a guest would.
    h.drain();
    peer.reap();
    h.drain();
    if h.closed.is_none() {
        h.guest.store(GUEST_STATE, State::Closing.to_u32());
        h.service();
        assert_eq!(h.closed, Some(BackError::GuestClosed));
    }
    // `closed` checked the guest's bytes; since then only the guest wrote.
    let e = h.closed.expect("closed by now");
    if trace() {
        eprintln!("backend_rings: closed with {e:?}; {:?}", h.back.stats());
        eprintln!("backend_rings: peer {:?}", peer.port.stats());
    }
    h.service();
    h.arm();
    check_stays(&mut h.back, e);
}

/// `IBGUEST_FUZZ_TRACE=1`: print how each input ended (to check what a
/// seed reaches: `target/.../backend_rings fuzz/seeds/backend_rings/*`).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("IBGUEST_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

fuzz_target!(|data: &[u8]| {
    run(data);
});
