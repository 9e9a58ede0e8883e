//! IPoIB (RFC 4391) over any [`verbs_shim::Hca`], as a smoltcp device.
//!
//! - [`wire`]: the encapsulation header, the 20-byte hardware address, ARP
//!   with hardware type 32, the broadcast and multicast MGIDs, the GRH.
//! - [`IpoibDevice`]: a `phy::Device` with `Medium::Ip`, zero copy in both
//!   directions, a neighbour and path cache, and counters.
//! - [`pcap`]: LINKTYPE_IPOIB captures that Wireshark decodes.
//!
//! This crate has no `unsafe`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
mod device;
pub mod neighbour;
pub mod pcap;
pub mod stats;
pub mod wire;

pub use capture::{Capture, NoCapture};
pub use config::{ArpTimers, IpoibConfig, UNCONFIGURED};
pub use device::{
    DatagramSource, IpoibDevice, IpoibError, LinkState, RxToken, TxToken, ARP_RESERVE, MAX_SLOTS,
    PENDING,
};
pub use stats::IpoibStats;
