//! What a guest can do wrong at the transport level, below the channel
//! protocol: misuse the descriptors it shares with the back end.
//!
//! Each kind has a name (for `stats`) and a counter in the seat; the guest
//! is disconnected on the first one.

use std::fmt;

/// A transport-level violation by the guest (or by whoever holds its
/// descriptors, such as a compromised QEMU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportViolation {
    /// The interrupt eventfd's counter was found at its maximum: someone
    /// filled it (an honest reader keeps it near zero).
    InterruptCounterFull,
    /// Raising the interrupt blocked (counter filled and `O_NONBLOCK`
    /// cleared on the shared file description); the watchdog cut it short.
    InterruptStalled,
    /// The guest wrote to its ivshmem socket. Clients have nothing to say
    /// in this protocol (docs/CHANNEL.md).
    SocketData,
}

impl TransportViolation {
    pub const COUNT: usize = 3;
    pub const ALL: [TransportViolation; Self::COUNT] = [
        TransportViolation::InterruptCounterFull,
        TransportViolation::InterruptStalled,
        TransportViolation::SocketData,
    ];

    /// The key in `stats`: `transport_violation.NAME=N`.
    pub fn name(self) -> &'static str {
        match self {
            TransportViolation::InterruptCounterFull => "interrupt_counter_full",
            TransportViolation::InterruptStalled => "interrupt_stalled",
            TransportViolation::SocketData => "socket_data",
        }
    }

    /// For a sticky flag in an atomic: never 0.
    pub(crate) fn code(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_code(code: u8) -> Option<TransportViolation> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

impl fmt::Display for TransportViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportViolation::InterruptCounterFull => {
                "its interrupt eventfd counter was filled to the maximum"
            }
            TransportViolation::InterruptStalled => {
                "raising its interrupt blocked (counter filled, O_NONBLOCK cleared)"
            }
            TransportViolation::SocketData => {
                "it wrote to its ivshmem socket, where clients never send anything"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TransportViolation;

    #[test]
    fn codes_round_trip_and_zero_is_none() {
        assert_eq!(TransportViolation::from_code(0), None);
        for v in TransportViolation::ALL {
            assert_eq!(TransportViolation::from_code(v.code()), Some(v));
        }
        assert_eq!(TransportViolation::from_code(200), None);
    }
}
