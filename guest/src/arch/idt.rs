//! The IDT, the interrupt entry stubs and the dispatcher.
//!
//! Every vector has a 16-byte stub (in `global_asm!`: the stable way to
//! write interrupt entries) that pushes a zero error code where the CPU
//! pushes none, then the vector number, then jumps to a common path that
//! saves the general registers as an [`InterruptFrame`] and calls
//! `dispatch`. Exceptions (vectors 0..32) print a register dump and end
//! the guest; device interrupts bump a counter, set the wake flag and send
//! the EOI, and return through `iretq`.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;
use x86_64::structures::idt::{Entry, InterruptDescriptorTable};
use x86_64::VirtAddr;

use super::gdt::EMERGENCY_IST_INDEX;
use super::vector;

/// Bytes per stub.
const STUB_LEN: usize = 16;

global_asm!(
    r#"
    .pushsection .text.isr, "ax", @progbits
    .balign 16
    .global isr_stubs
isr_stubs:
    .set isr_vector, 0
    .rept 256
    .balign 16
    .if (isr_vector == 8) || ((isr_vector >= 10) && (isr_vector <= 14)) || (isr_vector == 17) || (isr_vector == 21) || (isr_vector == 29) || (isr_vector == 30)
    .else
    pushq $0
    .endif
    pushq $isr_vector
    jmp isr_common
    .set isr_vector, isr_vector + 1
    .endr
    .balign 16
    .global isr_stubs_end
isr_stubs_end:

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    mov %rsp, %rdi
    call {dispatch}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    add $16, %rsp
    iretq
    .popsection
"#,
    dispatch = sym dispatch,
    options(att_syntax)
);

extern "C" {
    fn isr_stubs();
    fn isr_stubs_end();
}

/// What the stubs and the CPU leave on the stack, lowest address first.
/// The CPU aligns the stack to 16 bytes before pushing `ss`, and the frame
/// is 22 quadwords, so the dispatcher is called with an aligned stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Interrupts on each MSI-X vector since it was last taken.
static MSIX_COUNTS: [AtomicU64; vector::MSIX_COUNT as usize] =
    [const { AtomicU64::new(0) }; vector::MSIX_COUNT as usize];
static TIMER_COUNT: AtomicU64 = AtomicU64::new(0);
static SPURIOUS_COUNT: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED_COUNT: AtomicU64 = AtomicU64::new(0);
/// The Xen upcall handler, once the event channels are set up.
static XEN_UPCALL: Once<fn()> = Once::new();
/// Set by every device or timer interrupt; cleared by whoever waits.
static WAKE: AtomicBool = AtomicBool::new(false);

fn stub(v: u8) -> VirtAddr {
    VirtAddr::new(isr_stubs as *const () as u64 + u64::from(v) * STUB_LEN as u64)
}

/// Points `e` at vector `v`'s stub, optionally on the emergency stack.
fn set<F>(e: &mut Entry<F>, v: u8, emergency_stack: bool) {
    // SAFETY: the stub for `v` is an interrupt entry that handles the
    // error code the CPU pushes (or not) for `v`, whatever `F` says.
    let opts = unsafe { e.set_handler_addr(stub(v)) };
    if emergency_stack {
        // SAFETY: the IST slot is set in the TSS to a stack used by
        // nothing else; these vectors do not nest.
        unsafe { opts.set_stack_index(EMERGENCY_IST_INDEX) };
    }
}

/// Builds and loads the IDT: every exception and every vector from 32 up.
pub fn init() {
    let stubs_len = isr_stubs_end as *const () as usize - isr_stubs as *const () as usize;
    assert_eq!(
        stubs_len,
        256 * STUB_LEN,
        "interrupt stubs are not 16 bytes each"
    );
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        set(&mut idt.divide_error, 0, false);
        set(&mut idt.debug, 1, false);
        set(&mut idt.non_maskable_interrupt, 2, true);
        set(&mut idt.breakpoint, 3, false);
        set(&mut idt.overflow, 4, false);
        set(&mut idt.bound_range_exceeded, 5, false);
        set(&mut idt.invalid_opcode, 6, false);
        set(&mut idt.device_not_available, 7, false);
        set(&mut idt.double_fault, 8, true);
        set(&mut idt[9], 9, false);
        set(&mut idt.invalid_tss, 10, false);
        set(&mut idt.segment_not_present, 11, false);
        set(&mut idt.stack_segment_fault, 12, false);
        set(&mut idt.general_protection_fault, 13, false);
        set(&mut idt.page_fault, 14, false);
        set(&mut idt.x87_floating_point, 16, false);
        set(&mut idt.alignment_check, 17, false);
        set(&mut idt.machine_check, 18, true);
        set(&mut idt.simd_floating_point, 19, false);
        set(&mut idt.virtualization, 20, false);
        set(&mut idt.cp_protection_exception, 21, false);
        set(&mut idt.hv_injection_exception, 28, false);
        set(&mut idt.vmm_communication_exception, 29, false);
        set(&mut idt.security_exception, 30, false);
        for v in 32..=255u8 {
            set(&mut idt[v], v, false);
        }
        idt
    });
    idt.load();
}

extern "sysv64" fn dispatch(frame: &mut InterruptFrame) {
    let v = (frame.vector & 0xff) as u8;
    match v {
        0..=31 => super::exception::report(frame),
        vector::TIMER => {
            TIMER_COUNT.fetch_add(1, Ordering::Relaxed);
            WAKE.store(true, Ordering::Release);
            super::lapic::eoi();
        }
        v if (vector::MSIX_BASE..vector::MSIX_BASE + vector::MSIX_COUNT).contains(&v) => {
            MSIX_COUNTS[usize::from(v - vector::MSIX_BASE)].fetch_add(1, Ordering::Relaxed);
            WAKE.store(true, Ordering::Release);
            super::lapic::eoi();
        }
        vector::XEN_UPCALL => {
            if let Some(handler) = XEN_UPCALL.get() {
                handler();
            }
            WAKE.store(true, Ordering::Release);
        }
        // The PICs are masked: only their spurious IRQ 7 and 15 get here,
        // and those take no EOI.
        v if (vector::PIC_BASE..vector::PIC_BASE + 16).contains(&v) => {
            SPURIOUS_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        vector::SPURIOUS => {
            SPURIOUS_COUNT.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            UNEXPECTED_COUNT.fetch_add(1, Ordering::Relaxed);
            WAKE.store(true, Ordering::Release);
            super::lapic::eoi();
        }
    }
}

/// Installs the handler for [`vector::XEN_UPCALL`] (once).
pub fn set_xen_upcall(handler: fn()) {
    XEN_UPCALL.call_once(|| handler);
}

/// Takes (returns and zeroes) the count of interrupts on MSI-X vector
/// `entry` (`MSIX_BASE + entry`).
pub fn take_msix(entry: u8) -> u64 {
    MSIX_COUNTS
        .get(usize::from(entry))
        .map_or(0, |c| c.swap(0, Ordering::Relaxed))
}

/// Takes the wake flag: whether any device or timer interrupt arrived
/// since the last call.
pub fn take_wake() -> bool {
    WAKE.swap(false, Ordering::Acquire)
}

/// Interrupt counts since boot: timer, spurious, unexpected vectors.
pub fn counts() -> (u64, u64, u64) {
    (
        TIMER_COUNT.load(Ordering::Relaxed),
        SPURIOUS_COUNT.load(Ordering::Relaxed),
        UNEXPECTED_COUNT.load(Ordering::Relaxed),
    )
}
