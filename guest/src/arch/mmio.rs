//! Device memory: register windows (uncached) and shared memory
//! (write-back), identity-mapped on request.
//!
//! Both refuse ranges that overlap RAM in the memory map: the guest's own
//! memory must never be reachable through a device mapping.

use core::fmt;
use core::ptr;

use ring::Window;

use super::paging::{self, Cache, MapError};

/// A mapped register window. Accesses are volatile and bounds-checked;
/// out-of-range reads return all ones and out-of-range writes are dropped,
/// as for a PCI master abort.
#[derive(Debug)]
pub struct Mmio {
    base: u64,
    len: u64,
}

impl Mmio {
    /// Maps `phys..phys + len` uncached.
    pub fn map(phys: u64, len: u64) -> Result<Mmio, MapError> {
        paging::map_device(phys, len, Cache::Uncached)?;
        Ok(Mmio { base: phys, len })
    }

    pub fn phys(&self) -> u64 {
        self.base
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, offset: u64, width: u64) -> Option<*mut u8> {
        let end = offset.checked_add(width)?;
        (end <= self.len && offset.is_multiple_of(width)).then(|| (self.base + offset) as *mut u8)
    }

    pub fn read32(&self, offset: u64) -> u32 {
        match self.at(offset, 4) {
            // SAFETY: inside the window mapped uncached in `map`, which is
            // device memory (not RAM) and stays mapped; aligned.
            Some(p) => unsafe { ptr::read_volatile(p.cast::<u32>()) },
            None => u32::MAX,
        }
    }

    pub fn write32(&self, offset: u64, value: u32) {
        if let Some(p) = self.at(offset, 4) {
            // SAFETY: as in `read32`.
            unsafe { ptr::write_volatile(p.cast::<u32>(), value) }
        }
    }
}

/// Maps `phys..phys + len` write-back and returns a [`Window`] over it:
/// memory shared with another party (the ivshmem BAR2).
pub fn shared_window(phys: u64, len: u64) -> Result<Window, MapError> {
    let len_usize = usize::try_from(len).map_err(|_| MapError::TooLarge { len })?;
    paging::map_device(phys, len, Cache::WriteBack)?;
    // SAFETY: `phys..phys + len` is now identity-mapped and stays mapped
    // for ever. It is device memory outside every RAM region (checked by
    // `map_device`), so no Rust object lives there and no reference to it
    // exists; the guest reaches it only through windows.
    Ok(unsafe { Window::from_raw_parts(phys as *mut u8, len_usize, None) })
}

impl fmt::Display for Mmio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x}", self.base, self.len)
    }
}
