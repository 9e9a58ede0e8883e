//! Received packets: validation, loop filtering, capture, and the split
//! between ARP (handled here) and IPv4 (queued for smoltcp).

use verbs_shim::{Hca, RecvInfo, RxSlot, WcStatus, GRH_LEN};

use super::{DatagramSource, IpoibDevice, RxReady, RX_PAYLOAD};
use crate::capture::Capture;
use crate::wire::{grh, ArpPacket, ArpRepr, EncapPacket, EtherType};

impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    pub(super) fn on_receive(&mut self, slot: RxSlot, status: WcStatus, info: RecvInfo) {
        if let Some((arp, source)) = self.take_packet(slot, status, info) {
            self.on_arp(&arp, &source);
        }
    }

    /// Validates and sorts one packet. Returns a parsed ARP packet for the
    /// caller to act on once the slot buffers are no longer borrowed, with
    /// the datagram's real source.
    fn take_packet(
        &mut self,
        slot: RxSlot,
        status: WcStatus,
        info: RecvInfo,
    ) -> Option<(ArpRepr, DatagramSource)> {
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
        let from_self = info.src_qpn == port.qpn && (!info.grh_present || grh[8..24] == port.gid.0);
        if from_self {
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
        match encap.ethertype() {
            EtherType::Ipv4 => {
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
                    Ok(arp) => return Some((arp, source)),
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
