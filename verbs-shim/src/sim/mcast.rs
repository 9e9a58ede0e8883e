//! The fabric's subnet-manager side: multicast joins and path resolution.
//! Both answer with a completion on the asking port's CQ.

use alloc::vec::Vec;

use super::entry::{Entry, Notifier, PortId, Target};
use super::fabric::Inner;
use crate::hca::{Completion, DestHandle, HcaError, McastError, PathError};
use crate::types::{Gid, PKey};

/// The P_Key an MGID names, IPoIB style (RFC 4391: bytes 4..6).
pub fn mgid_pkey(mgid: Gid) -> PKey {
    let b = mgid.as_bytes();
    PKey(u16::from_be_bytes([b[4], b[5]]))
}

impl Inner {
    fn entry(&mut self, id: PortId) -> Result<&mut Entry, HcaError> {
        self.ports.get_mut(&id).ok_or(HcaError::Disconnected)
    }

    /// Joins `mgid` (creating the group if needed). Joining twice is fine.
    pub(super) fn mcast_attach(
        &mut self,
        id: PortId,
        mgid: Gid,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), HcaError> {
        let pkey = self.entry(id)?.attr.pkey;
        let result = if !mgid.is_multicast() {
            Err(McastError::NotMulticast)
        } else if mgid_pkey(mgid).partition() != pkey.partition() {
            Err(McastError::PartitionMismatch)
        } else {
            self.groups.entry(mgid).or_default().insert(id);
            Ok(())
        };
        let entry = self.entry(id)?;
        if result.is_ok() {
            entry.groups.insert(mgid);
        }
        let done = Completion::Mcast {
            mgid,
            attach: true,
            result,
        };
        entry.complete(done, fire);
        Ok(())
    }

    /// Leaves `mgid`; the group goes away with its last member.
    pub(super) fn mcast_detach(
        &mut self,
        id: PortId,
        mgid: Gid,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), HcaError> {
        let entry = self.entry(id)?;
        let result = if !mgid.is_multicast() {
            Err(McastError::NotMulticast)
        } else if entry.groups.remove(&mgid) {
            Ok(())
        } else {
            Err(McastError::NotAttached)
        };
        if result.is_ok() {
            self.leave_group(mgid, id);
        }
        let done = Completion::Mcast {
            mgid,
            attach: false,
            result,
        };
        self.entry(id)?.complete(done, fire);
        Ok(())
    }

    /// Resolves a port GID, or an MGID in the port's partition, to a new
    /// handle. Resolving an MGID is a send-only join (RFC 4391 section 4):
    /// the group need not have members yet, a send reaches whoever is
    /// attached at the time, and the port receives nothing from the group.
    pub(super) fn resolve(
        &mut self,
        id: PortId,
        dgid: Gid,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), HcaError> {
        let pkey = self.entry(id)?.attr.pkey;
        let target = if dgid.is_multicast() {
            (mgid_pkey(dgid).partition() == pkey.partition()).then_some(Target::Group(dgid))
        } else {
            self.by_gid
                .contains_key(&dgid)
                .then_some(Target::Port(dgid))
        };
        let entry = self.entry(id)?;
        let result = match target {
            Some(target) => entry.alloc_handle(target),
            None => Err(PathError::Unreachable),
        };
        entry.complete(Completion::Path { dgid, result }, fire);
        Ok(())
    }

    pub(super) fn release(&mut self, id: PortId, handle: DestHandle) -> Result<(), HcaError> {
        if self.entry(id)?.release_handle(handle) {
            Ok(())
        } else {
            Err(HcaError::InvalidArgument)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipoib_broadcast_mgid_names_its_pkey() {
        let mgid = Gid([
            0xff, 0x12, 0x40, 0x1b, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(mgid_pkey(mgid), PKey(0x8001));
    }
}
