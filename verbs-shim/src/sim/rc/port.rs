//! [`RcVerbs`] for [`SimPort`]: connected mode turned on per port.

use alloc::collections::VecDeque;

use ring::Window;

use super::state::{PortRc, MAX_CONNS_LIMIT};
use super::stats::RcStats;
use crate::hca::HcaError;
use crate::rc::{
    BigArea, BigLayout, BigRxSlot, BigRxSlots, BigTxSlot, BigTxSlots, ConnHandle, RcCaps,
    RcCompletion, RcError, RcPostError, RcRecvInfo, RcStatus, RcVerbs, MIN_RC_MTU,
};
use crate::sim::error::SimError;
use crate::sim::port::SimPort;
use crate::types::{Gid, Qpn};

/// What [`SimPort::enable_rc`] needs.
#[derive(Clone)]
pub struct RcSetup {
    /// The big-slot pool.
    pub big: BigLayout,
    /// Its registered region; must hold `big.region_len()` bytes.
    pub region: Window,
    /// The most connections the port holds at once (at most 65535).
    pub max_conns: usize,
}

impl RcSetup {
    /// `tx` and `rx` big slots of 64 KiB in a fresh heap region, and at most
    /// `max_conns` connections.
    pub fn local(tx: u16, rx: u16, max_conns: usize) -> RcSetup {
        let big = BigLayout {
            tx_count: tx,
            rx_count: rx,
            slot_size: 65536,
        };
        RcSetup {
            big,
            region: Window::new_heap(big.region_len()),
            max_conns,
        }
    }
}

impl core::fmt::Debug for RcSetup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RcSetup")
            .field("big", &self.big)
            .field("region_len", &self.region.len())
            .field("max_conns", &self.max_conns)
            .finish()
    }
}

/// The port's side of connected mode (the fabric keeps the rest).
pub(in crate::sim) struct PortRcSide {
    caps: RcCaps,
    region: Window,
    slots: Option<(BigTxSlots, BigRxSlots)>,
    /// RC completions taken off the fabric and not yet polled.
    pub reaped: VecDeque<RcCompletion>,
}

/// The completion of a big receive flushed by the port's closing.
pub(in crate::sim) fn flushed_recv(slot: BigRxSlot) -> RcCompletion {
    RcCompletion::Recv {
        slot,
        status: RcStatus::Flushed,
        info: RcRecvInfo {
            conn: ConnHandle(0),
            byte_len: 0,
            src_qpn: Qpn::new_truncated(0),
        },
    }
}

impl SimPort {
    /// Turns connected mode on: the port gets a big-slot pool over
    /// `setup.region` and may hold `setup.max_conns` connections. Once.
    pub fn enable_rc(&mut self, setup: RcSetup) -> Result<(), SimError> {
        let RcSetup {
            big,
            region,
            max_conns,
        } = setup;
        if self.rc.is_some() {
            return Err(SimError::RcRefused("already on"));
        }
        if self.is_closed() {
            return Err(SimError::RcRefused("the port is closed"));
        }
        if big.slot_size < MIN_RC_MTU {
            return Err(SimError::RcRefused("big slots below the smallest RC MTU"));
        }
        if region.len() < big.region_len() {
            return Err(SimError::RegionTooSmall {
                needed: big.region_len(),
                actual: region.len(),
            });
        }
        let max_conns = max_conns.min(MAX_CONNS_LIMIT);
        let id = self.id();
        let port_rc = PortRc::new(big, region.clone(), max_conns);
        let attached = self
            .fabric()
            .with(|inner, _| match inner.ports.get_mut(&id) {
                Some(entry) => {
                    entry.rc = Some(port_rc);
                    true
                }
                None => false,
            });
        if !attached {
            return Err(SimError::RcRefused("the port is closed"));
        }
        self.rc = Some(PortRcSide {
            caps: RcCaps { max_conns, big },
            region,
            slots: Some((BigTxSlots::all(&big), BigRxSlots::all(&big))),
            reaped: VecDeque::new(),
        });
        Ok(())
    }

    /// A copy of this port's RC counters.
    pub fn rc_stats(&self) -> RcStats {
        if let Some(closed) = &self.closed {
            return closed.rc_stats;
        }
        let id = self.id();
        self.fabric()
            .with(|inner, _| {
                inner
                    .ports
                    .get(&id)
                    .and_then(|e| e.rc.as_ref())
                    .map(|rc| rc.stats)
            })
            .unwrap_or_default()
    }

    /// Connection handles this port holds now (active, passive and
    /// requests not yet answered).
    pub fn rc_held(&self) -> usize {
        let id = self.id();
        self.fabric()
            .with(|inner, _| {
                inner
                    .ports
                    .get(&id)
                    .and_then(|e| e.rc.as_ref())
                    .map(|rc| rc.in_use())
            })
            .unwrap_or(0)
    }

    /// Big receives posted and not yet filled.
    pub fn posted_big_recvs(&self) -> usize {
        let id = self.id();
        self.fabric()
            .with(|inner, _| {
                inner
                    .ports
                    .get(&id)
                    .and_then(|e| e.rc.as_ref())
                    .map(|rc| rc.recvs.len())
            })
            .unwrap_or(0)
    }

    /// Runs `f` on the fabric for an open port with RC on.
    fn rc_call<R>(
        &mut self,
        f: impl FnOnce(
            &mut crate::sim::fabric::Inner,
            crate::sim::entry::PortId,
            &mut alloc::vec::Vec<crate::sim::entry::Notifier>,
        ) -> Result<R, RcError>,
    ) -> Result<R, RcError> {
        if self.closed.is_some() {
            return Err(RcError::Disconnected);
        }
        if self.rc.is_none() {
            return Err(RcError::NotSupported);
        }
        let id = self.id();
        self.fabric().with(|inner, fire| f(inner, id, fire))
    }

    /// Why a post cannot even reach the fabric, if it cannot.
    fn rc_post_refusal(&self) -> Option<RcError> {
        if self.closed.is_some() {
            Some(RcError::Disconnected)
        } else if self.rc.is_none() {
            Some(RcError::NotSupported)
        } else {
            None
        }
    }
}

impl RcVerbs for SimPort {
    fn rc_caps(&self) -> Option<RcCaps> {
        self.rc.as_ref().map(|rc| rc.caps)
    }

    fn take_big_slots(&mut self) -> Option<(BigTxSlots, BigRxSlots)> {
        self.rc.as_mut()?.slots.take()
    }

    fn rc_connect(&mut self, dgid: Gid, ud_qpn: Qpn, recv_mtu: u32) -> Result<ConnHandle, RcError> {
        self.rc_call(|inner, id, fire| inner.rc_connect(id, dgid, ud_qpn, recv_mtu, fire))
    }

    fn rc_accept(&mut self, conn: ConnHandle, recv_mtu: u32) -> Result<(), RcError> {
        self.rc_call(|inner, id, fire| inner.rc_accept(id, conn, recv_mtu, fire))
    }

    fn rc_reject(&mut self, conn: ConnHandle) -> Result<(), RcError> {
        self.rc_call(|inner, id, fire| inner.rc_reject(id, conn, fire))
    }

    fn rc_disconnect(&mut self, conn: ConnHandle) -> Result<(), RcError> {
        self.rc_call(|inner, id, fire| inner.rc_disconnect(id, conn, fire))
    }

    /// Delivered synchronously while the receiver has big receives posted;
    /// otherwise queued on the connection until it posts some.
    fn rc_post_send(
        &mut self,
        conn: ConnHandle,
        slot: BigTxSlot,
        len: usize,
    ) -> Result<(), RcPostError<BigTxSlot>> {
        if let Some(error) = self.rc_post_refusal() {
            return Err(RcPostError { slot, error });
        }
        let id = self.id();
        self.fabric()
            .with(|inner, fire| inner.rc_send(id, conn, slot, len, fire))
    }

    fn rc_post_recv(&mut self, slot: BigRxSlot) -> Result<(), RcPostError<BigRxSlot>> {
        if let Some(error) = self.rc_post_refusal() {
            return Err(RcPostError { slot, error });
        }
        let id = self.id();
        self.fabric()
            .with(|inner, fire| inner.rc_recv(id, slot, fire))
    }

    fn poll_rc(&mut self) -> Result<Option<RcCompletion>, HcaError> {
        if let Some(closed) = &mut self.closed {
            return Ok(closed.rc_cq.pop_front());
        }
        let id = self.id();
        let fabric = self.fabric().clone();
        let Some(rc) = self.rc.as_mut() else {
            return Ok(None);
        };
        if rc.reaped.is_empty() {
            let reaped = &mut rc.reaped;
            fabric.with(|inner, fire| {
                inner.rc_expire(fire);
                let entry = inner.ports.get_mut(&id).ok_or(HcaError::Disconnected)?;
                if let Some(port_rc) = entry.rc.as_mut() {
                    core::mem::swap(reaped, &mut port_rc.cq);
                }
                Ok::<(), HcaError>(())
            })?;
        }
        Ok(rc.reaped.pop_front())
    }

    fn big_area(&mut self) -> BigArea<'_> {
        match &self.rc {
            Some(rc) => BigArea::new(&rc.region, rc.caps.big),
            // Reaches nothing: no slot fits an empty layout.
            None => BigArea::new(self.region(), BigLayout::NONE),
        }
    }
}
