//! The per-guest table of destination handles. A guest only ever names
//! handles by their index in its own table, so it cannot use another
//! guest's address handles.

use alloc::vec::Vec;

use crate::hca::DestHandle;
use crate::types::Gid;

pub(super) struct DestTable {
    entries: Vec<Option<(DestHandle, Gid)>>,
    limit: usize,
}

impl DestTable {
    pub(super) fn new(limit: usize) -> DestTable {
        DestTable {
            entries: Vec::new(),
            limit,
        }
    }

    /// Stores a provider handle and returns the guest-visible index.
    pub(super) fn insert(&mut self, provider: DestHandle, gid: Gid) -> Option<u32> {
        if let Some(i) = self.entries.iter().position(Option::is_none) {
            self.entries[i] = Some((provider, gid));
            return u32::try_from(i).ok();
        }
        if self.entries.len() >= self.limit {
            return None;
        }
        self.entries.push(Some((provider, gid)));
        u32::try_from(self.entries.len() - 1).ok()
    }

    /// Handles held.
    pub(super) fn held(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// The most handles the table holds.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// The provider handle and the GID it resolves to.
    pub(super) fn get(&self, guest: u32) -> Option<(DestHandle, Gid)> {
        *self.entries.get(usize::try_from(guest).ok()?)?
    }

    pub(super) fn remove(&mut self, guest: u32) -> Option<DestHandle> {
        self.entries
            .get_mut(usize::try_from(guest).ok()?)?
            .take()
            .map(|(h, _)| h)
    }
}
