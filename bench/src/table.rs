//! The Markdown results table.

/// One line of the table: our figure against the peer's, same unit.
#[derive(Clone, Debug)]
pub struct Row {
    pub benchmark: String,
    pub ours: f64,
    pub peer: f64,
    pub unit: &'static str,
}

impl Row {
    /// `ours / peer`, or NaN if the peer measured nothing.
    pub fn ratio(&self) -> f64 {
        if self.peer > 0.0 {
            self.ours / self.peer
        } else {
            f64::NAN
        }
    }
}

/// Formats a figure with three significant digits (at least no decimals for
/// large values).
fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders the rows as a Markdown table. A peer that was not measured
/// (NaN) shows as "skipped".
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| benchmark | ours | peer | ratio ours/peer | unit |\n|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (peer, ratio) = if r.peer.is_nan() {
            ("skipped".to_owned(), "–".to_owned())
        } else {
            (figure(r.peer), format!("{:.3}", r.ratio()))
        };
        out.push_str(&format!(
            "| {} | {} | {peer} | {ratio} | {} |\n",
            r.benchmark,
            figure(r.ours),
            r.unit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_header_and_ratio() {
        let rows = [Row {
            benchmark: "x".into(),
            ours: 50.0,
            peer: 100.0,
            unit: "MB/s",
        }];
        let t = render(&rows);
        assert!(t.starts_with("| benchmark | ours | peer | ratio ours/peer | unit |\n"));
        assert!(t.contains("| x | 50.0 | 100 | 0.500 | MB/s |"), "{t}");
    }

    #[test]
    fn a_ratio_just_under_a_goal_is_not_rounded_up_to_it() {
        // In-process TCP on 2026-12-04 02:24: printed as 0.95 with two
        // decimals, against a goal of 0.95.
        let rows = [Row {
            benchmark: "tcp".into(),
            ours: 613.2,
            peer: 647.9,
            unit: "MB/s",
        }];
        assert!(render(&rows).contains("| 0.946 |"));
    }

    #[test]
    fn unmeasured_peer_is_skipped() {
        let rows = [Row {
            benchmark: "y".into(),
            ours: 0.123,
            peer: f64::NAN,
            unit: "µs",
        }];
        assert!(render(&rows).contains("| y | 0.123 | skipped | – | µs |"));
    }

    #[test]
    fn ratio_of_nothing_is_nan() {
        let r = Row {
            benchmark: String::new(),
            ours: 1.0,
            peer: 0.0,
            unit: "",
        };
        assert!(r.ratio().is_nan());
    }
}
