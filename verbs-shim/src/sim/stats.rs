//! Counters: per port, and totals for the fabric.
//!
//! Wire faults (`fault_*`, `drop_icrc`) and receive-side drops are counted at
//! the port the packet was going to; send-side outcomes at the sender.

/// Counters of one port. [`super::SimPort::stats`] returns a copy.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct PortStats {
    /// Sends accepted onto the wire (one per send, even to a group).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets written into a receive slot.
    pub rx_packets: u64,
    /// Payload bytes received (GRH not included).
    pub rx_bytes: u64,
    /// Sends larger than the port MTU (completed with `LocalLength`).
    pub oversize: u64,
    /// Sends with a slot or handle this port never issued, or a length
    /// beyond the slot (completed with `LocalProtection`).
    pub bad_send: u64,
    /// Sends whose destination no longer exists, or a group handle used
    /// without [`crate::Qpn::MULTICAST`].
    pub unroutable: u64,
    /// Arrived with no receive posted.
    pub drop_no_recv: u64,
    /// Arrived with the wrong Q_Key.
    pub drop_qkey: u64,
    /// Arrived with a P_Key that does not match this port's.
    pub drop_pkey: u64,
    /// Unicast packet addressed to a QPN this port does not have.
    pub drop_qpn: u64,
    /// Arrived corrupted (failed the ICRC check).
    pub drop_icrc: u64,
    /// Larger than this port's MTU.
    pub drop_mtu: u64,
    /// GRH + payload did not fit the oldest posted receive slot.
    pub drop_too_small: u64,
    /// The copy into the receive slot failed (region out of bounds).
    pub drop_dma: u64,
    /// Lost on the wire by fault injection.
    pub fault_loss: u64,
    /// Duplicated by fault injection.
    pub fault_dup: u64,
    /// Held back by fault injection.
    pub fault_reorder: u64,
}

impl PortStats {
    /// Adds every counter of `other` into `self`.
    pub fn add(&mut self, other: &PortStats) {
        let PortStats {
            tx_packets,
            tx_bytes,
            rx_packets,
            rx_bytes,
            oversize,
            bad_send,
            unroutable,
            drop_no_recv,
            drop_qkey,
            drop_pkey,
            drop_qpn,
            drop_icrc,
            drop_mtu,
            drop_too_small,
            drop_dma,
            fault_loss,
            fault_dup,
            fault_reorder,
        } = *other;
        self.tx_packets += tx_packets;
        self.tx_bytes += tx_bytes;
        self.rx_packets += rx_packets;
        self.rx_bytes += rx_bytes;
        self.oversize += oversize;
        self.bad_send += bad_send;
        self.unroutable += unroutable;
        self.drop_no_recv += drop_no_recv;
        self.drop_qkey += drop_qkey;
        self.drop_pkey += drop_pkey;
        self.drop_qpn += drop_qpn;
        self.drop_icrc += drop_icrc;
        self.drop_mtu += drop_mtu;
        self.drop_too_small += drop_too_small;
        self.drop_dma += drop_dma;
        self.fault_loss += fault_loss;
        self.fault_dup += fault_dup;
        self.fault_reorder += fault_reorder;
    }

    /// Every packet copy that reached this port's receive side and was
    /// dropped there, for whatever reason.
    pub fn rx_dropped(&self) -> u64 {
        self.drop_no_recv
            + self.drop_qkey
            + self.drop_pkey
            + self.drop_qpn
            + self.drop_icrc
            + self.drop_mtu
            + self.drop_too_small
            + self.drop_dma
    }
}

/// A snapshot of the whole fabric. [`super::SimFabric::stats`] returns it.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct FabricStats {
    /// Ports attached now.
    pub ports: usize,
    /// Multicast groups with at least one member.
    pub groups: usize,
    /// QPNs held by attached ports.
    pub qpns_in_use: usize,
    /// Packets held back for reordering, not yet delivered.
    pub held: usize,
    /// Held packets whose receiver left before they were released.
    pub held_orphaned: u64,
    /// The sum of the counters of every port, attached or gone.
    pub totals: PortStats,
}
