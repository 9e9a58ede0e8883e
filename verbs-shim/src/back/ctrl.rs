//! Control requests: address resolution and multicast membership. Answers go
//! back in request order, whatever order the provider finishes them in.

use ring::desc::{ctrl_op, ctrl_status, CtrlRequest, CtrlResponse};

use super::limits::{refuse, Refusal};
use super::{BackStats, CtrlPending, Served, Violation};
use crate::hca::{DestHandle, McastError, PathError, Verbs};
use crate::types::Gid;

fn response(op: u16, cookie: u32, gid: [u8; 16], status: u16, handle: u32) -> CtrlResponse {
    CtrlResponse {
        op,
        status,
        cookie,
        gid,
        handle,
        _reserved: 0,
    }
}

impl<V: Verbs> Served<V> {
    pub(super) fn handle_ctrl(
        &mut self,
        req: CtrlRequest,
        stats: &mut BackStats,
    ) -> Result<(), Violation> {
        if req._reserved0 != 0 || req._reserved1 != 0 {
            return Err(Violation::ReservedBits { ring: "ctrl" });
        }
        stats.ctrl_requests += 1;
        let gid = Gid(req.gid);
        let mut pending = CtrlPending {
            cookie: req.cookie,
            op: req.op,
            gid: req.gid,
            response: None,
        };
        let refusal = match req.op {
            ctrl_op::RESOLVE => self.resolve_refusal(),
            ctrl_op::MCAST_ATTACH => self.attach_refusal(gid),
            _ => None,
        };
        if let Some((kind, limit)) = refusal {
            refuse(&mut stats.refusals, kind, limit);
            pending.response = Some(response(
                req.op,
                req.cookie,
                req.gid,
                ctrl_status::NO_RESOURCES,
                0,
            ));
            self.ctrl_pending.push_back(pending);
            return Ok(());
        }
        let started = match req.op {
            ctrl_op::RESOLVE => self.provider.resolve(gid),
            ctrl_op::MCAST_ATTACH => self.provider.attach_mcast(gid),
            ctrl_op::MCAST_DETACH => self.provider.detach_mcast(gid),
            ctrl_op::RELEASE_DEST => {
                let handle = self
                    .dests
                    .remove(req.arg)
                    .ok_or(Violation::BadHandle { handle: req.arg })?;
                let status = match self.provider.release_dest(handle) {
                    Ok(()) => ctrl_status::OK,
                    Err(_) => ctrl_status::INVALID,
                };
                pending.response = Some(response(req.op, req.cookie, req.gid, status, 0));
                Ok(())
            }
            op => return Err(Violation::UnknownCtrlOp { op }),
        };
        if let Err(e) = started {
            log::debug!("control op {} failed to start: {e}", req.op);
            pending.response = Some(response(
                req.op,
                req.cookie,
                req.gid,
                ctrl_status::NO_RESOURCES,
                0,
            ));
        }
        self.ctrl_pending.push_back(pending);
        Ok(())
    }

    /// `RESOLVE`s sent to the provider and not answered yet.
    pub(super) fn resolves_in_progress(&self) -> usize {
        self.ctrl_pending
            .iter()
            .filter(|p| p.op == ctrl_op::RESOLVE && p.response.is_none())
            .count()
    }

    /// The limit a new `RESOLVE` would break, if any.
    fn resolve_refusal(&self) -> Option<(Refusal, usize)> {
        let in_progress = self.resolves_in_progress();
        if in_progress >= self.max_pending_resolves {
            return Some((Refusal::PendingResolves, self.max_pending_resolves));
        }
        if self.dests.held() + in_progress >= self.dests.limit() {
            return Some((Refusal::Dests, self.dests.limit()));
        }
        None
    }

    /// The limit attaching to `mgid` would break, if any. Attaching to a
    /// group again costs nothing.
    fn attach_refusal(&self, mgid: Gid) -> Option<(Refusal, usize)> {
        if self.mcast_groups.contains(&mgid) {
            return None;
        }
        let in_progress = self
            .ctrl_pending
            .iter()
            .filter(|p| p.op == ctrl_op::MCAST_ATTACH && p.response.is_none())
            .count();
        (self.mcast_groups.len() + in_progress >= self.max_mcast_groups)
            .then_some((Refusal::McastGroups, self.max_mcast_groups))
    }

    pub(super) fn path_done(
        &mut self,
        dgid: Gid,
        result: Result<DestHandle, PathError>,
        stats: &mut BackStats,
    ) {
        let Some(p) = self
            .ctrl_pending
            .iter_mut()
            .find(|p| p.op == ctrl_op::RESOLVE && p.gid == dgid.0 && p.response.is_none())
        else {
            // Nobody asked (the guest cannot cause this); drop the handle.
            if let Ok(h) = result {
                let _ = self.provider.release_dest(h);
            }
            return;
        };
        let (status, handle) = match result {
            Ok(h) => match self.dests.insert(h, dgid) {
                Some(index) => (ctrl_status::OK, index),
                None => {
                    let _ = self.provider.release_dest(h);
                    refuse(&mut stats.refusals, Refusal::Dests, self.dests.limit());
                    (ctrl_status::NO_RESOURCES, 0)
                }
            },
            Err(PathError::Unreachable) => (ctrl_status::UNREACHABLE, 0),
            Err(PathError::NoResources) => (ctrl_status::NO_RESOURCES, 0),
        };
        p.response = Some(response(p.op, p.cookie, p.gid, status, handle));
    }

    pub(super) fn mcast_done(&mut self, mgid: Gid, attach: bool, result: Result<(), McastError>) {
        let op = if attach {
            ctrl_op::MCAST_ATTACH
        } else {
            ctrl_op::MCAST_DETACH
        };
        let Some(p) = self
            .ctrl_pending
            .iter_mut()
            .find(|p| p.op == op && p.gid == mgid.0 && p.response.is_none())
        else {
            return;
        };
        if result.is_ok() {
            if attach {
                self.mcast_groups.insert(mgid);
            } else {
                self.mcast_groups.remove(&mgid);
            }
        }
        let status = match result {
            Ok(()) => ctrl_status::OK,
            Err(McastError::NotMulticast) => ctrl_status::NOT_MULTICAST,
            Err(McastError::PartitionMismatch) => ctrl_status::PARTITION_MISMATCH,
            Err(McastError::NotAttached) => ctrl_status::NOT_ATTACHED,
            Err(McastError::NoResources) => ctrl_status::NO_RESOURCES,
        };
        p.response = Some(response(p.op, p.cookie, p.gid, status, 0));
    }

    /// Writes every answered request at the head of the queue.
    pub(super) fn answer_ctrl_in_order(&mut self) {
        while let Some(rsp) = self.ctrl_pending.front().and_then(|p| p.response) {
            self.ctrl_pending.pop_front();
            if let Err(e) = self.ctrl.push_response(&rsp) {
                log::error!("control response lost: {e}");
            }
        }
    }
}
