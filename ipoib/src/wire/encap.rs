//! The 4-byte IPoIB encapsulation header (RFC 4391 section 6).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Type (EtherType)     |           Reserved            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The reserved field is sent as zero and ignored on receive.

use core::fmt;

use super::{need, read_u16, write_u16, WireError};

/// Length of the encapsulation header.
pub const HEADER_LEN: usize = 4;

mod field {
    use core::ops::{Range, RangeFrom};

    pub const ETHERTYPE: Range<usize> = 0..2;
    pub const RESERVED: Range<usize> = 2..4;
    pub const PAYLOAD: RangeFrom<usize> = 4..;
}

/// The protocol carried after the header.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::Ipv4 => f.write_str("IPv4"),
            EtherType::Arp => f.write_str("ARP"),
            EtherType::Ipv6 => f.write_str("IPv6"),
            EtherType::Unknown(t) => write!(f, "0x{t:04x}"),
        }
    }
}

/// A read/write view of an IPoIB encapsulation header and its payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length. Accessors on a short
    /// buffer read zero (they never panic); prefer [`Packet::new_checked`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` if the buffer cannot hold the header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    pub fn reserved(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::RESERVED.start)
    }

    /// The bytes after the header (empty if there are none).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_ethertype(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, value.into());
    }

    pub fn set_reserved(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::RESERVED.start, value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD)
            .unwrap_or(&mut [])
    }
}

/// The parsed header: only the EtherType carries information.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Repr {
    pub ethertype: EtherType,
}

impl Repr {
    /// Never fails on a checked packet; an unknown type is `Unknown(n)`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            ethertype: packet.ethertype(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (reserved = 0); the payload is left untouched.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<(), WireError> {
        need(packet.buffer.as_ref().len(), HEADER_LEN)?;
        packet.set_ethertype(self.ethertype);
        packet.set_reserved(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static IPV4: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x14];

    #[test]
    fn parse_ipv4() {
        let pkt = Packet::new_checked(&IPV4[..]).unwrap();
        assert_eq!(pkt.ethertype(), EtherType::Ipv4);
        assert_eq!(pkt.reserved(), 0);
        assert_eq!(pkt.payload(), &IPV4[4..]);
        assert_eq!(
            Repr::parse(&pkt),
            Repr {
                ethertype: EtherType::Ipv4
            }
        );
    }

    #[test]
    fn emit_arp_keeps_payload() {
        let mut buf = [0xffu8; 6];
        let mut pkt = Packet::new_unchecked(&mut buf[..]);
        let repr = Repr {
            ethertype: EtherType::Arp,
        };
        repr.emit(&mut pkt).unwrap();
        pkt.payload_mut()[0] = 0x11;
        assert_eq!(buf, [0x08, 0x06, 0, 0, 0x11, 0xff]);
    }

    #[test]
    fn unknown_and_reserved_are_kept() {
        let buf = [0x88, 0xb5, 0x12, 0x34];
        let pkt = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(pkt.ethertype(), EtherType::Unknown(0x88b5));
        assert_eq!(pkt.reserved(), 0x1234);
        assert!(pkt.payload().is_empty());
        assert_eq!(u16::from(EtherType::Unknown(0x88b5)), 0x88b5);
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&IPV4[..len]).err(),
                Some(WireError::Truncated)
            );
            let pkt = Packet::new_unchecked(&IPV4[..len]);
            let _ = (pkt.ethertype(), pkt.reserved(), pkt.payload());
        }
        let mut small = [0u8; 3];
        let repr = Repr {
            ethertype: EtherType::Ipv4,
        };
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut small[..])),
            Err(WireError::BufferTooSmall {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(small, [0; 3]);
    }
}
