//! The grant table (v1): the guest lets another domain map its pages.
//!
//! Xen places the table's frames at guest frames of our choosing
//! ([`GRANT_FRAMES_GPFN`](super::events::GRANT_FRAMES_GPFN) on, above RAM)
//! with `XENMEM_add_to_physmap`; frames are added as references are
//! needed, up to [`MAX_FRAMES`]. An entry is `{flags: u16, domid: u16,
//! frame: u32}`; granting writes the frame first, then flags and domid
//! together (Release), so Xen never sees a permitted entry with a stale
//! frame. References below 8 are the toolstack's (console, xenstore).
//!
//! [`end_access`] takes a grant back (Linux's
//! `gnttab_end_foreign_access_ref`): it clears the entry with a
//! compare-and-swap, and refuses while Xen has the frame mapped
//! (`GTF_reading`/`GTF_writing`). Memory may go back to the heap only once
//! every grant of it has ended: a page freed while granted is still the
//! other domain's to read, and the heap writes its own bookkeeping there
//! (the back end once read a freed grant directory whose first 16 bytes
//! had become the allocator's hole header).

use core::sync::atomic::Ordering;

use ring::Window;
use spin::Mutex;

use crate::arch::mmio;

use super::events::GRANT_FRAMES_GPFN;
use super::hypercall::{self, space, XenError};

/// Frames the guest will add at most (8 KiB entries... 512 per frame).
pub const MAX_FRAMES: u64 = 16;
const ENTRIES_PER_FRAME: u32 = 512;
const ENTRY_BYTES: usize = 8;
/// The first reference the guest hands out.
pub const FIRST_REF: u32 = 8;

/// `GTF_*` flags.
const GTF_PERMIT_ACCESS: u32 = 1;
const GTF_READONLY: u32 = 1 << 2;
/// Set by Xen while the other domain has the frame mapped.
const GTF_READING: u32 = 1 << 3;
const GTF_WRITING: u32 = 1 << 4;

/// A grant reference.
pub type GrantRef = u32;

/// Why a grant could not be made.
#[derive(Clone, Copy, Debug)]
pub enum GrantError {
    /// All [`MAX_FRAMES`] frames' entries are in use.
    TableFull,
    /// Xen refused another frame.
    Grow(XenError),
    /// The table's frames could not be mapped.
    Map,
    /// [`end_access`]: the other domain still has the frame mapped.
    InUse { gref: GrantRef },
    /// [`end_access`]: not a reference [`grant`] handed out.
    NotGranted { gref: GrantRef },
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::TableFull => write!(
                f,
                "the grant table is full ({} references)",
                MAX_FRAMES as u32 * ENTRIES_PER_FRAME
            ),
            GrantError::Grow(e) => write!(f, "cannot grow the grant table: {e}"),
            GrantError::Map => f.write_str("cannot map the grant table"),
            GrantError::InUse { gref } => {
                write!(f, "grant {gref} is still mapped by the other domain")
            }
            GrantError::NotGranted { gref } => write!(f, "grant {gref} was never handed out"),
        }
    }
}

struct Table {
    window: Window,
    frames: u32,
    next: GrantRef,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<T>(f: impl FnOnce(&mut Table) -> Result<T, GrantError>) -> Result<T, GrantError> {
    let mut guard = TABLE.lock();
    if guard.is_none() {
        let window = mmio::shared_window(GRANT_FRAMES_GPFN << 12, MAX_FRAMES * 4096)
            .map_err(|_| GrantError::Map)?;
        *guard = Some(Table {
            window,
            frames: 0,
            next: FIRST_REF,
        });
    }
    match guard.as_mut() {
        Some(t) => f(t),
        None => Err(GrantError::Map),
    }
}

impl Table {
    fn grow_to_hold(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        while gref >= self.frames * ENTRIES_PER_FRAME {
            if u64::from(self.frames) >= MAX_FRAMES {
                return Err(GrantError::TableFull);
            }
            hypercall::add_to_physmap(
                space::GRANT_TABLE,
                u64::from(self.frames),
                GRANT_FRAMES_GPFN + u64::from(self.frames),
            )
            .map_err(GrantError::Grow)?;
            self.frames += 1;
        }
        Ok(())
    }
}

/// Lets domain `domid` map guest frame `gfn` (read-only if `readonly`).
pub fn grant(domid: u16, gfn: u64, readonly: bool) -> Result<GrantRef, GrantError> {
    with_table(|t| {
        let gref = t.next;
        t.grow_to_hold(gref)?;
        let at = gref as usize * ENTRY_BYTES;
        let frame = u32::try_from(gfn).map_err(|_| GrantError::Map)?;
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        t.window
            .store_u32(at + 4, frame, Ordering::Relaxed)
            .map_err(|_| GrantError::Map)?;
        t.window
            .store_u32(at, flags | u32::from(domid) << 16, Ordering::Release)
            .map_err(|_| GrantError::Map)?;
        t.next += 1;
        Ok(gref)
    })
}

/// Ends the access that `gref` gave: afterwards Xen maps nothing through
/// it. Fails with [`GrantError::InUse`] while the other domain has it
/// mapped; the caller must then keep the frame's memory for ever.
pub fn end_access(gref: GrantRef) -> Result<(), GrantError> {
    with_table(|t| {
        if !(FIRST_REF..t.next).contains(&gref) {
            return Err(GrantError::NotGranted { gref });
        }
        let at = gref as usize * ENTRY_BYTES;
        let mut seen = t
            .window
            .load_u32(at, Ordering::Acquire)
            .map_err(|_| GrantError::Map)?;
        loop {
            if seen & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse { gref });
            }
            // Xen sets the busy bits with a compare-and-swap on this same
            // word, so one of the two sees the other's change.
            match t
                .window
                .compare_exchange_u32(at, seen, 0)
                .map_err(|_| GrantError::Map)?
            {
                Ok(_) => return Ok(()),
                Err(now) => seen = now,
            }
        }
    })
}

/// References handed out so far, and the table's frames.
pub fn usage() -> (u32, u32) {
    TABLE
        .lock()
        .as_ref()
        .map_or((0, 0), |t| (t.next - FIRST_REF, t.frames))
}
