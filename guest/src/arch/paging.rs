//! The page tables: an identity map (virtual = physical) of
//!
//! - RAM and ACPI memory from the start info's memory map, write-back and
//!   not executable, in 2 MiB pages where a region allows, 4 KiB otherwise;
//!   page 0 is left out so that null pointers fault;
//! - the image in 4 KiB pages with its sections' rights (text read-only
//!   and executable, rodata read-only, data and bss writable), leaving the
//!   page below the stack unmapped as a guard;
//! - device memory on request ([`map_device`]): registers uncached, shared
//!   memory write-back, anywhere below 2^47 (64-bit BARs above 4 GiB
//!   included).
//!
//! Page-table pages come from a fixed pool in `.bss`, so building the
//! tables needs no allocator.

use core::cell::UnsafeCell;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags as F,
    PhysFrame, Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::boot::layout::ImageLayout;
use crate::memory::{align_down, align_up, is_mapped_memory, overlaps_ram};
use crate::start_info::MemoryRegion;

const POOL_PAGES: usize = 128;
const SIZE_4K: u64 = Size4KiB::SIZE;
const SIZE_2M: u64 = Size2MiB::SIZE;
/// The identity map ends where the lower canonical half does.
const IDENTITY_LIMIT: u64 = 1 << 47;

/// How device memory is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Normal memory (shared memory).
    WriteBack,
    /// Registers: PCD + PWT, which is UC under the default PAT.
    Uncached,
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The page-table pool is used up.
    PoolExhausted,
    /// The page is already mapped to a different frame.
    Conflict {
        addr: u64,
    },
    /// Beyond the identity map's reach (2^47).
    OutOfReach {
        addr: u64,
        len: u64,
    },
    /// Device memory that overlaps RAM in the memory map.
    OverlapsRam {
        addr: u64,
        len: u64,
    },
    TooLarge {
        len: u64,
    },
    /// [`init`] has not run.
    NotInitialised,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::PoolExhausted => {
                write!(f, "out of page-table pages ({POOL_PAGES} in the pool)")
            }
            MapError::Conflict { addr } => {
                write!(f, "{addr:#x} is already mapped elsewhere")
            }
            MapError::OutOfReach { addr, len } => {
                write!(f, "{addr:#x}+{len:#x} is beyond the identity map (2^47)")
            }
            MapError::OverlapsRam { addr, len } => {
                write!(f, "device memory {addr:#x}+{len:#x} overlaps RAM")
            }
            MapError::TooLarge { len } => write!(f, "{len:#x} bytes is too large to map"),
            MapError::NotInitialised => f.write_str("page tables not set up yet"),
        }
    }
}

impl core::error::Error for MapError {}

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u8; 4096]; POOL_PAGES]>);

// SAFETY: pool pages are handed out once each (an atomic index) and then
// only touched through the page-table code, under the PAGING lock.
unsafe impl Sync for Pool {}

/// Zeroed at boot with the rest of `.bss`.
static POOL: Pool = Pool(UnsafeCell::new([[0; 4096]; POOL_PAGES]));
static POOL_NEXT: AtomicUsize = AtomicUsize::new(0);

struct PoolFrames;

// SAFETY: every frame is a distinct, zeroed, 4 KiB-aligned page of POOL,
// returned at most once and used for nothing else; POOL is identity-mapped
// (it is in the image), so physical = virtual.
unsafe impl FrameAllocator<Size4KiB> for PoolFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let i = POOL_NEXT.fetch_add(1, Ordering::Relaxed);
        if i >= POOL_PAGES {
            POOL_NEXT.store(POOL_PAGES, Ordering::Relaxed);
            return None;
        }
        let addr = POOL.0.get() as u64 + i as u64 * SIZE_4K;
        PhysFrame::from_start_address(PhysAddr::new(addr)).ok()
    }
}

struct Paging {
    mapper: OffsetPageTable<'static>,
    memmap: &'static [MemoryRegion],
}

static PAGING: Mutex<Option<Paging>> = Mutex::new(None);

/// What [`init`] mapped.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapStats {
    pub pages_4k: u64,
    pub pages_2m: u64,
}

impl MapStats {
    /// Bytes mapped.
    pub fn bytes(&self) -> u64 {
        self.pages_4k * SIZE_4K + self.pages_2m * SIZE_2M
    }
}

/// Page-table pages used so far, and the pool's size.
pub fn pool_usage() -> (usize, usize) {
    (
        POOL_NEXT.load(Ordering::Relaxed).min(POOL_PAGES),
        POOL_PAGES,
    )
}

const RAM: F = F::PRESENT.union(F::WRITABLE).union(F::NO_EXECUTE);
const TEXT: F = F::PRESENT;
const RODATA: F = F::PRESENT.union(F::NO_EXECUTE);
const UNCACHED: F = RAM.union(F::NO_CACHE).union(F::WRITE_THROUGH);

/// Builds the identity map of RAM and the image, and switches to it.
pub fn init(memmap: &'static [MemoryRegion], image: &ImageLayout) -> Result<MapStats, MapError> {
    let mut frames = PoolFrames;
    let root = frames.allocate_frame().ok_or(MapError::PoolExhausted)?;
    // SAFETY: `root` is a fresh, zeroed pool page, reachable at its
    // physical address (the early tables identity-map the first 4 GiB and
    // the pool is in the image); nothing else refers to it.
    let table: &'static mut PageTable =
        unsafe { &mut *(root.start_address().as_u64() as *mut PageTable) };
    // SAFETY: every page-table frame (pool pages) is identity-mapped, now
    // by the early tables and later by the tables built here.
    let mapper = unsafe { OffsetPageTable::new(table, VirtAddr::new(0)) };
    let mut p = Paging { mapper, memmap };
    let mut stats = MapStats::default();

    let whole_image = image.image.start..image.image.end;
    for r in memmap.iter().filter(|r| is_mapped_memory(r.kind)) {
        let range = r.range();
        let start = align_up(range.start).max(SIZE_4K);
        let end = align_down(range.end).min(IDENTITY_LIMIT);
        if start < end {
            p.map_range(start..end, RAM, &whole_image, &mut stats)?;
        }
    }
    let none = 0..0;
    // Image start (the PVH note) up to .text: read-only.
    p.map_range(
        image.image.start..image.text.start,
        RODATA,
        &none,
        &mut stats,
    )?;
    p.map_range(image.text.clone(), TEXT, &none, &mut stats)?;
    p.map_range(image.rodata.clone(), RODATA, &none, &mut stats)?;
    p.map_range(image.writable.clone(), RAM, &image.stack_guard, &mut stats)?;

    // SAFETY: the new tables map the image (code, stack, statics, the
    // pool), all RAM and nothing the code is using that the old ones had
    // beyond that: the start info was copied out before this.
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
    *PAGING.lock() = Some(p);
    Ok(stats)
}

/// Identity-maps device memory `phys..phys + len`. Fails if any of it is
/// RAM in the memory map or already mapped to something else; mapping the
/// same range twice is fine.
pub fn map_device(phys: u64, len: u64, cache: Cache) -> Result<(), MapError> {
    let end = phys
        .checked_add(len)
        .filter(|&e| e <= IDENTITY_LIMIT)
        .ok_or(MapError::OutOfReach { addr: phys, len })?;
    let mut guard = PAGING.lock();
    let p = guard.as_mut().ok_or(MapError::NotInitialised)?;
    if overlaps_ram(p.memmap, phys..end) {
        return Err(MapError::OverlapsRam { addr: phys, len });
    }
    let flags = match cache {
        Cache::WriteBack => RAM,
        Cache::Uncached => UNCACHED,
    };
    let mut stats = MapStats::default();
    p.map_range(align_down(phys)..align_up(end), flags, &(0..0), &mut stats)
}

impl Paging {
    /// Maps `range` (page-aligned) with `flags`, leaving out the pages in
    /// `skip`; 2 MiB pages where possible.
    fn map_range(
        &mut self,
        range: Range<u64>,
        flags: F,
        skip: &Range<u64>,
        stats: &mut MapStats,
    ) -> Result<(), MapError> {
        let overlaps = |a: u64, len: u64| a < skip.end && skip.start < a + len;
        let mut a = range.start;
        while a < range.end {
            if a.is_multiple_of(SIZE_2M) && a + SIZE_2M <= range.end && !overlaps(a, SIZE_2M) {
                self.map_2m(a, flags)?;
                stats.pages_2m += 1;
                a += SIZE_2M;
            } else {
                if !overlaps(a, SIZE_4K) {
                    self.map_4k(a, flags)?;
                    stats.pages_4k += 1;
                }
                a += SIZE_4K;
            }
        }
        Ok(())
    }

    fn map_4k(&mut self, a: u64, flags: F) -> Result<(), MapError> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(a));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(a));
        // SAFETY: an identity mapping of memory that is either not in use
        // by Rust (device memory) or is the same memory at the same
        // address (RAM, the image): no existing reference changes meaning.
        let result = unsafe { self.mapper.map_to(page, frame, flags, &mut PoolFrames) };
        match result {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(e) => self.already(a, e),
        }
    }

    fn map_2m(&mut self, a: u64, flags: F) -> Result<(), MapError> {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(a));
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(a));
        // SAFETY: as in `map_4k`.
        let result = unsafe { self.mapper.map_to(page, frame, flags, &mut PoolFrames) };
        match result {
            Ok(flush) => {
                flush.flush();
                Ok(())
            }
            Err(e) => self.already(a, e),
        }
    }

    /// A failed `map_to` is fine if `a` already maps to itself.
    fn already<S: PageSize>(&self, a: u64, e: MapToError<S>) -> Result<(), MapError> {
        match e {
            MapToError::FrameAllocationFailed => Err(MapError::PoolExhausted),
            MapToError::PageAlreadyMapped(_) | MapToError::ParentEntryHugePage => {
                match self.mapper.translate(VirtAddr::new(a)) {
                    TranslateResult::Mapped { frame, offset, .. }
                        if frame.start_address().as_u64() + offset == a =>
                    {
                        Ok(())
                    }
                    _ => Err(MapError::Conflict { addr: a }),
                }
            }
        }
    }
}
