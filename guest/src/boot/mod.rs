//! From the PVH entry to the guest's `main`: the ELF note and 32-bit entry
//! (`entry`), the start info, the page tables, the heap, the console and
//! logger, the interrupt controllers and the clock (`start`); and the
//! panic handler.
//!
//! The binary names its `main` with [`entry_point!`](crate::entry_point).

mod entry;
pub mod heap;
pub mod layout;
mod start;

pub use start::{boot_info, BootInfo};

/// Bytes of stack the guest runs on.
pub const STACK_SIZE: usize = entry::STACK_SIZE;

/// Declares the guest's main function, called once the platform is up
/// (console, logger at `info`, heap, interrupts on, clock running):
///
/// ```ignore
/// guest::entry_point!(main);
/// fn main(boot: &'static guest::BootInfo) -> ! { ... }
/// ```
#[macro_export]
macro_rules! entry_point {
    ($main:path) => {
        #[export_name = "__ibguest_main"]
        pub extern "Rust" fn __ibguest_main(boot: &'static $crate::BootInfo) -> ! {
            let main: fn(&'static $crate::BootInfo) -> ! = $main;
            main(boot)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::arch::cpu::disable_interrupts();
    crate::serial::emergency(format_args!("\nibguest: panic: {info}\n"));
    crate::exit::exit(crate::exit::ExitCode::Panic)
}
