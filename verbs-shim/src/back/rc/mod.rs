//! The back half's connected mode (`docs/connected-mode.md`, §5): the CM
//! ring, RC sends from big TX slots, big receives, and the provider's RC
//! completions and events turned into answers.
//!
//! Every guest-supplied RC field is checked here: op codes, reserved words,
//! connection handles (against this guest's own table), big slot indices
//! and ownership, lengths, QPNs and MTUs. A malformed request is a
//! violation (counted, the guest disconnected); a request beyond a limit is
//! a refusal (answered `NO_RESOURCES`, counted); a request that does not
//! fit the connection's state is answered `INVALID`. Every loop is bounded
//! by a ring's size, the batch, or the connection table's size.

mod cm;
mod conns;
mod data;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use ring::desc::{CmRequest, CmResponse};
use ring::BackRing;

use crate::rc::{BigLayout, BigRxSlot, BigTxSlot};
use conns::ConnTable;

/// RC state of one guest that negotiated connected mode.
pub(super) struct RcServed {
    pub cm: BackRing<CmRequest, CmResponse>,
    pub big: BigLayout,
    /// The guest's big-slot area (read only for captures).
    pub region: ring::Window,
    /// A big slot's token is here while the guest owns the slot.
    pub big_tx: Vec<Option<BigTxSlot>>,
    pub big_rx: Vec<Option<BigRxSlot>>,
    conns: ConnTable,
    /// Cookies of `EVENT_CREDIT`s not yet answered, oldest first (at most
    /// the CM ring's size: the ring refuses more outstanding requests).
    credits: VecDeque<u32>,
    /// Events waiting for a credit: at most one `EVENT_BROKEN` per
    /// connection, so at most the table's size.
    held: VecDeque<CmResponse>,
}

impl RcServed {
    pub fn new(
        cm: BackRing<CmRequest, CmResponse>,
        big: BigLayout,
        region: ring::Window,
        tokens: (crate::rc::BigTxSlots, crate::rc::BigRxSlots),
        max_conns: usize,
    ) -> RcServed {
        RcServed {
            cm,
            big,
            region,
            big_tx: tokens.0.map(Some).collect(),
            big_rx: tokens.1.map(Some).collect(),
            conns: ConnTable::new(max_conns),
            credits: VecDeque::new(),
            held: VecDeque::new(),
        }
    }

    /// Connections (entries) this guest holds.
    pub fn held_conns(&self) -> usize {
        self.conns.held()
    }

    /// Events waiting for a credit.
    pub fn held_events(&self) -> usize {
        self.held.len()
    }
}
