//! The ways a guest can break the channel protocol, and their counters.

use core::fmt;

use ring::LayoutError;

use super::limits::Refusal;

/// One protocol violation by the guest. Any of these disconnects it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Violation {
    /// The layout parameters in the header are unusable.
    BadParams(LayoutError),
    /// The guest attached to an epoch this back end never announced.
    EpochMismatch {
        guest: u32,
        backend: u32,
    },
    /// A producer index ran more than a ring's size ahead.
    RingOverflow {
        ring: &'static str,
    },
    SlotOutOfRange {
        ring: &'static str,
        slot: u16,
    },
    /// The slot is already posted (posted twice, or never returned).
    SlotNotOwned {
        ring: &'static str,
        slot: u16,
    },
    TxLengthTooLarge {
        len: u32,
        slot_size: u32,
    },
    TxZeroLength,
    /// A destination handle this back end never issued to this guest.
    BadHandle {
        handle: u32,
    },
    /// A remote QPN wider than 24 bits.
    BadQpn {
        qpn: u32,
    },
    /// A controlled Q_Key (high bit set); only privileged users may send one.
    ControlledQKey {
        qkey: u32,
    },
    /// Reserved or flag bits that must be zero were set.
    ReservedBits {
        ring: &'static str,
    },
    UnknownCtrlOp {
        op: u16,
    },
    /// Guest-feature bits this back end does not know.
    UnknownFeature {
        bits: u32,
    },
    /// The guest asked for a feature (connected mode) that was not offered.
    FeatureNotOffered {
        bits: u32,
    },
}

impl Violation {
    /// The counter slot for this kind.
    pub const fn kind(&self) -> ViolationKind {
        match self {
            Violation::BadParams(_) => ViolationKind::BadParams,
            Violation::EpochMismatch { .. } => ViolationKind::EpochMismatch,
            Violation::RingOverflow { .. } => ViolationKind::RingOverflow,
            Violation::SlotOutOfRange { .. } => ViolationKind::SlotOutOfRange,
            Violation::SlotNotOwned { .. } => ViolationKind::SlotNotOwned,
            Violation::TxLengthTooLarge { .. } | Violation::TxZeroLength => {
                ViolationKind::BadLength
            }
            Violation::BadHandle { .. } => ViolationKind::BadHandle,
            Violation::BadQpn { .. } | Violation::ControlledQKey { .. } => {
                ViolationKind::BadAddress
            }
            Violation::ReservedBits { .. } => ViolationKind::ReservedBits,
            Violation::UnknownCtrlOp { .. } => ViolationKind::UnknownCtrlOp,
            Violation::UnknownFeature { .. } | Violation::FeatureNotOffered { .. } => {
                ViolationKind::BadFeatures
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::BadParams(e) => write!(f, "bad layout parameters: {e}"),
            Violation::EpochMismatch { guest, backend } => {
                write!(
                    f,
                    "guest attached to epoch {guest}, back end is at {backend}"
                )
            }
            Violation::RingOverflow { ring } => write!(f, "{ring} ring producer index overflow"),
            Violation::SlotOutOfRange { ring, slot } => {
                write!(f, "{ring} slot {slot} out of range")
            }
            Violation::SlotNotOwned { ring, slot } => {
                write!(f, "{ring} slot {slot} posted while already posted")
            }
            Violation::TxLengthTooLarge { len, slot_size } => {
                write!(f, "tx length {len} exceeds slot size {slot_size}")
            }
            Violation::TxZeroLength => f.write_str("tx length 0"),
            Violation::BadHandle { handle } => write!(f, "unknown destination handle {handle}"),
            Violation::BadQpn { qpn } => write!(f, "remote QPN {qpn:#x} wider than 24 bits"),
            Violation::ControlledQKey { qkey } => write!(f, "controlled Q_Key {qkey:#x}"),
            Violation::ReservedBits { ring } => write!(f, "reserved bits set in a {ring} request"),
            Violation::UnknownCtrlOp { op } => write!(f, "unknown control op {op}"),
            Violation::UnknownFeature { bits } => write!(f, "unknown guest features {bits:#x}"),
            Violation::FeatureNotOffered { bits } => {
                write!(f, "guest features {bits:#x} were not offered")
            }
        }
    }
}

/// Counter index of a [`Violation`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum ViolationKind {
    BadParams,
    EpochMismatch,
    RingOverflow,
    SlotOutOfRange,
    SlotNotOwned,
    BadLength,
    BadHandle,
    BadAddress,
    ReservedBits,
    UnknownCtrlOp,
    BadFeatures,
}

impl ViolationKind {
    pub const COUNT: usize = 11;
    pub const ALL: [ViolationKind; Self::COUNT] = [
        ViolationKind::BadParams,
        ViolationKind::EpochMismatch,
        ViolationKind::RingOverflow,
        ViolationKind::SlotOutOfRange,
        ViolationKind::SlotNotOwned,
        ViolationKind::BadLength,
        ViolationKind::BadHandle,
        ViolationKind::BadAddress,
        ViolationKind::ReservedBits,
        ViolationKind::UnknownCtrlOp,
        ViolationKind::BadFeatures,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ViolationKind::BadParams => "bad_params",
            ViolationKind::EpochMismatch => "epoch_mismatch",
            ViolationKind::RingOverflow => "ring_overflow",
            ViolationKind::SlotOutOfRange => "slot_out_of_range",
            ViolationKind::SlotNotOwned => "slot_not_owned",
            ViolationKind::BadLength => "bad_length",
            ViolationKind::BadHandle => "bad_handle",
            ViolationKind::BadAddress => "bad_address",
            ViolationKind::ReservedBits => "reserved_bits",
            ViolationKind::UnknownCtrlOp => "unknown_ctrl_op",
            ViolationKind::BadFeatures => "bad_features",
        }
    }
}

/// Counters kept by the back half for one guest.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct BackStats {
    pub tx_requests: u64,
    pub tx_bytes: u64,
    pub rx_requests: u64,
    pub tx_completions: u64,
    pub tx_errors: u64,
    /// Frames the back end's TX filter dropped (port security).
    pub tx_filtered: u64,
    pub rx_completions: u64,
    pub rx_bytes: u64,
    pub ctrl_requests: u64,
    /// Connected mode: CM ring requests, RC sends and big receives posted,
    /// and their completions.
    pub cm_requests: u64,
    pub rc_tx_requests: u64,
    pub rc_rx_requests: u64,
    pub rc_tx_completions: u64,
    pub rc_rx_completions: u64,
    /// Notifications (interrupts) sent to the guest.
    pub interrupts: u64,
    pub violations: [u64; ViolationKind::COUNT],
    /// Requests refused by a per-guest limit, by [`Refusal`] kind.
    pub refusals: [u64; Refusal::COUNT],
}

impl BackStats {
    pub fn total_violations(&self) -> u64 {
        self.violations.iter().sum()
    }

    pub fn violations_of(&self, kind: ViolationKind) -> u64 {
        self.violations[kind as usize]
    }

    pub fn refusals_of(&self, kind: Refusal) -> u64 {
        self.refusals[kind as usize]
    }

    pub fn total_refusals(&self) -> u64 {
        self.refusals.iter().sum()
    }
}
