use super::*;
use std::vec;
use std::vec::Vec;

/// A few pages of guest-physical memory at `base`.
struct FakeMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl FakeMemory {
    fn new(base: u64, len: usize) -> FakeMemory {
        FakeMemory {
            base,
            bytes: vec![0; len],
        }
    }

    fn at(&mut self, paddr: u64, len: usize) -> &mut [u8] {
        let off = (paddr - self.base) as usize;
        &mut self.bytes[off..off + len]
    }
}

impl PhysRead for FakeMemory {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
        let bad = Unreadable {
            paddr,
            len: buf.len(),
        };
        let off = paddr.checked_sub(self.base).ok_or(bad)? as usize;
        let src = self.bytes.get(off..off + buf.len()).ok_or(bad)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

const BASE: u64 = 0x6000;
const INFO: u64 = 0x6000;
const CMDLINE: u64 = 0x6100;
const MEMMAP: u64 = 0x6200;
const MODLIST: u64 = 0x6400;

fn qemu_like_map() -> [MemoryRegion; 4] {
    [
        MemoryRegion {
            addr: 0,
            size: 0x9fc00,
            kind: MemoryType::Ram,
        },
        MemoryRegion {
            addr: 0x9fc00,
            size: 0x400,
            kind: MemoryType::Reserved,
        },
        MemoryRegion {
            addr: 0x10_0000,
            size: 0x7ee_0000,
            kind: MemoryType::Ram,
        },
        MemoryRegion {
            addr: 0xfeff_c000,
            size: 0x4000,
            kind: MemoryType::Reserved,
        },
    ]
}

/// A start info as QEMU's PVH option ROM lays it out.
fn image(cmdline: &[u8]) -> FakeMemory {
    let mut mem = FakeMemory::new(BASE, 0x2000);
    let map = qemu_like_map();
    StartInfoRepr {
        version: 1,
        flags: 0,
        nr_modules: 1,
        modlist_paddr: MODLIST,
        cmdline_paddr: CMDLINE,
        rsdp_paddr: 0xf_5270,
        memmap_paddr: MEMMAP,
        memmap_entries: map.len() as u32,
    }
    .emit(mem.at(INFO, HEADER_LEN));
    mem.at(CMDLINE, cmdline.len()).copy_from_slice(cmdline);
    StartInfoRepr::emit_memmap(&map, mem.at(MEMMAP, map.len() * MEMMAP_ENTRY_LEN));
    let m = mem.at(MODLIST, MODULE_ENTRY_LEN);
    m[0..8].copy_from_slice(&0x20_0000u64.to_le_bytes());
    m[8..16].copy_from_slice(&0x1234u64.to_le_bytes());
    mem
}

#[test]
fn parses_a_qemu_style_start_info() {
    let mem = image(b"ip=10.77.0.2/24 gw=10.77.0.1\0garbage");
    let info = StartInfo::parse(&mem, INFO).unwrap();
    assert_eq!(info.paddr, INFO);
    assert_eq!(info.version, 1);
    assert_eq!(info.cmdline.as_str(), "ip=10.77.0.2/24 gw=10.77.0.1");
    assert_eq!(info.rsdp, Some(0xf_5270));
    assert_eq!(info.memmap.as_slice(), &qemu_like_map());
    assert_eq!(info.ram_bytes(), 0x9fc00 + 0x7ee_0000);
    assert_eq!(info.nr_modules, 1);
    assert_eq!(
        info.modules.as_slice(),
        &[Module {
            paddr: 0x20_0000,
            size: 0x1234,
            cmdline_paddr: 0
        }]
    );
}

#[test]
fn header_bytes_match_the_c_layout() {
    let mut b = [0xaau8; HEADER_LEN];
    StartInfoRepr {
        version: 1,
        flags: 2,
        nr_modules: 3,
        modlist_paddr: 0x1122_3344_5566_7788,
        cmdline_paddr: 0x10,
        rsdp_paddr: 0x20,
        memmap_paddr: 0x30,
        memmap_entries: 4,
    }
    .emit(&mut b);
    let expected: [u8; HEADER_LEN] = [
        0x78, 0xc5, 0x6e, 0x33, // magic
        1, 0, 0, 0, // version
        2, 0, 0, 0, // flags
        3, 0, 0, 0, // nr_modules
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // modlist_paddr
        0x10, 0, 0, 0, 0, 0, 0, 0, // cmdline_paddr
        0x20, 0, 0, 0, 0, 0, 0, 0, // rsdp_paddr
        0x30, 0, 0, 0, 0, 0, 0, 0, // memmap_paddr
        4, 0, 0, 0, // memmap_entries
        0, 0, 0, 0, // reserved
    ];
    assert_eq!(b, expected);
}

#[test]
fn memmap_entry_bytes_match_the_c_layout() {
    let mut b = [0xaau8; MEMMAP_ENTRY_LEN];
    StartInfoRepr::emit_memmap(
        &[MemoryRegion {
            addr: 0x10_0000,
            size: 0x200,
            kind: MemoryType::Acpi,
        }],
        &mut b,
    );
    assert_eq!(
        b,
        [
            0, 0, 0x10, 0, 0, 0, 0, 0, // addr
            0, 2, 0, 0, 0, 0, 0, 0, // size
            3, 0, 0, 0, // type
            0, 0, 0, 0, // reserved
        ]
    );
}

#[test]
fn no_cmdline_is_empty() {
    let mut mem = image(b"\0");
    // cmdline_paddr = 0
    mem.at(INFO + 24, 8).fill(0);
    assert_eq!(StartInfo::parse(&mem, INFO).unwrap().cmdline.as_str(), "");
}

#[test]
fn rejects_bad_magic_null_and_unreadable() {
    let mut mem = image(b"\0");
    assert_eq!(StartInfo::parse(&mem, 0), Err(StartInfoError::NullPointer));
    assert!(matches!(
        StartInfo::parse(&mem, 0x1_0000_0000),
        Err(StartInfoError::Unreadable(_))
    ));
    mem.at(INFO, 4)
        .copy_from_slice(&0x1234_5678u32.to_le_bytes());
    assert_eq!(
        StartInfo::parse(&mem, INFO),
        Err(StartInfoError::BadMagic { found: 0x1234_5678 })
    );
}

#[test]
fn version_0_has_no_memory_map() {
    let mut mem = image(b"\0");
    mem.at(INFO + 4, 4).fill(0);
    assert_eq!(
        StartInfo::parse(&mem, INFO),
        Err(StartInfoError::NoMemoryMap { version: 0 })
    );
}

#[test]
fn too_many_regions_and_a_map_off_the_end() {
    let mut mem = image(b"\0");
    mem.at(INFO + 48, 4)
        .copy_from_slice(&(MEMMAP_MAX as u32 + 1).to_le_bytes());
    assert_eq!(
        StartInfo::parse(&mem, INFO),
        Err(StartInfoError::TooManyMemoryRegions {
            entries: MEMMAP_MAX as u32 + 1
        })
    );
    // 20 entries from 0x7f00 run past the end of the fake memory.
    mem.at(INFO + 48, 4).copy_from_slice(&20u32.to_le_bytes());
    mem.at(INFO + 40, 8)
        .copy_from_slice(&0x7f00u64.to_le_bytes());
    assert!(matches!(
        StartInfo::parse(&mem, INFO),
        Err(StartInfoError::Unreadable(_))
    ));
}

#[test]
fn cmdline_without_nul_or_not_utf8() {
    let mut mem = image(b"\0");
    // Fill from the command line to the end of memory with 'a': no NUL.
    let end = BASE + mem.bytes.len() as u64;
    mem.at(CMDLINE, (end - CMDLINE) as usize).fill(b'a');
    assert!(StartInfo::parse(&mem, INFO).is_err());

    let mut mem = image(b"\0");
    mem.at(CMDLINE, 4096).fill(b'a');
    let mut mem2 = FakeMemory::new(BASE, 0x3000);
    mem2.bytes[..mem.bytes.len()].copy_from_slice(&mem.bytes);
    mem2.at(CMDLINE, CMDLINE_MAX + 1).fill(b'a');
    assert_eq!(
        StartInfo::parse(&mem2, INFO),
        Err(StartInfoError::CmdlineTooLong)
    );

    let mem = image(b"ip=\xff\0");
    assert_eq!(
        StartInfo::parse(&mem, INFO),
        Err(StartInfoError::CmdlineNotUtf8)
    );
}

#[test]
fn cmdline_reads_stop_at_page_boundaries() {
    // A command line that ends right before the end of readable memory: a
    // reader that fetched 256 bytes at a time across the end would fail.
    let mut mem = image(b"\0");
    let end = BASE + mem.bytes.len() as u64;
    let at = end - 5;
    mem.at(at, 5).copy_from_slice(b"ip=1\0");
    mem.at(INFO + 24, 8).copy_from_slice(&at.to_le_bytes());
    assert_eq!(
        StartInfo::parse(&mem, INFO).unwrap().cmdline.as_str(),
        "ip=1"
    );
}

#[test]
fn display_of_a_region() {
    let r = MemoryRegion {
        addr: 0x10_0000,
        size: 0x7ee_0000,
        kind: MemoryType::Ram,
    };
    assert_eq!(
        std::format!("{r}"),
        "0x000000100000-0x000007fe0000    129920 KiB RAM"
    );
    assert_eq!(std::format!("{}", MemoryType::Unknown(9)), "type 9");
}
