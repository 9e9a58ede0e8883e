//! The per-guest table of RC connections. The guest names a connection by a
//! handle from this table (index and generation), never by the provider's
//! handle, so it cannot reach another guest's connections, and a stale
//! handle (the generation moved on) is never mistaken for a new one.
//!
//! An entry lives from the moment the provider issues a handle until the
//! guest lets go of it: a broken connection stays `Dead` (sends on it come
//! back `Flushed`, not as a violation: the guest may not have read the news
//! yet) until the guest `DISCONNECT`s it.

use alloc::vec::Vec;

use crate::rc::ConnHandle;
use crate::types::{Gid, Qpn};

/// Where a connection is, as the back half tracks it. The cookies are of
/// the guest's request waiting for the answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::back) enum Phase {
    /// Our `CONNECT` is out; the guest does not know the handle yet.
    Connecting {
        cookie: u32,
    },
    /// A peer asked (the guest got `EVENT_REQUEST`).
    Requested,
    /// The guest accepted; waiting for the provider.
    Accepting {
        cookie: u32,
    },
    Established,
    /// The guest disconnected; waiting for the provider.
    Closing {
        cookie: u32,
    },
    /// Broken; the guest was (or is being) told, and must disconnect it.
    Dead,
}

#[derive(Clone, Copy, Debug)]
pub(in crate::back) struct Conn {
    pub provider: ConnHandle,
    pub phase: Phase,
    /// The other end: its GID and UD QPN (for captures).
    pub peer: (Gid, Qpn),
}

#[derive(Clone, Copy, Default)]
struct Entry {
    generation: u16,
    conn: Option<Conn>,
}

pub(in crate::back) struct ConnTable {
    entries: Vec<Entry>,
    limit: usize,
}

impl ConnTable {
    /// A table of at most `limit` entries (at most 65535).
    pub fn new(limit: usize) -> ConnTable {
        ConnTable {
            entries: Vec::new(),
            limit: limit.min(0xffff),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries in use.
    pub fn held(&self) -> usize {
        self.entries.iter().filter(|e| e.conn.is_some()).count()
    }

    /// Stores a connection; its guest handle, or `None` when full.
    pub fn insert(&mut self, conn: Conn) -> Option<u32> {
        let index = match self.entries.iter().position(|e| e.conn.is_none()) {
            Some(free) => free,
            None if self.entries.len() < self.limit => {
                self.entries.push(Entry::default());
                self.entries.len() - 1
            }
            None => return None,
        };
        let entry = self.entries.get_mut(index)?;
        // Generation 0 is never issued, so handle 0 is never valid.
        entry.generation = entry.generation.wrapping_add(1).max(1);
        entry.conn = Some(conn);
        Some(u32::from(entry.generation) << 16 | u32::try_from(index).ok()?)
    }

    /// The connection a guest handle names.
    pub fn get_mut(&mut self, guest: u32) -> Option<&mut Conn> {
        let (generation, index) = ((guest >> 16) as u16, (guest & 0xffff) as usize);
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        entry.conn.as_mut()
    }

    /// The guest handle and entry of a provider handle.
    pub fn by_provider(&mut self, provider: ConnHandle) -> Option<(u32, &mut Conn)> {
        self.entries.iter_mut().enumerate().find_map(|(i, e)| {
            let generation = u32::from(e.generation);
            let conn = e.conn.as_mut().filter(|c| c.provider == provider)?;
            Some((generation << 16 | u32::try_from(i).ok()?, conn))
        })
    }

    pub fn remove(&mut self, guest: u32) -> Option<Conn> {
        let index = (guest & 0xffff) as usize;
        let entry = self.entries.get_mut(index)?;
        if u32::from(entry.generation) != guest >> 16 {
            return None;
        }
        entry.conn.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u32) -> Conn {
        Conn {
            provider: ConnHandle(n),
            phase: Phase::Established,
            peer: (Gid::ZERO, Qpn::new_truncated(n)),
        }
    }

    #[test]
    fn handles_are_bounded_generational_and_never_zero() {
        let mut t = ConnTable::new(2);
        let a = t.insert(conn(10)).unwrap();
        let b = t.insert(conn(11)).unwrap();
        assert_ne!(a, 0);
        assert!(t.insert(conn(12)).is_none());
        assert_eq!(t.held(), 2);
        assert_eq!(t.get_mut(a).map(|c| c.provider), Some(ConnHandle(10)));
        assert_eq!(t.by_provider(ConnHandle(11)).map(|(g, _)| g), Some(b));
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        let c = t.insert(conn(12)).unwrap();
        assert_eq!(c & 0xffff, a & 0xffff);
        assert_ne!(c, a);
        assert!(t.get_mut(a).is_none(), "the stale handle stays dead");
        assert!(t.get_mut(0).is_none());
        assert!(t.get_mut(u32::MAX).is_none());
        assert_eq!(t.held(), 2);
    }
}
