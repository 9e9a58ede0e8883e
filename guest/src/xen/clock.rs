//! The Xen PV clock (`struct vcpu_time_info` in `shared_info`): system
//! time in nanoseconds since the domain started, extrapolated from the TSC
//! with Xen's own scale factor.

pub use crate::pvclock::TimeInfo;

use crate::arch::cpu;

use super::events;

/// Xen system time now, in nanoseconds (`None` before `shared_info`).
pub fn now_nanos() -> Option<u64> {
    let info = TimeInfo::from_words(events::time_words()?);
    Some(info.nanos_at(cpu::rdtsc()))
}

/// The current time info.
pub fn info() -> Option<TimeInfo> {
    events::time_words().map(TimeInfo::from_words)
}
