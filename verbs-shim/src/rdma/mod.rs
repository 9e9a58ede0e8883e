//! `rdma`: the verbs contract on a real HCA through libibverbs (feature
//! `rdma`, via `rdma-sys`).
//!
//! An [`RdmaContext`] is one port of one device (a Mellanox card, or
//! soft-RoCE `rxe`) with a protection domain. Each guest gets an
//! [`RdmaPort`] from [`RdmaContext::open_port`]: its buffer region
//! registered once as one memory region, a completion channel and CQ, and a
//! UD QP in RTS. Sends and receives go straight from and into the guest's
//! slots (zero copy; a send with a head, `post_send_with_head`, takes its
//! first bytes from a small registered arena of the port's own instead); the channel's file descriptor
//! ([`RdmaPort::event_fd`]) can sit in an epoll set.
//!
//! See [`RdmaPort`] for how its semantics line up with the sim fabric's.
//!
//! Building needs `libibverbs-dev librdmacm-dev libclang-dev clang
//! pkg-config` (bindgen runs at build time). Running needs a device:
//! `ibv_get_device_list` finding none is [`RdmaError::NoDevice`]. For
//! soft-RoCE: `rdma link add rxe0 type rxe netdev eth0`.
//!
//! All `unsafe` code of the crate's providers lives in the private `ffi`
//! module here: owning wrappers whose `Drop` frees each libibverbs object
//! once, in dependency order.

mod cm_addr;
mod cm_gate;
mod config;
mod context;
mod dests;
mod error;
#[allow(unsafe_code)]
mod ffi;
mod gather;
mod ipmc;
mod mcast_cm;
mod path_cm;
mod pkeys;
mod port;
mod rc;
mod resolver;
mod wr;

pub use config::{LinkLayer, RdmaConfig};
pub use context::RdmaContext;
pub use error::RdmaError;
pub use port::{RdmaPort, RdmaStats, HOP_LIMIT};
pub use rc::{RdmaRcStats, MAX_RC_CONNS};
pub use resolver::{ResolveNotifier, RESOLVER_THREADS};
