//! The GDT (64-bit code and data segments and a TSS) and the TSS's
//! interrupt stacks.

use core::cell::UnsafeCell;

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The IST slot (1-based in the IDT, 0-based in the TSS) of the stack for
/// double faults, NMIs and machine checks: they must work when the normal
/// stack is gone.
pub const EMERGENCY_IST_INDEX: u16 = 0;
const EMERGENCY_STACK_SIZE: usize = 32 * 1024;

/// A stack the CPU switches to; only ever written by the CPU and the code
/// running on it.
#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; EMERGENCY_STACK_SIZE]>);

// SAFETY: Rust code never reads or writes the array; it only takes its
// address for the TSS.
unsafe impl Sync for Stack {}

static EMERGENCY_STACK: Stack = Stack(UnsafeCell::new([0; EMERGENCY_STACK_SIZE]));

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

/// The emergency stack's range, for the exception dump's stack scan.
pub fn emergency_stack() -> core::ops::Range<u64> {
    let bottom = EMERGENCY_STACK.0.get() as u64;
    bottom..bottom + EMERGENCY_STACK_SIZE as u64
}

/// Loads the GDT and TSS and reloads the segment registers.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[usize::from(EMERGENCY_IST_INDEX)] =
            VirtAddr::new(emergency_stack().end);
        tss
    });
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives for
    // ever: a 64-bit code segment, a data segment and an available TSS.
    unsafe {
        CS::set_reg(sel.code);
        SS::set_reg(sel.data);
        DS::set_reg(sel.data);
        ES::set_reg(sel.data);
        load_tss(sel.tss);
    }
}
