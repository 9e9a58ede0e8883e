//! The Markdown results table, with each row's goal (issues 10 and 12)
//! and whether this run met it.

/// One line of the table: our figure against the peer's, same unit.
#[derive(Clone, Debug)]
pub struct Row {
    /// A short name for the goals line ("TCP (matched peer)").
    pub name: String,
    pub benchmark: String,
    pub ours: f64,
    pub peer: f64,
    pub unit: &'static str,
    /// What the row has to show, if the project set it a goal.
    pub goal: Option<Goal>,
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

    /// Whether the row met its goal: `None` without a goal, or if what the
    /// goal is about was not measured.
    pub fn met(&self) -> Option<bool> {
        self.goal.and_then(|g| g.met(self))
    }
}

/// A row's goal: a bound on the ratio ours/peer, or on our own figure.
/// Checked against the exact figures, never the rounded ones printed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// ours/peer at least this (rates: higher is better).
    RatioAtLeast(f64),
    /// ours/peer at most this (latencies: lower is better).
    RatioAtMost(f64),
    /// Our own figure at most this, whatever the peer's (events per
    /// packet).
    OursAtMost(f64),
}

impl Goal {
    /// `None` if the figure the goal bounds is not a number (a skipped
    /// peer).
    pub fn met(self, row: &Row) -> Option<bool> {
        let (value, bound) = match self {
            Goal::RatioAtLeast(b) | Goal::RatioAtMost(b) => (row.ratio(), b),
            Goal::OursAtMost(b) => (row.ours, b),
        };
        if value.is_nan() {
            return None;
        }
        Some(match self {
            Goal::RatioAtLeast(_) => value >= bound,
            Goal::RatioAtMost(_) | Goal::OursAtMost(_) => value <= bound,
        })
    }

    fn label(self) -> String {
        match self {
            Goal::RatioAtLeast(b) => format!("ratio ≥ {b:?}"),
            Goal::RatioAtMost(b) => format!("ratio ≤ {b:?}"),
            Goal::OursAtMost(b) => format!("ours ≤ {b:?}"),
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
/// (NaN) shows as "skipped"; a row without a goal shows "–" for it.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| benchmark | ours | peer | ratio ours/peer | unit | goal | met |\n|---|---:|---:|---:|---|---|---|\n",
    );
    for r in rows {
        let (peer, ratio) = if r.peer.is_nan() {
            ("skipped".to_owned(), "–".to_owned())
        } else {
            (figure(r.peer), format!("{:.3}", r.ratio()))
        };
        let goal = r.goal.map_or_else(|| "–".to_owned(), Goal::label);
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None if r.goal.is_some() => "not measured",
            None => "–",
        };
        out.push_str(&format!(
            "| {} | {} | {peer} | {ratio} | {} | {goal} | {met} |\n",
            r.benchmark,
            figure(r.ours),
            r.unit
        ));
    }
    out
}

/// One line on the goals: how many of the rows that have one met it, and
/// which did not (by name, with the figure and the goal). `None` if no row
/// has a goal.
pub fn goals_summary(rows: &[Row]) -> Option<String> {
    let with_goal: Vec<&Row> = rows.iter().filter(|r| r.goal.is_some()).collect();
    if with_goal.is_empty() {
        return None;
    }
    let met = with_goal.iter().filter(|r| r.met() == Some(true)).count();
    let short: Vec<String> = with_goal
        .iter()
        .filter(|r| r.met() != Some(true))
        .filter_map(|r| {
            let goal = r.goal?;
            let value = match goal {
                Goal::OursAtMost(_) => r.ours,
                _ => r.ratio(),
            };
            let figure = if value.is_nan() {
                "not measured".to_owned()
            } else {
                format!("{value:.3}")
            };
            Some(format!("{} ({figure}; goal {})", r.name, goal.label()))
        })
        .collect();
    let mut line = format!("goals: {met} of {} met", with_goal.len());
    if !short.is_empty() {
        line.push_str(&format!("; not met: {}", short.join(", ")));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_header_and_ratio() {
        let rows = [Row {
            name: "x".into(),
            benchmark: "x".into(),
            ours: 50.0,
            peer: 100.0,
            unit: "MB/s",
            goal: None,
        }];
        let t = render(&rows);
        assert!(
            t.starts_with("| benchmark | ours | peer | ratio ours/peer | unit | goal | met |\n")
        );
        assert!(
            t.contains("| x | 50.0 | 100 | 0.500 | MB/s | – | – |"),
            "{t}"
        );
    }

    #[test]
    fn a_ratio_just_under_a_goal_is_not_rounded_up_to_it() {
        // In-process TCP on 2026-12-04 02:24: printed as 0.95 with two
        // decimals, against a goal of 0.95.
        let rows = [Row {
            name: "tcp".into(),
            benchmark: "tcp".into(),
            ours: 613.2,
            peer: 647.9,
            unit: "MB/s",
            goal: Some(Goal::RatioAtLeast(0.95)),
        }];
        let t = render(&rows);
        assert!(
            t.contains("| 0.946 | MB/s | ratio ≥ 0.95 | **no** |"),
            "{t}"
        );
    }

    #[test]
    fn unmeasured_peer_is_skipped() {
        let rows = [Row {
            name: "y".into(),
            benchmark: "y".into(),
            ours: 0.123,
            peer: f64::NAN,
            unit: "µs",
            goal: None,
        }];
        assert!(render(&rows).contains("| y | 0.123 | skipped | – | µs | – | – |"));
    }

    #[test]
    fn ratio_of_nothing_is_nan() {
        let r = Row {
            name: String::new(),
            benchmark: String::new(),
            ours: 1.0,
            peer: 0.0,
            unit: "",
            goal: Some(Goal::RatioAtLeast(1.0)),
        };
        assert!(r.ratio().is_nan());
        assert_eq!(r.met(), None);
    }

    fn row(name: &str, ours: f64, peer: f64, goal: Option<Goal>) -> Row {
        Row {
            name: name.into(),
            benchmark: format!("{name}: what was measured"),
            ours,
            peer,
            unit: "x",
            goal,
        }
    }

    #[test]
    fn goals_are_checked_on_exact_figures_in_their_direction() {
        // 0.9499 prints as 0.950 and still misses 0.95 (03:26's TCP row).
        let tcp = row("TCP", 601.4, 633.1, Some(Goal::RatioAtLeast(0.95)));
        assert_eq!(format!("{:.3}", tcp.ratio()), "0.950");
        assert_eq!(tcp.met(), Some(false));
        assert_eq!(
            row("a", 95.0, 100.0, Some(Goal::RatioAtLeast(0.95))).met(),
            Some(true)
        );
        // Latency: lower is better, so the bound is an upper one.
        assert_eq!(
            row("RR", 14.0, 57.2, Some(Goal::RatioAtMost(1.2))).met(),
            Some(true)
        );
        assert_eq!(
            row("RR", 70.0, 57.2, Some(Goal::RatioAtMost(1.2))).met(),
            Some(false)
        );
        // Events per packet: our own figure, whatever the peer's.
        let irq = Some(Goal::OursAtMost(0.1));
        assert_eq!(row("irq", 0.003, 0.099, irq).met(), Some(true));
        assert_eq!(row("irq", 0.3, 0.099, irq).met(), Some(false));
        assert_eq!(row("irq", 0.003, f64::NAN, irq).met(), Some(true));
        // A goal on a ratio with a skipped peer cannot be judged.
        assert_eq!(
            row("b", 1.0, f64::NAN, Some(Goal::RatioAtLeast(1.0))).met(),
            None
        );
        assert_eq!(row("c", 1.0, 2.0, None).met(), None);
    }

    #[test]
    fn the_summary_names_what_missed_its_goal() {
        let rows = [
            row("ring", 202.0, 141.0, Some(Goal::RatioAtLeast(1.0))),
            row("UDP", 2709.0, 4977.0, Some(Goal::RatioAtLeast(0.6))),
            row("UDP (matched peer)", 2719.0, 4203.0, None),
            row(
                "interrupts per packet",
                0.3,
                0.099,
                Some(Goal::OursAtMost(0.1)),
            ),
            row("TCP raw", 1.0, f64::NAN, Some(Goal::RatioAtLeast(0.5))),
        ];
        assert_eq!(
            goals_summary(&rows).unwrap(),
            "goals: 1 of 4 met; not met: UDP (0.544; goal ratio ≥ 0.6), \
             interrupts per packet (0.300; goal ours ≤ 0.1), \
             TCP raw (not measured; goal ratio ≥ 0.5)"
        );
        let t = render(&rows);
        assert!(t.contains("| 0.544 | x | ratio ≥ 0.6 | **no** |"), "{t}");
        assert!(t.contains("| 1.433 | x | ratio ≥ 1.0 | yes |"), "{t}");
        assert!(
            t.contains("| skipped | – | x | ratio ≥ 0.5 | not measured |"),
            "{t}"
        );
        assert_eq!(goals_summary(&rows[2..3]), None);
        assert_eq!(goals_summary(&rows[..1]).unwrap(), "goals: 1 of 1 met");
    }
}
