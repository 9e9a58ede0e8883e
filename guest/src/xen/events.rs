//! `shared_info` and event channels (the 2-level ABI of `xen.h`).
//!
//! Xen places the domain's `shared_info` page at a guest frame of our
//! choosing ([`SHARED_INFO_GPFN`], above RAM). Event-channel upcalls arrive
//! on the HVM callback vector ([`crate::arch::vector::XEN_UPCALL`]) set with
//! `HVM_PARAM_CALLBACK_IRQ` (type "vector": Xen injects it directly while
//! `evtchn_upcall_pending` is set, so there is no local APIC EOI).
//!
//! The upcall handler clears `evtchn_upcall_pending`, swaps out
//! `evtchn_pending_sel`, and for each selected word takes the pending and
//! unmasked bits (clearing exactly those pending bits), recording each port
//! as fired. Waiters ask [`take`] whether their port fired. Masked ports
//! stay pending for when they are unmasked (`EVTCHNOP_unmask` re-raises).

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

use crate::arch::idt;
use crate::arch::mmio;

use super::hypercall::{self, param, space, XenError};

/// Where the guest asks Xen to put `shared_info`: the first frame above
/// 4 GiB, which no PVH domain of ours has RAM at.
pub const SHARED_INFO_GPFN: u64 = 0x10_0000;
/// The guest frames where the grant table's frames go, after it.
pub const GRANT_FRAMES_GPFN: u64 = SHARED_INFO_GPFN + 1;

/// Offsets in `shared_info` (x86-64).
mod off {
    /// `vcpu_info[0]`: 64 bytes each.
    pub const VCPU0: usize = 0;
    pub const UPCALL_PENDING: usize = VCPU0;
    pub const UPCALL_MASK: usize = VCPU0 + 1;
    pub const PENDING_SEL: usize = VCPU0 + 8;
    /// `vcpu_info.time` (`struct vcpu_time_info`).
    pub const TIME: usize = VCPU0 + 32;
    /// `evtchn_pending[64]` and `evtchn_mask[64]` (u64 words).
    pub const PENDING: usize = 2048;
    pub const MASK: usize = 2048 + 512;
}

/// Ports the 2-level ABI has on x86-64.
pub const PORTS: u32 = 64 * 64;

static SHARED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// Ports that fired since their last [`take`].
static FIRED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Times each of the first 64 ports fired, for the interrupt counters.
static COUNTS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

fn word(offset: usize) -> Option<&'static AtomicU64> {
    let base = SHARED.load(Ordering::Acquire);
    if base.is_null() || !offset.is_multiple_of(8) || offset + 8 > 4096 {
        return None;
    }
    // SAFETY: `base` is the identity-mapped `shared_info` page (4 KiB,
    // mapped for ever by `init`), `offset` is 8-aligned and inside it. Xen
    // and this vCPU access these words only atomically (Xen uses locked
    // instructions), so an `AtomicU64` view is sound.
    Some(unsafe { AtomicU64::from_ptr(base.add(offset).cast::<u64>()) })
}

fn byte(offset: usize) -> Option<&'static AtomicU8> {
    let base = SHARED.load(Ordering::Acquire);
    if base.is_null() || offset >= 4096 {
        return None;
    }
    // SAFETY: as in `word`; single bytes are always aligned.
    Some(unsafe { AtomicU8::from_ptr(base.add(offset)) })
}

/// A consistent copy of `vcpu_info[0].time` (the four words of
/// `struct vcpu_time_info`), for the PV clock: Xen bumps the version to odd
/// while it writes, and to even when done.
pub fn time_words() -> Option<[u64; 4]> {
    time_words_and_tsc().map(|(words, _)| words)
}

/// Like [`time_words`], with a TSC read taken inside the same version
/// check (after the words, before the version is read again), as Linux's
/// `pvclock_clocksource_read` does: if Xen replaced the record meanwhile
/// (a new stamp, perhaps from another physical CPU), both are read again.
pub fn time_words_and_tsc() -> Option<([u64; 4], u64)> {
    for _ in 0..1000 {
        let before = word(off::TIME)?.load(Ordering::Acquire) as u32;
        if before & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let mut w = [0u64; 4];
        for (i, v) in w.iter_mut().enumerate() {
            *v = word(off::TIME + i * 8)?.load(Ordering::Acquire);
        }
        let tsc = crate::arch::cpu::rdtsc_ordered();
        let after = word(off::TIME)?.load(Ordering::Acquire) as u32;
        if w[0] as u32 == before && after == before {
            return Some((w, tsc));
        }
    }
    None
}

/// Maps `shared_info`, routes upcalls to the callback vector, and unmasks
/// upcalls on vCPU 0.
pub fn init() -> Result<(), EventError> {
    hypercall::add_to_physmap(space::SHARED_INFO, 0, SHARED_INFO_GPFN).map_err(EventError::Xen)?;
    let phys = SHARED_INFO_GPFN << 12;
    let window = mmio::shared_window(phys, 4096).map_err(|_| EventError::Map)?;
    SHARED.store(window.as_ptr(), Ordering::Release);
    idt::set_xen_upcall(upcall);
    // HVM_PARAM_CALLBACK_IRQ: type 2 (vector) in bits 63:56.
    let value = (2u64 << 56) | u64::from(crate::arch::vector::XEN_UPCALL);
    hypercall::hvm_set_param(param::CALLBACK_IRQ, value).map_err(EventError::Xen)?;
    if let Some(m) = byte(off::UPCALL_MASK) {
        m.store(0, Ordering::Release);
    }
    Ok(())
}

/// Why event channels could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum EventError {
    Xen(XenError),
    Map,
}

impl core::fmt::Display for EventError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EventError::Xen(e) => write!(f, "{e}"),
            EventError::Map => f.write_str("cannot map the shared_info page"),
        }
    }
}

/// The upcall (interrupt context): record every pending, unmasked port.
fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    let Some(pending_flag) = byte(off::UPCALL_PENDING) else {
        return;
    };
    // Loop until Xen has nothing more for us: a port may fire while we scan.
    while pending_flag.swap(0, Ordering::AcqRel) != 0 {
        let Some(sel_word) = word(off::PENDING_SEL) else {
            return;
        };
        let mut sel = sel_word.swap(0, Ordering::AcqRel);
        while sel != 0 {
            let w = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let (Some(pending), Some(mask)) = (word(off::PENDING + w * 8), word(off::MASK + w * 8))
            else {
                continue;
            };
            let ready = pending.load(Ordering::Acquire) & !mask.load(Ordering::Acquire);
            if ready != 0 {
                pending.fetch_and(!ready, Ordering::AcqRel);
                FIRED[w].fetch_or(ready, Ordering::AcqRel);
                if w == 0 {
                    let mut bits = ready;
                    while bits != 0 {
                        COUNTS[bits.trailing_zeros() as usize].fetch_add(1, Ordering::Relaxed);
                        bits &= bits - 1;
                    }
                }
            }
        }
    }
}

/// Whether `port` fired since the last call (and forgets it).
pub fn take(port: u32) -> bool {
    let (w, b) = ((port / 64) as usize, port % 64);
    match FIRED.get(w) {
        Some(f) => f.fetch_and(!(1 << b), Ordering::AcqRel) & (1 << b) != 0,
        None => false,
    }
}

/// Times `port` fired since the last call (ports below 64; `take` for
/// others), and forgets its fired bit.
pub fn take_count(port: u32) -> u64 {
    let n = COUNTS
        .get(port as usize)
        .map_or(0, |c| c.swap(0, Ordering::Relaxed));
    let fired = take(port);
    n.max(u64::from(fired))
}

/// Unmasks `port` (Xen re-raises it if it is pending).
pub fn unmask(port: u32) -> Result<(), XenError> {
    hypercall::evtchn_unmask(port)
}

/// Notifies the other end of `port`.
pub fn notify(port: u32) {
    let _ = hypercall::evtchn_send(port);
}

/// Upcalls taken since boot.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Relaxed)
}
