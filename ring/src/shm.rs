//! [`Window`]: the one type that touches memory the peer can write.
//!
//! The peer may change any byte of the window at any moment, so nothing here
//! ever hands out a `&` or `&mut` into it. Words are read and written with
//! atomic operations, byte ranges with volatile copies into and out of private
//! buffers. Every access is bounds-checked with checked arithmetic against the
//! window's length: no `offset`/`len` pair, however large, reaches outside it.
//!
//! Two backings share this interface: raw memory (`raw.rs`, the real thing,
//! heap or mapped by a transport) and, under `cfg(loom)`, a heap-only model
//! made of loom atomics (`model.rs`) so the ring protocol can be model-checked.

use core::fmt;

#[cfg(not(loom))]
mod raw;
#[cfg(not(loom))]
pub use raw::Window;

#[cfg(loom)]
mod model;
#[cfg(loom)]
pub use model::Window;

/// An access that falls outside a [`Window`] (or, for a word access, is not
/// 4-byte aligned).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutOfBounds {
    /// Offset of the attempted access, relative to the window.
    pub offset: usize,
    /// Length of the attempted access in bytes.
    pub len: usize,
    /// Length of the window.
    pub window_len: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access of {} bytes at offset {:#x} does not fit (or is misaligned) in a window of {:#x} bytes",
            self.len, self.offset, self.window_len
        )
    }
}

impl core::error::Error for OutOfBounds {}

/// Checks that `offset..offset + len` lies inside `0..window_len`, without
/// overflowing.
#[inline]
fn check(offset: usize, len: usize, window_len: usize) -> Result<(), OutOfBounds> {
    match offset.checked_add(len) {
        Some(end) if end <= window_len => Ok(()),
        _ => Err(OutOfBounds {
            offset,
            len,
            window_len,
        }),
    }
}

/// Like [`check`], and additionally requires the absolute address `addr` of
/// the word to be 4-byte aligned (atomics need it).
#[inline]
fn check_word(offset: usize, addr: usize, window_len: usize) -> Result<(), OutOfBounds> {
    check(offset, 4, window_len)?;
    if addr & 3 != 0 {
        return Err(OutOfBounds {
            offset,
            len: 4,
            window_len,
        });
    }
    Ok(())
}

/// `Ordering` values that are invalid for a load (they would make
/// `AtomicU32::load` panic) are strengthened to `Acquire`.
#[inline]
fn load_order(order: core::sync::atomic::Ordering) -> core::sync::atomic::Ordering {
    use core::sync::atomic::Ordering::*;
    match order {
        Relaxed => Relaxed,
        SeqCst => SeqCst,
        _ => Acquire,
    }
}

/// `Ordering` values that are invalid for a store (they would make
/// `AtomicU32::store` panic) are strengthened to `Release`.
#[inline]
fn store_order(order: core::sync::atomic::Ordering) -> core::sync::atomic::Ordering {
    use core::sync::atomic::Ordering::*;
    match order {
        Relaxed => Relaxed,
        SeqCst => SeqCst,
        _ => Release,
    }
}

/// Size of the stack buffer that `fill` and `copy_from` go through.
const BOUNCE: usize = 256;

impl Window {
    /// True if the window has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies a `T` out of the window at `offset`, once. Any bit pattern is a
    /// valid `T`, so the copy can always be made; validate it afterwards.
    /// The copy is made in whole volatile words where alignment allows.
    #[inline]
    pub fn read_pod<T: bytemuck::Pod>(&self, offset: usize) -> Result<T, OutOfBounds> {
        self.read_pod_volatile(offset)
    }

    /// Copies `value` into the window at `offset`, in whole volatile words
    /// where alignment allows.
    #[inline]
    pub fn write_pod<T: bytemuck::Pod>(&self, offset: usize, value: &T) -> Result<(), OutOfBounds> {
        self.write_pod_volatile(offset, value)
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        check(offset, len, self.len())?;
        let buf = [byte; BOUNCE];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE);
            self.write_bytes(offset + done, &buf[..n])?;
            done += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_offset` into this window at
    /// `dst_offset`: the software stand-in for a DMA between two windows.
    ///
    /// Both ranges are checked before anything is copied. Disjoint, equally
    /// aligned ranges are copied word by word; otherwise the bytes go through
    /// a small stack buffer, and if the two ranges overlap in the same memory the
    /// result is as if the source had been copied out first (like `memmove`).
    pub fn copy_from(
        &self,
        dst_offset: usize,
        src: &Window,
        src_offset: usize,
        len: usize,
    ) -> Result<(), OutOfBounds> {
        check(dst_offset, len, self.len())?;
        check(src_offset, len, src.len())?;
        let (dst_region, dst_addr) = self.region_addr(dst_offset);
        let (src_region, src_addr) = src.region_addr(src_offset);
        let disjoint = dst_region != src_region
            || dst_addr.saturating_add(len) <= src_addr
            || src_addr.saturating_add(len) <= dst_addr;
        if disjoint && self.copy_disjoint_from(dst_offset, src, src_offset, len) {
            return Ok(());
        }
        // Copying chunks from the back is only needed when the destination
        // starts above the source inside the same memory.
        let backwards = dst_region == src_region && dst_addr > src_addr;
        let mut buf = [0u8; BOUNCE];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE);
            let at = if backwards { len - done - n } else { done };
            src.read_bytes(src_offset + at, &mut buf[..n])?;
            self.write_bytes(dst_offset + at, &buf[..n])?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
