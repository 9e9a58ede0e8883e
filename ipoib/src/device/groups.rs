//! IPv4 multicast groups the port receives, besides the broadcast group
//! (RFC 4391 section 4).
//!
//! Receiving from a group means attaching the QP to the group's MGID
//! ([`Verbs::attach_mcast`](verbs_shim::Verbs::attach_mcast)); sending to a
//! group needs only a send-only join, which the transmit side makes by
//! resolving the MGID like any other path. smoltcp keeps its own list of
//! joined groups (for IGMP and its receive filter); the caller joins both
//! (netcore's `NetStack::join_ipv4_group` does).
//!
//! The table is bounded ([`MAX_GROUPS`]). Joins survive a new device
//! ([`IpoibDevice::replace_device`]): every group is attached again.

use core::fmt;

use heapless::Vec;
use smoltcp::wire::Ipv4Address;
use verbs_shim::{Gid, Hca, HcaError, McastError};

use super::IpoibDevice;
use crate::capture::Capture;
use crate::wire::ipv4_multicast_mgid;

/// Most groups one interface receives besides the broadcast group.
pub const MAX_GROUPS: usize = 16;

/// Where one group's attach stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GroupState {
    /// Asked; the device has not answered yet.
    Joining,
    Joined,
    /// The device refused the attach (for example the back end's limit on
    /// groups per guest); nothing arrives from the group.
    Failed(McastError),
}

/// Why a join or leave was not started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GroupError {
    /// Not an IPv4 multicast address (224.0.0.0/4), or the broadcast address.
    NotMulticast(Ipv4Address),
    /// [`MAX_GROUPS`] groups are joined already.
    TableFull,
    /// `leave` of a group that was not joined.
    NotJoined(Ipv4Address),
    /// The device failed the request.
    Device(HcaError),
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::NotMulticast(a) => write!(f, "{a} is not an IPv4 multicast group"),
            GroupError::TableFull => write!(f, "already in {MAX_GROUPS} multicast groups"),
            GroupError::NotJoined(a) => write!(f, "not a member of {a}"),
            GroupError::Device(e) => write!(f, "device error: {e}"),
        }
    }
}

impl core::error::Error for GroupError {}

/// One joined group.
#[derive(Clone, Copy, Debug)]
struct Group {
    addr: Ipv4Address,
    mgid: Gid,
    state: GroupState,
}

/// The groups an interface receives.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: Vec<Group, MAX_GROUPS>,
}

impl Groups {
    fn find(&self, mgid: &Gid) -> Option<usize> {
        self.groups.iter().position(|g| g.mgid == *mgid)
    }

    /// Records the device's answer to an attach. Returns false if the MGID
    /// is not one of ours (a late answer to a group left since, or a
    /// confused device).
    pub fn attached(&mut self, mgid: &Gid, result: Result<(), McastError>) -> bool {
        let Some(i) = self.find(mgid) else {
            return false;
        };
        let group = &mut self.groups[i];
        group.state = match result {
            Ok(()) => {
                log::info!("ipoib: joined multicast group {} ({mgid})", group.addr);
                GroupState::Joined
            }
            Err(e) => {
                log::warn!("ipoib: joining {} ({mgid}) failed: {e:?}", group.addr);
                GroupState::Failed(e)
            }
        };
        true
    }

    /// Marks every group as joining again, with its MGID in `pkey`'s
    /// partition, and returns them, to attach on a new device.
    fn restart(&mut self, pkey: verbs_shim::PKey) -> &[Group] {
        for g in self.groups.iter_mut() {
            g.mgid = ipv4_multicast_mgid(pkey, g.addr);
            g.state = GroupState::Joining;
        }
        &self.groups
    }
}

/// An IPv4 multicast group other than the broadcast address.
fn check_group(addr: Ipv4Address) -> Result<(), GroupError> {
    if addr.is_multicast() && !addr.is_broadcast() {
        Ok(())
    } else {
        Err(GroupError::NotMulticast(addr))
    }
}

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    /// Starts receiving from the IPv4 multicast group `addr`: attaches the
    /// QP to its MGID. Joining a group twice is fine. The result arrives
    /// from the device; [`group_state`](Self::group_state) shows it.
    pub fn join_ipv4_group(&mut self, addr: Ipv4Address) -> Result<(), GroupError> {
        check_group(addr)?;
        let mgid = ipv4_multicast_mgid(self.port.pkey, addr);
        if self.groups.find(&mgid).is_some() {
            return Ok(());
        }
        self.groups
            .groups
            .push(Group {
                addr,
                mgid,
                state: GroupState::Joining,
            })
            .map_err(|_| GroupError::TableFull)?;
        if let Err(e) = self.hca.attach_mcast(mgid) {
            self.groups.groups.pop();
            return Err(GroupError::Device(e));
        }
        self.tx.stats.mcast.joins += 1;
        Ok(())
    }

    /// Stops receiving from `addr`: detaches the QP from its MGID.
    pub fn leave_ipv4_group(&mut self, addr: Ipv4Address) -> Result<(), GroupError> {
        check_group(addr)?;
        let mgid = ipv4_multicast_mgid(self.port.pkey, addr);
        let i = self.groups.find(&mgid).ok_or(GroupError::NotJoined(addr))?;
        let group = self.groups.groups.swap_remove(i);
        self.tx.stats.mcast.leaves += 1;
        if matches!(group.state, GroupState::Failed(_)) {
            return Ok(());
        }
        self.hca.detach_mcast(mgid).map_err(GroupError::Device)
    }

    /// Where the join of `addr` stands, or `None` if it was not joined.
    pub fn group_state(&self, addr: Ipv4Address) -> Option<GroupState> {
        let mgid = ipv4_multicast_mgid(self.port.pkey, addr);
        self.groups.find(&mgid).map(|i| self.groups.groups[i].state)
    }

    /// The answer to an attach or detach of a group other than the
    /// broadcast group.
    pub(super) fn on_group_completion(
        &mut self,
        mgid: Gid,
        attach: bool,
        result: Result<(), McastError>,
    ) {
        let stats = &mut self.tx.stats.mcast;
        if !attach {
            // Detaches are fire and forget; a failed one changes nothing
            // for us (the group is gone from the table either way).
            if result.is_err() {
                stats.leave_failures += 1;
            }
            return;
        }
        if !self.groups.attached(&mgid, result) {
            stats.unexpected += 1;
        } else if result.is_err() {
            stats.join_failures += 1;
        }
    }

    /// Attaches every joined group again, on a new device.
    pub(super) fn rejoin_groups(&mut self) -> Result<(), HcaError> {
        let Self {
            groups, hca, port, ..
        } = self;
        for group in groups.restart(port.pkey) {
            hca.attach_mcast(group.mgid)?;
        }
        Ok(())
    }
}
