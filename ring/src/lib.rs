//! The ibguest shared-memory channel (see `docs/CHANNEL.md`).
//!
//! One window of memory is shared between a guest (the *front* end) and a
//! host-side *back* end. It holds a [`Header`] page, three request/response
//! rings with Xen `io/ring.h` semantics ([`FrontRing`] / [`BackRing`]) and a
//! buffer area, placed by [`Layout::compute`].
//!
//! The two sides do not trust each other. Everything in the window is an
//! allegation: it is read through [`Window`] (atomic or volatile accesses
//! only, never a reference), copied out once and validated. A misbehaving
//! peer produces an error, never a panic.
//!
//! `unsafe` code lives only in the private `shm` module, which wraps the
//! peer-writable memory.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

extern crate alloc;

pub mod desc;
pub mod header;
pub mod layout;
mod ring;
#[allow(unsafe_code)]
mod shm;
mod sync;

pub use header::{Header, PortBlock, State};
pub use layout::{BigLayoutRanges, BigParams, Layout, LayoutError, LayoutParams};
pub use ring::{BackRing, FrontRing, RingError, RingFull};
pub use shm::{OutOfBounds, Window};
