//! Counters for each guest and in total, and their text form for
//! `ib-backend stats`.

use std::fmt::Write as _;

use verbs_shim::back::{BackStats, Refusal, ViolationKind};
use verbs_shim::PortAttr;

use crate::transport::TransportViolation;

/// Seat-level events.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct SeatCounters {
    pub connects: u64,
    pub disconnects: u64,
    /// Sessions or back halves torn down and their resources released.
    pub reclaims: u64,
    pub violation_disconnects: u64,
    pub guest_closes: u64,
    /// Connections refused because a guest was already attached.
    pub refused: u64,
    /// Wake-ups by the guest's notifications. For ivshmem each is one edge
    /// of the doorbell eventfd, which is never read (rings that arrive
    /// before the worker looks merge into one); for Xen, the events read.
    pub doorbells: u64,
    /// Requests and completions a busy-polling worker found without being
    /// notified.
    pub busy_polled: u64,
    /// Sessions taken over from a worker that died.
    pub restarts: u64,
    /// Xen: a domain's window or event channel could not be set up (a bad
    /// grant ref or port), so it was disconnected.
    pub xen_failures: u64,
    /// Xen: the supervisor refused what a domain published in xenstore.
    pub xen_refused: u64,
    /// Xen: sessions ended because their domain was destroyed.
    pub domain_releases: u64,
    /// Guests whose port could not be opened (a P_Key not in the port's
    /// table, the QP limit, the device out of resources), so they were
    /// disconnected.
    pub port_refusals: u64,
    /// Transport-level violations (misused descriptors), by
    /// [`TransportViolation`]; each also counts in `violation_disconnects`.
    pub transport_violations: [u64; TransportViolation::COUNT],
}

impl SeatCounters {
    fn add(&mut self, c: &SeatCounters) {
        self.connects += c.connects;
        self.disconnects += c.disconnects;
        self.reclaims += c.reclaims;
        self.violation_disconnects += c.violation_disconnects;
        self.guest_closes += c.guest_closes;
        self.refused += c.refused;
        self.doorbells += c.doorbells;
        self.busy_polled += c.busy_polled;
        self.restarts += c.restarts;
        self.xen_failures += c.xen_failures;
        self.xen_refused += c.xen_refused;
        self.domain_releases += c.domain_releases;
        self.port_refusals += c.port_refusals;
        for (total, n) in self
            .transport_violations
            .iter_mut()
            .zip(c.transport_violations)
        {
            *total += n;
        }
    }
}

/// What `stats` reports for one guest.
#[derive(Clone, Debug)]
pub struct SeatSnapshot {
    pub name: String,
    pub attached: bool,
    pub connected: bool,
    pub port: Option<PortAttr>,
    pub counters: SeatCounters,
    pub back: BackStats,
    /// QPs the seat has open now.
    pub qps_open: usize,
    /// New QPs refused by the seat's `max_qps`.
    pub qp_refusals: u64,
}

/// Resources held and requests refused by per-guest limits.
#[derive(Clone, Copy, Default)]
struct Limited {
    qps_open: usize,
    qp_refusals: u64,
}

fn line(out: &mut String, scope: &str, c: &SeatCounters, b: &BackStats, l: Limited) {
    let _ = write!(
        out,
        "{scope} tx_packets={} tx_bytes={} rx_packets={} rx_bytes={} tx_errors={} tx_filtered={} ctrl_requests={} \
         interrupts={} doorbells={} busy_polled={} violations={} connects={} disconnects={} reclaims={} \
         violation_disconnects={} refused={} restarts={} xen_failures={} xen_refused={} \
         domain_releases={}",
        b.tx_requests,
        b.tx_bytes,
        b.rx_completions,
        b.rx_bytes,
        b.tx_errors,
        b.tx_filtered,
        b.ctrl_requests,
        b.interrupts,
        c.doorbells,
        c.busy_polled,
        b.total_violations(),
        c.connects,
        c.disconnects,
        c.reclaims,
        c.violation_disconnects,
        c.refused,
        c.restarts,
        c.xen_failures,
        c.xen_refused,
        c.domain_releases,
    );
    for k in ViolationKind::ALL {
        let n = b.violations_of(k);
        if n > 0 {
            let _ = write!(out, " violation.{}={n}", k.name());
        }
    }
    let _ = write!(
        out,
        " port_refusals={} qps_open={} refused.qps={}",
        c.port_refusals, l.qps_open, l.qp_refusals
    );
    for k in Refusal::ALL {
        let _ = write!(out, " refused.{}={}", k.name(), b.refusals_of(k));
    }
    for k in TransportViolation::ALL {
        let n = c.transport_violations[k as usize];
        if n > 0 {
            let _ = write!(out, " transport_violation.{}={n}", k.name());
        }
    }
    out.push('\n');
}

/// The report: one line per guest, then the total. Each line is
/// `guest NAME state=... key=value ...`.
pub fn render(provider: &str, epoch: u32, seats: &[SeatSnapshot]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backend provider={provider} epoch={epoch} guests={} worker_pid={}",
        seats.len(),
        std::process::id()
    );
    let mut total_c = SeatCounters::default();
    let mut total_b = BackStats::default();
    let mut total_l = Limited::default();
    for s in seats {
        let state = match (s.attached, s.connected) {
            (false, _) => "waiting",
            (true, false) => "attached",
            (true, true) => "connected",
        };
        let port = s
            .port
            .map(|p| format!(" qpn={:#x} pkey={:#06x}", p.qpn.get(), p.pkey.0))
            .unwrap_or_default();
        let limited = Limited {
            qps_open: s.qps_open,
            qp_refusals: s.qp_refusals,
        };
        line(
            &mut out,
            &format!("guest {} state={state}{port}", s.name),
            &s.counters,
            &s.back,
            limited,
        );
        total_l.qps_open += limited.qps_open;
        total_l.qp_refusals += limited.qp_refusals;
        total_c.add(&s.counters);
        let b = &s.back;
        total_b.tx_requests += b.tx_requests;
        total_b.tx_bytes += b.tx_bytes;
        total_b.rx_completions += b.rx_completions;
        total_b.rx_bytes += b.rx_bytes;
        total_b.tx_errors += b.tx_errors;
        total_b.tx_filtered += b.tx_filtered;
        total_b.ctrl_requests += b.ctrl_requests;
        total_b.interrupts += b.interrupts;
        for k in ViolationKind::ALL {
            total_b.violations[k as usize] += b.violations_of(k);
        }
        for k in Refusal::ALL {
            total_b.refusals[k as usize] += b.refusals_of(k);
        }
    }
    line(&mut out, "total", &total_c, &total_b, total_l);
    out
}

/// The sim fabric's own counters, one `fabric sim key=value ...` line:
/// what crossed it and every reason it dropped a packet (a guest with no
/// receive posted, a wrong Q_Key or P_Key, ...), summed over every port
/// it ever had.
pub fn render_sim_fabric(stats: &verbs_shim::sim::FabricStats) -> String {
    let t = &stats.totals;
    format!(
        "fabric sim ports={} tx_packets={} rx_packets={} rx_dropped={} drop_no_recv={} drop_qkey={} drop_pkey={} drop_qpn={} drop_icrc={} drop_mtu={} drop_too_small={} drop_dma={} unroutable={} oversize={} bad_send={} fault_loss={} fault_dup={} fault_reorder={}\n",
        stats.ports,
        t.tx_packets,
        t.rx_packets,
        t.rx_dropped(),
        t.drop_no_recv,
        t.drop_qkey,
        t.drop_pkey,
        t.drop_qpn,
        t.drop_icrc,
        t.drop_mtu,
        t.drop_too_small,
        t.drop_dma,
        t.unroutable,
        t.oversize,
        t.bad_send,
        t.fault_loss,
        t.fault_dup,
        t.fault_reorder,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sim_fabric_line_names_every_drop() {
        let mut stats = verbs_shim::sim::FabricStats {
            ports: 2,
            ..Default::default()
        };
        stats.totals.tx_packets = 10;
        stats.totals.rx_packets = 7;
        stats.totals.drop_no_recv = 2;
        stats.totals.drop_qkey = 1;
        let line = render_sim_fabric(&stats);
        assert!(line.starts_with("fabric sim ports=2 tx_packets=10 rx_packets=7 rx_dropped=3 drop_no_recv=2 drop_qkey=1 "), "{line}");
        assert!(line.ends_with(" fault_reorder=0\n"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn refusals_and_open_qps_are_shown_per_guest_and_in_total() {
        let mut back = BackStats::default();
        back.refusals[Refusal::McastGroups as usize] = 3;
        back.refusals[Refusal::PendingResolves as usize] = 1;
        let seat = SeatSnapshot {
            name: "g1".into(),
            attached: true,
            connected: true,
            port: None,
            counters: SeatCounters::default(),
            back,
            qps_open: 1,
            qp_refusals: 2,
        };
        let text = render("sim", 1, &[seat.clone(), seat]);
        let guest = text.lines().nth(1).unwrap_or_default();
        for want in [
            " qps_open=1 refused.qps=2 ",
            " refused.mcast_groups=3 ",
            " refused.dests=0 ",
            " refused.pending_resolves=1",
        ] {
            assert!(guest.contains(want), "{want:?} in {guest}");
        }
        let total = text.lines().last().unwrap_or_default();
        assert!(total.starts_with("total "), "{total}");
        assert!(
            total.contains(" qps_open=2 refused.qps=4 refused.mcast_groups=6 "),
            "{total}"
        );
    }
}
