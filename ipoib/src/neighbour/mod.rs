//! The neighbour cache (IP address → hardware address, learned by ARP for
//! IPv4 and by neighbour discovery for IPv6; one table for both) and the
//! path cache (GID → destination handle, resolved by the fabric).
//!
//! Both are bounded. A full table evicts its least recently used entry; an
//! evicted path hands its handle back so the caller can release it.

use heapless::Vec;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;
use verbs_shim::{DestHandle, Gid};

use crate::config::ArpTimers;
use crate::wire::HwAddr;

/// Most neighbours remembered.
pub const NEIGHBOURS: usize = 64;
/// Most paths remembered.
pub const PATHS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NeighState {
    /// Waiting for an ARP reply or a neighbour advertisement.
    Incomplete {
        requests_left: u8,
        next_request: Instant,
    },
    Reachable {
        hw: HwAddr,
        expires: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Neighbour {
    ip: IpAddress,
    state: NeighState,
    last_used: Instant,
}

/// What the neighbour cache knows about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighLookup {
    Reachable(HwAddr),
    /// ARP is in progress.
    Incomplete,
    Unknown,
}

/// What a timer pass asks the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighEvent {
    /// Send an ARP request (IPv4) or a neighbour solicitation (IPv6) for
    /// this address.
    SendRequest(IpAddress),
    /// ARP failed: drop everything queued for this address.
    Failed(IpAddress),
}

/// IP address → IPoIB hardware address.
#[derive(Default)]
pub struct NeighbourCache {
    entries: Vec<Neighbour, NEIGHBOURS>,
}

impl NeighbourCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry: their QPNs belong to a fabric that is gone.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn find(&mut self, ip: IpAddress) -> Option<&mut Neighbour> {
        self.entries.iter_mut().find(|n| n.ip == ip)
    }

    /// Looks an address up, treating an expired entry as unknown.
    pub fn lookup(&mut self, ip: IpAddress, now: Instant) -> NeighLookup {
        let Some(n) = self.find(ip) else {
            return NeighLookup::Unknown;
        };
        n.last_used = now;
        match n.state {
            NeighState::Reachable { hw, expires } if now < expires => NeighLookup::Reachable(hw),
            NeighState::Reachable { .. } => NeighLookup::Unknown,
            NeighState::Incomplete { .. } => NeighLookup::Incomplete,
        }
    }

    /// Starts resolving `ip`. The first request goes out on the next
    /// [`poll`](Self::poll). Does nothing if resolution is already running.
    pub fn start(&mut self, ip: IpAddress, now: Instant, timers: &ArpTimers) {
        let state = NeighState::Incomplete {
            requests_left: timers.max_requests,
            next_request: now,
        };
        if let Some(n) = self.find(ip) {
            if !matches!(n.state, NeighState::Incomplete { .. }) {
                n.state = state;
            }
            return;
        }
        self.insert(Neighbour {
            ip,
            state,
            last_used: now,
        });
    }

    /// Records `ip` at `hw`. Without `create`, only an existing entry is
    /// updated (RFC 826: merge, but do not add for ARP not addressed to us).
    /// Returns true if the cache changed.
    pub fn learn(
        &mut self,
        ip: IpAddress,
        hw: HwAddr,
        now: Instant,
        timers: &ArpTimers,
        create: bool,
    ) -> bool {
        let state = NeighState::Reachable {
            hw,
            expires: now + timers.reachable_time,
        };
        if let Some(n) = self.find(ip) {
            n.state = state;
            return true;
        }
        if create {
            self.insert(Neighbour {
                ip,
                state,
                last_used: now,
            });
        }
        create
    }

    fn insert(&mut self, entry: Neighbour) {
        if self.entries.is_full() {
            // Evict the least recently used entry.
            if let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| n.last_used)
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(i);
            }
        }
        let _ = self.entries.push(entry);
    }

    /// Runs the timers: schedules ARP retries, gives up on addresses that
    /// never answered, and forgets expired entries.
    pub fn poll(&mut self, now: Instant, timers: &ArpTimers, mut event: impl FnMut(NeighEvent)) {
        self.entries.retain_mut(|n| match &mut n.state {
            NeighState::Incomplete {
                requests_left,
                next_request,
            } if now >= *next_request => {
                if *requests_left == 0 {
                    event(NeighEvent::Failed(n.ip));
                    false
                } else {
                    *requests_left -= 1;
                    *next_request = now + timers.retry_interval;
                    event(NeighEvent::SendRequest(n.ip));
                    true
                }
            }
            NeighState::Reachable { expires, .. } => now < *expires,
            NeighState::Incomplete { .. } => true,
        });
    }

    /// When [`poll`](Self::poll) next has work to do.
    pub fn next_timer(&self) -> Option<Instant> {
        self.entries
            .iter()
            .map(|n| match n.state {
                NeighState::Incomplete { next_request, .. } => next_request,
                NeighState::Reachable { expires, .. } => expires,
            })
            .min()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathState {
    /// Resolution requested (or about to be).
    Resolving {
        requested: bool,
    },
    Valid(DestHandle),
    Failed {
        retry_at: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Path {
    gid: Gid,
    state: PathState,
    last_used: Instant,
}

/// What the path cache knows about a GID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathLookup {
    Valid(DestHandle),
    Resolving,
    Failed,
    Unknown,
}

/// GID → destination handle.
#[derive(Default)]
pub struct PathCache {
    entries: Vec<Path, PATHS>,
}

impl PathCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn lookup(&mut self, gid: &Gid, now: Instant) -> PathLookup {
        let Some(p) = self.entries.iter_mut().find(|p| p.gid == *gid) else {
            return PathLookup::Unknown;
        };
        p.last_used = now;
        match p.state {
            PathState::Valid(h) => PathLookup::Valid(h),
            PathState::Resolving { .. } => PathLookup::Resolving,
            PathState::Failed { retry_at } if now < retry_at => PathLookup::Failed,
            PathState::Failed { .. } => PathLookup::Unknown,
        }
    }

    /// Adds a path to resolve. Returns a handle evicted to make room, which
    /// the caller must release.
    pub fn start(&mut self, gid: Gid, now: Instant) -> Option<DestHandle> {
        let state = PathState::Resolving { requested: false };
        if let Some(p) = self.entries.iter_mut().find(|p| p.gid == gid) {
            p.state = state;
            return None;
        }
        let mut evicted = None;
        if self.entries.is_full() {
            if let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(i, _)| i)
            {
                if let PathState::Valid(h) = self.entries.swap_remove(i).state {
                    evicted = Some(h);
                }
            }
        }
        let _ = self.entries.push(Path {
            gid,
            state,
            last_used: now,
        });
        evicted
    }

    /// GIDs whose resolution has not been asked of the device yet; the
    /// callback returns true once it has asked.
    pub fn request_unasked(&mut self, mut ask: impl FnMut(&Gid) -> bool) {
        for p in self.entries.iter_mut() {
            if let PathState::Resolving { requested: false } = p.state {
                if ask(&p.gid) {
                    p.state = PathState::Resolving { requested: true };
                }
            }
        }
    }

    /// Records the answer from the device. Returns a handle that is no longer
    /// wanted (nobody asked, or it replaced another), which must be released.
    pub fn resolved(
        &mut self,
        gid: &Gid,
        result: Result<DestHandle, ()>,
        now: Instant,
        timers: &ArpTimers,
    ) -> Option<DestHandle> {
        let Some(p) = self.entries.iter_mut().find(|p| p.gid == *gid) else {
            return result.ok();
        };
        let old = match p.state {
            PathState::Valid(h) => Some(h),
            _ => None,
        };
        p.state = match result {
            Ok(h) => PathState::Valid(h),
            Err(()) => PathState::Failed {
                retry_at: now + timers.path_retry,
            },
        };
        old
    }

    /// Forgets every path, returning the handles to release.
    pub fn clear(&mut self, mut release: impl FnMut(DestHandle)) {
        for p in self.entries.drain(..) {
            if let PathState::Valid(h) = p.state {
                release(h);
            }
        }
    }
}

#[cfg(test)]
mod tests;
