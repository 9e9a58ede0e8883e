//! The ibguest unikernel's platform: everything between a PVH loader
//! (QEMU `-kernel`, Xen `type = "pvh"`) and the network stack.
//!
//! Portable (built and unit-tested on the host too):
//! - [`start_info`]: `hvm_start_info`, its memory map and command line;
//! - [`config`]: the kernel command line (netcore's options + the guest's);
//! - [`pci`]: configuration space, BAR sizing and decoding, MSI-X;
//! - [`memory`]: heap placement, RAM overlap checks;
//! - [`timer`]'s arithmetic; [`exit`]: the exit codes.
//!
//! Bare metal only (`target_os = "none"`):
//! - `boot`: the PVH note and entry, page tables, heap, panic handler, and
//!   `entry_point!` for the binary's main;
//! - `arch`: GDT, IDT and interrupt stubs, exception reports, local APIC,
//!   8259 and PIT, page tables, device memory, COM1;
//! - `serial`: console and `log` logger; `timer`: `now_micros`,
//!   `wait_for_interrupt`; `ivshmem`: the `Ivshmem` transport;
//! - `xen`: the Xen platform (hypercalls, event channels, PV console and
//!   clock, grant table, xenstore) and the channel's Xen transport;
//!   `transport`: the choice between ivshmem and Xen at boot.
//!
//! `unsafe` is confined to `arch`, `boot`, `pci` and two rooms of `xen`
//! (`xen::hypercall`, `xen::events`).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod config;
pub mod exit;
pub mod memory;
#[allow(unsafe_code)]
pub mod pci;
pub mod pvclock;
pub mod start_info;
pub mod timer;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod arch;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod boot;
#[cfg(target_os = "none")]
pub mod ivshmem;
#[cfg(target_os = "none")]
pub mod serial;
#[cfg(target_os = "none")]
pub mod transport;
#[cfg(target_os = "none")]
pub mod xen;

#[cfg(target_os = "none")]
pub use boot::BootInfo;
#[cfg(target_os = "none")]
pub use ivshmem::{Ivshmem, IvshmemError};
#[cfg(target_os = "none")]
pub use timer::{now_micros, wait_for_interrupt};
