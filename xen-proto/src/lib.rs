//! Xen wire formats shared by the guest (`no_std`) and the back end in dom0.
//!
//! - [`xenbus`]: `XenbusState`, the front/back handshake states;
//! - [`xs`]: the xenstore wire protocol (`io/xs_wire.h`): message header,
//!   message types, error names, the shared ring's layout, and a codec that
//!   both the guest's ring client and the back end's socket client use;
//! - [`ibchan`]: the ibguest channel device's xenstore nodes, the grant
//!   directory format, and validation of what a frontend publishes.
//!
//! Everything here parses peer input: nothing panics on it, and unknown
//! values become `Unknown(n)`, never a parse failure.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod ibchan;
pub mod xenbus;
pub mod xs;

pub use xenbus::XenbusState;
