//! IPoIB wire formats (RFC 4391), in smoltcp's style: a `Packet<T>` view over
//! a byte buffer plus a `Repr` with `parse`, `buffer_len` and `emit`.
//!
//! - [`encap`]: the 4-byte encapsulation header (EtherType + reserved).
//! - [`hwaddr`]: the 20-byte link-layer address (flags, QPN, GID).
//! - [`arp`]: ARP with hardware type 32 (InfiniBand), 56 bytes.
//! - [`mgid`]: the broadcast, IPv4 and IPv6 multicast MGIDs.
//! - [`ipv6`]: the interface identifier, link-local and solicited-node
//!   addresses.
//! - [`nd`]: IPv6 neighbour solicitations and advertisements with the
//!   20-byte IPoIB link-layer address option.
//! - [`grh`]: the 40-byte Global Route Header at the front of UD receives.
//!
//! Nothing here panics on input: parse untrusted bytes with `new_checked`
//! (or `Repr::parse`), and every error is a [`WireError`].

use core::fmt;

pub mod arp;
pub mod encap;
pub mod grh;
pub mod hwaddr;
pub mod ipv6;
pub mod mgid;
pub mod nd;

pub use arp::{Operation as ArpOperation, Packet as ArpPacket, Repr as ArpRepr};
pub use encap::{EtherType, Packet as EncapPacket, Repr as EncapRepr};
pub use grh::{build_grh, Repr as GrhRepr};
pub use hwaddr::HwAddr;
pub use mgid::{
    broadcast_mgid, classify_mgid, ipv4_multicast_hwaddr, ipv4_multicast_mgid, ipv6_multicast_mgid,
    MgidKind,
};
pub use nd::{NdKind, NdRepr};

/// Why a buffer could not be parsed or emitted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WireError {
    /// The input is shorter than the format requires.
    Truncated,
    /// The output buffer is too small for what `emit` has to write.
    BufferTooSmall { needed: usize, available: usize },
    /// ARP hardware type is not 32 (InfiniBand).
    BadHardwareType(u16),
    /// ARP protocol type is not 0x0800 (IPv4).
    BadProtocolType(u16),
    /// ARP hardware address length is not 20.
    BadHardwareLen(u8),
    /// ARP protocol address length is not 4.
    BadProtocolLen(u8),
    /// GRH IP version nibble is not 6.
    BadGrhVersion(u8),
    /// An ICMPv6 type other than neighbour solicitation or advertisement.
    NotNeighbourDiscovery(u8),
    /// A neighbour discovery message with a code other than 0.
    BadNdCode(u8),
    /// A neighbour discovery option of length 0, or a link-layer address
    /// option whose length is not 3 (an IPoIB address).
    BadNdOption { kind: u8, units: u8 },
    /// A neighbour discovery message about a multicast address.
    MulticastTarget,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated => f.write_str("truncated packet"),
            WireError::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed} bytes, have {available}")
            }
            WireError::BadHardwareType(t) => write!(f, "ARP hardware type {t} is not 32"),
            WireError::BadProtocolType(t) => write!(f, "ARP protocol type {t:#06x} is not 0x0800"),
            WireError::BadHardwareLen(l) => write!(f, "ARP hardware length {l} is not 20"),
            WireError::BadProtocolLen(l) => write!(f, "ARP protocol length {l} is not 4"),
            WireError::BadGrhVersion(v) => write!(f, "GRH IP version {v} is not 6"),
            WireError::NotNeighbourDiscovery(t) => {
                write!(
                    f,
                    "ICMPv6 type {t} is not a neighbour solicitation or advertisement"
                )
            }
            WireError::BadNdCode(c) => write!(f, "neighbour discovery code {c} is not 0"),
            WireError::BadNdOption { kind, units } => {
                write!(f, "neighbour discovery option {kind} of length {units}")
            }
            WireError::MulticastTarget => f.write_str("neighbour discovery target is multicast"),
        }
    }
}

impl core::error::Error for WireError {}

/// Reads a big-endian `u16` at `at`; 0 if the buffer is too short.
///
/// Views are only meant to be read after `check_len`; this keeps the
/// accessors panic-free even on an unchecked short buffer.
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    match data.get(at..at.saturating_add(2)) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Writes a big-endian `u16` at `at`; does nothing if the buffer is too short.
#[inline]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = data.get_mut(at..at.saturating_add(2)) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Returns `Err(BufferTooSmall)` unless `len >= needed`.
pub(crate) fn need(len: usize, needed: usize) -> Result<(), WireError> {
    if len < needed {
        Err(WireError::BufferTooSmall {
            needed,
            available: len,
        })
    } else {
        Ok(())
    }
}

/// Runs every parser on arbitrary bytes and checks that whatever parses
/// re-emits to the same bytes. A panic here is a real bug.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    // Encapsulation header: the EtherType survives; the reserved field is
    // always emitted as zero.
    if let Ok(pkt) = EncapPacket::new_checked(data) {
        let repr = EncapRepr::parse(&pkt);
        let mut buf = [0xa5u8; encap::HEADER_LEN];
        let mut out = EncapPacket::new_unchecked(&mut buf[..]);
        assert!(repr.emit(&mut out).is_ok());
        assert_eq!(out.ethertype(), pkt.ethertype());
        assert_eq!(out.reserved(), 0);
        assert_eq!(
            EncapRepr::parse(&EncapPacket::new_unchecked(&buf[..])),
            repr
        );
        assert_eq!(buf.get(..2), data.get(..2));
    } else {
        assert!(data.len() < encap::HEADER_LEN);
    }

    // Hardware address: every bit is kept.
    if let Ok(addr) = HwAddr::parse(data) {
        assert_eq!(Some(&addr.to_bytes()[..]), data.get(..HwAddr::LEN));
        let mut buf = [0u8; HwAddr::LEN];
        assert!(addr.emit(&mut buf).is_ok());
        assert_eq!(buf, addr.to_bytes());
    } else {
        assert!(data.len() < HwAddr::LEN);
    }

    // ARP: every bit of the first 56 bytes is kept.
    if let Ok(pkt) = ArpPacket::new_checked(data) {
        if let Ok(repr) = ArpRepr::parse(&pkt) {
            let mut buf = [0u8; arp::PACKET_LEN];
            assert_eq!(repr.buffer_len(), arp::PACKET_LEN);
            assert!(repr
                .emit(&mut ArpPacket::new_unchecked(&mut buf[..]))
                .is_ok());
            assert_eq!(Some(&buf[..]), data.get(..arp::PACKET_LEN));
        }
    }

    // MGID: a recognised MGID rebuilds to itself.
    if let Some(gid) = verbs_shim::Gid::from_slice(data) {
        match classify_mgid(&gid) {
            Some(MgidKind::Broadcast { pkey }) => assert_eq!(broadcast_mgid(pkey), gid),
            Some(MgidKind::Ipv4Multicast { pkey, low28 }) => {
                assert!(low28 <= 0x0fff_ffff);
                let group = smoltcp::wire::Ipv4Address::from(0xe000_0000 | low28);
                assert_eq!(ipv4_multicast_mgid(pkey, group), gid);
            }
            Some(MgidKind::Ipv6Multicast { pkey, scope, low80 }) => {
                let mut group = [0u8; 16];
                group[0] = 0xff;
                group[1] = scope;
                group[6..].copy_from_slice(&low80);
                let group = smoltcp::wire::Ipv6Address::from(group);
                assert_eq!(ipv6_multicast_mgid(pkey, group), gid);
            }
            Some(MgidKind::Other) => assert!(gid.is_multicast()),
            None => assert!(!gid.is_multicast()),
        }
    }

    // ND: whatever parses re-emits and parses back to the same message.
    if let Ok(repr) = NdRepr::parse(data) {
        let mut buf = [0u8; nd::MESSAGE_LEN + nd::LLA_OPTION_LEN];
        let src = smoltcp::wire::Ipv6Address::LOCALHOST;
        assert!(repr.emit(&mut buf, &src, &src).is_ok());
        assert_eq!(NdRepr::parse(&buf[..repr.buffer_len()]), Ok(repr));
    }

    // GRH: every bit is kept.
    if let Ok(repr) = GrhRepr::parse(data) {
        assert_eq!(Some(&repr.to_bytes()[..]), data.get(..grh::HEADER_LEN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_do_not_panic_on_short_buffers() {
        assert_eq!(read_u16(&[], 0), 0);
        assert_eq!(read_u16(&[1], 0), 0);
        assert_eq!(read_u16(&[1, 2], 0), 0x0102);
        assert_eq!(read_u16(&[1, 2], usize::MAX), 0);
        let mut buf = [0u8; 1];
        write_u16(&mut buf, 0, 0xffff);
        write_u16(&mut buf, usize::MAX, 0xffff);
        assert_eq!(buf, [0]);
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            WireError::BadHardwareType(1).to_string(),
            "ARP hardware type 1 is not 32"
        );
        assert_eq!(
            WireError::BadProtocolType(0x86dd).to_string(),
            "ARP protocol type 0x86dd is not 0x0800"
        );
        assert_eq!(
            WireError::BufferTooSmall {
                needed: 56,
                available: 3
            }
            .to_string(),
            "buffer too small: need 56 bytes, have 3"
        );
    }

    #[test]
    fn fuzz_parse_smoke() {
        fuzz_parse(&[]);
        fuzz_parse(&[0xff; 100]);
        fuzz_parse(&[0; 100]);
        let mut arp = [0u8; 56];
        arp[..8].copy_from_slice(&[0, 32, 8, 0, 20, 4, 0, 1]);
        fuzz_parse(&arp);
    }
}
