//! The 20-byte IPoIB link-layer address (RFC 4391 section 9.1.1).
//!
//! ```text
//! byte 0      flags (reserved in RFC 4391; Linux: 0x80 = connected mode)
//! bytes 1..4  QPN, big-endian 24 bits
//! bytes 4..20 GID
//! ```
//!
//! Linux shows it in `ip link` as 20 colon-separated hex bytes, e.g.
//! `00:00:00:48:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02`.

use core::fmt;

use verbs_shim::{Gid, Qpn};

use super::{need, WireError};

mod field {
    use core::ops::Range;

    pub const FLAGS: usize = 0;
    pub const QPN: Range<usize> = 1..4;
    pub const GID: Range<usize> = 4..20;
}

/// An IPoIB hardware address: flags byte, 24-bit QPN and port (or multicast) GID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct HwAddr {
    /// The first byte. RFC 4391 calls it reserved; Linux sets
    /// [`HwAddr::FLAG_CONNECTED_MODE`] when the port supports connected mode.
    pub flags: u8,
    pub qpn: Qpn,
    pub gid: Gid,
}

impl HwAddr {
    /// Encoded length in bytes (`INFINIBAND_ALEN`).
    pub const LEN: usize = 20;
    /// Linux `IPOIB_FLAGS_RC`: the sender accepts connected-mode (RC) traffic.
    pub const FLAG_CONNECTED_MODE: u8 = 0x80;

    pub const fn new(qpn: Qpn, gid: Gid) -> HwAddr {
        HwAddr { flags: 0, qpn, gid }
    }

    /// What a neighbour's advertised address is remembered as: its QPN and
    /// GID, and of the flags only connected mode (RFC 4755), which says
    /// whether it may be connected to.
    pub const fn as_neighbour(&self) -> HwAddr {
        HwAddr {
            flags: self.flags & Self::FLAG_CONNECTED_MODE,
            qpn: self.qpn,
            gid: self.gid,
        }
    }

    /// The address of a multicast group: flags 0, QPN 0xFFFFFF, the MGID.
    pub const fn multicast(mgid: Gid) -> HwAddr {
        HwAddr::new(Qpn::MULTICAST, mgid)
    }

    /// True if the GID is a multicast GID.
    pub const fn is_multicast(&self) -> bool {
        self.gid.is_multicast()
    }

    /// Reads the first 20 bytes of `data`; later bytes are ignored.
    pub fn parse(data: &[u8]) -> Result<HwAddr, WireError> {
        let bytes: &[u8; Self::LEN] = data
            .get(..Self::LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Truncated)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Decodes 20 bytes; cannot fail.
    pub const fn from_bytes(b: &[u8; Self::LEN]) -> HwAddr {
        let qpn = u32::from_be_bytes([0, b[1], b[2], b[3]]);
        let mut gid = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            gid[i] = b[field::GID.start + i];
            i += 1;
        }
        HwAddr {
            flags: b[field::FLAGS],
            qpn: Qpn::new_truncated(qpn),
            gid: Gid(gid),
        }
    }

    /// Writes the address into the first 20 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        need(buf.len(), Self::LEN)?;
        if let Some(dst) = buf.get_mut(..Self::LEN) {
            dst.copy_from_slice(&self.to_bytes());
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[field::FLAGS] = self.flags;
        let qpn = self.qpn.get().to_be_bytes();
        out[field::QPN].copy_from_slice(&qpn[1..]);
        out[field::GID].copy_from_slice(self.gid.as_bytes());
        out
    }
}

impl fmt::Display for HwAddr {
    /// Linux style: 20 colon-separated lower-case hex bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.to_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 20] = [
        0x80, 0x00, 0x00, 0x48, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ];

    fn addr() -> HwAddr {
        HwAddr {
            flags: HwAddr::FLAG_CONNECTED_MODE,
            qpn: Qpn::new(0x48).unwrap(),
            gid: Gid::from_parts(0xfe80_0000_0000_0000, 2),
        }
    }

    #[test]
    fn both_directions() {
        assert_eq!(HwAddr::parse(&BYTES), Ok(addr()));
        assert_eq!(addr().to_bytes(), BYTES);
        let mut buf = [0u8; 22];
        addr().emit(&mut buf).unwrap();
        assert_eq!(&buf[..20], &BYTES);
        assert_eq!(&buf[20..], &[0, 0]);
    }

    #[test]
    fn full_qpn_range() {
        let mut b = BYTES;
        b[1..4].copy_from_slice(&[0xff, 0xff, 0xff]);
        let a = HwAddr::parse(&b).unwrap();
        assert_eq!(a.qpn, Qpn::MULTICAST);
        assert_eq!(a.to_bytes(), b);
    }

    #[test]
    fn display_like_linux() {
        assert_eq!(
            std::format!("{}", addr()),
            "80:00:00:48:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:02"
        );
    }

    #[test]
    fn short_inputs() {
        for len in 0..HwAddr::LEN {
            assert_eq!(HwAddr::parse(&BYTES[..len]), Err(WireError::Truncated));
            let mut buf = [0u8; 20];
            assert_eq!(
                addr().emit(&mut buf[..len]),
                Err(WireError::BufferTooSmall {
                    needed: 20,
                    available: len
                })
            );
        }
    }

    #[test]
    fn multicast() {
        let m = HwAddr::multicast(Gid([0xff; 16]));
        assert!(m.is_multicast());
        assert_eq!(m.qpn.get(), 0xff_ffff);
        assert!(!addr().is_multicast());
    }

    #[test]
    fn a_neighbour_keeps_only_the_connected_mode_flag() {
        let gid = Gid::from_parts(0xfe80 << 48, 2);
        let qpn = Qpn::new(0x48).unwrap();
        let hw = HwAddr {
            flags: 0xff,
            qpn,
            gid,
        };
        let n = hw.as_neighbour();
        assert_eq!(n.flags, HwAddr::FLAG_CONNECTED_MODE);
        assert_eq!((n.qpn, n.gid), (qpn, gid));
        assert_eq!(
            HwAddr {
                flags: 0x7f,
                qpn,
                gid
            }
            .as_neighbour(),
            HwAddr::new(qpn, gid)
        );
    }
}
