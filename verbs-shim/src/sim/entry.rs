//! What the fabric keeps for one attached port: its queues, address handles,
//! group memberships and counters.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use ring::Window;

use super::rc::PortRc;
use super::stats::PortStats;
use crate::hca::{Completion, DestHandle, PathError};
use crate::rc::RcCompletion;
use crate::slot::{RxSlot, SlotLayout};
use crate::types::{Gid, PortAttr};

/// Called (outside the fabric lock) when a completion arrives on an armed
/// port.
pub type Notifier = Arc<dyn Fn() + Send + Sync>;

/// Address handles one port can hold at a time.
pub(super) const MAX_HANDLES: usize = 1024;

/// The fabric-wide name of an attached port. Never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) struct PortId(pub u64);

/// What an address handle points at. Resolved by GID at send time, like an
/// address handle that names a destination LID.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Target {
    Port(Gid),
    Group(Gid),
}

pub(super) struct Entry {
    pub attr: PortAttr,
    pub layout: SlotLayout,
    pub region: Window,
    /// Posted receives, oldest first.
    pub recvs: VecDeque<RxSlot>,
    pub cq: VecDeque<Completion>,
    /// Set when a completion is queued on `cq`, cleared when the port takes
    /// the queue: the port's poll of an empty CQ reads it without the lock.
    pub cq_ready: Arc<AtomicBool>,
    pub armed: bool,
    pub notifier: Option<Notifier>,
    pub stats: PortStats,
    handles: Vec<Option<Target>>,
    /// Groups this port is attached to.
    pub groups: BTreeSet<Gid>,
    /// Connected mode, once the port's owner turned it on.
    pub rc: Option<PortRc>,
    /// The unicast route this port sent on last: a GID, the port that had
    /// it, and the fabric's `routes_gen` then (good while that is current).
    pub route: Option<(Gid, PortId, u64)>,
}

impl Entry {
    pub(super) fn new(
        attr: PortAttr,
        layout: SlotLayout,
        region: Window,
        cq_ready: Arc<AtomicBool>,
    ) -> Entry {
        Entry {
            attr,
            layout,
            region,
            recvs: VecDeque::new(),
            cq: VecDeque::new(),
            cq_ready,
            armed: false,
            notifier: None,
            stats: PortStats::default(),
            handles: Vec::new(),
            groups: BTreeSet::new(),
            rc: None,
            route: None,
        }
    }

    /// Queues a completion. If the CQ was armed, disarms it and hands the
    /// notifier to `fire`, to be called once the lock is dropped.
    ///
    /// Inlined, so the caller builds the completion in place: passed by
    /// reference to an out-of-line call, it was copied out with 16-byte
    /// loads right after the caller's narrower stores (a forwarding stall
    /// that `perf annotate` put at three quarters of this function).
    #[inline(always)]
    pub(super) fn complete(&mut self, completion: Completion, fire: &mut Vec<Notifier>) {
        self.cq.push_back(completion);
        self.cq_ready.store(true, Ordering::Release);
        if core::mem::take(&mut self.armed) {
            if let Some(notifier) = &self.notifier {
                fire.push(Arc::clone(notifier));
            }
        }
    }

    /// Queues an RC completion (dropped if the port has no RC, which
    /// cannot happen: only RC ports are party to connections), with the
    /// same arming rule as [`Entry::complete`]: one notifier for both
    /// queues.
    pub(super) fn complete_rc(&mut self, completion: RcCompletion, fire: &mut Vec<Notifier>) {
        let Some(rc) = self.rc.as_mut() else {
            return;
        };
        rc.cq.push_back(completion);
        if core::mem::take(&mut self.armed) {
            if let Some(notifier) = &self.notifier {
                fire.push(Arc::clone(notifier));
            }
        }
    }

    pub(super) fn target(&self, handle: DestHandle) -> Option<Target> {
        let index = usize::try_from(handle.0).ok()?;
        self.handles.get(index).copied().flatten()
    }

    pub(super) fn alloc_handle(&mut self, target: Target) -> Result<DestHandle, PathError> {
        let index = match self.handles.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.handles.len() < MAX_HANDLES => {
                self.handles.push(None);
                self.handles.len() - 1
            }
            None => return Err(PathError::NoResources),
        };
        let handle = u32::try_from(index).map_err(|_| PathError::NoResources)?;
        self.handles[index] = Some(target);
        Ok(DestHandle(handle))
    }

    /// Frees a handle; false if it was not in use.
    pub(super) fn release_handle(&mut self, handle: DestHandle) -> bool {
        let Ok(index) = usize::try_from(handle.0) else {
            return false;
        };
        match self.handles.get_mut(index) {
            Some(slot @ Some(_)) => {
                *slot = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IbMtu, Lid, PKey, PortState, QKey, Qpn};

    fn entry() -> Entry {
        let attr = PortAttr {
            gid: Gid::from_parts(1, 1),
            lid: Lid(1),
            qpn: Qpn::new_truncated(0x49),
            pkey: PKey::DEFAULT,
            qkey: QKey::IPOIB_DEFAULT,
            mtu: IbMtu::Mtu2048,
            state: PortState::Active,
        };
        let layout = SlotLayout {
            tx_count: 0,
            rx_count: 0,
            slot_size: 0,
        };
        Entry::new(
            attr,
            layout,
            Window::new_heap(0),
            Arc::new(AtomicBool::new(false)),
        )
    }

    #[test]
    fn handles_are_reused_and_bounded() {
        let mut e = entry();
        let t = Target::Port(Gid::from_parts(1, 2));
        let h0 = e.alloc_handle(t).unwrap();
        let h1 = e.alloc_handle(t).unwrap();
        assert_ne!(h0, h1);
        assert!(e.release_handle(h0));
        assert!(!e.release_handle(h0));
        assert!(!e.release_handle(DestHandle(u32::MAX)));
        assert_eq!(e.target(h0), None);
        assert_eq!(e.alloc_handle(t), Ok(h0));
        for _ in 2..MAX_HANDLES {
            e.alloc_handle(t).unwrap();
        }
        assert_eq!(e.alloc_handle(t), Err(PathError::NoResources));
        assert_eq!(e.target(DestHandle(1023)), Some(t));
    }

    #[test]
    fn notifier_fires_only_when_armed() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        let mut e = entry();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        e.notifier = Some(Arc::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
        }));
        let mut fire = Vec::new();
        e.complete(Completion::PortChanged, &mut fire);
        assert!(fire.is_empty());
        e.armed = true;
        e.complete(Completion::PortChanged, &mut fire);
        e.complete(Completion::PortChanged, &mut fire);
        assert_eq!(fire.len(), 1);
        assert!(!e.armed);
        assert_eq!(e.cq.len(), 3);
        fire.iter().for_each(|f| f());
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
