//! An opened device port, shared by the guests' [`RdmaPort`]s.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::AtomicBool;

use ring::Window;

use super::config::{mtu_for_slot, port_state, usable_mtu, LinkLayer, RdmaConfig};
use super::error::RdmaError;
use super::ffi::{Device, DeviceCaps, DeviceList, QueueSpec, Queues};
use super::gather::HEAD_SEND_SGES;
use super::ipmc;
use super::pkeys;
use super::port::RdmaPort;
use super::resolver::Resolver;
use crate::slot::SlotLayout;
use crate::types::{Gid, IbMtu, Lid, PKey, PortState, QKey, GRH_LEN};

/// What every port opened on a context shares.
pub(super) struct Shared {
    pub dev: Arc<Device>,
    pub name: String,
    pub port: u8,
    pub link_layer: LinkLayer,
    pub gid: Gid,
    pub gid_index: u8,
    pub lid: Lid,
    pub pkey: PKey,
    pub pkey_index: u16,
    pub qkey: QKey,
    pub mtu: IbMtu,
    pub state: PortState,
    pub caps: DeviceCaps,
    /// RoCE: the network device behind the GID (name, interface index).
    pub netdev: Option<(String, u32)>,
    /// Creates the ports' address handles off the caller's thread.
    pub resolver: Resolver,
    /// Whether a port has said that rdma_cm is missing (said once).
    pub cm_missing_said: AtomicBool,
}

/// One port of one RDMA device, with a protection domain. Cheap to clone;
/// clones share the device. Each guest gets its own [`RdmaPort`] (memory
/// region, CQ, UD QP) from [`RdmaContext::open_port`].
///
/// The port attributes are read once, at open; link changes are not
/// followed (no async event handling).
#[derive(Clone)]
pub struct RdmaContext {
    shared: Arc<Shared>,
}

impl RdmaContext {
    /// The names of the devices libibverbs sees (empty when there are none).
    pub fn devices() -> Result<Vec<String>, RdmaError> {
        Ok(DeviceList::get()?.map(|l| l.names()).unwrap_or_default())
    }

    /// Opens the configured device (or the first one), reads the port, its
    /// GID and P_Key, and allocates a protection domain.
    pub fn open(config: &RdmaConfig) -> Result<RdmaContext, RdmaError> {
        config.validate()?;
        let list = DeviceList::get()?.ok_or(RdmaError::NoDevice)?;
        let names = list.names();
        let index = match &config.device {
            None => 0,
            Some(want) => {
                names
                    .iter()
                    .position(|n| n == want)
                    .ok_or_else(|| RdmaError::NotFound {
                        name: want.clone(),
                        available: names.clone(),
                    })?
            }
        };
        let name = names.get(index).cloned().unwrap_or_default();
        let dev = list.open(index)?;
        drop(list);
        let caps = dev.query_device()?;
        let port = config.port;
        if port > caps.phys_port_cnt {
            return Err(RdmaError::BadPort {
                device: name,
                port,
                ports: caps.phys_port_cnt,
            });
        }
        let info = dev.query_port(port)?;
        let gid_index = config.gid_index;
        if u32::from(gid_index) >= info.gid_tbl_len {
            return Err(RdmaError::BadGidIndex {
                device: name,
                port,
                index: gid_index,
                table_len: info.gid_tbl_len,
            });
        }
        let gid = Gid(dev.query_gid(port, gid_index)?);
        if gid == Gid::ZERO {
            return Err(RdmaError::EmptyGid {
                device: name,
                port,
                index: gid_index,
            });
        }
        let pkey_index = config.pkey_index;
        if pkey_index >= info.pkey_tbl_len {
            return Err(RdmaError::BadPkeyIndex {
                device: name,
                port,
                index: pkey_index,
                table_len: info.pkey_tbl_len,
            });
        }
        let pkey = PKey(dev.query_pkey(port, pkey_index)?);
        if pkey.partition() == 0 {
            return Err(RdmaError::EmptyPkey {
                device: name,
                port,
                index: pkey_index,
            });
        }
        let link_layer = LinkLayer::from_code(info.link_layer);
        let netdev = match link_layer {
            LinkLayer::Ethernet => ipmc::netdev_of(&name, port, gid_index),
            LinkLayer::InfiniBand => None,
        };
        if link_layer == LinkLayer::Ethernet && netdev.is_none() {
            log::warn!(
                "rdma: {name} port {port}: no network device found for GID index {gid_index}; \
                 multicast groups will not be joined at the IP level"
            );
        }
        let resolver = Resolver::start().map_err(|e| RdmaError::ResolverThreads {
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        let shared = Shared {
            resolver,
            cm_missing_said: AtomicBool::new(false),
            dev: Arc::new(dev),
            netdev,
            port,
            link_layer,
            gid,
            gid_index,
            lid: Lid(info.lid),
            pkey,
            pkey_index,
            qkey: config.qkey,
            mtu: usable_mtu(info.active_mtu, config.max_mtu),
            state: port_state(info.state),
            caps,
            name,
        };
        log::info!(
            "rdma: {} port {} {:?} {:?}: gid[{}] {} lid {:#x} pkey {:#06x} mtu {}",
            shared.name,
            port,
            shared.link_layer,
            shared.state,
            gid_index,
            gid,
            info.lid,
            pkey.0,
            shared.mtu.bytes()
        );
        if shared.state != PortState::Active {
            log::warn!(
                "rdma: {} port {port} is {:?}, not active; nothing will be sent or received",
                shared.name,
                shared.state
            );
        }
        Ok(RdmaContext {
            shared: Arc::new(shared),
        })
    }

    pub fn device_name(&self) -> &str {
        &self.shared.name
    }

    pub fn port_num(&self) -> u8 {
        self.shared.port
    }

    pub fn link_layer(&self) -> LinkLayer {
        self.shared.link_layer
    }

    /// The GID at the configured index.
    pub fn gid(&self) -> Gid {
        self.shared.gid
    }

    pub fn gid_index(&self) -> u8 {
        self.shared.gid_index
    }

    /// The port's LID (0 on RoCE).
    pub fn lid(&self) -> Lid {
        self.shared.lid
    }

    /// The P_Key at the configured index.
    pub fn pkey(&self) -> PKey {
        self.shared.pkey
    }

    /// The active MTU, capped by the configuration. A port may use less (it
    /// must fit the slots).
    pub fn mtu(&self) -> IbMtu {
        self.shared.mtu
    }

    /// RoCE: the network device behind the GID.
    pub fn netdev(&self) -> Option<&str> {
        self.shared.netdev.as_ref().map(|(name, _)| name.as_str())
    }

    /// The port state when the context was opened.
    pub fn state(&self) -> PortState {
        self.shared.state
    }

    /// Registers `region` (one memory region, local write), creates a
    /// completion channel, a CQ of `tx_count + rx_count` entries and a UD QP
    /// (`tx_count` send work requests of up to two SGEs and `rx_count`
    /// receive work requests of one), and a header arena of 64 bytes per TX
    /// slot (registered too, for sends with a head),
    /// and moves the QP to RTS. The port's MTU is the context's, lowered
    /// until a packet fits a slot behind the 40-byte GRH area. The QP is in
    /// the context's partition (the configured `pkey_index`); a guest's QP
    /// is opened with [`RdmaContext::open_port_in`] instead.
    pub fn open_port(&self, region: Window, layout: SlotLayout) -> Result<RdmaPort, RdmaError> {
        let default = pkeys::PkeySlot {
            index: self.shared.pkey_index,
            pkey: self.shared.pkey,
        };
        self.open_port_at(region, layout, default)
    }

    /// Like [`RdmaContext::open_port`], with the QP in partition `pkey`: its
    /// index in the port's P_Key table, read now with `ibv_query_pkey` (the
    /// `pkeys` module has the membership rule). A key the table does not
    /// hold is refused with [`RdmaError::PkeyNotInTable`]; there is no
    /// fallback to another index.
    pub fn open_port_in(
        &self,
        region: Window,
        layout: SlotLayout,
        pkey: PKey,
    ) -> Result<RdmaPort, RdmaError> {
        let s = &self.shared;
        let info = s.dev.query_port(s.port)?;
        let table = pkeys::read_table(&s.dev, s.port, info.pkey_tbl_len);
        let slot = pkeys::lookup(&table, pkey, &s.name, s.port)?;
        self.open_port_at(region, layout, slot)
    }

    /// The P_Key table of the port, as `ibv_query_pkey` reads it now
    /// (unreadable entries as 0).
    pub fn pkey_table(&self) -> Result<Vec<u16>, RdmaError> {
        let s = &self.shared;
        let info = s.dev.query_port(s.port)?;
        Ok(pkeys::read_table(&s.dev, s.port, info.pkey_tbl_len))
    }

    fn open_port_at(
        &self,
        region: Window,
        layout: SlotLayout,
        pkey: pkeys::PkeySlot,
    ) -> Result<RdmaPort, RdmaError> {
        let s = &self.shared;
        if layout.tx_count == 0 || layout.rx_count == 0 {
            return Err(RdmaError::EmptyLayout);
        }
        let needed = layout.region_len();
        if region.len() < needed {
            return Err(RdmaError::RegionTooSmall {
                needed,
                actual: region.len(),
            });
        }
        let mtu =
            mtu_for_slot(s.mtu, layout.slot_size as usize).ok_or(RdmaError::SlotTooSmall {
                slot_size: layout.slot_size,
                needed: GRH_LEN + IbMtu::Mtu256.bytes(),
            })?;
        let (tx, rx) = (usize::from(layout.tx_count), usize::from(layout.rx_count));
        check_limit("send work requests", tx, s.caps.max_qp_wr)?;
        check_limit("receive work requests", rx, s.caps.max_qp_wr)?;
        check_limit("completion queue entries", tx + rx, s.caps.max_cqe)?;
        let spec = QueueSpec {
            cqe: u32::from(layout.tx_count) + u32::from(layout.rx_count),
            send_wr: u32::from(layout.tx_count),
            recv_wr: u32::from(layout.rx_count),
            port: s.port,
            pkey_index: pkey.index,
            qkey: s.qkey.0,
            send_sge: send_sges(s.caps.max_sge),
        };
        let queues = Queues::create(Arc::clone(&s.dev), region.clone(), &spec)?;
        log::info!(
            "rdma: {}: {} bytes at {:#x} registered as one memory region (lkey {:#x}); \
             sends and receives use the slots in place (zero copy)",
            s.name,
            region.len(),
            region.as_ptr() as usize,
            queues.lkey()
        );
        log::debug!(
            "rdma: {} port {}: UD QP {:#x} up in P_Key {:#06x} (index {}), {} TX + {} RX slots \
             of {} bytes, mtu {}",
            s.name,
            s.port,
            queues.qpn(),
            pkey.pkey.0,
            pkey.index,
            tx,
            rx,
            layout.slot_size,
            mtu.bytes()
        );
        Ok(RdmaPort::new(
            Arc::clone(&self.shared),
            queues,
            region,
            layout,
            mtu,
            pkey.pkey,
        ))
    }
}

/// Scatter/gather entries to ask for per send: two (a head from the arena
/// and the rest of the slot, see the `gather` module) unless the device says
/// it takes only one; then sends with a head are refused as unsupported.
fn send_sges(max_sge: usize) -> u32 {
    match max_sge {
        1 => 1,
        _ => HEAD_SEND_SGES,
    }
}

/// `requested` must not exceed the device's `max` (0: the device did not
/// say).
fn check_limit(what: &'static str, requested: usize, max: usize) -> Result<(), RdmaError> {
    if max != 0 && requested > max {
        return Err(RdmaError::LayoutTooLarge {
            what,
            requested,
            max,
        });
    }
    Ok(())
}

impl core::fmt::Debug for RdmaContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = &self.shared;
        f.debug_struct("RdmaContext")
            .field("device", &s.name)
            .field("port", &s.port)
            .field("link_layer", &s.link_layer)
            .field("gid", &s.gid)
            .field("gid_index", &s.gid_index)
            .field("lid", &s.lid)
            .field("pkey", &s.pkey)
            .field("mtu", &s.mtu)
            .field("state", &s.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ask_for_two_gather_entries_when_the_device_has_them() {
        assert_eq!(send_sges(0), 2);
        assert_eq!(send_sges(1), 1);
        assert_eq!(send_sges(2), 2);
        assert_eq!(send_sges(32), 2);
    }

    #[test]
    fn limits() {
        assert_eq!(check_limit("x", 10, 0), Ok(()));
        assert_eq!(check_limit("x", 10, 10), Ok(()));
        assert_eq!(
            check_limit("x", 11, 10),
            Err(RdmaError::LayoutTooLarge {
                what: "x",
                requested: 11,
                max: 10
            })
        );
    }
}
