//! The 40-byte Global Route Header the sim "HCA" writes at the start of every
//! receive buffer (IBA 8.3; laid out like an IPv6 header).
//!
//! ```text
//!  0      1      2      3      4      5      6      7
//! | ver/tc|  tc/flow label     | payload len | nxthdr| hop  |
//! 8 .. 24  source GID
//! 24 .. 40 destination GID
//! ```
//!
//! The sim does not model the transport headers behind the GRH, so the
//! payload length is the UD payload in bytes.

use core::fmt;

use crate::types::{Gid, GRH_LEN};

mod field {
    use core::ops::Range;

    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SGID: Range<usize> = 8..24;
    pub const DGID: Range<usize> = 24..40;
}

/// IBA "next header" value for the Base Transport Header.
pub const NEXT_HEADER_BTH: u8 = 0x1b;
/// Version 6, traffic class 0.
const VERSION_6: u8 = 0x60;
/// The hop limit the sim writes.
pub const HOP_LIMIT: u8 = 64;

/// Why a buffer does not hold a GRH.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GrhError {
    /// Fewer than 40 bytes.
    Truncated,
    /// The IP version nibble is not 6.
    Version(u8),
}

impl fmt::Display for GrhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrhError::Truncated => write!(f, "GRH needs {GRH_LEN} bytes"),
            GrhError::Version(v) => write!(f, "GRH version {v} is not 6"),
        }
    }
}

impl core::error::Error for GrhError {}

/// The fields of a GRH the sim uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GrhRepr {
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub sgid: Gid,
    pub dgid: Gid,
}

impl GrhRepr {
    /// The header for a UD payload of `payload_len` bytes.
    pub fn new(payload_len: usize, sgid: Gid, dgid: Gid) -> GrhRepr {
        GrhRepr {
            payload_len: u16::try_from(payload_len).unwrap_or(u16::MAX),
            next_header: NEXT_HEADER_BTH,
            hop_limit: HOP_LIMIT,
            sgid,
            dgid,
        }
    }

    /// Parses the first 40 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GrhRepr, GrhError> {
        let b = bytes.get(..GRH_LEN).ok_or(GrhError::Truncated)?;
        let version = b[field::VERSION] >> 4;
        if version != 6 {
            return Err(GrhError::Version(version));
        }
        let gid = |r: core::ops::Range<usize>| Gid::from_slice(&b[r]).ok_or(GrhError::Truncated);
        Ok(GrhRepr {
            payload_len: u16::from_be_bytes([
                b[field::PAYLOAD_LEN.start],
                b[field::PAYLOAD_LEN.start + 1],
            ]),
            next_header: b[field::NEXT_HEADER],
            hop_limit: b[field::HOP_LIMIT],
            sgid: gid(field::SGID)?,
            dgid: gid(field::DGID)?,
        })
    }

    /// The header's wire bytes (traffic class and flow label are zero).
    pub fn emit(&self) -> [u8; GRH_LEN] {
        let mut b = [0u8; GRH_LEN];
        b[field::VERSION] = VERSION_6;
        b[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SGID].copy_from_slice(self.sgid.as_bytes());
        b[field::DGID].copy_from_slice(self.dgid.as_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SGID: Gid = Gid::from_parts(0xfe80_0000_0000_0000, 1);
    const DGID: Gid = Gid::from_parts(0xfe80_0000_0000_0000, 2);

    #[rustfmt::skip]
    const BYTES: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x01, 0x02, 0x1b, 0x40,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ];

    #[test]
    fn emit_matches_fixture() {
        assert_eq!(GrhRepr::new(0x102, SGID, DGID).emit(), BYTES);
    }

    #[test]
    fn parse_matches_fixture() {
        let repr = GrhRepr::parse(&BYTES).unwrap();
        assert_eq!(repr, GrhRepr::new(0x102, SGID, DGID));
        assert_eq!(GrhRepr::parse(&repr.emit()), Ok(repr));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(GrhRepr::parse(&BYTES[..39]), Err(GrhError::Truncated));
        let mut v4 = BYTES;
        v4[0] = 0x45;
        assert_eq!(GrhRepr::parse(&v4), Err(GrhError::Version(4)));
    }
}
