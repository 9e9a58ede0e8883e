//! The fabric as the CM: connect, accept, reject, disconnect, and the
//! teardown of every connection of a port that goes away or whose link
//! fails.

use alloc::vec::Vec;

use super::state::{Conn, ConnId, End, Phase, Side};
use crate::rc::{
    BreakReason, ConnHandle, ConnState, RcCompletion, RcError, RcEvent, RcPeer, RcStatus,
    RejectReason, MIN_RC_MTU,
};
use crate::sim::entry::{Entry, Notifier, PortId};
use crate::sim::fabric::Inner;
use crate::types::{Gid, Qpn};

/// What each end hears when a connection ends.
#[derive(Clone, Copy)]
pub(in crate::sim) enum Ending {
    /// `Side` asked for it: it gets `Closed`, the other `Broken`
    /// (`PeerClosed`), or `Rejected` if it was still connecting.
    ClosedBy(Side),
    /// Both ends (those still attached) get `Broken` with this reason.
    Broken(BreakReason),
    /// The passive side refused: the active side gets `Rejected`.
    Refused,
    /// Nobody answered the request in time: the active side gets
    /// `Rejected` (`Timeout`), the passive side `Broken` (`PeerClosed`: the
    /// requester gave up).
    TimedOut,
}

/// The port's RC state, or why there is none.
fn rc_of(entry: Option<&mut Entry>) -> Result<&mut super::PortRc, RcError> {
    entry
        .ok_or(RcError::Disconnected)?
        .rc
        .as_mut()
        .ok_or(RcError::NotSupported)
}

/// `mtu` fits `MIN_RC_MTU..=slot_size`.
fn check_mtu(mtu: u32, slot_size: u32) -> Result<(), RcError> {
    if (MIN_RC_MTU..=slot_size).contains(&mtu) {
        Ok(())
    } else {
        Err(RcError::BadMtu {
            mtu,
            max: slot_size,
        })
    }
}

impl Inner {
    /// [`crate::rc::RcVerbs::rc_connect`] from port `from`.
    pub(in crate::sim) fn rc_connect(
        &mut self,
        from: PortId,
        dgid: Gid,
        ud_qpn: Qpn,
        recv_mtu: u32,
        fire: &mut Vec<Notifier>,
    ) -> Result<ConnHandle, RcError> {
        let id = self.rc.next_id();
        let me = self.ports.get_mut(&from);
        let (attr, me_rc) = match me {
            Some(e) => (e.attr, rc_of(Some(e))?),
            None => return Err(RcError::Disconnected),
        };
        check_mtu(recv_mtu, me_rc.layout.slot_size)?;
        let Some(handle) = me_rc.alloc(id) else {
            me_rc.stats.over_limit += 1;
            return Err(RcError::TooManyConnections {
                limit: me_rc.max_conns,
            });
        };
        let active = End {
            port: from,
            handle,
            ud_qpn: attr.qpn,
            recv_mtu,
            queue: Default::default(),
        };
        let peer = RcPeer {
            gid: attr.gid,
            ud_qpn: attr.qpn,
            recv_mtu,
        };
        let target = self.by_gid.get(&dgid).copied().filter(|&t| t != from);
        let passive = match target {
            None => Err(RejectReason::Unreachable),
            Some(to) => self.offer(to, id, ud_qpn, peer, fire),
        };
        match passive {
            Ok(passive) => {
                self.rc.conns.insert(
                    id,
                    Conn {
                        phase: Phase::Requested,
                        ends: [active, passive],
                        requested_at: std::time::Instant::now(),
                    },
                );
            }
            Err(reason) => {
                if let Some(e) = self.ports.get_mut(&from) {
                    if let Some(rc) = e.rc.as_mut() {
                        rc.free(handle);
                    }
                    let event = RcEvent::Rejected {
                        conn: handle,
                        reason,
                    };
                    e.complete_rc(RcCompletion::Event(event), fire);
                }
            }
        }
        Ok(handle)
    }

    /// The request reaches port `to`: checked as the CM and the target's
    /// listener would, then queued there as an event.
    fn offer(
        &mut self,
        to: PortId,
        id: ConnId,
        ud_qpn: Qpn,
        peer: RcPeer,
        fire: &mut Vec<Notifier>,
    ) -> Result<End, RejectReason> {
        let from_pkey = self
            .ports
            .values()
            .find(|e| e.attr.gid == peer.gid)
            .map(|e| e.attr.pkey);
        let entry = self.ports.get_mut(&to).ok_or(RejectReason::Unreachable)?;
        let attr = entry.attr;
        if attr.qpn != ud_qpn {
            return Err(RejectReason::NoListener);
        }
        if !from_pkey.is_some_and(|p| p.matches(attr.pkey)) {
            return Err(RejectReason::Partition);
        }
        let rc = entry.rc.as_mut().ok_or(RejectReason::NoListener)?;
        let Some(handle) = rc.alloc(id) else {
            rc.stats.refused_at_limit += 1;
            return Err(RejectReason::Refused);
        };
        let event = RcEvent::Request { conn: handle, peer };
        entry.complete_rc(RcCompletion::Event(event), fire);
        Ok(End {
            port: to,
            handle,
            ud_qpn: attr.qpn,
            recv_mtu: 0,
            queue: Default::default(),
        })
    }

    /// The connection `handle` of port `from` names, and which end it is.
    pub(in crate::sim) fn rc_find(
        &mut self,
        from: PortId,
        handle: ConnHandle,
    ) -> Result<(ConnId, Side), RcError> {
        let rc = rc_of(self.ports.get_mut(&from))?;
        let id = rc
            .lookup(handle)
            .ok_or(RcError::UnknownConnection(handle))?;
        let side = self
            .rc
            .conns
            .get(&id)
            .and_then(|c| c.side_of(from, handle))
            .ok_or(RcError::UnknownConnection(handle))?;
        Ok((id, side))
    }

    /// What the owner of `side` sees the connection as.
    fn state_of(conn: &Conn, side: Side) -> ConnState {
        match (conn.phase, side) {
            (Phase::Established, _) => ConnState::Established,
            (Phase::Requested, Side::Active) => ConnState::Connecting,
            (Phase::Requested, Side::Passive) => ConnState::Requested,
        }
    }

    /// [`crate::rc::RcVerbs::rc_accept`].
    pub(in crate::sim) fn rc_accept(
        &mut self,
        from: PortId,
        handle: ConnHandle,
        recv_mtu: u32,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), RcError> {
        let (id, side) = self.rc_find(from, handle)?;
        let slot_size = rc_of(self.ports.get_mut(&from))?.layout.slot_size;
        let conn = self
            .rc
            .conns
            .get_mut(&id)
            .ok_or(RcError::UnknownConnection(handle))?;
        if side != Side::Passive || conn.phase != Phase::Requested {
            return Err(RcError::WrongState {
                conn: handle,
                state: Self::state_of(conn, side),
            });
        }
        check_mtu(recv_mtu, slot_size)?;
        conn.phase = Phase::Established;
        conn.end_mut(Side::Passive).recv_mtu = recv_mtu;
        let ends = [Side::Active, Side::Passive].map(|s| {
            let end = conn.end(s);
            let send_mtu = conn.end(s.other()).recv_mtu;
            (end.port, end.handle, send_mtu)
        });
        for (port, conn, send_mtu) in ends {
            if let Some(e) = self.ports.get_mut(&port) {
                if let Some(rc) = e.rc.as_mut() {
                    rc.stats.established += 1;
                }
                let event = RcEvent::Established { conn, send_mtu };
                e.complete_rc(RcCompletion::Event(event), fire);
            }
        }
        Ok(())
    }

    /// [`crate::rc::RcVerbs::rc_reject`].
    pub(in crate::sim) fn rc_reject(
        &mut self,
        from: PortId,
        handle: ConnHandle,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), RcError> {
        let (id, side) = self.rc_find(from, handle)?;
        let conn = self
            .rc
            .conns
            .get(&id)
            .ok_or(RcError::UnknownConnection(handle))?;
        if side != Side::Passive || conn.phase != Phase::Requested {
            return Err(RcError::WrongState {
                conn: handle,
                state: Self::state_of(conn, side),
            });
        }
        self.rc_end(id, Ending::Refused, fire);
        Ok(())
    }

    /// [`crate::rc::RcVerbs::rc_disconnect`].
    pub(in crate::sim) fn rc_disconnect(
        &mut self,
        from: PortId,
        handle: ConnHandle,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), RcError> {
        let (id, side) = self.rc_find(from, handle)?;
        self.rc_end(id, Ending::ClosedBy(side), fire);
        Ok(())
    }

    /// Ends connection `id`: each end still attached gets its queued sends
    /// back `Flushed`, loses its handle, and hears `how`.
    pub(in crate::sim) fn rc_end(&mut self, id: ConnId, how: Ending, fire: &mut Vec<Notifier>) {
        let Some(conn) = self.rc.conns.remove(&id) else {
            return;
        };
        let phase = conn.phase;
        for (i, end) in conn.ends.into_iter().enumerate() {
            let side = if i == 0 { Side::Active } else { Side::Passive };
            let Some(entry) = self.ports.get_mut(&end.port) else {
                continue;
            };
            let Some(rc) = entry.rc.as_mut() else {
                continue;
            };
            rc.free(end.handle);
            let conn = end.handle;
            let event = match how {
                Ending::ClosedBy(s) if s == side => RcEvent::Closed { conn },
                Ending::ClosedBy(_) | Ending::Refused
                    if side == Side::Active && phase == Phase::Requested =>
                {
                    RcEvent::Rejected {
                        conn,
                        reason: RejectReason::Refused,
                    }
                }
                Ending::TimedOut if side == Side::Active => RcEvent::Rejected {
                    conn,
                    reason: RejectReason::Timeout,
                },
                Ending::TimedOut => RcEvent::Broken {
                    conn,
                    reason: BreakReason::PeerClosed,
                },
                Ending::Refused => continue,
                Ending::ClosedBy(_) => RcEvent::Broken {
                    conn,
                    reason: BreakReason::PeerClosed,
                },
                Ending::Broken(reason) => RcEvent::Broken { conn, reason },
            };
            if matches!(event, RcEvent::Broken { .. }) {
                rc.stats.broken += 1;
            }
            rc.stats.flushed += end.queue.len() as u64;
            for msg in end.queue {
                let status = RcStatus::Flushed;
                let slot = msg.slot;
                entry.complete_rc(RcCompletion::Send { slot, conn, status }, fire);
            }
            entry.complete_rc(RcCompletion::Event(event), fire);
        }
    }

    /// The CM gives up on every request older than its timeout. Returns
    /// how many.
    pub(in crate::sim) fn rc_expire(&mut self, fire: &mut Vec<Notifier>) -> usize {
        if self.rc.conns.is_empty() {
            return 0;
        }
        let ids = self.rc.expired(std::time::Instant::now());
        for &id in &ids {
            self.rc_end(id, Ending::TimedOut, fire);
        }
        ids.len()
    }

    /// Every connection of `port` ends with `reason` (its link failed, or
    /// it is going away: then its own end is torn down too, and what it
    /// queued comes back on its own RC queue, for `close` to hand over).
    pub(in crate::sim) fn rc_break_port(
        &mut self,
        port: PortId,
        reason: BreakReason,
        fire: &mut Vec<Notifier>,
    ) -> usize {
        let ids = self.rc.of_port(port);
        for &id in &ids {
            self.rc_end(id, Ending::Broken(reason), fire);
        }
        ids.len()
    }
}
