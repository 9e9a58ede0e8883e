//! The real [`Window`]: a raw pointer and a length, over heap memory or memory
//! a transport mapped (ivshmem BAR, Xen grant mapping).
//!
//! Soundness rests on two rules kept by every method here:
//! 1. every access is checked against `len` first (see `super::check`), and
//! 2. the memory is only ever accessed through raw pointers, never through a
//!    Rust reference, because the peer may write it at any time: atomics or
//!    volatile reads/writes, except that builds with `std` copy runs of bytes
//!    of [`MEMCPY_MIN`] or more with `memcpy` (see there).

use alloc::sync::Arc;
use core::alloc::Layout as AllocLayout;
use core::any::Any;
use core::fmt;
use core::mem::{align_of, size_of};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering};

use super::{check, check_word, load_order, store_order, OutOfBounds};

/// A bounds-checked view of memory that the peer can write.
///
/// Cloning a window (or taking a [`sub`](Window::sub)-window) shares the
/// memory and keeps its owner alive.
#[derive(Clone)]
pub struct Window {
    ptr: NonNull<u8>,
    len: usize,
    /// Keeps the memory alive while any window onto it exists.
    owner: Option<Arc<dyn Any + Send + Sync>>,
}

// SAFETY: a `Window` is a pointer plus a length into memory that is, by
// construction, shared with another agent. Every access it offers is an atomic
// or volatile operation on a bounds-checked address, so using it from several
// threads at once is no different from the peer doing so. The owner is itself
// `Send + Sync`.
unsafe impl Send for Window {}
// SAFETY: see `Send` above; `&Window` only offers the same atomic and volatile
// accesses.
unsafe impl Sync for Window {}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Window")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("owned", &self.owner.is_some())
            .finish()
    }
}

/// Page alignment of heap windows.
const HEAP_ALIGN: usize = 4096;

/// A zeroed, page-aligned heap allocation, freed when the last window onto it
/// goes away.
struct HeapRegion {
    ptr: NonNull<u8>,
    layout: AllocLayout,
}

// SAFETY: `HeapRegion` only remembers an allocation so that it can be freed;
// it never reads or writes through the pointer.
unsafe impl Send for HeapRegion {}
// SAFETY: as above, `&HeapRegion` gives no access to the memory at all.
unsafe impl Sync for HeapRegion {}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` in
        // `Window::new_heap` and is freed exactly once, here, when the last
        // `Arc` (and so the last window) is dropped.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl Window {
    /// A new zeroed window of `len` bytes on the heap, 4096-byte aligned.
    ///
    /// # Panics
    ///
    /// If `len` rounded up to the alignment does not fit in `isize`, or the
    /// allocation fails (like `Vec::with_capacity`).
    pub fn new_heap(len: usize) -> Window {
        let layout = match AllocLayout::from_size_align(len.max(1), HEAP_ALIGN) {
            Ok(layout) => layout,
            Err(_) => panic!("Window::new_heap: {len} bytes is too large"),
        };
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::alloc::handle_alloc_error(layout)
        };
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(HeapRegion { ptr, layout });
        Window {
            ptr,
            len,
            owner: Some(owner),
        }
    }

    /// A window over `len` bytes at `ptr`, which some other party (a
    /// transport, a device mapping) provides. `owner`, if given, is kept alive
    /// as long as any window onto the memory exists; use it to tie the
    /// mapping's lifetime to the windows.
    ///
    /// A null `ptr` gives an empty window.
    ///
    /// # Safety
    ///
    /// For as long as this window or any clone or sub-window of it exists:
    /// - `ptr..ptr + len` must be valid for reads and writes (mapped, not
    ///   freed, not unmapped), which `owner` may guarantee by holding the
    ///   mapping;
    /// - no Rust reference (`&`/`&mut`) to any byte of it may exist: it may be
    ///   accessed concurrently only by atomics, volatile accesses, other
    ///   windows, other processes or virtual machines, or devices.
    pub unsafe fn from_raw_parts(
        ptr: *mut u8,
        len: usize,
        owner: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Window {
        match NonNull::new(ptr) {
            Some(ptr) => Window { ptr, len, owner },
            None => Window {
                ptr: NonNull::dangling(),
                len: 0,
                owner,
            },
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The start of the memory, for providers that register it with a device
    /// or map it elsewhere. Do not make references from it.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The window onto `len` bytes at `offset`; it shares the owner.
    pub fn sub(&self, offset: usize, len: usize) -> Result<Window, OutOfBounds> {
        check(offset, len, self.len)?;
        // SAFETY: `offset <= self.len`, so the result is inside the window's
        // memory or one past its end, and not null.
        let ptr = unsafe { self.ptr.add(offset) };
        Ok(Window {
            ptr,
            len,
            owner: self.owner.clone(),
        })
    }

    /// Atomically loads the `u32` at `offset` (which must be 4-byte aligned).
    /// Orderings invalid for a load (`Release`, `AcqRel`) act as `Acquire`.
    #[inline]
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, OutOfBounds> {
        let word = self.word(offset)?;
        // SAFETY: `word` is in bounds and 4-byte aligned (checked by `word`),
        // valid for as long as `self` (constructor contract), and this memory
        // is only ever accessed atomically or volatilely, never by reference.
        let atomic = unsafe { AtomicU32::from_ptr(word) };
        Ok(atomic.load(load_order(order)))
    }

    /// Atomically stores `value` at `offset` (which must be 4-byte aligned).
    /// Orderings invalid for a store (`Acquire`, `AcqRel`) act as `Release`.
    #[inline]
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), OutOfBounds> {
        let word = self.word(offset)?;
        // SAFETY: as in `load_u32`.
        let atomic = unsafe { AtomicU32::from_ptr(word) };
        atomic.store(value, store_order(order));
        Ok(())
    }

    /// Atomically replaces the `u32` at `offset` (4-byte aligned) with `new`
    /// if it holds `current` (`AcqRel`/`Acquire`). `Ok(Ok(current))` on
    /// success, `Ok(Err(actual))` if it held something else. For words the
    /// peer changes with its own compare-and-swap (Xen's grant entries).
    #[inline]
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, OutOfBounds> {
        let word = self.word(offset)?;
        // SAFETY: as in `load_u32`.
        let atomic = unsafe { AtomicU32::from_ptr(word) };
        Ok(atomic.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }

    /// Copies `dst.len()` bytes at `offset` out of the window, with volatile
    /// reads (each byte read exactly once) or, for a long run in a `std`
    /// build, `memcpy` (see [`MEMCPY_MIN`]). Either way each byte of `dst`
    /// ends up holding a value its source byte held during the copy.
    #[inline]
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        check(offset, dst.len(), self.len)?;
        // SAFETY: the range `offset..offset + dst.len()` was just checked to
        // lie inside the window, so the pointer stays in bounds.
        let src = unsafe { self.ptr.as_ptr().add(offset) };
        if by_memcpy(dst.len()) {
            // SAFETY: `src..src + dst.len()` is valid for reads (checked
            // above and the constructor contract) and not aliased by any
            // reference; `dst` is private memory distinct from the window.
            // See `MEMCPY_MIN` for why a plain copy is sound here.
            unsafe { ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { volatile_copy_out(src, dst) };
        Ok(())
    }

    /// Copies `src` into the window at `offset`, with volatile writes or,
    /// for a long run in a `std` build, `memcpy` (see [`MEMCPY_MIN`]).
    #[inline]
    pub fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        check(offset, src.len(), self.len)?;
        // SAFETY: the range `offset..offset + src.len()` was just checked to
        // lie inside the window.
        let dst = unsafe { self.ptr.as_ptr().add(offset) };
        if by_memcpy(src.len()) {
            // SAFETY: `dst..dst + src.len()` is valid for writes (checked
            // above and the constructor contract) and not aliased by any
            // reference; `src` is private memory distinct from the window.
            unsafe { ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { volatile_copy_in(dst, src) };
        Ok(())
    }

    /// Reads a `T` at `offset` in whole 8- or 4-byte volatile words where
    /// the address and `T`'s size allow it, byte by byte otherwise. Inlined
    /// and free of calls, so that the value never has to live in memory: a
    /// descriptor built field by field and then read back in words (or the
    /// other way round) stalls on store forwarding, which made a 24-byte
    /// descriptor's copy cost more than the rest of the ring's work.
    #[inline(always)]
    pub(super) fn read_pod_volatile<T: bytemuck::Pod>(
        &self,
        offset: usize,
    ) -> Result<T, OutOfBounds> {
        check(offset, size_of::<T>(), self.len)?;
        // SAFETY: `offset..offset + size_of::<T>()` was just checked to lie
        // inside the window, so the pointer stays in bounds.
        let src = unsafe { self.ptr.as_ptr().add(offset) };
        if src.align_offset(align_of::<T>()) == 0 {
            // SAFETY: `src` is valid for reads of `size_of::<T>()` bytes
            // (checked above) and aligned for `T`; `T` is `Pod`, so whatever
            // bits the peer left there, even half-way through this read, are
            // a valid `T`.
            return Ok(unsafe { ptr::read_volatile(src.cast::<T>()) });
        }
        let mut value = T::zeroed();
        let local = (&mut value as *mut T).cast::<u8>();
        for i in 0..size_of::<T>() {
            // SAFETY: `src + i` lies inside the checked range, `local + i`
            // inside `value`.
            unsafe { local.add(i).write(ptr::read_volatile(src.add(i))) };
        }
        Ok(value)
    }

    /// Writes `value` at `offset` in whole 8- or 4-byte volatile words where
    /// the address and `T`'s size allow it, byte by byte otherwise (see
    /// [`read_pod_volatile`](Self::read_pod_volatile)).
    #[inline(always)]
    pub(super) fn write_pod_volatile<T: bytemuck::Pod>(
        &self,
        offset: usize,
        value: &T,
    ) -> Result<(), OutOfBounds> {
        check(offset, size_of::<T>(), self.len)?;
        // SAFETY: `offset..offset + size_of::<T>()` was just checked to lie
        // inside the window.
        let dst = unsafe { self.ptr.as_ptr().add(offset) };
        let local = (value as *const T).cast::<u8>();
        if size_of::<T>().is_multiple_of(8) && dst.align_offset(8) == 0 {
            for i in 0..size_of::<T>() / 8 {
                // SAFETY: `local + 8 * i .. + 8` lies inside `value` (a `Pod`:
                // no padding, every byte initialised); `dst + 8 * i .. + 8`
                // lies inside the checked range, is 8-byte aligned and is not
                // aliased by any reference.
                unsafe {
                    let w = ptr::read_unaligned(local.add(8 * i).cast::<u64>());
                    ptr::write_volatile(dst.add(8 * i).cast::<u64>(), w);
                }
            }
        } else if size_of::<T>().is_multiple_of(4) && dst.align_offset(4) == 0 {
            for i in 0..size_of::<T>() / 4 {
                // SAFETY: as above, for 4-byte words.
                unsafe {
                    let w = ptr::read_unaligned(local.add(4 * i).cast::<u32>());
                    ptr::write_volatile(dst.add(4 * i).cast::<u32>(), w);
                }
            }
        } else {
            for i in 0..size_of::<T>() {
                // SAFETY: `local + i` lies inside `value`, `dst + i` inside the
                // checked range.
                unsafe { ptr::write_volatile(dst.add(i), local.add(i).read()) };
            }
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_offset` straight to this window
    /// at `dst_offset`, volatile word by volatile word, when the two ranges
    /// are equally aligned (so both sides can use whole words). Returns false,
    /// having copied nothing, when they are not. The caller has checked both
    /// ranges and that they do not overlap.
    #[inline]
    pub(super) fn copy_disjoint_from(
        &self,
        dst_offset: usize,
        src: &Window,
        src_offset: usize,
        len: usize,
    ) -> bool {
        if check(dst_offset, len, self.len).is_err() || check(src_offset, len, src.len).is_err() {
            return false;
        }
        // SAFETY: both ranges were just checked to lie inside their windows.
        let (dst, from) = unsafe {
            (
                self.ptr.as_ptr().add(dst_offset),
                src.ptr.as_ptr().add(src_offset),
            )
        };
        if by_memcpy(len) {
            // SAFETY: both ranges were checked above and lie in memory valid
            // for reads and writes (constructor contract), not aliased by any
            // reference; the caller guarantees they do not overlap. See
            // `MEMCPY_MIN` for why a plain copy is sound here.
            unsafe { ptr::copy_nonoverlapping(from, dst, len) };
            return true;
        }
        // SAFETY: as above.
        unsafe { copy_disjoint_volatile(dst, from, len) }
    }

    /// Identifies the memory behind `offset` for overlap checks in
    /// `copy_from`: (region, absolute address). Raw windows share one address
    /// space, so the region is always 0.
    #[inline]
    pub(super) fn region_addr(&self, offset: usize) -> (usize, usize) {
        (0, (self.ptr.as_ptr() as usize).wrapping_add(offset))
    }

    /// The checked, aligned address of the word at `offset`.
    #[inline]
    fn word(&self, offset: usize) -> Result<*mut u32, OutOfBounds> {
        check_word(offset, self.region_addr(offset).1, self.len)?;
        // SAFETY: `offset + 4 <= self.len`, checked just above.
        Ok(unsafe { self.ptr.as_ptr().add(offset) }.cast::<u32>())
    }
}

/// `Window::copy_disjoint_from`'s volatile loops: [`Wide`] units when both
/// sides are equally aligned to it, else 64-bit words when they are to 8;
/// false, having copied nothing, when not even that.
///
/// # Safety
///
/// `from..from + len` must be valid for reads, `dst..dst + len` for
/// writes, and they must not overlap.
#[inline]
unsafe fn copy_disjoint_volatile(dst: *mut u8, from: *const u8, len: usize) -> bool {
    let head = dst.align_offset(WIDE);
    if from.align_offset(WIDE) != head {
        // SAFETY: the caller's guarantees, passed on.
        return unsafe { copy_disjoint_words(dst, from, len) };
    }
    let head = head.min(len);
    let units = (len - head) / WIDE;
    let tail = head + units * WIDE;
    // SAFETY: `0..head` and `tail..len` lie inside both checked ranges,
    // which the caller guarantees do not overlap.
    unsafe {
        small_copy_between(dst, from, head);
        small_copy_between(dst.add(tail), from.add(tail), len - tail);
    }
    for u in 0..units {
        let at = head + u * WIDE;
        // SAFETY: `at + WIDE <= len`, inside both checked ranges; both
        // addresses are aligned to `WIDE` (same misalignment, skipped by
        // `head`); the ranges do not overlap.
        unsafe {
            let unit = ptr::read_volatile(from.add(at).cast::<Wide>());
            ptr::write_volatile(dst.add(at).cast::<Wide>(), unit);
        }
    }
    true
}

/// `Window::copy_disjoint_from` with 64-bit words, for ranges equally
/// aligned to 8 but not to [`WIDE`]; false if not even to 8.
///
/// # Safety
///
/// As for [`copy_disjoint_volatile`].
unsafe fn copy_disjoint_words(dst: *mut u8, from: *const u8, len: usize) -> bool {
    let head = dst.align_offset(CHUNK);
    if from.align_offset(CHUNK) != head {
        return false;
    }
    let head = head.min(len);
    let words = (len - head) / CHUNK;
    let tail = head + words * CHUNK;
    // SAFETY: `0..head` and `tail..len` lie inside both ranges the caller
    // checked, which do not overlap.
    unsafe {
        small_copy_between(dst, from, head);
        small_copy_between(dst.add(tail), from.add(tail), len - tail);
    }
    // Four words per step: the loads issue together, and the loop's own
    // work is paid once per 32 bytes (volatile accesses are never merged or
    // unrolled by the compiler).
    let mut at = head;
    while at + 4 * CHUNK <= tail {
        // SAFETY: `at + 32 <= tail <= len`, inside both ranges; both
        // addresses are 8-byte aligned; the ranges do not overlap.
        unsafe {
            let s = from.add(at).cast::<u64>();
            let d = dst.add(at).cast::<u64>();
            let (a, b, c, e) = (
                ptr::read_volatile(s),
                ptr::read_volatile(s.add(1)),
                ptr::read_volatile(s.add(2)),
                ptr::read_volatile(s.add(3)),
            );
            ptr::write_volatile(d, a);
            ptr::write_volatile(d.add(1), b);
            ptr::write_volatile(d.add(2), c);
            ptr::write_volatile(d.add(3), e);
        }
        at += 4 * CHUNK;
    }
    while at < tail {
        // SAFETY: `at + 8 <= tail`, inside both ranges; both addresses are
        // 8-byte aligned; the ranges do not overlap.
        unsafe {
            let word = ptr::read_volatile(from.add(at).cast::<u64>());
            ptr::write_volatile(dst.add(at).cast::<u64>(), word);
        }
        at += CHUNK;
    }
    true
}

/// Word size used by the volatile copies once the window side is aligned.
const CHUNK: usize = core::mem::size_of::<u64>();

/// From this many bytes up, a build with `std` copies a run of bytes into,
/// out of or between windows with the platform's `memcpy`
/// (`ptr::copy_nonoverlapping` through raw pointers) instead of the
/// volatile loops below, as rust-vmm's `VolatileSlice` does for anything
/// longer than a word. This is sound for the same reason the volatile
/// loops are: no Rust reference to the window is ever made, the bytes are
/// copied once into (or from) private memory and only the private copy is
/// ever interpreted, and a peer writing the window meanwhile can change
/// only which values land in the copy (every descriptor and index still
/// goes through the volatile and atomic accesses above). glibc's `memcpy`
/// moves a 2 KiB segment in wider units than the volatile loops (64 bytes
/// on this machine), and need not align the two sides alike: see
/// BENCHMARKS.md for what it did to the in-process TCP row. A `no_std`
/// build (the guest image) keeps the volatile loops: its `memcpy`
/// is `compiler_builtins`', not a tuned one.
pub(super) const MEMCPY_MIN: usize = 32;

/// Whether a copy of `len` bytes goes through `memcpy` ([`MEMCPY_MIN`]).
#[inline(always)]
fn by_memcpy(len: usize) -> bool {
    cfg!(feature = "std") && len >= MEMCPY_MIN
}

/// The unit of the bulk volatile copies: one SSE2 register where the target
/// has SSE2 (a volatile 16-byte vector load or store is one `movdqa`), else
/// a 64-bit word (the guest image's target has no SSE).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
type Wide = core::arch::x86_64::__m128i;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
type Wide = u64;
const WIDE: usize = size_of::<Wide>();

/// Copies `dst.len()` bytes from `src` with volatile reads, a [`Wide`] unit
/// at a time where `src` is aligned to it (four per step).
///
/// # Safety
///
/// `src..src + dst.len()` must be valid for reads and must not overlap `dst`.
#[inline]
unsafe fn volatile_copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    let out = dst.as_mut_ptr();
    let mut i = src.align_offset(WIDE).min(n);
    // SAFETY: `0..i` is inside both ranges (`i <= n`).
    unsafe { small_copy_out(src, out, i) };
    while n - i >= 4 * WIDE {
        // SAFETY: `src + i .. src + i + 4 * WIDE` is in range and aligned
        // to `WIDE` (the loop above aligned it); `out + i ..` is inside
        // `dst`, written unaligned.
        unsafe {
            let s = src.add(i).cast::<Wide>();
            let d = out.add(i).cast::<Wide>();
            let (a, b, c, e) = (
                ptr::read_volatile(s),
                ptr::read_volatile(s.add(1)),
                ptr::read_volatile(s.add(2)),
                ptr::read_volatile(s.add(3)),
            );
            d.write_unaligned(a);
            d.add(1).write_unaligned(b);
            d.add(2).write_unaligned(c);
            d.add(3).write_unaligned(e);
        }
        i += 4 * WIDE;
    }
    while n - i >= WIDE {
        // SAFETY: as above, one unit.
        unsafe {
            let v = ptr::read_volatile(src.add(i).cast::<Wide>());
            out.add(i).cast::<Wide>().write_unaligned(v);
        }
        i += WIDE;
    }
    // SAFETY: `i..n` is inside both ranges.
    unsafe { small_copy_out(src.add(i), out.add(i), n - i) };
}

/// Copies `src` to `dst` with volatile writes, a [`Wide`] unit at a time
/// where `dst` is aligned to it (four per step).
///
/// # Safety
///
/// `dst..dst + src.len()` must be valid for writes and must not overlap `src`.
#[inline]
unsafe fn volatile_copy_in(dst: *mut u8, src: &[u8]) {
    let n = src.len();
    let from = src.as_ptr();
    let mut i = dst.align_offset(WIDE).min(n);
    // SAFETY: `0..i` is inside both ranges (`i <= n`).
    unsafe { small_copy_in(dst, from, i) };
    while n - i >= 4 * WIDE {
        // SAFETY: `dst + i .. dst + i + 4 * WIDE` is in range and aligned
        // to `WIDE`; `from + i ..` is inside `src`, read unaligned.
        unsafe {
            let s = from.add(i).cast::<Wide>();
            let d = dst.add(i).cast::<Wide>();
            let (a, b, c, e) = (
                s.read_unaligned(),
                s.add(1).read_unaligned(),
                s.add(2).read_unaligned(),
                s.add(3).read_unaligned(),
            );
            ptr::write_volatile(d, a);
            ptr::write_volatile(d.add(1), b);
            ptr::write_volatile(d.add(2), c);
            ptr::write_volatile(d.add(3), e);
        }
        i += 4 * WIDE;
    }
    while n - i >= WIDE {
        // SAFETY: as above, one unit.
        unsafe {
            let v = from.add(i).cast::<Wide>().read_unaligned();
            ptr::write_volatile(dst.add(i).cast::<Wide>(), v);
        }
        i += WIDE;
    }
    // SAFETY: `i..n` is inside both ranges.
    unsafe { small_copy_in(dst.add(i), from.add(i), n - i) };
}

/// The largest unit (8, 4, 2 or 1 bytes) that `addr` is aligned to and
/// that `left` bytes can fill.
#[inline(always)]
fn unit_at(addr: usize, left: usize) -> usize {
    if addr.is_multiple_of(8) && left >= 8 {
        8
    } else if addr.is_multiple_of(4) && left >= 4 {
        4
    } else if addr.is_multiple_of(2) && left >= 2 {
        2
    } else {
        1
    }
}

/// Copies the `len` bytes at the ends of a bulk copy (fewer than a
/// [`Wide`] unit and a word, typically) out of the window with volatile
/// reads, each in the largest unit the window address allows: at most four
/// accesses instead of one per byte (an RX slot's payload starts 8 bytes
/// past a 16-byte boundary, after its 40-byte GRH). Each byte is still read
/// exactly once.
///
/// # Safety
///
/// `src..src + len` must be valid for reads, `dst..dst + len` for writes,
/// and they must not overlap.
#[inline(always)]
unsafe fn small_copy_out(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    while i < len {
        let unit = unit_at(src as usize + i, len - i);
        // SAFETY: in every arm, `i + unit <= len`, so both ranges hold the
        // unit; the window side is aligned to it (`unit_at`); the private
        // side is written unaligned.
        unsafe {
            match unit {
                8 => dst
                    .add(i)
                    .cast::<u64>()
                    .write_unaligned(ptr::read_volatile(src.add(i).cast::<u64>())),
                4 => dst
                    .add(i)
                    .cast::<u32>()
                    .write_unaligned(ptr::read_volatile(src.add(i).cast::<u32>())),
                2 => dst
                    .add(i)
                    .cast::<u16>()
                    .write_unaligned(ptr::read_volatile(src.add(i).cast::<u16>())),
                _ => dst.add(i).write(ptr::read_volatile(src.add(i))),
            }
        }
        i += unit;
    }
}

/// [`small_copy_out`]'s counterpart into the window: volatile writes in
/// the largest unit the window address allows.
///
/// # Safety
///
/// `dst..dst + len` must be valid for writes, `src..src + len` for reads,
/// and they must not overlap.
#[inline(always)]
unsafe fn small_copy_in(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    while i < len {
        let unit = unit_at(dst as usize + i, len - i);
        // SAFETY: in every arm, `i + unit <= len`, inside both ranges; the
        // window side is aligned to the unit; the private side is read
        // unaligned.
        unsafe {
            match unit {
                8 => ptr::write_volatile(
                    dst.add(i).cast::<u64>(),
                    src.add(i).cast::<u64>().read_unaligned(),
                ),
                4 => ptr::write_volatile(
                    dst.add(i).cast::<u32>(),
                    src.add(i).cast::<u32>().read_unaligned(),
                ),
                2 => ptr::write_volatile(
                    dst.add(i).cast::<u16>(),
                    src.add(i).cast::<u16>().read_unaligned(),
                ),
                _ => ptr::write_volatile(dst.add(i), src.add(i).read()),
            }
        }
        i += unit;
    }
}

/// The ends of a copy between two windows: volatile on both sides, each
/// access in the largest unit both addresses are aligned to.
///
/// # Safety
///
/// `src..src + len` must be valid for reads, `dst..dst + len` for writes,
/// and they must not overlap.
#[inline(always)]
unsafe fn small_copy_between(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    while i < len {
        let unit = unit_at((dst as usize + i) | (src as usize + i), len - i);
        // SAFETY: in every arm, `i + unit <= len`, inside both ranges; both
        // addresses are aligned to the unit.
        unsafe {
            match unit {
                8 => ptr::write_volatile(
                    dst.add(i).cast::<u64>(),
                    ptr::read_volatile(src.add(i).cast::<u64>()),
                ),
                4 => ptr::write_volatile(
                    dst.add(i).cast::<u32>(),
                    ptr::read_volatile(src.add(i).cast::<u32>()),
                ),
                2 => ptr::write_volatile(
                    dst.add(i).cast::<u16>(),
                    ptr::read_volatile(src.add(i).cast::<u16>()),
                ),
                _ => ptr::write_volatile(dst.add(i), ptr::read_volatile(src.add(i))),
            }
        }
        i += unit;
    }
}

/// The volatile loops on their own: a `std` build (every test run but
/// `cargo test -p ring` alone) sends runs of [`MEMCPY_MIN`] bytes or more
/// to `memcpy`, so the paths the guest image takes are checked here
/// directly, at every alignment of either side.
#[cfg(all(test, not(loom)))]
mod volatile_loop_tests {
    use super::*;

    fn pattern(n: usize) -> alloc::vec::Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_out_and_in_at_every_alignment() {
        let src = pattern(400);
        for at in 0..32 {
            for len in [0, 1, 7, 15, 16, 17, 63, 64, 65, 100, 257, 300] {
                let mut out = [0u8; 300];
                // SAFETY: `src[at..at + len]` and `out[..len]` are in bounds
                // and distinct.
                unsafe { volatile_copy_out(src.as_ptr().add(at), &mut out[..len]) };
                assert_eq!(out[..len], src[at..at + len], "out at {at}, {len} bytes");

                let mut into = [0u8; 400];
                // SAFETY: as above, the other way round.
                unsafe { volatile_copy_in(into.as_mut_ptr().add(at), &src[..len]) };
                assert_eq!(into[at..at + len], src[..len], "in at {at}, {len} bytes");
                assert!(into[..at].iter().all(|&b| b == 0));
                assert!(into[at + len..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn copies_between_words_at_every_pair_of_alignments() {
        let src = pattern(400);
        for from in 0..16 {
            for to in 0..16 {
                for len in [0, 5, 8, 31, 32, 33, 64, 200] {
                    let mut dst = [0u8; 300];
                    let (d, f) = (
                        dst.as_mut_ptr().wrapping_add(to),
                        src.as_ptr().wrapping_add(from),
                    );
                    // SAFETY: both ranges are in bounds and distinct.
                    let copied = unsafe { copy_disjoint_volatile(d, f, len) };
                    assert_eq!(
                        copied,
                        (d as usize) % 8 == (f as usize) % 8,
                        "{from} -> {to}"
                    );
                    if copied {
                        assert_eq!(dst[to..to + len], src[from..from + len]);
                        assert!(dst[to + len..].iter().all(|&b| b == 0));
                    }
                }
            }
        }
    }
}
