//! Decisions about physical memory that need no hardware: which RAM becomes
//! the heap, and whether a device range collides with RAM.

use core::ops::Range;

use crate::start_info::{MemoryRegion, MemoryType};

/// Lowest address the heap may use: below 1 MiB live the BIOS data, the
/// loader's start info and the option ROMs.
pub const LOW_MEMORY_END: u64 = 1 << 20;
/// The heap never exceeds this.
pub const HEAP_MAX: u64 = 64 << 20;
/// Less RAM than this for the heap is a boot failure.
pub const HEAP_MIN: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// The heap: the largest free stretch of RAM (above 1 MiB, outside the
/// image), page-aligned, at most `max` bytes from its start. `None` if no
/// stretch has `min` bytes.
pub fn choose_heap(
    memmap: &[MemoryRegion],
    image: Range<u64>,
    min: u64,
    max: u64,
) -> Option<Range<u64>> {
    let mut best: Option<Range<u64>> = None;
    for r in memmap.iter().filter(|r| r.kind == MemoryType::Ram) {
        let start = align_up(r.addr.max(LOW_MEMORY_END));
        let end = align_down(r.range().end);
        // Up to two pieces: below and above the image.
        let pieces = [
            start..end.min(align_down(image.start)),
            start.max(align_up(image.end))..end,
        ];
        for p in pieces {
            if p.start < p.end
                && best
                    .as_ref()
                    .is_none_or(|b| p.end - p.start > b.end - b.start)
            {
                best = Some(p);
            }
        }
    }
    let best = best?;
    if best.end - best.start < min {
        return None;
    }
    Some(best.start..best.start + (best.end - best.start).min(max))
}

/// Whether `range` touches any RAM (or ACPI/NVS/persistent memory) in the
/// map: device memory must not.
pub fn overlaps_ram(memmap: &[MemoryRegion], range: Range<u64>) -> bool {
    memmap
        .iter()
        .filter(|r| is_memory(r.kind))
        .any(|r| r.range().start < range.end && range.start < r.range().end)
}

/// Memory the identity map covers as write-back RAM.
pub fn is_mapped_memory(kind: MemoryType) -> bool {
    matches!(kind, MemoryType::Ram | MemoryType::Acpi)
}

fn is_memory(kind: MemoryType) -> bool {
    matches!(
        kind,
        MemoryType::Ram | MemoryType::Acpi | MemoryType::Nvs | MemoryType::Pmem
    )
}

/// Rounds up to a page; saturates at the last page.
pub const fn align_up(x: u64) -> u64 {
    match x.checked_add(PAGE - 1) {
        Some(v) => v & !(PAGE - 1),
        None => !(PAGE - 1),
    }
}

pub const fn align_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(addr: u64, size: u64) -> MemoryRegion {
        MemoryRegion {
            addr,
            size,
            kind: MemoryType::Ram,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn heap_skips_low_memory_and_the_image() {
        // 128 MiB like QEMU: 0..640K and 1M..128M; the image at 1M..3M.
        let map = [ram(0, 0x9fc00), ram(MIB, 127 * MIB)];
        let heap = choose_heap(&map, MIB..3 * MIB, HEAP_MIN, HEAP_MAX).unwrap();
        assert_eq!(heap, 3 * MIB..3 * MIB + HEAP_MAX);
        // With a small maximum, the same start.
        let heap = choose_heap(&map, MIB..3 * MIB, HEAP_MIN, 4 * MIB).unwrap();
        assert_eq!(heap, 3 * MIB..7 * MIB);
    }

    #[test]
    fn heap_takes_the_larger_side_and_aligns() {
        // The image in the middle of RAM; more room below it.
        let map = [ram(MIB + 100, 30 * MIB)];
        let heap = choose_heap(&map, 20 * MIB..21 * MIB + 5, HEAP_MIN, HEAP_MAX).unwrap();
        assert_eq!(heap, MIB + 4096..20 * MIB);
    }

    #[test]
    fn heap_needs_the_minimum_and_ignores_non_ram() {
        let map = [
            ram(0, 0x9fc00),
            MemoryRegion {
                addr: MIB,
                size: 64 * MIB,
                kind: MemoryType::Reserved,
            },
            ram(MIB, MIB / 2),
        ];
        assert_eq!(choose_heap(&map, 0..0, HEAP_MIN, HEAP_MAX), None);
        assert_eq!(
            choose_heap(&map, 0..0, MIB / 4, HEAP_MAX),
            Some(MIB..MIB + MIB / 2)
        );
    }

    #[test]
    fn ram_overlap() {
        let map = [
            ram(0, 0x9fc00),
            ram(MIB, 127 * MIB),
            MemoryRegion {
                addr: 0xfeff_c000,
                size: 0x4000,
                kind: MemoryType::Reserved,
            },
        ];
        assert!(!overlaps_ram(&map, 0xfebf_0000..0xfebf_1000));
        assert!(!overlaps_ram(&map, 0xfeff_c000..0xff00_0000));
        assert!(overlaps_ram(&map, 127 * MIB..129 * MIB));
        assert!(!overlaps_ram(&map, 128 * MIB..129 * MIB));
        assert!(overlaps_ram(&map, 0..1));
    }

    #[test]
    fn alignment_saturates() {
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_up(u64::MAX), !4095);
        assert_eq!(align_down(8191), 4096);
    }
}
