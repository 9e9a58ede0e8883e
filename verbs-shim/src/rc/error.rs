//! Why an RC call was refused. These are answers to the caller, not faults
//! of the fabric: a peer's "no" arrives as an event
//! ([`super::RcEvent::Rejected`]), not as one of these.

use core::fmt;

use super::ConnHandle;

/// The state a connection end is in, as far as its owner can tell.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    /// Active end: the request is out, no answer yet.
    Connecting,
    /// Passive end: a request arrived, not yet accepted or rejected.
    Requested,
    Established,
}

/// A refused RC call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RcError {
    /// The provider (or this port) does not do connected mode.
    NotSupported,
    /// The port already holds `limit` connections (active, passive and
    /// requests waiting to be accepted all count).
    TooManyConnections { limit: usize },
    /// The handle names no connection of this port (never issued, or the
    /// connection is gone).
    UnknownConnection(ConnHandle),
    /// The call does not fit the connection's state (accepting an active
    /// connection, accepting twice).
    WrongState { conn: ConnHandle, state: ConnState },
    /// A receive MTU larger than the big slots (or smaller than the
    /// smallest message the provider accepts).
    BadMtu { mtu: u32, max: u32 },
    /// A big slot this port does not have.
    BadSlot(u16),
    /// The request queue (the channel's CM or data ring) is full; poll and
    /// retry.
    QueueFull,
    /// The port is closed.
    Disconnected,
}

impl fmt::Display for RcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RcError::NotSupported => f.write_str("connected mode not supported"),
            RcError::TooManyConnections { limit } => {
                write!(f, "too many connections (limit {limit})")
            }
            RcError::UnknownConnection(c) => write!(f, "no connection {:#x}", c.0),
            RcError::WrongState { conn, state } => {
                write!(f, "connection {:#x} is {state:?}", conn.0)
            }
            RcError::BadMtu { mtu, max } => {
                write!(
                    f,
                    "receive MTU {mtu} is outside {}..={max}",
                    super::MIN_RC_MTU
                )
            }
            RcError::BadSlot(index) => write!(f, "no big slot {index}"),
            RcError::QueueFull => f.write_str("request queue full"),
            RcError::Disconnected => f.write_str("port disconnected"),
        }
    }
}

impl core::error::Error for RcError {}
