//! Per-guest limits in the seat: the back half's share of them, and the
//! count of QPs a seat has open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use verbs_shim::back::BackConfig;

use crate::config::GuestLimits;

/// The back half's configuration for a guest with `limits`.
pub fn back_config(epoch: u32, limits: &GuestLimits) -> BackConfig {
    BackConfig {
        epoch,
        max_dests: limits.max_dests,
        max_mcast_groups: limits.max_mcast_groups,
        max_pending_resolves: limits.max_pending_resolves,
        // Offered only when the seat allows connections; not agreed at
        // Connected if the provider has no RC (rdma today).
        connected_mode: limits.max_rc_conns > 0,
        max_rc_conns: limits.max_rc_conns,
        ..BackConfig::default()
    }
}

#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    refused: AtomicU64,
}

/// How many QPs one seat has open, and how many it was refused. Cheap to
/// clone; clones count together.
#[derive(Clone, Default)]
pub struct QpGauge(Arc<Counts>);

/// One open QP; dropping it (with its port) gives the place back.
pub struct QpLease(Arc<Counts>);

impl QpGauge {
    /// A lease if fewer than `max` QPs are open; otherwise the refusal is
    /// counted and `None` returned.
    pub fn lease(&self, max: usize) -> Option<QpLease> {
        let taken = self
            .0
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            Some(QpLease(Arc::clone(&self.0)))
        } else {
            self.0.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// QPs open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// QPs refused so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

impl Drop for QpLease {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_bounded_counted_and_given_back() {
        let gauge = QpGauge::default();
        let a = gauge.lease(2);
        let b = gauge.lease(2);
        assert!(a.is_some() && b.is_some());
        assert!(gauge.lease(2).is_none());
        assert_eq!((gauge.open(), gauge.refused()), (2, 1));
        drop((a, b));
        assert_eq!(gauge.open(), 0);
        assert!(gauge.lease(2).is_some());
        assert_eq!(gauge.open(), 0, "the lease was dropped at once");
    }
}
