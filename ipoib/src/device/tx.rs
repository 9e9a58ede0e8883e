//! The transmit side: free slots, destination lookup, the bounded queue of
//! packets waiting for ARP or a path, and the queue of packets ready to post.
//!
//! Nothing here touches the device, so a smoltcp `TxToken` can finish its
//! work with the device's buffers still borrowed. Posting happens in batches
//! in [`IpoibDevice::flush`](super::IpoibDevice::flush).

use heapless::{Deque, Vec};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address, Ipv6Packet};

/// Where an IPv4 header holds the destination address.
const IPV4_DST: core::ops::Range<usize> = 16..20;
use verbs_shim::{DestHandle, Gid, PKey, QKey, Qpn, TxSlot, UdDest};

use super::{MAX_SLOTS, PENDING};
use crate::config::IpoibConfig;
use crate::neighbour::{NeighLookup, NeighbourCache, PathCache, PathLookup};
use crate::stats::IpoibStats;
use crate::wire::{ipv4_multicast_mgid, ipv6_multicast_mgid, HwAddr};

/// Where a packet should go, before resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The partition's broadcast group.
    Broadcast,
    /// A next-hop address, to resolve with ARP (IPv4) or neighbour
    /// discovery (IPv6).
    Ip(IpAddress),
    /// A known hardware address (an ARP reply goes here).
    Hw(HwAddr),
    /// A multicast group other than the broadcast group, by MGID (an IPv4
    /// or IPv6 group); its path is resolved like a neighbour's, which is
    /// the send-only join.
    Group(Gid),
}

/// A filled slot with a resolved destination.
pub(crate) struct ReadyTx {
    pub slot: TxSlot,
    pub len: u16,
    pub dest: UdDest,
    /// For the capture.
    pub hw: HwAddr,
}

/// A filled slot waiting for ARP or a path.
pub(crate) struct PendingTx {
    pub slot: TxSlot,
    pub len: u16,
    pub target: Target,
    pub deadline: Instant,
}

/// What the interface knows about itself once the link is up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Local {
    pub hw: HwAddr,
    pub qkey: QKey,
    /// The port's P_Key, for the MGIDs of multicast groups.
    pub pkey: PKey,
    pub broadcast: Option<(DestHandle, HwAddr)>,
    /// The IPv6 link-local address, from the port GUID.
    pub link_local: Ipv6Address,
}

enum Lookup {
    Ready(UdDest, HwAddr),
    Wait,
    Drop(DropReason),
}

#[derive(Clone, Copy)]
pub(crate) enum DropReason {
    NoRoute,
    LinkDown,
    PathUnreachable,
    QueueFull,
    Timeout,
}

/// Everything a TX token needs; disjoint from the device and the RX side.
pub(crate) struct TxSide {
    pub free: Vec<TxSlot, MAX_SLOTS>,
    pub ready: Deque<ReadyTx, MAX_SLOTS>,
    pub pending: Deque<PendingTx, PENDING>,
    pub neighbours: NeighbourCache,
    pub paths: PathCache,
    /// Evicted path handles to release on the device.
    pub stale_handles: Vec<DestHandle, { crate::neighbour::PATHS }>,
    pub config: IpoibConfig,
    pub local: Local,
    pub stats: IpoibStats,
    pub now: Instant,
    /// The IPoIB MTU (the largest IP packet one slot carries).
    pub ip_mtu: usize,
    /// The next fragment identification.
    #[cfg(feature = "alloc")]
    pub frag_ident: u32,
}

impl TxSide {
    pub fn new(config: IpoibConfig, local: Local) -> TxSide {
        TxSide {
            free: Vec::new(),
            ready: Deque::new(),
            pending: Deque::new(),
            neighbours: NeighbourCache::new(),
            paths: PathCache::new(),
            stale_handles: Vec::new(),
            config,
            local,
            stats: IpoibStats::default(),
            now: Instant::ZERO,
            ip_mtu: 0,
            #[cfg(feature = "alloc")]
            frag_ident: 1,
        }
    }

    /// Forgets everything tied to the previous device: its slots, queued
    /// packets, path handles and neighbours. Queued packets count as
    /// link-down drops.
    pub fn reset(&mut self, local: Local) {
        let dropped = self.ready.len() + self.pending.len();
        self.stats.tx_drops.link_down += dropped as u64;
        self.ready.clear();
        self.pending.clear();
        self.free.clear();
        self.stale_handles.clear();
        // The old device's handles mean nothing to the new one.
        self.paths.clear(|_| {});
        // Nor do the neighbours' QPNs: a back end that restarts hands QPNs
        // out afresh (two hosted guests swapped theirs), and a neighbour
        // that announced its new one while we were away is not heard. Kept,
        // the entries sent every packet to a QPN nobody had, until they
        // expired (60 s); ARP now asks again at the first packet.
        self.neighbours.clear();
        self.local = local;
    }

    /// Free slots smoltcp may have; the rest are kept for ARP.
    #[inline]
    pub fn slots_for_stack(&self) -> usize {
        self.free.len().saturating_sub(super::ARP_RESERVE)
    }

    /// Where an IPv4 packet to `dst` goes next.
    pub fn route(&self, dst: Ipv4Address) -> Option<Target> {
        if dst.is_broadcast() || Some(dst) == self.config.subnet_broadcast() {
            return Some(Target::Broadcast);
        }
        if dst.is_multicast() {
            // The group's own MGID (RFC 4391 section 4). Resolving it is
            // the send-only join; only members attached to it receive.
            return Some(Target::Group(ipv4_multicast_mgid(self.local.pkey, dst)));
        }
        if self.config.address.contains_addr(&dst) {
            return Some(Target::Ip(dst.into()));
        }
        self.config.gateway.map(|gw| Target::Ip(gw.into()))
    }

    /// Where the IP packet `packet` goes next (IPv4 or IPv6 by its version).
    /// Only the destination address is read: the packet is one the stack
    /// just built, and whatever it says past that is the receiver's to
    /// check (re-validating the whole IPv4 header here cost about 30
    /// instructions per datagram, callgrind).
    #[inline]
    pub fn route_packet(&self, packet: &[u8]) -> Option<Target> {
        match packet.first().map(|b| b >> 4) {
            Some(6) => Ipv6Packet::new_checked(packet)
                .ok()
                .and_then(|ip| self.route6(ip.dst_addr())),
            _ => {
                let dst: [u8; 4] = packet.get(IPV4_DST)?.try_into().ok()?;
                self.route(Ipv4Address::from(dst))
            }
        }
    }

    /// Where an IPv6 packet to `dst` goes next: a group by its MGID, an
    /// on-link address (link-local, or in the configured prefix), or the
    /// IPv6 gateway.
    pub fn route6(&self, dst: Ipv6Address) -> Option<Target> {
        if dst.is_multicast() {
            return Some(Target::Group(ipv6_multicast_mgid(self.local.pkey, dst)));
        }
        if dst.is_unspecified() || dst.is_loopback() {
            return None;
        }
        if self.on_link6(dst) {
            return Some(Target::Ip(dst.into()));
        }
        self.config.gateway6.map(|gw| Target::Ip(gw.into()))
    }

    /// True if `addr` is on this link: link-local, or in the prefix of the
    /// configured IPv6 address.
    pub fn on_link6(&self, addr: Ipv6Address) -> bool {
        addr.is_unicast_link_local() || self.config.ipv6.is_some_and(|c| c.contains_addr(&addr))
    }

    fn qkey(&self) -> QKey {
        self.config.qkey_override.unwrap_or(self.local.qkey)
    }

    /// Looks a target up in the caches only. Starts ARP or a path
    /// resolution when needed (the device is asked later, in `service`).
    fn lookup(&mut self, target: Target) -> Lookup {
        let hw = match target {
            Target::Broadcast => {
                return match self.local.broadcast {
                    Some((handle, hw)) => Lookup::Ready(
                        UdDest {
                            handle,
                            qpn: Qpn::MULTICAST,
                            qkey: self.qkey(),
                        },
                        hw,
                    ),
                    None => Lookup::Drop(DropReason::LinkDown),
                };
            }
            Target::Hw(hw) => hw,
            Target::Group(mgid) => HwAddr::multicast(mgid),
            Target::Ip(ip) => match self.neighbours.lookup(ip, self.now) {
                NeighLookup::Reachable(hw) => hw,
                NeighLookup::Incomplete => return Lookup::Wait,
                NeighLookup::Unknown => {
                    self.neighbours.start(ip, self.now, &self.config.timers);
                    return Lookup::Wait;
                }
            },
        };
        match self.paths.lookup(&hw.gid, self.now) {
            PathLookup::Valid(handle) => Lookup::Ready(
                UdDest {
                    handle,
                    qpn: hw.qpn,
                    qkey: self.qkey(),
                },
                hw,
            ),
            PathLookup::Resolving => Lookup::Wait,
            PathLookup::Failed => Lookup::Drop(DropReason::PathUnreachable),
            PathLookup::Unknown => {
                if let Some(evicted) = self.paths.start(hw.gid, self.now) {
                    self.stale_handles_push(evicted);
                }
                Lookup::Wait
            }
        }
    }

    /// The hardware address of a unicast target, if it is known now (an
    /// unknown neighbour is asked for, so that it is known next time).
    #[cfg(feature = "alloc")]
    pub fn unicast_hw(&mut self, target: Target) -> Option<HwAddr> {
        match target {
            Target::Hw(hw) => Some(hw),
            Target::Ip(ip) => match self.neighbours.lookup(ip, self.now) {
                NeighLookup::Reachable(hw) => Some(hw),
                NeighLookup::Incomplete => None,
                NeighLookup::Unknown => {
                    self.neighbours.start(ip, self.now, &self.config.timers);
                    None
                }
            },
            Target::Broadcast | Target::Group(_) => None,
        }
    }

    /// Handles evicted from the path cache wait here to be released.
    fn stale_handles_push(&mut self, handle: DestHandle) {
        // At most one eviction per insert, and `service` empties this list
        // every pass; if it ever filled, the handle would only leak until
        // the channel closes.
        let _ = self.stale_handles.push(handle);
    }

    /// Queues a filled slot for `target`.
    pub fn submit(&mut self, slot: TxSlot, len: u16, target: Target) {
        match self.lookup(target) {
            Lookup::Ready(dest, hw) => self.push_ready(ReadyTx {
                slot,
                len,
                dest,
                hw,
            }),
            Lookup::Wait => {
                let entry = PendingTx {
                    slot,
                    len,
                    target,
                    deadline: self.now + self.config.timers.queue_timeout,
                };
                if let Err(entry) = self.pending.push_back(entry) {
                    // Full: the oldest waiter makes room.
                    if let Some(old) = self.pending.pop_front() {
                        self.drop_slot(old.slot, DropReason::QueueFull);
                    }
                    if let Err(entry) = self.pending.push_back(entry) {
                        self.drop_slot(entry.slot, DropReason::QueueFull);
                    }
                }
            }
            Lookup::Drop(reason) => self.drop_slot(slot, reason),
        }
    }

    fn push_ready(&mut self, tx: ReadyTx) {
        // The ready queue holds as many entries as there are slots.
        if let Err(tx) = self.ready.push_back(tx) {
            self.drop_slot(tx.slot, DropReason::QueueFull);
        }
    }

    /// Returns a slot to the free list and counts the drop.
    pub fn drop_slot(&mut self, slot: TxSlot, reason: DropReason) {
        let d = &mut self.stats.tx_drops;
        match reason {
            DropReason::NoRoute => d.no_route += 1,
            DropReason::LinkDown => d.link_down += 1,
            DropReason::PathUnreachable => d.path_unreachable += 1,
            DropReason::QueueFull => d.queue_full += 1,
            DropReason::Timeout => d.arp_timeout += 1,
        }
        self.release(slot);
    }

    #[inline]
    pub fn release(&mut self, slot: TxSlot) {
        // Capacity equals the number of slots, so this cannot fail.
        let _ = self.free.push(slot);
    }

    /// Re-examines every waiting packet: sends those now resolved, drops
    /// those past their deadline or whose address failed.
    pub fn retry_pending(&mut self, failed: &[IpAddress]) {
        for _ in 0..self.pending.len() {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if let Target::Ip(ip) = p.target {
                if failed.contains(&ip) {
                    self.drop_slot(p.slot, DropReason::Timeout);
                    continue;
                }
            }
            if self.now >= p.deadline {
                self.drop_slot(p.slot, DropReason::Timeout);
                continue;
            }
            match self.lookup(p.target) {
                Lookup::Ready(dest, hw) => self.push_ready(ReadyTx {
                    slot: p.slot,
                    len: p.len,
                    dest,
                    hw,
                }),
                Lookup::Wait => {
                    let _ = self.pending.push_back(p);
                }
                Lookup::Drop(reason) => self.drop_slot(p.slot, reason),
            }
        }
    }
}
