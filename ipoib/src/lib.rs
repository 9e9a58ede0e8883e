//! IPoIB (RFC 4391) over any [`verbs_shim::Hca`], as a smoltcp device.
//!
//! - [`wire`]: the encapsulation header, the 20-byte hardware address, ARP
//!   with hardware type 32, the broadcast and multicast MGIDs, the GRH.
//! - [`IpoibDevice`]: a `phy::Device` with `Medium::Ip`, zero copy in both
//!   directions, a neighbour and path cache, and counters.
//! - [`drive::poll_interface`]: `Interface::poll` for this device (use it
//!   instead: it keeps a refused TX token from costing TCP a fast
//!   retransmit).
//! - [`pcap`]: LINKTYPE_IPOIB captures that Wireshark decodes.
//! - `reassembly` (feature `alloc`): IPv4 and IPv6 reassembly (smoltcp has
//!   none for IPv6 on `Medium::Ip`; for IPv4 the device does it so every
//!   drop is counted).
//!
//! This crate has no `unsafe`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod capture;
pub mod config;
mod device;
pub mod drive;
pub mod neighbour;
pub mod pcap;
#[cfg(any(test, feature = "alloc"))]
pub mod reassembly;
pub mod stats;
pub mod wire;

pub use capture::{Capture, NoCapture};
pub use config::{ArpTimers, IpoibConfig, UNCONFIGURED};
pub use device::{
    DatagramSource, GroupError, GroupState, IpoibDevice, IpoibError, LinkState, RxToken, TxToken,
    ARP_RESERVE, MAX_GROUPS, MAX_SLOTS, PENDING,
};
pub use drive::{poll_interface, TxRoom};
pub use stats::IpoibStats;
