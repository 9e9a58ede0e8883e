//! What a port looks like when it is plugged into the fabric.

use ring::Window;

use crate::slot::SlotLayout;
use crate::types::{Gid, IbMtu, Lid, PKey, QKey};

/// The link-local subnet prefix (fe80::/64).
pub const LINK_LOCAL_PREFIX: u64 = 0xfe80_0000_0000_0000;

/// Everything [`super::SimFabric::add_port`] needs. The fabric assigns the
/// QPN.
#[derive(Clone)]
pub struct PortConfig {
    pub gid: Gid,
    pub lid: Lid,
    pub pkey: PKey,
    /// The Q_Key this port's UD QP accepts.
    pub qkey: QKey,
    pub mtu: IbMtu,
    pub layout: SlotLayout,
    /// The registered buffer region; must hold `layout.region_len()` bytes.
    pub region: Window,
}

impl PortConfig {
    /// The layout [`PortConfig::local`] uses: 64 TX and 64 RX slots of 4 KiB.
    pub const LOCAL_LAYOUT: SlotLayout = SlotLayout {
        tx_count: 64,
        rx_count: 64,
        slot_size: 4096,
    };

    /// Port number `n` (use `n >= 1`): GID fe80::`n`, LID `n`, the IPoIB
    /// Q_Key, MTU 2048, [`PortConfig::LOCAL_LAYOUT`] and a fresh heap region.
    pub fn local(n: u16, pkey: PKey) -> PortConfig {
        PortConfig::with_layout(n, pkey, PortConfig::LOCAL_LAYOUT)
    }

    /// Like [`PortConfig::local`] with another slot layout.
    pub fn with_layout(n: u16, pkey: PKey, layout: SlotLayout) -> PortConfig {
        PortConfig {
            gid: Gid::from_parts(LINK_LOCAL_PREFIX, u64::from(n)),
            lid: Lid(n),
            pkey,
            qkey: QKey::IPOIB_DEFAULT,
            mtu: IbMtu::Mtu2048,
            layout,
            region: Window::new_heap(layout.region_len()),
        }
    }
}

impl core::fmt::Debug for PortConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortConfig")
            .field("gid", &self.gid)
            .field("lid", &self.lid)
            .field("pkey", &self.pkey)
            .field("qkey", &self.qkey)
            .field("mtu", &self.mtu)
            .field("layout", &self.layout)
            .field("region_len", &self.region.len())
            .finish()
    }
}
