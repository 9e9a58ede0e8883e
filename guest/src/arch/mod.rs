//! The x86-64 machine: CPU registers and instructions, descriptor tables,
//! interrupts, the local APIC, the legacy PIC and PIT, page tables and
//! device memory. With `boot` and `pci`, the only place with `unsafe`.

pub mod cpu;
pub mod crash;
pub mod exception;
pub mod gdt;
pub mod idt;
pub mod lapic;
pub mod mmio;
pub mod paging;
pub mod pic;
pub mod pit;
pub mod uart;

/// Interrupt vectors.
pub mod vector {
    /// The legacy PICs are remapped here (and masked) so that a spurious
    /// IRQ 7/15 cannot look like an exception.
    pub const PIC_BASE: u8 = 0x20;
    /// The local APIC timer (one-shot deadlines).
    pub const TIMER: u8 = 0x30;
    /// MSI-X vectors for device interrupts: `MSIX_BASE + entry`.
    pub const MSIX_BASE: u8 = 0x40;
    /// How many MSI-X vectors are reserved.
    pub const MSIX_COUNT: u8 = 8;
    /// Xen's event-channel upcall (HVM_PARAM_CALLBACK_IRQ, type vector):
    /// injected by Xen directly, so it takes no local APIC EOI.
    pub const XEN_UPCALL: u8 = 0xf3;
    /// The local APIC's spurious-interrupt vector (no EOI).
    pub const SPURIOUS: u8 = 0xff;
}
