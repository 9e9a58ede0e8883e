//! Base address registers: what they say, and how big they are.

use core::fmt;

use super::{command, reg, ConfigSpace};

/// One decoded BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// Not implemented (or the upper half of the 64-bit BAR before it).
    Absent,
    Io {
        port: u32,
        size: u32,
    },
    Memory {
        addr: u64,
        size: u64,
        is_64: bool,
        prefetchable: bool,
    },
}

impl Bar {
    /// A BAR from its value and what it reads back after all ones were
    /// written (for a 64-bit BAR, also the upper dword's two values).
    pub fn decode(value: u32, mask: u32, value_hi: u32, mask_hi: u32) -> Bar {
        if value & 1 == 1 {
            let m = mask & !0x3;
            if m == 0 {
                return Bar::Absent;
            }
            // An I/O BAR may leave the upper 16 bits unimplemented (zero).
            let m = if m & 0xffff_0000 == 0 {
                m | 0xffff_0000
            } else {
                m
            };
            return Bar::Io {
                port: value & !0x3,
                size: (!m).wrapping_add(1),
            };
        }
        let is_64 = (value >> 1) & 0x3 == 0x2;
        let prefetchable = value & 0x8 != 0;
        let (addr, mask) = if is_64 {
            (
                u64::from(value_hi) << 32 | u64::from(value & !0xf),
                u64::from(mask_hi) << 32 | u64::from(mask & !0xf),
            )
        } else {
            (
                u64::from(value & !0xf),
                0xffff_ffff_0000_0000 | u64::from(mask & !0xf),
            )
        };
        if mask & 0xffff_ffff == 0 && (!is_64 || mask_hi == 0) {
            return Bar::Absent;
        }
        Bar::Memory {
            addr,
            size: (!mask).wrapping_add(1),
            is_64,
            prefetchable,
        }
    }

    /// The memory range, if this is an assigned memory BAR.
    pub fn memory(&self) -> Option<(u64, u64)> {
        match *self {
            Bar::Memory { addr, size, .. } if addr != 0 && size != 0 => Some((addr, size)),
            _ => None,
        }
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bar::Absent => f.write_str("absent"),
            Bar::Io { port, size } => write!(f, "I/O {port:#x} size {size:#x}"),
            Bar::Memory {
                addr,
                size,
                is_64,
                prefetchable,
            } => write!(
                f,
                "memory {addr:#x} size {size:#x} ({}-bit{})",
                if is_64 { 64 } else { 32 },
                if prefetchable { ", prefetchable" } else { "" }
            ),
        }
    }
}

/// Reads and sizes the six BARs of a type-0 header. Decoding is off while
/// the all-ones pattern is in a BAR, and the command register is restored
/// afterwards.
pub fn read_bars(cfg: &impl ConfigSpace) -> [Bar; 6] {
    let mut bars = [Bar::Absent; 6];
    let cmd = cfg.command();
    cfg.set_command(cmd & !(command::MEMORY_SPACE | command::IO_SPACE));
    let mut i = 0;
    while i < 6 {
        let off = reg::BAR0 + 4 * i as u16;
        let value = cfg.read32(off);
        let mask = size_probe(cfg, off, value);
        let is_64 = value & 1 == 0 && (value >> 1) & 0x3 == 0x2 && i < 5;
        if is_64 {
            let value_hi = cfg.read32(off + 4);
            let mask_hi = size_probe(cfg, off + 4, value_hi);
            bars[i] = Bar::decode(value, mask, value_hi, mask_hi);
            i += 2;
        } else {
            bars[i] = Bar::decode(value, mask, 0, 0);
            i += 1;
        }
    }
    cfg.set_command(cmd);
    bars
}

fn size_probe(cfg: &impl ConfigSpace, off: u16, value: u32) -> u32 {
    cfg.write32(off, 0xffff_ffff);
    let mask = cfg.read32(off);
    cfg.write32(off, value);
    mask
}
