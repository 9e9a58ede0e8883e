//! RC counters of one port.

/// RC counters of one port; [`super::super::SimPort::rc_stats`] returns a
/// copy. Transport events are counted at the sender, except duplicates,
/// which the responder drops.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RcStats {
    /// Connections that reached Established, at this end.
    pub established: u64,
    /// Connections that broke under this end (any `BreakReason`).
    pub broken: u64,
    /// Requests to this port refused because it was at its limit.
    pub refused_at_limit: u64,
    /// Connects and accepts this port's owner made beyond its limit.
    pub over_limit: u64,
    /// Messages delivered from this port.
    pub tx_msgs: u64,
    pub tx_bytes: u64,
    /// Messages delivered to this port.
    pub rx_msgs: u64,
    pub rx_bytes: u64,
    /// Transmission attempts lost, corrupted or out of sequence, and sent
    /// again.
    pub retransmits: u64,
    /// Duplicate arrivals dropped by this port's PSN check.
    pub duplicates: u64,
    /// Times a message of this port waited for the receiver to post a
    /// big receive (RNR).
    pub rnr_waits: u64,
    /// Sends longer than the connection's send MTU.
    pub oversize: u64,
    /// Sends and receives flushed by a connection or port going down.
    pub flushed: u64,
}
