//! One guest's UD QP on a device port, seen through the verbs contract.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};

use ring::Window;

use super::cm_addr::AddrKind;
use super::cm_gate::CmGate;
use super::config::LinkLayer;
use super::context::Shared;
use super::dests::{Dests, MAX_HANDLES};
use super::error::RdmaError;
use super::ffi::{Ah, AhSpec, EventSet, Queues, POLL_BATCH};
use super::gather::head_send_sges;
use super::ipmc;
use super::mcast_cm::McastCm;
use super::path_cm::{gid_spec, group_spec, PathCm};
use super::rc::{RcSetup, RdmaRc, RdmaRcStats};
use super::resolver::{Plan, Resolutions, ResolveNotifier};
use super::wr::{grh_says_multicast, mgid_pkey, wc_status, Wc, WrId, WC_GRH};
use crate::hca::{
    check_send_head, Completion, DestHandle, Hca, HcaError, McastError, PathError, PostError,
    RecvInfo, UdDest, Verbs, WcStatus,
};
use crate::mem::SlotBuffers;
use crate::slot::{RxSlot, RxSlots, SlotLayout, TxSlot, TxSlots};
use crate::types::{Gid, IbMtu, Lid, PKey, PortAttr, PortState, Qpn, GRH_LEN};

/// The hop limit of address handles (the GRH / IPv6 hop limit, the IPv4 TTL
/// on RoCEv2).
pub const HOP_LIMIT: u8 = 64;

/// The `info` of a receive that carried nothing (flushed or failed).
const EMPTY_INFO: RecvInfo = RecvInfo {
    byte_len: 0,
    src_qpn: Qpn::new_truncated(0),
    src_lid: Lid(0),
    pkey: PKey(0),
    grh_present: false,
    multicast: false,
};

/// Counters of one port.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RdmaStats {
    pub tx_posted: u64,
    /// Of those, sends whose head came from the header arena
    /// (`post_send_with_head`).
    pub tx_head_posted: u64,
    pub rx_posted: u64,
    pub tx_completions: u64,
    pub rx_completions: u64,
    /// Bytes received, GRH areas included.
    pub rx_bytes: u64,
    /// Work completions with an error status (flushes included).
    pub wc_errors: u64,
    /// Sends longer than the MTU, completed with `LocalLength` unposted.
    pub oversize: u64,
    /// Sends through an unknown handle or longer than a slot, completed with
    /// `LocalProtection` unposted.
    pub bad_send: u64,
    /// `ibv_post_send`/`ibv_post_recv` failures.
    pub post_errors: u64,
    /// Completions whose work request id names no outstanding request.
    pub bogus_wc: u64,
    /// Completion channel events acknowledged.
    pub events: u64,
    /// Multicast groups joined through rdma_cm (`rdma_join_multicast`).
    pub cm_joins: u64,
    /// Joins rdma_cm answered with an error (then made without it).
    pub cm_join_refusals: u64,
    /// Unicast paths resolved through rdma_cm (address and route
    /// resolution; the address handle's attributes came from the route).
    pub cm_paths: u64,
    /// Unicast paths rdma_cm could not resolve (an error event, its
    /// timeout, or a failed call), reported as `Unreachable`.
    pub cm_path_errors: u64,
}

/// One guest's port: a registered buffer region, a CQ with a completion
/// channel, a UD QP and a table of address handles. Implements
/// [`Verbs`] and [`Hca`].
///
/// Semantics, next to the sim fabric's:
/// - `post_send` posts one signaled `IBV_WR_SEND` whose single SGE points
///   straight into the slot (zero copy). `post_send_with_head` copies the
///   head into the slot's 64-byte cell of a header arena the port allocates
///   and registers itself, and posts two SGEs: the cell, then the rest of
///   the slot; the HCA never reads the slot's first bytes. A send longer than the port MTU
///   completes with `LocalLength`, and one through an unknown handle or
///   longer than a slot with `LocalProtection`, without being posted.
/// - `post_recv` posts the whole RX slot; the HCA writes the 40-byte GRH
///   area first. On RoCEv2 over IPv4 that area holds 20 undefined bytes and
///   then the IPv4 header.
/// - `flush` does nothing: every post rings the doorbell itself. The QP has
///   a send and a receive queue entry for every slot, and the CQ an entry
///   for every slot, so neither posting nor completing can overflow.
/// - `poll_cq` reaps the CQ in batches of 32. Received P_Key: the HCA drops
///   packets outside the QP's partition and a UD `ibv_wc` does not say which
///   key matched, so `RecvInfo::pkey` is the port's own. `multicast` is read
///   from the GRH area's destination (`ibv_wc` has no flag for it); without
///   a GRH it is false.
/// - on RoCE, `attach_mcast` also joins the group's IPv6 address on the
///   GID's network device (as `rdma_cm` does; see the `ipmc` module), which
///   soft-RoCE needs to deliver group traffic at all, even between two QPs
///   of one device. A multicast GID is an IPv6 group, so multicast needs an
///   IPv6 (not IPv4-mapped) GID index on RoCEv2.
/// - `resolve` returns at once. With rdma_cm (the `rdma_ucm` module), a
///   unicast GID's path is resolved through it (see the `path_cm` module:
///   `rdma_resolve_addr`, then `rdma_resolve_route`, whose answers arrive
///   on the event fd and are taken by `poll_cq`/`arm_cq`); the route gives
///   the handle's attributes (on InfiniBand the SA PathRecord's LID and
///   SL). An error, or no answer within rdma_cm's timeout (2 s a step),
///   is `Unreachable`. The address handle itself is created on the
///   context's resolver threads (on RoCE `ibv_create_ah` may wait for
///   neighbour resolution), and the `Path` completion comes from `poll_cq`
///   once it is done; the notifier ([`RdmaPort::set_notifier`]) is called
///   then. One resolution per port is under way at a time; the others
///   wait in order. Checks that need no device (zero GID, partition, handle
///   room) complete at once. `attach_mcast`/`detach_mcast` act at once and
///   queue their `Mcast` completion before returning. On RoCE a multicast
///   GID resolves whether or not anyone has joined, but, like joins, only
///   inside the port's partition (RFC 4391 MGID bytes 4..6).
/// - native InfiniBand: a multicast GID resolves once this port has joined
///   it through rdma_cm (the join's answer has the MLID, SL and GRH
///   fields); other groups are `Unreachable`. Without rdma_cm only the
///   port's own GID resolves (DLID = own LID), other paths fail with
///   `Unreachable`, and attaches with `NoResources` (no SA join, no MLID).
/// - [`RdmaPort::close`] moves the QP to the error state, so every posted
///   work request comes back from `poll_cq` as `Flushed`; later posts
///   complete at once as `Flushed` and the control verbs fail with
///   `Disconnected`.
/// - `PortChanged` is never reported (no async event handling).
pub struct RdmaPort {
    /// QP, CQ, channel and MR (with the window and device behind them): first,
    /// so they are destroyed first.
    queues: Queues,
    /// Address handles: destroyed after the QP, before the PD (each holds the
    /// device).
    dests: Dests<Ah>,
    shared: Arc<Shared>,
    region: Window,
    layout: SlotLayout,
    attr: PortAttr,
    slots: Option<(TxSlots, RxSlots)>,
    /// Posted sends by slot index, with the handle they use.
    tx_flight: Vec<Option<(TxSlot, DestHandle)>>,
    /// Posted receives by slot index.
    rx_flight: Vec<Option<RxSlot>>,
    in_flight: usize,
    cq: VecDeque<Completion>,
    wcs: Vec<Wc>,
    /// RoCE: the IP-level membership of each attached group.
    ip_groups: BTreeMap<Gid, UdpSocket>,
    /// Address resolutions in progress (on the context's resolver threads).
    resolutions: Resolutions,
    /// Connected mode, once enabled ([`RdmaPort::enable_rc`]).
    rc: Option<RdmaRc>,
    /// Multicast joins through rdma_cm (`None` where rdma_cm is missing).
    mcast: Option<McastCm>,
    /// Attaches waiting for their join, by group (how many asked).
    joining: BTreeMap<Gid, usize>,
    /// When `poll_cq` reads the rdma_cm channel.
    cm_gate: CmGate,
    /// With connected mode: the completion channel and the rdma_cm channel
    /// in one descriptor, which [`RdmaPort::event_fd`] returns.
    events: Option<EventSet>,
    closed: bool,
    stats: RdmaStats,
}

impl RdmaPort {
    pub(super) fn new(
        shared: Arc<Shared>,
        queues: Queues,
        region: Window,
        layout: SlotLayout,
        mtu: IbMtu,
        pkey: PKey,
    ) -> RdmaPort {
        let attr = PortAttr {
            gid: shared.gid,
            lid: shared.lid,
            qpn: Qpn::new_truncated(queues.qpn()),
            pkey,
            qkey: shared.qkey,
            mtu,
            state: shared.state,
        };
        let limit = match shared.caps.max_ah {
            0 => MAX_HANDLES,
            max => max.min(MAX_HANDLES),
        };
        let mut port = RdmaPort {
            queues,
            dests: Dests::new(limit),
            attr,
            region,
            layout,
            slots: Some((TxSlots::all(&layout), RxSlots::all(&layout))),
            tx_flight: (0..layout.tx_count).map(|_| None).collect(),
            rx_flight: (0..layout.rx_count).map(|_| None).collect(),
            in_flight: 0,
            cq: VecDeque::new(),
            wcs: Vec::with_capacity(POLL_BATCH),
            ip_groups: BTreeMap::new(),
            resolutions: Resolutions::new(),
            rc: None,
            mcast: None,
            joining: BTreeMap::new(),
            cm_gate: CmGate::new(),
            events: None,
            closed: false,
            stats: RdmaStats::default(),
            shared,
        };
        port.start_mcast_cm();
        port
    }

    /// The addresses rdma_cm uses for this port.
    fn addr_kind(&self) -> AddrKind {
        match self.shared.link_layer {
            LinkLayer::Ethernet => AddrKind::Ip {
                scope: self.shared.netdev.as_ref().map_or(0, |(_, index)| *index),
            },
            LinkLayer::InfiniBand => AddrKind::Ib {
                pkey: self.attr.pkey.0,
            },
        }
    }

    /// Sets up multicast joins and path resolution through rdma_cm, and
    /// the port's event set; without rdma_cm the port joins by hand (RoCE)
    /// or not at all (IB), and resolves paths as [`RdmaPort::plan`] says.
    fn start_mcast_cm(&mut self) {
        let m = match McastCm::new(self.attr.gid, self.addr_kind()) {
            Ok(m) => m,
            Err((call, errno)) => {
                self.say_cm_missing(&format!("{call}: {}", io::Error::from_raw_os_error(errno)));
                return;
            }
        };
        let set = EventSet::new().and_then(|set| {
            set.add(self.queues.event_fd())?;
            set.add(m.fd())?;
            Ok(set)
        });
        match set {
            Ok(set) => {
                let s = &self.shared;
                self.resolutions.use_cm(PathCm::new(
                    Arc::clone(m.channel()),
                    self.attr.gid,
                    self.addr_kind(),
                    s.link_layer,
                    s.port,
                    s.gid_index,
                ));
                self.events = Some(set);
                self.mcast = Some(m);
            }
            Err(e) => self.say_cm_missing(&format!("cannot watch its events: {e}")),
        }
    }

    /// Says, once per context, that the ports go without rdma_cm.
    fn say_cm_missing(&self, why: &str) {
        let s = &self.shared;
        if s.cm_missing_said
            .swap(true, core::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let paths = match s.link_layer {
            LinkLayer::Ethernet => "address handles are made from the GID alone",
            LinkLayer::InfiniBand => {
                "only the port's own GID resolves (no SA path records), and multicast \
                 groups cannot be joined"
            }
        };
        log::warn!(
            "rdma: {}: no rdma_cm ({why}); groups are joined without it and {paths} \
             (is the rdma_ucm module loaded?)",
            s.name
        );
    }

    /// Whether the port resolves unicast paths (and joins groups) through
    /// rdma_cm.
    pub fn has_cm(&self) -> bool {
        self.resolutions.has_cm()
    }

    /// The completion channel's file descriptor, non-blocking. It becomes
    /// readable after [`Verbs::arm_cq`] when a completion arrives; then call
    /// [`RdmaPort::ack_events`], poll, and arm again. With connected mode it
    /// is an epoll set of the completion channel and the rdma_cm channel
    /// (readable while a connection event waits, too); take it after
    /// [`RdmaPort::enable_rc`].
    pub fn event_fd(&self) -> RawFd {
        match &self.events {
            Some(set) => set.fd(),
            None => self.queues.event_fd(),
        }
    }

    /// Turns connected mode on (RFC 4755 over rdma_cm, see the `rc`
    /// module): registers the big-slot `region` laid out as `big`, creates
    /// the SRQ and RC CQ, and listens for connections, at most
    /// `max_conns` (capped at [`super::rc::MAX_RC_CONNS`]) at once.
    pub fn enable_rc(
        &mut self,
        region: Window,
        big: crate::rc::BigLayout,
        max_conns: usize,
    ) -> Result<(), RdmaError> {
        if self.rc.is_some() || self.closed {
            return Err(RdmaError::InvalidConfig {
                field: "connected mode",
                reason: "already on, or the port is closed",
            });
        }
        let kind = self.addr_kind();
        let rc = RdmaRc::new(RcSetup {
            queues: &mut self.queues,
            region,
            big,
            max_conns,
            gid: self.attr.gid,
            ud_qpn: self.attr.qpn,
            kind,
            name: &self.shared.name,
        })?;
        let epoll = |call: &'static str| {
            move |e: io::Error| RdmaError::Verbs {
                call,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            }
        };
        if self.events.is_none() {
            let set = EventSet::new().map_err(epoll("epoll_create1"))?;
            set.add(self.queues.event_fd())
                .map_err(epoll("epoll_ctl"))?;
            self.events = Some(set);
        }
        if let Some(set) = &self.events {
            set.add(rc.cm_fd()).map_err(epoll("epoll_ctl"))?;
        }
        self.rc = Some(rc);
        Ok(())
    }

    /// Connected mode's counters (zero without it).
    pub fn rc_stats(&self) -> RdmaRcStats {
        self.rc.as_ref().map(|rc| rc.stats).unwrap_or_default()
    }

    /// Connections held now, in any phase.
    pub fn rc_held(&self) -> usize {
        self.rc.as_ref().map_or(0, |rc| rc.held())
    }

    /// Takes and acknowledges every pending completion channel event
    /// (`ibv_get_cq_event` until `EAGAIN`, then `ibv_ack_cq_events`).
    /// Returns how many there were. The rdma_cm channels, in the same
    /// descriptor, are read at the next poll.
    pub fn ack_events(&mut self) -> io::Result<usize> {
        self.cm_gate.wake();
        if let Some(rc) = &mut self.rc {
            rc.wake_cm();
        }
        let n = self.queues.ack_events()?;
        self.stats.events += n as u64;
        Ok(n)
    }

    /// Moves the QP to the error state, so every posted send and receive
    /// comes back from `poll_cq` as `Flushed`, and leaves its multicast
    /// groups. Afterwards posts complete at once as `Flushed`, and the
    /// control verbs fail with `Disconnected`. Closing twice does nothing.
    pub fn close(&mut self) -> Result<(), RdmaError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.attr.state = PortState::Down;
        if let Some(rc) = &mut self.rc {
            rc.close_all();
        }
        let result = self.queues.set_error();
        // A failed detach is retried when the port is dropped.
        self.queues.detach_all();
        self.ip_groups.clear();
        result
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn stats(&self) -> RdmaStats {
        let paths = self.resolutions.counts;
        RdmaStats {
            cm_paths: paths.resolved,
            cm_path_errors: paths.failed,
            ..self.stats
        }
    }

    pub fn device_name(&self) -> &str {
        &self.shared.name
    }

    pub fn link_layer(&self) -> LinkLayer {
        self.shared.link_layer
    }

    /// Sets (or clears) the function called when an address resolution
    /// finishes. It runs on a resolver thread; it should only wake the
    /// thread that polls this port. (rdma_cm's answers on the way make the
    /// event fd readable instead; failures found on the polling thread
    /// show in `arm_cq`'s result.)
    pub fn set_notifier(&self, notifier: Option<ResolveNotifier>) {
        self.resolutions.set_notifier(notifier);
    }

    /// Address resolutions in progress.
    pub fn resolving(&self) -> usize {
        self.resolutions.in_progress()
    }

    /// Sends and receives posted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Address handles held, including released ones that wait for their
    /// sends.
    pub fn handles(&self) -> usize {
        self.dests.held()
    }

    /// Moves whatever the CQ holds into the internal queue.
    fn reap(&mut self) -> Result<(), HcaError> {
        self.wcs.clear();
        let mut wcs = core::mem::take(&mut self.wcs);
        let polled = self.queues.poll(&mut wcs);
        for wc in &wcs {
            self.complete(wc);
        }
        self.wcs = wcs;
        polled.map(|_| ()).map_err(|errno| {
            log::error!(
                "rdma: {}: ibv_poll_cq failed: {}",
                self.shared.name,
                io::Error::from_raw_os_error(errno)
            );
            HcaError::Disconnected
        })
    }

    /// Turns one work completion into a [`Completion`] with its token.
    fn complete(&mut self, wc: &Wc) {
        let status = wc_status(wc.status);
        if status != WcStatus::Success {
            self.stats.wc_errors += 1;
            if status != WcStatus::Flushed {
                log::debug!(
                    "rdma: {}: completion {:#x} status {} vendor error {:#x}",
                    self.shared.name,
                    wc.wr_id,
                    wc.status,
                    wc.vendor_err
                );
            }
        }
        let completion = match WrId::decode(wc.wr_id) {
            Some(WrId::Send(index)) => self.tx_done(index, status),
            Some(WrId::Recv(index)) => self.rx_done(index, status, wc),
            None => None,
        };
        match completion {
            Some(c) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.cq.push_back(c);
            }
            None => {
                self.stats.bogus_wc += 1;
                log::error!(
                    "rdma: {}: completion for unknown work request {:#x}",
                    self.shared.name,
                    wc.wr_id
                );
            }
        }
    }

    fn tx_done(&mut self, index: u16, status: WcStatus) -> Option<Completion> {
        let (slot, handle) = self.tx_flight.get_mut(usize::from(index))?.take()?;
        self.dests.send_done(handle);
        self.stats.tx_completions += 1;
        Some(Completion::Send { slot, status })
    }

    fn rx_done(&mut self, index: u16, status: WcStatus, wc: &Wc) -> Option<Completion> {
        let slot = self.rx_flight.get_mut(usize::from(index))?.take()?;
        self.stats.rx_completions += 1;
        let info = if status == WcStatus::Success {
            self.stats.rx_bytes += u64::from(wc.byte_len);
            let grh_present = wc.wc_flags & WC_GRH != 0;
            RecvInfo {
                byte_len: wc.byte_len,
                src_qpn: Qpn::new_truncated(wc.src_qp),
                src_lid: Lid(wc.slid),
                pkey: self.attr.pkey,
                grh_present,
                multicast: grh_present && self.grh_multicast(index),
            }
        } else {
            EMPTY_INFO
        };
        Some(Completion::Recv { slot, status, info })
    }

    /// Reads the GRH area of a just-completed RX slot.
    fn grh_multicast(&self, index: u16) -> bool {
        let mut grh = [0u8; GRH_LEN];
        self.layout
            .rx_offset(index)
            .is_some_and(|off| self.region.read_bytes(off, &mut grh).is_ok())
            && grh_says_multicast(&grh)
    }

    /// A send of `len` bytes from `slot`, the first `head.len()` of them
    /// from `head` if given (the caller checked its length).
    fn send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: Option<&[u8]>,
    ) -> Result<(), PostError<TxSlot>> {
        if self.closed {
            self.fail_send(slot, WcStatus::Flushed);
            return Ok(());
        }
        let index = slot.index();
        let offset = self.layout.tx_offset(index);
        let (Some(offset), Some(ah)) = (offset, self.dests.get(dest.handle)) else {
            self.stats.bad_send += 1;
            self.fail_send(slot, WcStatus::LocalProtection);
            return Ok(());
        };
        if len > self.attr.mtu.bytes() {
            self.stats.oversize += 1;
            self.fail_send(slot, WcStatus::LocalLength);
            return Ok(());
        }
        let Some(len32) = u32::try_from(len)
            .ok()
            .filter(|_| len <= self.layout.slot_size as usize)
        else {
            self.stats.bad_send += 1;
            self.fail_send(slot, WcStatus::LocalProtection);
            return Ok(());
        };
        let wr_id = WrId::Send(index).encode();
        let (qpn, qkey) = (dest.qpn.get(), dest.qkey.0);
        let posted = match head {
            None => self.queues.post_send(wr_id, offset, len32, ah, qpn, qkey),
            Some(head) => {
                let (region, arena) = (self.queues.region_reg(), self.queues.arena_reg());
                match head_send_sges(&region, offset, &arena, index, len, head.len()) {
                    Some((sges, n)) => self.queues.write_head(index, head).and_then(|()| {
                        let sges = sges.get(..n).ok_or(libc::EINVAL)?;
                        self.queues.post_send_gather(wr_id, sges, ah, qpn, qkey)
                    }),
                    None => Err(libc::EINVAL),
                }
            }
        };
        match posted {
            Ok(()) => {
                self.dests.send_started(dest.handle);
                self.stats.tx_posted += 1;
                if head.is_some() {
                    self.stats.tx_head_posted += 1;
                }
                self.in_flight += 1;
                if let Some(t) = self.tx_flight.get_mut(usize::from(index)) {
                    *t = Some((slot, dest.handle));
                }
                Ok(())
            }
            Err(errno) => {
                self.stats.post_errors += 1;
                log::warn!(
                    "rdma: {}: ibv_post_send failed: {}",
                    self.shared.name,
                    io::Error::from_raw_os_error(errno)
                );
                Err(PostError {
                    slot,
                    error: Self::post_errno(errno),
                })
            }
        }
    }

    /// Completes a send at once, unposted.
    fn fail_send(&mut self, slot: TxSlot, status: WcStatus) {
        self.cq.push_back(Completion::Send { slot, status });
    }

    fn post_errno(errno: i32) -> HcaError {
        match errno {
            libc::ENOMEM => HcaError::QueueFull,
            _ => HcaError::InvalidArgument,
        }
    }

    /// How to resolve `dgid`, after the checks that need no device (and
    /// room for one more handle, counting those in progress).
    fn plan(&self, dgid: Gid) -> Result<Plan, PathError> {
        let s = &self.shared;
        if dgid == Gid::ZERO {
            return Err(PathError::Unreachable);
        }
        if dgid.is_multicast() && mgid_pkey(dgid).partition() != self.attr.pkey.partition() {
            return Err(PathError::Unreachable);
        }
        if !self.dests.has_room_for(self.resolutions.in_progress() + 1) {
            return Err(PathError::NoResources);
        }
        if dgid.is_multicast() {
            return self.group_plan(dgid);
        }
        if self.resolutions.has_cm() {
            return Ok(Plan::Route);
        }
        match s.link_layer {
            LinkLayer::Ethernet => Ok(Plan::Spec(gid_spec(dgid, s.port, s.gid_index))),
            LinkLayer::InfiniBand if dgid == self.attr.gid && self.attr.lid.0 != 0 => {
                Ok(Plan::Spec(AhSpec {
                    port: s.port,
                    dlid: self.attr.lid.0,
                    sl: 0,
                    static_rate: 0,
                    grh: None,
                }))
            }
            LinkLayer::InfiniBand => {
                log::warn!(
                    "rdma: {}: {dgid} needs an SA path record on native InfiniBand, \
                     which needs rdma_cm",
                    s.name
                );
                Err(PathError::Unreachable)
            }
        }
    }

    /// How to resolve the group `mgid`: on RoCE its GID is enough; on
    /// InfiniBand it needs the MLID from this port's rdma_cm join.
    fn group_plan(&self, mgid: Gid) -> Result<Plan, PathError> {
        let s = &self.shared;
        match s.link_layer {
            LinkLayer::Ethernet => Ok(Plan::Spec(gid_spec(mgid, s.port, s.gid_index))),
            LinkLayer::InfiniBand => match self.mcast.as_ref().and_then(|m| m.route(mgid)) {
                Some(group) => Ok(Plan::Spec(group_spec(&group, mgid, s.port, s.gid_index))),
                None => {
                    log::info!(
                        "rdma: {}: no MLID for {mgid}: on native InfiniBand a group resolves \
                         once this port has joined it through rdma_cm",
                        s.name
                    );
                    Err(PathError::Unreachable)
                }
            },
        }
    }

    /// Turns finished resolutions into `Path` completions.
    fn collect_resolved(&mut self) {
        if self.resolutions.in_progress() == 0 {
            return;
        }
        for (dgid, ah) in self.resolutions.collect(&self.shared) {
            let result = ah.and_then(|ah| self.dests.insert(ah));
            self.cq.push_back(Completion::Path { dgid, result });
        }
    }

    /// Starts attaching to `mgid`: `None` while the rdma_cm join runs (the
    /// completion comes from [`RdmaPort::pump_joins`]), else the result.
    fn attach(&mut self, mgid: Gid) -> Option<Result<(), McastError>> {
        if !mgid.is_multicast() {
            return Some(Err(McastError::NotMulticast));
        }
        if mgid_pkey(mgid).partition() != self.attr.pkey.partition() {
            return Some(Err(McastError::PartitionMismatch));
        }
        if self.queues.is_attached(&mgid.0) {
            return Some(Ok(()));
        }
        if let Some(waiting) = self.joining.get_mut(&mgid) {
            *waiting += 1;
            return None;
        }
        if let Some(m) = &mut self.mcast {
            match m.join(mgid) {
                Ok(()) => {
                    self.joining.insert(mgid, 1);
                    return None;
                }
                Err(errno) => {
                    self.stats.cm_join_refusals += 1;
                    // 524 is the kernel's ENOTSUPP: its rdma_cm joins only
                    // IPv4 groups on RoCE v2 (`cma_iboe_join_multicast`).
                    let why = if errno == 524 {
                        "ENOTSUPP: rdma_cm does not join IPv6 groups on RoCE v2".into()
                    } else {
                        io::Error::from_raw_os_error(errno).to_string()
                    };
                    log::info!(
                        "rdma: {}: rdma_join_multicast {mgid} refused ({why}); joining it by hand",
                        self.shared.name
                    );
                }
            }
        }
        Some(self.attach_now(mgid, None))
    }

    /// Attaches the QP to `mgid`, whose LID an rdma_cm join gave (`None`:
    /// no join, which native InfiniBand cannot do without), and on RoCE
    /// joins the IPv6 group at the IP level.
    fn attach_now(&mut self, mgid: Gid, lid: Option<u16>) -> Result<(), McastError> {
        if self.shared.link_layer == LinkLayer::InfiniBand && lid.is_none() {
            log::warn!(
                "rdma: {}: joining {mgid} needs an SA MCMember join on native InfiniBand \
                 (rdma_join_multicast), which failed or is not available",
                self.shared.name
            );
            return Err(McastError::NoResources);
        }
        self.queues
            .attach_mcast(mgid.0, lid.unwrap_or(0))
            .map_err(|errno| {
                log::warn!(
                    "rdma: {}: ibv_attach_mcast {mgid} failed: {}",
                    self.shared.name,
                    io::Error::from_raw_os_error(errno)
                );
                McastError::NoResources
            })?;
        if let Some((netdev, ifindex)) = &self.shared.netdev {
            match ipmc::join(mgid, *ifindex) {
                Ok(socket) => {
                    self.ip_groups.insert(mgid, socket);
                }
                Err(e) => log::warn!(
                    "rdma: {}: joining {mgid} on {netdev} failed ({e}); group traffic may \
                     not arrive",
                    self.shared.name
                ),
            }
        }
        Ok(())
    }

    /// Takes the rdma_cm events: finishes the attaches whose joins were
    /// answered, and moves path resolutions on.
    fn pump_cm(&mut self) {
        let Some(m) = &mut self.mcast else {
            return;
        };
        let mut others = Vec::new();
        let outcomes = m.pump(&mut others);
        for event in &others {
            if !self.resolutions.cm_event(&self.shared, event) {
                log::debug!(
                    "rdma: {}: rdma_cm event {} for no path query",
                    self.shared.name,
                    event.kind
                );
            }
        }
        for outcome in outcomes {
            let mgid = outcome.mgid;
            let waiting = self.joining.remove(&mgid).unwrap_or(1);
            let result = match outcome.result {
                Ok(lid) => {
                    log::info!(
                        "rdma: {}: joined {mgid} through rdma_cm (LID {lid:#x})",
                        self.shared.name
                    );
                    self.stats.cm_joins += 1;
                    self.attach_now(mgid, Some(lid))
                }
                Err(status) => {
                    log::info!(
                        "rdma: {}: rdma_cm could not join {mgid} (status {status}); joining \
                         without it",
                        self.shared.name
                    );
                    self.stats.cm_join_refusals += 1;
                    self.attach_now(mgid, None)
                }
            };
            for _ in 0..waiting {
                self.cq.push_back(Completion::Mcast {
                    mgid,
                    attach: true,
                    result,
                });
            }
        }
    }

    fn detach(&mut self, mgid: Gid) -> Result<(), McastError> {
        if !mgid.is_multicast() {
            return Err(McastError::NotMulticast);
        }
        if !self.queues.is_attached(&mgid.0) {
            return Err(McastError::NotAttached);
        }
        let lid = self.mcast.as_ref().and_then(|m| m.mlid(mgid)).unwrap_or(0);
        if let Some(m) = &mut self.mcast {
            m.leave(mgid);
        }
        self.queues.detach_mcast(mgid.0, lid).map_err(|errno| {
            log::warn!(
                "rdma: {}: ibv_detach_mcast {mgid} failed: {}",
                self.shared.name,
                io::Error::from_raw_os_error(errno)
            );
            McastError::NoResources
        })?;
        // Dropping the socket leaves the IP group.
        self.ip_groups.remove(&mgid);
        Ok(())
    }
}

impl Verbs for RdmaPort {
    fn port_attr(&self) -> PortAttr {
        self.attr
    }

    fn layout(&self) -> SlotLayout {
        self.layout
    }

    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        self.slots.take()
    }

    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        self.send(slot, len, dest, None)
    }

    /// Copies `head` into the slot's cell of the port's header arena and
    /// posts two SGEs: the cell, then the rest of the slot (see the
    /// `gather` module).
    fn post_send_with_head(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: &[u8],
    ) -> Result<(), PostError<TxSlot>> {
        if let Err(error) = check_send_head(head, len) {
            return Err(PostError { slot, error });
        }
        if !self.queues.can_gather() {
            return Err(PostError {
                slot,
                error: HcaError::Unsupported,
            });
        }
        self.send(slot, len, dest, Some(head))
    }

    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        if self.closed {
            self.cq.push_back(Completion::Recv {
                slot,
                status: WcStatus::Flushed,
                info: EMPTY_INFO,
            });
            return Ok(());
        }
        let index = slot.index();
        let Some(offset) = self.layout.rx_offset(index) else {
            return Err(PostError {
                slot,
                error: HcaError::InvalidArgument,
            });
        };
        let wr_id = WrId::Recv(index).encode();
        match self.queues.post_recv(wr_id, offset, self.layout.slot_size) {
            Ok(()) => {
                self.stats.rx_posted += 1;
                self.in_flight += 1;
                if let Some(r) = self.rx_flight.get_mut(usize::from(index)) {
                    *r = Some(slot);
                }
                Ok(())
            }
            Err(errno) => {
                self.stats.post_errors += 1;
                log::warn!(
                    "rdma: {}: ibv_post_recv failed: {}",
                    self.shared.name,
                    io::Error::from_raw_os_error(errno)
                );
                Err(PostError {
                    slot,
                    error: Self::post_errno(errno),
                })
            }
        }
    }

    /// Nothing to do: each post has already rung the doorbell.
    fn flush(&mut self) -> Result<(), HcaError> {
        Ok(())
    }

    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        if self.cm_gate.due() {
            self.pump_cm();
        }
        self.collect_resolved();
        if let Some(c) = self.cq.pop_front() {
            return Ok(Some(c));
        }
        if self.in_flight > 0 {
            self.reap()?;
        }
        Ok(self.cq.pop_front())
    }

    /// `ibv_req_notify_cq(cq, 0)`, then one more poll of the CQ (the final
    /// check). Completions queued by `resolve`, the multicast verbs or
    /// unposted sends count as waiting too.
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        self.pump_cm();
        self.collect_resolved();
        if !self.cq.is_empty() {
            return Ok(true);
        }
        if self.closed && self.in_flight == 0 {
            // Nothing will ever arrive.
            return Err(HcaError::Disconnected);
        }
        self.queues.req_notify().map_err(|errno| {
            log::error!(
                "rdma: {}: ibv_req_notify_cq failed: {}",
                self.shared.name,
                io::Error::from_raw_os_error(errno)
            );
            HcaError::Disconnected
        })?;
        self.reap()?;
        let rc_waiting = match &mut self.rc {
            Some(rc) => rc.arm()?,
            None => false,
        };
        // A resolution that finished after the collection above has called
        // (or will call) the notifier; saying so here saves a wake-up.
        Ok(!self.cq.is_empty() || rc_waiting || self.resolutions.has_finished())
    }

    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        if self.closed {
            return Err(HcaError::Disconnected);
        }
        if let Some(result) = self.attach(mgid) {
            self.cq.push_back(Completion::Mcast {
                mgid,
                attach: true,
                result,
            });
        }
        Ok(())
    }

    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        if self.closed {
            return Err(HcaError::Disconnected);
        }
        let result = self.detach(mgid);
        self.cq.push_back(Completion::Mcast {
            mgid,
            attach: false,
            result,
        });
        Ok(())
    }

    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        if self.closed {
            return Err(HcaError::Disconnected);
        }
        match self.plan(dgid) {
            Ok(plan) => self.resolutions.start(&self.shared, dgid, plan),
            Err(e) => self.cq.push_back(Completion::Path {
                dgid,
                result: Err(e),
            }),
        }
        Ok(())
    }

    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        if self.closed {
            return Err(HcaError::Disconnected);
        }
        if self.dests.release(handle) {
            Ok(())
        } else {
            Err(HcaError::InvalidArgument)
        }
    }

    fn rc(&mut self) -> Option<&mut dyn crate::rc::RcVerbs> {
        if self.rc.is_some() {
            Some(self)
        } else {
            None
        }
    }
}

impl crate::rc::RcVerbs for RdmaPort {
    fn rc_caps(&self) -> Option<crate::rc::RcCaps> {
        self.rc.as_ref().map(|rc| rc.caps())
    }

    fn take_big_slots(&mut self) -> Option<(crate::rc::BigTxSlots, crate::rc::BigRxSlots)> {
        self.rc.as_mut()?.take_big_slots()
    }

    fn rc_connect(
        &mut self,
        dgid: Gid,
        ud_qpn: Qpn,
        recv_mtu: u32,
    ) -> Result<crate::rc::ConnHandle, crate::rc::RcError> {
        self.rc_live()?.connect(dgid, ud_qpn, recv_mtu)
    }

    fn rc_accept(
        &mut self,
        conn: crate::rc::ConnHandle,
        recv_mtu: u32,
    ) -> Result<(), crate::rc::RcError> {
        self.rc_live()?.accept(conn, recv_mtu)
    }

    fn rc_reject(&mut self, conn: crate::rc::ConnHandle) -> Result<(), crate::rc::RcError> {
        self.rc_live()?.reject(conn)
    }

    fn rc_disconnect(&mut self, conn: crate::rc::ConnHandle) -> Result<(), crate::rc::RcError> {
        self.rc_live()?.disconnect(conn)
    }

    fn rc_post_send(
        &mut self,
        conn: crate::rc::ConnHandle,
        slot: crate::rc::BigTxSlot,
        len: usize,
    ) -> Result<(), crate::rc::RcPostError<crate::rc::BigTxSlot>> {
        match self.rc_live() {
            Ok(rc) => rc.post_send(conn, slot, len),
            Err(error) => Err(crate::rc::RcPostError { slot, error }),
        }
    }

    fn rc_post_recv(
        &mut self,
        slot: crate::rc::BigRxSlot,
    ) -> Result<(), crate::rc::RcPostError<crate::rc::BigRxSlot>> {
        match self.rc_live() {
            Ok(rc) => rc.post_recv(slot),
            Err(error) => Err(crate::rc::RcPostError { slot, error }),
        }
    }

    fn poll_rc(&mut self) -> Result<Option<crate::rc::RcCompletion>, HcaError> {
        match &mut self.rc {
            Some(rc) => rc.poll(),
            None => Ok(None),
        }
    }

    fn big_area(&mut self) -> crate::rc::BigArea<'_> {
        match &self.rc {
            Some(rc) => rc.big_area(),
            None => crate::rc::BigArea::new(&self.region, crate::rc::BigLayout::NONE),
        }
    }
}

impl RdmaPort {
    /// Connected mode, if on and the port is open.
    fn rc_live(&mut self) -> Result<&mut RdmaRc, crate::rc::RcError> {
        if self.closed {
            return Err(crate::rc::RcError::Disconnected);
        }
        self.rc.as_mut().ok_or(crate::rc::RcError::NotSupported)
    }
}

impl Hca for RdmaPort {
    fn buffers(&mut self) -> SlotBuffers<'_> {
        // `open_port` checked the region holds the layout, so `new` succeeds.
        SlotBuffers::new(&self.region, self.layout)
            .unwrap_or_else(|| SlotBuffers::empty(&self.region))
    }
}

impl AsRawFd for RdmaPort {
    fn as_raw_fd(&self) -> RawFd {
        self.event_fd()
    }
}

// The back end moves ports and contexts between threads.
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<RdmaPort>();
    send_sync::<super::RdmaContext>();
};

impl core::fmt::Debug for RdmaPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RdmaPort")
            .field("device", &self.shared.name)
            .field("attr", &self.attr)
            .field("layout", &self.layout)
            .field("in_flight", &self.in_flight)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}
