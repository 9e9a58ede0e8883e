//! Failures on purpose (`crash=` on the command line), to exercise the
//! exception and panic paths.

use core::arch::asm;
use core::hint::black_box;

/// An address nothing maps: page 0 stays unmapped, and so does anything
/// that is not RAM or a device.
const UNMAPPED: u64 = 0x0000_7ead_beef_0000;

/// `ud2`: #UD.
pub fn invalid_opcode() -> ! {
    // SAFETY: ud2 raises #UD, whose handler reports and never returns.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// A read of an unmapped address: #PF with CR2 = the address.
pub fn page_fault() -> ! {
    // SAFETY: the read faults and the page-fault handler never returns;
    // it is done in asm, so no Rust pointer to the address is ever made.
    unsafe {
        asm!(
            "mov {addr}, qword ptr [{addr}]",
            "ud2",
            addr = in(reg) UNMAPPED,
            options(noreturn, nostack)
        )
    }
}

/// Recursion until the guard page below the stack: the #PF cannot be
/// pushed on the overflowed stack, so it becomes a #DF on the emergency
/// stack.
pub fn stack_overflow() -> ! {
    let n = recurse(black_box(1));
    panic!("recursion ended at {n}");
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let frame = black_box([n; 64]);
    if black_box(n) == 0 {
        return frame[1];
    }
    recurse(n + 1).wrapping_add(frame[7])
}
