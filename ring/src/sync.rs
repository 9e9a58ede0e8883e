//! The atomics the crate uses, switched to loom's model-checked versions under
//! `cfg(loom)` so that `tests/loom.rs` can explore every interleaving of the
//! ring protocol. This is the only place that names the `cfg(loom)` switch for
//! atomics; `shm` picks its backing memory the same way.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::AtomicU32;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::fence;
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use core::sync::atomic::AtomicU32;

pub(crate) use core::sync::atomic::Ordering;
