//! Run plans: a warm-up, then the median of several timed runs, ours and the
//! peer's interleaved so that noise on the shared machine hits both alike.

use ibguest_testkit::BoxError;

/// How much work each benchmark does and how often it is repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Timed runs per side (the median is reported).
    pub runs: usize,
    /// Ring descriptors per run.
    pub ring_descriptors: u64,
    /// UDP datagrams per run.
    pub udp_datagrams: usize,
    /// TCP bytes per run (in-process and system).
    pub tcp_bytes: usize,
    /// Timed UDP request/response exchanges per system run.
    pub rr_exchanges: u32,
}

const MIB: usize = 1024 * 1024;

impl Plan {
    /// The full run (`make bench`).
    pub const FULL: Plan = Plan {
        runs: 3,
        ring_descriptors: 20_000_000,
        udp_datagrams: 1_000_000,
        tcp_bytes: 256 * MIB,
        rr_exchanges: 20_000,
    };

    /// `--quick`: a tenth of the work, one timed run.
    pub const QUICK: Plan = Plan {
        runs: 1,
        ring_descriptors: 2_000_000,
        udp_datagrams: 100_000,
        tcp_bytes: 32 * MIB,
        rr_exchanges: 2_000,
    };
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of no values");
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs `ours` and `peer` once each as a warm-up (with `warm` as argument),
/// then `runs` times each, alternating, with `full`. Each closure returns a
/// rate (higher is better). Every timed value goes to stderr under `label`.
/// Returns the two medians.
pub fn compare<A: Copy>(
    label: &str,
    runs: usize,
    warm: A,
    full: A,
    mut ours: impl FnMut(A) -> Result<f64, BoxError>,
    mut peer: impl FnMut(A) -> Result<f64, BoxError>,
) -> Result<(f64, f64), BoxError> {
    ours(warm)?;
    peer(warm)?;
    let mut a = Vec::with_capacity(runs);
    let mut b = Vec::with_capacity(runs);
    for _ in 0..runs {
        a.push(ours(full)?);
        b.push(peer(full)?);
    }
    eprintln!("           {label}: ours {}; peer {}", list(&a), list(&b));
    Ok((median(&mut a), median(&mut b)))
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }
}
