//! IPv6 neighbour discovery for IPoIB (RFC 4861 with the link-layer option
//! of RFC 4391 section 9.1), done here as ARP is (smoltcp on `Medium::Ip`
//! does none): answering solicitations for our addresses, learning from
//! solicitations and advertisements, and soliciting the solicited-node
//! group of an address we need. Addresses are static: no duplicate address
//! detection of our own, though a DAD probe for our address is answered.
//!
//! A message's link-layer address is believed only if it is the datagram's
//! real source (QPN and GID), as for ARP.

use smoltcp::wire::{IpProtocol, Ipv6Address, Ipv6Packet, Ipv6Repr, IPV6_LINK_LOCAL_ALL_NODES};
use verbs_shim::{Hca, Qpn};

use super::tx::Target;
use super::{DatagramSource, IpoibDevice};
use crate::capture::Capture;
use crate::wire::ipv6::solicited_node;
use crate::wire::{encap, ipv6_multicast_mgid, EncapPacket, EncapRepr, EtherType, HwAddr};
use crate::wire::{NdKind, NdRepr};

/// The IPv6 header's length.
const IPV6_HEADER_LEN: usize = 40;
/// ND messages must arrive with this hop limit (they were not routed).
pub(super) const ND_HOP_LIMIT: u8 = 255;

/// A parsed, checksum-verified NS or NA and its IPv6 addresses.
#[derive(Clone, Copy, Debug)]
pub(super) struct NdRx {
    pub src: Ipv6Address,
    pub dst: Ipv6Address,
    pub repr: NdRepr,
}

/// Whose an IPv6 packet is, by two bytes at fixed offsets (read once, so
/// it can be asked of the slot itself).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ipv6Kind {
    /// smoltcp's.
    Stack,
    /// A fragment: the device reassembles it (`frag6`).
    Fragment,
    /// ICMPv6 type 135 or 136 right after the fixed header: the device's.
    NeighbourDiscovery,
}

/// Sorts an IPv6 packet (the IPoIB payload) by its next header (byte 6)
/// and, for ICMPv6, its type (byte 40).
pub(super) fn peek(packet: &[u8]) -> Ipv6Kind {
    match packet.get(6).copied().map(IpProtocol::from) {
        Some(IpProtocol::Ipv6Frag) => Ipv6Kind::Fragment,
        Some(IpProtocol::Icmpv6) if NdRepr::is_nd(packet.get(IPV6_HEADER_LEN..).unwrap_or(&[])) => {
            Ipv6Kind::NeighbourDiscovery
        }
        _ => Ipv6Kind::Stack,
    }
}

/// A neighbour discovery packet, judged.
pub(super) enum Ipv6Class {
    /// Neighbour discovery, for the device.
    Nd(NdRx),
    /// Neighbour discovery that fails validation (RFC 4861 7.1).
    Malformed,
}

/// Validates an NS or NA (a packet [`peek`] calls neighbour discovery,
/// copied out of its slot): hop limit 255, a good checksum, and a message
/// that parses.
pub(super) fn classify(packet: &[u8]) -> Ipv6Class {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Ipv6Class::Malformed;
    };
    if ip.next_header() != IpProtocol::Icmpv6 || !NdRepr::is_nd(ip.payload()) {
        return Ipv6Class::Malformed;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.hop_limit() != ND_HOP_LIMIT {
        return Ipv6Class::Malformed;
    }
    let Ok(icmp) = smoltcp::wire::Icmpv6Packet::new_checked(ip.payload()) else {
        return Ipv6Class::Malformed;
    };
    if !icmp.verify_checksum(&src, &dst) {
        return Ipv6Class::Malformed;
    }
    match NdRepr::parse(ip.payload()) {
        Ok(repr) => Ipv6Class::Nd(NdRx { src, dst, repr }),
        Err(_) => Ipv6Class::Malformed,
    }
}

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    /// True if `addr` is one of this interface's IPv6 addresses.
    pub fn has_ipv6_addr(&self, addr: Ipv6Address) -> bool {
        addr == self.tx.local.link_local || self.tx.config.ipv6.map(|c| c.address()) == Some(addr)
    }

    /// Acts on a received NS or NA.
    pub(super) fn on_nd(&mut self, nd: &NdRx, source: &DatagramSource) {
        if nd.src.is_multicast() {
            // RFC 4861 7.1: the source is unicast (or, for DAD, unspecified).
            self.tx.stats.rx_drops.malformed += 1;
            return;
        }
        if let Some(lla) = nd.repr.lla {
            if !source.agrees_with(&lla) {
                self.tx.stats.rx_drops.nd_spoofed += 1;
                log::debug!(
                    "ipoib: dropped an ND message from qpn {:#x} claiming {lla}",
                    source.qpn.get()
                );
                return;
            }
            if lla.gid.is_multicast() || lla.qpn == Qpn::MULTICAST {
                self.tx.stats.rx_drops.malformed += 1;
                return;
            }
        }
        match nd.repr.kind {
            NdKind::Solicit => self.on_solicit(nd),
            NdKind::Advert { solicited, .. } => self.on_advert(nd, solicited),
        }
    }

    fn on_solicit(&mut self, nd: &NdRx) {
        self.tx.stats.nd.solicits_received += 1;
        let target = nd.repr.target;
        let for_us = self.has_ipv6_addr(target);
        let lla = nd.repr.lla.map(|hw| hw.as_neighbour());
        if nd.src.is_unspecified() {
            // Duplicate address detection by someone else (RFC 4861 7.2.4):
            // no source link-layer address allowed; the answer goes to all
            // nodes.
            if lla.is_some() {
                self.tx.stats.rx_drops.malformed += 1;
            } else if for_us {
                log::warn!("ipoib: {target} is ours and another node probes for it");
                self.send_advert(target, IPV6_LINK_LOCAL_ALL_NODES, false);
            }
            return;
        }
        if let Some(hw) = lla {
            let (now, timers) = (self.tx.now, self.tx.config.timers);
            if self
                .tx
                .neighbours
                .learn(nd.src.into(), hw, now, &timers, for_us)
            {
                self.tx.stats.nd.learned += 1;
            }
        }
        if for_us {
            self.send_advert(target, nd.src, true);
        }
    }

    fn on_advert(&mut self, nd: &NdRx, solicited: bool) {
        self.tx.stats.nd.adverts_received += 1;
        if solicited && nd.dst.is_multicast() {
            // RFC 4861 7.1.2.
            self.tx.stats.rx_drops.malformed += 1;
            return;
        }
        let target = nd.repr.target;
        if self.has_ipv6_addr(target) {
            log::warn!(
                "ipoib: {target} is also claimed by {}",
                nd.repr.lla.map_or(HwAddr::default(), |h| h)
            );
            return;
        }
        // An advertisement updates an entry; it never creates one (RFC 4861
        // 7.2.5: no entry means nobody asked).
        if let Some(hw) = nd.repr.lla {
            let hw = hw.as_neighbour();
            let (now, timers) = (self.tx.now, self.tx.config.timers);
            if self
                .tx
                .neighbours
                .learn(target.into(), hw, now, &timers, false)
            {
                self.tx.stats.nd.learned += 1;
            }
        }
    }

    /// The source address for messages to `peer`: the link-local address
    /// for a link-local peer (or when there is no other), else the
    /// configured one.
    fn source_for(&self, peer: Ipv6Address) -> Ipv6Address {
        match self.tx.config.ipv6 {
            Some(cidr) if !peer.is_unicast_link_local() => cidr.address(),
            _ => self.tx.local.link_local,
        }
    }

    /// Asks the solicited-node group of `target` for its link-layer address.
    pub(super) fn send_solicit(&mut self, target: Ipv6Address) {
        let group = solicited_node(target);
        let repr = NdRepr {
            kind: NdKind::Solicit,
            target,
            lla: Some(self.tx.local.hw),
        };
        let to = Target::Group(ipv6_multicast_mgid(self.tx.local.pkey, group));
        if self.send_nd(self.source_for(target), group, &repr, to) {
            self.tx.stats.nd.solicits_sent += 1;
        }
    }

    /// Advertises our `target` address to `dst` (a neighbour that asked,
    /// resolved through the cache just filled, or all nodes).
    fn send_advert(&mut self, target: Ipv6Address, dst: Ipv6Address, solicited: bool) {
        let repr = NdRepr {
            kind: NdKind::Advert {
                router: false,
                solicited,
                override_: true,
            },
            target,
            lla: Some(self.tx.local.hw),
        };
        let to = if dst.is_multicast() {
            Target::Group(ipv6_multicast_mgid(self.tx.local.pkey, dst))
        } else {
            Target::Ip(dst.into())
        };
        if self.send_nd(target, dst, &repr, to) {
            self.tx.stats.nd.adverts_sent += 1;
        }
    }

    /// Builds an IPoIB frame with an IPv6 ND message in a free slot and
    /// queues it. Returns false if no slot was free.
    fn send_nd(&mut self, src: Ipv6Address, dst: Ipv6Address, nd: &NdRepr, to: Target) -> bool {
        let Some(slot) = self.tx.free.pop() else {
            return false;
        };
        let payload_len = nd.buffer_len();
        let len = encap::HEADER_LEN + IPV6_HEADER_LEN + payload_len;
        let mut buffers = self.hca.buffers();
        let Some(frame) = buffers.tx.slot_mut(&slot).get_mut(..len) else {
            self.tx.release(slot);
            return false;
        };
        let mut packet = EncapPacket::new_unchecked(&mut *frame);
        let header = EncapRepr {
            ethertype: EtherType::Ipv6,
        };
        let mut ok = header.emit(&mut packet).is_ok();
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len,
            hop_limit: ND_HOP_LIMIT,
        };
        let mut ip_packet = Ipv6Packet::new_unchecked(packet.payload_mut());
        ip.emit(&mut ip_packet);
        ok &= nd.emit(ip_packet.payload_mut(), &src, &dst).is_ok();
        if !ok {
            self.tx.release(slot);
            return false;
        }
        self.tx.submit(slot, len as u16, to);
        true
    }
}
