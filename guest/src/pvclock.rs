//! The Xen PV clock's arithmetic (`struct vcpu_time_info` in
//! `xen.h`): system time in nanoseconds, extrapolated from the TSC with
//! Xen's scale factor. Portable, so it is tested on the host; the reading
//! of `shared_info` is in `xen::clock`.
//!
//! Two properties of the PV clock that a reader must handle itself (Linux's
//! `pvclock_clocksource_read` does both):
//! - the TSC may be read *behind* `tsc_timestamp` (Xen stamped the record
//!   on another physical CPU, or the record changed between the reads):
//!   the difference must not be taken as an unsigned 2^64-ish tick count;
//! - without `PVCLOCK_TSC_STABLE_BIT` (QEMU's TCG CPU has no invariant TSC)
//!   successive records are not mutually monotonic: a new record's
//!   `system_time` can lie before what the old one extrapolated to, so the
//!   clock can step back a little. [`Monotonic`] holds it.
//!
//! Both happened under Xen in QEMU (xentest): one clock read far in the
//! future (or a small step back, which `now - start` on `u64` wraps into the
//! same thing) made a 60 s wait for the back end end at once, and the
//! guest then freed its still-granted channel pages.

use core::sync::atomic::{AtomicU64, Ordering};

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

    /// System time (ns) at TSC value `tsc`. A `tsc` behind the record's
    /// stamp (see the module's documentation) counts as the stamp itself.
    pub fn nanos_at(&self, tsc: u64) -> u64 {
        self.nanos_after_stamp(tsc.saturating_sub(self.tsc_timestamp))
    }

    /// System time (ns) `ticks` TSC ticks after the record's stamp.
    pub fn nanos_after_stamp(&self, ticks: u64) -> u64 {
        let mut delta = ticks;
        if self.tsc_shift >= 0 {
            delta <<= self.tsc_shift;
        } else {
            delta >>= -self.tsc_shift;
        }
        let scaled = (u128::from(delta) * u128::from(self.tsc_to_system_mul)) >> 32;
        self.system_time.wrapping_add(scaled as u64)
    }

    /// Whether `tsc` lies before the record's stamp.
    pub fn tsc_behind(&self, tsc: u64) -> bool {
        tsc < self.tsc_timestamp
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

/// Keeps the clock moving when this vCPU's TSC runs behind the record's
/// stamp for a while, not just for one read: under QEMU's TCG the physical
/// CPUs' TSCs are out of step, so a domain on one CPU can read a TSC a
/// fixed amount behind what Xen stamped on another. [`TimeInfo::nanos_at`]
/// would then give the stamp's time on every read until Xen writes a new
/// record (it does at the next wake-up from HLT), and a busy guest's clock
/// stood still: xen-test's guest reported a 4 MiB transfer done "in 0 ms"
/// and a ping answered "in 0 us". Here the first TSC read behind a record
/// anchors it, and later reads behind the same record advance from there
/// at Xen's scale. The time between the stamp and that first read is lost
/// (the next record makes it up: a step forward).
pub struct BehindAnchor {
    /// The `tsc_timestamp` of the record anchored.
    stamp: AtomicU64,
    /// The first TSC read behind it.
    tsc: AtomicU64,
}

impl BehindAnchor {
    pub const fn new() -> BehindAnchor {
        BehindAnchor {
            stamp: AtomicU64::new(u64::MAX),
            tsc: AtomicU64::new(0),
        }
    }

    /// System time at `tsc` from `info`: Xen's extrapolation when `tsc` is
    /// at or after the stamp, else from the record's anchor.
    pub fn nanos(&self, info: &TimeInfo, tsc: u64) -> u64 {
        if !info.tsc_behind(tsc) {
            return info.nanos_at(tsc);
        }
        if self.stamp.load(Ordering::Acquire) != info.tsc_timestamp {
            self.tsc.store(tsc, Ordering::Relaxed);
            self.stamp.store(info.tsc_timestamp, Ordering::Release);
        }
        let anchor = self.tsc.load(Ordering::Relaxed).min(tsc);
        info.nanos_after_stamp(tsc - anchor)
    }
}

impl Default for BehindAnchor {
    fn default() -> Self {
        BehindAnchor::new()
    }
}

/// Makes a clock that may step back monotonic: every reading is at least
/// the largest one before it. Counts the steps back (and the TSC reads
/// behind a stamp, which the caller reports) for the logs.
pub struct Monotonic {
    last: AtomicU64,
    backsteps: AtomicU64,
    largest_backstep: AtomicU64,
    tsc_behind: AtomicU64,
}

/// What [`Monotonic`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockAnomalies {
    /// Readings below an earlier one (held at the earlier one).
    pub backsteps: u64,
    /// The largest of them, in the clock's unit.
    pub largest_backstep: u64,
    /// TSC reads behind the record's stamp (clamped to it).
    pub tsc_behind: u64,
}

impl Monotonic {
    pub const fn new() -> Monotonic {
        Monotonic {
            last: AtomicU64::new(0),
            backsteps: AtomicU64::new(0),
            largest_backstep: AtomicU64::new(0),
            tsc_behind: AtomicU64::new(0),
        }
    }

    /// `raw`, or the largest earlier reading if `raw` is below it.
    pub fn observe(&self, raw: u64) -> u64 {
        let prev = self.last.fetch_max(raw, Ordering::AcqRel);
        if raw >= prev {
            return raw;
        }
        self.backsteps.fetch_add(1, Ordering::Relaxed);
        self.largest_backstep
            .fetch_max(prev - raw, Ordering::Relaxed);
        prev
    }

    /// Counts one TSC read behind a record's stamp.
    pub fn note_tsc_behind(&self) {
        self.tsc_behind.fetch_add(1, Ordering::Relaxed);
    }

    pub fn anomalies(&self) -> ClockAnomalies {
        ClockAnomalies {
            backsteps: self.backsteps.load(Ordering::Relaxed),
            largest_backstep: self.largest_backstep.load(Ordering::Relaxed),
            tsc_behind: self.tsc_behind.load(Ordering::Relaxed),
        }
    }
}

impl Default for Monotonic {
    fn default() -> Self {
        Monotonic::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Xen's scale for a TSC of `hz`: mul and shift with
    /// ns = ((ticks << shift) * mul) >> 32, as Xen's `set_time_scale` picks
    /// them (mul in [2^31, 2^32)).
    fn scale_for(hz: u64) -> (u32, i8) {
        let mut shift = 0i8;
        let mut tps = hz;
        let ns = 1_000_000_000u64;
        while tps > ns * 2 {
            tps >>= 1;
            shift -= 1;
        }
        while tps <= ns {
            tps <<= 1;
            shift += 1;
        }
        let mul = ((u128::from(ns) << 32) / u128::from(tps)) as u32;
        (mul, shift)
    }

    #[test]
    fn extrapolates_like_xen() {
        for hz in [
            2_600_000_000u64,
            2_100_000_000,
            1_000_000_000,
            3_999_999_000,
        ] {
            let (mul, shift) = scale_for(hz);
            let t = TimeInfo {
                tsc_timestamp: 1_000_000,
                system_time: 5_000_000_000,
                tsc_to_system_mul: mul,
                tsc_shift: shift,
            };
            // One second of ticks later is one second of system time later.
            let ns = t.nanos_at(1_000_000 + hz) - 5_000_000_000;
            assert!(ns.abs_diff(1_000_000_000) < 1_000, "{hz} Hz: {ns} ns");
            assert!(
                t.tsc_hz().abs_diff(hz) < hz / 1_000_000,
                "{hz}: {}",
                t.tsc_hz()
            );
            assert_eq!(t.nanos_at(1_000_000), 5_000_000_000);
        }
    }

    /// A TSC read one tick behind the stamp (the record was stamped on
    /// another CPU, or replaced between the reads) is the stamp's time, not
    /// 2^64 - 1 ticks later. Before the fix this read gave a time about
    /// 2^63 ns away, which ended a 60 s wait for the back end at once.
    #[test]
    fn a_tsc_behind_the_stamp_is_the_stamp() {
        let (mul, shift) = scale_for(2_600_000_000);
        let t = TimeInfo {
            tsc_timestamp: 1_000_000,
            system_time: 5_000_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
        };
        assert!(t.tsc_behind(999_999));
        assert!(!t.tsc_behind(1_000_000));
        assert_eq!(t.nanos_at(999_999), 5_000_000_000);
        assert_eq!(t.nanos_at(0), 5_000_000_000);
    }

    /// A TSC that stays behind the stamp still moves the clock, at Xen's
    /// scale, from the first read behind that record; a new record starts
    /// again; reads at or after the stamp are Xen's extrapolation.
    #[test]
    fn a_tsc_that_stays_behind_the_stamp_still_moves_the_clock() {
        let hz = 2_600_000_000u64;
        let (mul, shift) = scale_for(hz);
        let t = TimeInfo {
            tsc_timestamp: 10 * hz,
            system_time: 5_000_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
        };
        let a = BehindAnchor::new();
        // The vCPU's TSC runs a second behind the stamp.
        let first = a.nanos(&t, 9 * hz);
        assert_eq!(first, 5_000_000_000, "the first read is the stamp");
        let later = a.nanos(&t, 9 * hz + hz / 1000);
        assert!(
            (later - first).abs_diff(1_000_000) < 1_000,
            "a millisecond of ticks is a millisecond: {}",
            later - first
        );
        // Without the anchor the clock stood still.
        assert_eq!(t.nanos_at(9 * hz + hz / 1000), 5_000_000_000);
        // A new record: anchored again at its first read.
        let t2 = TimeInfo {
            tsc_timestamp: 11 * hz,
            system_time: 6_000_000_000,
            ..t
        };
        assert_eq!(a.nanos(&t2, 10 * hz), 6_000_000_000);
        // At or after the stamp: Xen's own extrapolation.
        assert_eq!(a.nanos(&t2, 11 * hz), 6_000_000_000);
        assert!(a.nanos(&t2, 12 * hz).abs_diff(7_000_000_000) < 1_000);
    }

    #[test]
    fn monotonic_holds_a_step_back_and_counts_it() {
        let m = Monotonic::new();
        assert_eq!(m.observe(100), 100);
        assert_eq!(m.observe(250), 250);
        // Xen's next record lies 30 before the old extrapolation.
        assert_eq!(m.observe(220), 250);
        assert_eq!(m.observe(240), 250);
        assert_eq!(m.observe(260), 260);
        m.note_tsc_behind();
        assert_eq!(
            m.anomalies(),
            ClockAnomalies {
                backsteps: 2,
                largest_backstep: 30,
                tsc_behind: 1
            }
        );
        // So an elapsed time taken across the step never wraps.
        let start = m.observe(300);
        let later = m.observe(290);
        assert_eq!(later - start, 0);
    }

    #[test]
    fn decodes_the_four_words() {
        let w = [6, 123, 456, (0xfau64 << 32 & 0xff_0000_0000) | 0x8000_0000];
        let t = TimeInfo::from_words(w);
        assert_eq!(t.tsc_timestamp, 123);
        assert_eq!(t.system_time, 456);
        assert_eq!(t.tsc_to_system_mul, 0x8000_0000);
        assert_eq!(t.tsc_shift, -6);
    }
}
