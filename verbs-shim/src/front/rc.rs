//! Connected mode on the guest side (`docs/connected-mode.md`, §5): the CM
//! ring, RC sends and big receives on the TX and RX rings, and their
//! answers turned into [`RcCompletion`]s, after validation.
//!
//! Handles: the back end names a connection only once it is established
//! (or when a peer asks), but [`RcVerbs::rc_connect`] hands one out at
//! once. So the guest side keeps its own table of local handles, each with
//! the back end's handle once known; what the back end sends is mapped
//! through it, and a back-end handle the table does not hold is a fault.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use ring::desc::{
    cm_op, cm_reason, cm_status, CmRequest, CmResponse, RxRequest, RxResponse, TxRequest,
    TxResponse, RX_REQ_FLAG_BIG, TX_FLAG_RC,
};
use ring::{FrontRing, Window};

use super::{FrontHca, Phase};
use crate::hca::HcaError;
use crate::notify::Notify;
use crate::peer_fault::PeerFault;
use crate::rc::{
    BigArea, BigLayout, BigRxSlot, BigRxSlots, BigTxSlot, BigTxSlots, BreakReason, ConnHandle,
    ConnState, RcCaps, RcCompletion, RcError, RcEvent, RcPeer, RcPostError, RcRecvInfo, RcStatus,
    RcVerbs, RejectReason, MIN_RC_MTU,
};
use crate::types::{Gid, Qpn};

/// Event credits the guest keeps outstanding on the CM ring.
pub const EVENT_CREDITS: usize = 4;

/// The most connections the guest side tracks (a handle's index is 16
/// bits); the back end's own limit comes back as a refusal.
const MAX_LOCAL: usize = 0xffff;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LocalState {
    Connecting,
    Requested,
    Established,
    /// Broken or being closed; the back end still holds it.
    Dead,
}

#[derive(Clone, Copy, Debug)]
struct Local {
    /// The back end's handle, once it named the connection.
    back: Option<u32>,
    state: LocalState,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    generation: u16,
    conn: Option<Local>,
}

/// A CM request waiting for its answer.
#[derive(Clone, Copy, Debug)]
struct Pending {
    cookie: u32,
    op: u16,
    /// The local connection it is about (none for credits).
    local: Option<ConnHandle>,
}

/// The guest side's RC state, when connected mode was agreed.
pub(super) struct FrontRc {
    cm: FrontRing<CmRequest, CmResponse>,
    big: BigLayout,
    region: Window,
    slots_taken: bool,
    tx_in_flight: Vec<Option<ConnHandle>>,
    rx_in_flight: Vec<bool>,
    table: Vec<Entry>,
    pending: Vec<Pending>,
    next_cookie: u32,
    queue: VecDeque<RcCompletion>,
    unpublished: bool,
}

fn reject_reason(code: u32) -> RejectReason {
    match code {
        cm_reason::UNREACHABLE => RejectReason::Unreachable,
        cm_reason::NO_LISTENER => RejectReason::NoListener,
        cm_reason::PARTITION => RejectReason::Partition,
        cm_reason::TIMEOUT => RejectReason::Timeout,
        _ => RejectReason::Refused,
    }
}

fn break_reason(code: u32) -> BreakReason {
    match code {
        cm_reason::RETRY_EXCEEDED => BreakReason::RetryExceeded,
        cm_reason::PEER_CLOSED => BreakReason::PeerClosed,
        cm_reason::LINK_DOWN => BreakReason::LinkDown,
        cm_reason::IDLE => BreakReason::Idle,
        _ => BreakReason::PeerGone,
    }
}

impl FrontRc {
    /// Whether every big TX slot is in flight: then their completions must
    /// wake the guest, which may have frames waiting for a slot (see
    /// `arm_cq`). Waking at half was no faster (hosted 256 MiB over RC,
    /// 24 runs each: 0.19-0.23 s against 0.15-0.26 s).
    pub(super) fn big_tx_short(&self) -> bool {
        let in_flight = self.tx_in_flight.iter().filter(|c| c.is_some()).count();
        in_flight >= self.tx_in_flight.len().max(1)
    }

    pub(super) fn new(
        mut cm: FrontRing<CmRequest, CmResponse>,
        big: BigLayout,
        region: Window,
    ) -> FrontRc {
        cm.init();
        FrontRc {
            cm,
            big,
            region,
            slots_taken: false,
            tx_in_flight: vec![None; usize::from(big.tx_count)],
            rx_in_flight: vec![false; usize::from(big.rx_count)],
            table: Vec::new(),
            pending: Vec::new(),
            next_cookie: 1,
            queue: VecDeque::new(),
            unpublished: false,
        }
    }

    fn alloc(&mut self, local: Local) -> Option<ConnHandle> {
        let index = match self.table.iter().position(|e| e.conn.is_none()) {
            Some(free) => free,
            None if self.table.len() < MAX_LOCAL => {
                self.table.push(Entry::default());
                self.table.len() - 1
            }
            None => return None,
        };
        let entry = self.table.get_mut(index)?;
        entry.generation = entry.generation.wrapping_add(1).max(1);
        entry.conn = Some(local);
        Some(ConnHandle(
            u32::from(entry.generation) << 16 | u32::try_from(index).ok()?,
        ))
    }

    fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Local> {
        let entry = self.table.get_mut((h.0 & 0xffff) as usize)?;
        if u32::from(entry.generation) != h.0 >> 16 {
            return None;
        }
        entry.conn.as_mut()
    }

    fn free(&mut self, h: ConnHandle) {
        if let Some(entry) = self.table.get_mut((h.0 & 0xffff) as usize) {
            if u32::from(entry.generation) == h.0 >> 16 {
                entry.conn = None;
            }
        }
    }

    /// The local handle of the back end's handle `back`.
    fn by_back(&self, back: u32) -> Option<ConnHandle> {
        self.table.iter().enumerate().find_map(|(i, e)| {
            let local = e.conn?;
            (local.back == Some(back)).then(|| ConnHandle(u32::from(e.generation) << 16 | i as u32))
        })
    }

    /// Queues a CM request; its cookie.
    fn push(&mut self, op: u16, local: Option<ConnHandle>, fill: CmRequest) -> Result<(), RcError> {
        let cookie = self.next_cookie;
        let req = CmRequest { op, cookie, ..fill };
        self.cm.push_request(&req).map_err(|_| RcError::QueueFull)?;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        self.pending.push(Pending { cookie, op, local });
        self.unpublished = true;
        Ok(())
    }

    /// Tops the event credits up to [`EVENT_CREDITS`].
    pub(super) fn top_up_credits(&mut self) {
        let out = self
            .pending
            .iter()
            .filter(|p| p.op == cm_op::EVENT_CREDIT)
            .count();
        for _ in out..EVENT_CREDITS {
            if self
                .push(cm_op::EVENT_CREDIT, None, CmRequest::default())
                .is_err()
            {
                break;
            }
        }
    }

    /// The next CM answer, if any (copied once).
    pub(super) fn pop_cm(&mut self) -> Result<Option<CmResponse>, ring::RingError> {
        self.cm.pop_response()
    }

    /// Whether CM requests wait to be published.
    pub(super) fn needs_publish(&self) -> bool {
        self.unpublished
    }

    /// Completions queued and not yet polled.
    pub(super) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The CM ring's final check before sleeping.
    pub(super) fn final_check(&mut self) -> Result<bool, ring::RingError> {
        self.cm.final_check_responses()
    }

    /// Publishes queued CM requests; true if the back end must be told.
    pub(super) fn publish(&mut self) -> bool {
        core::mem::take(&mut self.unpublished) && self.cm.publish_requests()
    }

    /// One CM answer, validated, turned into queued completions.
    pub(super) fn cm_answer(&mut self, rsp: CmResponse) -> Result<(), PeerFault> {
        let mismatch = PeerFault::CmMismatch {
            cookie: rsp.cookie,
            op: rsp.op,
        };
        let want = match rsp.op {
            cm_op::EVENT_REQUEST | cm_op::EVENT_BROKEN => cm_op::EVENT_CREDIT,
            op => op,
        };
        let at = self
            .pending
            .iter()
            .position(|p| p.cookie == rsp.cookie && p.op == want)
            .ok_or(mismatch)?;
        let pending = self.pending.swap_remove(at);
        match rsp.op {
            cm_op::CONNECT => self.connect_answer(pending, rsp).ok_or(mismatch),
            cm_op::ACCEPT => self.accept_answer(pending, rsp).ok_or(mismatch),
            cm_op::REJECT => Ok(()),
            cm_op::DISCONNECT => {
                let conn = pending.local.ok_or(mismatch)?;
                self.free(conn);
                self.queue
                    .push_back(RcCompletion::Event(RcEvent::Closed { conn }));
                Ok(())
            }
            cm_op::EVENT_REQUEST => {
                let ud_qpn = Qpn::new(rsp.qpn).ok_or(mismatch)?;
                if self.by_back(rsp.conn).is_some() {
                    return Err(mismatch);
                }
                let local = Local {
                    back: Some(rsp.conn),
                    state: LocalState::Requested,
                };
                let conn = self.alloc(local).ok_or(mismatch)?;
                let peer = RcPeer {
                    gid: Gid(rsp.gid),
                    ud_qpn,
                    recv_mtu: rsp.mtu,
                };
                self.queue
                    .push_back(RcCompletion::Event(RcEvent::Request { conn, peer }));
                self.top_up_credits();
                Ok(())
            }
            cm_op::EVENT_BROKEN => {
                let conn = self.by_back(rsp.conn).ok_or(mismatch)?;
                if let Some(l) = self.get_mut(conn) {
                    l.state = LocalState::Dead;
                }
                let reason = break_reason(rsp.reason);
                self.queue
                    .push_back(RcCompletion::Event(RcEvent::Broken { conn, reason }));
                self.top_up_credits();
                Ok(())
            }
            _ => Err(mismatch),
        }
    }

    fn connect_answer(&mut self, pending: Pending, rsp: CmResponse) -> Option<()> {
        let conn = pending.local?;
        let event = if rsp.status == cm_status::OK {
            if self.by_back(rsp.conn).is_some() {
                return None;
            }
            let local = self.get_mut(conn)?;
            local.back = Some(rsp.conn);
            local.state = LocalState::Established;
            RcEvent::Established {
                conn,
                send_mtu: rsp.mtu.min(self.big.slot_size),
            }
        } else {
            self.free(conn);
            let reason = match rsp.status {
                cm_status::REJECTED => reject_reason(rsp.reason),
                _ => RejectReason::Refused,
            };
            RcEvent::Rejected { conn, reason }
        };
        self.queue.push_back(RcCompletion::Event(event));
        Some(())
    }

    fn accept_answer(&mut self, pending: Pending, rsp: CmResponse) -> Option<()> {
        let conn = pending.local?;
        let local = self.get_mut(conn)?;
        let event = if rsp.status == cm_status::OK {
            local.state = LocalState::Established;
            RcEvent::Established {
                conn,
                send_mtu: rsp.mtu.min(self.big.slot_size),
            }
        } else {
            local.state = LocalState::Dead;
            RcEvent::Broken {
                conn,
                reason: break_reason(rsp.reason),
            }
        };
        self.queue.push_back(RcCompletion::Event(event));
        Some(())
    }

    /// An RC send's answer on the TX ring.
    pub(super) fn tx_answer(&mut self, rsp: TxResponse) -> Result<(), PeerFault> {
        let not_in_flight = PeerFault::SlotNotInFlight {
            ring: crate::peer_fault::RingId::Tx,
            slot: rsp.slot,
        };
        let conn = self
            .tx_in_flight
            .get_mut(usize::from(rsp.slot))
            .and_then(Option::take)
            .ok_or(not_in_flight)?;
        self.queue.push_back(RcCompletion::Send {
            slot: BigTxSlot::mint(rsp.slot),
            conn,
            status: RcStatus::from_code(rsp.status),
        });
        Ok(())
    }

    /// A big receive's answer on the RX ring.
    pub(super) fn rx_answer(&mut self, rsp: RxResponse) -> Result<(), PeerFault> {
        if rsp.byte_len > self.big.slot_size {
            return Err(PeerFault::RxTooLong {
                len: rsp.byte_len,
                slot_size: self.big.slot_size,
            });
        }
        let src_qpn = Qpn::new(rsp.src_qpn).ok_or(PeerFault::BadSourceQpn { qpn: rsp.src_qpn })?;
        let status = RcStatus::from_code(rsp.status);
        let conn = match self.by_back(rsp._reserved1) {
            Some(conn) => conn,
            // Only a message may name no connection we hold if it was
            // flushed; one that arrived came on a connection.
            None if status != RcStatus::Success => ConnHandle(0),
            None => {
                return Err(PeerFault::CmMismatch {
                    cookie: rsp._reserved1,
                    op: 0,
                })
            }
        };
        match self.rx_in_flight.get_mut(usize::from(rsp.slot)) {
            Some(f) if *f => *f = false,
            _ => {
                return Err(PeerFault::SlotNotInFlight {
                    ring: crate::peer_fault::RingId::Rx,
                    slot: rsp.slot,
                })
            }
        }
        self.queue.push_back(RcCompletion::Recv {
            slot: BigRxSlot::mint(rsp.slot),
            status,
            info: RcRecvInfo {
                conn,
                byte_len: rsp.byte_len,
                src_qpn,
            },
        });
        Ok(())
    }

    /// The channel is gone: every big slot in flight comes back flushed,
    /// every connection breaks, every pending connect is rejected.
    pub(super) fn drain(&mut self) {
        for (i, f) in self.tx_in_flight.iter_mut().enumerate() {
            if let Some(conn) = f.take() {
                self.queue.push_back(RcCompletion::Send {
                    slot: BigTxSlot::mint(i as u16),
                    conn,
                    status: RcStatus::Flushed,
                });
            }
        }
        for (i, f) in self.rx_in_flight.iter_mut().enumerate() {
            if core::mem::take(f) {
                self.queue.push_back(RcCompletion::Recv {
                    slot: BigRxSlot::mint(i as u16),
                    status: RcStatus::Flushed,
                    info: RcRecvInfo {
                        conn: ConnHandle(0),
                        byte_len: 0,
                        src_qpn: Qpn::new_truncated(0),
                    },
                });
            }
        }
        self.pending.clear();
        for (i, e) in self.table.iter_mut().enumerate() {
            if let Some(local) = e.conn.take() {
                let conn = ConnHandle(u32::from(e.generation) << 16 | i as u32);
                let event = match local.state {
                    LocalState::Connecting => RcEvent::Rejected {
                        conn,
                        reason: RejectReason::Unreachable,
                    },
                    _ => RcEvent::Broken {
                        conn,
                        reason: BreakReason::PeerGone,
                    },
                };
                self.queue.push_back(RcCompletion::Event(event));
            }
        }
    }
}

impl<N: Notify> FrontHca<N> {
    /// The RC state, if connected mode was agreed and the channel is up.
    fn rc_live(&mut self) -> Result<&mut FrontRc, RcError> {
        match self.phase {
            Phase::Connected => {}
            _ => return Err(RcError::Disconnected),
        }
        self.rc.as_mut().ok_or(RcError::NotSupported)
    }

    /// Reads responses off the rings until an RC completion is queued or
    /// none is left; the others are kept, in order, for `poll_cq`.
    ///
    /// It reads the rings itself rather than through `poll_cq`, which
    /// hands out the stash first: a datagram completion taken from the
    /// stash and put back into it went round for ever, and a
    /// connected-mode guest with datagram answers waiting (flooded over
    /// UD while its own queue of received datagrams was full) spun here.
    /// The stash is bounded by the slots and control requests in flight.
    fn pump_for_rc(&mut self) {
        self.check_peer();
        while self.rc.as_ref().is_some_and(|rc| rc.queue.is_empty()) {
            // Draining: the RC slots were queued flushed at once, and the
            // datagram side's come from `poll_cq`.
            if self.phase != Phase::Connected {
                return;
            }
            match self.next_response() {
                Ok(Some(c)) => self.stash.push_back(c),
                Ok(None) => return,
                Err(what) => self.violation(what),
            }
        }
    }
}

impl<N: Notify> RcVerbs for FrontHca<N> {
    fn rc_caps(&self) -> Option<RcCaps> {
        self.rc.as_ref().map(|rc| RcCaps {
            max_conns: MAX_LOCAL,
            big: rc.big,
        })
    }

    fn take_big_slots(&mut self) -> Option<(BigTxSlots, BigRxSlots)> {
        let rc = self.rc.as_mut()?;
        if core::mem::replace(&mut rc.slots_taken, true) {
            return None;
        }
        Some((BigTxSlots::all(&rc.big), BigRxSlots::all(&rc.big)))
    }

    fn rc_connect(&mut self, dgid: Gid, ud_qpn: Qpn, recv_mtu: u32) -> Result<ConnHandle, RcError> {
        let rc = self.rc_live()?;
        if !(MIN_RC_MTU..=rc.big.slot_size).contains(&recv_mtu) {
            return Err(RcError::BadMtu {
                mtu: recv_mtu,
                max: rc.big.slot_size,
            });
        }
        let local = Local {
            back: None,
            state: LocalState::Connecting,
        };
        let conn = rc
            .alloc(local)
            .ok_or(RcError::TooManyConnections { limit: MAX_LOCAL })?;
        let fill = CmRequest {
            qpn: ud_qpn.get(),
            mtu: recv_mtu,
            gid: dgid.0,
            ..CmRequest::default()
        };
        if let Err(e) = rc.push(cm_op::CONNECT, Some(conn), fill) {
            rc.free(conn);
            return Err(e);
        }
        Ok(conn)
    }

    fn rc_accept(&mut self, conn: ConnHandle, recv_mtu: u32) -> Result<(), RcError> {
        let rc = self.rc_live()?;
        if !(MIN_RC_MTU..=rc.big.slot_size).contains(&recv_mtu) {
            return Err(RcError::BadMtu {
                mtu: recv_mtu,
                max: rc.big.slot_size,
            });
        }
        let local = *rc.get_mut(conn).ok_or(RcError::UnknownConnection(conn))?;
        let (LocalState::Requested, Some(back)) = (local.state, local.back) else {
            return Err(wrong_state(conn, local.state));
        };
        let fill = CmRequest {
            conn: back,
            mtu: recv_mtu,
            ..CmRequest::default()
        };
        rc.push(cm_op::ACCEPT, Some(conn), fill)?;
        // Not acceptable twice while the answer is on its way.
        if let Some(l) = rc.get_mut(conn) {
            l.state = LocalState::Connecting;
        }
        Ok(())
    }

    fn rc_reject(&mut self, conn: ConnHandle) -> Result<(), RcError> {
        let rc = self.rc_live()?;
        let local = *rc.get_mut(conn).ok_or(RcError::UnknownConnection(conn))?;
        let (LocalState::Requested, Some(back)) = (local.state, local.back) else {
            return Err(wrong_state(conn, local.state));
        };
        let fill = CmRequest {
            conn: back,
            ..CmRequest::default()
        };
        rc.push(cm_op::REJECT, None, fill)?;
        rc.free(conn);
        Ok(())
    }

    /// Not while connecting: the back end has not named the connection
    /// yet (wait for the answer, then disconnect).
    fn rc_disconnect(&mut self, conn: ConnHandle) -> Result<(), RcError> {
        let rc = self.rc_live()?;
        let local = *rc.get_mut(conn).ok_or(RcError::UnknownConnection(conn))?;
        let Some(back) = local.back.filter(|_| local.state != LocalState::Connecting) else {
            return Err(wrong_state(conn, local.state));
        };
        let fill = CmRequest {
            conn: back,
            ..CmRequest::default()
        };
        rc.push(cm_op::DISCONNECT, Some(conn), fill)?;
        if let Some(l) = rc.get_mut(conn) {
            l.state = LocalState::Dead;
        }
        Ok(())
    }

    fn rc_post_send(
        &mut self,
        conn: ConnHandle,
        slot: BigTxSlot,
        len: usize,
    ) -> Result<(), RcPostError<BigTxSlot>> {
        let fail = |slot, error| Err(RcPostError { slot, error });
        let rc = match self.rc_live() {
            Ok(rc) => rc,
            Err(error) => return fail(slot, error),
        };
        let Some(local) = rc.get_mut(conn).copied() else {
            return fail(slot, RcError::UnknownConnection(conn));
        };
        let (LocalState::Established, Some(back)) = (local.state, local.back) else {
            return fail(slot, wrong_state(conn, local.state));
        };
        let index = slot.index();
        let free = rc
            .tx_in_flight
            .get(usize::from(index))
            .is_some_and(Option::is_none);
        if !free || len == 0 || len > rc.big.slot_size as usize {
            return fail(slot, RcError::BadSlot(index));
        }
        let req = TxRequest {
            slot: index,
            flags: TX_FLAG_RC,
            len: len as u32,
            dest: back,
            ..TxRequest::default()
        };
        if self.tx.push_request(&req).is_err() {
            return fail(slot, RcError::QueueFull);
        }
        if let Some(rc) = self.rc.as_mut() {
            if let Some(f) = rc.tx_in_flight.get_mut(usize::from(index)) {
                *f = Some(conn);
            }
        }
        self.unpublished = true;
        Ok(())
    }

    fn rc_post_recv(&mut self, slot: BigRxSlot) -> Result<(), RcPostError<BigRxSlot>> {
        let rc = match self.rc_live() {
            Ok(rc) => rc,
            Err(error) => return Err(RcPostError { slot, error }),
        };
        let index = slot.index();
        if rc.rx_in_flight.get(usize::from(index)).is_none_or(|&f| f) {
            return Err(RcPostError {
                slot,
                error: RcError::BadSlot(index),
            });
        }
        let req = RxRequest {
            slot: index,
            _reserved0: RX_REQ_FLAG_BIG,
            _reserved1: 0,
        };
        if self.rx.push_request(&req).is_err() {
            return Err(RcPostError {
                slot,
                error: RcError::QueueFull,
            });
        }
        if let Some(f) = self
            .rc
            .as_mut()
            .and_then(|rc| rc.rx_in_flight.get_mut(usize::from(index)))
        {
            *f = true;
        }
        self.unpublished = true;
        Ok(())
    }

    /// Reads the rings (keeping what is not RC for `poll_cq`), then hands
    /// out one RC completion.
    fn poll_rc(&mut self) -> Result<Option<RcCompletion>, HcaError> {
        if self.rc.is_none() {
            return Ok(None);
        }
        // Drained or not, what is queued (the flushed slots) still comes.
        self.pump_for_rc();
        Ok(self.rc.as_mut().and_then(|rc| rc.queue.pop_front()))
    }

    fn big_area(&mut self) -> BigArea<'_> {
        match &self.rc {
            Some(rc) => BigArea::new(&rc.region, rc.big),
            None => BigArea::new(&self.buffers, BigLayout::NONE),
        }
    }
}

fn wrong_state(conn: ConnHandle, state: LocalState) -> RcError {
    let state = match state {
        LocalState::Connecting | LocalState::Dead => ConnState::Connecting,
        LocalState::Requested => ConnState::Requested,
        LocalState::Established => ConnState::Established,
    };
    RcError::WrongState { conn, state }
}
