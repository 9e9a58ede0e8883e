//! Single instructions and registers, wrapped so the rest of the guest
//! needs no `unsafe`.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc, CpuidResult};

use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};

pub use x86_64::instructions::interrupts::without_interrupts;

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads a counter; every x86-64 CPU has it.
    unsafe { _rdtsc() }
}

/// The TSC, read only after every earlier load has completed (`lfence;
/// rdtsc`), for a TSC that must belong with values just loaded (the PV
/// clock's record).
pub fn rdtsc_ordered() -> u64 {
    // SAFETY: lfence only orders loads and rdtsc only reads a counter;
    // every x86-64 CPU has both (SSE2 is part of x86-64).
    unsafe {
        core::arch::x86_64::_mm_lfence();
        _rdtsc()
    }
}

/// `cpuid` leaf `leaf`, sub-leaf `sub`.
pub fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

/// The base leaf of Xen's CPUID range, if running on Xen.
pub fn xen_cpuid_base() -> Option<u32> {
    (0x4000_0000u32..0x4001_0000).step_by(0x100).find(|&base| {
        let r = cpuid(base, 0);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        &sig == b"XenVMMXenVMM" && r.eax >= base + 2
    })
}

/// Writes `byte` to I/O port 0xe9, which Xen (and QEMU with `-debugcon`)
/// show as a console.
pub fn debugcon_write(byte: u8) {
    let mut port = Port::<u8>::new(0xe9);
    // SAFETY: port 0xe9 is either Xen's/QEMU's debug console or nothing;
    // writing it has no effect on memory.
    unsafe { port.write(byte) }
}

/// Writes `code` to QEMU's isa-debug-exit port, which ends QEMU with
/// status `(code << 1) | 1`; returns if the device is absent.
pub fn debug_exit(code: u8) {
    let mut port = Port::<u32>::new(crate::exit::DEBUG_EXIT_PORT);
    // SAFETY: 0xf4 is isa-debug-exit or nothing; no memory effects.
    unsafe { port.write(u32::from(code)) }
}

/// Interrupts off, then `hlt` for ever. Under Xen this powers the domain
/// off.
pub fn halt_forever() -> ! {
    interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Whether interrupts are enabled.
pub fn interrupts_enabled() -> bool {
    interrupts::are_enabled()
}

pub fn enable_interrupts() {
    interrupts::enable();
}

pub fn disable_interrupts() {
    interrupts::disable();
}

/// `sti; hlt`: interrupts are recognised only after `hlt` has started (the
/// `sti` shadow), so one that was pending when the caller checked for work
/// with interrupts off wakes the `hlt` instead of being missed.
pub fn enable_interrupts_and_halt() {
    interrupts::enable_and_hlt();
}

/// Control registers, for the exception dump.
pub fn control_registers() -> [u64; 4] {
    let (frame, low) = Cr3::read_raw();
    [
        Cr0::read_raw(),
        Cr2::read_raw(),
        frame.start_address().as_u64() | u64::from(low),
        Cr4::read_raw(),
    ]
}

/// Where this CPU's IDT and GDT are (base, limit) and its page-table root
/// (CR3). The boot log prints them, so that a domain's saved state after a
/// triple fault (`xen-hvmctx`'s idtr, gdtr and cr3) can be told to be the
/// guest's own or not (xentest/README.md).
pub fn tables() -> CpuTables {
    let idt = x86_64::instructions::tables::sidt();
    let gdt = x86_64::instructions::tables::sgdt();
    CpuTables {
        idt: (idt.base.as_u64(), idt.limit),
        gdt: (gdt.base.as_u64(), gdt.limit),
        cr3: control_registers()[2],
    }
}

/// See [`tables`].
#[derive(Clone, Copy, Debug)]
pub struct CpuTables {
    pub idt: (u64, u16),
    pub gdt: (u64, u16),
    pub cr3: u64,
}

impl core::fmt::Display for CpuTables {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "IDT {:#x}+{:#x}, GDT {:#x}+{:#x}, CR3 {:#x}",
            self.idt.0, self.idt.1, self.gdt.0, self.gdt.1, self.cr3
        )
    }
}

/// A seed for pseudo-random choices (TCP initial sequence numbers,
/// ephemeral ports): `rdrand` where the CPU has it, else the TSC, mixed.
/// Not for cryptography.
pub fn random_seed() -> u64 {
    let has_rdrand = cpuid(1, 0).ecx & (1 << 30) != 0;
    let mut hw = 0u64;
    if has_rdrand {
        for _ in 0..10 {
            let mut v = 0u64;
            // SAFETY: CPUID says rdrand exists; it only writes a register
            // and the carry flag.
            let ok = unsafe { core::arch::x86_64::_rdrand64_step(&mut v) };
            if ok == 1 {
                hw = v;
                break;
            }
        }
    }
    splitmix64(hw ^ rdtsc())
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Spins for a little while (`pause`).
pub fn relax() {
    // SAFETY: `pause` is a hint with no effects.
    unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) }
}
