//! Connected mode (RFC 4755; `docs/connected-mode.md` §1, §7, §8): an RC
//! connection per neighbour for IP packets larger than the datagram MTU.
//!
//! What goes where:
//! - packets that fit the datagram MTU go over UD, to every neighbour, as
//!   before (RFC 4755 lets any packet use datagram mode; ARP, ND, DHCP and
//!   multicast always do);
//! - larger ones (up to the connected MTU, the device's MTU in connected
//!   mode) go over RC to a neighbour whose hardware address carries the
//!   connected-mode flag; the first one opens the connection (we are the
//!   active side and send only on connections we opened, as Linux), and
//!   packets wait for it in a bounded queue; the first small unicast IP
//!   packet to such a neighbour goes over UD and opens the connection too
//!   (`CmSide::prime`), so a receiver's ACKs follow over RC, as Linux's
//!   IPoIB-CM opens one on the first unicast packet;
//! - larger ones to a neighbour without the flag (or not resolved yet, or a
//!   group) are cut into IPv4 or IPv6 fragments over UD (the `frag_tx`
//!   module, as any packet above the datagram MTU); TCP rarely needs it
//!   (the MSS clamp and the peer's MSS keep its segments within the MTU);
//!
//! Requests from peers are accepted up to a limit; what arrives on any
//! connection is copied out of its big slot (the trust model's one copy)
//! and handed to smoltcp. A broken or refused connection is remembered for
//! a while (1 s after a break, 60 s after a refusal) before it is tried
//! again; meanwhile big packets to that neighbour are dropped. A connection
//! we opened is closed after [`IDLE_TIMEOUT`] without a packet sent on it.
//!
//! A big packet is written by smoltcp straight into a free big TX slot
//! (`BigArea::tx_slot_mut`) and posted from there; only when every big
//! slot is out does it go into a scratch buffer, copied into a big slot
//! at flush.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use verbs_shim::rc::{
    BigArea, BigLayout, BigTxSlot, ConnHandle, RcCompletion, RcEvent, RcStatus, RcVerbs,
};
use verbs_shim::{Gid, Hca, Qpn};

use super::{DatagramSource, IpoibDevice};
use crate::capture::Capture;
use crate::stats::CmStats;
use crate::wire::{encap, EncapPacket, EtherType, HwAddr};

/// Big packets waiting to be posted or for their connection.
const MAX_QUEUED: usize = 64;
/// Received packets waiting for smoltcp.
const MAX_RX: usize = 64;
/// Neighbours with a connection (or a remembered failure) at once.
const MAX_PEERS: usize = 64;
/// Connections accepted from peers at once.
const MAX_PASSIVE: usize = 64;
/// RC completions handled per service pass.
const RC_BUDGET: usize = 256;
/// How long a neighbour is left alone after its connection broke, or after
/// it refused one.
const RETRY_AFTER_BREAK: Duration = Duration::from_secs(1);
const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(60);
/// A connection we opened is closed after this long without a packet sent
/// on it (the peer's passive end then breaks and is let go too).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a frame waiting to be posted is.
pub(crate) enum Payload {
    /// A whole scratch buffer (`HEADER_LEN + mtu` bytes); the frame is its
    /// first `len` bytes, copied into a big slot when posted.
    Buffer(Vec<u8>),
    /// Written in place in this big TX slot (zero copy).
    Slot(BigTxSlot),
}

/// A big frame (IPoIB header and IP packet) on its way to `peer`.
pub(crate) struct Outgoing {
    payload: Payload,
    len: usize,
    peer: HwAddr,
}

/// Scratch buffers kept for reuse once their frame is in a big slot: a
/// big frame is handed over by swapping buffers, not copied into a fresh
/// allocation.
const SPARE_BUFFERS: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PeerState {
    Connecting(ConnHandle),
    Up {
        conn: ConnHandle,
        send_mtu: usize,
        last_used: Instant,
    },
    Failed {
        until: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    gid: Gid,
    qpn: Qpn,
    state: PeerState,
}

/// Received packets' buffers, kept for the next ones once smoltcp has read
/// them. A fresh 64 KiB buffer per packet cost page faults and zeroing:
/// 16 % of a hosted 4 GiB transfer's samples (`perf record -a`).
#[derive(Default)]
pub(crate) struct RxPool {
    spare: Vec<Vec<u8>>,
}

impl RxPool {
    /// A buffer of `len` bytes, its contents whatever they were (the
    /// caller overwrites all of them).
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buffer = self.spare.pop().unwrap_or_default();
        // Zeroes only what the buffer never held before.
        buffer.resize(len, 0);
        buffer
    }

    /// Keeps `buffer` for a later packet (up to [`MAX_RX`] of them).
    pub(crate) fn give_back(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < MAX_RX {
            self.spare.push(buffer);
        }
    }
}

/// The device's connected-mode state.
pub(crate) struct CmSide {
    /// The IP MTU in connected mode.
    pub mtu: usize,
    big_tx: Vec<BigTxSlot>,
    /// How many big TX slots there are (free, queued or in flight).
    big_total: usize,
    peers: Vec<Peer>,
    /// Connections peers opened to us: who they are.
    passive: Vec<(ConnHandle, Gid, Qpn)>,
    /// Filled by TX tokens, emptied at flush.
    outbox: VecDeque<Outgoing>,
    /// Frames for connections being set up.
    waiting: VecDeque<Outgoing>,
    /// Received IP packets for smoltcp.
    pub rx: VecDeque<(Vec<u8>, DatagramSource)>,
    /// Where a TX token lets smoltcp write a big packet.
    scratch: Vec<u8>,
    /// Scratch-sized buffers whose frames went out (at most
    /// [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
    /// The big-slot region and its shape, for writing frames in place.
    region: ring::Window,
    layout: BigLayout,
    /// Neighbours a small packet went to over UD with no connection yet:
    /// one is opened for them at the next flush, as Linux's IPoIB-CM opens
    /// one on the first unicast packet to a neighbour that offers it.
    prime: Vec<HwAddr>,
    pub stats: CmStats,
}

impl CmSide {
    /// Connected mode over `rc`, if it offers it: takes the big slots and
    /// posts every big receive. `mtu` is the IP MTU asked for; the big slots
    /// may make it smaller.
    pub(crate) fn start(rc: &mut dyn RcVerbs, mtu: u32) -> Option<CmSide> {
        let caps = rc.rc_caps()?;
        let (region, layout) = {
            let area = rc.big_area();
            (area.region().clone(), area.layout())
        };
        let (tx, rx) = rc.take_big_slots()?;
        let slot_mtu = caps.big.slot_size.saturating_sub(encap::HEADER_LEN as u32);
        let mtu = mtu.min(slot_mtu) as usize;
        for slot in rx {
            if let Err(e) = rc.rc_post_recv(slot) {
                log::warn!(
                    "ipoib: connected mode: posting a big receive failed: {}",
                    e.error
                );
            }
        }
        let big_tx: Vec<BigTxSlot> = tx.collect();
        let big_total = big_tx.len();
        Some(CmSide {
            mtu,
            big_tx,
            big_total,
            peers: Vec::new(),
            passive: Vec::new(),
            outbox: VecDeque::new(),
            waiting: VecDeque::new(),
            rx: VecDeque::new(),
            scratch: vec![0; encap::HEADER_LEN + mtu],
            spare: Vec::new(),
            region,
            layout,
            prime: Vec::new(),
            stats: CmStats {
                enabled: true,
                ..CmStats::default()
            },
        })
    }

    /// The scratch buffer for a big packet of `len` bytes (after the
    /// IPoIB header), or `None` if it is larger than the connected MTU.
    pub(crate) fn scratch(&mut self, len: usize) -> Option<&mut [u8]> {
        (len <= self.mtu).then(|| self.scratch.get_mut(..encap::HEADER_LEN + len))?
    }

    /// The scratch buffer's packet (after the IPoIB header), `len` bytes.
    pub(crate) fn packet(&self, len: usize) -> &[u8] {
        self.scratch
            .get(encap::HEADER_LEN..encap::HEADER_LEN + len)
            .unwrap_or(&[])
    }

    /// A TX token filled the scratch with a `len`-byte packet for `peer`,
    /// a neighbour that does connected mode.
    pub(crate) fn queue(&mut self, len: usize, ethertype: EtherType, peer: HwAddr) {
        let Some(frame) = self.scratch.get_mut(..encap::HEADER_LEN + len) else {
            self.stats.tx_too_big += 1;
            return;
        };
        let mut header = EncapPacket::new_unchecked(&mut *frame);
        let _ = crate::wire::EncapRepr { ethertype }.emit(&mut header);
        if self.outbox.len() >= MAX_QUEUED {
            self.stats.tx_no_connection += 1;
            return;
        }
        // The frame leaves in the scratch buffer itself; a spare one (or a
        // new one) becomes the scratch.
        let size = self.scratch.len();
        let next = self.spare.pop().unwrap_or_else(|| vec![0; size]);
        let buffer = core::mem::replace(&mut self.scratch, next);
        self.outbox.push_back(Outgoing {
            payload: Payload::Buffer(buffer),
            len: encap::HEADER_LEN + len,
            peer,
        });
    }

    /// A free big TX slot to write a frame of `frame_len` bytes in place,
    /// if there is one, the frame fits, and no frame in a scratch buffer is
    /// queued (in the outbox, or waiting for its connection).
    ///
    /// The last condition keeps the queues deadlock-free: a buffered frame
    /// is posted only once a big slot is free, in order, so a frame that
    /// holds a slot must never queue behind it. Before, a small packet
    /// copied into a buffer (`queue_copy`) followed by big ones written in
    /// place left every slot held behind a frame waiting for one: nothing
    /// was posted again and TCP stalled until it gave up (hosted 32 MiB
    /// transfers over RC with busy polling off, about 1 run in 8).
    pub(crate) fn take_big_tx(&mut self, frame_len: usize) -> Option<BigTxSlot> {
        if frame_len > self.layout.slot_size as usize || self.any_buffered() {
            return None;
        }
        self.big_tx.pop()
    }

    /// How many more packets the stack may hand over in this pass without
    /// a drop or an avoidable copy (see `crate::drive`): none while every
    /// big slot is out and some are on the wire (their completions bring
    /// them back), else what the outbox has room for.
    pub(crate) fn room(&self) -> usize {
        if self.big_tx.is_empty() && self.in_flight() > 0 {
            return 0;
        }
        MAX_QUEUED.saturating_sub(self.outbox.len())
    }

    /// [`room`](Self::room) when nothing is queued or in flight.
    pub(crate) fn room_max(&self) -> usize {
        MAX_QUEUED.min(self.big_total)
    }

    /// Big TX slots posted and not completed yet.
    fn in_flight(&self) -> usize {
        let held = |q: &VecDeque<Outgoing>| {
            q.iter()
                .filter(|o| matches!(o.payload, Payload::Slot(_)))
                .count()
        };
        self.big_total
            .saturating_sub(self.big_tx.len() + held(&self.outbox) + held(&self.waiting))
    }

    /// Whether a frame in a scratch buffer is queued (a few dozen entries
    /// at most to look at, against a 64 KiB frame's copy).
    fn any_buffered(&self) -> bool {
        self.outbox
            .iter()
            .chain(self.waiting.iter())
            .any(|o| matches!(o.payload, Payload::Buffer(_)))
    }

    /// Gives an unused big TX slot back.
    pub(crate) fn give_back(&mut self, slot: BigTxSlot) {
        self.big_tx.push(slot);
    }

    /// The first `frame_len` bytes of big TX slot `slot`, to write a frame
    /// in place (`None` if the region does not hold it).
    pub(crate) fn frame_in<'s>(
        &'s self,
        slot: &'s mut BigTxSlot,
        frame_len: usize,
    ) -> Option<&'s mut [u8]> {
        BigArea::new(&self.region, self.layout)
            .tx_slot_mut(slot)?
            .get_mut(..frame_len)
    }

    /// Queues a frame written in place in `slot` (IPoIB header included)
    /// for `peer`'s connection.
    pub(crate) fn queue_slot(&mut self, slot: BigTxSlot, frame_len: usize, peer: HwAddr) {
        if self.outbox.len() >= MAX_QUEUED {
            self.stats.tx_no_connection += 1;
            self.big_tx.push(slot);
            return;
        }
        self.outbox.push_back(Outgoing {
            payload: Payload::Slot(slot),
            len: frame_len,
            peer,
        });
    }

    /// Whether IP packets for `hw` go over its connection (up, or being
    /// set up with packets waiting for it). Then every IP packet for it
    /// must, small ones too: a small one sent over UD meanwhile can
    /// overtake the big ones before it, and TCP sees its segments (a FIN
    /// last) out of order.
    pub(crate) fn carries(&mut self, hw: &HwAddr) -> bool {
        matches!(
            self.peer_mut(hw).map(|p| p.state),
            Some(PeerState::Up { .. } | PeerState::Connecting(_))
        )
    }

    /// A small IP packet went to `hw` (a neighbour that offers connected
    /// mode) over UD because there is no connection to it yet: opens one at
    /// the next flush, so the packets after it (TCP's ACKs too) go over RC,
    /// reliably, as Linux does. Before this only a packet above the
    /// datagram MTU opened a connection, so a receiver's ACKs stayed on UD,
    /// where a sender busy sending could drop some (no receive posted in
    /// time) and then sit out its retransmission timeout.
    pub(crate) fn prime(&mut self, hw: HwAddr) {
        let known = self
            .peers
            .iter()
            .any(|p| p.gid == hw.gid && p.qpn == hw.qpn);
        let queued = self
            .prime
            .iter()
            .any(|p| p.gid == hw.gid && p.qpn == hw.qpn);
        if !known && !queued && self.prime.len() < MAX_PEERS {
            self.prime.push(hw);
        }
    }

    /// Queues a small IP packet, built elsewhere, for `peer`'s connection:
    /// copied into a free big slot, or into the scratch buffer when none
    /// is free. False if it does not fit.
    pub(crate) fn queue_copy(&mut self, packet: &[u8], ethertype: EtherType, peer: HwAddr) -> bool {
        let len = packet.len();
        let frame_len = encap::HEADER_LEN + len;
        if len <= self.mtu {
            if let Some(mut slot) = self.take_big_tx(frame_len) {
                let written = self.frame_in(&mut slot, frame_len).is_some_and(|frame| {
                    let (head, body) = frame.split_at_mut(encap::HEADER_LEN);
                    body.copy_from_slice(packet);
                    let mut header = EncapPacket::new_unchecked(head);
                    crate::wire::EncapRepr { ethertype }
                        .emit(&mut header)
                        .is_ok()
                });
                if written {
                    self.queue_slot(slot, frame_len, peer);
                    return true;
                }
                self.give_back(slot);
            }
        }
        let Some(buffer) = self.scratch(len) else {
            return false;
        };
        let Some(body) = buffer.get_mut(encap::HEADER_LEN..) else {
            return false;
        };
        body.copy_from_slice(packet);
        self.queue(len, ethertype, peer);
        true
    }

    /// Takes back what carried a frame that went out or was dropped: a
    /// scratch buffer for reuse, a big slot for the pool.
    fn recycle(&mut self, out: Outgoing) {
        match out.payload {
            Payload::Buffer(buffer) => {
                if self.spare.len() < SPARE_BUFFERS && buffer.len() == self.scratch.len() {
                    self.spare.push(buffer);
                }
            }
            Payload::Slot(slot) => self.big_tx.push(slot),
        }
    }

    fn peer_mut(&mut self, hw: &HwAddr) -> Option<&mut Peer> {
        self.peers
            .iter_mut()
            .find(|p| p.gid == hw.gid && p.qpn == hw.qpn)
    }

    fn peer_of(&mut self, conn: ConnHandle) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| match p.state {
            PeerState::Connecting(c) | PeerState::Up { conn: c, .. } => c == conn,
            PeerState::Failed { .. } => false,
        })
    }

    /// Remembers a failure for `conn`'s neighbour; drops what waited for it.
    fn failed(&mut self, conn: ConnHandle, until: Instant) -> bool {
        let Some(peer) = self.peer_of(conn) else {
            return false;
        };
        peer.state = PeerState::Failed { until };
        let (gid, qpn) = (peer.gid, peer.qpn);
        let (lost, kept): (VecDeque<_>, VecDeque<_>) = self
            .waiting
            .drain(..)
            .partition(|o| o.peer.gid == gid && o.peer.qpn == qpn);
        self.waiting = kept;
        self.stats.tx_no_connection += lost.len() as u64;
        for out in lost {
            self.recycle(out);
        }
        true
    }

    /// Whoever is at the other end of `conn`, as a datagram source.
    fn source_of(&self, conn: ConnHandle, qpn: Qpn) -> DatagramSource {
        let passive = self
            .passive
            .iter()
            .find(|(c, ..)| *c == conn)
            .map(|&(_, gid, _)| gid);
        let active = self.peers.iter().find_map(|p| match p.state {
            PeerState::Up { conn: c, .. } if c == conn => Some(p.gid),
            _ => None,
        });
        DatagramSource {
            qpn,
            gid: passive.or(active),
        }
    }
}

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    /// Takes RC completions: sends done, packets received, connection
    /// events.
    pub(super) fn service_cm(&mut self) -> Result<bool, verbs_shim::HcaError> {
        let Some(cm) = self.cm.as_mut() else {
            return Ok(false);
        };
        let now = self.tx.now;
        let pool = &mut self.rx.cm_pool;
        let mut progress = false;
        for _ in 0..RC_BUDGET {
            let Some(rc) = self.hca.rc() else {
                break;
            };
            let Some(completion) = rc.poll_rc()? else {
                break;
            };
            progress = true;
            match completion {
                RcCompletion::Send { slot, status, .. } => {
                    if status != RcStatus::Success && status != RcStatus::Flushed {
                        cm.stats.tx_errors += 1;
                    }
                    cm.big_tx.push(slot);
                }
                RcCompletion::Recv { slot, status, info } => {
                    if status != RcStatus::Success {
                        // Flushed: the channel is going; not reposted.
                        continue;
                    }
                    // The IPoIB header and the IP packet are read apart,
                    // so the packet needs no shift to lose its header.
                    let len = info.byte_len as usize;
                    let mut head = [0u8; encap::HEADER_LEN];
                    let mut packet = pool.take(len.saturating_sub(encap::HEADER_LEN));
                    let copied = len >= encap::HEADER_LEN
                        && rc.big_area().read(&slot, 0, &mut head)
                        && rc.big_area().read(&slot, encap::HEADER_LEN, &mut packet);
                    if let Err(e) = rc.rc_post_recv(slot) {
                        log::warn!("ipoib: reposting a big receive failed: {}", e.error);
                    }
                    let source = cm.source_of(info.conn, info.src_qpn);
                    if let Some(dropped) = cm.receive(copied.then_some((head, packet)), source) {
                        pool.give_back(dropped);
                    }
                }
                RcCompletion::Event(event) => cm.on_event(event, rc, now),
            }
        }
        if let Some(rc) = self.hca.rc() {
            cm.expire(rc, now);
        }
        Ok(progress)
    }

    /// Posts the big frames the TX tokens queued: over an established
    /// connection, or after opening one.
    pub(super) fn flush_cm(&mut self) {
        let Some(cm) = self.cm.as_mut() else {
            return;
        };
        let now = self.tx.now;
        let Some(rc) = self.hca.rc() else {
            return;
        };
        for hw in core::mem::take(&mut cm.prime) {
            if cm.peer_mut(&hw).is_none() {
                cm.open(rc, hw, now);
            }
        }
        for _ in 0..cm.outbox.len() {
            let Some(out) = cm.outbox.pop_front() else {
                break;
            };
            let state = cm.peer_mut(&out.peer).map(|p| p.state);
            match state {
                Some(PeerState::Up { conn, send_mtu, .. }) => {
                    if out.len > send_mtu {
                        cm.stats.tx_too_big += 1;
                        cm.recycle(out);
                        continue;
                    }
                    let Outgoing { payload, len, peer } = out;
                    let slot = match payload {
                        Payload::Slot(slot) => {
                            cm.stats.tx_in_place += 1;
                            slot
                        }
                        Payload::Buffer(buffer) => {
                            let Some(slot) = cm.big_tx.pop() else {
                                // Every big slot is in flight: try at the
                                // next flush.
                                cm.outbox.push_front(Outgoing {
                                    payload: Payload::Buffer(buffer),
                                    len,
                                    peer,
                                });
                                break;
                            };
                            let frame = buffer.get(..len).unwrap_or(&[]);
                            let written = rc.big_area().write(&slot, 0, frame);
                            cm.recycle(Outgoing {
                                payload: Payload::Buffer(buffer),
                                len,
                                peer,
                            });
                            if !written {
                                cm.stats.tx_errors += 1;
                                cm.big_tx.push(slot);
                                continue;
                            }
                            slot
                        }
                    };
                    match rc.rc_post_send(conn, slot, len) {
                        Ok(()) => {
                            cm.stats.tx_packets += 1;
                            cm.stats.tx_bytes += len as u64;
                            cm.used(&peer, now);
                        }
                        Err(e) => {
                            cm.stats.tx_errors += 1;
                            cm.big_tx.push(e.slot);
                        }
                    }
                }
                Some(PeerState::Connecting(_)) => cm.wait(out),
                Some(PeerState::Failed { until }) if now < until => {
                    cm.stats.tx_no_connection += 1;
                    cm.recycle(out);
                }
                _ => cm.connect(rc, out, now),
            }
        }
    }
}

impl CmSide {
    /// A packet went out on `peer`'s connection at `now`.
    fn used(&mut self, peer: &HwAddr, now: Instant) {
        if let Some(PeerState::Up { last_used, .. }) = self.peer_mut(peer).map(|p| &mut p.state) {
            *last_used = now;
        }
    }

    /// When the next idle connection is due to be closed.
    pub(crate) fn next_idle(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| match p.state {
                PeerState::Up { last_used, .. } => Some(last_used + IDLE_TIMEOUT),
                _ => None,
            })
            .min()
    }

    /// Closes the connections we opened that sat idle for
    /// [`IDLE_TIMEOUT`], and forgets failures that are over.
    pub(crate) fn expire(&mut self, rc: &mut dyn RcVerbs, now: Instant) {
        let stats = &mut self.stats;
        self.peers.retain(|p| match p.state {
            PeerState::Up {
                conn, last_used, ..
            } if now >= last_used + IDLE_TIMEOUT => {
                if rc.rc_disconnect(conn).is_ok() {
                    stats.idle_closed += 1;
                }
                false
            }
            PeerState::Failed { until } => now < until,
            _ => true,
        });
    }

    /// A received frame, as its IPoIB header and its packet. A packet that
    /// is dropped comes back (its buffer is for the pool).
    fn receive(
        &mut self,
        frame: Option<([u8; encap::HEADER_LEN], Vec<u8>)>,
        source: DatagramSource,
    ) -> Option<Vec<u8>> {
        let Some((head, packet)) = frame else {
            self.stats.rx_dropped += 1;
            return None;
        };
        let ip = EncapPacket::new_checked(&head[..])
            .map(|p| matches!(p.ethertype(), EtherType::Ipv4 | EtherType::Ipv6))
            .unwrap_or(false);
        if !ip || self.rx.len() >= MAX_RX {
            self.stats.rx_dropped += 1;
            return Some(packet);
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += (encap::HEADER_LEN + packet.len()) as u64;
        self.rx.push_back((packet, source));
        None
    }

    fn wait(&mut self, out: Outgoing) {
        if self.waiting.len() >= MAX_QUEUED {
            if let Some(dropped) = self.waiting.pop_front() {
                self.recycle(dropped);
            }
            self.stats.tx_no_connection += 1;
        }
        self.waiting.push_back(out);
    }

    fn connect(&mut self, rc: &mut dyn RcVerbs, out: Outgoing, now: Instant) {
        if self.open(rc, out.peer, now) {
            self.wait(out);
        } else {
            self.recycle(out);
        }
    }

    /// Opens a connection to `hw` (replacing any state it had); true if
    /// it is being set up.
    fn open(&mut self, rc: &mut dyn RcVerbs, hw: HwAddr, now: Instant) -> bool {
        let recv_mtu = (self.mtu + encap::HEADER_LEN) as u32;
        let state = match rc.rc_connect(hw.gid, hw.qpn, recv_mtu) {
            Ok(conn) => {
                self.stats.connects += 1;
                PeerState::Connecting(conn)
            }
            Err(e) => {
                log::debug!("ipoib: connecting to {} failed: {e}", hw.gid);
                self.stats.tx_no_connection += 1;
                PeerState::Failed {
                    until: now + RETRY_AFTER_REFUSAL,
                }
            }
        };
        match self.peer_mut(&hw) {
            Some(p) => p.state = state,
            None => {
                if self.peers.len() >= MAX_PEERS {
                    // Forget a failed neighbour to make room, or give up.
                    match self
                        .peers
                        .iter()
                        .position(|p| matches!(p.state, PeerState::Failed { .. }))
                    {
                        Some(i) => {
                            self.peers.swap_remove(i);
                        }
                        None => {
                            if let PeerState::Connecting(conn) = state {
                                let _ = rc.rc_disconnect(conn);
                            }
                            self.stats.tx_no_connection += 1;
                            return false;
                        }
                    }
                }
                self.peers.push(Peer {
                    gid: hw.gid,
                    qpn: hw.qpn,
                    state,
                });
            }
        }
        matches!(state, PeerState::Connecting(_))
    }

    fn on_event(&mut self, event: RcEvent, rc: &mut dyn RcVerbs, now: Instant) {
        match event {
            RcEvent::Request { conn, peer } => {
                let mtu = (self.mtu + encap::HEADER_LEN) as u32;
                if self.passive.len() < MAX_PASSIVE && rc.rc_accept(conn, mtu).is_ok() {
                    self.passive.push((conn, peer.gid, peer.ud_qpn));
                    self.stats.accepted += 1;
                } else {
                    let _ = rc.rc_reject(conn);
                    self.stats.refused += 1;
                }
            }
            RcEvent::Established { conn, send_mtu } => {
                self.stats.established += 1;
                if let Some(peer) = self.peer_of(conn) {
                    peer.state = PeerState::Up {
                        conn,
                        send_mtu: send_mtu as usize,
                        last_used: now,
                    };
                    let (gid, qpn) = (peer.gid, peer.qpn);
                    // What waited for it goes first.
                    let (ready, rest): (VecDeque<_>, VecDeque<_>) = self
                        .waiting
                        .drain(..)
                        .partition(|o| o.peer.gid == gid && o.peer.qpn == qpn);
                    self.waiting = rest;
                    for out in ready.into_iter().rev() {
                        self.outbox.push_front(out);
                    }
                }
            }
            RcEvent::Rejected { conn, .. } => {
                self.stats.rejected += 1;
                self.failed(conn, now + RETRY_AFTER_REFUSAL);
            }
            RcEvent::Broken { conn, .. } => {
                self.stats.broken += 1;
                self.failed(conn, now + RETRY_AFTER_BREAK);
                self.passive.retain(|(c, ..)| *c != conn);
                // Let the provider (the back end) forget it too.
                let _ = rc.rc_disconnect(conn);
            }
            RcEvent::Closed { conn } => {
                self.passive.retain(|(c, ..)| *c != conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verbs_shim::sim::{FaultConfig, PortConfig, RcSetup, SimFabric, SimPort};
    use verbs_shim::PKey;

    /// Connected mode over a sim port with `big` big slots each way.
    fn cm_side(big: u16) -> (SimPort, CmSide) {
        let fabric = SimFabric::new(FaultConfig::NONE);
        let mut port = fabric
            .add_port(PortConfig::local(1, PKey::DEFAULT))
            .expect("port");
        port.enable_rc(RcSetup::local(big, big, 4)).expect("rc");
        let cm = CmSide::start(&mut port, 65520).expect("connected mode");
        (port, cm)
    }

    fn peer() -> HwAddr {
        HwAddr::new(Qpn::new_truncated(0x99), Gid::from_parts(0xfe80 << 48, 2))
    }

    fn kinds(cm: &CmSide) -> alloc::string::String {
        cm.outbox
            .iter()
            .map(|o| match o.payload {
                Payload::Slot(_) => 'S',
                Payload::Buffer(_) => 'B',
            })
            .collect()
    }

    /// The deadlock hosted transfers hit: a small packet copied into a
    /// scratch buffer while every big slot was out, then big packets
    /// written in place in the slots as they came back, queued behind it.
    /// The buffered frame waits for a free slot, in order, and none ever
    /// came back. Now no frame takes a slot while one in a buffer waits.
    #[test]
    fn no_frame_takes_a_slot_while_a_buffered_one_waits_for_one() {
        let (_port, mut cm) = cm_side(4);
        let frame_len = encap::HEADER_LEN + 60_000;
        let mut taken: Vec<BigTxSlot> = (0..4).filter_map(|_| cm.take_big_tx(frame_len)).collect();
        assert_eq!(taken.len(), 4);
        assert!(cm.take_big_tx(frame_len).is_none(), "all four out");
        // A small packet with no slot free: into a scratch buffer.
        assert!(cm.queue_copy(&[0x45; 52], EtherType::Ipv4, peer()));
        assert_eq!(kinds(&cm), "B");
        // The slots come back; none may be written in place while the
        // buffered frame waits.
        for slot in taken.drain(..) {
            cm.give_back(slot);
        }
        assert!(cm.take_big_tx(frame_len).is_none());
        assert!(cm.queue_copy(&[0x45; 52], EtherType::Ipv4, peer()));
        assert_eq!(kinds(&cm), "BB", "copied behind it, not in place");
        // Once the buffers are gone (posted at flush), slots are for taking.
        while let Some(out) = cm.outbox.pop_front() {
            cm.recycle(out);
        }
        assert!(cm.take_big_tx(frame_len).is_some());
    }

    #[test]
    fn a_small_packet_goes_in_a_free_big_slot() {
        let (_port, mut cm) = cm_side(4);
        let packet = [0x45u8; 100];
        assert!(cm.queue_copy(&packet, EtherType::Ipv4, peer()));
        assert_eq!(kinds(&cm), "S");
        let Some(Outgoing {
            payload: Payload::Slot(mut slot),
            len,
            ..
        }) = cm.outbox.pop_front()
        else {
            panic!("in a slot");
        };
        assert_eq!(len, encap::HEADER_LEN + packet.len());
        let frame = cm.frame_in(&mut slot, len).expect("in the region");
        assert_eq!(&frame[encap::HEADER_LEN..], &packet[..]);
        let header = EncapPacket::new_checked(&frame[..encap::HEADER_LEN]).expect("header");
        assert_eq!(header.ethertype(), EtherType::Ipv4);
    }

    /// The room the stack gets: none while every slot is out and some are
    /// on the wire; the outbox's free entries otherwise.
    #[test]
    fn room_follows_the_slots_and_the_outbox() {
        let (_port, mut cm) = cm_side(4);
        assert_eq!((cm.room(), cm.room_max()), (MAX_QUEUED, 4));
        let frame_len = encap::HEADER_LEN + 1000;
        let queued = cm.take_big_tx(frame_len).expect("slot");
        cm.queue_slot(queued, frame_len, peer());
        assert_eq!(cm.room(), MAX_QUEUED - 1);
        // Three more "posted" (taken and not given back): on the wire.
        let posted: Vec<BigTxSlot> = (0..3).filter_map(|_| cm.take_big_tx(frame_len)).collect();
        assert_eq!(cm.in_flight(), 3);
        assert_eq!(cm.room(), 0, "every slot out, three on the wire");
        for slot in posted {
            cm.give_back(slot);
        }
        assert_eq!(cm.room(), MAX_QUEUED - 1);
    }
}
