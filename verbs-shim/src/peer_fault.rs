//! The ways a back end can break the channel protocol, as the guest sees
//! them, and their counters. The guest-side mirror of
//! [`back::Violation`](crate::back::Violation): each fault closes the
//! channel, is logged, and is counted by kind in
//! [`FrontStats::faults`](crate::front::FrontStats::faults).

use core::fmt;

/// Which ring of the channel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RingId {
    Ctrl,
    Tx,
    Rx,
}

impl RingId {
    pub const fn name(self) -> &'static str {
        match self {
            RingId::Ctrl => "control",
            RingId::Tx => "tx",
            RingId::Rx => "rx",
        }
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One protocol violation by the back end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerFault {
    /// The port block could not be read, or a field is out of range.
    BadPortBlock,
    /// A response producer index ran more than a ring's size ahead.
    RingOverflow { ring: RingId },
    /// A response for a slot the guest had not posted (or out of range).
    SlotNotInFlight { ring: RingId, slot: u16 },
    /// A receive longer than the slot.
    RxTooLong { len: u32, slot_size: u32 },
    /// A successful receive shorter than the GRH area.
    RxShorterThanGrh { len: u32 },
    /// A receive whose source QPN is wider than 24 bits.
    BadSourceQpn { qpn: u32 },
    /// A control response that does not answer the oldest request.
    CtrlMismatch { cookie: u32, op: u16 },
    /// Connected mode: a CM answer matches no request of ours (cookie and
    /// op), or names a connection it cannot.
    CmMismatch { cookie: u32, op: u16 },
    /// Connected mode: the CM ring's producer index overran.
    CmRingOverflow,
}

impl PeerFault {
    /// The counter slot for this fault.
    pub const fn kind(&self) -> PeerFaultKind {
        match self {
            PeerFault::BadPortBlock => PeerFaultKind::BadPortBlock,
            PeerFault::RingOverflow { .. } => PeerFaultKind::RingOverflow,
            PeerFault::SlotNotInFlight { .. } => PeerFaultKind::SlotNotInFlight,
            PeerFault::RxTooLong { .. } | PeerFault::RxShorterThanGrh { .. } => {
                PeerFaultKind::BadLength
            }
            PeerFault::BadSourceQpn { .. } => PeerFaultKind::BadAddress,
            PeerFault::CtrlMismatch { .. } => PeerFaultKind::CtrlMismatch,
            PeerFault::CmMismatch { .. } => PeerFaultKind::CmMismatch,
            PeerFault::CmRingOverflow => PeerFaultKind::RingOverflow,
        }
    }
}

impl fmt::Display for PeerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerFault::BadPortBlock => f.write_str("port block unreadable or out of range"),
            PeerFault::RingOverflow { ring } => write!(f, "{ring} ring overflow"),
            PeerFault::SlotNotInFlight { ring, slot } => {
                write!(f, "{ring} response for slot {slot}, which is not in flight")
            }
            PeerFault::RxTooLong { len, slot_size } => {
                write!(f, "rx length {len} larger than the slot ({slot_size})")
            }
            PeerFault::RxShorterThanGrh { len } => {
                write!(f, "rx length {len} shorter than the GRH area")
            }
            PeerFault::BadSourceQpn { qpn } => {
                write!(f, "rx source QPN {qpn:#x} wider than 24 bits")
            }
            PeerFault::CtrlMismatch { cookie, op } => write!(
                f,
                "control response (cookie {cookie}, op {op}) does not match the oldest request"
            ),
            PeerFault::CmMismatch { cookie, op } => write!(
                f,
                "CM answer (cookie {cookie}, op {op}) matches no request or connection"
            ),
            PeerFault::CmRingOverflow => f.write_str("cm ring overflow"),
        }
    }
}

impl core::error::Error for PeerFault {}

/// Counter index of a [`PeerFault`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum PeerFaultKind {
    BadPortBlock,
    RingOverflow,
    SlotNotInFlight,
    BadLength,
    BadAddress,
    CtrlMismatch,
    CmMismatch,
}

impl PeerFaultKind {
    pub const COUNT: usize = 7;
    pub const ALL: [PeerFaultKind; Self::COUNT] = [
        PeerFaultKind::BadPortBlock,
        PeerFaultKind::RingOverflow,
        PeerFaultKind::SlotNotInFlight,
        PeerFaultKind::BadLength,
        PeerFaultKind::BadAddress,
        PeerFaultKind::CtrlMismatch,
        PeerFaultKind::CmMismatch,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            PeerFaultKind::BadPortBlock => "bad_port_block",
            PeerFaultKind::RingOverflow => "ring_overflow",
            PeerFaultKind::SlotNotInFlight => "slot_not_in_flight",
            PeerFaultKind::BadLength => "bad_length",
            PeerFaultKind::BadAddress => "bad_address",
            PeerFaultKind::CtrlMismatch => "ctrl_mismatch",
            PeerFaultKind::CmMismatch => "cm_mismatch",
        }
    }
}

/// Faults seen from the back end, by kind.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PeerFaultCounts {
    counts: [u64; PeerFaultKind::COUNT],
}

impl PeerFaultCounts {
    pub fn record(&mut self, fault: &PeerFault) {
        self.counts[fault.kind() as usize] += 1;
    }

    pub fn of(&self, kind: PeerFaultKind) -> u64 {
        self.counts[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter_and_name() {
        let faults = [
            PeerFault::BadPortBlock,
            PeerFault::RingOverflow { ring: RingId::Rx },
            PeerFault::SlotNotInFlight {
                ring: RingId::Tx,
                slot: 3,
            },
            PeerFault::RxTooLong {
                len: 5000,
                slot_size: 4096,
            },
            PeerFault::BadSourceQpn { qpn: 1 << 24 },
            PeerFault::CtrlMismatch { cookie: 1, op: 2 },
            PeerFault::CmMismatch { cookie: 1, op: 2 },
        ];
        let mut counts = PeerFaultCounts::default();
        for f in &faults {
            counts.record(f);
        }
        for k in PeerFaultKind::ALL {
            assert_eq!(counts.of(k), 1, "{}", k.name());
            assert_eq!(PeerFaultKind::ALL[k as usize], k);
        }
        assert_eq!(counts.total(), faults.len() as u64);
    }
}
