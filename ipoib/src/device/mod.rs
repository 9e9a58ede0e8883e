//! The IPoIB network device: a smoltcp `phy::Device` (`Medium::Ip`) over any
//! [`Hca`].
//!
//! Use it in a loop:
//!
//! ```text
//! device.service(now)?;              // completions, ARP, timers, posting
//! ipoib::poll_interface(&mut iface, now, &mut device, &mut sockets);
//! device.service(now)?;              // post what smoltcp queued, one doorbell
//! if !device.arm()? { sleep until an interrupt or iface.poll_at() }
//! ```

mod arp;
#[cfg(feature = "alloc")]
mod cm;
#[cfg(any(test, feature = "alloc"))]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
mod frag_tx;
mod groups;
mod nd;
mod phy;
mod rx;
mod tx;

use core::fmt;

use heapless::{Deque, Vec};
use smoltcp::time::Instant;
use smoltcp::wire::{
    IpAddress, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr, IPV6_LINK_LOCAL_ALL_NODES,
};
use verbs_shim::{
    Completion, Gid, Hca, HcaError, IbMtu, Lid, McastError, PKey, PortAttr, PortState, QKey, Qpn,
    RxSlot, WcStatus, GRH_LEN,
};

pub use groups::{GroupError, GroupState, MAX_GROUPS};
pub use phy::{RxToken, TxToken};

use crate::capture::{Capture, NoCapture};
use crate::config::IpoibConfig;
use crate::neighbour::{NeighEvent, NEIGHBOURS};
use crate::stats::IpoibStats;
use crate::wire::ipv6::{link_local, solicited_node};
use crate::wire::{broadcast_mgid, ipv6_multicast_mgid, HwAddr};
use tx::{Local, TxSide};

/// Most TX or RX slots one device uses.
pub const MAX_SLOTS: usize = 1024;
/// Most packets waiting for ARP or a path.
pub const PENDING: usize = 64;
/// TX slots kept back from smoltcp so ARP can always go out.
pub const ARP_RESERVE: usize = 2;
/// Completions handled per service pass.
const POLL_BUDGET: usize = 256;
/// Where the IP packet starts in an RX slot.
const RX_PAYLOAD: usize = GRH_LEN + crate::wire::encap::HEADER_LEN;
/// The largest IP packet the device receives: the largest IB MTU (4096)
/// less the IPoIB header.
const RX_COPY: usize = 4096 - crate::wire::encap::HEADER_LEN;

/// Where the link stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LinkState {
    /// Joining the broadcast group.
    Joining,
    Up,
    /// The broadcast group could not be joined.
    Failed,
    /// The device went away.
    Down,
}

/// Why the interface could not be set up or went down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IpoibError {
    Device(HcaError),
    /// The device's slots were already taken by someone else.
    SlotsTaken,
    /// The device has more slots than this interface can track.
    TooManySlots {
        tx: u16,
        rx: u16,
    },
    /// Slots too small for a GRH, the IPoIB header and a minimal IP packet.
    SlotsTooSmall {
        slot_size: u32,
    },
    /// Too few TX slots to keep some for ARP.
    TooFewTxSlots {
        tx: u16,
    },
    /// Joining the broadcast group failed.
    Join(McastError),
}

impl fmt::Display for IpoibError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpoibError::Device(e) => write!(f, "device error: {e}"),
            IpoibError::SlotsTaken => f.write_str("the device's slots are already in use"),
            IpoibError::TooManySlots { tx, rx } => {
                write!(f, "{tx} TX / {rx} RX slots exceed the limit of {MAX_SLOTS}")
            }
            IpoibError::SlotsTooSmall { slot_size } => {
                write!(f, "slot size {slot_size} is too small for IPoIB")
            }
            IpoibError::TooFewTxSlots { tx } => {
                write!(f, "{tx} TX slots; need more than {ARP_RESERVE}")
            }
            IpoibError::Join(e) => write!(f, "joining the broadcast group failed: {e:?}"),
        }
    }
}

impl core::error::Error for IpoibError {}

impl From<HcaError> for IpoibError {
    fn from(e: HcaError) -> Self {
        IpoibError::Device(e)
    }
}

/// Where a received datagram really came from: the source QPN of the
/// receive completion and, when the datagram carried a GRH, its source GID.
/// Unlike the addresses inside the packet, the sender cannot choose these.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DatagramSource {
    pub qpn: Qpn,
    /// `None` when the datagram had no GRH (the fabric then vouches for the
    /// QPN only).
    pub gid: Option<Gid>,
}

impl DatagramSource {
    /// True if `hw` (an address claimed inside the packet, e.g. an ARP
    /// sender) is this source: the same QPN and, when known, the same GID.
    pub fn agrees_with(&self, hw: &HwAddr) -> bool {
        hw.qpn == self.qpn && self.gid.is_none_or(|gid| gid == hw.gid)
    }
}

/// The most IPv6 groups joined: all-nodes and the solicited-node groups of
/// the link-local and the configured address.
const IPV6_GROUPS: usize = 3;

/// A received IP packet waiting for smoltcp.
struct RxReady {
    slot: RxSlot,
    /// End of the packet within the slot.
    end: u16,
    source: DatagramSource,
}

pub(crate) struct RxSide {
    ready: Deque<RxReady, MAX_SLOTS>,
    /// IPv4 and IPv6 datagrams under reassembly.
    #[cfg(feature = "alloc")]
    reassembly: crate::reassembly::Reassembler,
    /// Reassembled datagrams (IPv4 and IPv6) waiting for smoltcp. When it
    /// is full, `service` stops taking completions until smoltcp has taken
    /// some (the rest wait in the CQ), so a burst of fragmented datagrams
    /// is not dropped here.
    #[cfg(feature = "alloc")]
    whole: Deque<(alloc::vec::Vec<u8>, DatagramSource), { crate::reassembly::REASSEMBLIES }>,
    /// Consumed slots to post again.
    repost: Vec<RxSlot, MAX_SLOTS>,
    /// Slots the device flushed back (channel closing); not reposted.
    idle: Vec<RxSlot, MAX_SLOTS>,
    /// The private copy smoltcp parses (phy.rs says why).
    copy: [u8; RX_COPY],
    /// Connected mode's receive buffers, reused once smoltcp read them.
    #[cfg(feature = "alloc")]
    cm_pool: cm::RxPool,
}

impl RxSide {
    /// True if no more reassembled datagrams fit until smoltcp takes some.
    fn whole_full(&self) -> bool {
        #[cfg(feature = "alloc")]
        return self.whole.is_full();
        #[cfg(not(feature = "alloc"))]
        false
    }

    /// True if a reassembled datagram waits for smoltcp.
    fn has_whole(&self) -> bool {
        #[cfg(feature = "alloc")]
        return !self.whole.is_empty();
        #[cfg(not(feature = "alloc"))]
        false
    }
}

/// An IPoIB interface over `H`.
pub struct IpoibDevice<H: Hca, C: Capture = NoCapture> {
    hca: H,
    capture: C,
    link: LinkState,
    port: PortAttr,
    broadcast_mgid: Gid,
    /// IPv6 groups joined (or being joined): all-nodes, solicited-node.
    ipv6_groups: Vec<Gid, IPV6_GROUPS>,
    mtu: usize,
    rx_slots: usize,
    rx: RxSide,
    tx: TxSide,
    groups: groups::Groups,
    /// Connected mode, when asked for and the device offers it.
    #[cfg(feature = "alloc")]
    cm: Option<cm::CmSide>,
}

impl<H: Hca> IpoibDevice<H, NoCapture> {
    /// Brings the interface up on a connected device: takes its slots,
    /// posts every RX slot and starts joining the broadcast group.
    pub fn new(hca: H, config: IpoibConfig) -> Result<Self, IpoibError> {
        Self::with_capture(hca, config, NoCapture)
    }
}

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    pub fn with_capture(hca: H, config: IpoibConfig, capture: C) -> Result<Self, IpoibError> {
        let local = Local {
            hw: HwAddr::default(),
            qkey: QKey(0),
            pkey: PKey(0),
            broadcast: None,
            link_local: Ipv6Address::UNSPECIFIED,
        };
        let mut device = IpoibDevice {
            hca,
            capture,
            link: LinkState::Down,
            port: PortAttr {
                gid: Gid::ZERO,
                lid: Lid(0),
                qpn: Qpn::new_truncated(0),
                pkey: PKey(0),
                qkey: QKey(0),
                mtu: IbMtu::Mtu256,
                state: PortState::Down,
            },
            broadcast_mgid: Gid::ZERO,
            ipv6_groups: Vec::new(),
            mtu: 0,
            rx_slots: 0,
            rx: RxSide {
                ready: Deque::new(),
                #[cfg(feature = "alloc")]
                reassembly: crate::reassembly::Reassembler::new(),
                #[cfg(feature = "alloc")]
                whole: Deque::new(),
                repost: Vec::new(),
                idle: Vec::new(),
                copy: [0; RX_COPY],
                #[cfg(feature = "alloc")]
                cm_pool: cm::RxPool::default(),
            },
            tx: TxSide::new(config, local),
            groups: groups::Groups::default(),
            #[cfg(feature = "alloc")]
            cm: None,
        };
        device.bring_up()?;
        Ok(device)
    }

    /// Moves the interface onto a new device, for example after the back
    /// end restarted (a new epoch). smoltcp's sockets carry on; everything
    /// tied to the old device (its slots, queued packets, path handles, and
    /// the neighbours' hardware addresses, whose QPNs the new back end hands
    /// out afresh) is forgotten. Returns the old device.
    pub fn replace_device(&mut self, hca: H) -> Result<H, IpoibError> {
        let old = core::mem::replace(&mut self.hca, hca);
        self.bring_up()?;
        Ok(old)
    }

    /// Takes the device's slots, posts every RX slot and starts joining the
    /// broadcast group.
    fn bring_up(&mut self) -> Result<(), IpoibError> {
        self.link = LinkState::Down;
        let layout = self.hca.layout();
        if usize::from(layout.tx_count) > MAX_SLOTS || usize::from(layout.rx_count) > MAX_SLOTS {
            return Err(IpoibError::TooManySlots {
                tx: layout.tx_count,
                rx: layout.rx_count,
            });
        }
        if usize::from(layout.tx_count) <= ARP_RESERVE {
            return Err(IpoibError::TooFewTxSlots {
                tx: layout.tx_count,
            });
        }
        let slot_size = layout.slot_size as usize;
        if slot_size < RX_PAYLOAD + 576 {
            return Err(IpoibError::SlotsTooSmall {
                slot_size: layout.slot_size,
            });
        }
        let port = self.hca.port_attr();
        let (tx_slots, rx_slots) = self.hca.take_slots().ok_or(IpoibError::SlotsTaken)?;
        self.tx.reset(Local {
            hw: HwAddr::new(port.qpn, port.gid),
            qkey: port.qkey,
            pkey: port.pkey,
            broadcast: None,
            link_local: link_local(&port.gid),
        });
        for slot in tx_slots {
            self.tx.release(slot);
        }
        self.rx.ready.clear();
        self.rx.repost.clear();
        self.rx.idle.clear();
        for slot in rx_slots {
            let _ = self.rx.repost.push(slot);
        }
        self.port = port;
        self.mtu = port.mtu.bytes().min(slot_size - GRH_LEN) - crate::wire::encap::HEADER_LEN;
        self.tx.ip_mtu = self.mtu;
        #[cfg(feature = "alloc")]
        self.start_connected_mode();
        self.rx_slots = usize::from(layout.rx_count);
        self.broadcast_mgid = broadcast_mgid(port.pkey);
        self.link = LinkState::Joining;
        self.hca.attach_mcast(self.broadcast_mgid)?;
        self.join_ipv6_groups()?;
        self.rejoin_groups()?;
        self.flush()?;
        log::info!(
            "ipoib: up on {} qpn {:#x} pkey {:#06x}, mtu {}",
            port.gid,
            port.qpn.get(),
            port.pkey.0,
            self.mtu
        );
        Ok(())
    }

    /// Turns connected mode on if it was asked for and the device offers
    /// it: the big slots are taken, the hardware address carries the flag,
    /// and the MTU becomes the connected MTU. A new device (after a back-end
    /// restart) starts with no connections.
    #[cfg(feature = "alloc")]
    fn start_connected_mode(&mut self) {
        self.cm = None;
        let Some(mtu) = self.tx.config.connected_mtu else {
            return;
        };
        let Some(rc) = self.hca.rc() else {
            log::info!("ipoib: connected mode asked for; the device has none");
            return;
        };
        self.cm = cm::CmSide::start(rc, mtu);
        if let Some(cm) = &self.cm {
            self.mtu = self.mtu.max(cm.mtu);
            self.tx.local.hw.flags |= HwAddr::FLAG_CONNECTED_MODE;
        }
    }

    /// Joins all-nodes and the solicited-node group of each IPv6 address
    /// (RFC 4861 7.2.1), each MGID once.
    fn join_ipv6_groups(&mut self) -> Result<(), IpoibError> {
        self.ipv6_groups.clear();
        let mut groups = [
            IPV6_LINK_LOCAL_ALL_NODES,
            solicited_node(self.tx.local.link_local),
            IPV6_LINK_LOCAL_ALL_NODES,
        ];
        if let Some(cidr) = self.tx.config.ipv6 {
            groups[2] = solicited_node(cidr.address());
        }
        for group in groups {
            let mgid = ipv6_multicast_mgid(self.port.pkey, group);
            if !self.ipv6_groups.contains(&mgid) && self.ipv6_groups.push(mgid).is_ok() {
                self.hca.attach_mcast(mgid)?;
            }
        }
        Ok(())
    }

    pub fn link(&self) -> LinkState {
        self.link
    }

    /// The IP MTU: the IB MTU less the 4-byte IPoIB header, or in connected
    /// mode the connected MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Receive slots the device posts: how many segments can be in flight
    /// towards it before the fabric has nowhere to put the next one.
    pub fn rx_slots(&self) -> usize {
        self.rx_slots
    }

    /// This interface's hardware address.
    pub fn hw_addr(&self) -> HwAddr {
        self.tx.local.hw
    }

    pub fn ipv4_addr(&self) -> Ipv4Address {
        self.tx.config.address.address()
    }

    /// The IPv6 link-local address: `fe80::/64` and the interface
    /// identifier from the port GUID (RFC 4391 section 8).
    pub fn ipv6_link_local(&self) -> Ipv6Address {
        self.tx.local.link_local
    }

    /// The configured IPv6 address and prefix, if any.
    pub fn ipv6_addr(&self) -> Option<Ipv6Cidr> {
        self.tx.config.ipv6
    }

    /// This interface's address and subnet.
    pub fn ipv4_cidr(&self) -> Ipv4Cidr {
        self.tx.config.address
    }

    /// Gives the interface a new address and gateway (a DHCP lease), or
    /// takes its address away ([`IpoibConfig::unconfigured`]'s, when a lease
    /// expires). A new address is announced with a gratuitous ARP if the
    /// link is up; what was learned about neighbours stays.
    pub fn set_ipv4(&mut self, address: Ipv4Cidr, gateway: Option<Ipv4Address>) {
        let changed = self.tx.config.address != address;
        self.tx.config.address = address;
        self.tx.config.gateway = gateway;
        if changed
            && self.tx.config.is_configured()
            && self.tx.config.announce
            && self.link == LinkState::Up
        {
            self.send_gratuitous_arp();
        }
    }

    pub fn stats(&self) -> IpoibStats {
        #[allow(unused_mut)]
        let mut stats = self.tx.stats;
        #[cfg(feature = "alloc")]
        {
            let (full6, full4) = (stats.frag6.queue_full, stats.frag4.queue_full);
            stats.frag6 = self.rx.reassembly.stats;
            stats.frag6.queue_full = full6;
            stats.frag4 = self.rx.reassembly.stats4;
            stats.frag4.queue_full = full4;
            if let Some(cm) = &self.cm {
                stats.cm = cm.stats;
            }
        }
        stats
    }

    pub fn hca(&self) -> &H {
        &self.hca
    }

    pub fn hca_mut(&mut self) -> &mut H {
        &mut self.hca
    }

    pub fn capture_mut(&mut self) -> &mut C {
        &mut self.capture
    }

    /// The next time [`service`](Self::service) has timer work.
    pub fn poll_at(&self) -> Option<Instant> {
        let pending = self.tx.pending.iter().map(|p| p.deadline).min();
        #[cfg(feature = "alloc")]
        let pending = match (pending, self.rx.reassembly.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        #[cfg(feature = "alloc")]
        let pending = match (pending, self.cm.as_ref().and_then(|cm| cm.next_idle())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self.tx.neighbours.next_timer(), pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles completions and timers, sends ARP, and posts everything
    /// queued. Returns true if it did anything.
    pub fn service(&mut self, now: Instant) -> Result<bool, IpoibError> {
        self.tx.now = now;
        let mut progress = false;
        for _ in 0..POLL_BUDGET {
            if self.rx.whole_full() {
                // Back-pressure: the next fragment could complete a datagram
                // with nowhere to go. smoltcp takes the queued ones first.
                progress = true;
                break;
            }
            match self.hca.poll_cq() {
                Ok(Some(c)) => {
                    progress = true;
                    self.on_completion(c)?;
                }
                Ok(None) => break,
                Err(e) => {
                    self.link = LinkState::Down;
                    return Err(e.into());
                }
            }
        }
        #[cfg(feature = "alloc")]
        match self.service_cm() {
            Ok(p) => progress |= p,
            Err(e) => {
                self.link = LinkState::Down;
                return Err(e.into());
            }
        }
        self.run_timers();
        let hca = &mut self.hca;
        self.tx
            .paths
            .request_unasked(|gid| hca.resolve(*gid).is_ok());
        while let Some(h) = self.tx.stale_handles.pop() {
            let _ = self.hca.release_dest(h);
        }
        let before = self.tx.ready.len();
        self.tx.retry_pending(&[]);
        progress |= self.tx.ready.len() != before || !self.rx.repost.is_empty();
        self.flush()?;
        Ok(progress)
    }

    fn run_timers(&mut self) {
        #[cfg(feature = "alloc")]
        self.rx.reassembly.expire(self.tx.now);
        let mut requests: Vec<IpAddress, NEIGHBOURS> = Vec::new();
        let mut failed: Vec<IpAddress, NEIGHBOURS> = Vec::new();
        let timers = self.tx.config.timers;
        self.tx
            .neighbours
            .poll(self.tx.now, &timers, |event| match event {
                NeighEvent::SendRequest(ip) => {
                    let _ = requests.push(ip);
                }
                NeighEvent::Failed(ip) => {
                    let _ = failed.push(ip);
                }
            });
        for ip in &requests {
            match *ip {
                IpAddress::Ipv4(ip) => self.send_arp_request(ip),
                IpAddress::Ipv6(ip) => self.send_solicit(ip),
            }
        }
        if !failed.is_empty() {
            for ip in &failed {
                match ip {
                    IpAddress::Ipv4(_) => self.tx.stats.arp.failures += 1,
                    IpAddress::Ipv6(_) => self.tx.stats.nd.failures += 1,
                }
            }
            self.tx.retry_pending(&failed);
        }
    }

    /// Posts received slots back and queued sends out, then rings one
    /// doorbell for the batch.
    pub fn flush(&mut self) -> Result<(), IpoibError> {
        if self.link != LinkState::Down {
            while let Some(slot) = self.rx.repost.pop() {
                if let Err(e) = self.hca.post_recv(slot) {
                    let _ = self.rx.idle.push(e.slot);
                    return Err(e.error.into());
                }
            }
        }
        while let Some(ready) = self.tx.ready.pop_front() {
            let len = usize::from(ready.len);
            {
                let mut buffers = self.hca.buffers();
                let data = buffers.tx.slot_mut(&ready.slot);
                self.capture
                    .transmitted(self.tx.now, &ready.hw, data.get(..len).unwrap_or(&[]));
            }
            match self.hca.post_send(ready.slot, len, &ready.dest) {
                Ok(()) => {
                    self.tx.stats.tx_packets += 1;
                    self.tx.stats.tx_bytes += len as u64;
                }
                Err(e) => {
                    self.tx.stats.tx_drops.send_error += 1;
                    self.tx.release(e.slot);
                    return Err(e.error.into());
                }
            }
        }
        #[cfg(feature = "alloc")]
        self.flush_cm();
        self.hca.flush()?;
        Ok(())
    }

    /// Asks for an interrupt on the next completion. Returns true if work is
    /// already waiting, so the caller must not sleep.
    pub fn arm(&mut self) -> Result<bool, IpoibError> {
        #[cfg(feature = "alloc")]
        let cm_ready = self.cm.as_ref().is_some_and(|cm| !cm.rx.is_empty());
        #[cfg(not(feature = "alloc"))]
        let cm_ready = false;
        Ok(self.hca.arm_cq()? || !self.rx.ready.is_empty() || self.rx.has_whole() || cm_ready)
    }

    fn on_completion(&mut self, completion: Completion) -> Result<(), IpoibError> {
        match completion {
            Completion::Send { slot, status } => {
                match status {
                    WcStatus::Success | WcStatus::Flushed => {}
                    WcStatus::LocalLength => self.tx.stats.tx_drops.oversize += 1,
                    _ => self.tx.stats.tx_drops.send_error += 1,
                }
                self.tx.release(slot);
            }
            Completion::Recv { slot, status, info } => self.on_receive(slot, status, info),
            Completion::Mcast {
                mgid,
                attach,
                result,
            } => {
                if attach && self.ipv6_groups.contains(&mgid) {
                    match result {
                        Ok(()) => self.tx.stats.nd.groups_joined += 1,
                        Err(e) => {
                            self.tx.stats.nd.join_failures += 1;
                            log::warn!("ipoib: joining IPv6 group {mgid} failed: {e:?}");
                        }
                    }
                } else if mgid == self.broadcast_mgid {
                    if attach {
                        match result {
                            Ok(()) => self.hca.resolve(mgid)?,
                            Err(e) => {
                                log::error!("ipoib: joining {mgid} failed: {e:?}");
                                self.link = LinkState::Failed;
                                return Err(IpoibError::Join(e));
                            }
                        }
                    }
                } else if !self.ipv6_groups.contains(&mgid) {
                    self.on_group_completion(mgid, attach, result);
                }
            }
            Completion::Path { dgid, result } => {
                if dgid == self.broadcast_mgid && self.link == LinkState::Joining {
                    match result {
                        Ok(handle) => self.broadcast_up(handle),
                        Err(e) => {
                            log::error!("ipoib: no path to the broadcast group: {e:?}");
                            self.link = LinkState::Failed;
                            return Err(IpoibError::Join(McastError::NoResources));
                        }
                    }
                } else {
                    self.tx.stats.arp.path_resolutions += 1;
                    let now = self.tx.now;
                    let timers = self.tx.config.timers;
                    if let Some(stale) =
                        self.tx
                            .paths
                            .resolved(&dgid, result.map_err(|_| ()), now, &timers)
                    {
                        let _ = self.hca.release_dest(stale);
                    }
                }
            }
            Completion::PortChanged => self.port = self.hca.port_attr(),
        }
        Ok(())
    }

    fn broadcast_up(&mut self, handle: verbs_shim::DestHandle) {
        self.tx.local.broadcast = Some((handle, HwAddr::multicast(self.broadcast_mgid)));
        self.link = LinkState::Up;
        log::info!("ipoib: joined broadcast group {}", self.broadcast_mgid);
        if self.tx.config.announce && self.tx.config.is_configured() {
            self.send_gratuitous_arp();
        }
    }
}

impl<H: Hca, C: Capture> fmt::Debug for IpoibDevice<H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpoibDevice")
            .field("link", &self.link)
            .field("hw", &self.tx.local.hw)
            .field("mtu", &self.mtu)
            .finish()
    }
}
