//! The loom model of [`Window`] (`cfg(loom)` only): heap memory made of loom
//! `AtomicU32` words, so that loom sees, and can reorder, every access the
//! ring protocol makes. Byte accesses become `Relaxed` word loads and stores
//! (read-modify-write for partial words); only the explicit orderings of
//! `load_u32`/`store_u32` and the fences synchronise, exactly as on hardware.
//!
//! `from_raw_parts` and `as_ptr` do not exist here.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use super::{check, check_word, load_order, store_order, OutOfBounds};
use crate::sync::AtomicU32;

const WORD: usize = 4;

/// A bounds-checked view of (model) memory that the peer can write.
#[derive(Clone)]
pub struct Window {
    words: Arc<[AtomicU32]>,
    /// Byte offset of the window's start inside `words`.
    base: usize,
    len: usize,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

impl Window {
    /// A new zeroed window of `len` bytes.
    pub fn new_heap(len: usize) -> Window {
        let words: Vec<AtomicU32> = (0..len.div_ceil(WORD)).map(|_| AtomicU32::new(0)).collect();
        Window {
            words: Arc::from(words),
            base: 0,
            len,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The window onto `len` bytes at `offset`; it shares the memory.
    pub fn sub(&self, offset: usize, len: usize) -> Result<Window, OutOfBounds> {
        check(offset, len, self.len)?;
        Ok(Window {
            words: self.words.clone(),
            base: self.base + offset,
            len,
        })
    }

    /// Atomically loads the `u32` at `offset` (which must be 4-byte aligned).
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        check_word(offset, self.base.wrapping_add(offset), self.len)?;
        Ok(self.words[(self.base + offset) / WORD].load(load_order(order)))
    }

    /// Atomically stores `value` at `offset` (which must be 4-byte aligned).
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        check_word(offset, self.base.wrapping_add(offset), self.len)?;
        self.words[(self.base + offset) / WORD].store(value, store_order(order));
        Ok(())
    }

    /// Atomically replaces the `u32` at `offset` with `new` if it holds
    /// `current`; see the real `Window`.
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, OutOfBounds> {
        check_word(offset, self.base.wrapping_add(offset), self.len)?;
        Ok(self.words[(self.base + offset) / WORD].compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    /// Copies bytes out of the window, one `Relaxed` load per word touched.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        check(offset, dst.len(), self.len)?;
        let mut at = self.base + offset;
        let mut i = 0;
        while i < dst.len() {
            let skip = at % WORD;
            let n = (WORD - skip).min(dst.len() - i);
            let word = self.words[at / WORD].load(Ordering::Relaxed).to_ne_bytes();
            dst[i..i + n].copy_from_slice(&word[skip..skip + n]);
            i += n;
            at += n;
        }
        Ok(())
    }

    /// Copies bytes into the window, one `Relaxed` store per whole word and a
    /// load + store for partial words.
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        check(offset, src.len(), self.len)?;
        let mut at = self.base + offset;
        let mut i = 0;
        while i < src.len() {
            let skip = at % WORD;
            let n = (WORD - skip).min(src.len() - i);
            let cell = &self.words[at / WORD];
            let mut word = if n == WORD {
                [0; WORD]
            } else {
                cell.load(Ordering::Relaxed).to_ne_bytes()
            };
            word[skip..skip + n].copy_from_slice(&src[i..i + n]);
            cell.store(u32::from_ne_bytes(word), Ordering::Relaxed);
            i += n;
            at += n;
        }
        Ok(())
    }

    /// The model always takes the bounce-buffer path.
    pub(super) fn copy_disjoint_from(
        &self,
        _dst_offset: usize,
        _src: &Window,
        _src_offset: usize,
        _len: usize,
    ) -> bool {
        false
    }

    /// Byte by byte, so that loom sees each byte access.
    pub(super) fn read_pod_volatile<T: bytemuck::Pod>(
        &self,
        offset: usize,
    ) -> Result<T, OutOfBounds> {
        let mut value = T::zeroed();
        self.read_bytes(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Byte by byte, so that loom sees each byte access.
    pub(super) fn write_pod_volatile<T: bytemuck::Pod>(
        &self,
        offset: usize,
        value: &T,
    ) -> Result<(), OutOfBounds> {
        self.write_bytes(offset, bytemuck::bytes_of(value))
    }

    /// (region, address) for overlap checks in `copy_from`.
    pub(super) fn region_addr(&self, offset: usize) -> (usize, usize) {
        (
            Arc::as_ptr(&self.words).cast::<u8>() as usize,
            self.base.wrapping_add(offset),
        )
    }
}
