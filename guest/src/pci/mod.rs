//! PCI: configuration space, BARs and MSI-X.
//!
//! The decoding is portable and tested on the host against fake
//! configuration spaces ([`ConfigSpace`]); on bare metal, `Function`
//! reaches real configuration space through ports 0xCF8/0xCFC (the only
//! `unsafe` here, in `port`).

mod address;
mod bar;
mod caps;
mod msix;
#[cfg(target_os = "none")]
mod port;
#[cfg(test)]
mod tests;

pub use address::{ConfigAddress, Location};
pub use bar::{read_bars, Bar};
pub use caps::{capabilities, find_capability, CAP_MSIX};
pub use msix::{MsixCapability, MsixEntry, MsixError};
#[cfg(target_os = "none")]
pub use port::{find, functions, Function};

/// Offsets in the standard header.
pub mod reg {
    pub const VENDOR_ID: u16 = 0x00;
    pub const DEVICE_ID: u16 = 0x02;
    pub const COMMAND: u16 = 0x04;
    pub const STATUS: u16 = 0x06;
    pub const HEADER_TYPE: u16 = 0x0e;
    pub const BAR0: u16 = 0x10;
    pub const CAPABILITIES: u16 = 0x34;
}

/// Command register bits.
pub mod command {
    pub const IO_SPACE: u16 = 1 << 0;
    pub const MEMORY_SPACE: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// MSI-X message control bits.
pub mod msix_control {
    pub use super::msix::{CONTROL_ENABLE as ENABLE, CONTROL_FUNCTION_MASK as FUNCTION_MASK};
}

/// Status register: the function has a capability list.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// One function's 256 bytes of configuration space.
///
/// Offsets are bytes; narrow reads and writes are done on the aligned
/// dword around them.
pub trait ConfigSpace {
    /// The dword at `offset & !3`.
    fn read32(&self, offset: u16) -> u32;
    /// Writes the dword at `offset & !3`.
    fn write32(&self, offset: u16, value: u32);

    fn read16(&self, offset: u16) -> u16 {
        (self.read32(offset) >> ((offset & 2) * 8)) as u16
    }

    fn read8(&self, offset: u16) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    /// Read-modify-write of the dword around `offset`. (Writing a status
    /// register's read-to-clear bits back is harmless here: nothing in the
    /// guest uses them.)
    fn write16(&self, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(offset);
        let new = (old & !(0xffff << shift)) | (u32::from(value) << shift);
        self.write32(offset, new);
    }

    fn vendor_id(&self) -> u16 {
        self.read16(reg::VENDOR_ID)
    }

    fn device_id(&self) -> u16 {
        self.read16(reg::DEVICE_ID)
    }

    fn command(&self) -> u16 {
        self.read16(reg::COMMAND)
    }

    fn set_command(&self, value: u16) {
        self.write16(reg::COMMAND, value)
    }
}
