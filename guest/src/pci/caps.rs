//! The capability list, walked defensively: a looping or out-of-range list
//! ends the walk instead of hanging it.

use super::{reg, ConfigSpace, STATUS_CAP_LIST};

/// MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// Most capabilities walked (there is room for 48 in 192 bytes).
const MAX_CAPS: usize = 48;

/// `(id, offset)` of each capability, in list order.
pub fn capabilities(cfg: &impl ConfigSpace) -> impl Iterator<Item = (u8, u8)> + '_ {
    let mut next = if cfg.read16(reg::STATUS) & STATUS_CAP_LIST != 0 {
        cfg.read8(reg::CAPABILITIES) & 0xfc
    } else {
        0
    };
    let mut steps = 0;
    core::iter::from_fn(move || {
        if next < 0x40 || steps >= MAX_CAPS {
            return None;
        }
        steps += 1;
        let at = next;
        let id = cfg.read8(u16::from(at));
        next = cfg.read8(u16::from(at) + 1) & 0xfc;
        Some((id, at))
    })
}

/// The offset of the first capability with `id`.
pub fn find_capability(cfg: &impl ConfigSpace, id: u8) -> Option<u8> {
    capabilities(cfg).find(|&(i, _)| i == id).map(|(_, at)| at)
}
