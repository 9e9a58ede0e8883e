//! The Xen PV clock (`struct vcpu_time_info` in `shared_info`): system
//! time in nanoseconds since the domain started, extrapolated from the TSC
//! with Xen's own scale factor.

//!
//! The TSC is read inside the record's version check, so record and TSC
//! belong together; the clock counts TSC ticks at Xen's scale from its
//! first reading ([`crate::pvclock::TscOrigin`]), and the result is held
//! monotonic
//! ([`crate::pvclock::Monotonic`]; the module explains why both are
//! needed).

pub use crate::pvclock::TimeInfo;

use crate::pvclock::{ClockAnomalies, Monotonic, TscOrigin};

use super::events;

static MONOTONIC: Monotonic = Monotonic::new();
static ORIGIN: TscOrigin = TscOrigin::new();

/// Xen system time now, in nanoseconds (`None` before `shared_info`);
/// never less than an earlier reading.
pub fn now_nanos() -> Option<u64> {
    let (words, tsc) = events::time_words_and_tsc()?;
    let info = TimeInfo::from_words(words);
    if info.tsc_behind(tsc) {
        MONOTONIC.note_tsc_behind();
    }
    Some(MONOTONIC.observe(ORIGIN.nanos(&info, tsc)))
}

/// What the clock had to correct since boot.
pub fn anomalies() -> ClockAnomalies {
    MONOTONIC.anomalies()
}

/// The current time info.
pub fn info() -> Option<TimeInfo> {
    events::time_words().map(TimeInfo::from_words)
}
