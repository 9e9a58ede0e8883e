//! The Xen PV clock (`struct vcpu_time_info` in `shared_info`): system
//! time in nanoseconds since the domain started, extrapolated from the TSC
//! with Xen's own scale factor.

use crate::arch::cpu;

use super::events;

/// `vcpu_time_info`, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeInfo {
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
}

impl TimeInfo {
    pub fn from_words(w: [u64; 4]) -> TimeInfo {
        TimeInfo {
            tsc_timestamp: w[1],
            system_time: w[2],
            tsc_to_system_mul: w[3] as u32,
            tsc_shift: (w[3] >> 32) as u8 as i8,
        }
    }

    /// System time (ns) at TSC value `tsc`.
    pub fn nanos_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.wrapping_sub(self.tsc_timestamp);
        if self.tsc_shift >= 0 {
            delta <<= self.tsc_shift;
        } else {
            delta >>= -self.tsc_shift;
        }
        let scaled = (u128::from(delta) * u128::from(self.tsc_to_system_mul)) >> 32;
        self.system_time.wrapping_add(scaled as u64)
    }

    /// TSC ticks per second, as Xen's scale factor says.
    pub fn tsc_hz(&self) -> u64 {
        // ns per tick = mul / 2^32 * 2^shift.
        let mul = u128::from(self.tsc_to_system_mul.max(1));
        let hz = (1_000_000_000u128 << 32) / mul;
        let hz = if self.tsc_shift >= 0 {
            hz >> self.tsc_shift
        } else {
            hz << -self.tsc_shift
        };
        hz as u64
    }
}

/// Xen system time now, in nanoseconds (`None` before `shared_info`).
pub fn now_nanos() -> Option<u64> {
    let info = TimeInfo::from_words(events::time_words()?);
    Some(info.nanos_at(cpu::rdtsc()))
}

/// The current time info.
pub fn info() -> Option<TimeInfo> {
    events::time_words().map(TimeInfo::from_words)
}
