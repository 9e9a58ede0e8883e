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

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
        self.system_time
            .wrapping_add(self.scale(tsc.saturating_sub(self.tsc_timestamp)))
    }

    /// `ticks` TSC ticks in nanoseconds, at the record's scale.
    pub fn scale(&self, ticks: u64) -> u64 {
        let mut delta = ticks;
        if self.tsc_shift >= 0 {
            delta <<= self.tsc_shift;
        } else {
            delta >>= -self.tsc_shift;
        }
        ((u128::from(delta) * u128::from(self.tsc_to_system_mul)) >> 32) as u64
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

/// The guest's clock: the TSC at Xen's scale from a fixed origin (the first
/// reading's system time and TSC), not each new record's extrapolation.
///
/// Under QEMU's TCG the physical CPUs' TSCs are out of step, so a domain
/// reads a TSC some way off what Xen stamped its records with on another
/// CPU: behind the stamp (a record's extrapolation then stood still until
/// the next record: xen-test's guest reported a 4 MiB transfer done "in 0
/// ms" and a ping answered "in 0 us") or ahead of it, and successive
/// records, each off by its own amount, made the clock step back by up to
/// 36 ms. With `tsc_mode = "native"` on one vCPU that does not migrate,
/// the TSC itself is steady, and Xen's scale converts it: so the clock
/// counts TSC ticks from its origin. (Linux's `pvclock` follows each
/// record, as a guest must that can migrate or whose TSC can change rate.)
pub struct TscOrigin {
    set: AtomicBool,
    tsc: AtomicU64,
    nanos: AtomicU64,
}

impl TscOrigin {
    pub const fn new() -> TscOrigin {
        TscOrigin {
            set: AtomicBool::new(false),
            tsc: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    /// System time at `tsc`: the origin's plus the ticks since it, at the
    /// scale `info` gives. The first call sets the origin from `info`.
    pub fn nanos(&self, info: &TimeInfo, tsc: u64) -> u64 {
        if !self.set.load(Ordering::Acquire) {
            self.tsc.store(tsc, Ordering::Relaxed);
            self.nanos.store(info.nanos_at(tsc), Ordering::Relaxed);
            self.set.store(true, Ordering::Release);
        }
        let origin = self.tsc.load(Ordering::Relaxed);
        self.nanos
            .load(Ordering::Relaxed)
            .wrapping_add(info.scale(tsc.saturating_sub(origin)))
    }
}

impl Default for TscOrigin {
    fn default() -> Self {
        TscOrigin::new()
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

    /// The clock counts TSC ticks from its origin at Xen's scale, whatever
    /// later records say: a TSC behind a record's stamp still moves it, and
    /// a record stamped off by some amount does not make it jump.
    #[test]
    fn the_clock_counts_tsc_ticks_from_its_origin() {
        let hz = 2_600_000_000u64;
        let (mul, shift) = scale_for(hz);
        let t = TimeInfo {
            tsc_timestamp: 10 * hz,
            system_time: 5_000_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
        };
        let o = TscOrigin::new();
        // The vCPU's TSC runs a second behind the stamp: the origin is the
        // stamp's time (the reading is clamped there).
        assert_eq!(o.nanos(&t, 9 * hz), 5_000_000_000);
        let later = o.nanos(&t, 9 * hz + hz / 1000);
        assert!(
            (later - 5_000_000_000).abs_diff(1_000_000) < 1_000,
            "a millisecond of ticks is a millisecond: {later}"
        );
        // Record by record, the same TSC would have stood still.
        assert_eq!(t.nanos_at(9 * hz + hz / 1000), 5_000_000_000);
        // A new record stamped 36 ms off: no step, ticks still count.
        let t2 = TimeInfo {
            tsc_timestamp: 11 * hz,
            system_time: 6_036_000_000,
            ..t
        };
        let next = o.nanos(&t2, 10 * hz);
        assert!(
            next.abs_diff(6_000_000_000) < 1_000,
            "one second after the origin: {next}"
        );
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
