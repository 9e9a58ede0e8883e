//! The exception report: vector, error code, RIP, RSP, RFLAGS, CR2 for
//! page faults, all general registers, the control registers and the words
//! on the stack that look like return addresses (feed them and RIP to
//! `addr2line -e <image>`). Then the guest exits with
//! [`ExitCode::CpuException`].

use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use super::cpu;
use super::gdt;
use super::idt::InterruptFrame;
use crate::boot::layout;
use crate::exit::ExitCode;

static IN_EXCEPTION: AtomicBool = AtomicBool::new(false);

const NAMES: [(&str, &str); 32] = [
    ("#DE", "divide error"),
    ("#DB", "debug"),
    ("NMI", "non-maskable interrupt"),
    ("#BP", "breakpoint"),
    ("#OF", "overflow"),
    ("#BR", "bound range exceeded"),
    ("#UD", "invalid opcode"),
    ("#NM", "device not available"),
    ("#DF", "double fault"),
    ("-", "coprocessor segment overrun"),
    ("#TS", "invalid TSS"),
    ("#NP", "segment not present"),
    ("#SS", "stack-segment fault"),
    ("#GP", "general protection fault"),
    ("#PF", "page fault"),
    ("-", "reserved"),
    ("#MF", "x87 floating-point error"),
    ("#AC", "alignment check"),
    ("#MC", "machine check"),
    ("#XM", "SIMD floating-point error"),
    ("#VE", "virtualization exception"),
    ("#CP", "control protection"),
    ("-", "reserved"),
    ("-", "reserved"),
    ("-", "reserved"),
    ("-", "reserved"),
    ("-", "reserved"),
    ("-", "reserved"),
    ("#HV", "hypervisor injection"),
    ("#VC", "VMM communication"),
    ("#SX", "security exception"),
    ("-", "reserved"),
];

/// Prints the dump and exits. Never returns.
pub fn report(f: &InterruptFrame) -> ! {
    let v = (f.vector & 0xff) as usize;
    if IN_EXCEPTION.swap(true, Ordering::SeqCst) {
        crate::serial::emergency(format_args!(
            "\nibguest: exception {v} at RIP {:#x} while reporting an exception\n",
            f.rip
        ));
        cpu::debug_exit(ExitCode::CpuException.code());
        cpu::halt_forever();
    }
    let [cr0, cr2, cr3, cr4] = cpu::control_registers();
    let (mnemonic, name) = NAMES[v % 32];
    let out = crate::serial::emergency;
    out(format_args!(
        "\nibguest: CPU exception {v} ({mnemonic} {name}), error code {:#x}\n",
        f.error_code
    ));
    out(format_args!(
        "  RIP    {:#018x}   (addr2line -f -C -e target/x86_64-unknown-none/release/guest {:#x})\n",
        f.rip, f.rip
    ));
    out(format_args!(
        "  RSP    {:#018x}  RFLAGS {:#018x}  CS {:#06x}  SS {:#06x}\n",
        f.rsp, f.rflags, f.cs, f.ss
    ));
    if v == 14 || v == 8 {
        let e = f.error_code;
        out(format_args!("  CR2    {cr2:#018x}"));
        if v == 14 {
            out(format_args!(
                "  ({}, {}{})",
                if e & 1 != 0 {
                    "protection violation"
                } else {
                    "page not present"
                },
                if e & 2 != 0 { "write" } else { "read" },
                if e & 16 != 0 {
                    ", instruction fetch"
                } else {
                    ""
                }
            ));
        }
        out(format_args!("\n"));
        let lay = layout::image();
        if lay.stack_guard.contains(&cr2) {
            out(format_args!(
                "  CR2 is in the stack's guard page: stack overflow ({} KiB stack)\n",
                (lay.stack.end - lay.stack.start) / 1024
            ));
        }
    }
    let regs = [
        ("RAX", f.rax),
        ("RBX", f.rbx),
        ("RCX", f.rcx),
        ("RDX", f.rdx),
        ("RSI", f.rsi),
        ("RDI", f.rdi),
        ("RBP", f.rbp),
        ("R8", f.r8),
        ("R9", f.r9),
        ("R10", f.r10),
        ("R11", f.r11),
        ("R12", f.r12),
        ("R13", f.r13),
        ("R14", f.r14),
        ("R15", f.r15),
    ];
    for row in regs.chunks(4) {
        out(format_args!(" "));
        for (n, val) in row {
            out(format_args!(" {n:<4}{val:#018x}"));
        }
        out(format_args!("\n"));
    }
    out(format_args!(
        "  CR0 {cr0:#018x}  CR3 {cr3:#018x}  CR4 {cr4:#018x}\n"
    ));
    stack_scan(f.rsp);
    crate::exit::exit(ExitCode::CpuException)
}

/// Prints the words above `rsp` that point into `.text`: return
/// addresses, most likely, innermost first.
fn stack_scan(rsp: u64) {
    let lay = layout::image();
    let stacks: [Range<u64>; 2] = [lay.stack.clone(), gdt::emergency_stack()];
    let Some(stack) = stacks.iter().find(|s| s.contains(&rsp)) else {
        let why = if lay.stack_guard.contains(&rsp) {
            "RSP is in the stack's guard page"
        } else {
            "RSP is outside the known stacks"
        };
        crate::serial::emergency(format_args!("  ({why}: no stack scan)\n"));
        return;
    };
    crate::serial::emergency(format_args!("  return addresses on the stack:"));
    let mut shown = 0;
    let mut at = rsp & !7;
    let end = stack.end.min(at.saturating_add(512 * 8));
    while at + 8 <= end && shown < 16 {
        // SAFETY: `at..at + 8` lies inside one of the guest's own stacks,
        // which are mapped for ever; the read is volatile and only copies
        // a word out.
        let word = unsafe { core::ptr::read_volatile(at as *const u64) };
        if lay.text.contains(&word) {
            crate::serial::emergency(format_args!(" {word:#x}"));
            shown += 1;
        }
        at += 8;
    }
    crate::serial::emergency(format_args!("\n"));
}
