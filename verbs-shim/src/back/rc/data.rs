//! The RC data path through the TX and RX rings: sends from big TX slots on
//! a connection, big receives into the shared pool, and the provider's RC
//! completions turned into responses.

use ring::desc::{RxRequest, RxResponse, TxRequest, TxResponse, RX_FLAG_RC, TX_RSP_FLAG_RC};

use crate::back::tap::Tapper;
use crate::back::{BackStats, Served, Violation};
use crate::hca::{HcaError, Verbs};
use crate::rc::{BigRxSlot, BigTxSlot, RcCompletion, RcPostError, RcStatus};

const BIG_TX: &str = "big_tx";
const BIG_RX: &str = "big_rx";

/// Takes the token of a big slot the guest says it owns and now posts.
fn take<T>(tokens: &mut [Option<T>], slot: u16, ring: &'static str) -> Result<T, Violation> {
    tokens
        .get_mut(usize::from(slot))
        .ok_or(Violation::SlotOutOfRange { ring, slot })?
        .take()
        .ok_or(Violation::SlotNotOwned { ring, slot })
}

fn tx_response(slot: u16, status: RcStatus) -> TxResponse {
    TxResponse {
        slot,
        status: status.to_code(),
        _reserved: TX_RSP_FLAG_RC,
    }
}

impl<V: Verbs> Served<V> {
    /// An RC send (`TX_FLAG_RC`), negotiated or not: without connected mode
    /// the flag is a reserved bit.
    pub(in crate::back) fn handle_rc_tx(
        &mut self,
        req: TxRequest,
        stats: &mut BackStats,
        tapper: &mut Tapper,
    ) -> Result<(), Violation> {
        let Some(rc) = self.rc.as_mut() else {
            return Err(Violation::ReservedBits { ring: "tx" });
        };
        if req.remote_qpn != 0 || req.qkey != 0 || req._reserved != 0 {
            return Err(Violation::ReservedBits { ring: "tx" });
        }
        if req.len == 0 {
            return Err(Violation::TxZeroLength);
        }
        if req.len > rc.big.slot_size {
            return Err(Violation::TxLengthTooLarge {
                len: req.len,
                slot_size: rc.big.slot_size,
            });
        }
        let conn = match rc.sendable(req.dest) {
            Ok(conn) => Some(conn),
            Err(true) => None,
            Err(false) => return Err(Violation::BadHandle { handle: req.dest }),
        };
        let token = take(&mut rc.big_tx, req.slot, BIG_TX)?;
        // Captures show RC messages too: the frame is an IPoIB frame, as on
        // UD. (Only sends: an RC receive has no GRH to tell its source by;
        // a local peer's send is captured on its side.)
        if let (Some((_, (gid, qpn))), Some(offset)) = (conn, rc.big.tx_offset(req.slot)) {
            tapper.sent(&rc.region, offset, req.len as usize, None, qpn, gid);
        }
        let conn = conn.map(|(c, _)| c);
        stats.rc_tx_requests += 1;
        stats.tx_bytes += u64::from(req.len);
        let Some(conn) = conn else {
            // Broken under the guest, which has not read the news yet.
            self.refuse_big_tx(token, RcStatus::Flushed);
            return Ok(());
        };
        let posted = match self.provider.rc() {
            Some(p) => p.rc_post_send(conn, token, req.len as usize),
            None => Err(RcPostError {
                slot: token,
                error: crate::rc::RcError::NotSupported,
            }),
        };
        if let Err(RcPostError { slot, error }) = posted {
            log::debug!("rc_post_send failed: {error}");
            stats.tx_errors += 1;
            self.refuse_big_tx(slot, RcStatus::General);
        }
        Ok(())
    }

    /// An RC send while a TX filter is installed: checked like any other
    /// request, then refused with `LocalProtection` and counted as
    /// filtered, never sent unchecked.
    pub(in crate::back) fn refuse_rc_filtered(
        &mut self,
        req: TxRequest,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        let Some(rc) = self.rc.as_mut() else {
            return Err(Violation::ReservedBits { ring: "tx" });
        };
        let token = take(&mut rc.big_tx, req.slot, BIG_TX)?;
        stats.tx_filtered += 1;
        self.refuse_big_tx(token, RcStatus::General);
        Ok(())
    }

    fn refuse_big_tx(&mut self, slot: BigTxSlot, status: RcStatus) {
        let index = slot.index();
        if let Some(rc) = self.rc.as_mut() {
            if let Some(t) = rc.big_tx.get_mut(usize::from(index)) {
                *t = Some(slot);
            }
        }
        if let Err(e) = self.tx.push_response(&tx_response(index, status)) {
            log::error!("tx response lost: {e}");
        }
    }

    /// A big receive (`RX_REQ_FLAG_BIG`); without connected mode the flag
    /// is a reserved bit.
    pub(in crate::back) fn handle_big_rx(
        &mut self,
        req: RxRequest,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        let Some(rc) = self.rc.as_mut() else {
            return Err(Violation::ReservedBits { ring: "rx" });
        };
        if req._reserved1 != 0 {
            return Err(Violation::ReservedBits { ring: "rx" });
        }
        let token = take(&mut rc.big_rx, req.slot, BIG_RX)?;
        stats.rc_rx_requests += 1;
        let posted = match self.provider.rc() {
            Some(p) => p.rc_post_recv(token),
            None => Err(RcPostError {
                slot: token,
                error: crate::rc::RcError::NotSupported,
            }),
        };
        if let Err(RcPostError { slot, error }) = posted {
            log::debug!("rc_post_recv failed: {error}");
            self.return_big_rx(slot, RcStatus::General, 0, 0, 0);
        }
        Ok(())
    }

    fn return_big_rx(&mut self, slot: BigRxSlot, status: RcStatus, len: u32, qpn: u32, conn: u32) {
        let index = slot.index();
        if let Some(rc) = self.rc.as_mut() {
            if let Some(t) = rc.big_rx.get_mut(usize::from(index)) {
                *t = Some(slot);
            }
        }
        let rsp = RxResponse {
            slot: index,
            status: status.to_code(),
            byte_len: len,
            src_qpn: qpn,
            flags: RX_FLAG_RC,
            _reserved1: conn,
            ..RxResponse::default()
        };
        if let Err(e) = self.rx.push_response(&rsp) {
            log::error!("rx response lost: {e}");
        }
    }

    /// Takes at most `limit` RC completions from the provider.
    pub(in crate::back) fn reap_rc(
        &mut self,
        stats: &mut BackStats,
        limit: usize,
    ) -> Result<usize, HcaError> {
        if self.rc.is_none() {
            return Ok(0);
        }
        let mut work = 0;
        while work < limit {
            let Some(provider) = self.provider.rc() else {
                break;
            };
            let Some(completion) = provider.poll_rc()? else {
                break;
            };
            work += 1;
            match completion {
                RcCompletion::Send { slot, status, .. } => {
                    stats.rc_tx_completions += 1;
                    if status != RcStatus::Success {
                        stats.tx_errors += 1;
                    }
                    self.refuse_big_tx(slot, status);
                }
                RcCompletion::Recv { slot, status, info } => {
                    stats.rc_rx_completions += 1;
                    let conn = self
                        .rc
                        .as_mut()
                        .and_then(|rc| rc.guest_handle(info.conn))
                        .unwrap_or(u32::MAX);
                    let len = if status == RcStatus::Success {
                        stats.rx_bytes += u64::from(info.byte_len);
                        info.byte_len
                    } else {
                        0
                    };
                    self.return_big_rx(slot, status, len, info.src_qpn.get(), conn);
                }
                RcCompletion::Event(event) => {
                    if let (Some(rc), Some(p)) = (self.rc.as_mut(), self.provider.rc()) {
                        rc.on_event(event, p, stats);
                    }
                }
            }
        }
        Ok(work)
    }
}
