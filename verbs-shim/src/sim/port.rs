//! One port on the fabric, seen through the verbs contract.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use ring::Window;

use super::entry::{Notifier, PortId};
use super::fabric::{Inner, SimFabric};
use super::stats::PortStats;
use crate::hca::{
    check_send_head, Completion, DestHandle, Hca, HcaError, PostError, RecvInfo, UdDest, Verbs,
    WcStatus,
};
use crate::mem::SlotBuffers;
use crate::slot::{RxSlot, RxSlots, SlotLayout, TxSlot, TxSlots};
use crate::types::{Gid, Lid, PKey, PortAttr, PortState, Qpn};

/// A port of a [`SimFabric`], with one UD QP and a registered buffer region.
///
/// Dropping it unplugs it: its posted receives and queued completions vanish
/// and nothing can be delivered to it any more. [`SimPort::close`] unplugs
/// it too, but keeps the completions and turns every posted receive into a
/// `Flushed` completion, so that the owner gets its slots back.
pub struct SimPort {
    fabric: SimFabric,
    id: PortId,
    attr: PortAttr,
    layout: SlotLayout,
    region: Window,
    slots: Option<(TxSlots, RxSlots)>,
    /// Completions taken off the fabric's CQ and not yet polled: `poll_cq`
    /// takes the fabric lock once per batch, not once per completion.
    reaped: VecDeque<Completion>,
    /// The fabric sets it when it queues a completion for this port.
    cq_ready: Arc<AtomicBool>,
    /// Set once the port is closed: what is left to poll, and the last
    /// counters.
    pub(super) closed: Option<Closed>,
    /// Connected mode: the big-slot pool, its tokens, and RC completions
    /// taken off the fabric and not yet polled.
    pub(super) rc: Option<super::rc::PortRcSide>,
}

pub(super) struct Closed {
    cq: VecDeque<Completion>,
    stats: PortStats,
    /// RC completions left to poll.
    pub(super) rc_cq: VecDeque<crate::rc::RcCompletion>,
    pub(super) rc_stats: super::rc::RcStats,
}

/// The `info` of a flushed receive: nothing arrived.
const FLUSHED_INFO: RecvInfo = RecvInfo {
    byte_len: 0,
    src_qpn: Qpn::new_truncated(0),
    src_lid: Lid(0),
    pkey: PKey(0),
    grh_present: false,
    multicast: false,
};

impl SimPort {
    /// `poll_cq`'s slow path: moves the whole of the fabric's CQ for this
    /// port into `reaped` (which is empty). It returns no completion itself:
    /// a completion returned through an out-of-line call's return slot was
    /// read back right after the callee's field-by-field stores, which
    /// cannot be forwarded (a stall `perf annotate` showed in the reap loop).
    ///
    /// Nothing queued and nothing held back: no need for the lock (a
    /// completion queued meanwhile is found by the next poll, or by
    /// `arm_cq`, which looks under the lock).
    #[inline(never)]
    fn refill(&mut self) -> Result<(), HcaError> {
        if !self.cq_ready.load(Ordering::Acquire) && !self.fabric.maybe_held() {
            return Ok(());
        }
        let (id, reaped, ready) = (self.id, &mut self.reaped, &self.cq_ready);
        self.fabric.with(|inner, fire| {
            inner.release_held(fire);
            let entry = inner.ports.get_mut(&id).ok_or(HcaError::Disconnected)?;
            ready.store(false, Ordering::Relaxed);
            // The whole CQ in one go: `reaped` is empty here, so the two
            // swap (the fabric's CQ keeps the empty one's capacity, and
            // nothing is copied or allocated).
            core::mem::swap(reaped, &mut entry.cq);
            Ok(())
        })
    }

    pub(super) fn id(&self) -> PortId {
        self.id
    }

    pub(super) fn region(&self) -> &Window {
        &self.region
    }

    pub(super) fn new(
        fabric: SimFabric,
        id: PortId,
        attr: PortAttr,
        layout: SlotLayout,
        region: Window,
        slots: (TxSlots, RxSlots),
        cq_ready: Arc<AtomicBool>,
    ) -> SimPort {
        SimPort {
            fabric,
            id,
            attr,
            layout,
            region,
            slots: Some(slots),
            reaped: VecDeque::new(),
            cq_ready,
            closed: None,
            rc: None,
        }
    }

    /// The fabric this port is plugged into.
    pub fn fabric(&self) -> &SimFabric {
        &self.fabric
    }

    pub fn gid(&self) -> Gid {
        self.attr.gid
    }

    /// Sets (or clears) the function called when a completion arrives while
    /// the CQ is armed. It runs once per arm, outside the fabric lock, on
    /// whichever thread queued the completion.
    pub fn set_notifier(&mut self, notifier: Option<Notifier>) {
        if self.closed.is_some() {
            return;
        }
        let id = self.id;
        self.fabric.with(|inner, _| {
            if let Some(entry) = inner.ports.get_mut(&id) {
                entry.notifier = notifier;
            }
        });
    }

    /// A copy of this port's counters.
    pub fn stats(&self) -> PortStats {
        if let Some(closed) = &self.closed {
            return closed.stats;
        }
        let id = self.id;
        self.fabric
            .with(|inner, _| inner.ports.get(&id).map(|e| e.stats))
            .unwrap_or_default()
    }

    /// Receive slots posted and not yet filled.
    pub fn posted_recvs(&self) -> usize {
        let id = self.id;
        self.fabric
            .with(|inner, _| inner.ports.get(&id).map(|e| e.recvs.len()))
            .unwrap_or(0)
    }

    /// Unplugs the port (the QP goes to the error state). Completions already
    /// queued stay pollable, followed by a `Flushed` receive completion for
    /// every posted receive. Afterwards sends and receives complete at once
    /// with `Flushed`, and the control verbs fail with `Disconnected`.
    /// Closing twice does nothing.
    pub fn close(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let id = self.id;
        let entry = self.fabric.with(|inner, fire| inner.unplug(id, fire));
        // What was reaped comes first: it completed first.
        let mut cq = core::mem::take(&mut self.reaped);
        let mut rc_cq = self
            .rc
            .as_mut()
            .map(|rc| core::mem::take(&mut rc.reaped))
            .unwrap_or_default();
        let mut rc_stats = super::rc::RcStats::default();
        let closed = match entry {
            Some(mut entry) => {
                if let Some(rc) = entry.rc.take() {
                    rc_stats = rc.stats;
                    rc_cq.extend(rc.cq);
                    rc_cq.extend(rc.recvs.into_iter().map(super::rc::flushed_recv));
                }
                cq.extend(entry.cq);
                cq.extend(entry.recvs.into_iter().map(|slot| Completion::Recv {
                    slot,
                    status: WcStatus::Flushed,
                    info: FLUSHED_INFO,
                }));
                Closed {
                    cq,
                    stats: entry.stats,
                    rc_cq,
                    rc_stats,
                }
            }
            None => Closed {
                cq,
                stats: PortStats::default(),
                rc_cq,
                rc_stats,
            },
        };
        self.attr.state = PortState::Down;
        self.closed = Some(closed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Runs `f` on the attached port's queues; `Disconnected` if it is gone.
    fn control(
        &mut self,
        f: impl FnOnce(&mut Inner, PortId, &mut Vec<Notifier>) -> Result<(), HcaError>,
    ) -> Result<(), HcaError> {
        if self.closed.is_some() {
            return Err(HcaError::Disconnected);
        }
        let id = self.id;
        self.fabric.with(|inner, fire| f(inner, id, fire))
    }
}

impl Verbs for SimPort {
    fn port_attr(&self) -> PortAttr {
        self.attr
    }

    /// The fabric drops what fails its ICRC check, as an HCA does, so
    /// what arrives is what was sent: the checksums need no second check.
    fn offloads(&self) -> crate::Offloads {
        crate::Offloads { rx_checksums: true }
    }

    fn layout(&self) -> SlotLayout {
        self.layout
    }

    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        self.slots.take()
    }

    /// Delivers synchronously (see the `wire` module) and queues the send
    /// completion before returning.
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        if let Some(closed) = &mut self.closed {
            closed.cq.push_back(Completion::Send {
                slot,
                status: WcStatus::Flushed,
            });
            return Ok(());
        }
        let (id, region) = (self.id, &self.region);
        self.fabric
            .with(|inner, fire| inner.send(id, region, slot, len, &[], dest, fire))
            .map_err(|slot| PostError {
                slot,
                error: HcaError::Disconnected,
            })
    }

    /// Like `post_send`; the head comes from `head`, the rest from the slot
    /// (gathered under the fabric lock, in the same synchronous delivery).
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
        if let Some(closed) = &mut self.closed {
            closed.cq.push_back(Completion::Send {
                slot,
                status: WcStatus::Flushed,
            });
            return Ok(());
        }
        let (id, region) = (self.id, &self.region);
        self.fabric
            .with(|inner, fire| inner.send(id, region, slot, len, head, dest, fire))
            .map_err(|slot| PostError {
                slot,
                error: HcaError::Disconnected,
            })
    }

    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        if let Some(closed) = &mut self.closed {
            closed.cq.push_back(Completion::Recv {
                slot,
                status: WcStatus::Flushed,
                info: FLUSHED_INFO,
            });
            return Ok(());
        }
        if self.layout.rx_offset(slot.index()).is_none() {
            return Err(PostError {
                slot,
                error: HcaError::InvalidArgument,
            });
        }
        let id = self.id;
        self.fabric.with(|inner, _| match inner.ports.get_mut(&id) {
            Some(entry) => {
                entry.recvs.push_back(slot);
                Ok(())
            }
            None => Err(PostError {
                slot,
                error: HcaError::Disconnected,
            }),
        })
    }

    /// The whole batch under one fabric lock, each send delivered as
    /// `post_send` delivers it.
    fn post_sends(
        &mut self,
        sends: &mut dyn Iterator<Item = crate::SendWr>,
        refused: &mut Vec<PostError<TxSlot>>,
    ) {
        if let Some(closed) = &mut self.closed {
            for wr in sends {
                closed.cq.push_back(Completion::Send {
                    slot: wr.slot,
                    status: WcStatus::Flushed,
                });
            }
            return;
        }
        let (id, region) = (self.id, &self.region);
        self.fabric.with(|inner, fire| {
            for wr in sends {
                if let Err(slot) = inner.send(id, region, wr.slot, wr.len, &[], &wr.dest, fire) {
                    refused.push(PostError {
                        slot,
                        error: HcaError::Disconnected,
                    });
                }
            }
        });
    }

    /// The whole batch under one fabric lock.
    fn post_recvs(
        &mut self,
        slots: &mut dyn Iterator<Item = RxSlot>,
        refused: &mut Vec<PostError<RxSlot>>,
    ) {
        if let Some(closed) = &mut self.closed {
            for slot in slots {
                closed.cq.push_back(Completion::Recv {
                    slot,
                    status: WcStatus::Flushed,
                    info: FLUSHED_INFO,
                });
            }
            return;
        }
        let (id, layout) = (self.id, self.layout);
        self.fabric.with(|inner, _| {
            let mut entry = inner.ports.get_mut(&id);
            for slot in slots {
                let error = match &mut entry {
                    _ if layout.rx_offset(slot.index()).is_none() => HcaError::InvalidArgument,
                    Some(entry) => {
                        entry.recvs.push_back(slot);
                        continue;
                    }
                    None => HcaError::Disconnected,
                };
                refused.push(PostError { slot, error });
            }
        });
    }

    /// Sends are already on the wire; this only releases held packets.
    fn flush(&mut self) -> Result<(), HcaError> {
        if self.closed.is_none() {
            self.fabric.drain_held();
        }
        Ok(())
    }

    /// The completions reaped from the fabric last time first (inlined into
    /// the caller's loop), the fabric's CQ only when they are used up.
    #[inline]
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        if let Some(closed) = &mut self.closed {
            return Ok(closed.cq.pop_front());
        }
        if self.reaped.is_empty() {
            self.refill()?;
        }
        Ok(self.reaped.pop_front())
    }

    /// Covers the RC queue too (`crate::rc`): one notifier for both.
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        if let Some(closed) = &self.closed {
            // Nothing will ever arrive: poll what is left, then stop.
            return if closed.cq.is_empty() && closed.rc_cq.is_empty() {
                Err(HcaError::Disconnected)
            } else {
                Ok(true)
            };
        }
        let rc_reaped = self.rc.as_ref().is_some_and(|rc| !rc.reaped.is_empty());
        if !self.reaped.is_empty() || rc_reaped {
            // Reaped and not yet polled: do not sleep.
            return Ok(true);
        }
        let id = self.id;
        self.fabric.with(|inner, fire| {
            inner.release_held(fire);
            let entry = inner.ports.get_mut(&id).ok_or(HcaError::Disconnected)?;
            let rc_pending = entry.rc.as_ref().is_some_and(|rc| !rc.cq.is_empty());
            let pending = !entry.cq.is_empty() || rc_pending;
            entry.armed = !pending;
            Ok(pending)
        })
    }

    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.control(|inner, id, fire| inner.mcast_attach(id, mgid, fire))
    }

    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.control(|inner, id, fire| inner.mcast_detach(id, mgid, fire))
    }

    /// Answered at once, unless the fabric was told this path is slow
    /// ([`SimFabric::set_path_delay`]): then a thread answers later.
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        let delay = self.fabric.lock().slow_paths.get(&dgid).copied();
        match delay {
            None => self.control(|inner, id, fire| inner.resolve(id, dgid, fire)),
            Some(delay) => {
                if self.closed.is_some() {
                    return Err(HcaError::Disconnected);
                }
                let (fabric, id) = (self.fabric.clone(), self.id);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    // The port may have gone meanwhile (ids are never
                    // reused): then nobody is waiting for the answer.
                    let _ = fabric.with(|inner, fire| inner.resolve(id, dgid, fire));
                });
                Ok(())
            }
        }
    }

    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        self.control(|inner, id, _| inner.release(id, handle))
    }

    /// Once [`SimPort::enable_rc`] turned it on.
    fn rc(&mut self) -> Option<&mut dyn crate::rc::RcVerbs> {
        if self.rc.is_some() {
            Some(self)
        } else {
            None
        }
    }
}

impl Hca for SimPort {
    fn buffers(&mut self) -> SlotBuffers<'_> {
        // `add_port` checked the region holds the layout, so `new` succeeds.
        SlotBuffers::new(&self.region, self.layout)
            .unwrap_or_else(|| SlotBuffers::empty(&self.region))
    }
}

impl Drop for SimPort {
    fn drop(&mut self) {
        if self.closed.is_none() {
            let id = self.id;
            // The entry (with its queued completions) is dropped after the
            // lock is released.
            let entry = self.fabric.with(|inner, fire| inner.unplug(id, fire));
            drop(entry);
        }
    }
}

impl core::fmt::Debug for SimPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimPort")
            .field("attr", &self.attr)
            .field("layout", &self.layout)
            .field("closed", &self.closed.is_some())
            .finish_non_exhaustive()
    }
}
