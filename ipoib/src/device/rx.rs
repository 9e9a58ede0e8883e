//! Received packets: validation, loop filtering, capture, and the split
//! between ARP and IPv6 neighbour discovery (handled here) and IP (queued
//! for smoltcp).

use verbs_shim::{Gid, Hca, Qpn, RecvInfo, RxSlot, WcStatus, GRH_LEN};

use super::nd::{self, Ipv6Class, NdRx};
use super::{DatagramSource, IpoibDevice, RxReady, RX_PAYLOAD};
use crate::capture::Capture;
use crate::wire::{grh, ArpPacket, ArpRepr, EncapPacket, EtherType};

/// A message the device itself acts on.
enum Control {
    Arp(ArpRepr),
    Nd(NdRx),
}

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    pub(super) fn on_receive(&mut self, slot: RxSlot, status: WcStatus, info: RecvInfo) {
        match self.take_packet(slot, status, info) {
            Some((Control::Arp(arp), source)) => self.on_arp(&arp, &source),
            Some((Control::Nd(nd), source)) => self.on_nd(&nd, &source),
            None => {}
        }
    }

    /// Validates and sorts one packet. Returns a parsed ARP or neighbour
    /// discovery message for the caller to act on once the slot buffers are
    /// no longer borrowed, with the datagram's real source.
    fn take_packet(
        &mut self,
        slot: RxSlot,
        status: WcStatus,
        info: RecvInfo,
    ) -> Option<(Control, DatagramSource)> {
        let Self {
            hca,
            capture,
            rx,
            tx,
            port,
            ..
        } = self;
        if status == WcStatus::Flushed {
            let _ = rx.idle.push(slot);
            return None;
        }
        let drops = &mut tx.stats.rx_drops;
        if status != WcStatus::Success {
            drops.error_status += 1;
            let _ = rx.repost.push(slot);
            return None;
        }
        let area = hca.buffers().rx;
        let data = area.slot(&slot);
        let len = (info.byte_len as usize).min(data.len());
        let Some(data) = data.get(..len).filter(|d| d.len() >= RX_PAYLOAD) else {
            drops.malformed += 1;
            let _ = rx.repost.push(slot);
            return None;
        };
        let (grh, packet) = data.split_at(GRH_LEN);
        let grh: &[u8; GRH_LEN] = match grh.try_into() {
            Ok(g) => g,
            Err(_) => {
                drops.malformed += 1;
                let _ = rx.repost.push(slot);
                return None;
            }
        };
        if is_own_packet(port.qpn, port.gid, &info, grh) {
            drops.looped += 1;
            let _ = rx.repost.push(slot);
            return None;
        }
        let source = DatagramSource {
            qpn: info.src_qpn,
            gid: info.grh_present.then(|| grh::source_gid(grh)).flatten(),
        };
        capture.received(tx.now, grh, packet);
        let Ok(encap) = EncapPacket::new_checked(packet) else {
            drops.malformed += 1;
            let _ = rx.repost.push(slot);
            return None;
        };
        let ethertype = match encap.ethertype() {
            EtherType::Ipv6 => {
                // The slot is memory the back end can still write: anything
                // the device parses itself (a length field read twice) is
                // parsed from a private copy, as smoltcp's packets are.
                let payload = encap.payload();
                let kind = nd::peek(payload);
                if kind == nd::Ipv6Kind::Stack {
                    EtherType::Ipv6
                } else {
                    let n = payload.len().min(rx.copy.len());
                    rx.copy[..n].copy_from_slice(&payload[..n]);
                    let _ = rx.repost.push(slot);
                    let packet = &rx.copy[..n];
                    match kind {
                        nd::Ipv6Kind::Fragment => {
                            #[cfg(feature = "alloc")]
                            if let Some(whole) = rx.reassembly.push(packet, tx.now) {
                                if rx.whole.push_back((whole, source)).is_err() {
                                    tx.stats.frag6.queue_full += 1;
                                }
                            }
                            // Without `alloc` there is no reassembly: the
                            // fragment is counted and dropped.
                            #[cfg(not(feature = "alloc"))]
                            {
                                let _ = packet;
                                tx.stats.frag6.fragments += 1;
                            }
                            return None;
                        }
                        _ => match nd::classify(packet) {
                            Ipv6Class::Nd(nd) => return Some((Control::Nd(nd), source)),
                            Ipv6Class::Malformed => {
                                tx.stats.rx_drops.malformed += 1;
                                return None;
                            }
                        },
                    }
                }
            }
            EtherType::Ipv4 if is_ipv4_fragment(encap.payload()) => {
                // Parsed from a private copy, like IPv6's: the back end can
                // still write the slot.
                let payload = encap.payload();
                let n = payload.len().min(rx.copy.len());
                rx.copy[..n].copy_from_slice(&payload[..n]);
                let _ = rx.repost.push(slot);
                #[cfg(feature = "alloc")]
                if let Some(whole) = rx.reassembly.push(&rx.copy[..n], tx.now) {
                    if rx.whole.push_back((whole, source)).is_err() {
                        tx.stats.frag4.queue_full += 1;
                    }
                }
                // Without `alloc` there is no reassembly: counted, dropped.
                #[cfg(not(feature = "alloc"))]
                {
                    tx.stats.frag4.fragments += 1;
                }
                return None;
            }
            other => other,
        };
        match ethertype {
            EtherType::Ipv4 | EtherType::Ipv6 => {
                let end = len as u16;
                if rx.ready.push_back(RxReady { slot, end, source }).is_err() {
                    // Cannot happen: the queue holds every slot. Recycle anyway.
                    tx.stats.rx_drops.queue_full += 1;
                } else {
                    tx.stats.rx_packets += 1;
                    tx.stats.rx_bytes += (len - RX_PAYLOAD) as u64;
                }
            }
            EtherType::Arp => {
                let parsed =
                    ArpPacket::new_checked(encap.payload()).and_then(|p| ArpRepr::parse(&p));
                let _ = rx.repost.push(slot);
                match parsed {
                    Ok(arp) => return Some((Control::Arp(arp), source)),
                    Err(_) => tx.stats.rx_drops.malformed += 1,
                }
            }
            _ => {
                tx.stats.rx_drops.unknown_ethertype += 1;
                let _ = rx.repost.push(slot);
            }
        }
        None
    }
}

/// True if `packet` is an IPv4 fragment (more fragments follow, or its
/// offset is not 0): the device reassembles it, so that every drop is
/// counted (`IpoibStats::frag4`).
fn is_ipv4_fragment(packet: &[u8]) -> bool {
    packet.first().map(|b| b >> 4) == Some(4)
        && packet
            .get(6..8)
            .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0)
}

/// True if a received packet is one this port sent itself (a multicast
/// copy looped back): it comes from our QPN and, when the HCA says the GRH
/// area is valid, from our GID. The source GID is read with
/// [`grh::source_gid`], which knows both layouts of the 40-byte area (a GRH,
/// or a RoCEv2 IPv4 header in bytes 20..40); an area it cannot read is not
/// ours.
fn is_own_packet(qpn: Qpn, gid: Gid, info: &RecvInfo, grh_area: &[u8; GRH_LEN]) -> bool {
    info.src_qpn == qpn && (!info.grh_present || grh::source_gid(grh_area) == Some(gid))
}

#[cfg(test)]
mod tests {
    use verbs_shim::{Lid, PKey};

    use super::*;

    const QPN: Qpn = Qpn::new_truncated(0x48);

    fn info(src_qpn: Qpn, grh_present: bool) -> RecvInfo {
        RecvInfo {
            byte_len: 100,
            src_qpn,
            src_lid: Lid(1),
            pkey: PKey::DEFAULT,
            grh_present,
            multicast: true,
        }
    }

    /// A GRH (IP version 6) with source GID `sgid`.
    fn grh_area(sgid: Gid) -> [u8; GRH_LEN] {
        let mut area = [0u8; GRH_LEN];
        area[0] = 0x60;
        area[8..24].copy_from_slice(&sgid.0);
        area[24] = 0xff;
        area
    }

    /// RoCEv2 over IPv4: 20 undefined bytes, then an IPv4 header from
    /// `source`. The undefined bytes are filled with what would look like
    /// a GID at 8..24, to catch a reader of the wrong layout.
    fn rocev2_ipv4_area(source: [u8; 4], junk: Gid) -> [u8; GRH_LEN] {
        let mut area = [0u8; GRH_LEN];
        area[8..24].copy_from_slice(&junk.0);
        area[20] = 0x45;
        area[29] = 17;
        area[32..36].copy_from_slice(&source);
        area[36..40].copy_from_slice(&[239, 1, 2, 3]);
        area
    }

    fn mapped(ip: [u8; 4]) -> Gid {
        let mut g = [0u8; 16];
        g[10] = 0xff;
        g[11] = 0xff;
        g[12..].copy_from_slice(&ip);
        Gid(g)
    }

    #[test]
    fn loop_check_on_a_grh() {
        let own = Gid::from_parts(0xfe80 << 48, 2);
        let other = Gid::from_parts(0xfe80 << 48, 3);
        assert!(is_own_packet(QPN, own, &info(QPN, true), &grh_area(own)));
        // Same QPN on another port: not ours.
        assert!(!is_own_packet(QPN, own, &info(QPN, true), &grh_area(other)));
        let other_qpn = Qpn::new_truncated(0x49);
        assert!(!is_own_packet(
            QPN,
            own,
            &info(other_qpn, true),
            &grh_area(own)
        ));
        // Without a GRH only the QPN can tell.
        assert!(is_own_packet(QPN, own, &info(QPN, false), &[0; GRH_LEN]));
    }

    #[test]
    fn loop_check_on_rocev2_over_ipv4() {
        let own = mapped([10, 0, 2, 15]);
        let other = mapped([10, 0, 2, 16]);
        // Our own address in the IPv4 header: ours, whatever bytes 8..24 say.
        let area = rocev2_ipv4_area([10, 0, 2, 15], other);
        assert!(is_own_packet(QPN, own, &info(QPN, true), &area));
        // Another host with the same QPN, even if the undefined bytes happen
        // to hold our GID: not ours.
        let area = rocev2_ipv4_area([10, 0, 2, 16], own);
        assert!(!is_own_packet(QPN, own, &info(QPN, true), &area));
        assert!(is_own_packet(QPN, other, &info(QPN, true), &area));
        // An area in neither layout is not ours.
        let mut junk = [0u8; GRH_LEN];
        junk[8..24].copy_from_slice(&own.0);
        assert!(!is_own_packet(QPN, own, &info(QPN, true), &junk));
    }
}
