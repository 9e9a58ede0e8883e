//! The heap: `linked_list_allocator` over the RAM that
//! [`crate::memory::choose_heap`] picks.

use core::ops::Range;

use linked_list_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands `range` to the allocator. Call once.
///
/// # Safety
///
/// `range` must be mapped, writable RAM used by nothing else, for ever.
pub unsafe fn init(range: Range<u64>) {
    let size = (range.end - range.start) as usize;
    // SAFETY: the caller gives us exclusive, mapped memory for ever.
    unsafe { ALLOCATOR.lock().init(range.start as *mut u8, size) };
}

/// Bytes in use and free.
pub fn usage() -> (usize, usize) {
    let heap = ALLOCATOR.lock();
    (heap.used(), heap.free())
}
