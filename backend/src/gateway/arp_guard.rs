//! Port security for what the gateway itself learns: its `ipoib` device
//! learns neighbours from every ARP it receives, so an ARP that claims a
//! seat's address (`ip=`) must come from that seat's port, or the device
//! never sees it.
//!
//! [`ArpGuard`] is a provider in front of the gateway's port: it looks at
//! each successful receive before passing the completion on, and an ARP
//! whose sender address the [`SeatDirectory`] does not believe from the
//! datagram's real source (its QPN and GRH source GID, which the sender
//! cannot choose) is dropped there: the slot is posted again at once and
//! counted ([`ArpGuard::dropped`]). A seat without `ip=` can then no longer
//! talk the gateway into sending a seat's traffic to it.
//!
//! IPv6 neighbour discovery gets the same treatment for seats with `ip6=`:
//! a solicitation whose source, or an advertisement whose source or target,
//! is a seat's `ip6=` must come from that seat's port
//! ([`ArpGuard::dropped_nd`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipoib::wire::nd::{TYPE_ADVERT, TYPE_SOLICIT};
use ipoib::wire::{grh, ArpPacket, ArpRepr, EncapPacket, EtherType};
use ipoib::DatagramSource;
use smoltcp::wire::{IpProtocol, Ipv6Packet};
use verbs_shim::{
    Completion, DestHandle, Gid, Hca, HcaError, PortAttr, PostError, RecvInfo, RxSlot, RxSlots,
    SlotBuffers, SlotLayout, TxSlot, TxSlots, UdDest, Verbs, WcStatus, GRH_LEN,
};

use crate::port_security::SeatDirectory;

/// Most ARP packets one `poll_cq` call drops before it returns.
const MAX_DROPS_PER_POLL: usize = 64;

/// The gateway's port, with ARP checked against the seat directory.
pub struct ArpGuard<H> {
    inner: H,
    directory: Option<Arc<SeatDirectory>>,
    dropped: u64,
    dropped_nd: u64,
}

/// The address a dropped packet claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    Arp(Ipv4Addr),
    Nd(Ipv6Addr),
}

impl<H: Hca> ArpGuard<H> {
    /// `directory: None` lets everything through.
    pub fn new(inner: H, directory: Option<Arc<SeatDirectory>>) -> ArpGuard<H> {
        ArpGuard {
            inner,
            directory,
            dropped: 0,
            dropped_nd: 0,
        }
    }

    pub fn set_directory(&mut self, directory: Option<Arc<SeatDirectory>>) {
        self.directory = directory;
    }

    /// ARP packets dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Neighbour solicitations and advertisements dropped so far.
    pub fn dropped_nd(&self) -> u64 {
        self.dropped_nd
    }

    pub fn inner(&self) -> &H {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut H {
        &mut self.inner
    }

    /// The address a received ARP or neighbour discovery message claims
    /// that the directory does not believe from where it came; `None` for
    /// everything else.
    fn spoofed(&mut self, slot: &RxSlot, info: &RecvInfo) -> Option<Claim> {
        let directory = self.directory.as_deref()?;
        let area = self.inner.buffers().rx;
        let data = area.slot(slot);
        let data = data.get(..(info.byte_len as usize).min(data.len()))?;
        arp_spoof(directory, data, info)
            .map(Claim::Arp)
            .or_else(|| nd_spoof(directory, data, info).map(Claim::Nd))
    }
}

/// `data` is a receive buffer (GRH area first) of a datagram described by
/// `info`. If it holds an ARP whose sender address `directory` does not
/// admit from the datagram's real source, returns that address.
pub fn arp_spoof(directory: &SeatDirectory, data: &[u8], info: &RecvInfo) -> Option<Ipv4Addr> {
    let area: &[u8; GRH_LEN] = data.get(..GRH_LEN)?.try_into().ok()?;
    let encap = EncapPacket::new_checked(data.get(GRH_LEN..)?).ok()?;
    if encap.ethertype() != EtherType::Arp {
        return None;
    }
    // Malformed ARP is the device's to count and drop.
    let arp = ArpPacket::new_checked(encap.payload())
        .and_then(|p| ArpRepr::parse(&p))
        .ok()?;
    let sender = Ipv4Addr::from(arp.source_ip.octets());
    let source = DatagramSource {
        qpn: info.src_qpn,
        gid: info.grh_present.then(|| grh::source_gid(area)).flatten(),
    };
    (!directory.admits(sender, &source)).then_some(sender)
}

/// `data` is a receive buffer (GRH area first) of a datagram described by
/// `info`. If it holds an IPv6 neighbour solicitation whose source, or an
/// advertisement whose source or target, `directory` does not admit from
/// the datagram's real source, returns that address.
pub fn nd_spoof(directory: &SeatDirectory, data: &[u8], info: &RecvInfo) -> Option<Ipv6Addr> {
    let area: &[u8; GRH_LEN] = data.get(..GRH_LEN)?.try_into().ok()?;
    let encap = EncapPacket::new_checked(data.get(GRH_LEN..)?).ok()?;
    if encap.ethertype() != EtherType::Ipv6 {
        return None;
    }
    // Malformed messages are the device's to count and drop.
    let ip = Ipv6Packet::new_checked(encap.payload()).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    let icmp = ip.payload();
    let mut claims = [None, None];
    match icmp.first() {
        Some(&TYPE_SOLICIT) => claims[0] = Some(ip.src_addr()),
        Some(&TYPE_ADVERT) => {
            claims[0] = Some(ip.src_addr());
            let target: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
            claims[1] = Some(target.into());
        }
        _ => return None,
    }
    let source = DatagramSource {
        qpn: info.src_qpn,
        gid: info.grh_present.then(|| grh::source_gid(area)).flatten(),
    };
    claims
        .into_iter()
        .flatten()
        .map(|a| Ipv6Addr::from(a.octets()))
        .find(|a| !a.is_unspecified() && !directory.admits6(*a, &source))
}

impl<H: Hca> Verbs for ArpGuard<H> {
    fn port_attr(&self) -> PortAttr {
        self.inner.port_attr()
    }
    fn layout(&self) -> SlotLayout {
        self.inner.layout()
    }
    fn take_slots(&mut self) -> Option<(TxSlots, RxSlots)> {
        self.inner.take_slots()
    }
    fn post_send(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
    ) -> Result<(), PostError<TxSlot>> {
        self.inner.post_send(slot, len, dest)
    }
    fn post_send_with_head(
        &mut self,
        slot: TxSlot,
        len: usize,
        dest: &UdDest,
        head: &[u8],
    ) -> Result<(), PostError<TxSlot>> {
        self.inner.post_send_with_head(slot, len, dest, head)
    }
    fn post_recv(&mut self, slot: RxSlot) -> Result<(), PostError<RxSlot>> {
        self.inner.post_recv(slot)
    }
    fn flush(&mut self) -> Result<(), HcaError> {
        self.inner.flush()
    }

    /// Drops spoofed ARP before the device sees it: the slot goes straight
    /// back to the receive queue. If that fails, the device gets the slot
    /// back as a failed receive (it counts and reposts it; it never reads
    /// a failed receive's bytes).
    fn poll_cq(&mut self) -> Result<Option<Completion>, HcaError> {
        // Bounded, so a flood cannot keep the gateway here: after that many
        // drops it says "nothing now", and `arm_cq` finds the rest waiting.
        for _ in 0..MAX_DROPS_PER_POLL {
            let Some(c) = self.inner.poll_cq()? else {
                return Ok(None);
            };
            let Completion::Recv {
                slot,
                status: WcStatus::Success,
                info,
            } = c
            else {
                return Ok(Some(c));
            };
            let Some(claimed) = self.spoofed(&slot, &info) else {
                return Ok(Some(Completion::Recv {
                    slot,
                    status: WcStatus::Success,
                    info,
                }));
            };
            match claimed {
                Claim::Arp(ip) => {
                    self.dropped += 1;
                    log::debug!(
                        "gateway: dropped an ARP for {ip} from qpn {:#x}, not that seat's port",
                        info.src_qpn.get()
                    );
                }
                Claim::Nd(ip6) => {
                    self.dropped_nd += 1;
                    log::debug!(
                        "gateway: dropped neighbour discovery for {ip6} from qpn {:#x}, not that seat's port",
                        info.src_qpn.get()
                    );
                }
            }
            if let Err(PostError { slot, error }) = self.inner.post_recv(slot) {
                log::debug!("gateway: cannot repost a receive: {error}");
                return Ok(Some(Completion::Recv {
                    slot,
                    status: WcStatus::General,
                    info,
                }));
            }
        }
        Ok(None)
    }
    fn arm_cq(&mut self) -> Result<bool, HcaError> {
        self.inner.arm_cq()
    }
    fn attach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.inner.attach_mcast(mgid)
    }
    fn detach_mcast(&mut self, mgid: Gid) -> Result<(), HcaError> {
        self.inner.detach_mcast(mgid)
    }
    fn resolve(&mut self, dgid: Gid) -> Result<(), HcaError> {
        self.inner.resolve(dgid)
    }
    fn release_dest(&mut self, handle: DestHandle) -> Result<(), HcaError> {
        self.inner.release_dest(handle)
    }
}

impl<H: Hca> Hca for ArpGuard<H> {
    fn buffers(&mut self) -> SlotBuffers<'_> {
        self.inner.buffers()
    }
    fn peer_faults(&self) -> Option<verbs_shim::PeerFaultCounts> {
        self.inner.peer_faults()
    }
}

#[cfg(test)]
#[path = "arp_guard_tests.rs"]
mod tests;
