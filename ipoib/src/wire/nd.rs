//! IPv6 neighbour solicitations and advertisements (RFC 4861 sections 4.3,
//! 4.4) with the IPoIB link-layer address option (RFC 4391 section 9.1):
//!
//! ```text
//! ICMPv6 NS (135) / NA (136):
//!   0      type
//!   1      code (0)
//!   2..4   checksum (over the IPv6 pseudo-header)
//!   4      NA flags: 0x80 router, 0x40 solicited, 0x20 override (NS: 0)
//!   5..8   reserved
//!   8..24  target address
//!   24..   options
//! IPoIB link-layer address option:
//!   0      type: 1 source (in an NS), 2 target (in an NA)
//!   1      length in units of 8 bytes: 3
//!   2..22  the 20-byte IPoIB hardware address (flags, QPN, GID)
//!   22..24 padding (0)
//! ```
//!
//! [`NdRepr::parse`] reads the message (not its checksum, which needs the
//! IPv6 addresses: the device checks it with smoltcp's `Icmpv6Packet`).
//! Other options are skipped; a zero-length option, or a link-layer option
//! of any length but 3, makes the message malformed.

use smoltcp::wire::{Icmpv6Packet, Ipv6Address};

use super::{need, HwAddr, WireError};

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const FLAGS: usize = 4;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: usize = 24;
}

/// ICMPv6 type of a neighbour solicitation.
pub const TYPE_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const TYPE_ADVERT: u8 = 136;
/// Option type of the source link-layer address.
pub const OPT_SOURCE_LLA: u8 = 1;
/// Option type of the target link-layer address.
pub const OPT_TARGET_LLA: u8 = 2;
/// The IPoIB link-layer option's length, in units of 8 bytes.
pub const LLA_OPTION_UNITS: u8 = 3;
/// The IPoIB link-layer option's length in bytes.
pub const LLA_OPTION_LEN: usize = 24;
/// An NS or NA without options.
pub const MESSAGE_LEN: usize = field::OPTIONS;

const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// Which of the two messages, with the advertisement's flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NdKind {
    Solicit,
    Advert {
        router: bool,
        solicited: bool,
        override_: bool,
    },
}

/// A neighbour solicitation or advertisement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NdRepr {
    pub kind: NdKind,
    /// The address being asked about (NS) or advertised (NA).
    pub target: Ipv6Address,
    /// The source link-layer address of an NS, the target link-layer
    /// address of an NA.
    pub lla: Option<HwAddr>,
}

impl NdRepr {
    /// True if the ICMPv6 message in `icmp` is an NS or an NA (by its type
    /// byte only).
    pub fn is_nd(icmp: &[u8]) -> bool {
        matches!(icmp.first(), Some(&(TYPE_SOLICIT | TYPE_ADVERT)))
    }

    /// Parses an ICMPv6 NS or NA message (the IPv6 payload).
    pub fn parse(icmp: &[u8]) -> Result<NdRepr, WireError> {
        let head = icmp.get(..MESSAGE_LEN).ok_or(WireError::Truncated)?;
        let code = head[field::CODE];
        if code != 0 {
            return Err(WireError::BadNdCode(code));
        }
        let (kind, lla_type) = match head[field::TYPE] {
            TYPE_SOLICIT => (NdKind::Solicit, OPT_SOURCE_LLA),
            TYPE_ADVERT => {
                let flags = head[field::FLAGS];
                let kind = NdKind::Advert {
                    router: flags & FLAG_ROUTER != 0,
                    solicited: flags & FLAG_SOLICITED != 0,
                    override_: flags & FLAG_OVERRIDE != 0,
                };
                (kind, OPT_TARGET_LLA)
            }
            other => return Err(WireError::NotNeighbourDiscovery(other)),
        };
        let mut target = [0u8; 16];
        target.copy_from_slice(&head[field::TARGET]);
        let target = Ipv6Address::from(target);
        if target.is_multicast() {
            return Err(WireError::MulticastTarget);
        }
        let mut lla = None;
        let mut options = icmp.get(field::OPTIONS..).unwrap_or(&[]);
        while !options.is_empty() {
            let (&kind, &units) = match options {
                [kind, units, ..] => (kind, units),
                _ => return Err(WireError::Truncated),
            };
            let len = usize::from(units) * 8;
            if len == 0 {
                return Err(WireError::BadNdOption { kind, units });
            }
            let option = options.get(..len).ok_or(WireError::Truncated)?;
            if kind == OPT_SOURCE_LLA || kind == OPT_TARGET_LLA {
                if units != LLA_OPTION_UNITS {
                    return Err(WireError::BadNdOption { kind, units });
                }
                if kind == lla_type && lla.is_none() {
                    lla = Some(HwAddr::parse(&option[2..])?);
                }
            }
            options = &options[len..];
        }
        Ok(NdRepr { kind, target, lla })
    }

    /// The message's length: 24 bytes, and 24 more with a link-layer option.
    pub fn buffer_len(&self) -> usize {
        MESSAGE_LEN
            + if self.lla.is_some() {
                LLA_OPTION_LEN
            } else {
                0
            }
    }

    /// Writes the message into the first [`buffer_len`](Self::buffer_len)
    /// bytes of `buf`, with its checksum for an IPv6 packet from `src` to
    /// `dst`.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: &Ipv6Address,
        dst: &Ipv6Address,
    ) -> Result<(), WireError> {
        let len = self.buffer_len();
        need(buf.len(), len)?;
        let msg = &mut buf[..len];
        msg.fill(0);
        let (kind, flags, opt) = match self.kind {
            NdKind::Solicit => (TYPE_SOLICIT, 0, OPT_SOURCE_LLA),
            NdKind::Advert {
                router,
                solicited,
                override_,
            } => {
                let mut flags = 0;
                if router {
                    flags |= FLAG_ROUTER;
                }
                if solicited {
                    flags |= FLAG_SOLICITED;
                }
                if override_ {
                    flags |= FLAG_OVERRIDE;
                }
                (TYPE_ADVERT, flags, OPT_TARGET_LLA)
            }
        };
        msg[field::TYPE] = kind;
        msg[field::FLAGS] = flags;
        msg[field::TARGET].copy_from_slice(&self.target.octets());
        if let Some(hw) = self.lla {
            let option = &mut msg[field::OPTIONS..];
            option[0] = opt;
            option[1] = LLA_OPTION_UNITS;
            hw.emit(&mut option[2..])?;
        }
        msg[field::CHECKSUM].fill(0);
        Icmpv6Packet::new_unchecked(&mut *msg).fill_checksum(src, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verbs_shim::{Gid, Qpn};

    fn hw() -> HwAddr {
        HwAddr::new(Qpn::new_truncated(0x48), Gid::from_parts(0xfe80 << 48, 2))
    }

    const SRC: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 2);
    const DST: Ipv6Address = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 3);
    const TARGET: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 3);

    /// An NS for fe80::200:0:0:3 from fe80::200:0:0:2 (QPN 0x48, GID
    /// fe80::2), byte for byte.
    const NS: [u8; 48] = [
        135, 0, 0x79, 0xb8, 0, 0, 0, 0, // type, code, checksum (by hand), reserved
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 3, // target
        1, 3, // source LLA, 3 x 8 bytes
        0, 0, 0, 0x48, // flags, QPN
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // GID
        0, 0, // padding
    ];

    #[test]
    fn solicitation_both_directions() {
        let repr = NdRepr {
            kind: NdKind::Solicit,
            target: TARGET,
            lla: Some(hw()),
        };
        let mut buf = [0xa5u8; 48];
        repr.emit(&mut buf, &SRC, &DST).unwrap();
        assert!(Icmpv6Packet::new_unchecked(&buf[..]).verify_checksum(&SRC, &DST));
        assert_eq!(buf, NS);
        assert_eq!(NdRepr::parse(&buf), Ok(repr));
        assert_eq!(repr.buffer_len(), 48);
    }

    #[test]
    fn the_fixture_checksum_is_right() {
        assert!(Icmpv6Packet::new_unchecked(&NS[..]).verify_checksum(&SRC, &DST));
    }

    #[test]
    fn advertisement_flags_and_target_option() {
        let repr = NdRepr {
            kind: NdKind::Advert {
                router: false,
                solicited: true,
                override_: true,
            },
            target: TARGET,
            lla: Some(hw()),
        };
        let mut buf = [0u8; 48];
        repr.emit(&mut buf, &TARGET, &SRC).unwrap();
        assert_eq!(buf[0], 136);
        assert_eq!(buf[4], 0x60);
        assert_eq!(&buf[24..26], &[2, 3]);
        assert_eq!(&buf[26..46], &hw().to_bytes());
        assert_eq!(&buf[46..48], &[0, 0]);
        assert_eq!(NdRepr::parse(&buf), Ok(repr));
    }

    #[test]
    fn without_option() {
        let repr = NdRepr {
            kind: NdKind::Advert {
                router: true,
                solicited: false,
                override_: false,
            },
            target: TARGET,
            lla: None,
        };
        let mut buf = [0u8; 24];
        repr.emit(&mut buf, &TARGET, &SRC).unwrap();
        assert_eq!(buf[4], 0x80);
        assert_eq!(NdRepr::parse(&buf), Ok(repr));
        assert_eq!(
            repr.emit(&mut buf[..23], &TARGET, &SRC),
            Err(WireError::BufferTooSmall {
                needed: 24,
                available: 23
            })
        );
    }

    #[test]
    fn malformed() {
        // An Ethernet-sized option (1 unit) is not an IPoIB address.
        let mut eth = [0u8; 32];
        eth[..24].copy_from_slice(&NS[..24]);
        eth[24..26].copy_from_slice(&[1, 1]);
        assert_eq!(
            NdRepr::parse(&eth),
            Err(WireError::BadNdOption { kind: 1, units: 1 })
        );
        // A zero-length option.
        let mut zero = NS;
        zero[25] = 0;
        assert_eq!(
            NdRepr::parse(&zero),
            Err(WireError::BadNdOption { kind: 1, units: 0 })
        );
        // An option running past the end.
        let mut long = NS;
        long[25] = 4;
        assert_eq!(NdRepr::parse(&long), Err(WireError::Truncated));
        let mut code = NS;
        code[1] = 1;
        assert_eq!(NdRepr::parse(&code), Err(WireError::BadNdCode(1)));
        let mut echo = NS;
        echo[0] = 128;
        assert_eq!(
            NdRepr::parse(&echo),
            Err(WireError::NotNeighbourDiscovery(128))
        );
        let mut multicast = NS;
        multicast[8] = 0xff;
        assert_eq!(NdRepr::parse(&multicast), Err(WireError::MulticastTarget));
        for len in 0..24 {
            assert_eq!(NdRepr::parse(&NS[..len]), Err(WireError::Truncated));
        }
        assert_eq!(NdRepr::parse(&NS[..25]), Err(WireError::Truncated));
    }

    #[test]
    fn unknown_options_are_skipped() {
        let mut msg = [0u8; 56];
        msg[..24].copy_from_slice(&NS[..24]);
        msg[24..26].copy_from_slice(&[14, 1]); // a nonce option, 8 bytes
        msg[32..56].copy_from_slice(&NS[24..48]);
        let repr = NdRepr::parse(&msg).unwrap();
        assert_eq!(repr.lla, Some(hw()));
        // A target LLA in an NS is not its source: ignored.
        let mut msg = NS;
        msg[24] = 2;
        assert_eq!(NdRepr::parse(&msg).unwrap().lla, None);
    }
}
