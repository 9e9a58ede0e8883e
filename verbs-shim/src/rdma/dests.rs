//! The table behind [`DestHandle`]s: one address handle each.
//!
//! A handle released while sends through it are still outstanding stays
//! in the table (unusable for new sends) until the last of them completes,
//! so the device never uses a destroyed AH.

use alloc::vec::Vec;

use crate::hca::{DestHandle, PathError};

/// Address handles one port can hold at a time, as in the sim fabric.
pub(super) const MAX_HANDLES: usize = 1024;

struct Entry<T> {
    value: T,
    /// Posted sends through this handle not yet completed.
    in_flight: u32,
    /// Released by the owner; destroyed when `in_flight` reaches zero.
    released: bool,
}

pub(super) struct Dests<T> {
    entries: Vec<Option<Entry<T>>>,
    limit: usize,
}

impl<T> Dests<T> {
    /// A table of at most `limit` handles.
    pub(super) fn new(limit: usize) -> Dests<T> {
        Dests {
            entries: Vec::new(),
            limit,
        }
    }

    fn free_index(&self) -> Option<usize> {
        match self.entries.iter().position(Option::is_none) {
            Some(free) => Some(free),
            None if self.entries.len() < self.limit => Some(self.entries.len()),
            None => None,
        }
    }

    /// Whether `n` more handles fit.
    pub(super) fn has_room_for(&self, n: usize) -> bool {
        let free = self.entries.iter().filter(|e| e.is_none()).count();
        free + self.limit.saturating_sub(self.entries.len()) >= n
    }

    /// Whether [`Dests::insert`] would succeed.
    #[cfg(test)]
    pub(super) fn has_room(&self) -> bool {
        self.free_index().is_some()
    }

    pub(super) fn insert(&mut self, value: T) -> Result<DestHandle, PathError> {
        let index = self.free_index().ok_or(PathError::NoResources)?;
        let handle = u32::try_from(index).map_err(|_| PathError::NoResources)?;
        let entry = Some(Entry {
            value,
            in_flight: 0,
            released: false,
        });
        if index == self.entries.len() {
            self.entries.push(entry);
        } else {
            self.entries[index] = entry;
        }
        Ok(DestHandle(handle))
    }

    fn entry_mut(&mut self, handle: DestHandle) -> Option<&mut Option<Entry<T>>> {
        let index = usize::try_from(handle.0).ok()?;
        self.entries.get_mut(index)
    }

    /// The value behind a live (not released) handle.
    pub(super) fn get(&self, handle: DestHandle) -> Option<&T> {
        let index = usize::try_from(handle.0).ok()?;
        match self.entries.get(index) {
            Some(Some(e)) if !e.released => Some(&e.value),
            _ => None,
        }
    }

    /// A send through `handle` was posted.
    pub(super) fn send_started(&mut self, handle: DestHandle) {
        if let Some(Some(e)) = self.entry_mut(handle) {
            e.in_flight = e.in_flight.saturating_add(1);
        }
    }

    /// A send through `handle` completed; frees a released entry with
    /// nothing left in flight.
    pub(super) fn send_done(&mut self, handle: DestHandle) {
        if let Some(slot) = self.entry_mut(handle) {
            if let Some(e) = slot {
                e.in_flight = e.in_flight.saturating_sub(1);
                if e.released && e.in_flight == 0 {
                    *slot = None;
                }
            }
        }
    }

    /// Releases a live handle; false if it was not one.
    pub(super) fn release(&mut self, handle: DestHandle) -> bool {
        let Some(slot) = self.entry_mut(handle) else {
            return false;
        };
        match slot {
            Some(e) if !e.released => {
                if e.in_flight == 0 {
                    *slot = None;
                } else {
                    e.released = true;
                }
                true
            }
            _ => false,
        }
    }

    /// Entries still holding a value (live or waiting for their sends).
    pub(super) fn held(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;

    #[test]
    fn handles_are_reused_and_bounded() {
        let mut d = Dests::new(3);
        let a = d.insert('a').unwrap();
        let b = d.insert('b').unwrap();
        let c = d.insert('c').unwrap();
        assert_eq!((a, b, c), (DestHandle(0), DestHandle(1), DestHandle(2)));
        assert!(!d.has_room());
        assert_eq!(d.insert('d'), Err(PathError::NoResources));
        assert!(d.release(b));
        assert!(!d.release(b));
        assert!(!d.release(DestHandle(99)));
        assert!(!d.release(DestHandle(u32::MAX)));
        assert_eq!(d.get(b), None);
        assert_eq!(d.insert('e'), Ok(b));
        assert_eq!(d.get(b), Some(&'e'));
        assert_eq!(d.get(DestHandle(3)), None);
    }

    #[test]
    fn released_handle_waits_for_its_sends() {
        let value = Rc::new(());
        let mut d = Dests::new(MAX_HANDLES);
        let h = d.insert(Rc::clone(&value)).unwrap();
        d.send_started(h);
        d.send_started(h);
        assert!(d.release(h));
        // Unusable at once, but not destroyed while sends are outstanding.
        assert!(d.get(h).is_none());
        assert!(!d.release(h), "a handle is released once");
        assert_eq!(Rc::strong_count(&value), 2);
        d.send_done(h);
        assert_eq!(Rc::strong_count(&value), 2);
        assert_eq!(d.held(), 1);
        // Its index is not handed out meanwhile.
        assert_eq!(d.insert(Rc::new(())), Ok(DestHandle(1)));
        d.send_done(h);
        assert_eq!(Rc::strong_count(&value), 1, "destroyed with the last send");
        assert_eq!(d.held(), 1);
        assert_eq!(d.insert(Rc::new(())), Ok(h));
    }

    #[test]
    fn completions_on_live_handles_only_count_down() {
        let mut d = Dests::new(4);
        let h = d.insert(1u8).unwrap();
        d.send_started(h);
        d.send_done(h);
        d.send_done(h);
        d.send_done(DestHandle(7));
        assert_eq!(d.get(h), Some(&1));
        assert!(d.release(h));
        assert_eq!(d.held(), 0);
    }
}
