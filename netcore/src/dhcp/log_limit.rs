//! [`LogLimit`]: at most one log line a second for each key (a seat, or
//! all strangers together), so that a guest sending DHCP in a loop cannot
//! flood the back end's log. A line that gets through says how many were
//! held back before it.

use alloc::collections::BTreeMap;
use alloc::string::String;

use smoltcp::time::{Duration, Instant};

/// Least time between two lines for one key.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Keys remembered; past this the memory starts over (keys are seat names,
/// so it is only reached with more seats than this).
const MAX_KEYS: usize = 1024;

#[derive(Debug, Default)]
pub struct LogLimit {
    keys: BTreeMap<String, (Instant, u64)>,
}

impl LogLimit {
    /// `Some(held back)` if a line for `key` may be written at `now`,
    /// `None` (and one more held back) if not.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((last, held)) = self.keys.get_mut(key) {
            if now < *last + LOG_INTERVAL {
                *held += 1;
                return None;
            }
            let n = *held;
            *last = now;
            *held = 0;
            return Some(n);
        }
        if self.keys.len() >= MAX_KEYS {
            self.keys.clear();
        }
        self.keys.insert(key.into(), (now, 0));
        Some(0)
    }
}

/// `" (N more held back)"`, or nothing.
pub fn held_text(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        alloc::format!(" ({held} more like it held back)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_key_with_the_count_held_back() {
        let mut l = LogLimit::default();
        let t = Instant::from_secs(10);
        assert_eq!(l.admit("g1", t), Some(0));
        assert_eq!(l.admit("g1", t + Duration::from_millis(10)), None);
        assert_eq!(l.admit("g1", t + Duration::from_millis(20)), None);
        // Another key is not held back by the first.
        assert_eq!(l.admit("g2", t + Duration::from_millis(30)), Some(0));
        assert_eq!(l.admit("g1", t + Duration::from_secs(1)), Some(2));
        assert_eq!(l.admit("g1", t + Duration::from_millis(1500)), None);
        assert_eq!(held_text(0), "");
        assert_eq!(held_text(2), " (2 more like it held back)");
    }
}
