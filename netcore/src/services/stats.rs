//! What the services have done.

use core::fmt::{self, Write};

use crate::status::{write_pairs, StatusSource};

/// Counters since the host started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub udp_echo_datagrams: u64,
    pub udp_echo_bytes: u64,
    /// Datagrams not echoed: too large, sent to a broadcast or multicast
    /// address, from a port below 1024, or no room to send.
    pub udp_echo_dropped: u64,
    pub tcp_echo_connections: u64,
    pub tcp_echo_bytes: u64,
    pub http_connections: u64,
    /// Responses: all of them, then by kind.
    pub http_requests: u64,
    pub http_ok: u64,
    pub http_not_found: u64,
    /// 400, 405, 431, 505.
    pub http_errors: u64,
    pub discard_connections: u64,
    pub discard_bytes: u64,
    pub chargen_connections: u64,
    pub chargen_bytes: u64,
    /// Connection attempts (SYNs) to a TCP service that found no listening
    /// socket and were dropped in silence for the client to retry.
    pub syn_deferred: u64,
    /// SYNs dropped because their client already had a socket on that port
    /// (retransmissions; `SynGate` says why).
    pub syn_duplicates: u64,
}

impl ServiceStats {
    /// UDP and TCP bytes echoed.
    pub fn bytes_echoed(&self) -> u64 {
        self.udp_echo_bytes + self.tcp_echo_bytes
    }
}

impl StatusSource for ServiceStats {
    fn write_status(&self, out: &mut dyn Write) -> fmt::Result {
        write_pairs(
            out,
            &[
                ("udp_echo_datagrams", self.udp_echo_datagrams),
                ("udp_echo_bytes", self.udp_echo_bytes),
                ("udp_echo_dropped", self.udp_echo_dropped),
                ("tcp_echo_connections", self.tcp_echo_connections),
                ("tcp_echo_bytes", self.tcp_echo_bytes),
                ("http_connections", self.http_connections),
                ("http_requests", self.http_requests),
                ("http_ok", self.http_ok),
                ("http_not_found", self.http_not_found),
                ("http_errors", self.http_errors),
                ("discard_connections", self.discard_connections),
                ("discard_bytes", self.discard_bytes),
                ("chargen_connections", self.chargen_connections),
                ("chargen_bytes", self.chargen_bytes),
                ("syn_deferred", self.syn_deferred),
                ("syn_duplicates", self.syn_duplicates),
            ],
        )
    }
}
