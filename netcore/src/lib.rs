//! The guest's network services, test clients and boot configuration.
//!
//! Shared unchanged by the hosted guest (a Linux process) and the PVH
//! unikernel: `no_std` + `alloc`, no `unsafe`, and nothing but smoltcp
//! sockets underneath.
//!
//! - [`config`]: [`NetConfig`], parsed from a kernel-command-line-style
//!   string such as `ip=10.77.0.2/24 gw=10.77.0.1 services=echo,http`.
//! - [`services`]: [`ServiceHost`] serves UDP and TCP echo (port 7), an
//!   HTTP status page (80), discard (9) and chargen (19) on a
//!   `smoltcp::iface::SocketSet`.
//! - [`clients`]: poll-driven [`Pinger`], [`TcpSender`] and [`HttpGet`].
//! - [`status`]: [`StatusSource`], the `key value` counters the status page
//!   shows.
//! - [`http`]: the request parser and response writer behind the status
//!   page, and the response parser behind [`HttpGet`].
//! - [`dhcp`]: DHCP over IPoIB (RFC 4390): the client behind `ip=dhcp`
//!   (run by [`NetStack`]) and the answering half of the back end's server.
//! - [`busy_poll`]: [`BusyPoll`], when the main loops poll instead of
//!   sleeping.
//! - [`pattern`]: the data generators both ends agree on (chargen's RFC 864
//!   lines, the sender's pattern and seeded pseudo-random data).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod busy_poll;
pub mod clients;
pub mod config;
pub mod dhcp;
pub mod http;
pub mod pattern;
pub mod services;
pub mod stack;
pub mod status;

/// The largest IPv4 datagram (headers included) the stack reassembles from
/// fragments and fragments for sending: the size of smoltcp's reassembly
/// buffers, chosen by the `reassembly-buffer-size-16384` feature in
/// netcore's Cargo.toml (4 reassemblies at a time,
/// `reassembly-buffer-count-4`), and the largest packet `ipoib` takes from
/// smoltcp and fragments itself (`alloc` feature; for IPv6 too, which
/// smoltcp cannot fragment). Larger ones are dropped.
pub const MAX_IPV4_DATAGRAM: usize = 16 * 1024;

pub use busy_poll::BusyPoll;
pub use clients::{ClientError, HttpGet, Pinger, TcpSender};
pub use config::{ConfigError, NetConfig, Services};
pub use services::{DiscardMode, DiscardReport, ServiceHost, ServiceStats};
pub use stack::{NetStack, StackError};
pub use status::StatusSource;
