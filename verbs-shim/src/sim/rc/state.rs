//! What the fabric keeps for RC: each port's handles, big receive pool and
//! RC completion queue, and the connections between ports.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use ring::Window;

use super::stats::RcStats;
use crate::rc::{BigLayout, BigRxSlot, BigTxSlot, ConnHandle, RcCompletion};
use crate::sim::entry::PortId;
use crate::types::Qpn;

/// The most connections one port can be configured for (a handle's index
/// is 16 bits).
pub const MAX_CONNS_LIMIT: usize = 0xffff;

/// A connection's fabric-wide name. Never reused.
pub(in crate::sim) type ConnId = u64;

/// One handle table entry: the generation of the last handle issued from
/// it and the connection it names now.
#[derive(Clone, Copy, Default)]
struct HandleEntry {
    generation: u16,
    conn: Option<ConnId>,
}

/// A port's RC state, kept in its fabric entry.
pub(in crate::sim) struct PortRc {
    pub layout: BigLayout,
    pub region: Window,
    pub max_conns: usize,
    handles: Vec<HandleEntry>,
    /// Posted big receives, oldest first (the shared receive queue).
    pub recvs: VecDeque<BigRxSlot>,
    pub cq: VecDeque<RcCompletion>,
    pub stats: RcStats,
}

impl PortRc {
    pub(in crate::sim) fn new(layout: BigLayout, region: Window, max_conns: usize) -> PortRc {
        PortRc {
            layout,
            region,
            max_conns: max_conns.min(MAX_CONNS_LIMIT),
            handles: Vec::new(),
            recvs: VecDeque::new(),
            cq: VecDeque::new(),
            stats: RcStats::default(),
        }
    }

    /// Handles naming a connection now.
    pub(in crate::sim) fn in_use(&self) -> usize {
        self.handles.iter().filter(|h| h.conn.is_some()).count()
    }

    /// A new handle for `conn`, or `None` at the limit.
    pub(in crate::sim) fn alloc(&mut self, conn: ConnId) -> Option<ConnHandle> {
        let index = match self.handles.iter().position(|h| h.conn.is_none()) {
            Some(free) if free < self.max_conns => free,
            Some(_) => return None,
            None if self.handles.len() < self.max_conns => {
                self.handles.push(HandleEntry::default());
                self.handles.len() - 1
            }
            None => return None,
        };
        let entry = self.handles.get_mut(index)?;
        entry.generation = entry.generation.wrapping_add(1);
        entry.conn = Some(conn);
        let index = u32::try_from(index).ok()?;
        Some(ConnHandle(u32::from(entry.generation) << 16 | index))
    }

    /// The connection `handle` names, if it is live.
    pub(in crate::sim) fn lookup(&self, handle: ConnHandle) -> Option<ConnId> {
        let (generation, index) = split(handle);
        let entry = self.handles.get(index)?;
        (entry.generation == generation)
            .then_some(entry.conn)
            .flatten()
    }

    /// Kills `handle`; false if it was not live.
    pub(in crate::sim) fn free(&mut self, handle: ConnHandle) -> bool {
        let (generation, index) = split(handle);
        match self.handles.get_mut(index) {
            Some(e) if e.generation == generation && e.conn.is_some() => {
                e.conn = None;
                true
            }
            _ => false,
        }
    }
}

fn split(handle: ConnHandle) -> (u16, usize) {
    ((handle.0 >> 16) as u16, (handle.0 & 0xffff) as usize)
}

/// Which end of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::sim) enum Side {
    Active = 0,
    Passive = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Active => Side::Passive,
            Side::Passive => Side::Active,
        }
    }
}

/// A message sent and not yet delivered (its slot is the provider's).
pub(in crate::sim) struct Msg {
    pub slot: BigTxSlot,
    pub len: usize,
}

/// One end of a connection.
pub(in crate::sim) struct End {
    pub port: PortId,
    pub handle: ConnHandle,
    pub ud_qpn: Qpn,
    /// The largest message this end accepts (it advertised it).
    pub recv_mtu: u32,
    /// Messages this end sent, oldest first, not yet delivered.
    pub queue: VecDeque<Msg>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::sim) enum Phase {
    /// The request is at the passive side.
    Requested,
    Established,
}

/// A connection between two ports.
pub(in crate::sim) struct Conn {
    pub phase: Phase,
    /// `[active, passive]`.
    pub ends: [End; 2],
    /// When the request went out (the CM timeout counts from it).
    pub requested_at: std::time::Instant,
}

impl Conn {
    pub fn end(&self, side: Side) -> &End {
        &self.ends[side as usize]
    }

    pub fn end_mut(&mut self, side: Side) -> &mut End {
        &mut self.ends[side as usize]
    }

    /// Which end `port` holding `handle` is.
    pub fn side_of(&self, port: PortId, handle: ConnHandle) -> Option<Side> {
        [Side::Active, Side::Passive]
            .into_iter()
            .find(|&s| self.end(s).port == port && self.end(s).handle == handle)
    }
}

/// How long a request may wait for the passive side's answer by default.
pub const CM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Every connection on the fabric.
pub(in crate::sim) struct RcFabric {
    pub conns: BTreeMap<ConnId, Conn>,
    next: ConnId,
    /// How long a request waits for an answer before the CM gives up.
    pub cm_timeout: std::time::Duration,
}

impl Default for RcFabric {
    fn default() -> RcFabric {
        RcFabric {
            conns: BTreeMap::new(),
            next: 0,
            cm_timeout: CM_TIMEOUT,
        }
    }
}

impl RcFabric {
    /// Requests older than the CM timeout at `now`.
    pub fn expired(&self, now: std::time::Instant) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Requested && now.duration_since(c.requested_at) >= self.cm_timeout
            })
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn next_id(&mut self) -> ConnId {
        self.next += 1;
        self.next
    }

    /// Connections with an end at `port`.
    pub fn of_port(&self, port: PortId) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.ends.iter().any(|e| e.port == port))
            .map(|(&id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_bounded_and_stale_ones_stay_dead() {
        let mut rc = PortRc::new(BigLayout::NONE, Window::new_heap(0), 2);
        let a = rc.alloc(1).unwrap();
        let b = rc.alloc(2).unwrap();
        assert_eq!(rc.alloc(3), None);
        assert_eq!(rc.in_use(), 2);
        assert_eq!(rc.lookup(a), Some(1));
        assert!(rc.free(a));
        assert!(!rc.free(a));
        let c = rc.alloc(3).unwrap();
        assert_eq!(c.0 & 0xffff, a.0 & 0xffff, "the index is reused");
        assert_ne!(c, a, "with a new generation");
        assert_eq!(rc.lookup(a), None);
        assert_eq!(rc.lookup(c), Some(3));
        assert_eq!(rc.lookup(b), Some(2));
        assert_eq!(rc.lookup(ConnHandle(u32::MAX)), None);
    }
}
