//! Errors from building a fabric or attaching a port.

use core::fmt;

use crate::types::{Gid, Lid};

/// Why a fault configuration or a port was refused.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum SimError {
    /// A fault probability is not a number in `0.0..=1.0`.
    InvalidProbability { field: &'static str, value: f64 },
    /// Another attached port already has this GID.
    DuplicateGid(Gid),
    /// Another attached port already has this LID.
    DuplicateLid(Lid),
    /// A port GID must be a non-zero unicast GID.
    InvalidGid(Gid),
    /// A port LID must be a unicast LID (`0x0001..=0xbfff`).
    InvalidLid(Lid),
    /// The buffer region cannot hold the slot layout.
    RegionTooSmall { needed: usize, actual: usize },
    /// The fabric ran out of port numbers (QPNs).
    TooManyPorts,
    /// Connected mode was refused: already on, the port is closed, or the
    /// big slots are smaller than the smallest RC message.
    RcRefused(&'static str),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::InvalidProbability { field, value } => {
                write!(f, "fault probability `{field}` = {value} is not in 0..=1")
            }
            SimError::DuplicateGid(gid) => write!(f, "GID {gid} is already on the fabric"),
            SimError::DuplicateLid(lid) => write!(f, "LID {:#06x} is already on the fabric", lid.0),
            SimError::InvalidGid(gid) => write!(f, "GID {gid} is not a unicast port GID"),
            SimError::InvalidLid(lid) => write!(f, "LID {:#06x} is not a unicast LID", lid.0),
            SimError::RegionTooSmall { needed, actual } => {
                write!(
                    f,
                    "buffer region holds {actual} bytes, layout needs {needed}"
                )
            }
            SimError::TooManyPorts => f.write_str("no port numbers left on the fabric"),
            SimError::RcRefused(why) => write!(f, "connected mode refused: {why}"),
        }
    }
}

impl core::error::Error for SimError {}
