//! Interface counters.

/// Why a received packet was dropped.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct RxDrops {
    /// Too short for the GRH area and IPoIB header, or an ARP or neighbour
    /// discovery message that does not parse (a bad option, a bad checksum,
    /// a hop limit other than 255...).
    pub malformed: u64,
    /// An EtherType this interface does not handle.
    pub unknown_ethertype: u64,
    /// Our own multicast coming back.
    pub looped: u64,
    /// The completion reported an error.
    pub error_status: u64,
    /// smoltcp's queue of received packets was full.
    pub queue_full: u64,
    /// An ARP whose sender hardware address (QPN, GID) is not the
    /// datagram's real source: not learnt, not answered.
    pub arp_spoofed: u64,
    /// A neighbour solicitation or advertisement whose link-layer address
    /// (QPN, GID) is not the datagram's real source: not learnt, not
    /// answered.
    pub nd_spoofed: u64,
}

/// Why a packet to send was dropped.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TxDrops {
    /// No route: off-subnet with no gateway, or not an IPv4 packet.
    pub no_route: u64,
    /// ARP got no answer.
    pub arp_timeout: u64,
    /// The queue of packets waiting for ARP or a path was full.
    pub queue_full: u64,
    /// The fabric could not resolve a path to the neighbour's GID.
    pub path_unreachable: u64,
    /// The device completed the send with an error.
    pub send_error: u64,
    /// The device said the packet was larger than the path MTU.
    pub oversize: u64,
    /// The link was down.
    pub link_down: u64,
    /// A packet larger than the MTU that could not be fragmented (too few
    /// free TX slots for its fragments, or a header this cannot cut).
    pub fragmentation: u64,
}

/// ARP activity.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ArpStats {
    pub requests_sent: u64,
    pub replies_sent: u64,
    pub requests_received: u64,
    pub replies_received: u64,
    /// Neighbour entries created or updated from ARP.
    pub learned: u64,
    pub gratuitous_sent: u64,
    /// Addresses given up on after the last retry.
    pub failures: u64,
    pub path_resolutions: u64,
}

/// Multicast groups other than the broadcast group.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct McastStats {
    /// Groups joined (attach requests made).
    pub joins: u64,
    /// Attaches the device refused.
    pub join_failures: u64,
    pub leaves: u64,
    /// Detaches the device refused.
    pub leave_failures: u64,
    /// Answers for a group this interface did not ask for.
    pub unexpected: u64,
}

/// IPv6 neighbour discovery activity (RFC 4861 over RFC 4391).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NdStats {
    pub solicits_sent: u64,
    pub adverts_sent: u64,
    pub solicits_received: u64,
    pub adverts_received: u64,
    /// Neighbour entries created or updated from NS or NA.
    pub learned: u64,
    /// Addresses given up on after the last solicitation.
    pub failures: u64,
    /// IPv6 multicast groups joined (all-nodes, solicited-node).
    pub groups_joined: u64,
    /// IPv6 multicast joins the fabric refused.
    pub join_failures: u64,
}

/// Reassembly of one family (the `reassembly` module, feature `alloc`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams put back together and handed on.
    pub reassembled: u64,
    /// Datagrams given up after the reassembly timeout.
    pub timeouts: u64,
    /// Datagrams dropped because two fragments overlapped with different
    /// bytes (RFC 5722).
    pub overlaps: u64,
    /// Fragments that repeated bytes already here, unchanged: ignored.
    pub duplicates: u64,
    /// Fragments reaching past the largest datagram reassembled.
    pub too_big: u64,
    /// Fragments that are not a multiple of 8 bytes (but the last), that
    /// contradict the datagram's length, or that do not parse.
    pub malformed: u64,
    /// Datagrams pushed out because the most were already under way.
    pub evicted: u64,
    /// Whole datagrams dropped because smoltcp had not taken the earlier
    /// ones yet.
    pub queue_full: u64,
}

/// The IPv6 reassembly counters' former name.
pub type Frag6Stats = ReassemblyStats;

/// Fragmenting on transmit (feature `alloc`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct FragTxStats {
    /// IP packets larger than the MTU sent as fragments.
    pub datagrams: u64,
    /// Fragments they became.
    pub fragments: u64,
    /// TCP SYNs whose MSS option was lowered to fit the MTU.
    pub mss_clamped: u64,
}

/// Connected mode (RFC 4755; `docs/connected-mode.md`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CmStats {
    /// Connected mode is on: the device advertises it and its MTU is the
    /// connected MTU.
    pub enabled: bool,
    /// Connections asked for, established (either side), refused by the
    /// peer, broken under us, and requests accepted or refused here.
    pub connects: u64,
    pub established: u64,
    pub rejected: u64,
    pub broken: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Connections we opened and closed again after they sat idle.
    pub idle_closed: u64,
    /// Packets sent and received over RC.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Of the packets sent, those smoltcp wrote straight into their big
    /// slot (no copy at flush).
    pub tx_in_place: u64,
    /// Packets for a connection larger than its send MTU: dropped. (Packets
    /// above the datagram MTU for a neighbour without connected mode are
    /// fragmented over UD and counted in `IpoibStats::frag_tx`.)
    pub tx_too_big: u64,
    /// Packets for a connection that failed, or that waited too long.
    pub tx_no_connection: u64,
    /// Sends the device refused or completed with an error.
    pub tx_errors: u64,
    /// Received messages that were not IP, or arrived while smoltcp's
    /// queue was full.
    pub rx_dropped: u64,
}

/// All counters of one interface.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct IpoibStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_drops: RxDrops,
    pub tx_drops: TxDrops,
    pub arp: ArpStats,
    pub mcast: McastStats,
    pub nd: NdStats,
    /// IPv6 reassembly.
    pub frag6: ReassemblyStats,
    /// IPv4 reassembly.
    pub frag4: ReassemblyStats,
    pub frag_tx: FragTxStats,
    pub cm: CmStats,
}
