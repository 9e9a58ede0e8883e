//! QPN allocation with reuse, round robin as HCAs do it.
//!
//! QPNs come from a fixed range. A cursor walks the range and each new QP
//! gets the first free QPN at or after it, so a just-freed QPN is handed
//! out again only after the cursor has gone round the whole range (or every
//! other QPN is in use). A guest that keeps creating and destroying QPs
//! therefore never exhausts the space, and a late packet for an old QP is
//! unlikely to reach a new one. The in-use set costs memory for live QPs
//! only.

use alloc::collections::BTreeSet;

use crate::types::Qpn;

/// The QPNs of one fabric.
pub(super) struct QpnPool {
    first: u32,
    last: u32,
    /// Where the next search starts.
    cursor: u32,
    in_use: BTreeSet<u32>,
}

impl QpnPool {
    /// `count` QPNs from `first` (clamped below the multicast QPN).
    pub(super) fn new(first: u32, count: u32) -> QpnPool {
        let top = Qpn::MULTICAST.get() - 1;
        let first = first.clamp(1, top);
        let last = first.saturating_add(count.max(1) - 1).min(top);
        QpnPool {
            first,
            last,
            cursor: first,
            in_use: BTreeSet::new(),
        }
    }

    /// How many QPNs the range has.
    pub(super) fn capacity(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub(super) fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free QPN from the cursor on, wrapping; `None` when every
    /// QPN is in use.
    pub(super) fn alloc(&mut self) -> Option<Qpn> {
        if self.in_use.len() >= self.capacity() {
            return None;
        }
        let found = self
            .first_free_from(self.cursor)
            .or_else(|| self.first_free_from(self.first))?;
        self.in_use.insert(found);
        self.cursor = if found >= self.last {
            self.first
        } else {
            found + 1
        };
        Qpn::new(found)
    }

    /// Returns `qpn` to the pool. Freeing a QPN that is not in use does
    /// nothing.
    pub(super) fn free(&mut self, qpn: Qpn) {
        self.in_use.remove(&qpn.get());
    }

    /// The first QPN in `from..=last` that is not in use.
    fn first_free_from(&self, from: u32) -> Option<u32> {
        let mut candidate = from;
        for &used in self.in_use.range(from..=self.last) {
            if used != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= self.last).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(pool: &mut QpnPool) -> u32 {
        pool.alloc().map(Qpn::get).unwrap_or(0)
    }

    #[test]
    fn hands_out_the_range_in_order_then_refuses() {
        let mut pool = QpnPool::new(10, 3);
        assert_eq!(
            (take(&mut pool), take(&mut pool), take(&mut pool)),
            (10, 11, 12)
        );
        assert_eq!(pool.alloc(), None);
    }

    #[test]
    fn a_freed_qpn_waits_for_the_cursor_to_come_round() {
        let mut pool = QpnPool::new(10, 4);
        let a = take(&mut pool);
        let _b = take(&mut pool);
        pool.free(Qpn::new(a).unwrap_or(Qpn::MULTICAST));
        // 12 and 13 are still fresh: they come before 10 again.
        assert_eq!(take(&mut pool), 12);
        assert_eq!(take(&mut pool), 13);
        assert_eq!(take(&mut pool), 10);
        assert_eq!(pool.alloc(), None);
    }

    #[test]
    fn skips_qpns_in_use_when_wrapping() {
        let mut pool = QpnPool::new(10, 3);
        let _ = (take(&mut pool), take(&mut pool), take(&mut pool));
        pool.free(Qpn::new(11).unwrap_or(Qpn::MULTICAST));
        assert_eq!(take(&mut pool), 11);
    }

    #[test]
    fn the_range_stops_below_the_multicast_qpn() {
        let mut pool = QpnPool::new(Qpn::MULTICAST.get() - 2, 100);
        assert_eq!(pool.capacity(), 2);
        let _ = (take(&mut pool), take(&mut pool));
        assert_eq!(pool.alloc(), None);
    }
}
