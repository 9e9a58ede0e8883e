//! Connected mode (RFC 4755) on a real HCA: RC QPs set up with librdmacm.
//!
//! Each port with connected mode has its own rdma_cm event channel and a
//! listening identifier at its endpoint (see `cm_addr`: the GID's address
//! and a port named after the UD QPN). The QPs are ours (user-managed):
//! - active: `rc_connect` resolves the address, then the route, creates the
//!   QP, moves it to INIT and connects; on the answer it moves the QP to RTR
//!   and RTS, calls `rdma_establish`, and reports `Established`;
//! - passive: a request on the listener becomes `RcEvent::Request`;
//!   `rc_accept` creates the QP, moves it through INIT, RTR and RTS with
//!   the request's attributes, and accepts; `ESTABLISHED` reports it.
//!
//! Every RC QP receives from the port's one SRQ (the big receive pool) and
//! completes on the RC CQ, which reports to the port's completion channel.
//! A connection that ends (`rc_disconnect`, the peer's disconnect, a send
//! out of retries) has its QP moved to the error state; its final event
//! (`Closed`, `Broken`, `Rejected`) is reported once its flushed sends have
//! all come back, and then its identifier and QP are destroyed.
//!
//! Idle connections are not timed out here (the guest's connection table
//! does that, by disconnecting).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::io;

use super::cm_addr::{service_port, AddrKind, CmAddr, PrivateData};
use super::cm_gate::CmGate;
use super::ffi::{CmChannel, CmEvent, CmId, ConnParams, PortSpace, RcCore, RcQp, RcWc};
use super::ffi::{Queues, POLL_BATCH};
use crate::hca::HcaError;
use crate::rc::{
    BigArea, BigLayout, BigRxSlot, BigRxSlots, BigTxSlot, BigTxSlots, BreakReason, ConnHandle,
    ConnState, RcCaps, RcCompletion, RcError, RcEvent, RcPeer, RcPostError, RcRecvInfo, RcStatus,
    RejectReason, MIN_RC_MTU,
};
use crate::rdma::error::RdmaError;
use crate::types::{Gid, Qpn};

/// At most this many connections per port (handles carry a 16-bit index).
pub const MAX_RC_CONNS: usize = 1024;

/// How long address and route resolution may take.
const RESOLVE_TIMEOUT_MS: i32 = 2000;

/// RC retries of a lost packet, and of a receiver-not-ready answer (7:
/// retry for ever, so a receiver short of big receives slows the sender
/// down instead of breaking the connection).
const RETRY_COUNT: u8 = 7;
const RNR_RETRY_COUNT: u8 = 7;

/// `IBV_QPS_INIT`, `IBV_QPS_RTR`, `IBV_QPS_RTS`.
const QPS_INIT: u32 = 1;
const QPS_RTR: u32 = 2;
const QPS_RTS: u32 = 3;

/// `ibv_wc_status` codes connected mode tells apart.
const WC_SUCCESS: u32 = 0;
const WC_LOC_LEN_ERR: u32 = 1;
const WC_FLUSH_ERR: u32 = 5;
const WC_RETRY_EXC_ERR: u32 = 12;
const WC_RNR_RETRY_EXC_ERR: u32 = 13;

/// The CM's reject reason for "no listener on that service ID"
/// (`IB_CM_REJ_INVALID_SERVICE_ID`).
const REJ_INVALID_SERVICE_ID: i32 = 8;

/// Work request ids of RC sends and receives (their own CQ).
const TAG_SEND: u64 = 0x5253 << 32; // "RS"
const TAG_RECV: u64 = 0x5252 << 32; // "RR"

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Active: resolving the address, then the route.
    Resolving,
    /// Active: the request is out.
    Connecting,
    /// Passive: a request waits for `rc_accept` or `rc_reject`.
    Requested,
    /// Passive: accepted, waiting for `ESTABLISHED`.
    Accepting,
    Established,
    /// Over; the final event waits for the flushed sends.
    Ending,
}

struct Conn {
    handle: ConnHandle,
    /// Declared first: destroyed before the QP.
    id: CmId,
    qp: Option<RcQp>,
    phase: Phase,
    /// Active: the target; passive: the requester.
    peer: RcPeer,
    /// The receive MTU we advertise.
    recv_mtu: u32,
    send_mtu: u32,
    /// Sends posted and not yet completed.
    sends: usize,
    /// The event that ends the connection, once `sends` is 0.
    end: Option<RcEvent>,
}

impl Conn {
    fn state(&self) -> ConnState {
        match self.phase {
            Phase::Resolving | Phase::Connecting => ConnState::Connecting,
            Phase::Requested => ConnState::Requested,
            _ => ConnState::Established,
        }
    }
}

/// Counters of connected mode on this port.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RdmaRcStats {
    pub connects: u64,
    pub requests: u64,
    /// Requests refused before the guest saw them: malformed, for another
    /// QP, or over the connection limit.
    pub requests_refused: u64,
    pub established: u64,
    pub broken: u64,
    pub sends: u64,
    pub recvs: u64,
    pub cm_events: u64,
}

/// One port's connected mode.
pub(super) struct RdmaRc {
    /// First: connections (their ids and QPs) go before the listener and
    /// the core.
    conns: Vec<Option<Conn>>,
    generations: Vec<u16>,
    /// Held for its `Drop` (stops listening); requests arrive on the
    /// channel.
    _listener: CmId,
    core: Arc<RcCore>,
    channel: Arc<CmChannel>,
    caps: RcCaps,
    kind: AddrKind,
    ps: PortSpace,
    local: Gid,
    ud_qpn: u32,
    /// Connections by rdma_cm id and by RC QPN.
    by_id: BTreeMap<usize, u16>,
    by_qpn: BTreeMap<u32, u16>,
    region: ring::Window,
    slots: Option<(BigTxSlots, BigRxSlots)>,
    tx_flight: Vec<Option<BigTxSlot>>,
    rx_flight: Vec<Option<BigRxSlot>>,
    queue: VecDeque<RcCompletion>,
    wcs: Vec<RcWc>,
    name: alloc::string::String,
    /// When `poll` reads the rdma_cm channel.
    cm_gate: CmGate,
    pub(super) stats: RdmaRcStats,
}

/// What enabling connected mode needs from the port.
pub(super) struct RcSetup<'a> {
    pub queues: &'a mut Queues,
    pub region: ring::Window,
    pub big: BigLayout,
    pub max_conns: usize,
    pub gid: Gid,
    pub ud_qpn: Qpn,
    pub kind: AddrKind,
    pub name: &'a str,
}

fn cm_error(call: &'static str) -> impl FnOnce(i32) -> RdmaError {
    move |errno| RdmaError::Verbs { call, errno }
}

impl RdmaRc {
    pub(super) fn new(s: RcSetup<'_>) -> Result<RdmaRc, RdmaError> {
        let big = s.big;
        if big.slot_size < MIN_RC_MTU || big.tx_count == 0 || big.rx_count == 0 {
            return Err(RdmaError::InvalidConfig {
                field: "connected mode's big slots",
                reason: "need at least one TX and one RX slot of 256 bytes or more",
            });
        }
        if s.region.len() < big.region_len() {
            return Err(RdmaError::RegionTooSmall {
                needed: big.region_len(),
                actual: s.region.len(),
            });
        }
        let Some(port) = service_port(s.ud_qpn) else {
            return Err(RdmaError::InvalidConfig {
                field: "connected mode",
                reason: "the UD QPN's low 16 bits are 0, which names no rdma_cm port",
            });
        };
        let cqe = u32::from(big.tx_count) + u32::from(big.rx_count);
        let core = s
            .queues
            .create_rc(s.region.clone(), cqe, u32::from(big.rx_count))?;
        let channel = CmChannel::create()?;
        let ps = match s.kind {
            AddrKind::Ip { .. } => PortSpace::Tcp,
            AddrKind::Ib { .. } => PortSpace::Ib,
        };
        let listener = CmId::create(&channel, ps).map_err(cm_error("rdma_create_id"))?;
        let local = CmAddr::endpoint(s.gid, port, s.kind);
        listener
            .bind(&local.encode())
            .map_err(cm_error("rdma_bind_addr"))?;
        listener.listen(16).map_err(cm_error("rdma_listen"))?;
        log::info!(
            "rdma: {}: connected mode listening at {local:?} for UD QP {:#x}",
            s.name,
            s.ud_qpn.get()
        );
        let max_conns = s.max_conns.clamp(1, MAX_RC_CONNS);
        Ok(RdmaRc {
            conns: (0..max_conns).map(|_| None).collect(),
            generations: alloc::vec![0; max_conns],
            _listener: listener,
            core,
            channel,
            caps: RcCaps { max_conns, big },
            kind: s.kind,
            ps,
            local: s.gid,
            ud_qpn: s.ud_qpn.get(),
            by_id: BTreeMap::new(),
            by_qpn: BTreeMap::new(),
            region: s.region,
            slots: Some((BigTxSlots::all(&big), BigRxSlots::all(&big))),
            tx_flight: (0..big.tx_count).map(|_| None).collect(),
            rx_flight: (0..big.rx_count).map(|_| None).collect(),
            queue: VecDeque::new(),
            wcs: Vec::with_capacity(POLL_BATCH),
            name: s.name.into(),
            cm_gate: CmGate::new(),
            stats: RdmaRcStats::default(),
        })
    }

    /// The rdma_cm event channel's descriptor.
    pub(super) fn cm_fd(&self) -> std::os::fd::RawFd {
        self.channel.fd()
    }

    pub(super) fn caps(&self) -> RcCaps {
        self.caps
    }

    pub(super) fn take_big_slots(&mut self) -> Option<(BigTxSlots, BigRxSlots)> {
        self.slots.take()
    }

    pub(super) fn big_area(&self) -> BigArea<'_> {
        BigArea::new(&self.region, self.caps.big)
    }

    /// Connections held (in any phase).
    pub(super) fn held(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    fn check_mtu(&self, mtu: u32) -> Result<(), RcError> {
        let max = self.caps.big.slot_size;
        if (MIN_RC_MTU..=max).contains(&mtu) {
            Ok(())
        } else {
            Err(RcError::BadMtu { mtu, max })
        }
    }

    /// A free connection index and its handle.
    fn allocate(&mut self) -> Result<(u16, ConnHandle), RcError> {
        let index =
            self.conns
                .iter()
                .position(Option::is_none)
                .ok_or(RcError::TooManyConnections {
                    limit: self.caps.max_conns,
                })?;
        let generation = self.generations.get(index).copied().unwrap_or(0);
        let index = u16::try_from(index).map_err(|_| RcError::TooManyConnections {
            limit: self.caps.max_conns,
        })?;
        Ok((
            index,
            ConnHandle(u32::from(generation) << 16 | u32::from(index)),
        ))
    }

    fn index_of(&self, handle: ConnHandle) -> Result<u16, RcError> {
        let index = (handle.0 & 0xffff) as u16;
        match self.conns.get(usize::from(index)) {
            Some(Some(c)) if c.handle == handle => Ok(index),
            _ => Err(RcError::UnknownConnection(handle)),
        }
    }

    fn conn_mut(&mut self, index: u16) -> Option<&mut Conn> {
        self.conns.get_mut(usize::from(index))?.as_mut()
    }

    fn insert(&mut self, index: u16, conn: Conn) {
        self.by_id.insert(conn.id.key(), index);
        if let Some(slot) = self.conns.get_mut(usize::from(index)) {
            *slot = Some(conn);
        }
    }

    pub(super) fn connect(
        &mut self,
        dgid: Gid,
        ud_qpn: Qpn,
        recv_mtu: u32,
    ) -> Result<ConnHandle, RcError> {
        self.check_mtu(recv_mtu)?;
        let (index, handle) = self.allocate()?;
        let id = CmId::create(&self.channel, self.ps).map_err(|errno| {
            log::warn!(
                "rdma: {}: rdma_create_id failed: {}",
                self.name,
                io::Error::from_raw_os_error(errno)
            );
            RcError::QueueFull
        })?;
        self.stats.connects += 1;
        let mut conn = Conn {
            handle,
            id,
            qp: None,
            phase: Phase::Resolving,
            peer: RcPeer {
                gid: dgid,
                ud_qpn,
                recv_mtu: 0,
            },
            recv_mtu,
            send_mtu: 0,
            sends: 0,
            end: None,
        };
        let started = match service_port(ud_qpn) {
            None => Err(RejectReason::NoListener),
            Some(port) => {
                let src = CmAddr::endpoint(self.local, 0, self.kind).encode();
                let dst = CmAddr::endpoint(dgid, port, self.kind).encode();
                conn.id
                    .resolve_addr(&src, &dst, RESOLVE_TIMEOUT_MS)
                    .map_err(|errno| {
                        log::info!(
                            "rdma: {}: resolving {dgid} failed: {}",
                            self.name,
                            io::Error::from_raw_os_error(errno)
                        );
                        RejectReason::Unreachable
                    })
            }
        };
        if let Err(reason) = started {
            conn.phase = Phase::Ending;
            conn.end = Some(RcEvent::Rejected {
                conn: handle,
                reason,
            });
        }
        self.insert(index, conn);
        self.finish_if_done(index);
        Ok(handle)
    }

    pub(super) fn accept(&mut self, handle: ConnHandle, recv_mtu: u32) -> Result<(), RcError> {
        let index = self.requested(handle)?;
        self.check_mtu(recv_mtu)?;
        let (dev_core, slot_size) = (Arc::clone(&self.core), self.caps.big.slot_size);
        let (send_wr, ud_qpn) = (u32::from(self.caps.big.tx_count), self.ud_qpn);
        let result = {
            let Some(conn) = self.conn_mut(index) else {
                return Err(RcError::UnknownConnection(handle));
            };
            conn.recv_mtu = recv_mtu;
            conn.send_mtu = conn.peer.recv_mtu.min(slot_size);
            (|| -> Result<RcQp, RdmaError> {
                let qp = RcQp::create(&dev_core, send_wr)?;
                move_qp(&conn.id, &qp, &[QPS_INIT, QPS_RTR, QPS_RTS])?;
                let (private, len) = PrivateData {
                    ud_qpn,
                    recv_mtu,
                    target_qpn: None,
                }
                .encode();
                conn.id
                    .accept(&ConnParams {
                        private: &private[..len],
                        qp_num: qp.qpn(),
                        retry_count: RETRY_COUNT,
                        rnr_retry_count: RNR_RETRY_COUNT,
                    })
                    .map_err(cm_error("rdma_accept"))?;
                Ok(qp)
            })()
        };
        match result {
            Ok(qp) => {
                let qpn = qp.qpn();
                if let Some(conn) = self.conn_mut(index) {
                    conn.qp = Some(qp);
                    conn.phase = Phase::Accepting;
                }
                self.by_qpn.insert(qpn, index);
            }
            Err(e) => {
                log::warn!("rdma: {}: accepting a connection failed: {e}", self.name);
                self.end(index, BreakReason::LinkDown);
            }
        }
        Ok(())
    }

    pub(super) fn reject(&mut self, handle: ConnHandle) -> Result<(), RcError> {
        let index = self.requested(handle)?;
        if let Some(Err(errno)) = self.conn_mut(index).map(|c| c.id.reject()) {
            log::debug!("rdma: rdma_reject failed: errno {errno}");
        }
        self.remove(index);
        Ok(())
    }

    /// The index of `handle`'s connection, which must be a request waiting
    /// for its answer.
    fn requested(&mut self, handle: ConnHandle) -> Result<u16, RcError> {
        let index = self.index_of(handle)?;
        let conn = self
            .conn_mut(index)
            .ok_or(RcError::UnknownConnection(handle))?;
        if conn.phase != Phase::Requested {
            return Err(RcError::WrongState {
                conn: handle,
                state: conn.state(),
            });
        }
        Ok(index)
    }

    pub(super) fn disconnect(&mut self, handle: ConnHandle) -> Result<(), RcError> {
        let index = self.index_of(handle)?;
        let Some(conn) = self.conn_mut(index) else {
            return Err(RcError::UnknownConnection(handle));
        };
        if conn.phase != Phase::Ending {
            stop(conn);
            conn.phase = Phase::Ending;
            conn.end = Some(RcEvent::Closed { conn: handle });
        }
        self.finish_if_done(index);
        Ok(())
    }

    /// Ends every connection (the port is closing).
    pub(super) fn close_all(&mut self) {
        for index in 0..self.conns.len() {
            if let Ok(index) = u16::try_from(index) {
                if self
                    .conn_mut(index)
                    .is_some_and(|c| c.phase != Phase::Ending)
                {
                    self.end(index, BreakReason::LinkDown);
                }
            }
        }
    }

    pub(super) fn post_send(
        &mut self,
        handle: ConnHandle,
        slot: BigTxSlot,
        len: usize,
    ) -> Result<(), RcPostError<BigTxSlot>> {
        let index = match self.index_of(handle) {
            Ok(i) => i,
            Err(error) => return Err(RcPostError { slot, error }),
        };
        let Some(offset) = self.caps.big.tx_offset(slot.index()) else {
            let error = RcError::BadSlot(slot.index());
            return Err(RcPostError { slot, error });
        };
        let wr_id = TAG_SEND | u64::from(index) << 16 | u64::from(slot.index());
        let slot_index = usize::from(slot.index());
        let Some(conn) = self
            .conns
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        else {
            return Err(RcPostError {
                slot,
                error: RcError::UnknownConnection(handle),
            });
        };
        let status = match (conn.phase, &conn.qp) {
            (Phase::Established, Some(qp)) if len <= conn.send_mtu as usize => {
                match u32::try_from(len)
                    .map_err(|_| libc::EINVAL)
                    .and_then(|l| qp.post_send(wr_id, offset, l))
                {
                    Ok(()) => {
                        conn.sends += 1;
                        self.stats.sends += 1;
                        if let Some(t) = self.tx_flight.get_mut(slot_index) {
                            *t = Some(slot);
                        }
                        return Ok(());
                    }
                    Err(errno) => {
                        log::warn!(
                            "rdma: {}: RC ibv_post_send failed: {}",
                            self.name,
                            io::Error::from_raw_os_error(errno)
                        );
                        RcStatus::General
                    }
                }
            }
            (Phase::Established, Some(_)) => RcStatus::LocalLength,
            (Phase::Ending, _) => RcStatus::Flushed,
            _ => {
                let error = RcError::WrongState {
                    conn: handle,
                    state: conn.state(),
                };
                return Err(RcPostError { slot, error });
            }
        };
        self.queue.push_back(RcCompletion::Send {
            slot,
            conn: handle,
            status,
        });
        Ok(())
    }

    pub(super) fn post_recv(&mut self, slot: BigRxSlot) -> Result<(), RcPostError<BigRxSlot>> {
        let Some(offset) = self.caps.big.rx_offset(slot.index()) else {
            let error = RcError::BadSlot(slot.index());
            return Err(RcPostError { slot, error });
        };
        let wr_id = TAG_RECV | u64::from(slot.index());
        match self
            .core
            .post_srq_recv(wr_id, offset, self.caps.big.slot_size)
        {
            Ok(()) => {
                if let Some(r) = self.rx_flight.get_mut(usize::from(slot.index())) {
                    *r = Some(slot);
                }
                Ok(())
            }
            Err(errno) => {
                log::warn!(
                    "rdma: {}: ibv_post_srq_recv failed: {}",
                    self.name,
                    io::Error::from_raw_os_error(errno)
                );
                Err(RcPostError {
                    slot,
                    error: RcError::QueueFull,
                })
            }
        }
    }

    /// The port's event descriptor woke: read the rdma_cm channel at the
    /// next poll.
    pub(super) fn wake_cm(&mut self) {
        self.cm_gate.wake();
    }

    pub(super) fn poll(&mut self) -> Result<Option<RcCompletion>, HcaError> {
        if self.cm_gate.due() {
            self.pump_cm();
        }
        if self.queue.is_empty() {
            self.reap()?;
        }
        Ok(self.queue.pop_front())
    }

    /// Arms the RC CQ; true if something already waits.
    pub(super) fn arm(&mut self) -> Result<bool, HcaError> {
        self.pump_cm();
        if !self.queue.is_empty() {
            return Ok(true);
        }
        self.core.req_notify().map_err(|errno| {
            log::error!(
                "rdma: {}: ibv_req_notify_cq(RC) failed: {}",
                self.name,
                io::Error::from_raw_os_error(errno)
            );
            HcaError::Disconnected
        })?;
        self.reap()?;
        Ok(!self.queue.is_empty())
    }

    fn reap(&mut self) -> Result<(), HcaError> {
        self.wcs.clear();
        let mut wcs = core::mem::take(&mut self.wcs);
        let result = self.core.poll(&mut wcs);
        for wc in &wcs {
            self.complete(wc);
        }
        self.wcs = wcs;
        match result {
            Ok(_) => Ok(()),
            Err(errno) => {
                log::error!(
                    "rdma: {}: polling the RC CQ failed: {}",
                    self.name,
                    io::Error::from_raw_os_error(errno)
                );
                Err(HcaError::Disconnected)
            }
        }
    }

    fn complete(&mut self, wc: &RcWc) {
        let status = rc_status(wc.status);
        let slot_index = (wc.wr_id & 0xffff) as usize;
        match wc.wr_id & (0xffff_ffff << 32) {
            TAG_SEND => {
                let index = ((wc.wr_id >> 16) & 0xffff) as u16;
                let Some(slot) = self.tx_flight.get_mut(slot_index).and_then(Option::take) else {
                    log::error!("rdma: {}: RC send completion for an idle slot", self.name);
                    return;
                };
                let Some(conn) = self.conn_mut(index) else {
                    log::error!("rdma: {}: RC send completion for no connection", self.name);
                    return;
                };
                conn.sends = conn.sends.saturating_sub(1);
                let handle = conn.handle;
                self.queue.push_back(RcCompletion::Send {
                    slot,
                    conn: handle,
                    status,
                });
                if !matches!(
                    status,
                    RcStatus::Success | RcStatus::Flushed | RcStatus::LocalLength
                ) {
                    let reason = match status {
                        RcStatus::RetryExceeded => BreakReason::RetryExceeded,
                        _ => BreakReason::LinkDown,
                    };
                    self.end(index, reason);
                }
                self.finish_if_done(index);
            }
            TAG_RECV => {
                let Some(slot) = self.rx_flight.get_mut(slot_index).and_then(Option::take) else {
                    log::error!(
                        "rdma: {}: RC receive completion for an idle slot",
                        self.name
                    );
                    return;
                };
                let from = self
                    .by_qpn
                    .get(&wc.qp_num)
                    .and_then(|i| self.conns.get(usize::from(*i)))
                    .and_then(Option::as_ref)
                    .map(|c| (c.handle, c.peer.ud_qpn));
                let (status, (conn, src_qpn)) = match from {
                    Some(found) => (status, found),
                    None => (
                        RcStatus::General,
                        (ConnHandle(u32::MAX), Qpn::new_truncated(0)),
                    ),
                };
                if status == RcStatus::Success {
                    self.stats.recvs += 1;
                }
                self.queue.push_back(RcCompletion::Recv {
                    slot,
                    status,
                    info: RcRecvInfo {
                        conn,
                        byte_len: wc.byte_len,
                        src_qpn,
                    },
                });
            }
            _ => log::error!("rdma: {}: RC completion with a foreign wr_id", self.name),
        }
    }

    /// Takes every waiting rdma_cm event.
    fn pump_cm(&mut self) {
        loop {
            match self.channel.next_event() {
                Ok(Some(event)) => {
                    self.stats.cm_events += 1;
                    self.cm_event(event);
                }
                Ok(None) => return,
                Err(errno) => {
                    log::error!(
                        "rdma: {}: rdma_get_cm_event failed: {}",
                        self.name,
                        io::Error::from_raw_os_error(errno)
                    );
                    return;
                }
            }
        }
    }

    fn cm_event(&mut self, mut event: CmEvent) {
        use rdma_sys::rdma_cm_event_type::*;
        if let Some((id, peer)) = event.request.take() {
            self.request(id, &peer, &event.private);
            return;
        }
        let Some(&index) = self.by_id.get(&event.id) else {
            log::debug!(
                "rdma: {}: rdma_cm event {} for no connection",
                self.name,
                event.kind
            );
            return;
        };
        let Some(phase) = self.conn_mut(index).map(|c| c.phase) else {
            return;
        };
        match event.kind {
            RDMA_CM_EVENT_ADDR_RESOLVED if phase == Phase::Resolving => {
                let ok = self
                    .conn_mut(index)
                    .is_some_and(|c| c.id.resolve_route(RESOLVE_TIMEOUT_MS).is_ok());
                if !ok {
                    self.reject_active(index, RejectReason::Unreachable);
                }
            }
            RDMA_CM_EVENT_ROUTE_RESOLVED if phase == Phase::Resolving => {
                if let Err(e) = self.send_request(index) {
                    log::warn!("rdma: {}: connecting failed: {e}", self.name);
                    self.reject_active(index, RejectReason::Unreachable);
                }
            }
            RDMA_CM_EVENT_CONNECT_RESPONSE if phase == Phase::Connecting => {
                if let Err(e) = self.answered(index, &event.private) {
                    log::warn!("rdma: {}: finishing a connection failed: {e}", self.name);
                    self.reject_active(index, RejectReason::Refused);
                }
            }
            RDMA_CM_EVENT_ESTABLISHED if matches!(phase, Phase::Accepting | Phase::Connecting) => {
                self.established(index);
            }
            RDMA_CM_EVENT_ADDR_ERROR | RDMA_CM_EVENT_ROUTE_ERROR | RDMA_CM_EVENT_UNREACHABLE
                if phase == Phase::Resolving || phase == Phase::Connecting =>
            {
                self.reject_active(index, RejectReason::Unreachable);
            }
            RDMA_CM_EVENT_CONNECT_ERROR | RDMA_CM_EVENT_UNREACHABLE
                if phase == Phase::Connecting =>
            {
                self.reject_active(index, RejectReason::Timeout);
            }
            RDMA_CM_EVENT_REJECTED if phase == Phase::Connecting => {
                let reason = if event.status == REJ_INVALID_SERVICE_ID {
                    RejectReason::NoListener
                } else {
                    RejectReason::Refused
                };
                self.reject_active(index, reason);
            }
            RDMA_CM_EVENT_DISCONNECTED if phase != Phase::Ending => {
                self.end(index, BreakReason::PeerClosed);
            }
            RDMA_CM_EVENT_CONNECT_ERROR
            | RDMA_CM_EVENT_UNREACHABLE
            | RDMA_CM_EVENT_DEVICE_REMOVAL
                if phase != Phase::Ending =>
            {
                self.end(index, BreakReason::LinkDown);
            }
            kind => log::debug!(
                "rdma: {}: rdma_cm event {kind} (status {}) in {phase:?}",
                self.name,
                event.status
            ),
        }
        self.finish_if_done(index);
    }

    /// A connection request arrived on the listener.
    fn request(&mut self, id: CmId, peer: &super::cm_addr::RawSockaddr, private: &[u8]) {
        self.stats.requests += 1;
        let data = PrivateData::decode(private, true);
        let peer_gid = CmAddr::decode(peer).map(|a| a.gid());
        let refuse = |this: &mut RdmaRc, id: CmId, why: &str| {
            this.stats.requests_refused += 1;
            log::info!("rdma: {}: refused a connection request: {why}", this.name);
            if let Err(errno) = id.reject() {
                log::debug!("rdma: rdma_reject failed: errno {errno}");
            }
        };
        let (Some(data), Some(gid)) = (data, peer_gid) else {
            return refuse(self, id, "malformed");
        };
        if data.target_qpn != Some(self.ud_qpn) {
            return refuse(self, id, "meant for another UD QP");
        }
        if data.recv_mtu < MIN_RC_MTU {
            return refuse(self, id, "receive MTU too small");
        }
        let Ok((index, handle)) = self.allocate() else {
            return refuse(self, id, "connection limit reached");
        };
        let peer = RcPeer {
            gid,
            ud_qpn: Qpn::new_truncated(data.ud_qpn),
            recv_mtu: data.recv_mtu,
        };
        self.insert(
            index,
            Conn {
                handle,
                id,
                qp: None,
                phase: Phase::Requested,
                peer,
                recv_mtu: 0,
                send_mtu: 0,
                sends: 0,
                end: None,
            },
        );
        self.queue
            .push_back(RcCompletion::Event(RcEvent::Request { conn: handle, peer }));
    }

    /// Active side, route resolved: creates the QP and sends the request.
    fn send_request(&mut self, index: u16) -> Result<(), RdmaError> {
        let (core, send_wr, ud_qpn) = (
            Arc::clone(&self.core),
            u32::from(self.caps.big.tx_count),
            self.ud_qpn,
        );
        let Some(conn) = self.conn_mut(index) else {
            return Ok(());
        };
        let qp = RcQp::create(&core, send_wr)?;
        move_qp(&conn.id, &qp, &[QPS_INIT])?;
        let (private, len) = PrivateData {
            ud_qpn,
            recv_mtu: conn.recv_mtu,
            target_qpn: Some(conn.peer.ud_qpn.get()),
        }
        .encode();
        conn.id
            .connect(&ConnParams {
                private: &private[..len],
                qp_num: qp.qpn(),
                retry_count: RETRY_COUNT,
                rnr_retry_count: RNR_RETRY_COUNT,
            })
            .map_err(cm_error("rdma_connect"))?;
        let qpn = qp.qpn();
        conn.qp = Some(qp);
        conn.phase = Phase::Connecting;
        self.by_qpn.insert(qpn, index);
        Ok(())
    }

    /// Active side, the answer came: RTR, RTS, establish.
    fn answered(&mut self, index: u16, private: &[u8]) -> Result<(), RdmaError> {
        let slot_size = self.caps.big.slot_size;
        let Some(conn) = self.conn_mut(index) else {
            return Ok(());
        };
        let data = PrivateData::decode(private, false).ok_or(RdmaError::InvalidConfig {
            field: "a connection answer",
            reason: "its private data is too short",
        })?;
        let Some(qp) = &conn.qp else {
            return Ok(());
        };
        move_qp(&conn.id, qp, &[QPS_RTR, QPS_RTS])?;
        conn.id.establish().map_err(cm_error("rdma_establish"))?;
        conn.peer.recv_mtu = data.recv_mtu;
        conn.send_mtu = data.recv_mtu.min(slot_size);
        self.established(index);
        Ok(())
    }

    fn established(&mut self, index: u16) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        if conn.phase == Phase::Established {
            return;
        }
        conn.phase = Phase::Established;
        let event = RcEvent::Established {
            conn: conn.handle,
            send_mtu: conn.send_mtu,
        };
        self.stats.established += 1;
        self.queue.push_back(RcCompletion::Event(event));
    }

    /// An active connect failed.
    fn reject_active(&mut self, index: u16, reason: RejectReason) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        stop(conn);
        conn.phase = Phase::Ending;
        conn.end = Some(RcEvent::Rejected {
            conn: conn.handle,
            reason,
        });
    }

    /// A connection broke (or the port closes): its QP stops, and `Broken`
    /// follows its flushed sends. A connect that had not been answered
    /// ends as rejected instead.
    fn end(&mut self, index: u16, reason: BreakReason) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        if conn.phase == Phase::Ending {
            return;
        }
        let connecting = matches!(conn.phase, Phase::Resolving | Phase::Connecting);
        stop(conn);
        conn.phase = Phase::Ending;
        conn.end = Some(if connecting {
            RcEvent::Rejected {
                conn: conn.handle,
                reason: RejectReason::Unreachable,
            }
        } else {
            RcEvent::Broken {
                conn: conn.handle,
                reason,
            }
        });
        self.stats.broken += 1;
    }

    /// Reports an ended connection's final event once its sends are back,
    /// then frees it.
    fn finish_if_done(&mut self, index: u16) {
        let Some(conn) = self.conn_mut(index) else {
            return;
        };
        if conn.phase != Phase::Ending || conn.sends > 0 {
            return;
        }
        if let Some(event) = conn.end.take() {
            self.queue.push_back(RcCompletion::Event(event));
        }
        self.remove(index);
    }

    fn remove(&mut self, index: u16) {
        let Some(conn) = self
            .conns
            .get_mut(usize::from(index))
            .and_then(Option::take)
        else {
            return;
        };
        self.by_id.remove(&conn.id.key());
        if let Some(qp) = &conn.qp {
            self.by_qpn.remove(&qp.qpn());
        }
        if let Some(g) = self.generations.get_mut(usize::from(index)) {
            *g = g.wrapping_add(1);
        }
        // Dropping destroys the id (a disconnect request to the peer if it
        // was connected), then the QP.
        drop(conn);
    }
}

/// Moves `qp` through `states` with the attributes rdma_cm gives for
/// `id`'s connection.
fn move_qp(id: &CmId, qp: &RcQp, states: &[u32]) -> Result<(), RdmaError> {
    for &state in states {
        let call = match state {
            QPS_INIT => "ibv_modify_qp(RC INIT)",
            QPS_RTR => "ibv_modify_qp(RC RTR)",
            _ => "ibv_modify_qp(RC RTS)",
        };
        let (attr, mask) = id.qp_attr(state).map_err(cm_error("rdma_init_qp_attr"))?;
        qp.modify(attr, mask, call)?;
    }
    Ok(())
}

/// Stops a connection: its QP to the error state (flushing its sends) and
/// a disconnect to the peer.
fn stop(conn: &mut Conn) {
    if let Some(qp) = &conn.qp {
        if let Err(e) = qp.set_error() {
            log::warn!("rdma: {e}");
        }
        if matches!(
            conn.phase,
            Phase::Established | Phase::Accepting | Phase::Connecting
        ) {
            if let Err(errno) = conn.id.disconnect() {
                log::debug!("rdma: rdma_disconnect failed: errno {errno}");
            }
        }
    }
}

const fn rc_status(code: u32) -> RcStatus {
    match code {
        WC_SUCCESS => RcStatus::Success,
        WC_LOC_LEN_ERR => RcStatus::LocalLength,
        WC_FLUSH_ERR => RcStatus::Flushed,
        WC_RETRY_EXC_ERR | WC_RNR_RETRY_EXC_ERR => RcStatus::RetryExceeded,
        _ => RcStatus::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_statuses_map_as_the_contract_says() {
        assert_eq!(rc_status(0), RcStatus::Success);
        assert_eq!(rc_status(1), RcStatus::LocalLength);
        assert_eq!(rc_status(5), RcStatus::Flushed);
        assert_eq!(rc_status(12), RcStatus::RetryExceeded);
        assert_eq!(rc_status(13), RcStatus::RetryExceeded);
        for code in [2, 4, 9, 10, 21, 1000] {
            assert_eq!(rc_status(code), RcStatus::General, "{code}");
        }
    }
}
