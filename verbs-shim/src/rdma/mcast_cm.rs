//! Multicast joins through librdmacm (`rdma_join_multicast`).
//!
//! Each port has an rdma_cm id in the UDP port space, bound to its GID's
//! address, and joins its groups with it: on InfiniBand that is the SA
//! MCMemberRecord join (and the answer carries the group's MLID, which
//! `ibv_attach_mcast` and address handles need); on RoCE the kernel checks
//! the group and, for IPv4 groups only, joins at the IP level (its
//! `cma_igmp_send`). IPoIB's groups are IPv6 MGIDs, so on RoCE the port
//! still holds the IPv6 membership itself (`ipmc`); and where the kernel
//! refuses an IPv6 group on RoCEv2, the port falls back to that alone.
//!
//! Joins are asynchronous: [`McastCm::join`] starts one, and
//! [`McastCm::pump`] turns the answers into [`JoinOutcome`]s.
//!
//! The port's unicast path resolutions (`path_cm`) use the same event
//! channel: `pump` hands back the events that are not about joins.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::os::fd::RawFd;

use super::cm_addr::{AddrKind, CmAddr};
use super::ffi::{CmChannel, CmEvent, CmId, GroupRoute, PortSpace};
use crate::types::Gid;

/// The answer to a join.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct JoinOutcome {
    pub mgid: Gid,
    /// The group's LID (0 on RoCE), or the status of a failed join.
    pub result: Result<u16, i32>,
}

/// One port's rdma_cm multicast id and its groups.
pub(super) struct McastCm {
    /// Declared first: destroyed (leaving every group) before the channel.
    id: CmId,
    channel: Arc<CmChannel>,
    kind: AddrKind,
    /// Joins in progress, by the context number given to the join.
    pending: BTreeMap<usize, Gid>,
    /// Groups joined through rdma_cm, with their address handle attributes.
    joined: BTreeMap<Gid, GroupRoute>,
    next: usize,
}

impl McastCm {
    /// The id, bound to the port's `gid`; `Err(errno)` where rdma_cm is
    /// not available (no `rdma_ucm` module: no `/dev/infiniband/rdma_cm`).
    pub(super) fn new(gid: Gid, kind: AddrKind) -> Result<McastCm, (&'static str, i32)> {
        let channel = CmChannel::create().map_err(|e| match e {
            super::RdmaError::Verbs { call, errno } => (call, errno),
            _ => ("rdma_create_event_channel", libc::EIO),
        })?;
        let id = CmId::create(&channel, PortSpace::Udp).map_err(|e| ("rdma_create_id", e))?;
        id.bind(&CmAddr::udp_endpoint(gid, kind).encode())
            .map_err(|e| ("rdma_bind_addr", e))?;
        Ok(McastCm {
            id,
            channel,
            kind,
            pending: BTreeMap::new(),
            joined: BTreeMap::new(),
            next: 1,
        })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.channel.fd()
    }

    /// The event channel, for other ids whose events [`McastCm::pump`]
    /// hands back.
    pub(super) fn channel(&self) -> &Arc<CmChannel> {
        &self.channel
    }

    /// Starts joining `mgid`.
    pub(super) fn join(&mut self, mgid: Gid) -> Result<(), i32> {
        let context = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.id
            .join_multicast(&CmAddr::group(mgid, self.kind).encode(), context)?;
        self.pending.insert(context, mgid);
        Ok(())
    }

    /// Leaves `mgid` if it was joined through rdma_cm; true if it was.
    pub(super) fn leave(&mut self, mgid: Gid) -> bool {
        if self.joined.remove(&mgid).is_none() {
            return false;
        }
        if let Err(errno) = self
            .id
            .leave_multicast(&CmAddr::group(mgid, self.kind).encode())
        {
            log::warn!("rdma: rdma_leave_multicast {mgid} failed: errno {errno}");
        }
        true
    }

    /// The LID of a group joined through rdma_cm.
    pub(super) fn mlid(&self, mgid: Gid) -> Option<u16> {
        self.joined.get(&mgid).map(|r| r.mlid)
    }

    /// The address handle attributes of a group joined through rdma_cm.
    pub(super) fn route(&self, mgid: Gid) -> Option<GroupRoute> {
        self.joined.get(&mgid).copied()
    }

    /// Takes every waiting event; returns the answers to joins, and puts
    /// the events for other ids in `others`.
    pub(super) fn pump(&mut self, others: &mut Vec<CmEvent>) -> Vec<JoinOutcome> {
        use rdma_sys::rdma_cm_event_type::{
            RDMA_CM_EVENT_MULTICAST_ERROR, RDMA_CM_EVENT_MULTICAST_JOIN,
        };
        let mut out = Vec::new();
        loop {
            let event = match self.channel.next_event() {
                Ok(Some(e)) => e,
                Ok(None) => return out,
                Err(errno) => {
                    log::error!("rdma: rdma_get_cm_event (multicast) failed: errno {errno}");
                    return out;
                }
            };
            if event.id != self.id.key() {
                others.push(event);
                continue;
            }
            let Some((context, route)) = event.join else {
                log::debug!("rdma: multicast id: rdma_cm event {}", event.kind);
                continue;
            };
            let Some(mgid) = self.pending.remove(&context) else {
                continue;
            };
            let result = match event.kind {
                RDMA_CM_EVENT_MULTICAST_JOIN => {
                    self.joined.insert(mgid, route);
                    Ok(route.mlid)
                }
                RDMA_CM_EVENT_MULTICAST_ERROR => Err(event.status),
                _ => Err(libc::EIO),
            };
            out.push(JoinOutcome { mgid, result });
        }
    }
}
