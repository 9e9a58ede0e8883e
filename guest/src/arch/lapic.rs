//! The local APIC (xAPIC, memory-mapped): enable, EOI, and the timer as a
//! free-running counter (for calibration) or a one-shot deadline.

use spin::Once;
use x86_64::registers::model_specific::Msr;

use super::mmio::Mmio;
use super::paging::MapError;
use super::vector;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;

mod reg {
    pub const ID: u64 = 0x20;
    pub const TPR: u64 = 0x80;
    pub const EOI: u64 = 0xb0;
    pub const SVR: u64 = 0xf0;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_LINT0: u64 = 0x350;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 0b0011: the timer counts at the bus clock / 16.
const DIVIDE_BY_16: u32 = 0b0011;

static LAPIC: Once<Mmio> = Once::new();

/// Enables the local APIC: maps it (uncached), sets the spurious vector,
/// accepts all priorities, masks LINT0 (the 8259's ExtINT), the error
/// interrupt and the timer. Returns the physical base.
pub fn init() -> Result<u64, MapError> {
    let mut msr = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; reading it has no
    // side effects.
    let base = unsafe { msr.read() };
    if base & APIC_BASE_ENABLE == 0 {
        // SAFETY: setting the global enable bit at the same base only turns
        // the local APIC on.
        unsafe { msr.write(base | APIC_BASE_ENABLE) };
    }
    let phys = base & 0x000f_ffff_ffff_f000;
    let mmio = Mmio::map(phys, 4096)?;
    let lapic = LAPIC.call_once(|| mmio);
    lapic.write32(reg::TPR, 0);
    lapic.write32(reg::LVT_LINT0, LVT_MASKED);
    lapic.write32(reg::LVT_ERROR, LVT_MASKED | u32::from(vector::SPURIOUS));
    lapic.write32(reg::TIMER_DIVIDE, DIVIDE_BY_16);
    lapic.write32(reg::LVT_TIMER, LVT_MASKED | u32::from(vector::TIMER));
    lapic.write32(reg::TIMER_INITIAL, 0);
    lapic.write32(reg::SVR, SVR_ENABLE | u32::from(vector::SPURIOUS));
    Ok(phys)
}

fn with<R>(f: impl FnOnce(&Mmio) -> R) -> Option<R> {
    LAPIC.get().map(f)
}

/// This CPU's APIC ID (the MSI destination).
pub fn id() -> u8 {
    with(|l| (l.read32(reg::ID) >> 24) as u8).unwrap_or(0)
}

/// End of interrupt.
pub fn eoi() {
    with(|l| l.write32(reg::EOI, 0));
}

/// Starts the timer counting down from `u32::MAX`, masked (calibration).
pub fn start_free_running() {
    with(|l| {
        l.write32(reg::LVT_TIMER, LVT_MASKED | u32::from(vector::TIMER));
        l.write32(reg::TIMER_INITIAL, u32::MAX);
    });
}

/// The timer's current count.
pub fn current_count() -> u32 {
    with(|l| l.read32(reg::TIMER_CURRENT)).unwrap_or(0)
}

/// Interrupts on [`vector::TIMER`] after `ticks` timer ticks, once.
pub fn arm_oneshot(ticks: u32) {
    with(|l| {
        l.write32(reg::LVT_TIMER, u32::from(vector::TIMER));
        l.write32(reg::TIMER_INITIAL, ticks.max(1));
    });
}

/// Stops the timer.
pub fn disarm() {
    with(|l| {
        l.write32(reg::TIMER_INITIAL, 0);
        l.write32(reg::LVT_TIMER, LVT_MASKED | u32::from(vector::TIMER));
    });
}

/// The divider the timer runs at, for the record.
pub const TIMER_DIVIDER: u32 = 16;
