//! A back end played by the fuzz harness, for targets that attack the
//! guest side: it does the back end's half of the handshake by hand, then
//! answers (or forges) responses on the three rings and writes RX slots
//! however the input says.
// Each target uses a different part of it.
#![allow(dead_code)]

use std::collections::VecDeque;

use ring::desc::{
    ctrl_op, ctrl_status, CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse,
};
use ring::{BackRing, Header, Layout, LayoutParams, PortBlock, State, Window};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;

pub const EPOCH: u32 = 0x1b;
/// Small rings and slots, so forged indices and slots hit real ones.
pub const PARAMS: LayoutParams = LayoutParams {
    ctrl_order: 3,
    tx_order: 3,
    rx_order: 3,
    tx_slots: 8,
    rx_slots: 8,
    slot_size: 4096,
};
pub const GRH_LEN: usize = 40;
pub const OWN_QPN: u32 = 0x48;
pub const OWN_GID: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Reads the fuzz input front to back; past the end it reads zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `max` bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = max.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

pub struct ScriptedBackend {
    pub window: Window,
    pub layout: Layout,
    pub header: Header,
    pub ctrl: BackRing<CtrlRequest, CtrlResponse>,
    pub tx: BackRing<TxRequest, TxResponse>,
    pub rx: BackRing<RxRequest, RxResponse>,
    /// RX slots the guest posted, oldest first.
    pub posted_rx: VecDeque<u16>,
    pub posted_tx: VecDeque<u16>,
    next_handle: u32,
}

impl ScriptedBackend {
    pub fn port_block() -> PortBlock {
        PortBlock {
            gid: OWN_GID,
            lid: 1,
            pkey: 0xffff,
            qpn: OWN_QPN,
            qkey: 0x0b1b,
            mtu: 4,
            state: 4,
            _reserved: [0; 2],
        }
    }

    /// Both halves of the handshake; the guest side is connected after it.
    pub fn connect() -> Option<(ScriptedBackend, FrontHca<NoNotify>)> {
        let window = Window::new_heap(Layout::window_len_for(PARAMS).ok()?);
        let header = Header::new(&window).ok()?;
        header.init_backend(EPOCH, &PortBlock::default());
        let mut front = FrontHca::attach(window.clone(), PARAMS, NoNotify).ok()?;
        let layout = Layout::compute(PARAMS, window.len()).ok()?;
        let sub = |r: &core::ops::Range<usize>| window.sub(r.start, r.len()).ok();
        let mut ctrl = BackRing::attach(sub(&layout.ctrl)?, PARAMS.ctrl_order).ok()?;
        let mut tx = BackRing::attach(sub(&layout.tx)?, PARAMS.tx_order).ok()?;
        let mut rx = BackRing::attach(sub(&layout.rx)?, PARAMS.rx_order).ok()?;
        ctrl.init();
        tx.init();
        rx.init();
        header.write_port(&Self::port_block());
        header.set_backend_state(State::Connected);
        if !front.poll_connected().ok()? {
            return None;
        }
        Some((
            ScriptedBackend {
                window,
                layout,
                header,
                ctrl,
                tx,
                rx,
                posted_rx: VecDeque::new(),
                posted_tx: VecDeque::new(),
                next_handle: 1,
            },
            front,
        ))
    }

    /// Takes the guest's TX and RX requests (slots only; this back end
    /// sends nothing anywhere). Returns false once a ring is broken.
    pub fn take_requests(&mut self) -> bool {
        loop {
            match self.rx.pop_request() {
                Ok(Some(req)) => self.posted_rx.push_back(req.slot),
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        loop {
            match self.tx.pop_request() {
                Ok(Some(req)) => self.posted_tx.push_back(req.slot),
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        true
    }

    /// Answers every control request as an honest back end would (every
    /// path resolves, every join succeeds).
    pub fn answer_ctrl(&mut self) {
        while let Ok(Some(req)) = self.ctrl.pop_request() {
            let rsp = CtrlResponse {
                op: req.op,
                status: ctrl_status::OK,
                cookie: req.cookie,
                gid: req.gid,
                handle: if req.op == ctrl_op::RESOLVE {
                    self.next_handle
                } else {
                    0
                },
                _reserved: 0,
            };
            self.next_handle = self.next_handle.wrapping_add(1);
            let _ = self.ctrl.push_response(&rsp);
        }
    }

    /// Completes the oldest posted send with `status`.
    pub fn complete_tx(&mut self, status: u16) {
        if let Some(slot) = self.posted_tx.pop_front() {
            let _ = self.tx.push_response(&TxResponse {
                slot,
                status,
                _reserved: 0,
            });
        }
    }

    /// Byte offset of RX slot `slot` in the window (unchecked: the window
    /// bounds every access anyway).
    pub fn rx_slot_offset(&self, slot: u16) -> usize {
        let size = PARAMS.slot_size as usize;
        self.layout.buffers.start + (usize::from(PARAMS.tx_slots) + usize::from(slot)) * size
    }

    /// Writes `grh` and `payload` into the oldest posted RX slot and
    /// completes it as received from `src_qpn`, with `byte_len` (`None`:
    /// the true length). Returns the slot used.
    pub fn deliver(
        &mut self,
        grh: &[u8; GRH_LEN],
        payload: &[u8],
        src_qpn: u32,
        flags: u16,
        byte_len: Option<u32>,
    ) -> Option<u16> {
        let slot = self.posted_rx.pop_front()?;
        let at = self.rx_slot_offset(slot);
        let _ = self.window.write_bytes(at, grh);
        let _ = self.window.write_bytes(at + GRH_LEN, payload);
        let _ = self.rx.push_response(&RxResponse {
            slot,
            status: 0,
            byte_len: byte_len.unwrap_or((GRH_LEN + payload.len()) as u32),
            src_qpn,
            src_lid: 2,
            flags,
            pkey: 0xffff,
            _reserved0: 0,
            _reserved1: 0,
        });
        Some(slot)
    }

    pub fn publish(&mut self) {
        self.ctrl.publish_responses();
        self.tx.publish_responses();
        self.rx.publish_responses();
    }
}
