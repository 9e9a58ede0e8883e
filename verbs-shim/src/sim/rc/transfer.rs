//! Moving RC messages: from the sender's big TX slot, through the fault
//! dice read as RC recovery, into the receiver's oldest posted big RX slot,
//! in order.

use alloc::vec::Vec;

use super::cm::Ending;
use super::state::{ConnId, Msg, Phase, Side};
use super::RETRY_COUNT;
use crate::rc::{
    BigRxSlot, BigTxSlot, BreakReason, ConnHandle, ConnState, RcCompletion, RcError, RcPostError,
    RcRecvInfo, RcStatus,
};
use crate::sim::entry::{Notifier, PortId};
use crate::sim::fabric::Inner;
use crate::sim::fault::Verdict;

/// What happened to one message on the wire.
enum Outcome {
    Delivered,
    /// Every attempt was lost.
    RetryExceeded,
}

impl Inner {
    /// [`crate::rc::RcVerbs::rc_post_send`].
    pub(in crate::sim) fn rc_send(
        &mut self,
        from: PortId,
        handle: ConnHandle,
        slot: BigTxSlot,
        len: usize,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), RcPostError<BigTxSlot>> {
        let fail = |slot, error| Err(RcPostError { slot, error });
        let (id, side) = match self.rc_find(from, handle) {
            Ok(found) => found,
            Err(error) => return fail(slot, error),
        };
        let Some(conn) = self.rc.conns.get_mut(&id) else {
            return fail(slot, RcError::UnknownConnection(handle));
        };
        if conn.phase != Phase::Established {
            let state = match side {
                Side::Active => ConnState::Connecting,
                Side::Passive => ConnState::Requested,
            };
            return fail(
                slot,
                RcError::WrongState {
                    conn: handle,
                    state,
                },
            );
        }
        let send_mtu = conn.end(side.other()).recv_mtu as usize;
        let Some(entry) = self.ports.get_mut(&from) else {
            return fail(slot, RcError::Disconnected);
        };
        let Some(rc) = entry.rc.as_mut() else {
            return fail(slot, RcError::NotSupported);
        };
        if rc.layout.tx_offset(slot.index()).is_none() {
            let index = slot.index();
            return fail(slot, RcError::BadSlot(index));
        }
        if len > send_mtu || len > rc.layout.slot_size as usize {
            rc.stats.oversize += 1;
            let status = RcStatus::LocalLength;
            entry.complete_rc(
                RcCompletion::Send {
                    slot,
                    conn: handle,
                    status,
                },
                fire,
            );
            return Ok(());
        }
        conn.end_mut(side).queue.push_back(Msg { slot, len });
        self.rc_pump(id, side, fire);
        Ok(())
    }

    /// [`crate::rc::RcVerbs::rc_post_recv`]: the slot joins the port's pool,
    /// and messages waiting for one move.
    pub(in crate::sim) fn rc_recv(
        &mut self,
        from: PortId,
        slot: BigRxSlot,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), RcPostError<BigRxSlot>> {
        let rc = match self.ports.get_mut(&from).map(|e| e.rc.as_mut()) {
            None => {
                return Err(RcPostError {
                    slot,
                    error: RcError::Disconnected,
                })
            }
            Some(None) => {
                return Err(RcPostError {
                    slot,
                    error: RcError::NotSupported,
                })
            }
            Some(Some(rc)) => rc,
        };
        if rc.layout.rx_offset(slot.index()).is_none() {
            let index = slot.index();
            return Err(RcPostError {
                slot,
                error: RcError::BadSlot(index),
            });
        }
        rc.recvs.push_back(slot);
        let waiting: Vec<(ConnId, Side)> = self
            .rc
            .conns
            .iter()
            .filter_map(|(&id, c)| {
                let sender = [Side::Active, Side::Passive]
                    .into_iter()
                    .find(|&s| c.end(s.other()).port == from && !c.end(s).queue.is_empty())?;
                Some((id, sender))
            })
            .collect();
        for (id, sender) in waiting {
            self.rc_pump(id, sender, fire);
        }
        Ok(())
    }

    /// Delivers what `side` of connection `id` queued, in order, while the
    /// other end has big receives posted.
    fn rc_pump(&mut self, id: ConnId, side: Side, fire: &mut Vec<Notifier>) {
        loop {
            let Some(conn) = self.rc.conns.get(&id) else {
                return;
            };
            let (tx, rx) = (conn.end(side), conn.end(side.other()));
            let Some(msg) = tx.queue.front() else {
                return;
            };
            let (tx_port, tx_handle, tx_qpn) = (tx.port, tx.handle, tx.ud_qpn);
            let (rx_port, rx_handle, len) = (rx.port, rx.handle, msg.len);
            let src = self
                .ports
                .get(&tx_port)
                .and_then(|e| e.rc.as_ref())
                .and_then(|rc| Some((rc.region.clone(), rc.layout.tx_offset(msg.slot.index())?)));
            let Some((src_region, src_off)) = src else {
                return;
            };
            let Some(rx_rc) = self.ports.get_mut(&rx_port).and_then(|e| e.rc.as_mut()) else {
                return;
            };
            if rx_rc.recvs.is_empty() {
                if let Some(tx_rc) = self.ports.get_mut(&tx_port).and_then(|e| e.rc.as_mut()) {
                    tx_rc.stats.rnr_waits += 1;
                }
                return;
            }
            if let Outcome::RetryExceeded = self.rc_wire(tx_port, rx_port) {
                self.rc_fail(id, side, fire);
                return;
            }
            // Delivered: the "DMA" into the oldest posted big receive.
            let Some(rx_entry) = self.ports.get_mut(&rx_port) else {
                return;
            };
            let Some(rx_rc) = rx_entry.rc.as_mut() else {
                return;
            };
            let Some(rslot) = rx_rc.recvs.pop_front() else {
                return;
            };
            let copied = rx_rc.layout.rx_offset(rslot.index()).is_some_and(|off| {
                rx_rc
                    .region
                    .copy_from(off, &src_region, src_off, len)
                    .is_ok()
            });
            let status = if copied {
                rx_rc.stats.rx_msgs += 1;
                rx_rc.stats.rx_bytes += len as u64;
                RcStatus::Success
            } else {
                RcStatus::General
            };
            let info = RcRecvInfo {
                conn: rx_handle,
                byte_len: len as u32,
                src_qpn: tx_qpn,
            };
            rx_entry.complete_rc(
                RcCompletion::Recv {
                    slot: rslot,
                    status,
                    info,
                },
                fire,
            );
            let Some(msg) = self
                .rc
                .conns
                .get_mut(&id)
                .and_then(|c| c.end_mut(side).queue.pop_front())
            else {
                return;
            };
            if let Some(tx_entry) = self.ports.get_mut(&tx_port) {
                if let Some(tx_rc) = tx_entry.rc.as_mut() {
                    tx_rc.stats.tx_msgs += 1;
                    tx_rc.stats.tx_bytes += len as u64;
                }
                let send = RcCompletion::Send {
                    slot: msg.slot,
                    conn: tx_handle,
                    status,
                };
                tx_entry.complete_rc(send, fire);
            }
        }
    }

    /// Rolls the fault dice for each attempt of one message until one gets
    /// through or the retry count runs out; counts what RC recovery did.
    fn rc_wire(&mut self, tx_port: PortId, rx_port: PortId) -> Outcome {
        let (mut retransmits, mut duplicates) = (0, 0);
        let mut outcome = Outcome::RetryExceeded;
        for _ in 0..=RETRY_COUNT {
            match self.faults.judge() {
                Verdict::Lost | Verdict::Corrupt => retransmits += 1,
                Verdict::Deliver { copies, held } => {
                    duplicates += u64::from(copies.saturating_sub(1));
                    // Out of sequence at the responder: NAK, go back N.
                    retransmits += u64::from(held);
                    outcome = Outcome::Delivered;
                    break;
                }
            }
        }
        if let Some(rc) = self.ports.get_mut(&tx_port).and_then(|e| e.rc.as_mut()) {
            rc.stats.retransmits += retransmits;
        }
        if let Some(rc) = self.ports.get_mut(&rx_port).and_then(|e| e.rc.as_mut()) {
            rc.stats.duplicates += duplicates;
        }
        outcome
    }

    /// The oldest message of `side` ran out of retries: it completes with
    /// `RetryExceeded`, and the connection breaks under both ends.
    fn rc_fail(&mut self, id: ConnId, side: Side, fire: &mut Vec<Notifier>) {
        let Some(conn) = self.rc.conns.get_mut(&id) else {
            return;
        };
        let end = conn.end_mut(side);
        let (port, handle) = (end.port, end.handle);
        if let Some(msg) = end.queue.pop_front() {
            if let Some(entry) = self.ports.get_mut(&port) {
                let send = RcCompletion::Send {
                    slot: msg.slot,
                    conn: handle,
                    status: RcStatus::RetryExceeded,
                };
                entry.complete_rc(send, fire);
            }
        }
        self.rc_end(id, Ending::Broken(BreakReason::RetryExceeded), fire);
    }
}
