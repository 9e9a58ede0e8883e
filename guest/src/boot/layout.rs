//! Where the linker put the image's parts (symbols from `linker.ld` and
//! the entry code).

use core::ops::Range;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static boot_stack_guard: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// The image's ranges, page-aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    /// Everything from the first loaded byte to the end of `.bss`.
    pub image: Range<u64>,
    pub text: Range<u64>,
    pub rodata: Range<u64>,
    /// `.data` and `.bss`.
    pub writable: Range<u64>,
    /// The unmapped page below the stack.
    pub stack_guard: Range<u64>,
    pub stack: Range<u64>,
}

/// The image's layout.
pub fn image() -> ImageLayout {
    let up = crate::memory::align_up;
    let down = crate::memory::align_down;
    let a = |p: *const u8| p as u64;
    // `&raw const` on an extern static only takes its address.
    let image_start = a(&raw const __image_start);
    let image_end = a(&raw const __image_end);
    let text_start = a(&raw const __text_start);
    let text_end = a(&raw const __text_end);
    let rodata_start = a(&raw const __rodata_start);
    let rodata_end = a(&raw const __rodata_end);
    let data_start = a(&raw const __data_start);
    let guard = a(&raw const boot_stack_guard);
    let stack_bottom = a(&raw const boot_stack_bottom);
    let stack_top = a(&raw const boot_stack_top);
    ImageLayout {
        image: down(image_start)..up(image_end),
        text: down(text_start)..up(text_end),
        rodata: down(rodata_start)..up(rodata_end),
        writable: down(data_start)..up(image_end),
        stack_guard: guard..guard + 4096,
        stack: stack_bottom..stack_top,
    }
}
