//! Run plans: a warm-up, then the median of several timed runs, ours and the
//! peer's interleaved so that noise on the shared machine hits both alike.

use ibguest_testkit::BoxError;

/// How much work each benchmark does and how often it is repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Timed runs per side of a system benchmark (the median is
    /// reported).
    pub runs: usize,
    /// Timed runs per side of an in-process benchmark: more than the
    /// system's, as they are short and one pair's ratio moves by several
    /// percent on this machine, up to ±10 % for UDP (BENCHMARKS.md,
    /// 2026-12-04).
    pub in_process_runs: usize,
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
        in_process_runs: 5,
        ring_descriptors: 20_000_000,
        udp_datagrams: 1_000_000,
        tcp_bytes: 256 * MIB,
        rr_exchanges: 20_000,
    };

    /// `--quick`: a tenth of the work, one timed run.
    pub const QUICK: Plan = Plan {
        runs: 1,
        in_process_runs: 1,
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

/// What [`compare`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Compared {
    /// The median of our runs.
    pub ours: f64,
    /// The median of the peer's runs.
    pub peer: f64,
    /// Ours over the peer's for each alternating pair, in run order: how
    /// far the machine's noise moved the ratio.
    pub pair_ratios: Vec<f64>,
}

impl Compared {
    /// The pair ratios as `0.93, 0.95, ...`.
    pub fn pair_ratios_text(&self) -> String {
        self.pair_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `ours` and `peer` once each as a warm-up (with `warm` as argument),
/// then `runs` times each, alternating, with `full`. Each closure returns a
/// rate (higher is better). Every timed value goes to stderr under `label`.
/// Returns the two medians and the ratio of each pair.
pub fn compare<A: Copy>(
    label: &str,
    runs: usize,
    warm: A,
    full: A,
    mut ours: impl FnMut(A) -> Result<f64, BoxError>,
    mut peer: impl FnMut(A) -> Result<f64, BoxError>,
) -> Result<Compared, BoxError> {
    ours(warm)?;
    peer(warm)?;
    let mut a = Vec::with_capacity(runs);
    let mut b = Vec::with_capacity(runs);
    for _ in 0..runs {
        a.push(ours(full)?);
        b.push(peer(full)?);
    }
    eprintln!("           {label}: ours {}; peer {}", list(&a), list(&b));
    let pair_ratios = a.iter().zip(&b).map(|(o, p)| o / p).collect();
    Ok(Compared {
        ours: median(&mut a),
        peer: median(&mut b),
        pair_ratios,
    })
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
    fn compare_alternates_and_keeps_each_pair() -> Result<(), BoxError> {
        let order = std::cell::RefCell::new(Vec::new());
        let mut ours_runs = [2.0, 4.0, 3.0].into_iter();
        let mut peer_runs = [4.0, 4.0, 4.0].into_iter();
        let c = compare(
            "test",
            2,
            0u8,
            1u8,
            |a| {
                order.borrow_mut().push(('o', a));
                ours_runs.next().ok_or_else(|| "too many runs".into())
            },
            |a| {
                order.borrow_mut().push(('p', a));
                peer_runs.next().ok_or_else(|| "too many runs".into())
            },
        )?;
        // The warm-up (argument 0) is not counted; then ours, peer, ours, peer.
        assert_eq!(
            order.into_inner(),
            [('o', 0), ('p', 0), ('o', 1), ('p', 1), ('o', 1), ('p', 1)]
        );
        assert_eq!(c.ours, 3.5);
        assert_eq!(c.peer, 4.0);
        assert_eq!(c.pair_ratios, [1.0, 0.75]);
        assert_eq!(c.pair_ratios_text(), "1.00, 0.75");
        Ok(())
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }
}
