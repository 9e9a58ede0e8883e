//! `hvm_start_info`: what a PVH loader (QEMU's `-kernel`, Xen's libxl)
//! hands the guest in `%ebx`, following Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`:
//!
//! ```text
//!  0 u32 magic            0x336ec578
//!  4 u32 version          0, or 1 with the memory map
//!  8 u32 flags            SIF_*
//! 12 u32 nr_modules
//! 16 u64 modlist_paddr    -> nr_modules x { paddr, size, cmdline_paddr, reserved } (32 bytes)
//! 24 u64 cmdline_paddr    -> NUL-terminated string
//! 32 u64 rsdp_paddr       ACPI RSDP, 0 if none
//! 40 u64 memmap_paddr     (version >= 1) -> memmap_entries x { addr, size, type, reserved } (24 bytes)
//! 48 u32 memmap_entries
//! 52 u32 reserved
//! ```
//!
//! [`StartInfo::parse`] follows the pointers through a [`PhysRead`] and
//! copies everything it keeps, so the loader's memory is not needed once it
//! returns. The host tests build images with [`StartInfoRepr::emit`].

use core::fmt;
use core::ops::Range;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Bytes of `hvm_start_info` in version 0 (no memory map).
pub const HEADER_LEN_V0: usize = 40;
/// Bytes of `hvm_start_info` in version 1.
pub const HEADER_LEN: usize = 56;
/// Bytes of one memory-map entry.
pub const MEMMAP_ENTRY_LEN: usize = 24;
/// Bytes of one module-list entry.
pub const MODULE_ENTRY_LEN: usize = 32;
/// Longest command line kept (without the NUL).
pub const CMDLINE_MAX: usize = 2048;
/// Most memory-map entries kept.
pub const MEMMAP_MAX: usize = 128;
/// Most modules kept.
pub const MODULES_MAX: usize = 8;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: Range<usize> = 4..8;
    pub const FLAGS: Range<usize> = 8..12;
    pub const NR_MODULES: Range<usize> = 12..16;
    pub const MODLIST: Range<usize> = 16..24;
    pub const CMDLINE: Range<usize> = 24..32;
    pub const RSDP: Range<usize> = 32..40;
    pub const MEMMAP: Range<usize> = 40..48;
    pub const MEMMAP_ENTRIES: Range<usize> = 48..52;

    pub const ENTRY_ADDR: Range<usize> = 0..8;
    pub const ENTRY_SIZE: Range<usize> = 8..16;
    pub const ENTRY_TYPE: Range<usize> = 16..20;

    pub const MODULE_PADDR: Range<usize> = 0..8;
    pub const MODULE_SIZE: Range<usize> = 8..16;
    pub const MODULE_CMDLINE: Range<usize> = 16..24;
}

/// Reads guest-physical memory. The boot code implements it over the early
/// identity map; tests over a byte image.
pub trait PhysRead {
    /// Fills `buf` from `paddr..paddr + buf.len()`, or fails if any of it
    /// cannot be read.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Unreadable>;
}

/// A physical range a [`PhysRead`] cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub paddr: u64,
    pub len: usize,
}

/// What a memory-map entry describes (`XEN_HVM_MEMMAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    Ram,
    Reserved,
    Acpi,
    Nvs,
    Unusable,
    Disabled,
    Pmem,
    Unknown(u32),
}

impl From<u32> for MemoryType {
    fn from(v: u32) -> MemoryType {
        match v {
            1 => MemoryType::Ram,
            2 => MemoryType::Reserved,
            3 => MemoryType::Acpi,
            4 => MemoryType::Nvs,
            5 => MemoryType::Unusable,
            6 => MemoryType::Disabled,
            7 => MemoryType::Pmem,
            n => MemoryType::Unknown(n),
        }
    }
}

impl From<MemoryType> for u32 {
    fn from(t: MemoryType) -> u32 {
        match t {
            MemoryType::Ram => 1,
            MemoryType::Reserved => 2,
            MemoryType::Acpi => 3,
            MemoryType::Nvs => 4,
            MemoryType::Unusable => 5,
            MemoryType::Disabled => 6,
            MemoryType::Pmem => 7,
            MemoryType::Unknown(n) => n,
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryType::Ram => f.write_str("RAM"),
            MemoryType::Reserved => f.write_str("reserved"),
            MemoryType::Acpi => f.write_str("ACPI"),
            MemoryType::Nvs => f.write_str("ACPI NVS"),
            MemoryType::Unusable => f.write_str("unusable"),
            MemoryType::Disabled => f.write_str("disabled"),
            MemoryType::Pmem => f.write_str("persistent"),
            MemoryType::Unknown(n) => write!(f, "type {n}"),
        }
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub addr: u64,
    pub size: u64,
    pub kind: MemoryType,
}

impl MemoryRegion {
    /// `addr..addr + size`, clamped at the top of the address space.
    pub fn range(&self) -> Range<u64> {
        self.addr..self.addr.saturating_add(self.size)
    }

    fn parse(b: &[u8]) -> MemoryRegion {
        MemoryRegion {
            addr: u64_at(b, field::ENTRY_ADDR),
            size: u64_at(b, field::ENTRY_SIZE),
            kind: MemoryType::from(u32_at(b, field::ENTRY_TYPE)),
        }
    }

    fn emit(&self, b: &mut [u8]) {
        b[field::ENTRY_ADDR].copy_from_slice(&self.addr.to_le_bytes());
        b[field::ENTRY_SIZE].copy_from_slice(&self.size.to_le_bytes());
        b[field::ENTRY_TYPE].copy_from_slice(&u32::from(self.kind).to_le_bytes());
        b[20..24].fill(0);
    }
}

impl fmt::Display for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.addr.saturating_add(self.size);
        write!(
            f,
            "{:#014x}-{:#014x} {:>9} KiB {}",
            self.addr,
            end,
            self.size / 1024,
            self.kind
        )
    }
}

/// A module the loader passed (an initrd, say). Only described, not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
}

/// Why a start info cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The start info pointer is 0: not started by a PVH loader.
    NullPointer,
    /// Part of the structure or something it points at cannot be read.
    Unreadable(Unreadable),
    BadMagic {
        found: u32,
    },
    /// No NUL within [`CMDLINE_MAX`] bytes.
    CmdlineTooLong,
    CmdlineNotUtf8,
    /// Version 0 has no memory map, or the map is empty.
    NoMemoryMap {
        version: u32,
    },
    TooManyMemoryRegions {
        entries: u32,
    },
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartInfoError::NullPointer => {
                f.write_str("no hvm_start_info (%ebx = 0): boot through the PVH entry")
            }
            StartInfoError::Unreadable(u) => write!(
                f,
                "cannot read {} bytes at {:#x} (outside the first 4 GiB?)",
                u.len, u.paddr
            ),
            StartInfoError::BadMagic { found } => {
                write!(f, "magic is {found:#010x}, not {MAGIC:#010x}")
            }
            StartInfoError::CmdlineTooLong => {
                write!(f, "the command line is longer than {CMDLINE_MAX} bytes")
            }
            StartInfoError::CmdlineNotUtf8 => f.write_str("the command line is not UTF-8"),
            StartInfoError::NoMemoryMap { version } => write!(
                f,
                "no memory map (start info version {version}; version 1 with entries is needed)"
            ),
            StartInfoError::TooManyMemoryRegions { entries } => {
                write!(f, "{entries} memory-map entries (at most {MEMMAP_MAX})")
            }
        }
    }
}

impl core::error::Error for StartInfoError {}

/// Everything the guest keeps from `hvm_start_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Where the structure was.
    pub paddr: u64,
    pub version: u32,
    pub flags: u32,
    pub cmdline: heapless::String<CMDLINE_MAX>,
    /// The ACPI RSDP, if the loader gave one.
    pub rsdp: Option<u64>,
    pub memmap: heapless::Vec<MemoryRegion, MEMMAP_MAX>,
    /// The number of modules the loader announced.
    pub nr_modules: u32,
    /// The first [`MODULES_MAX`] of them.
    pub modules: heapless::Vec<Module, MODULES_MAX>,
}

impl StartInfo {
    /// Reads the start info at `paddr` and everything it points at.
    pub fn parse(mem: &impl PhysRead, paddr: u64) -> Result<StartInfo, StartInfoError> {
        if paddr == 0 {
            return Err(StartInfoError::NullPointer);
        }
        let mut h = [0u8; HEADER_LEN];
        read(mem, paddr, &mut h[..HEADER_LEN_V0])?;
        let magic = u32_at(&h, field::MAGIC);
        if magic != MAGIC {
            return Err(StartInfoError::BadMagic { found: magic });
        }
        let version = u32_at(&h, field::VERSION);
        if version >= 1 {
            read(
                mem,
                paddr + HEADER_LEN_V0 as u64,
                &mut h[HEADER_LEN_V0..HEADER_LEN],
            )?;
        }
        let cmdline = read_cmdline(mem, u64_at(&h, field::CMDLINE))?;

        let mut memmap = heapless::Vec::new();
        let entries = u32_at(&h, field::MEMMAP_ENTRIES);
        let map = u64_at(&h, field::MEMMAP);
        if version == 0 || entries == 0 || map == 0 {
            return Err(StartInfoError::NoMemoryMap { version });
        }
        if entries as usize > MEMMAP_MAX {
            return Err(StartInfoError::TooManyMemoryRegions { entries });
        }
        for i in 0..u64::from(entries) {
            let mut e = [0u8; MEMMAP_ENTRY_LEN];
            read(mem, map + i * MEMMAP_ENTRY_LEN as u64, &mut e)?;
            // Capacity checked above.
            let _ = memmap.push(MemoryRegion::parse(&e));
        }

        let nr_modules = u32_at(&h, field::NR_MODULES);
        let list = u64_at(&h, field::MODLIST);
        let mut modules = heapless::Vec::new();
        if list != 0 {
            for i in 0..u64::from(nr_modules).min(MODULES_MAX as u64) {
                let mut e = [0u8; MODULE_ENTRY_LEN];
                read(mem, list + i * MODULE_ENTRY_LEN as u64, &mut e)?;
                let _ = modules.push(Module {
                    paddr: u64_at(&e, field::MODULE_PADDR),
                    size: u64_at(&e, field::MODULE_SIZE),
                    cmdline_paddr: u64_at(&e, field::MODULE_CMDLINE),
                });
            }
        }

        let rsdp = u64_at(&h, field::RSDP);
        Ok(StartInfo {
            paddr,
            version,
            flags: u32_at(&h, field::FLAGS),
            cmdline,
            rsdp: (rsdp != 0).then_some(rsdp),
            memmap,
            nr_modules,
            modules,
        })
    }

    /// Bytes of RAM in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        self.memmap
            .iter()
            .filter(|r| r.kind == MemoryType::Ram)
            .map(|r| r.size)
            .fold(0, u64::saturating_add)
    }
}

fn read(mem: &impl PhysRead, paddr: u64, buf: &mut [u8]) -> Result<(), StartInfoError> {
    mem.read(paddr, buf).map_err(StartInfoError::Unreadable)
}

/// The NUL-terminated string at `paddr`, read in chunks that do not cross a
/// page boundary (so a string at the end of RAM is not over-read).
fn read_cmdline(
    mem: &impl PhysRead,
    paddr: u64,
) -> Result<heapless::String<CMDLINE_MAX>, StartInfoError> {
    let mut out = heapless::Vec::<u8, CMDLINE_MAX>::new();
    if paddr != 0 {
        let mut at = paddr;
        'outer: loop {
            let room = 4096 - (at % 4096) as usize;
            let mut chunk = [0u8; 256];
            let n = room.min(chunk.len());
            read(mem, at, &mut chunk[..n])?;
            for &b in &chunk[..n] {
                if b == 0 {
                    break 'outer;
                }
                out.push(b).map_err(|_| StartInfoError::CmdlineTooLong)?;
            }
            at += n as u64;
        }
    }
    let s = core::str::from_utf8(&out).map_err(|_| StartInfoError::CmdlineNotUtf8)?;
    let mut cmdline = heapless::String::new();
    // Same capacity as `out`.
    let _ = cmdline.push_str(s.trim());
    Ok(cmdline)
}

fn u32_at(b: &[u8], r: Range<usize>) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[r]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], r: Range<usize>) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[r]);
    u64::from_le_bytes(w)
}

/// The header fields, as a loader writes them (tests build images with it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfoRepr {
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

impl StartInfoRepr {
    /// Bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (magic included) to `b[..HEADER_LEN]`.
    pub fn emit(&self, b: &mut [u8]) {
        b[field::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
        b[field::VERSION].copy_from_slice(&self.version.to_le_bytes());
        b[field::FLAGS].copy_from_slice(&self.flags.to_le_bytes());
        b[field::NR_MODULES].copy_from_slice(&self.nr_modules.to_le_bytes());
        b[field::MODLIST].copy_from_slice(&self.modlist_paddr.to_le_bytes());
        b[field::CMDLINE].copy_from_slice(&self.cmdline_paddr.to_le_bytes());
        b[field::RSDP].copy_from_slice(&self.rsdp_paddr.to_le_bytes());
        b[field::MEMMAP].copy_from_slice(&self.memmap_paddr.to_le_bytes());
        b[field::MEMMAP_ENTRIES].copy_from_slice(&self.memmap_entries.to_le_bytes());
        b[52..56].fill(0);
    }

    /// Writes `regions` as a memory map to `b`.
    pub fn emit_memmap(regions: &[MemoryRegion], b: &mut [u8]) {
        for (r, chunk) in regions.iter().zip(b.chunks_exact_mut(MEMMAP_ENTRY_LEN)) {
            r.emit(chunk);
        }
    }
}

#[cfg(test)]
mod tests;
