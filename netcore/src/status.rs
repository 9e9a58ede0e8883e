//! Counters as `key value` lines, the form the status page and `/stats`
//! show.

use core::fmt::{self, Write};

use ipoib::IpoibStats;
use verbs_shim::{PeerFaultCounts, PeerFaultKind};

/// Something with counters to show. Each line is `key value\n`: the key has
/// no whitespace, the value is the rest of the line.
pub trait StatusSource {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result;
}

/// No counters.
impl StatusSource for () {
    fn write_status(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }
}

/// A source that may be absent (a provider without a peer).
impl<T: StatusSource> StatusSource for Option<T> {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        self.as_ref().map_or(Ok(()), |s| s.write_status(out))
    }
}

impl<T: StatusSource + ?Sized> StatusSource for &T {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        (**self).write_status(out)
    }
}

/// Each source in turn.
impl StatusSource for [&dyn StatusSource] {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        self.iter().try_for_each(|s| s.write_status(out))
    }
}

/// Writes `key value\n` for each pair.
pub fn write_pairs(out: &mut dyn Write, pairs: &[(&str, u64)]) -> fmt::Result {
    pairs
        .iter()
        .try_for_each(|(key, value)| writeln!(out, "{key} {value}"))
}

impl StatusSource for IpoibStats {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        let (rx, tx, arp, nd) = (&self.rx_drops, &self.tx_drops, &self.arp, &self.nd);
        let (frag4, frag6, cm) = (&self.frag4, &self.frag6, &self.cm);
        write_pairs(
            out,
            &[
                ("rx_packets", self.rx_packets),
                ("rx_bytes", self.rx_bytes),
                ("tx_packets", self.tx_packets),
                ("tx_bytes", self.tx_bytes),
                ("rx_drop_malformed", rx.malformed),
                ("rx_drop_unknown_ethertype", rx.unknown_ethertype),
                ("rx_drop_looped", rx.looped),
                ("rx_drop_error_status", rx.error_status),
                ("rx_drop_queue_full", rx.queue_full),
                ("rx_drop_arp_spoofed", rx.arp_spoofed),
                ("rx_drop_nd_spoofed", rx.nd_spoofed),
                ("tx_drop_no_route", tx.no_route),
                ("tx_drop_arp_timeout", tx.arp_timeout),
                ("tx_drop_queue_full", tx.queue_full),
                ("tx_drop_path_unreachable", tx.path_unreachable),
                ("tx_drop_send_error", tx.send_error),
                ("tx_drop_oversize", tx.oversize),
                ("tx_drop_link_down", tx.link_down),
                ("arp_requests_sent", arp.requests_sent),
                ("arp_replies_sent", arp.replies_sent),
                ("arp_requests_received", arp.requests_received),
                ("arp_replies_received", arp.replies_received),
                ("arp_learned", arp.learned),
                ("arp_gratuitous_sent", arp.gratuitous_sent),
                ("arp_failures", arp.failures),
                ("arp_path_resolutions", arp.path_resolutions),
                ("mcast_joins", self.mcast.joins),
                ("mcast_join_failures", self.mcast.join_failures),
                ("mcast_leaves", self.mcast.leaves),
                ("mcast_leave_failures", self.mcast.leave_failures),
                ("mcast_unexpected", self.mcast.unexpected),
                ("nd_solicits_sent", nd.solicits_sent),
                ("nd_adverts_sent", nd.adverts_sent),
                ("nd_solicits_received", nd.solicits_received),
                ("nd_adverts_received", nd.adverts_received),
                ("nd_learned", nd.learned),
                ("nd_failures", nd.failures),
                ("nd_groups_joined", nd.groups_joined),
                ("nd_join_failures", nd.join_failures),
                ("ipv6_fragments", frag6.fragments),
                ("ipv6_reassembled", frag6.reassembled),
                ("ipv6_reassembly_timeouts", frag6.timeouts),
                ("ipv6_fragment_overlaps", frag6.overlaps),
                ("ipv6_fragment_too_big", frag6.too_big),
                ("ipv6_fragment_malformed", frag6.malformed),
                ("ipv6_reassembly_evicted", frag6.evicted),
                ("ipv6_reassembly_queue_full", frag6.queue_full),
                ("ipv6_fragment_duplicates", frag6.duplicates),
                ("ipv4_fragments", frag4.fragments),
                ("ipv4_reassembled", frag4.reassembled),
                ("ipv4_reassembly_timeouts", frag4.timeouts),
                ("ipv4_fragment_overlaps", frag4.overlaps),
                ("ipv4_fragment_duplicates", frag4.duplicates),
                ("ipv4_fragment_too_big", frag4.too_big),
                ("ipv4_fragment_malformed", frag4.malformed),
                ("ipv4_reassembly_evicted", frag4.evicted),
                ("ipv4_reassembly_queue_full", frag4.queue_full),
                ("tx_fragmented", self.frag_tx.datagrams),
                ("tx_fragments", self.frag_tx.fragments),
                ("tx_mss_clamped", self.frag_tx.mss_clamped),
                ("tx_drop_fragmentation", tx.fragmentation),
                ("cm_enabled", u64::from(cm.enabled)),
                ("cm_connects", cm.connects),
                ("cm_established", cm.established),
                ("cm_rejected", cm.rejected),
                ("cm_broken", cm.broken),
                ("cm_accepted", cm.accepted),
                ("cm_refused", cm.refused),
                ("cm_idle_closed", cm.idle_closed),
                ("cm_tx_packets", cm.tx_packets),
                ("cm_tx_bytes", cm.tx_bytes),
                ("cm_tx_in_place", cm.tx_in_place),
                ("cm_rx_packets", cm.rx_packets),
                ("cm_rx_bytes", cm.rx_bytes),
                ("cm_tx_too_big", cm.tx_too_big),
                ("cm_tx_no_connection", cm.tx_no_connection),
                ("cm_tx_errors", cm.tx_errors),
                ("cm_rx_dropped", cm.rx_dropped),
            ],
        )
    }
}

/// The back end's protocol faults, one `peer_fault_KIND n` line per kind.
impl StatusSource for PeerFaultCounts {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        PeerFaultKind::ALL
            .iter()
            .try_for_each(|k| writeln!(out, "peer_fault_{} {}", k.name(), self.of(*k)))
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::String;

    use super::*;

    #[test]
    fn ipoib_stats_are_key_value_lines() {
        let mut stats = IpoibStats {
            rx_packets: 3,
            tx_bytes: 99,
            ..IpoibStats::default()
        };
        stats.arp.learned = 2;
        stats.mcast.joins = 4;
        stats.cm.enabled = true;
        stats.cm.rx_bytes = 65480;
        let mut out = String::new();
        stats.write_status(&mut out).unwrap();
        assert!(out.starts_with("rx_packets 3\nrx_bytes 0\ntx_packets 0\ntx_bytes 99\n"));
        assert!(out.contains("\narp_learned 2\n"));
        assert!(out.contains("\nmcast_joins 4\n"));
        assert!(out.contains("\ncm_enabled 1\n"), "{out}");
        assert!(out.contains("\ncm_rx_bytes 65480\n"), "{out}");
        for line in out.lines() {
            let (key, value) = line.split_once(' ').unwrap();
            assert!(!key.is_empty() && !key.contains(char::is_whitespace));
            value.parse::<u64>().unwrap();
        }
        assert_eq!(out.lines().count(), 78);
    }

    #[test]
    fn slices_chain_sources() {
        let a = IpoibStats::default();
        let both: [&dyn StatusSource; 2] = [&a, &()];
        let mut out = String::new();
        both[..].write_status(&mut out).unwrap();
        assert_eq!(out.lines().count(), 78);
    }
}
