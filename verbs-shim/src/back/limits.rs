//! Per-guest resource limits the back half enforces on control requests.
//!
//! A guest that asks for more than its share is not a protocol violation:
//! the request is refused (answered `NO_RESOURCES`), counted per kind in
//! [`BackStats::refusals`](super::BackStats), and logged (at `warn` on the
//! 1st, 2nd, 4th, 8th... refusal of a kind, so a guest that keeps asking
//! cannot flood the log). The guest stays connected.

use core::fmt;

/// Which limit a request ran into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// `MCAST_ATTACH` beyond [`super::BackConfig::max_mcast_groups`].
    McastGroups,
    /// `RESOLVE` with every destination handle
    /// ([`super::BackConfig::max_dests`]) held or being resolved.
    Dests,
    /// `RESOLVE` with [`super::BackConfig::max_pending_resolves`] already
    /// in progress.
    PendingResolves,
    /// `CONNECT` (or an incoming request) beyond
    /// [`super::BackConfig::max_rc_conns`] connections.
    RcConns,
    /// `CONNECT` or `ACCEPT` with a receive MTU the guest's big slots
    /// cannot take.
    RcMtu,
    /// An incoming connection request found no `EVENT_CREDIT` outstanding
    /// and was rejected.
    RcNoCredit,
}

impl Refusal {
    pub const COUNT: usize = 6;
    pub const ALL: [Refusal; Self::COUNT] = [
        Refusal::McastGroups,
        Refusal::Dests,
        Refusal::PendingResolves,
        Refusal::RcConns,
        Refusal::RcMtu,
        Refusal::RcNoCredit,
    ];

    /// The counter's name in `ib-backend stats`.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::McastGroups => "mcast_groups",
            Refusal::Dests => "dests",
            Refusal::PendingResolves => "pending_resolves",
            Refusal::RcConns => "rc_conns",
            Refusal::RcMtu => "rc_mtu",
            Refusal::RcNoCredit => "rc_no_credit",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::McastGroups => "too many multicast groups",
            Refusal::Dests => "too many destination handles",
            Refusal::PendingResolves => "too many address resolutions in progress",
            Refusal::RcConns => "too many RC connections",
            Refusal::RcMtu => "RC receive MTU out of range",
            Refusal::RcNoCredit => "RC connection request with no event credit",
        })
    }
}

/// Counts a refusal of `kind` in `counters` and logs it (rate-limited as the
/// module says). `limit` is the limit that was hit.
pub(super) fn refuse(counters: &mut [u64; Refusal::COUNT], kind: Refusal, limit: usize) {
    let n = &mut counters[kind as usize];
    *n += 1;
    if n.is_power_of_two() {
        log::warn!("guest request refused: {kind} (limit {limit}; {n} refused so far)");
    } else {
        log::debug!("guest request refused: {kind} (limit {limit})");
    }
}
