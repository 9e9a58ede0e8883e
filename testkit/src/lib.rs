//! In-process IPoIB stacks for tests, examples and benchmarks (test tier 2).
//!
//! Every guest is a real smoltcp interface on an `ipoib::IpoibDevice`, whose
//! `FrontHca` talks through a shared window to its own `BackHalf`, which
//! serves it on a port of the sim fabric. Only the transport (one process,
//! heap windows, polling instead of interrupts) differs from a deployment.

pub mod apps;
pub mod capture;
pub mod guest;
pub mod net;
pub mod raw;
pub mod tshark;

pub use capture::SharedCapture;
pub use guest::{
    connect_channel, connect_channel_in, BoxError, Guest, GuestSpec, SimBack, SimFront,
};
pub use net::Net;
pub use raw::RawSender;
