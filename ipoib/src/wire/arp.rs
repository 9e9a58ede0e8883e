//! ARP over IPoIB (RFC 4391 section 9.1): hardware type 32, 20-byte hardware
//! addresses, IPv4 protocol addresses, 56 bytes in all.
//!
//! ```text
//! 0..2   hardware type = 32 (InfiniBand)   2..4   protocol type = 0x0800
//! 4      hardware len = 20                 5      protocol len = 4
//! 6..8   operation
//! 8..28  sender hardware address           28..32 sender IPv4 address
//! 32..52 target hardware address           52..56 target IPv4 address
//! ```

use smoltcp::wire::Ipv4Address;

use super::{need, read_u16, write_u16, HwAddr, WireError};

/// ARP hardware type for InfiniBand (IANA).
pub const HARDWARE_TYPE_INFINIBAND: u16 = 32;
/// ARP protocol type for IPv4.
pub const PROTOCOL_TYPE_IPV4: u16 = 0x0800;
/// Hardware address length for IPoIB.
pub const HARDWARE_LEN: u8 = 20;
/// Protocol address length for IPv4.
pub const PROTOCOL_LEN: u8 = 4;
/// Length of an IPoIB ARP packet.
pub const PACKET_LEN: usize = 56;

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..28;
    pub const SPA: Range<usize> = 28..32;
    pub const THA: Range<usize> = 32..52;
    pub const TPA: Range<usize> = 52..56;
}

/// ARP operation code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(value: Operation) -> Self {
        match value {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

/// A read/write view of an IPoIB ARP packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks. Accessors on a short buffer read zero
    /// (they never panic); prefer [`Packet::new_checked`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer is long enough and that the length fields are
    /// the fixed IPoIB values (20 and 4) that the field offsets assume.
    /// Trailing bytes beyond 56 are allowed and ignored.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < field::OPER.end {
            return Err(WireError::Truncated);
        }
        if self.hardware_len() != HARDWARE_LEN {
            return Err(WireError::BadHardwareLen(self.hardware_len()));
        }
        if self.protocol_len() != PROTOCOL_LEN {
            return Err(WireError::BadProtocolLen(self.protocol_len()));
        }
        if len < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    fn hw(&self, at: usize) -> HwAddr {
        let data = self.buffer.as_ref().get(at..).unwrap_or(&[]);
        HwAddr::parse(data).unwrap_or_default()
    }

    fn ip(&self, at: usize) -> Ipv4Address {
        match self.buffer.as_ref().get(at..at + 4) {
            Some(&[a, b, c, d]) => Ipv4Address::new(a, b, c, d),
            _ => Ipv4Address::UNSPECIFIED,
        }
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE.start)
    }

    pub fn hardware_len(&self) -> u8 {
        self.byte(field::HLEN)
    }

    pub fn protocol_len(&self) -> u8 {
        self.byte(field::PLEN)
    }

    pub fn operation(&self) -> Operation {
        Operation::from(read_u16(self.buffer.as_ref(), field::OPER.start))
    }

    pub fn source_hardware_addr(&self) -> HwAddr {
        self.hw(field::SHA.start)
    }

    pub fn source_protocol_addr(&self) -> Ipv4Address {
        self.ip(field::SPA.start)
    }

    pub fn target_hardware_addr(&self) -> HwAddr {
        self.hw(field::THA.start)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Address {
        self.ip(field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_byte(&mut self, at: usize, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = value;
        }
    }

    fn set_hw(&mut self, at: usize, value: &HwAddr) {
        if let Some(dst) = self.buffer.as_mut().get_mut(at..at + HwAddr::LEN) {
            dst.copy_from_slice(&value.to_bytes());
        }
    }

    fn set_ip(&mut self, at: usize, value: Ipv4Address) {
        if let Some(dst) = self.buffer.as_mut().get_mut(at..at + 4) {
            dst.copy_from_slice(&value.octets());
        }
    }

    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE.start, value);
    }

    pub fn set_protocol_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PTYPE.start, value);
    }

    pub fn set_hardware_len(&mut self, value: u8) {
        self.set_byte(field::HLEN, value);
    }

    pub fn set_protocol_len(&mut self, value: u8) {
        self.set_byte(field::PLEN, value);
    }

    pub fn set_operation(&mut self, value: Operation) {
        write_u16(self.buffer.as_mut(), field::OPER.start, value.into());
    }

    pub fn set_source_hardware_addr(&mut self, value: &HwAddr) {
        self.set_hw(field::SHA.start, value);
    }

    pub fn set_source_protocol_addr(&mut self, value: Ipv4Address) {
        self.set_ip(field::SPA.start, value);
    }

    pub fn set_target_hardware_addr(&mut self, value: &HwAddr) {
        self.set_hw(field::THA.start, value);
    }

    pub fn set_target_protocol_addr(&mut self, value: Ipv4Address) {
        self.set_ip(field::TPA.start, value);
    }
}

/// A parsed IPoIB ARP packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Repr {
    pub operation: Operation,
    pub source_hw: HwAddr,
    pub source_ip: Ipv4Address,
    pub target_hw: HwAddr,
    pub target_ip: Ipv4Address,
}

impl Repr {
    /// Parses and validates a packet (the packet need not have been made
    /// with `new_checked`). Checks, in order: 8 header bytes present, hardware
    /// type 32, protocol type 0x0800, lengths 20 and 4, 56 bytes present.
    /// An unknown operation is kept as `Operation::Unknown`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        if packet.buffer.as_ref().len() < field::OPER.end {
            return Err(WireError::Truncated);
        }
        if packet.hardware_type() != HARDWARE_TYPE_INFINIBAND {
            return Err(WireError::BadHardwareType(packet.hardware_type()));
        }
        if packet.protocol_type() != PROTOCOL_TYPE_IPV4 {
            return Err(WireError::BadProtocolType(packet.protocol_type()));
        }
        packet.check_len()?;
        Ok(Repr {
            operation: packet.operation(),
            source_hw: packet.source_hardware_addr(),
            source_ip: packet.source_protocol_addr(),
            target_hw: packet.target_hardware_addr(),
            target_ip: packet.target_protocol_addr(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes all 56 bytes; later bytes of the buffer are left untouched.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<(), WireError> {
        need(packet.buffer.as_ref().len(), PACKET_LEN)?;
        packet.set_hardware_type(HARDWARE_TYPE_INFINIBAND);
        packet.set_protocol_type(PROTOCOL_TYPE_IPV4);
        packet.set_hardware_len(HARDWARE_LEN);
        packet.set_protocol_len(PROTOCOL_LEN);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(&self.source_hw);
        packet.set_source_protocol_addr(self.source_ip);
        packet.set_target_hardware_addr(&self.target_hw);
        packet.set_target_protocol_addr(self.target_ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verbs_shim::{Gid, Qpn};

    fn repr() -> Repr {
        Repr {
            operation: Operation::Request,
            source_hw: HwAddr::new(Qpn::new(0x48).unwrap(), Gid::from_parts(0xfe80 << 48, 2)),
            source_ip: Ipv4Address::new(10, 0, 0, 1),
            target_hw: HwAddr::default(),
            target_ip: Ipv4Address::new(10, 0, 0, 2),
        }
    }

    fn bytes() -> [u8; 56] {
        let mut b = [0u8; 56];
        repr().emit(&mut Packet::new_unchecked(&mut b[..])).unwrap();
        b
    }

    #[test]
    fn round_trip() {
        let b = bytes();
        assert_eq!(&b[..8], &[0, 32, 8, 0, 20, 4, 0, 1]);
        let pkt = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&pkt), Ok(repr()));
    }

    #[test]
    fn unknown_operation_is_not_an_error() {
        let mut b = bytes();
        b[6..8].copy_from_slice(&[0x12, 0x34]);
        let r = Repr::parse(&Packet::new_unchecked(&b[..])).unwrap();
        assert_eq!(r.operation, Operation::Unknown(0x1234));
    }

    #[test]
    fn ethernet_arp_is_rejected_by_type() {
        // A 28-byte Ethernet/IPv4 ARP request.
        let mut eth = [0u8; 28];
        eth[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        let pkt = Packet::new_unchecked(&eth[..]);
        assert_eq!(Repr::parse(&pkt), Err(WireError::BadHardwareType(1)));
        assert_eq!(
            Packet::new_checked(&eth[..]).err(),
            Some(WireError::BadHardwareLen(6))
        );
    }

    #[test]
    fn accessors_on_short_unchecked_buffer() {
        let b = bytes();
        for len in 0..PACKET_LEN {
            let pkt = Packet::new_unchecked(&b[..len]);
            let _ = (pkt.source_hardware_addr(), pkt.target_protocol_addr());
            assert!(Repr::parse(&pkt).is_err());
        }
        let mut small = [0u8; 55];
        assert_eq!(
            repr().emit(&mut Packet::new_unchecked(&mut small[..])),
            Err(WireError::BufferTooSmall {
                needed: 56,
                available: 55
            })
        );
    }
}
