//! The Xen PV clock's arithmetic (`struct vcpu_time_info` in
//! `xen.h`): system time in nanoseconds, extrapolated from the TSC with
//! Xen's scale factor. Portable, so it is tested on the host; the reading
//! of `shared_info` is in `xen::clock`.

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
