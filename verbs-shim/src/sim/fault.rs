//! Seeded fault injection: loss, duplication, reordering and corruption.
//!
//! Every packet copy that crosses the fabric while any probability is
//! non-zero draws exactly four numbers from a splitmix64 generator, in the
//! order loss, corruption, duplication, reordering. The outcome therefore
//! depends only on the seed and on the sequence of fabric operations.

use super::error::SimError;

/// Per-packet fault probabilities, each in `0.0..=1.0`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct FaultConfig {
    /// Seeds the generator; [`super::SimFabric::set_faults`] reseeds.
    pub seed: u64,
    /// The packet vanishes on the wire.
    pub loss: f64,
    /// The packet arrives twice.
    pub duplicate: f64,
    /// The packet is held back and arrives after a later one.
    pub reorder: f64,
    /// The packet arrives damaged and fails the receiver's ICRC check.
    pub corrupt: f64,
}

impl FaultConfig {
    /// A perfect fabric.
    pub const NONE: FaultConfig = FaultConfig {
        seed: 0,
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        corrupt: 0.0,
    };

    /// Builds a configuration, refusing probabilities outside `0.0..=1.0`
    /// (and NaN). The error names the offending field.
    pub fn new(
        seed: u64,
        loss: f64,
        duplicate: f64,
        reorder: f64,
        corrupt: f64,
    ) -> Result<FaultConfig, SimError> {
        let config = FaultConfig {
            seed,
            loss,
            duplicate,
            reorder,
            corrupt,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every probability is in `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), SimError> {
        for (field, value) in self.fields() {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimError::InvalidProbability { field, value });
            }
        }
        Ok(())
    }

    /// True when no fault can happen.
    pub fn is_none(&self) -> bool {
        self.fields().iter().all(|&(_, p)| p <= 0.0 || p.is_nan())
    }

    /// The configuration with every probability forced into `0.0..=1.0`
    /// (NaN becomes 0). Used for configurations built field by field.
    pub(super) fn clamped(self) -> FaultConfig {
        let fix = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        FaultConfig {
            seed: self.seed,
            loss: fix(self.loss),
            duplicate: fix(self.duplicate),
            reorder: fix(self.reorder),
            corrupt: fix(self.corrupt),
        }
    }

    fn fields(&self) -> [(&'static str, f64); 4] {
        [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ]
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::NONE
    }
}

/// What the wire does to one packet copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Verdict {
    Lost,
    Corrupt,
    /// Arrives `copies` (1 or 2) times, now or `held` back.
    Deliver {
        copies: u8,
        held: bool,
    },
}

impl Verdict {
    pub(super) const CLEAN: Verdict = Verdict::Deliver {
        copies: 1,
        held: false,
    };
}

/// The fabric's fault generator.
#[derive(Clone, Debug)]
pub(super) struct Faults {
    config: FaultConfig,
    rng: SplitMix64,
}

impl Faults {
    pub(super) fn new(config: FaultConfig) -> Faults {
        let config = config.clamped();
        Faults {
            rng: SplitMix64(config.seed),
            config,
        }
    }

    pub(super) fn config(&self) -> FaultConfig {
        self.config
    }

    /// Decides the fate of one packet copy.
    #[inline]
    pub(super) fn judge(&mut self) -> Verdict {
        if self.config.is_none() {
            return Verdict::CLEAN;
        }
        let c = self.config;
        // Always four draws, so that one fault firing does not shift the
        // sequence seen by the next packet.
        let lost = self.rng.chance(c.loss);
        let corrupt = self.rng.chance(c.corrupt);
        let dup = self.rng.chance(c.duplicate);
        let held = self.rng.chance(c.reorder);
        if lost {
            Verdict::Lost
        } else if corrupt {
            Verdict::Corrupt
        } else {
            Verdict::Deliver {
                copies: if dup { 2 } else { 1 },
                held,
            }
        }
    }
}

/// Sebastiano Vigna's splitmix64: tiny, fast, good enough for fault dice.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)` with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (always for 1.0, never for 0.0).
    fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(FaultConfig::new(1, 0.0, 1.0, 0.5, 0.0).is_ok());
        let err = FaultConfig::new(1, 0.0, 0.0, 1.5, 0.0).unwrap_err();
        assert_eq!(
            err,
            SimError::InvalidProbability {
                field: "reorder",
                value: 1.5
            }
        );
        let err = FaultConfig::new(1, 0.0, 0.0, 0.0, f64::NAN).unwrap_err();
        assert!(matches!(
            err,
            SimError::InvalidProbability {
                field: "corrupt",
                ..
            }
        ));
        assert!(err.to_string().contains("corrupt"));
        let err = FaultConfig::new(1, -0.1, 0.0, 0.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("loss"));
    }

    #[test]
    fn clamps_out_of_range_fields() {
        let c = FaultConfig {
            loss: 2.0,
            corrupt: f64::NAN,
            duplicate: -1.0,
            ..FaultConfig::NONE
        }
        .clamped();
        assert_eq!((c.loss, c.corrupt, c.duplicate), (1.0, 0.0, 0.0));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn none_is_always_clean() {
        let mut f = Faults::new(FaultConfig::NONE);
        assert!((0..1000).all(|_| f.judge() == Verdict::CLEAN));
    }

    #[test]
    fn certain_faults_always_fire() {
        let all = |loss, corrupt, duplicate, reorder| {
            Faults::new(FaultConfig {
                seed: 7,
                loss,
                corrupt,
                duplicate,
                reorder,
            })
        };
        let mut f = all(1.0, 0.0, 0.0, 0.0);
        assert!((0..100).all(|_| f.judge() == Verdict::Lost));
        let mut f = all(0.0, 1.0, 0.0, 0.0);
        assert!((0..100).all(|_| f.judge() == Verdict::Corrupt));
        let mut f = all(0.0, 0.0, 1.0, 1.0);
        let both = Verdict::Deliver {
            copies: 2,
            held: true,
        };
        assert!((0..100).all(|_| f.judge() == both));
    }

    #[test]
    fn same_seed_same_dice() {
        let config = FaultConfig::new(42, 0.1, 0.1, 0.1, 0.1).unwrap();
        let mut a = Faults::new(config);
        let mut b = Faults::new(config);
        let xs: Vec<_> = (0..500).map(|_| a.judge()).collect();
        let ys: Vec<_> = (0..500).map(|_| b.judge()).collect();
        assert_eq!(xs, ys);
        let mut c = Faults::new(FaultConfig { seed: 43, ..config });
        let zs: Vec<_> = (0..500).map(|_| c.judge()).collect();
        assert_ne!(xs, zs);
    }

    #[test]
    fn uniform_enough() {
        let mut rng = SplitMix64(5);
        let hits = (0..100_000).filter(|_| rng.chance(0.25)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
