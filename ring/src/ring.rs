//! Single-producer/single-consumer request/response rings with Xen
//! `io/ring.h` semantics (`docs/CHANNEL.md`, "Rings").
//!
//! Shared part of a ring (all `u32`, free-running, wrapping at 2^32):
//!
//! | offset | field | writer |
//! |---|---|---|
//! | 0 | `req_prod` | front (guest) |
//! | 64 | `req_event` | back end |
//! | 128 | `rsp_prod` | back end |
//! | 192 | `rsp_event` | front (guest) |
//! | 256 | `entries` requests, then `entries` responses | |
//!
//! # Orderings
//!
//! - A producer writes entries with plain (volatile) stores and then
//!   publishes its producer index with a `Release` store; the consumer loads
//!   that index with `Acquire`, so the entries below it are visible before
//!   they are copied out.
//! - Event suppression is a store-buffer pattern. The producer stores its
//!   index and then reads the peer's event index; the consumer stores its
//!   event index and then re-reads the producer index. A `SeqCst` fence
//!   between the store and the load on *both* sides guarantees that at least
//!   one of them sees the other's store: either the producer sees the armed
//!   event and notifies, or the consumer's final re-check sees the new work.
//!   No wakeup is lost.
//!
//! # Trust
//!
//! Private indices live in the ring structs and are never re-read from the
//! window. The peer's producer index is loaded once per batch and checked
//! before use; entries are copied out once. A violation yields
//! [`RingError::Overflow`], which is sticky: the ring keeps returning it.

use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;

use bytemuck::Pod;

use crate::layout::{ring_bytes, MAX_RING_ORDER, MIN_RING_ORDER, RING_INDEX_BYTES};
use crate::shm::{OutOfBounds, Window};
use crate::sync::{fence, Ordering};

/// Byte offsets of the shared indices, each in its own cache line.
mod field {
    pub const REQ_PROD: usize = 0;
    pub const REQ_EVENT: usize = 64;
    pub const RSP_PROD: usize = 128;
    pub const RSP_EVENT: usize = 192;
}

/// Why a ring operation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RingError {
    /// The peer published a producer index `prod` that is impossible given
    /// our consumer index `cons` and the ring size: a protocol violation by
    /// the peer. Disconnect it.
    Overflow { prod: u32, cons: u32, entries: u32 },
    /// `push_response` with no request left to answer (a local bug).
    NoRequestToAnswer,
    /// The window is smaller than the ring needs.
    TooSmall { needed: usize, have: usize },
    /// The ring order is outside `1..=12`.
    BadOrder(u8),
    /// The window cannot hold the ring's words (misaligned).
    OutOfBounds(OutOfBounds),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RingError::Overflow {
                prod,
                cons,
                entries,
            } => write!(
                f,
                "peer violated the ring protocol: producer index {prod} against consumer index {cons} on a ring of {entries} entries"
            ),
            RingError::NoRequestToAnswer => f.write_str("no request to answer"),
            RingError::TooSmall { needed, have } => {
                write!(f, "ring needs {needed} bytes but the window has {have}")
            }
            RingError::BadOrder(order) => write!(
                f,
                "ring order {order} is out of range {MIN_RING_ORDER}..={MAX_RING_ORDER}"
            ),
            RingError::OutOfBounds(e) => write!(f, "ring window: {e}"),
        }
    }
}

impl core::error::Error for RingError {}

impl From<OutOfBounds> for RingError {
    fn from(e: OutOfBounds) -> Self {
        RingError::OutOfBounds(e)
    }
}

/// `push_request` found no free entry; the request was not written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RingFull;

impl fmt::Display for RingFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring full")
    }
}

impl core::error::Error for RingFull {}

/// The part both ring ends share: the window, sizes, and word access.
struct Shared<Req, Rsp> {
    win: Window,
    entries: u32,
    _types: PhantomData<fn() -> (Req, Rsp)>,
}

impl<Req: Pod, Rsp: Pod> Shared<Req, Rsp> {
    fn attach(win: Window, order: u8) -> Result<Self, RingError> {
        if !(MIN_RING_ORDER..=MAX_RING_ORDER).contains(&order) {
            return Err(RingError::BadOrder(order));
        }
        let needed = ring_bytes::<Req, Rsp>(order);
        if win.len() < needed {
            return Err(RingError::TooSmall {
                needed,
                have: win.len(),
            });
        }
        let win = win.sub(0, needed)?;
        // Prove every index word is accessible, so later accesses cannot fail.
        for offset in [
            field::REQ_PROD,
            field::REQ_EVENT,
            field::RSP_PROD,
            field::RSP_EVENT,
        ] {
            win.load_u32(offset, Ordering::Relaxed)?;
        }
        Ok(Shared {
            win,
            entries: 1 << order,
            _types: PhantomData,
        })
    }

    /// Loads an index word. `attach` proved the word is in bounds and
    /// aligned, so this cannot fail; it would return 0 if it somehow did.
    #[inline]
    fn load(&self, offset: usize, order: Ordering) -> u32 {
        self.win.load_u32(offset, order).unwrap_or(0)
    }

    /// Stores an index word (infallible, see `load`).
    #[inline]
    fn store(&self, offset: usize, value: u32, order: Ordering) {
        let _ = self.win.store_u32(offset, value, order);
    }

    #[inline]
    fn slot(&self, index: u32) -> usize {
        (index & (self.entries - 1)) as usize
    }

    #[inline]
    fn req_offset(&self, index: u32) -> usize {
        RING_INDEX_BYTES + self.slot(index) * size_of::<Req>()
    }

    #[inline]
    fn rsp_offset(&self, index: u32) -> usize {
        RING_INDEX_BYTES
            + self.entries as usize * size_of::<Req>()
            + self.slot(index) * size_of::<Rsp>()
    }

    /// Byte offset of request entry 0.
    #[inline]
    fn req_array(&self) -> usize {
        RING_INDEX_BYTES
    }

    /// Byte offset of response entry 0.
    #[inline]
    fn rsp_array(&self) -> usize {
        RING_INDEX_BYTES + self.entries as usize * size_of::<Req>()
    }

    /// Copies `out.len()` (at most `entries`) consecutive entries of the
    /// array at byte offset `array`, starting at ring index `index` and
    /// wrapping at the end of the array, in whole volatile words.
    #[inline]
    fn read_entries<T: Pod>(
        &self,
        array: usize,
        index: u32,
        out: &mut [T],
    ) -> Result<(), OutOfBounds> {
        let slot = self.slot(index);
        let first = out.len().min(self.entries as usize - slot);
        let (a, b) = out.split_at_mut(first);
        self.win
            .read_bytes(array + slot * size_of::<T>(), bytemuck::cast_slice_mut(a))?;
        if !b.is_empty() {
            self.win.read_bytes(array, bytemuck::cast_slice_mut(b))?;
        }
        Ok(())
    }

    /// Writes `src` (at most `entries` entries) into consecutive entries of
    /// the array at byte offset `array` from ring index `index`, wrapping.
    #[inline]
    fn write_entries<T: Pod>(
        &self,
        array: usize,
        index: u32,
        src: &[T],
    ) -> Result<(), OutOfBounds> {
        let slot = self.slot(index);
        let first = src.len().min(self.entries as usize - slot);
        let (a, b) = src.split_at(first);
        self.win
            .write_bytes(array + slot * size_of::<T>(), bytemuck::cast_slice(a))?;
        if !b.is_empty() {
            self.win.write_bytes(array, bytemuck::cast_slice(b))?;
        }
        Ok(())
    }

    /// Publishes producer index `new` at `prod_field` (`Release`, making the
    /// entries below it visible), then reads the peer's event index after a
    /// full fence. Returns whether the peer asked to be notified for an index
    /// in `old + 1 ..= new`: `(new - event) < (new - old)`.
    #[inline]
    fn publish(&self, prod_field: usize, event_field: usize, old: u32, new: u32) -> bool {
        self.store(prod_field, new, Ordering::Release);
        // Pairs with the fence in the peer's final check: either we see its
        // freshly armed event index, or it sees our new producer index.
        fence(Ordering::SeqCst);
        let event = self.load(event_field, Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }
}

impl<Req, Rsp> fmt::Debug for Shared<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("win", &self.win)
            .field("entries", &self.entries)
            .finish()
    }
}

mod back;
mod front;

pub use back::BackRing;
pub use front::FrontRing;

#[cfg(all(test, not(loom)))]
mod tests;
