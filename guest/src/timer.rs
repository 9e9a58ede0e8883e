//! Time: a monotonic microsecond clock and one-shot deadlines.
//!
//! - `now_micros` reads the TSC (constant-rate on every CPU and
//!   hypervisor this runs on) scaled by its calibrated frequency; 0 is the
//!   moment of calibration, early in boot.
//! - Deadlines use the local APIC timer in one-shot mode (divide by 16),
//!   also calibrated. One counter cannot be both the clock and the alarm,
//!   hence two.
//! - Both are calibrated against the PIT (channel 2, 20 ms). Where there is
//!   no PIT (Xen PVH), the TSC frequency comes from Xen's CPUID time leaf
//!   (or CPUID 0x15/0x16), and the APIC timer is measured against the TSC.
//! - `wait_for_interrupt` halts until an interrupt or the deadline,
//!   without the lost-wakeup race: see its documentation.
//!
//! The arithmetic is portable and tested on the host.

use core::fmt;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    Pit,
    XenCpuid,
    Cpuid15,
    Cpuid16,
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClockSource::Pit => "PIT",
            ClockSource::XenCpuid => "Xen CPUID leaf",
            ClockSource::Cpuid15 => "CPUID 0x15",
            ClockSource::Cpuid16 => "CPUID 0x16",
        })
    }
}

/// The calibrated frequencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    pub tsc_hz: u64,
    /// The APIC timer's count rate (after its divider).
    pub lapic_hz: u64,
    pub source: ClockSource,
}

/// Frequencies outside these are a failed calibration.
pub const TSC_HZ_RANGE: core::ops::RangeInclusive<u64> = 10_000_000..=100_000_000_000;
pub const LAPIC_HZ_RANGE: core::ops::RangeInclusive<u64> = 10_000..=10_000_000_000;

/// Why there is no clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockError {
    /// No PIT and no CPUID frequency leaf.
    NoReference,
    Implausible {
        tsc_hz: u64,
        lapic_hz: u64,
    },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::NoReference => {
                f.write_str("cannot calibrate the clock: no PIT and no CPUID frequency leaf")
            }
            ClockError::Implausible { tsc_hz, lapic_hz } => write!(
                f,
                "implausible calibration: TSC {tsc_hz} Hz, APIC timer {lapic_hz} Hz"
            ),
        }
    }
}

impl core::error::Error for ClockError {}

/// The frequency of a counter that advanced `delta` while a reference at
/// `ref_hz` advanced `ref_delta`.
pub fn rate(delta: u64, ref_delta: u64, ref_hz: u64) -> u64 {
    if ref_delta == 0 {
        return 0;
    }
    (u128::from(delta) * u128::from(ref_hz) / u128::from(ref_delta)) as u64
}

/// `ticks` of a counter at `hz`, in microseconds (rounded down).
pub fn ticks_to_micros(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000 / u128::from(hz)).min(u128::from(u64::MAX)) as u64
}

/// `micros` in ticks of a counter at `hz` (rounded up, saturating).
pub fn micros_to_ticks(micros: u64, hz: u64) -> u64 {
    (u128::from(micros) * u128::from(hz))
        .div_ceil(1_000_000)
        .min(u128::from(u64::MAX)) as u64
}

impl Calibration {
    /// Checks the frequencies are plausible.
    pub fn check(self) -> Result<Calibration, ClockError> {
        if TSC_HZ_RANGE.contains(&self.tsc_hz) && LAPIC_HZ_RANGE.contains(&self.lapic_hz) {
            Ok(self)
        } else {
            Err(ClockError::Implausible {
                tsc_hz: self.tsc_hz,
                lapic_hz: self.lapic_hz,
            })
        }
    }

    /// APIC timer ticks for a one-shot `micros` from now, clamped to what
    /// the 32-bit counter holds (a longer wait wakes early; callers loop).
    pub fn oneshot_ticks(&self, micros: u64) -> u32 {
        micros_to_ticks(micros, self.lapic_hz).clamp(1, u64::from(u32::MAX)) as u32
    }
}

#[cfg(target_os = "none")]
pub use platform::{calibration, init, now_micros, on_pv_clock, use_pv_clock, wait_for_interrupt};

#[cfg(target_os = "none")]
mod platform {
    use spin::Once;

    use super::{rate, ticks_to_micros, Calibration, ClockError, ClockSource};
    use crate::arch::{cpu, idt, lapic, pit};

    struct Clock {
        cal: Calibration,
        tsc0: u64,
    }

    static CLOCK: Once<Clock> = Once::new();

    /// Under Xen: the PV clock (nanoseconds of system time) and its value
    /// when it was installed.
    struct PvClock {
        read_ns: fn() -> Option<u64>,
        ns0: u64,
    }

    static PV_CLOCK: Once<PvClock> = Once::new();

    /// Makes [`now_micros`] count from the Xen PV clock from here on
    /// (Xen's system time, extrapolated with Xen's own TSC scale).
    pub fn use_pv_clock(read_ns: fn() -> Option<u64>) -> bool {
        let Some(ns0) = read_ns() else {
            return false;
        };
        PV_CLOCK.call_once(|| PvClock { read_ns, ns0 });
        true
    }

    /// Whether [`now_micros`] runs on the Xen PV clock.
    pub fn on_pv_clock() -> bool {
        PV_CLOCK.get().is_some()
    }

    /// PIT ticks in the calibration window (20 ms).
    const PIT_WINDOW: u16 = 23_864;
    /// Polls of the PIT before giving up (far more than 20 ms' worth).
    const PIT_MAX_SPINS: u64 = 50_000_000;

    /// Calibrates the TSC and the APIC timer. Needs the local APIC; call
    /// with interrupts off.
    pub fn init() -> Result<Calibration, ClockError> {
        // Xen PVH has no PIT: go straight to Xen's CPUID leaf there.
        let pit = if cpu::xen_cpuid_base().is_some() {
            None
        } else {
            calibrate_pit()
        };
        let cal = match pit {
            Some(cal) => cal,
            None => calibrate_cpuid()?,
        }
        .check()?;
        CLOCK.call_once(|| Clock {
            cal,
            tsc0: cpu::rdtsc(),
        });
        Ok(cal)
    }

    fn calibrate_pit() -> Option<Calibration> {
        lapic::start_free_running();
        let ((t0, l0), (t1, l1)) = pit::measure(PIT_WINDOW, PIT_MAX_SPINS, || {
            (cpu::rdtsc(), lapic::current_count())
        })
        .ok()?;
        lapic::disarm();
        let window = u64::from(PIT_WINDOW);
        Some(Calibration {
            tsc_hz: rate(t1.wrapping_sub(t0), window, pit::PIT_HZ),
            lapic_hz: rate(u64::from(l0.wrapping_sub(l1)), window, pit::PIT_HZ),
            source: ClockSource::Pit,
        })
    }

    fn calibrate_cpuid() -> Result<Calibration, ClockError> {
        let (tsc_hz, source) = tsc_hz_from_cpuid().ok_or(ClockError::NoReference)?;
        // The APIC timer against the TSC, for 10 ms.
        lapic::start_free_running();
        let window = tsc_hz / 100;
        let l0 = lapic::current_count();
        let t0 = cpu::rdtsc();
        while cpu::rdtsc().wrapping_sub(t0) < window {
            cpu::relax();
        }
        let l1 = lapic::current_count();
        let t1 = cpu::rdtsc();
        lapic::disarm();
        Ok(Calibration {
            tsc_hz,
            lapic_hz: rate(u64::from(l0.wrapping_sub(l1)), t1.wrapping_sub(t0), tsc_hz),
            source,
        })
    }

    fn tsc_hz_from_cpuid() -> Option<(u64, ClockSource)> {
        if let Some(base) = cpu::xen_cpuid_base() {
            if cpu::cpuid(base, 0).eax >= base + 3 {
                // Xen leaf 4 (base + 3), sub-leaf 0: ECX = guest TSC kHz.
                let khz = cpu::cpuid(base + 3, 0).ecx;
                if khz != 0 {
                    return Some((u64::from(khz) * 1000, ClockSource::XenCpuid));
                }
            }
        }
        let max = cpu::cpuid(0, 0).eax;
        if max >= 0x15 {
            let r = cpu::cpuid(0x15, 0);
            if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
                let hz = u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax);
                return Some((hz, ClockSource::Cpuid15));
            }
        }
        if max >= 0x16 {
            let mhz = cpu::cpuid(0x16, 0).eax & 0xffff;
            if mhz != 0 {
                return Some((u64::from(mhz) * 1_000_000, ClockSource::Cpuid16));
            }
        }
        None
    }

    /// The calibration, once [`init`] has run.
    pub fn calibration() -> Option<Calibration> {
        CLOCK.get().map(|c| c.cal)
    }

    /// Microseconds since the clock was calibrated (early in boot);
    /// monotonic. 0 before that.
    pub fn now_micros() -> u64 {
        if let Some(pv) = PV_CLOCK.get() {
            if let Some(ns) = (pv.read_ns)() {
                return ns.saturating_sub(pv.ns0) / 1000;
            }
        }
        match CLOCK.get() {
            Some(c) => ticks_to_micros(cpu::rdtsc().saturating_sub(c.tsc0), c.cal.tsc_hz),
            None => 0,
        }
    }

    /// Halts until an interrupt arrives or `deadline_micros` (on the
    /// [`now_micros`] clock) passes.
    ///
    /// Returns at once if any device or timer interrupt has arrived since
    /// the previous call returned, so a caller that polls its devices and
    /// then calls this never sleeps through an interrupt that came while
    /// it was polling: the check and the `sti; hlt` happen with interrupts
    /// off, and `sti` takes effect only once `hlt` has begun. It may also
    /// return early (a spurious interrupt, a deadline beyond the APIC
    /// timer's range): callers loop. Interrupts are enabled on return if
    /// they were on entry.
    pub fn wait_for_interrupt(deadline_micros: Option<u64>) {
        let was_enabled = cpu::interrupts_enabled();
        cpu::disable_interrupts();
        if !idt::take_wake() {
            match sleep_for(deadline_micros) {
                Sleep::No => {}
                Sleep::Untimed => {
                    cpu::enable_interrupts_and_halt();
                    cpu::disable_interrupts();
                    idt::take_wake();
                }
                Sleep::Timed(ticks) => {
                    lapic::arm_oneshot(ticks);
                    cpu::enable_interrupts_and_halt();
                    cpu::disable_interrupts();
                    lapic::disarm();
                    idt::take_wake();
                }
            }
        }
        if was_enabled {
            cpu::enable_interrupts();
        }
    }

    enum Sleep {
        /// The deadline has passed (or there is no clock to time it).
        No,
        Untimed,
        /// APIC timer ticks until the deadline.
        Timed(u32),
    }

    fn sleep_for(deadline_micros: Option<u64>) -> Sleep {
        let Some(deadline) = deadline_micros else {
            return Sleep::Untimed;
        };
        let Some(cal) = calibration() else {
            return Sleep::No;
        };
        let now = now_micros();
        if deadline <= now {
            Sleep::No
        } else {
            Sleep::Timed(cal.oneshot_ticks(deadline - now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_a_pit_window() {
        // 20 ms of PIT: 23864 ticks. A 2.5 GHz TSC counts 50e6 in it.
        let window = 23_864;
        let tsc = 2_500_000_000u64 * window / 1_193_182;
        assert!((rate(tsc, window, 1_193_182) as i64 - 2_500_000_000).abs() < 200);
        // QEMU's APIC timer: 1 GHz / 16.
        let lapic = 62_500_000u64 * window / 1_193_182;
        assert!((rate(lapic, window, 1_193_182) as i64 - 62_500_000).abs() < 100);
        assert_eq!(rate(5, 0, 1), 0);
    }

    #[test]
    fn conversions() {
        assert_eq!(ticks_to_micros(3_000_000_000, 3_000_000_000), 1_000_000);
        assert_eq!(ticks_to_micros(2_999, 3_000_000_000), 0);
        assert_eq!(ticks_to_micros(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_micros(1, 0), 0);
        assert_eq!(micros_to_ticks(1, 62_500_000), 63);
        assert_eq!(micros_to_ticks(1_000_000, 62_500_000), 62_500_000);
        assert_eq!(micros_to_ticks(u64::MAX, u64::MAX), u64::MAX);
        // A large TSC value does not overflow.
        let big = 1u64 << 62;
        assert_eq!(ticks_to_micros(big, 4_000_000_000), big / 4000);
    }

    #[test]
    fn oneshot_is_clamped() {
        let cal = Calibration {
            tsc_hz: 3_000_000_000,
            lapic_hz: 62_500_000,
            source: ClockSource::Pit,
        };
        assert_eq!(cal.oneshot_ticks(0), 1);
        assert_eq!(cal.oneshot_ticks(1000), 62_500);
        assert_eq!(cal.oneshot_ticks(100_000_000), u32::MAX);
    }

    #[test]
    fn plausibility() {
        let ok = Calibration {
            tsc_hz: 3_000_000_000,
            lapic_hz: 62_500_000,
            source: ClockSource::Pit,
        };
        assert_eq!(ok.check(), Ok(ok));
        let bad = Calibration { tsc_hz: 5, ..ok };
        assert_eq!(
            bad.check(),
            Err(ClockError::Implausible {
                tsc_hz: 5,
                lapic_hz: 62_500_000
            })
        );
    }
}
