//! The fabric: a shared switch that every [`SimPort`] is plugged into.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::config::PortConfig;
use super::entry::{Entry, Notifier, PortId};
use super::error::SimError;
use super::fault::{FaultConfig, Faults};
use super::port::SimPort;
use super::qpn::QpnPool;
use super::rc::RcFabric;
use super::stats::{FabricStats, PortStats};
use super::wire::Held;
use crate::slot::{RxSlots, TxSlots};
use crate::types::{Gid, PortAttr, PortState};

/// The first QPN the fabric hands out is `QPN_BASE + 1`.
pub const QPN_BASE: u32 = 0x48;

/// QPNs a fabric hands out by default: every one from `QPN_BASE + 1` up to
/// (not including) the multicast QPN.
pub const QPN_SPACE: u32 = 0x00ff_ffff - QPN_BASE - 1;

/// A software InfiniBand fabric: one subnet, one switch, any number of ports.
///
/// Cheap to clone; every clone is the same fabric. All state sits behind one
/// mutex, so operations from different threads are serialised and the fault
/// dice are rolled in that order.
#[derive(Clone)]
pub struct SimFabric {
    inner: Arc<Shared>,
}

/// The fabric's state and a hint read without the lock.
struct Shared {
    state: Mutex<Inner>,
    /// Whether packets were held back for reordering when the lock was last
    /// released by [`SimFabric::with`]: with none held (always, without the
    /// reorder fault) [`SimFabric::drain_held`] and a port's poll of an empty
    /// CQ need not take the lock. Held packets only appear under the lock,
    /// in `with`, which updates it before unlocking.
    held: AtomicBool,
}

pub(super) struct Inner {
    pub faults: Faults,
    pub ports: BTreeMap<PortId, Entry>,
    pub by_gid: BTreeMap<Gid, PortId>,
    /// Bumped whenever `by_gid` changes: a port's cached route
    /// (`Entry::route`) is good while it matches.
    pub routes_gen: u64,
    /// Multicast groups by MGID; a group exists while it has members.
    pub groups: BTreeMap<Gid, BTreeSet<PortId>>,
    /// Packets held back by the reorder fault, oldest first.
    pub held: VecDeque<Held>,
    pub held_orphaned: u64,
    /// Port ids are never reused (64 bits do not run out); QPNs are.
    next_port: u64,
    qpns: QpnPool,
    /// Counters of ports that have left.
    departed: PortStats,
    /// Destinations whose path resolution is slow (fault injection).
    pub slow_paths: BTreeMap<Gid, Duration>,
    /// RC connections between ports.
    pub rc: RcFabric,
}

impl SimFabric {
    pub fn new(faults: FaultConfig) -> SimFabric {
        SimFabric::with_qpn_space(faults, QPN_SPACE)
    }

    /// A fabric that hands out only `count` QPNs (from `QPN_BASE + 1`),
    /// reusing them round robin as ports leave; `add_port` fails with
    /// [`SimError::TooManyPorts`] while all of them are in use.
    pub fn with_qpn_space(faults: FaultConfig, count: u32) -> SimFabric {
        SimFabric {
            inner: Arc::new(Shared {
                held: AtomicBool::new(false),
                state: Mutex::new(Inner {
                    faults: Faults::new(faults),
                    ports: BTreeMap::new(),
                    by_gid: BTreeMap::new(),
                    routes_gen: 0,
                    groups: BTreeMap::new(),
                    held: VecDeque::new(),
                    held_orphaned: 0,
                    next_port: 1,
                    qpns: QpnPool::new(QPN_BASE + 1, count),
                    departed: PortStats::default(),
                    slow_paths: BTreeMap::new(),
                    rc: RcFabric::default(),
                }),
            }),
        }
    }

    /// Replaces the fault configuration and reseeds the generator from
    /// `faults.seed`. Probabilities outside `0..=1` are clamped; use
    /// [`FaultConfig::new`] to have them refused instead.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults = Faults::new(faults);
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.config()
    }

    /// Plugs a port in. The fabric assigns its QPN: the next free one,
    /// round robin (a QPN freed by a port that left comes back only after
    /// the others have had their turn).
    pub fn add_port(&self, config: PortConfig) -> Result<SimPort, SimError> {
        let PortConfig {
            gid,
            lid,
            pkey,
            qkey,
            mtu,
            layout,
            region,
        } = config;
        if gid.is_multicast() || gid == Gid::ZERO {
            return Err(SimError::InvalidGid(gid));
        }
        if lid.0 == 0 || lid.0 >= 0xc000 {
            return Err(SimError::InvalidLid(lid));
        }
        let needed = layout.region_len();
        if region.len() < needed {
            return Err(SimError::RegionTooSmall {
                needed,
                actual: region.len(),
            });
        }
        let mut inner = self.lock();
        if inner.by_gid.contains_key(&gid) {
            return Err(SimError::DuplicateGid(gid));
        }
        if inner.ports.values().any(|e| e.attr.lid == lid) {
            return Err(SimError::DuplicateLid(lid));
        }
        let number = inner.next_port;
        let qpn = inner.qpns.alloc().ok_or(SimError::TooManyPorts)?;
        inner.next_port += 1;
        let attr = PortAttr {
            gid,
            lid,
            qpn,
            pkey,
            qkey,
            mtu,
            state: PortState::Active,
        };
        let id = PortId(number);
        let cq_ready = Arc::new(AtomicBool::new(false));
        inner.ports.insert(
            id,
            Entry::new(attr, layout, region.clone(), cq_ready.clone()),
        );
        inner.by_gid.insert(gid, id);
        inner.routes_gen += 1;
        drop(inner);
        log::debug!(
            "sim: port {number} up: gid {gid} lid {:#x} qpn {:#x}",
            lid.0,
            qpn.get()
        );
        Ok(SimPort::new(
            self.clone(),
            id,
            attr,
            layout,
            region,
            (TxSlots::all(&layout), RxSlots::all(&layout)),
            cq_ready,
        ))
    }

    /// Fault injection: resolving `dgid` takes `delay` (`None`: answered
    /// at once again), as a RoCE address handle waits for neighbour
    /// resolution. The answer is queued on the asking port's CQ from
    /// another thread when the delay is over; `resolve` itself returns at
    /// once.
    pub fn set_path_delay(&self, dgid: Gid, delay: Option<Duration>) {
        let mut inner = self.lock();
        match delay {
            Some(d) => inner.slow_paths.insert(dgid, d),
            None => inner.slow_paths.remove(&dgid),
        };
    }

    /// Totals over every port that was ever attached.
    pub fn stats(&self) -> FabricStats {
        let inner = self.lock();
        let mut totals = inner.departed;
        for entry in inner.ports.values() {
            totals.add(&entry.stats);
        }
        FabricStats {
            ports: inner.ports.len(),
            groups: inner.groups.len(),
            qpns_in_use: inner.qpns.in_use(),
            held: inner.held.len(),
            held_orphaned: inner.held_orphaned,
            totals,
        }
    }

    /// Delivers every packet held back for reordering; returns how many.
    pub fn drain_held(&self) -> usize {
        if !self.maybe_held() {
            return 0;
        }
        self.with(|inner, fire| inner.release_held(fire))
    }

    /// Whether packets may be held back for reordering (see [`Shared`]).
    #[inline]
    pub(super) fn maybe_held(&self) -> bool {
        self.inner.held.load(Ordering::Acquire)
    }

    /// Fault injection: the link of the port with `gid` fails under every
    /// RC connection it has; both ends of each get `Broken` (`LinkDown`).
    /// The port stays attached. Returns how many connections broke.
    pub fn break_rc(&self, gid: Gid) -> usize {
        self.with(|inner, fire| match inner.by_gid.get(&gid).copied() {
            Some(id) => inner.rc_break_port(id, crate::rc::BreakReason::LinkDown, fire),
            None => 0,
        })
    }

    /// How long a connection request waits for the passive side's answer
    /// before the fabric (as the CM) gives up on it: the requester gets
    /// `Rejected` (`Timeout`), the passive side `Broken`. Checked whenever
    /// a port polls its RC queue. Default [`super::rc::CM_TIMEOUT`] (5 s).
    pub fn set_cm_timeout(&self, timeout: Duration) {
        self.lock().rc.cm_timeout = timeout;
    }

    /// RC connections on the fabric now.
    pub fn rc_connections(&self) -> usize {
        self.lock().rc.conns.len()
    }

    /// Whether a port with this GID is attached.
    pub fn has_port(&self, gid: Gid) -> bool {
        self.lock().by_gid.contains_key(&gid)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters and queues
        // consistent enough to keep going: every update is one step.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then calls the notifiers it collected.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Inner, &mut Vec<Notifier>) -> R) -> R {
        let mut fire = Vec::new();
        let result = {
            let mut inner = self.lock();
            let result = f(&mut inner, &mut fire);
            self.inner
                .held
                .store(!inner.held.is_empty(), Ordering::Release);
            result
        };
        for notify in fire {
            notify();
        }
        result
    }
}

impl Inner {
    /// Unplugs a port: its RC connections break (the peers hear
    /// `PeerGone`, and what the port queued comes back on its own RC
    /// queue), it leaves its groups, packets held for it are dropped, and
    /// its counters go into the fabric totals.
    pub(super) fn unplug(&mut self, id: PortId, fire: &mut Vec<Notifier>) -> Option<Entry> {
        self.rc_break_port(id, crate::rc::BreakReason::PeerGone, fire);
        let entry = self.ports.remove(&id)?;
        self.by_gid.remove(&entry.attr.gid);
        self.routes_gen += 1;
        self.qpns.free(entry.attr.qpn);
        for mgid in &entry.groups {
            self.leave_group(*mgid, id);
        }
        let before = self.held.len();
        self.held.retain(|h| h.to != id);
        self.held_orphaned += (before - self.held.len()) as u64;
        self.departed.add(&entry.stats);
        log::debug!("sim: port {} down", id.0);
        Some(entry)
    }

    pub(super) fn leave_group(&mut self, mgid: Gid, id: PortId) {
        if let Some(members) = self.groups.get_mut(&mgid) {
            members.remove(&id);
            if members.is_empty() {
                self.groups.remove(&mgid);
            }
        }
    }
}

impl core::fmt::Debug for SimFabric {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let stats = self.stats();
        f.debug_struct("SimFabric")
            .field("ports", &stats.ports)
            .field("groups", &stats.groups)
            .field("held", &stats.held)
            .finish_non_exhaustive()
    }
}
