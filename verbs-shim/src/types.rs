//! Plain InfiniBand identifiers and port attributes.
//!
//! These are value types shared by every provider and by `ipoib`. They carry
//! no behaviour beyond formatting and a few well-known constants.

use core::fmt;

/// A 128-bit InfiniBand Global Identifier (GID), network byte order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    pub const ZERO: Gid = Gid([0; 16]);

    /// Builds a GID from a 64-bit subnet prefix and a 64-bit interface id.
    pub const fn from_parts(subnet_prefix: u64, interface_id: u64) -> Gid {
        let p = subnet_prefix.to_be_bytes();
        let i = interface_id.to_be_bytes();
        Gid([
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], i[0], i[1], i[2], i[3], i[4], i[5],
            i[6], i[7],
        ])
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// True for a multicast GID (first byte 0xff).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] == 0xff
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Gid> {
        let arr: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Gid(arr))
    }
}

impl fmt::Display for Gid {
    /// Formats like Linux: eight groups of four hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks_exact(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gid({self})")
    }
}

/// A 16-bit Local Identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Lid(pub u16);

/// A 24-bit Queue Pair Number. The upper 8 bits are always zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Qpn(u32);

impl Qpn {
    /// QPN used to address all members of a multicast group.
    pub const MULTICAST: Qpn = Qpn(0x00ff_ffff);
    pub const MAX: u32 = 0x00ff_ffff;

    /// Returns `None` if `value` does not fit in 24 bits.
    pub const fn new(value: u32) -> Option<Qpn> {
        if value <= Self::MAX {
            Some(Qpn(value))
        } else {
            None
        }
    }

    /// Keeps only the low 24 bits.
    pub const fn new_truncated(value: u32) -> Qpn {
        Qpn(value & Self::MAX)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A 16-bit Partition Key. Bit 15 is the membership bit: set means full
/// member, clear means limited member. The low 15 bits name the partition.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct PKey(pub u16);

impl PKey {
    /// The default partition, full membership.
    pub const DEFAULT: PKey = PKey(0xffff);
    const FULL_BIT: u16 = 0x8000;

    pub const fn partition(self) -> u16 {
        self.0 & !Self::FULL_BIT
    }

    pub const fn is_full_member(self) -> bool {
        self.0 & Self::FULL_BIT != 0
    }

    /// The key with the membership bit set, as used in the IPoIB MGID.
    pub const fn as_full(self) -> PKey {
        PKey(self.0 | Self::FULL_BIT)
    }

    /// IBA 10.9.3: two keys match when their partitions are equal, they are
    /// non-zero, and at least one of them is a full member.
    pub const fn matches(self, other: PKey) -> bool {
        self.partition() == other.partition()
            && self.partition() != 0
            && (self.is_full_member() || other.is_full_member())
    }
}

/// A 32-bit Queue Key, checked by UD receivers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct QKey(pub u32);

impl QKey {
    /// The Q_Key Linux IPoIB and OpenSM use for the broadcast group.
    pub const IPOIB_DEFAULT: QKey = QKey(0x0000_0b1b);
}

/// The InfiniBand path MTU (payload bytes per packet, GRH/headers excluded).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IbMtu {
    Mtu256,
    Mtu512,
    Mtu1024,
    Mtu2048,
    Mtu4096,
}

impl IbMtu {
    pub const fn bytes(self) -> usize {
        match self {
            IbMtu::Mtu256 => 256,
            IbMtu::Mtu512 => 512,
            IbMtu::Mtu1024 => 1024,
            IbMtu::Mtu2048 => 2048,
            IbMtu::Mtu4096 => 4096,
        }
    }

    /// The IBA enum encoding (1 = 256 ... 5 = 4096).
    pub const fn to_code(self) -> u8 {
        match self {
            IbMtu::Mtu256 => 1,
            IbMtu::Mtu512 => 2,
            IbMtu::Mtu1024 => 3,
            IbMtu::Mtu2048 => 4,
            IbMtu::Mtu4096 => 5,
        }
    }

    pub const fn from_code(code: u8) -> Option<IbMtu> {
        match code {
            1 => Some(IbMtu::Mtu256),
            2 => Some(IbMtu::Mtu512),
            3 => Some(IbMtu::Mtu1024),
            4 => Some(IbMtu::Mtu2048),
            5 => Some(IbMtu::Mtu4096),
            _ => None,
        }
    }

    pub const fn from_bytes(bytes: usize) -> Option<IbMtu> {
        match bytes {
            256 => Some(IbMtu::Mtu256),
            512 => Some(IbMtu::Mtu512),
            1024 => Some(IbMtu::Mtu1024),
            2048 => Some(IbMtu::Mtu2048),
            4096 => Some(IbMtu::Mtu4096),
            _ => None,
        }
    }
}

/// Logical port state, as in `ibv_port_state`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortState {
    Down,
    Init,
    Armed,
    Active,
}

impl PortState {
    pub const fn to_code(self) -> u8 {
        match self {
            PortState::Down => 1,
            PortState::Init => 2,
            PortState::Armed => 3,
            PortState::Active => 4,
        }
    }

    pub const fn from_code(code: u8) -> Option<PortState> {
        match code {
            1 => Some(PortState::Down),
            2 => Some(PortState::Init),
            3 => Some(PortState::Armed),
            4 => Some(PortState::Active),
            _ => None,
        }
    }
}

/// What a provider does for its user beyond moving packets. Everything is
/// off unless the provider can honour it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Offloads {
    /// Every packet the provider delivers had its IPv4 header checksum and
    /// its TCP and UDP checksums checked, or is covered from the sender's
    /// HCA to ours by a check that stands for them, and a packet that
    /// failed is not delivered: the user need not check them again. The
    /// sim fabric: yes (a corrupted packet fails its ICRC and is dropped).
    /// rdma: no; an HCA reports a checked IP checksum per completion
    /// (`IBV_WC_IP_CSUM_OK`), rxe never does, and a device-wide promise
    /// cannot be made from that.
    pub rx_checksums: bool,
}

impl Offloads {
    /// Nothing offloaded.
    pub const NONE: Offloads = Offloads {
        rx_checksums: false,
    };

    /// The channel's back-end features bit for [`Offloads::rx_checksums`]
    /// (docs/CHANNEL.md).
    pub const FEATURE_RX_CHECKSUMS: u32 = 1 << 0;

    /// The back-end features word announcing these offloads.
    pub const fn to_features(self) -> u32 {
        if self.rx_checksums {
            Self::FEATURE_RX_CHECKSUMS
        } else {
            0
        }
    }

    /// The offloads a back-end features word announces; unknown bits are
    /// ignored.
    pub const fn from_features(features: u32) -> Offloads {
        Offloads {
            rx_checksums: features & Self::FEATURE_RX_CHECKSUMS != 0,
        }
    }
}

/// What a UD QP on a port looks like to the fabric.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PortAttr {
    pub gid: Gid,
    pub lid: Lid,
    /// QPN of this port's UD QP.
    pub qpn: Qpn,
    pub pkey: PKey,
    /// Q_Key the UD QP accepts.
    pub qkey: QKey,
    pub mtu: IbMtu,
    pub state: PortState,
}

/// The size of the Global Route Header the HCA writes at the start of every
/// UD receive buffer, whether or not the packet carried one.
pub const GRH_LEN: usize = 40;

#[cfg(test)]
mod offloads_tests {
    use super::Offloads;

    #[test]
    fn offloads_round_trip_through_the_features_word() {
        assert_eq!(Offloads::default(), Offloads::NONE);
        assert_eq!(Offloads::NONE.to_features(), 0);
        let on = Offloads { rx_checksums: true };
        assert_eq!(on.to_features(), Offloads::FEATURE_RX_CHECKSUMS);
        assert_eq!(Offloads::from_features(on.to_features()), on);
        // Bits this build does not know are ignored.
        assert_eq!(
            Offloads::from_features(!Offloads::FEATURE_RX_CHECKSUMS),
            Offloads::NONE
        );
        assert_eq!(Offloads::from_features(u32::MAX), on);
    }
}
