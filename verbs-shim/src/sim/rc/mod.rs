//! RC in the sim fabric (`docs/connected-mode.md`, §6): connections between
//! ports, set up through the fabric (it plays the CM), in-order and
//! reliable messages into each port's shared pool of big receive slots.
//!
//! The fault dice the fabric rolls for UD datagrams are rolled for each
//! transmission attempt of an RC message, and read as the RC transport's
//! recovery would show them: a lost or corrupted attempt is retransmitted,
//! a duplicate is dropped by the responder's PSN check, a reordered one is
//! a sequence error and a go-back-N retransmission. A message lost on
//! `RETRY_COUNT + 1` attempts in a row breaks its connection: an error
//! completion and [`crate::rc::RcEvent::Broken`] at both ends. Nothing is
//! lost silently.
//!
//! A message that finds no posted big receive waits, in order, until one is
//! posted (RNR retry "for ever"); its send completes when it is delivered.

mod cm;
mod port;
mod state;
mod stats;
mod transfer;

pub use port::RcSetup;
pub use stats::RcStats;

pub(super) use port::{flushed_recv, PortRcSide};
pub use state::CM_TIMEOUT;
pub(super) use state::{PortRc, RcFabric};

/// IBA's largest transport retry count: attempts after the first.
pub const RETRY_COUNT: u32 = 7;
