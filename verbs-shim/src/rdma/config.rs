//! What [`super::RdmaContext::open`] needs to know, and what the port told
//! it.

use alloc::string::String;

use super::error::RdmaError;
use crate::types::{IbMtu, PortState, QKey};

/// Which device, port, GID and P_Key a context uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RdmaConfig {
    /// The device name as `ibv_devices` prints it (`mlx5_0`, `rxe0`), or
    /// `None` for the first device.
    pub device: Option<String>,
    /// The port number, from 1.
    pub port: u8,
    /// The index into the port's GID table. On soft-RoCE index 0 is the
    /// link-local IPv6 GID and index 1 is usually the IPv4-mapped one.
    pub gid_index: u8,
    /// The index into the port's P_Key table. The QP joins this partition.
    pub pkey_index: u16,
    /// The Q_Key the UD QP accepts.
    pub qkey: QKey,
    /// An upper bound on the MTU, below the port's active MTU.
    pub max_mtu: Option<IbMtu>,
}

impl Default for RdmaConfig {
    fn default() -> RdmaConfig {
        RdmaConfig {
            device: None,
            port: 1,
            gid_index: 0,
            pkey_index: 0,
            qkey: QKey::IPOIB_DEFAULT,
            max_mtu: None,
        }
    }
}

/// The longest device name libibverbs stores (`IBV_SYSFS_NAME_MAX` - 1).
pub(super) const MAX_DEVICE_NAME: usize = 63;

/// Q_Keys with this bit set are "controlled": only privileged QPs may use
/// them (IBA 10.2.4.2).
pub(super) const CONTROLLED_QKEY: u32 = 0x8000_0000;

impl RdmaConfig {
    /// Checks what can be checked without a device.
    pub fn validate(&self) -> Result<(), RdmaError> {
        if let Some(name) = &self.device {
            if name.is_empty() || name.len() > MAX_DEVICE_NAME || name.contains('\0') {
                return Err(RdmaError::InvalidConfig {
                    field: "device",
                    reason: "a device name is 1 to 63 bytes without NUL (see `ibv_devices`)",
                });
            }
        }
        if self.port == 0 {
            return Err(RdmaError::InvalidConfig {
                field: "port",
                reason: "port numbers start at 1",
            });
        }
        if self.qkey.0 & CONTROLLED_QKEY != 0 {
            return Err(RdmaError::InvalidConfig {
                field: "qkey",
                reason:
                    "Q_Keys with bit 31 set are controlled (privileged); use one below 0x80000000",
            });
        }
        Ok(())
    }
}

/// What the port's wire is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkLayer {
    /// Native InfiniBand (also reported as "unspecified" by old kernels).
    InfiniBand,
    /// RoCE (Ethernet): soft-RoCE `rxe`, or a RoCE NIC.
    Ethernet,
}

impl LinkLayer {
    /// From `ibv_port_attr.link_layer`: 0 unspecified (InfiniBand), 1
    /// InfiniBand, 2 Ethernet. Anything else is treated as InfiniBand, the
    /// conservative choice (no unicast without a path record).
    pub(super) const fn from_code(code: u8) -> LinkLayer {
        match code {
            2 => LinkLayer::Ethernet,
            _ => LinkLayer::InfiniBand,
        }
    }
}

/// `ibv_port_state` to [`PortState`]: `ACTIVE_DEFER` (5) counts as active,
/// `NOP` (0) and unknown codes as down.
pub(super) const fn port_state(code: u32) -> PortState {
    match code {
        2 => PortState::Init,
        3 => PortState::Armed,
        4 | 5 => PortState::Active,
        _ => PortState::Down,
    }
}

/// The MTU the port can use: the active MTU, capped by the configuration.
/// `ibv_mtu` codes are the IBA codes [`IbMtu::from_code`] reads; an unknown
/// code is taken as the smallest MTU.
pub(super) fn usable_mtu(active_code: u32, cap: Option<IbMtu>) -> IbMtu {
    let active = u8::try_from(active_code)
        .ok()
        .and_then(IbMtu::from_code)
        .unwrap_or(IbMtu::Mtu256);
    match cap {
        Some(cap) if cap < active => cap,
        _ => active,
    }
}

/// The largest MTU not above `mtu` whose packets fit a slot of `slot_size`
/// bytes behind the 40-byte GRH area, or `None` if not even 256 bytes do.
pub(super) fn mtu_for_slot(mtu: IbMtu, slot_size: usize) -> Option<IbMtu> {
    const ALL: [IbMtu; 5] = [
        IbMtu::Mtu4096,
        IbMtu::Mtu2048,
        IbMtu::Mtu1024,
        IbMtu::Mtu512,
        IbMtu::Mtu256,
    ];
    ALL.into_iter()
        .find(|m| *m <= mtu && crate::types::GRH_LEN + m.bytes() <= slot_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn defaults() {
        let c = RdmaConfig::default();
        assert_eq!(c.port, 1);
        assert_eq!(c.gid_index, 0);
        assert_eq!(c.pkey_index, 0);
        assert_eq!(c.qkey, QKey::IPOIB_DEFAULT);
        assert_eq!(c.device, None);
        assert_eq!(c.max_mtu, None);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |c: RdmaConfig, field: &str| match c.validate() {
            Err(RdmaError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        };
        bad(
            RdmaConfig {
                port: 0,
                ..RdmaConfig::default()
            },
            "port",
        );
        bad(
            RdmaConfig {
                qkey: QKey(0x8000_0b1b),
                ..RdmaConfig::default()
            },
            "qkey",
        );
        for name in ["", "a\0b", &"x".repeat(64)] {
            bad(
                RdmaConfig {
                    device: Some(name.to_string()),
                    ..RdmaConfig::default()
                },
                "device",
            );
        }
        let ok = RdmaConfig {
            device: Some("x".repeat(63)),
            ..RdmaConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn port_codes() {
        assert_eq!(port_state(0), PortState::Down);
        assert_eq!(port_state(1), PortState::Down);
        assert_eq!(port_state(2), PortState::Init);
        assert_eq!(port_state(3), PortState::Armed);
        assert_eq!(port_state(4), PortState::Active);
        assert_eq!(port_state(5), PortState::Active);
        assert_eq!(port_state(99), PortState::Down);
        assert_eq!(LinkLayer::from_code(0), LinkLayer::InfiniBand);
        assert_eq!(LinkLayer::from_code(1), LinkLayer::InfiniBand);
        assert_eq!(LinkLayer::from_code(2), LinkLayer::Ethernet);
    }

    #[test]
    fn mtu_is_capped_by_config_and_slot() {
        assert_eq!(usable_mtu(3, None), IbMtu::Mtu1024);
        assert_eq!(usable_mtu(5, Some(IbMtu::Mtu2048)), IbMtu::Mtu2048);
        assert_eq!(usable_mtu(3, Some(IbMtu::Mtu4096)), IbMtu::Mtu1024);
        assert_eq!(usable_mtu(0, None), IbMtu::Mtu256);
        assert_eq!(usable_mtu(77, None), IbMtu::Mtu256);

        assert_eq!(mtu_for_slot(IbMtu::Mtu4096, 4096), Some(IbMtu::Mtu2048));
        assert_eq!(mtu_for_slot(IbMtu::Mtu4096, 4136), Some(IbMtu::Mtu4096));
        assert_eq!(mtu_for_slot(IbMtu::Mtu1024, 8192), Some(IbMtu::Mtu1024));
        assert_eq!(mtu_for_slot(IbMtu::Mtu2048, 296), Some(IbMtu::Mtu256));
        assert_eq!(mtu_for_slot(IbMtu::Mtu2048, 295), None);
    }
}
