use core::cell::RefCell;

use super::msix::{CONTROL_ENABLE, CONTROL_FUNCTION_MASK};
use super::*;

/// A function's configuration space whose BARs behave like hardware: the
/// low bits that encode the size read back as zero after all ones are
/// written.
struct FakeFunction {
    space: RefCell<[u32; 64]>,
    /// Size of each BAR dword's region (0 = not implemented); for a 64-bit
    /// BAR, the size goes in the low dword and the high dword's entry is
    /// `u64::MAX` as a marker.
    sizes: [u64; 6],
}

impl FakeFunction {
    fn ivshmem() -> FakeFunction {
        let f = FakeFunction {
            space: RefCell::new([0; 64]),
            sizes: [256, 4096, 1 << 30, u64::MAX, 0, 0],
        };
        {
            let mut s = f.space.borrow_mut();
            s[0] = 0x1110_1af4;
            s[1] = 0x0010_0007; // status: cap list; command: io, mem, master
            s[4] = 0xfebf_1000; // BAR0 32-bit
            s[5] = 0xfebf_2000; // BAR1 32-bit
            s[6] = 0x0000_000c; // BAR2 64-bit prefetchable, low
            s[7] = 0x0000_0001; // BAR2 high: 4 GiB
            s[0x34 / 4] = 0x40;
            // 0x40: vendor-specific (id 9) -> 0x50
            s[0x40 / 4] = 0x0000_5009;
            // 0x50: MSI-X, next 0, control: 2 entries (1), table BAR1 @0,
            // PBA BAR1 @0x800
            s[0x50 / 4] = 0x0001_0011;
            s[0x54 / 4] = 0x0000_0001;
            s[0x58 / 4] = 0x0000_0801;
        }
        f
    }
}

impl ConfigSpace for FakeFunction {
    fn read32(&self, offset: u16) -> u32 {
        self.space.borrow()[usize::from(offset / 4) & 63]
    }

    fn write32(&self, offset: u16, value: u32) {
        let i = usize::from(offset / 4) & 63;
        let mut s = self.space.borrow_mut();
        if (4..10).contains(&i) {
            let bar = i - 4;
            let size = self.sizes[bar];
            let old = s[i];
            s[i] = if size == u64::MAX {
                // High half of a 64-bit BAR: the previous BAR's size.
                let size = self.sizes[bar - 1];
                value & ((!(size - 1)) >> 32) as u32
            } else if size == 0 {
                0
            } else {
                let low_bits = if old & 1 == 1 { old & 0x3 } else { old & 0xf };
                (value & !((size as u32).wrapping_sub(1)) & !0xf) | low_bits
            };
            return;
        }
        s[i] = value;
    }
}

#[test]
fn config_address() {
    let a = ConfigAddress::new(
        Location {
            bus: 0,
            device: 3,
            function: 0,
        },
        0x10,
    );
    assert_eq!(a.0, 0x8000_1810);
    let a = ConfigAddress::new(
        Location {
            bus: 0xff,
            device: 31,
            function: 7,
        },
        0x3e,
    );
    assert_eq!(a.0, 0x80ff_ff3c);
}

#[test]
fn narrow_reads_and_writes() {
    let f = FakeFunction::ivshmem();
    assert_eq!(f.vendor_id(), 0x1af4);
    assert_eq!(f.device_id(), 0x1110);
    assert_eq!(f.read8(0x02), 0x10);
    assert_eq!(f.read8(0x03), 0x11);
    assert_eq!(f.read16(reg::STATUS), 0x0010);
    f.set_command(0x0406);
    assert_eq!(f.read32(4), 0x0010_0406);
}

#[test]
fn bars_of_an_ivshmem_device() {
    let f = FakeFunction::ivshmem();
    let bars = read_bars(&f);
    assert_eq!(
        bars[0],
        Bar::Memory {
            addr: 0xfebf_1000,
            size: 256,
            is_64: false,
            prefetchable: false
        }
    );
    assert_eq!(bars[1].memory(), Some((0xfebf_2000, 4096)));
    assert_eq!(
        bars[2],
        Bar::Memory {
            addr: 0x1_0000_0000,
            size: 1 << 30,
            is_64: true,
            prefetchable: true
        }
    );
    assert_eq!(bars[3], Bar::Absent);
    assert_eq!(bars[4], Bar::Absent);
    // Values and the command register are restored.
    assert_eq!(f.read32(0x10), 0xfebf_1000);
    assert_eq!(f.read32(0x18), 0x0000_000c);
    assert_eq!(f.read32(0x1c), 1);
    assert_eq!(f.command(), 0x0007);
    assert_eq!(
        std::format!("{}", bars[2]),
        "memory 0x100000000 size 0x40000000 (64-bit, prefetchable)"
    );
}

#[test]
fn bar_decoding_by_hand() {
    // 32-bit, 1 MiB, non-prefetchable.
    assert_eq!(
        Bar::decode(0xfe00_0000, 0xfff0_0000, 0, 0),
        Bar::Memory {
            addr: 0xfe00_0000,
            size: 1 << 20,
            is_64: false,
            prefetchable: false
        }
    );
    // 64-bit 8 GiB at 16 GiB.
    assert_eq!(
        Bar::decode(0x0000_000c, 0x0000_000c, 0x4, 0xffff_fffe),
        Bar::Memory {
            addr: 0x4_0000_0000,
            size: 8 << 30,
            is_64: true,
            prefetchable: true
        }
    );
    // I/O, 32 ports, upper bits unimplemented.
    assert_eq!(
        Bar::decode(0xc041, 0xffe1, 0, 0),
        Bar::Io {
            port: 0xc040,
            size: 32
        }
    );
    assert_eq!(Bar::decode(0, 0, 0, 0), Bar::Absent);
    assert_eq!(Bar::decode(1, 1, 0, 0), Bar::Absent);
    // Unassigned memory BAR: no range.
    assert_eq!(Bar::decode(0, 0xffff_f000, 0, 0).memory(), None);
}

#[test]
fn capability_walk() {
    let f = FakeFunction::ivshmem();
    let caps: std::vec::Vec<_> = capabilities(&f).collect();
    assert_eq!(caps, [(0x09, 0x40), (0x11, 0x50)]);
    assert_eq!(find_capability(&f, CAP_MSIX), Some(0x50));
    assert_eq!(find_capability(&f, 0x05), None);
}

#[test]
fn capability_walk_survives_loops_and_no_list() {
    let f = FakeFunction::ivshmem();
    // 0x50 points back to 0x40: a loop.
    f.write32(0x50, 0x0001_4011);
    assert_eq!(capabilities(&f).count(), 48);
    assert_eq!(find_capability(&f, 0x05), None);
    // Status says there is no list.
    f.write32(0x04, 0x0000_0007);
    assert_eq!(capabilities(&f).count(), 0);
}

#[test]
fn msix_capability_and_entries() {
    let f = FakeFunction::ivshmem();
    let at = find_capability(&f, CAP_MSIX).unwrap();
    let cap = MsixCapability::parse(
        at,
        f.read16(u16::from(at) + 2),
        f.read32(u16::from(at) + 4),
        f.read32(u16::from(at) + 8),
    )
    .unwrap();
    assert_eq!(
        cap,
        MsixCapability {
            offset: 0x50,
            table_size: 2,
            table_bar: 1,
            table_offset: 0,
            pba_bar: 1,
            pba_offset: 0x800
        }
    );
    assert_eq!(cap.control_offset(), 0x52);
    assert_eq!(cap.entry_offset(1), 16);
    assert_eq!(cap.check_table(4096), Ok(()));
    assert_eq!(
        cap.check_table(16),
        Err(MsixError::TableOutsideBar {
            end: 32,
            bar_size: 16
        })
    );
    assert_eq!(
        MsixCapability::parse(0x50, 0, 6, 0),
        Err(MsixError::BadBar { bir: 6 })
    );

    let e = MsixEntry::fixed(0, 0x40);
    assert_eq!(e.words(), [0xfee0_0000, 0, 0x40, 0]);
    let e = MsixEntry::fixed(3, 0x41);
    assert_eq!(e.words(), [0xfee0_3000, 0, 0x41, 0]);
    assert_eq!(CONTROL_ENABLE | CONTROL_FUNCTION_MASK, 0xc000);
}
