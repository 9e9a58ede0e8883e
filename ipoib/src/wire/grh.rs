//! The 40-byte InfiniBand Global Route Header (IBA 8.3), which the HCA writes
//! at the front of every UD receive buffer. Its layout is IPv6's:
//!
//! ```text
//! 0     IPVer(4) | TClass high 4      1     TClass low 4 | FlowLabel high 4
//! 2..4  FlowLabel low 16              4..6  PayLen
//! 6     NxtHdr (0x1B = IBA transport) 7     HopLmt
//! 8..24 SGID                          24..40 DGID
//! ```
//!
//! The sim fabric can use [`build_grh`] to fill receive buffers, and the pcap
//! writer uses it as the 40-byte prefix of received packets.

use verbs_shim::Gid;

use super::{need, WireError};

/// Length of a GRH.
pub const HEADER_LEN: usize = 40;
/// `IPVer` of a GRH.
pub const VERSION: u8 = 6;
/// `NxtHdr` for an IBA transport header (BTH) following the GRH.
pub const NEXT_HEADER_IBA: u8 = 0x1b;

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// A parsed GRH. `flow_label` keeps only its low 20 bits on emit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Repr {
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Bytes after the GRH, as IBA counts them (through the ICRC).
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub sgid: Gid,
    pub dgid: Gid,
}

impl Repr {
    /// Parses the first 40 bytes of `data`; the version must be 6.
    pub fn parse(data: &[u8]) -> Result<Repr, WireError> {
        let b: &[u8; HEADER_LEN] = data
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Truncated)?;
        let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let version = b[0] >> 4;
        if version != VERSION {
            return Err(WireError::BadGrhVersion(version));
        }
        Ok(Repr {
            traffic_class: ((word >> 20) & 0xff) as u8,
            flow_label: word & FLOW_LABEL_MASK,
            payload_len: u16::from_be_bytes([b[4], b[5]]),
            next_header: b[6],
            hop_limit: b[7],
            sgid: Gid::from_slice(&b[8..24]).unwrap_or_default(),
            dgid: Gid::from_slice(&b[24..40]).unwrap_or_default(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let word = (u32::from(VERSION) << 28)
            | (u32::from(self.traffic_class) << 20)
            | (self.flow_label & FLOW_LABEL_MASK);
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&word.to_be_bytes());
        out[4..6].copy_from_slice(&self.payload_len.to_be_bytes());
        out[6] = self.next_header;
        out[7] = self.hop_limit;
        out[8..24].copy_from_slice(self.sgid.as_bytes());
        out[24..40].copy_from_slice(self.dgid.as_bytes());
        out
    }

    /// Writes the GRH into the first 40 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        need(buf.len(), HEADER_LEN)?;
        if let Some(dst) = buf.get_mut(..HEADER_LEN) {
            dst.copy_from_slice(&self.to_bytes());
        }
        Ok(())
    }
}

/// A GRH as an HCA would deliver it for a packet inside one subnet:
/// traffic class 0, flow label 0, next header 0x1B, hop limit 1.
pub fn build_grh(sgid: &Gid, dgid: &Gid, payload_len: u16) -> [u8; HEADER_LEN] {
    Repr {
        traffic_class: 0,
        flow_label: 0,
        payload_len,
        next_header: NEXT_HEADER_IBA,
        hop_limit: 1,
        sgid: *sgid,
        dgid: *dgid,
    }
    .to_bytes()
}

/// The sender's GID from the 40-byte GRH area of a UD receive buffer, or
/// `None` if the area holds neither form below.
///
/// - An IBA GRH (and RoCEv1, RoCEv2 over IPv6): `IPVer` 6, SGID at 8..24.
/// - RoCEv2 over IPv4: the first 20 bytes are undefined and an IPv4 header
///   fills 20..40; the sender's GID is its IPv4-mapped source address
///   (`::ffff:a.b.c.d`, the address at 32..36).
#[inline]
pub fn source_gid(area: &[u8; HEADER_LEN]) -> Option<Gid> {
    let mut gid = [0u8; 16];
    if area[0] >> 4 == VERSION {
        gid.copy_from_slice(&area[8..24]);
    } else if area[20] >> 4 == 4 {
        gid[10] = 0xff;
        gid[11] = 0xff;
        gid[12..].copy_from_slice(&area[32..36]);
    } else {
        return None;
    }
    Some(Gid(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_gid_of_a_grh_and_of_a_rocev2_ipv4_header() {
        let s = Gid::from_parts(0xfe80 << 48, 2);
        let g = build_grh(&s, &Gid::ZERO, 0);
        assert_eq!(source_gid(&g), Some(s));
        let mut v4 = [0u8; HEADER_LEN];
        v4[20] = 0x45;
        v4[32..36].copy_from_slice(&[10, 0, 2, 15]);
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 15];
        assert_eq!(source_gid(&v4), Some(Gid(mapped)));
        assert_eq!(source_gid(&[0u8; HEADER_LEN]), None);
    }

    #[test]
    fn build_and_parse() {
        let s = Gid::from_parts(0xfe80 << 48, 2);
        let d = Gid::from_parts(0xfe80 << 48, 3);
        let g = build_grh(&s, &d, 0x0123);
        assert_eq!(&g[..8], &[0x60, 0, 0, 0, 0x01, 0x23, 0x1b, 0x01]);
        assert_eq!(&g[8..24], s.as_bytes());
        assert_eq!(&g[24..], d.as_bytes());
        let r = Repr::parse(&g).unwrap();
        assert_eq!((r.sgid, r.dgid, r.payload_len), (s, d, 0x0123));
    }

    #[test]
    fn traffic_class_and_flow_label_bits() {
        let mut b = [0u8; 40];
        b[..4].copy_from_slice(&[0x6a, 0xbc, 0xde, 0xf1]);
        let r = Repr::parse(&b).unwrap();
        assert_eq!(r.traffic_class, 0xab);
        assert_eq!(r.flow_label, 0xc_def1);
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    fn errors() {
        let g = build_grh(&Gid::ZERO, &Gid::ZERO, 0);
        for len in 0..HEADER_LEN {
            assert_eq!(Repr::parse(&g[..len]), Err(WireError::Truncated));
        }
        let mut bad = g;
        bad[0] = 0x45;
        assert_eq!(Repr::parse(&bad), Err(WireError::BadGrhVersion(4)));
        let r = Repr::parse(&g).unwrap();
        assert!(r.emit(&mut [0u8; 39]).is_err());
    }
}
