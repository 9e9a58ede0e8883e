//! Why a context or a port could not be opened. Every message says what to
//! change.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A failure to open an RDMA device, port or queue pair.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RdmaError {
    /// libibverbs found no device at all.
    NoDevice,
    /// No device has the configured name.
    NotFound {
        name: String,
        available: Vec<String>,
    },
    /// The device has no such port.
    BadPort { device: String, port: u8, ports: u8 },
    /// The GID index is past the end of the port's GID table.
    BadGidIndex {
        device: String,
        port: u8,
        index: u8,
        table_len: u32,
    },
    /// The GID table entry is all zeros (no address behind it).
    EmptyGid { device: String, port: u8, index: u8 },
    /// The P_Key index is past the end of the port's P_Key table.
    BadPkeyIndex {
        device: String,
        port: u8,
        index: u16,
        table_len: u16,
    },
    /// The P_Key table entry names no partition.
    EmptyPkey {
        device: String,
        port: u8,
        index: u16,
    },
    /// A guest's P_Key is not in the port's P_Key table (see the `pkeys`
    /// module for how membership is matched).
    PkeyNotInTable {
        device: String,
        port: u8,
        pkey: u16,
        /// The table's non-empty entries.
        table: Vec<u16>,
    },
    /// A configuration field is out of range.
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    /// The buffer region cannot hold the slot layout.
    RegionTooSmall { needed: usize, actual: usize },
    /// The layout has no TX or no RX slots.
    EmptyLayout,
    /// A slot cannot hold the 40-byte GRH area plus the smallest MTU.
    SlotTooSmall { slot_size: u32, needed: usize },
    /// The layout needs more of something than the device has.
    LayoutTooLarge {
        what: &'static str,
        requested: usize,
        max: usize,
    },
    /// A verbs call failed.
    Verbs { call: &'static str, errno: i32 },
    /// No address resolution thread could be started.
    ResolverThreads { errno: i32 },
}

impl RdmaError {
    /// What to try when `call` fails with `errno`.
    fn hint(call: &str, errno: i32) -> &'static str {
        // "ibv_modify_qp(INIT)" and the like are hinted as "ibv_modify_qp".
        let base = call.split('(').next().unwrap_or(call);
        match (base, errno) {
            ("ibv_reg_mr", libc::ENOMEM | libc::EPERM | libc::EFAULT) => {
                "the locked-memory limit is probably too low: raise it (`ulimit -l unlimited`, \
                 LimitMEMLOCK=infinity for a systemd unit, or memlock in \
                 /etc/security/limits.conf)"
            }
            ("ibv_open_device", libc::EACCES | libc::EPERM) => {
                "no permission on /dev/infiniband/uverbs*: run as root or give the user access \
                 (the `rdma` group, or a udev rule)"
            }
            ("ibv_get_device_list", _) => {
                "is the ib_uverbs module loaded and is a libibverbs provider installed \
                 (ibverbs-providers)?"
            }
            ("ibv_modify_qp", libc::EINVAL) => {
                "the device refused the QP attributes: check `port`, `pkey_index` and `qkey`"
            }
            (_, libc::ENOMEM) => "the device is out of resources: use a smaller slot layout",
            _ => "see the libibverbs man page of this call and the kernel log (dmesg)",
        }
    }
}

impl fmt::Display for RdmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdmaError::NoDevice => f.write_str(
                "no RDMA device (ibv_get_device_list found none; load a driver, e.g. \
                 `rdma link add rxe0 type rxe netdev eth0`)",
            ),
            RdmaError::NotFound { name, available } => write!(
                f,
                "no RDMA device named `{name}`; set `device` to one of: {}",
                available.join(", ")
            ),
            RdmaError::BadPort {
                device,
                port,
                ports,
            } => write!(
                f,
                "device {device} has no port {port}; set `port` to 1..={ports}"
            ),
            RdmaError::BadGidIndex {
                device,
                port,
                index,
                table_len,
            } => write!(
                f,
                "GID index {index} is past the end of the GID table of {device} port {port} \
                 ({table_len} entries); set `gid_index` below {table_len} \
                 (`ibv_devinfo -v` lists them)"
            ),
            RdmaError::EmptyGid {
                device,
                port,
                index,
            } => write!(
                f,
                "GID index {index} of {device} port {port} is empty; pick a populated one \
                 (`ibv_devinfo -v`, or /sys/class/infiniband/{device}/ports/{port}/gids/); \
                 on soft-RoCE the netdev needs an IP address"
            ),
            RdmaError::BadPkeyIndex {
                device,
                port,
                index,
                table_len,
            } => write!(
                f,
                "P_Key index {index} is past the end of the P_Key table of {device} port \
                 {port} ({table_len} entries); set `pkey_index` below {table_len}"
            ),
            RdmaError::EmptyPkey {
                device,
                port,
                index,
            } => write!(
                f,
                "P_Key index {index} of {device} port {port} holds no partition; pick another \
                 `pkey_index` (/sys/class/infiniband/{device}/ports/{port}/pkeys/)"
            ),
            RdmaError::PkeyNotInTable {
                device,
                port,
                pkey,
                table,
            } => {
                write!(
                    f,
                    "P_Key {pkey:#06x} is not in the P_Key table of {device} port {port} \
                     (it holds"
                )?;
                for key in table {
                    write!(f, " {key:#06x}")?;
                }
                write!(
                    f,
                    "); the subnet manager must add the partition to the port \
                     (/sys/class/infiniband/{device}/ports/{port}/pkeys/), or the guest's \
                     P_Key must change"
                )
            }
            RdmaError::ResolverThreads { errno } => write!(
                f,
                "cannot start the address resolution threads: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            RdmaError::InvalidConfig { field, reason } => {
                write!(f, "invalid RDMA configuration `{field}`: {reason}")
            }
            RdmaError::RegionTooSmall { needed, actual } => write!(
                f,
                "buffer region holds {actual} bytes, the slot layout needs {needed}; \
                 enlarge the region or use fewer or smaller slots"
            ),
            RdmaError::EmptyLayout => {
                f.write_str("the slot layout needs at least one TX and one RX slot")
            }
            RdmaError::SlotTooSmall { slot_size, needed } => write!(
                f,
                "slots of {slot_size} bytes cannot hold the 40-byte GRH area and a 256-byte \
                 packet; use slots of at least {needed} bytes"
            ),
            RdmaError::LayoutTooLarge {
                what,
                requested,
                max,
            } => write!(
                f,
                "the slot layout needs {requested} {what}, the device allows {max}; \
                 use fewer slots"
            ),
            RdmaError::Verbs { call, errno } => write!(
                f,
                "{call} failed: {} ({})",
                std::io::Error::from_raw_os_error(*errno),
                RdmaError::hint(call, *errno)
            ),
        }
    }
}

impl core::error::Error for RdmaError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn no_device_message_is_exact() {
        assert_eq!(
            RdmaError::NoDevice.to_string(),
            "no RDMA device (ibv_get_device_list found none; load a driver, e.g. \
             `rdma link add rxe0 type rxe netdev eth0`)"
        );
    }

    #[test]
    fn messages_say_what_to_fix() {
        let e = RdmaError::NotFound {
            name: "mlx9".into(),
            available: vec!["rxe0".into(), "mlx5_0".into()],
        };
        assert_eq!(
            e.to_string(),
            "no RDMA device named `mlx9`; set `device` to one of: rxe0, mlx5_0"
        );
        let e = RdmaError::BadPort {
            device: "rxe0".into(),
            port: 2,
            ports: 1,
        };
        assert_eq!(
            e.to_string(),
            "device rxe0 has no port 2; set `port` to 1..=1"
        );
        let e = RdmaError::BadGidIndex {
            device: "rxe0".into(),
            port: 1,
            index: 9,
            table_len: 4,
        };
        assert!(e.to_string().contains("set `gid_index` below 4"));
        let e = RdmaError::EmptyGid {
            device: "rxe0".into(),
            port: 1,
            index: 1,
        };
        assert!(e
            .to_string()
            .contains("/sys/class/infiniband/rxe0/ports/1/gids/"));
        let e = RdmaError::Verbs {
            call: "ibv_reg_mr",
            errno: libc::ENOMEM,
        };
        let msg = e.to_string();
        assert!(msg.starts_with("ibv_reg_mr failed: "), "{msg}");
        assert!(msg.contains("ulimit -l"), "{msg}");
        let e = RdmaError::Verbs {
            call: "ibv_create_qp",
            errno: libc::EINVAL,
        };
        assert!(e.to_string().contains("man page"));
        let e = RdmaError::LayoutTooLarge {
            what: "send work requests",
            requested: 70000,
            max: 16384,
        };
        assert_eq!(
            e.to_string(),
            "the slot layout needs 70000 send work requests, the device allows 16384; \
             use fewer slots"
        );
    }
}
