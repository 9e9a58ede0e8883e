//! CM ring requests and the provider's connection events.

use ring::desc::{cm_op, cm_reason, cm_status, CmRequest, CmResponse};

use super::conns::{Conn, Phase};
use super::RcServed;
use crate::back::limits::{refuse, Refusal};
use crate::back::{BackStats, Violation};
use crate::rc::{BreakReason, RcError, RcEvent, RcVerbs, RejectReason, MIN_RC_MTU};
use crate::types::{Gid, Qpn};

const RING: &str = "cm";

fn answer(op: u16, cookie: u32, status: u16) -> CmResponse {
    CmResponse {
        op,
        status,
        cookie,
        ..CmResponse::default()
    }
}

fn reject_code(r: RejectReason) -> u32 {
    match r {
        RejectReason::Unreachable => cm_reason::UNREACHABLE,
        RejectReason::NoListener => cm_reason::NO_LISTENER,
        RejectReason::Partition => cm_reason::PARTITION,
        RejectReason::Refused => cm_reason::REFUSED,
        RejectReason::Timeout => cm_reason::TIMEOUT,
    }
}

fn break_code(r: BreakReason) -> u32 {
    match r {
        BreakReason::RetryExceeded => cm_reason::RETRY_EXCEEDED,
        BreakReason::PeerGone => cm_reason::PEER_GONE,
        BreakReason::PeerClosed => cm_reason::PEER_CLOSED,
        BreakReason::LinkDown => cm_reason::LINK_DOWN,
        BreakReason::Idle => cm_reason::IDLE,
    }
}

impl RcServed {
    /// One CM request, copied out of the ring once.
    pub fn handle_cm(
        &mut self,
        req: CmRequest,
        rc: &mut dyn RcVerbs,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        stats.cm_requests += 1;
        if req._reserved0 != 0 || req._reserved1 != 0 || req._reserved2 != [0; 2] {
            return Err(Violation::ReservedBits { ring: RING });
        }
        // Fields an op does not use must be 0.
        let unused = |conn: bool, qpn: bool, mtu: bool, gid: bool| {
            (conn && req.conn != 0)
                || (qpn && req.qpn != 0)
                || (mtu && req.mtu != 0)
                || (gid && req.gid != [0; 16])
        };
        let bad = match req.op {
            cm_op::CONNECT => unused(true, false, false, false),
            cm_op::ACCEPT => unused(false, true, false, true),
            cm_op::REJECT | cm_op::DISCONNECT => unused(false, true, true, true),
            cm_op::EVENT_CREDIT => unused(true, true, true, true),
            op => return Err(Violation::UnknownCtrlOp { op }),
        };
        if bad {
            return Err(Violation::ReservedBits { ring: RING });
        }
        match req.op {
            cm_op::CONNECT => self.connect(req, rc, stats),
            cm_op::ACCEPT => self.accept(req, rc, stats),
            cm_op::REJECT => self.reject(req, rc),
            cm_op::DISCONNECT => self.disconnect(req, rc),
            _ => {
                self.credit(req.cookie);
                Ok(())
            }
        }
    }

    /// Refuses `req` for a limit: counted, answered `NO_RESOURCES`.
    fn refuse(&mut self, req: &CmRequest, kind: Refusal, limit: usize, stats: &mut BackStats) {
        refuse(&mut stats.refusals, kind, limit);
        self.respond(answer(req.op, req.cookie, cm_status::NO_RESOURCES));
    }

    /// `mtu` is one the guest's big slots can take.
    fn mtu_fits(&self, mtu: u32) -> bool {
        (MIN_RC_MTU..=self.big.slot_size).contains(&mtu)
    }

    fn connect(
        &mut self,
        req: CmRequest,
        rc: &mut dyn RcVerbs,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        let qpn = Qpn::new(req.qpn).ok_or(Violation::BadQpn { qpn: req.qpn })?;
        if !self.mtu_fits(req.mtu) {
            self.refuse(&req, Refusal::RcMtu, self.big.slot_size as usize, stats);
            return Ok(());
        }
        if self.conns.held() >= self.conns.limit() {
            self.refuse(&req, Refusal::RcConns, self.conns.limit(), stats);
            return Ok(());
        }
        match rc.rc_connect(Gid(req.gid), qpn, req.mtu) {
            Ok(provider) => {
                let phase = Phase::Connecting { cookie: req.cookie };
                let peer = (Gid(req.gid), qpn);
                if self
                    .conns
                    .insert(Conn {
                        provider,
                        phase,
                        peer,
                    })
                    .is_none()
                {
                    // Cannot happen (checked above); do not leak it.
                    let _ = rc.rc_disconnect(provider);
                    self.respond(answer(req.op, req.cookie, cm_status::NO_RESOURCES));
                }
            }
            Err(RcError::TooManyConnections { limit }) => {
                self.refuse(&req, Refusal::RcConns, limit, stats);
            }
            Err(e) => {
                log::debug!("rc_connect failed: {e}");
                self.respond(answer(req.op, req.cookie, cm_status::NO_RESOURCES));
            }
        }
        Ok(())
    }

    fn accept(
        &mut self,
        req: CmRequest,
        rc: &mut dyn RcVerbs,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        let fits = self.mtu_fits(req.mtu);
        let conn = self
            .conns
            .get_mut(req.conn)
            .ok_or(Violation::BadHandle { handle: req.conn })?;
        if conn.phase != Phase::Requested {
            self.respond(answer(req.op, req.cookie, cm_status::INVALID));
            return Ok(());
        }
        if !fits {
            self.refuse(&req, Refusal::RcMtu, self.big.slot_size as usize, stats);
            return Ok(());
        }
        match rc.rc_accept(conn.provider, req.mtu) {
            Ok(()) => conn.phase = Phase::Accepting { cookie: req.cookie },
            Err(e) => {
                log::debug!("rc_accept failed: {e}");
                self.respond(answer(req.op, req.cookie, cm_status::INVALID));
            }
        }
        Ok(())
    }

    fn reject(&mut self, req: CmRequest, rc: &mut dyn RcVerbs) -> Result<(), Violation> {
        let conn = self
            .conns
            .get_mut(req.conn)
            .ok_or(Violation::BadHandle { handle: req.conn })?;
        let status = match conn.phase {
            Phase::Requested => {
                let _ = rc.rc_reject(conn.provider);
                self.conns.remove(req.conn);
                cm_status::OK
            }
            Phase::Dead => {
                self.conns.remove(req.conn);
                cm_status::OK
            }
            _ => cm_status::INVALID,
        };
        self.respond(CmResponse {
            conn: req.conn,
            ..answer(req.op, req.cookie, status)
        });
        Ok(())
    }

    fn disconnect(&mut self, req: CmRequest, rc: &mut dyn RcVerbs) -> Result<(), Violation> {
        let conn = self
            .conns
            .get_mut(req.conn)
            .ok_or(Violation::BadHandle { handle: req.conn })?;
        match conn.phase {
            Phase::Dead => {
                self.conns.remove(req.conn);
                self.respond(CmResponse {
                    conn: req.conn,
                    ..answer(req.op, req.cookie, cm_status::OK)
                });
            }
            Phase::Established | Phase::Requested => match rc.rc_disconnect(conn.provider) {
                Ok(()) => conn.phase = Phase::Closing { cookie: req.cookie },
                Err(e) => {
                    // The provider no longer knows it: it is gone.
                    log::debug!("rc_disconnect failed: {e}");
                    self.conns.remove(req.conn);
                    self.respond(CmResponse {
                        conn: req.conn,
                        ..answer(req.op, req.cookie, cm_status::OK)
                    });
                }
            },
            _ => self.respond(answer(req.op, req.cookie, cm_status::INVALID)),
        }
        Ok(())
    }

    /// An `EVENT_CREDIT`: answered at once by a held event, or kept.
    fn credit(&mut self, cookie: u32) {
        match self.held.pop_front() {
            Some(mut event) => {
                event.cookie = cookie;
                self.respond(event);
            }
            None => self.credits.push_back(cookie),
        }
    }

    /// Sends an unsolicited event on a credit, or holds it for the next.
    fn emit(&mut self, mut event: CmResponse) {
        match self.credits.pop_front() {
            Some(cookie) => {
                event.cookie = cookie;
                self.respond(event);
            }
            None => self.held.push_back(event),
        }
    }

    pub(super) fn respond(&mut self, rsp: CmResponse) {
        if let Err(e) = self.cm.push_response(&rsp) {
            log::error!("cm response lost: {e}");
        }
    }

    /// A connection event from the provider.
    pub fn on_event(&mut self, event: RcEvent, rc: &mut dyn RcVerbs, stats: &mut BackStats) {
        match event {
            RcEvent::Request { conn, peer } => {
                if self.credits.is_empty() {
                    let _ = rc.rc_reject(conn);
                    refuse(&mut stats.refusals, Refusal::RcNoCredit, 0);
                    return;
                }
                let phase = Phase::Requested;
                let Some(guest) = self.conns.insert(Conn {
                    provider: conn,
                    phase,
                    peer: (peer.gid, peer.ud_qpn),
                }) else {
                    let _ = rc.rc_reject(conn);
                    refuse(&mut stats.refusals, Refusal::RcConns, self.conns.limit());
                    return;
                };
                self.emit(CmResponse {
                    op: cm_op::EVENT_REQUEST,
                    conn: guest,
                    qpn: peer.ud_qpn.get(),
                    mtu: peer.recv_mtu,
                    gid: peer.gid.0,
                    ..CmResponse::default()
                });
            }
            RcEvent::Established { conn, send_mtu } => {
                let Some((guest, c)) = self.conns.by_provider(conn) else {
                    return;
                };
                let (op, cookie) = match c.phase {
                    Phase::Connecting { cookie } => (cm_op::CONNECT, cookie),
                    Phase::Accepting { cookie } => (cm_op::ACCEPT, cookie),
                    _ => return,
                };
                c.phase = Phase::Established;
                self.respond(CmResponse {
                    conn: guest,
                    mtu: send_mtu,
                    ..answer(op, cookie, cm_status::OK)
                });
            }
            RcEvent::Rejected { conn, reason } => {
                self.ended(conn, cm_status::REJECTED, reject_code(reason));
            }
            RcEvent::Broken { conn, reason } => {
                self.ended(conn, cm_status::BROKEN, break_code(reason));
            }
            RcEvent::Closed { conn } => self.ended(conn, cm_status::OK, cm_reason::NONE),
        }
    }

    /// Connection `conn` is over in the provider: whatever the guest
    /// waits for is answered; a connection the guest knows stays `Dead`
    /// until it lets go.
    fn ended(&mut self, conn: crate::rc::ConnHandle, status: u16, reason: u32) {
        let Some((guest, c)) = self.conns.by_provider(conn) else {
            return;
        };
        match c.phase {
            Phase::Connecting { cookie } => {
                // The guest never learnt the handle.
                self.conns.remove(guest);
                self.respond(CmResponse {
                    reason,
                    ..answer(cm_op::CONNECT, cookie, status)
                });
            }
            Phase::Accepting { cookie } => {
                c.phase = Phase::Dead;
                let status = if status == cm_status::OK {
                    cm_status::BROKEN
                } else {
                    status
                };
                self.respond(CmResponse {
                    conn: guest,
                    reason,
                    ..answer(cm_op::ACCEPT, cookie, status)
                });
            }
            Phase::Closing { cookie } => {
                self.conns.remove(guest);
                self.respond(CmResponse {
                    conn: guest,
                    ..answer(cm_op::DISCONNECT, cookie, cm_status::OK)
                });
            }
            Phase::Requested | Phase::Established => {
                c.phase = Phase::Dead;
                self.emit(CmResponse {
                    op: cm_op::EVENT_BROKEN,
                    status: cm_status::BROKEN,
                    conn: guest,
                    reason,
                    ..CmResponse::default()
                });
            }
            Phase::Dead => {}
        }
    }

    /// What the RC state of a connection is, for the data path: the
    /// provider handle if it may carry data, `Err(true)` if it is dead
    /// (sends flushed), `Err(false)` if the handle is not one to send on.
    pub fn sendable(&mut self, guest: u32) -> Result<(crate::rc::ConnHandle, (Gid, Qpn)), bool> {
        match self.conns.get_mut(guest) {
            Some(Conn {
                provider,
                phase: Phase::Established,
                peer,
            }) => Ok((*provider, *peer)),
            Some(Conn {
                phase: Phase::Dead | Phase::Closing { .. },
                ..
            }) => Err(true),
            _ => Err(false),
        }
    }

    /// The guest handle of a provider connection (for receives).
    pub fn guest_handle(&mut self, provider: crate::rc::ConnHandle) -> Option<u32> {
        self.conns.by_provider(provider).map(|(g, _)| g)
    }
}
