//! Hypercalls: the hypercall page Xen fills in (`vmcall` or `vmmcall`, as
//! the CPU wants) and typed wrappers for the calls the guest makes.
//!
//! The page lives in `.text` so it is executable; Xen writes it through
//! its physical address when the guest names that address in the MSR that
//! CPUID leaf `base + 2` gives. Hypercall `n` is the 32-byte stub at
//! `n * 32`. Arguments go in `rdi, rsi, rdx, r10, r8`; the result comes
//! back in `rax` (negative: `-errno`).

use core::arch::{asm, global_asm};
use core::fmt;

use x86_64::registers::model_specific::Msr;

use crate::arch::cpu;

global_asm!(
    r#"
    .pushsection .text.xen_hypercall_page, "ax", @progbits
    .balign 4096
    .global xen_hypercall_page
xen_hypercall_page:
    .fill 4096, 1, 0xcc
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    fn xen_hypercall_page();
}

/// Hypercall numbers (`xen.h`).
mod nr {
    pub const MEMORY_OP: usize = 12;
    pub const CONSOLE_IO: usize = 18;
    pub const XEN_VERSION: usize = 17;
    pub const SCHED_OP: usize = 29;
    pub const EVENT_CHANNEL_OP: usize = 32;
    pub const HVM_OP: usize = 34;
}

/// A hypercall that failed, with Xen's (positive) errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenError {
    pub call: &'static str,
    pub errno: i64,
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hypercall {} failed: errno {}", self.call, self.errno)
    }
}

impl core::error::Error for XenError {}

fn check(call: &'static str, rc: i64) -> Result<u64, XenError> {
    if rc < 0 {
        Err(XenError { call, errno: -rc })
    } else {
        Ok(rc as u64)
    }
}

/// Asks Xen to fill in the hypercall page. `base` is Xen's CPUID base leaf.
pub fn install_page(base: u32) {
    let msr = cpu::cpuid(base + 2, 0).ebx;
    let page = xen_hypercall_page as *const () as u64;
    // SAFETY: the MSR is the one Xen's CPUID leaf names for exactly this;
    // Xen writes the stubs into the page at `page`, which is ours, 4 KiB
    // aligned, in .text, and used for nothing else.
    unsafe { Msr::new(msr).write(page) }
}

/// Calls hypercall `n` with two arguments.
fn call2(n: usize, a1: u64, a2: u64) -> i64 {
    let entry = xen_hypercall_page as *const () as usize + n * 32;
    let rc: i64;
    // SAFETY: `entry` is stub `n` of the page Xen filled in at boot
    // (`install_page` runs before any call). The arguments are values or
    // pointers to live, correctly laid out structures owned by the caller
    // for the duration of the call; Xen may clobber rdi, rsi, rcx and r11
    // and reads or writes only the memory the arguments point to.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            lateout("rax") rc,
            lateout("rcx") _,
            lateout("r11") _,
            lateout("rdx") _,
            lateout("r10") _,
            lateout("r8") _,
        );
    }
    rc
}

/// Calls hypercall `n` with three arguments.
fn call3(n: usize, a1: u64, a2: u64, a3: u64) -> i64 {
    let entry = xen_hypercall_page as *const () as usize + n * 32;
    let rc: i64;
    // SAFETY: as in `call2`.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            inout("rdx") a3 => _,
            lateout("rax") rc,
            lateout("rcx") _,
            lateout("r11") _,
            lateout("r10") _,
            lateout("r8") _,
        );
    }
    rc
}

/// `HVMOP_get_param` / `HVMOP_set_param` (`hvm/hvm_op.h`).
#[repr(C)]
struct HvmParam {
    domid: u16,
    _pad: u16,
    index: u32,
    value: u64,
}

const DOMID_SELF: u16 = 0x7ff0;

/// HVM parameter indices (`hvm/params.h`).
pub mod param {
    pub const CALLBACK_IRQ: u32 = 0;
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
}

pub fn hvm_get_param(index: u32) -> Result<u64, XenError> {
    let mut p = HvmParam {
        domid: DOMID_SELF,
        _pad: 0,
        index,
        value: 0,
    };
    check(
        "HVMOP_get_param",
        call2(nr::HVM_OP, 1, &mut p as *mut _ as u64),
    )?;
    Ok(p.value)
}

pub fn hvm_set_param(index: u32, value: u64) -> Result<(), XenError> {
    let mut p = HvmParam {
        domid: DOMID_SELF,
        _pad: 0,
        index,
        value,
    };
    check(
        "HVMOP_set_param",
        call2(nr::HVM_OP, 0, &mut p as *mut _ as u64),
    )
    .map(|_| ())
}

/// `XENMEM_add_to_physmap` (`memory.h`).
#[repr(C)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

/// `XENMAPSPACE_*`.
pub mod space {
    pub const SHARED_INFO: u32 = 0;
    pub const GRANT_TABLE: u32 = 1;
}

/// Places Xen's page `idx` of `space` at guest frame `gpfn`.
pub fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), XenError> {
    let mut a = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    check(
        "XENMEM_add_to_physmap",
        call2(nr::MEMORY_OP, 7, &mut a as *mut _ as u64),
    )
    .map(|_| ())
}

/// `EVTCHNOP_alloc_unbound`: a new port that domain `remote` may bind.
pub fn evtchn_alloc_unbound(remote: u16) -> Result<u32, XenError> {
    #[repr(C)]
    struct AllocUnbound {
        dom: u16,
        remote_dom: u16,
        port: u32,
    }
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    check(
        "EVTCHNOP_alloc_unbound",
        call2(nr::EVENT_CHANNEL_OP, 6, &mut a as *mut _ as u64),
    )?;
    Ok(a.port)
}

fn evtchn_port_op(name: &'static str, cmd: u64, port: u32) -> Result<(), XenError> {
    let mut p = port;
    check(
        name,
        call2(nr::EVENT_CHANNEL_OP, cmd, &mut p as *mut u32 as u64),
    )
    .map(|_| ())
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> Result<(), XenError> {
    evtchn_port_op("EVTCHNOP_send", 4, port)
}

/// `EVTCHNOP_unmask` (Xen re-raises the upcall if the port is pending).
pub fn evtchn_unmask(port: u32) -> Result<(), XenError> {
    evtchn_port_op("EVTCHNOP_unmask", 9, port)
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> Result<(), XenError> {
    evtchn_port_op("EVTCHNOP_close", 3, port)
}

/// `SCHEDOP_shutdown` reasons (`sched.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Crash = 3,
}

/// `SCHEDOP_shutdown`: does not return when it works.
pub fn shutdown(reason: ShutdownReason) -> XenError {
    let mut r = reason as u32;
    let rc = call2(nr::SCHED_OP, 2, &mut r as *mut u32 as u64);
    XenError {
        call: "SCHEDOP_shutdown",
        errno: -rc,
    }
}

/// `CONSOLEIO_write` to Xen's own console (`xl dmesg`): the fallback
/// when the PV console is not up.
pub fn console_io_write(bytes: &[u8]) {
    call3(nr::CONSOLE_IO, 0, bytes.len() as u64, bytes.as_ptr() as u64);
}

/// `XENVER_version`: `(major, minor)`.
pub fn version() -> (u16, u16) {
    let v = call2(nr::XEN_VERSION, 0, 0) as u32;
    ((v >> 16) as u16, v as u16)
}
