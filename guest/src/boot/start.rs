//! The first Rust code: brings the platform up in order and calls the
//! guest's main.

use core::fmt;

use spin::Once;

use crate::arch::{self, cpu, paging};
use crate::exit::{fail, ExitCode};
use crate::memory::{choose_heap, HEAP_MAX, HEAP_MIN};
use crate::start_info::{PhysRead, StartInfo, Unreadable};
use crate::{serial, timer};

/// What the platform found at boot; handed to the guest's main.
#[derive(Debug)]
pub struct BootInfo {
    /// The loader's `hvm_start_info`, copied.
    pub start_info: &'static StartInfo,
    /// The heap's physical range.
    pub heap: core::ops::Range<u64>,
    /// The image's layout.
    pub layout: super::layout::ImageLayout,
    pub calibration: timer::Calibration,
    /// The local APIC's physical base and ID.
    pub lapic_base: u64,
    pub lapic_id: u8,
    /// Identity-mapped bytes of RAM and image.
    pub mapped: paging::MapStats,
    /// What the Xen platform set up, when running on Xen.
    pub xen: Option<crate::xen::XenInfo>,
}

static BOOT_INFO: Once<BootInfo> = Once::new();

/// The boot information, once the platform is up.
pub fn boot_info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

/// Physical memory below 4 GiB, through the early identity map.
struct EarlyPhys;

const EARLY_MAP_END: u64 = 1 << 32;

impl PhysRead for EarlyPhys {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), Unreadable> {
        let bad = Unreadable {
            paddr,
            len: buf.len(),
        };
        let end = paddr.checked_add(buf.len() as u64).ok_or(bad)?;
        if paddr == 0 || end > EARLY_MAP_END {
            return Err(bad);
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the early page tables identity-map all of the first
            // 4 GiB, and `paddr..end` is inside it and not null; the
            // loader's structures are not Rust objects, so a volatile byte
            // copy is the whole interaction.
            *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
        }
        Ok(())
    }
}

extern "Rust" {
    /// Defined by [`crate::entry_point!`] in the binary.
    fn __ibguest_main(boot: &'static BootInfo) -> !;
}

fn fatal(code: ExitCode, what: &str, e: &dyn fmt::Display) -> ! {
    fail(code, format_args!("{what}: {e}"))
}

/// Called by the entry code on the boot stack, in long mode, interrupts
/// off, with the start info's physical address.
pub(super) extern "sysv64" fn boot_main(start_info_paddr: u64) -> ! {
    // The IDT first: under Xen every port access is emulated, and a fault
    // there must be reported, not become a triple fault.
    arch::gdt::init();
    arch::idt::init();
    serial::init();

    let start_info = StartInfo::parse(&EarlyPhys, start_info_paddr)
        .unwrap_or_else(|e| fatal(ExitCode::BootFailure, "cannot read hvm_start_info", &e));
    let layout = super::layout::image();
    // The memory map must outlive the page tables, which check device
    // ranges against it: keep the whole start info in a static first.
    let info = START_INFO.call_once(|| start_info);
    let mapped = paging::init(&info.memmap, &layout)
        .unwrap_or_else(|e| fatal(ExitCode::BootFailure, "cannot build the page tables", &e));

    let heap =
        choose_heap(&info.memmap, layout.image.clone(), HEAP_MIN, HEAP_MAX).unwrap_or_else(|| {
            fail(
                ExitCode::BootFailure,
                format_args!(
                    "no RAM for a heap of at least {} KiB in the memory map",
                    HEAP_MIN / 1024
                ),
            )
        });
    // SAFETY: `heap` is RAM from the memory map, outside the image and
    // the first MiB, identity-mapped writable by `paging::init`, and used
    // for nothing else.
    unsafe { super::heap::init(heap.clone()) };
    serial::init_logger(log::LevelFilter::Info);
    // Under Xen: hypercall page, shared_info and upcalls, the PV console
    // (from here on the log goes there too).
    let xen = crate::xen::init();

    // A PVH domain has no 8259s (nor PIT, nor COM1): no port I/O for them.
    if !serial::on_xen() {
        arch::pic::disable();
    }
    let lapic_base = arch::lapic::init()
        .unwrap_or_else(|e| fatal(ExitCode::BootFailure, "cannot map the local APIC", &e));
    let calibration =
        timer::init().unwrap_or_else(|e| fatal(ExitCode::BootFailure, "no clock", &e));
    let lapic_id = arch::lapic::id();
    cpu::enable_interrupts();

    let boot = BOOT_INFO.call_once(|| BootInfo {
        start_info: info,
        heap,
        layout,
        calibration,
        lapic_base,
        lapic_id,
        mapped,
        xen,
    });
    // SAFETY: `entry_point!` defines `__ibguest_main` with exactly this
    // signature; a binary without it does not link.
    unsafe { __ibguest_main(boot) }
}

/// The parsed start info, which `BootInfo` and the page tables refer to.
static START_INFO: Once<StartInfo> = Once::new();
