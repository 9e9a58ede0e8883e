//! One service pass: take the guest's requests, validate and post them, reap
//! the provider's completions, answer, and notify once per batch.

use alloc::vec::Vec;
use ring::desc::{
    CmRequest, RxRequest, RxResponse, TxRequest, TxResponse, RX_FLAG_GRH, RX_FLAG_MULTICAST,
    RX_REQ_FLAG_BIG, TX_FLAG_RC,
};
use ring::State;

use super::filter::{check_frame, CheckedHead, SenderPort};
use super::tap::Tapper;
use super::{BackError, BackHalf, BackStats, Phase, Served, Violation};
use crate::hca::{Completion, HcaError, PostError, SendWr, UdDest, Verbs};
use crate::notify::Notify;
use crate::types::{QKey, Qpn};

impl<V: Verbs, N: Notify> BackHalf<V, N> {
    /// Does one batch of work. Returns how many requests and completions it
    /// handled; zero means the caller may [`arm`](Self::arm) and sleep.
    pub fn service(&mut self) -> Result<usize, BackError> {
        match &self.phase {
            Phase::Connected(_) => {}
            Phase::Closed(e) => return Err(*e),
            Phase::WaitingForGuest | Phase::Setup(_) => return Ok(0),
        }
        if matches!(self.header.guest_state(), State::Closing | State::Closed) {
            log::info!("guest closed the channel");
            return Err(self.close(BackError::GuestClosed));
        }
        let batch = self.config.batch;
        let Phase::Connected(served) = &mut self.phase else {
            return Ok(0);
        };
        let result = served
            .take_requests(&mut self.stats, &mut self.tapper, batch)
            .map_err(Outcome::Violation)
            .and_then(|n| {
                served
                    .provider
                    .flush()
                    .map(|()| n)
                    .map_err(Outcome::Provider)
            })
            .and_then(|n| {
                served
                    .reap(&mut self.stats, &mut self.tapper, batch)
                    .map(|m| n + m)
                    .map_err(Outcome::Provider)
            });
        let notify = served.publish();
        if notify {
            self.stats.interrupts += 1;
            self.notify.notify();
        }
        match result {
            Ok(work) => Ok(work),
            Err(Outcome::Violation(v)) => Err(self.disconnect(v)),
            Err(Outcome::Provider(e)) => {
                log::error!("provider failed: {e}");
                Err(self.close(BackError::Provider(e)))
            }
        }
    }

    /// Asks to be woken for more work: sets the ring event indices and arms
    /// the provider's CQ. Returns `true` if work arrived meanwhile, in which
    /// case the caller must call [`service`](Self::service) again instead of
    /// sleeping.
    pub fn arm(&mut self) -> Result<bool, BackError> {
        let Phase::Connected(served) = &mut self.phase else {
            return match &self.phase {
                Phase::Closed(e) => Err(*e),
                _ => Ok(false),
            };
        };
        let mut pending = false;
        let checks = [
            ("ctrl", served.ctrl.final_check_requests()),
            ("tx", served.tx.final_check_requests()),
            ("rx", served.rx.final_check_requests()),
        ];
        let cm = served.rc.as_mut().map(|rc| rc.cm.final_check_requests());
        for (ring, check) in checks.into_iter().chain(cm.map(|c| ("cm", c))) {
            match check {
                Ok(p) => pending |= p,
                Err(_) => return Err(self.disconnect(Violation::RingOverflow { ring })),
            }
        }
        match served.provider.arm_cq() {
            Ok(p) => Ok(pending || p),
            Err(e) => Err(self.close(BackError::Provider(e))),
        }
    }
}

/// Requests copied out of a ring at once.
const COPY_RUN: usize = 32;

/// What the TX filter said about one frame.
enum Filtered {
    /// No filter is installed: the frame is sent from its slot.
    Unfiltered,
    /// Passed: the frame's head is sent from this copy.
    Pass(CheckedHead),
    Drop,
}

enum Outcome {
    Violation(Violation),
    Provider(HcaError),
}

impl<V: Verbs> Served<V> {
    fn take_requests(
        &mut self,
        stats: &mut BackStats,
        tapper: &mut Tapper,
        batch: usize,
    ) -> Result<usize, Violation> {
        let mut work = 0;
        // Requests are copied out in runs (one bounds check and whole words
        // per run), then handled one by one; a violation ends the guest's
        // session, so what is left of a run does not matter.
        //
        // Every receive the guest posted goes to the provider before any of
        // its sends (at most a ring's worth, cheap: nothing is copied), as
        // a NIC takes a doorbell's descriptors in order. With only `batch`
        // of them first, an ACK sent with 500 reposts went out after 64:
        // the peer's next burst found the rest not yet posted and the
        // fabric dropped it for want of a receive (hosted 256 MiB TCP in
        // datagram mode, two workers: 6 runs in 100 lost a segment and
        // waited out smoltcp's 1 s retransmission timeout).
        let rx_batch = batch.max(self.rx.entries() as usize);
        let mut rx = [RxRequest::default(); COPY_RUN];
        while work < rx_batch {
            let n = self
                .rx
                .pop_requests(&mut rx[..(rx_batch - work).min(COPY_RUN)])
                .map_err(|_| Violation::RingOverflow { ring: "rx" })?;
            let handled = rx[..n]
                .iter()
                .try_for_each(|req| self.handle_rx(*req, stats));
            self.post_recv_batch();
            handled?;
            work += n;
            if n == 0 {
                break;
            }
        }
        let mut tx = [TxRequest::default(); COPY_RUN];
        let mut sent = 0;
        while sent < batch {
            let n = self
                .tx
                .pop_requests(&mut tx[..(batch - sent).min(COPY_RUN)])
                .map_err(|_| Violation::RingOverflow { ring: "tx" })?;
            let handled = tx[..n]
                .iter()
                .try_for_each(|req| self.handle_tx(*req, stats, tapper));
            self.post_send_batch(stats);
            handled?;
            sent += n;
            if n == 0 {
                break;
            }
        }
        work += sent;
        for _ in 0..batch {
            match self.ctrl.pop_request() {
                Ok(Some(req)) => self.handle_ctrl(req, stats)?,
                Ok(None) => break,
                Err(_) => return Err(Violation::RingOverflow { ring: "ctrl" }),
            }
            work += 1;
        }
        work += self.take_cm_requests(stats, batch)?;
        Ok(work)
    }

    /// At most `batch` CM ring requests (connected mode only).
    fn take_cm_requests(
        &mut self,
        stats: &mut BackStats,
        batch: usize,
    ) -> Result<usize, Violation> {
        let mut work = 0;
        while work < batch {
            let Some(rc) = self.rc.as_mut() else {
                break;
            };
            let req: CmRequest = match rc.cm.pop_request() {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(_) => return Err(Violation::RingOverflow { ring: "cm" }),
            };
            work += 1;
            let Some(provider) = self.provider.rc() else {
                // Agreed only with a provider that has RC; it cannot go.
                return Err(Violation::ReservedBits { ring: "cm" });
            };
            rc.handle_cm(req, provider, stats)?;
        }
        Ok(work)
    }

    fn handle_tx(
        &mut self,
        req: TxRequest,
        stats: &mut BackStats,
        tapper: &mut Tapper,
    ) -> Result<(), Violation> {
        if req.flags == TX_FLAG_RC {
            if tapper.filter.is_some() {
                // Connected mode is not agreed with a filter; should one be
                // installed later, RC sends are refused, never unchecked.
                return self.refuse_rc_filtered(req, stats);
            }
            return self.handle_rc_tx(req, stats, tapper);
        }
        if req.flags != 0 || req._reserved != 0 {
            return Err(Violation::ReservedBits { ring: "tx" });
        }
        if req.len == 0 {
            return Err(Violation::TxZeroLength);
        }
        if req.len > self.slots.slot_size {
            return Err(Violation::TxLengthTooLarge {
                len: req.len,
                slot_size: self.slots.slot_size,
            });
        }
        let qpn = Qpn::new(req.remote_qpn).ok_or(Violation::BadQpn {
            qpn: req.remote_qpn,
        })?;
        if req.qkey & 0x8000_0000 != 0 {
            return Err(Violation::ControlledQKey { qkey: req.qkey });
        }
        let (handle, dest_gid) = self
            .dests
            .get(req.dest)
            .ok_or(Violation::BadHandle { handle: req.dest })?;
        let token = take_token(&mut self.tx_tokens, req.slot, "tx")?;
        let checked = match self.filter_frame(tapper, req.slot, req.len) {
            Filtered::Unfiltered => None,
            Filtered::Pass(head) => Some(head),
            Filtered::Drop => {
                stats.tx_filtered += 1;
                self.refuse_tx(token, crate::WcStatus::LocalProtection);
                return Ok(());
            }
        };
        let head = checked.as_ref().map(CheckedHead::as_slice);
        if let Some(offset) = self.slots.tx_offset(req.slot) {
            tapper.sent(&self.region, offset, req.len as usize, head, qpn, dest_gid);
        }
        let dest = UdDest {
            handle,
            qpn,
            qkey: QKey(req.qkey),
        };
        stats.tx_requests += 1;
        stats.tx_bytes += u64::from(req.len);
        // A checked frame's head goes from the checked copy, so a rewrite
        // of the slot after the check cannot change it. Unchecked frames
        // wait for the end of the run and go as one batch.
        let Some(head) = head else {
            self.send_batch.push(SendWr {
                slot: token,
                len: req.len as usize,
                dest,
            });
            return Ok(());
        };
        // In order: what the batch holds goes first.
        self.post_send_batch(stats);
        let posted = self
            .provider
            .post_send_with_head(token, req.len as usize, &dest, head);
        if let Err(e) = posted {
            self.send_refused(e, stats);
        }
        Ok(())
    }

    /// Posts the batched sends (one provider call).
    fn post_send_batch(&mut self, stats: &mut BackStats) {
        if self.send_batch.is_empty() {
            return;
        }
        let mut refused = Vec::new();
        self.provider
            .post_sends(&mut self.send_batch.drain(..), &mut refused);
        for e in refused {
            self.send_refused(e, stats);
        }
    }

    fn send_refused(
        &mut self,
        PostError { slot, error }: PostError<crate::TxSlot>,
        stats: &mut BackStats,
    ) {
        log::debug!("post_send failed: {error}");
        stats.tx_errors += 1;
        self.refuse_tx(slot, crate::WcStatus::General);
    }

    /// Asks the installed TX filter, if any, about the frame in `slot`.
    fn filter_frame(&self, tapper: &mut Tapper, slot: u16, len: u32) -> Filtered {
        let Some(filter) = tapper.filter.as_mut() else {
            return Filtered::Unfiltered;
        };
        let Some(offset) = self.slots.tx_offset(slot) else {
            return Filtered::Drop;
        };
        let port = self.provider.port_attr();
        let sender = SenderPort {
            qpn: port.qpn,
            gid: port.gid,
        };
        match check_frame(filter.as_mut(), &sender, &self.region, offset, len as usize) {
            Some(head) => Filtered::Pass(head),
            None => Filtered::Drop,
        }
    }

    /// Hands an unsent TX slot back to the guest with `status`.
    fn refuse_tx(&mut self, slot: crate::TxSlot, status: crate::WcStatus) {
        let rsp = TxResponse {
            slot: slot.index(),
            status: status.to_code(),
            _reserved: 0,
        };
        if let Some(t) = self.tx_tokens.get_mut(usize::from(slot.index())) {
            *t = Some(slot);
        }
        if let Err(e) = self.tx.push_response(&rsp) {
            log::error!("tx response lost: {e}");
        }
    }

    fn handle_rx(&mut self, req: RxRequest, stats: &mut BackStats) -> Result<(), Violation> {
        if req._reserved0 == RX_REQ_FLAG_BIG {
            return self.handle_big_rx(req, stats);
        }
        if req._reserved0 != 0 || req._reserved1 != 0 {
            return Err(Violation::ReservedBits { ring: "rx" });
        }
        let token = take_token(&mut self.rx_tokens, req.slot, "rx")?;
        stats.rx_requests += 1;
        self.recv_batch.push(token);
        Ok(())
    }

    /// Posts the batched receives (one provider call); a refused one goes
    /// back to the guest with an error.
    fn post_recv_batch(&mut self) {
        if self.recv_batch.is_empty() {
            return;
        }
        let mut refused = Vec::new();
        self.provider
            .post_recvs(&mut self.recv_batch.drain(..), &mut refused);
        for PostError { slot, error } in refused {
            log::debug!("post_recv failed: {error}");
            let rsp = RxResponse {
                slot: slot.index(),
                status: crate::WcStatus::General.to_code(),
                ..RxResponse::default()
            };
            if let Some(t) = self.rx_tokens.get_mut(usize::from(slot.index())) {
                *t = Some(slot);
            }
            if let Err(e) = self.rx.push_response(&rsp) {
                log::error!("rx response lost: {e}");
            }
        }
    }

    fn reap(
        &mut self,
        stats: &mut BackStats,
        tapper: &mut Tapper,
        batch: usize,
    ) -> Result<usize, HcaError> {
        let mut work = 0;
        for _ in 0..batch * 2 {
            let Some(completion) = self.provider.poll_cq()? else {
                break;
            };
            self.complete(completion, stats, tapper);
            work += 1;
        }
        work += self.reap_rc(stats, batch * 2)?;
        self.answer_ctrl_in_order();
        Ok(work)
    }

    fn complete(&mut self, completion: Completion, stats: &mut BackStats, tapper: &mut Tapper) {
        match completion {
            Completion::Send { slot, status } => {
                let rsp = TxResponse {
                    slot: slot.index(),
                    status: status.to_code(),
                    _reserved: 0,
                };
                stats.tx_completions += 1;
                if status != crate::WcStatus::Success {
                    stats.tx_errors += 1;
                }
                if let Some(t) = self.tx_tokens.get_mut(usize::from(slot.index())) {
                    *t = Some(slot);
                }
                if let Err(e) = self.tx.push_response(&rsp) {
                    log::error!("tx response lost: {e}");
                }
            }
            Completion::Recv { slot, status, info } => {
                let mut flags = 0;
                if info.grh_present {
                    flags |= RX_FLAG_GRH;
                }
                if info.multicast {
                    flags |= RX_FLAG_MULTICAST;
                }
                let rsp = RxResponse {
                    slot: slot.index(),
                    status: status.to_code(),
                    byte_len: info.byte_len,
                    src_qpn: info.src_qpn.get(),
                    src_lid: info.src_lid.0,
                    flags,
                    pkey: info.pkey.0,
                    _reserved0: 0,
                    _reserved1: 0,
                };
                stats.rx_completions += 1;
                stats.rx_bytes += u64::from(info.byte_len);
                if status == crate::WcStatus::Success {
                    if let Some(offset) = self.slots.rx_offset(slot.index()) {
                        let len = (info.byte_len as usize).min(self.slots.slot_size as usize);
                        tapper.received(&self.region, offset, len);
                    }
                }
                if let Some(t) = self.rx_tokens.get_mut(usize::from(slot.index())) {
                    *t = Some(slot);
                }
                if let Err(e) = self.rx.push_response(&rsp) {
                    log::error!("rx response lost: {e}");
                }
            }
            Completion::Path { dgid, result } => self.path_done(dgid, result, stats),
            Completion::Mcast {
                mgid,
                attach,
                result,
            } => self.mcast_done(mgid, attach, result),
            Completion::PortChanged => {}
        }
    }

    /// Publishes all responses; true if the guest must be notified.
    fn publish(&mut self) -> bool {
        let a = self.ctrl.publish_responses();
        let b = self.tx.publish_responses();
        let c = self.rx.publish_responses();
        let d = self.rc.as_mut().is_some_and(|rc| rc.cm.publish_responses());
        a || b || c || d
    }
}

/// Takes the token of a slot the guest says it owns and now posts.
fn take_token<T>(tokens: &mut [Option<T>], slot: u16, ring: &'static str) -> Result<T, Violation> {
    tokens
        .get_mut(usize::from(slot))
        .ok_or(Violation::SlotOutOfRange { ring, slot })?
        .take()
        .ok_or(Violation::SlotNotOwned { ring, slot })
}
