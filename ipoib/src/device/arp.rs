//! ARP for IPoIB (RFC 4391 section 8): answering requests, learning from
//! requests and replies, and sending requests and announcements.

use smoltcp::wire::Ipv4Address;
use verbs_shim::{Gid, Hca, Qpn};

use super::tx::Target;
use super::{DatagramSource, IpoibDevice};
use crate::capture::Capture;
use crate::wire::{
    encap, ArpOperation, ArpPacket, ArpRepr, EncapPacket, EncapRepr, EtherType, HwAddr,
};

/// IPoIB header plus a 56-byte ARP packet.
const ARP_FRAME_LEN: usize = encap::HEADER_LEN + 56;

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    /// Acts on a received ARP packet. It is believed only if its sender
    /// hardware address is the datagram's real `source` (RFC 4391 leaves
    /// this unchecked; a guest that lies about its QPN or GID could
    /// otherwise redirect another address's traffic to itself).
    pub(super) fn on_arp(&mut self, arp: &ArpRepr, source: &DatagramSource) {
        if !source.agrees_with(&arp.source_hw) {
            self.tx.stats.rx_drops.arp_spoofed += 1;
            log::debug!(
                "ipoib: dropped an ARP from qpn {:#x} claiming {}",
                source.qpn.get(),
                arp.source_hw
            );
            return;
        }
        let own_ip = self.ipv4_addr();
        let own_hw = self.tx.local.hw;
        let now = self.tx.now;
        let timers = self.tx.config.timers;
        if arp.source_ip == own_ip {
            if arp.source_hw.gid != own_hw.gid || arp.source_hw.qpn != own_hw.qpn {
                log::warn!("ipoib: {own_ip} is also claimed by {}", arp.source_hw);
            }
            return;
        }
        // Without an address (waiting for DHCP) nothing is for us; an ARP
        // probe's target 0.0.0.0 must not be answered.
        let for_us = arp.target_ip == own_ip && !own_ip.is_unspecified();
        let stats = &mut self.tx.stats.arp;
        match arp.operation {
            ArpOperation::Request => stats.requests_received += 1,
            ArpOperation::Reply => stats.replies_received += 1,
            ArpOperation::Unknown(_) => {
                self.tx.stats.rx_drops.malformed += 1;
                return;
            }
        }
        // Only the QPN and GID matter for sending; drop capability flags.
        let sender = HwAddr::new(arp.source_hw.qpn, arp.source_hw.gid);
        if sender.gid.is_multicast() || sender.qpn == Qpn::MULTICAST {
            self.tx.stats.rx_drops.malformed += 1;
            return;
        }
        if self
            .tx
            .neighbours
            .learn(arp.source_ip.into(), sender, now, &timers, for_us)
        {
            self.tx.stats.arp.learned += 1;
        }
        if for_us && arp.operation == ArpOperation::Request {
            let reply = ArpRepr {
                operation: ArpOperation::Reply,
                source_hw: own_hw,
                source_ip: own_ip,
                target_hw: sender,
                target_ip: arp.source_ip,
            };
            if self.send_arp(&reply, Target::Hw(sender)) {
                self.tx.stats.arp.replies_sent += 1;
            }
        }
    }

    pub(super) fn send_arp_request(&mut self, target_ip: Ipv4Address) {
        let request = ArpRepr {
            operation: ArpOperation::Request,
            source_hw: self.tx.local.hw,
            source_ip: self.ipv4_addr(),
            target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
            target_ip,
        };
        if self.send_arp(&request, Target::Broadcast) {
            self.tx.stats.arp.requests_sent += 1;
        }
    }

    /// Announces our address: a request for ourselves, to everyone.
    pub(super) fn send_gratuitous_arp(&mut self) {
        let own_ip = self.ipv4_addr();
        let announce = ArpRepr {
            operation: ArpOperation::Request,
            source_hw: self.tx.local.hw,
            source_ip: own_ip,
            target_hw: HwAddr::new(Qpn::new_truncated(0), Gid::ZERO),
            target_ip: own_ip,
        };
        if self.send_arp(&announce, Target::Broadcast) {
            self.tx.stats.arp.gratuitous_sent += 1;
        }
    }

    /// Builds an ARP frame in a free slot and queues it. Returns false if no
    /// slot was free; the ARP timers try again later.
    fn send_arp(&mut self, arp: &ArpRepr, target: Target) -> bool {
        let Some(slot) = self.tx.free.pop() else {
            return false;
        };
        let mut buffers = self.hca.buffers();
        let Some(frame) = buffers.tx.slot_mut(&slot).get_mut(..ARP_FRAME_LEN) else {
            self.tx.release(slot);
            return false;
        };
        let mut packet = EncapPacket::new_unchecked(&mut *frame);
        let header = EncapRepr {
            ethertype: EtherType::Arp,
        };
        let ok = header.emit(&mut packet).is_ok()
            && arp
                .emit(&mut ArpPacket::new_unchecked(packet.payload_mut()))
                .is_ok();
        if !ok {
            self.tx.release(slot);
            return false;
        }
        self.tx.submit(slot, ARP_FRAME_LEN as u16, target);
        true
    }
}
