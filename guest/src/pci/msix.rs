//! MSI-X: the capability's fields and the table entries that point an
//! interrupt at a local APIC vector.

use core::fmt;

/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: all vectors masked.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes of one table entry.
pub const ENTRY_LEN: u64 = 16;
/// The MSI address window of the local APICs.
pub const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// The MSI-X capability, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    /// Where the capability is in configuration space.
    pub offset: u8,
    /// Entries in the table.
    pub table_size: u16,
    /// The BAR holding the table, and where in it.
    pub table_bar: u8,
    pub table_offset: u32,
    /// The BAR holding the pending-bit array, and where in it.
    pub pba_bar: u8,
    pub pba_offset: u32,
}

/// A capability that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixError {
    /// A BAR indicator of 6 or 7.
    BadBar { bir: u8 },
    /// The table does not fit in its BAR.
    TableOutsideBar { end: u64, bar_size: u64 },
}

impl fmt::Display for MsixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsixError::BadBar { bir } => {
                write!(f, "MSI-X table in BAR {bir}, which does not exist")
            }
            MsixError::TableOutsideBar { end, bar_size } => write!(
                f,
                "MSI-X table ends at {end:#x}, past its BAR's {bar_size:#x} bytes"
            ),
        }
    }
}

impl core::error::Error for MsixError {}

impl MsixCapability {
    /// From the capability's message control word and its table and PBA
    /// dwords.
    pub fn parse(offset: u8, control: u16, table: u32, pba: u32) -> Result<Self, MsixError> {
        let table_bar = (table & 0x7) as u8;
        let pba_bar = (pba & 0x7) as u8;
        for bir in [table_bar, pba_bar] {
            if bir > 5 {
                return Err(MsixError::BadBar { bir });
            }
        }
        Ok(MsixCapability {
            offset,
            table_size: (control & 0x7ff) + 1,
            table_bar,
            table_offset: table & !0x7,
            pba_bar,
            pba_offset: pba & !0x7,
        })
    }

    /// Checks that the table lies inside a BAR of `bar_size` bytes.
    pub fn check_table(&self, bar_size: u64) -> Result<(), MsixError> {
        let end = u64::from(self.table_offset) + u64::from(self.table_size) * ENTRY_LEN;
        if end > bar_size {
            return Err(MsixError::TableOutsideBar { end, bar_size });
        }
        Ok(())
    }

    /// Offset of entry `i` in the table's BAR.
    pub fn entry_offset(&self, i: u16) -> u64 {
        u64::from(self.table_offset) + u64::from(i) * ENTRY_LEN
    }

    /// Offset of the message control word in configuration space.
    pub fn control_offset(&self) -> u16 {
        u16::from(self.offset) + 2
    }
}

/// One MSI-X table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    pub address: u64,
    pub data: u32,
    pub masked: bool,
}

impl MsixEntry {
    /// Fixed delivery, edge-triggered, physical destination `apic_id`,
    /// `vector`; unmasked.
    pub const fn fixed(apic_id: u8, vector: u8) -> MsixEntry {
        MsixEntry {
            address: MSI_ADDRESS_BASE | (apic_id as u64) << 12,
            data: vector as u32,
            masked: false,
        }
    }

    /// The four dwords at offsets 0, 4, 8 and 12: address low, address
    /// high, data, vector control (bit 0 = masked).
    pub const fn words(&self) -> [u32; 4] {
        [
            self.address as u32,
            (self.address >> 32) as u32,
            self.data,
            self.masked as u32,
        ]
    }
}
