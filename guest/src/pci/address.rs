//! Where a function is, and the 0xCF8 address that selects its registers.

use core::fmt;

/// Bus, device and function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub bus: u8,
    /// 0..32
    pub device: u8,
    /// 0..8
    pub function: u8,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// The value written to port 0xCF8 ("configuration mechanism #1").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAddress(pub u32);

impl ConfigAddress {
    /// Enable bit, bus, device, function and the dword-aligned offset.
    pub const fn new(at: Location, offset: u16) -> ConfigAddress {
        ConfigAddress(
            0x8000_0000
                | (at.bus as u32) << 16
                | ((at.device & 0x1f) as u32) << 11
                | ((at.function & 0x7) as u32) << 8
                | (offset & 0xfc) as u32,
        )
    }
}
