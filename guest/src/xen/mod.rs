//! The guest under Xen (PVH): everything the image needs from the
//! hypervisor, and the channel's Xen transport.
//!
//! - [`hypercall`]: the hypercall page and the calls we make;
//! - [`events`]: `shared_info`, the event-channel upcall on the HVM
//!   callback vector, masking and pending bits;
//! - [`clock`]: the PV clock (`vcpu_time_info`);
//! - [`console`]: the PV console ring (`xl console`);
//! - [`grant`]: the grant table (v1);
//! - [`xenstore`]: a xenstore client over the shared ring;
//! - [`channel`]: the ibguest channel over grants, an event channel and
//!   the XenbusState handshake in xenstore;
//! - shutdown with `SCHEDOP_shutdown` ([`shutdown`]).
//!
//! `unsafe` is confined to `hypercall` (the page and the calls) and
//! `events` (atomic views of `shared_info`).

#[allow(unsafe_code)]
pub mod events;
#[allow(unsafe_code)]
pub mod hypercall;

pub mod channel;
pub mod clock;
pub mod console;
pub mod grant;
pub mod xenstore;

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::cpu;
use crate::exit::ExitCode;

pub use channel::{XenChannel, XenChannelError};

static UP: AtomicBool = AtomicBool::new(false);

/// What [`init`] set up, for the boot log.
#[derive(Clone, Copy, Debug)]
pub struct XenInfo {
    pub cpuid_base: u32,
    pub version: (u16, u16),
    pub console: bool,
    pub pv_clock_ns: Option<u64>,
    /// TSC frequency by the PV clock's scale factor.
    pub pv_clock_tsc_hz: Option<u64>,
}

/// Brings up the Xen platform if we run on Xen: the hypercall page,
/// `shared_info` and upcalls, the PV console. `None` when not on Xen.
/// Errors are reported on port 0xe9 and leave the guest on its fallback
/// paths (port 0xe9 output, TSC clock).
pub fn init() -> Option<XenInfo> {
    let base = cpu::xen_cpuid_base()?;
    hypercall::install_page(base);
    let version = hypercall::version();
    if let Err(e) = events::init() {
        crate::println!("ibguest: xen: event channels unavailable: {e}");
        return None;
    }
    UP.store(true, Ordering::Release);
    crate::timer::use_pv_clock(clock::now_nanos);
    let console = match console::init() {
        Ok(()) => true,
        Err(e) => {
            crate::println!("ibguest: xen: no PV console ({e}); logging to port 0xe9 only");
            false
        }
    };
    Some(XenInfo {
        cpuid_base: base,
        version,
        console,
        pv_clock_ns: clock::now_nanos(),
        pv_clock_tsc_hz: clock::info().map(|i| i.tsc_hz()),
    })
}

/// Whether [`init`] brought Xen up.
pub fn is_up() -> bool {
    UP.load(Ordering::Acquire)
}

/// Ends the domain: poweroff for success, crash for any failure, so that
/// `xl list -v` and the toolstack tell them apart. Does not return.
pub fn shutdown(code: ExitCode) -> ! {
    let reason = if code == ExitCode::Success {
        hypercall::ShutdownReason::Poweroff
    } else {
        hypercall::ShutdownReason::Crash
    };
    let e = hypercall::shutdown(reason);
    crate::serial::emergency(format_args!("ibguest: {e}; halting\n"));
    cpu::halt_forever()
}
