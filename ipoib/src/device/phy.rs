//! smoltcp's `phy::Device` with zero-copy tokens.
//!
//! RX copies the packet (past the GRH area and the IPoIB header) out of its
//! slot into the device's private buffer, once, and hands smoltcp that copy.
//! Over the guest channel the slot is shared memory the back end can still
//! write, and smoltcp's parsers read a length field more than once (check,
//! then slice): a back end rewriting the slot in between made smoltcp panic
//! (`testkit/tests/rx_slot_rewrites.rs` found it). With the copy, a hostile
//! back end can only change what the packet says, which it is trusted with
//! anyway. See CHANNEL.md, "Trust model".
//! TX lets smoltcp write straight into a TX slot after 4 bytes of headroom.
//! A token is handed out only when its `consume` cannot fail: a TX token
//! already owns its slot.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use verbs_shim::{Hca, RxArea, RxSlot, TxArea, TxSlot};

use super::tx::{DropReason, TxSide};
use super::{DatagramSource, IpoibDevice, LinkState, MAX_SLOTS, RX_COPY, RX_PAYLOAD};
use crate::capture::Capture;
use crate::wire::{encap, EncapPacket, EncapRepr, EtherType};

/// A received IP packet, still in its RX slot.
pub struct RxToken<'a> {
    slot: Option<RxSlot>,
    end: usize,
    source: DatagramSource,
    area: RxArea<'a>,
    repost: &'a mut heapless::Vec<RxSlot, MAX_SLOTS>,
    /// Where the packet is copied before smoltcp sees it.
    copy: &'a mut [u8; RX_COPY],
    /// A reassembled IPv6 datagram, handed over instead of a slot.
    #[cfg(feature = "alloc")]
    whole: Option<alloc::vec::Vec<u8>>,
    /// Where `whole` goes once smoltcp has read it: connected mode's pool
    /// of receive buffers (none for a reassembled datagram).
    #[cfg(feature = "alloc")]
    pool: Option<&'a mut super::cm::RxPool>,
}

/// A TX slot smoltcp may fill (or, for a packet larger than the datagram
/// MTU in connected mode, the connected-mode scratch buffer).
pub struct TxToken<'a> {
    slot: Option<TxSlot>,
    area: TxArea<'a>,
    tx: &'a mut TxSide,
    #[cfg(feature = "alloc")]
    cm: Option<&'a mut super::cm::CmSide>,
}

#[cfg(feature = "alloc")]
impl TxToken<'_> {
    /// Connected mode's path for a packet larger than the datagram MTU:
    /// smoltcp writes it into the connected-mode scratch buffer; it is then
    /// queued for the neighbour's connection if the neighbour does
    /// connected mode, or sent in fragments over UD as any packet above the
    /// datagram MTU (`docs/connected-mode.md` §8). `Err(f)` hands `f` back
    /// when this is not such a packet (or connected mode is off).
    fn consume_big<R, F>(&mut self, len: usize, f: F) -> Result<R, F>
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if len <= self.tx.ip_mtu {
            return Err(f);
        }
        let TxToken { slot, area, tx, cm } = self;
        let Some(cm) = cm.as_mut() else {
            return Err(f);
        };
        // In place, in a free big slot (no copy at flush), when there is
        // one; else in the scratch buffer.
        let frame_len = encap::HEADER_LEN + len;
        if let Some(mut big) = cm.take_big_tx(frame_len) {
            let Some(frame) = cm.frame_in(&mut big, frame_len) else {
                cm.give_back(big);
                return Ok(write_in_scratch(slot, area, tx, cm, len, f));
            };
            let result = f(&mut frame[encap::HEADER_LEN..]);
            let packet = &frame[encap::HEADER_LEN..];
            let ethertype = ethertype_of(packet);
            let hw = tx.route_packet(packet).and_then(|t| tx.unicast_hw(t));
            match hw {
                Some(hw) if hw.flags & crate::wire::HwAddr::FLAG_CONNECTED_MODE != 0 => {
                    let mut header = EncapPacket::new_unchecked(&mut *frame);
                    let _ = EncapRepr { ethertype }.emit(&mut header);
                    cm.queue_slot(big, frame_len, hw);
                    if let Some(slot) = slot.take() {
                        tx.release(slot);
                    }
                }
                _ => {
                    // Not for a connection: fragments over UD, as any
                    // packet above the datagram MTU (rare: a neighbour
                    // without connected mode, or not resolved yet).
                    let packet = packet.to_vec();
                    cm.give_back(big);
                    if let Some(slot) = slot.take() {
                        send_fragments(tx, area, slot, &packet);
                    }
                }
            }
            return Ok(result);
        }
        Ok(write_in_scratch(slot, area, tx, cm, len, f))
    }
}

/// Connected mode's scratch path: smoltcp writes the packet into the
/// scratch buffer, which is queued for the neighbour's connection (copied
/// into a big slot at flush) or sent in fragments over UD.
#[cfg(feature = "alloc")]
fn write_in_scratch<R, F>(
    slot: &mut Option<TxSlot>,
    area: &mut TxArea<'_>,
    tx: &mut TxSide,
    cm: &mut super::cm::CmSide,
    len: usize,
    f: F,
) -> R
where
    F: FnOnce(&mut [u8]) -> R,
{
    let Some(buffer) = cm.scratch(len) else {
        return f(&mut []);
    };
    let result = f(&mut buffer[encap::HEADER_LEN..]);
    let packet = &buffer[encap::HEADER_LEN..];
    let ethertype = ethertype_of(packet);
    let target = tx.route_packet(packet);
    let hw = target.and_then(|t| tx.unicast_hw(t));
    match (hw, slot.take()) {
        (Some(hw), slot) if hw.flags & crate::wire::HwAddr::FLAG_CONNECTED_MODE != 0 => {
            cm.queue(len, ethertype, hw);
            if let Some(slot) = slot {
                tx.release(slot);
            }
        }
        (_, Some(slot)) => send_fragments(tx, area, slot, cm.packet(len)),
        (_, None) => {}
    }
    result
}

/// The MTU the MSS of an outgoing SYN is clamped to: the datagram MTU, or
/// in connected mode the connected MTU unless the neighbour is known not
/// to do connected mode (an unknown one may: its own SYN's MSS and its own
/// clamp keep its side honest).
#[cfg(feature = "alloc")]
#[inline]
fn mss_mtu(cm: Option<&super::cm::CmSide>, tx: &mut TxSide, packet: &[u8]) -> usize {
    let Some(cm) = cm else {
        return tx.ip_mtu;
    };
    let hw = tx.route_packet(packet).and_then(|t| tx.unicast_hw(t));
    match hw {
        Some(hw) if hw.flags & crate::wire::HwAddr::FLAG_CONNECTED_MODE == 0 => tx.ip_mtu,
        _ => cm.mtu,
    }
}

impl RxToken<'_> {
    /// Where the datagram really came from (for a gateway's source checks).
    pub fn source(&self) -> DatagramSource {
        self.source
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        #[cfg(feature = "alloc")]
        if let Some(whole) = self.whole.take() {
            let result = f(&whole);
            if let Some(pool) = self.pool.take() {
                pool.give_back(whole);
            }
            return result;
        }
        let Some(slot) = self.slot.take() else {
            return f(&[]);
        };
        // `end` was checked against the slot when the completion came in; a
        // packet that does not fit the copy (or the slot) is handed over
        // empty, which smoltcp drops.
        let len = self.end.saturating_sub(RX_PAYLOAD);
        let packet: &[u8] = match self.copy.get_mut(..len) {
            Some(copy) => {
                if self.area.copy_out(&slot, RX_PAYLOAD, copy) {
                    copy
                } else {
                    &[]
                }
            }
            None => &[],
        };
        let result = f(packet);
        let _ = self.repost.push(slot);
        result
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let _ = self.repost.push(slot);
        }
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(mut self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        #[cfg(feature = "alloc")]
        let f = match self.consume_big(len, f) {
            Ok(result) => return result,
            Err(f) => f,
        };
        let Some(slot) = self.slot.take() else {
            return f(&mut []);
        };
        #[cfg(feature = "alloc")]
        if len > self.tx.ip_mtu {
            return self.consume_fragmented(slot, len, f);
        }
        let buffer = self.area.slot_mut(&slot);
        // The MTU we report keeps `len` within the slot (larger packets
        // were fragmented above).
        let end = (encap::HEADER_LEN + len).min(buffer.len());
        let frame = &mut buffer[..end];
        let result = f(&mut frame[encap::HEADER_LEN..]);
        #[cfg(feature = "alloc")]
        if super::frag_tx::maybe_tcp_syn(&frame[encap::HEADER_LEN..]) {
            let mtu = mss_mtu(self.cm.as_deref(), self.tx, &frame[encap::HEADER_LEN..]);
            if super::frag_tx::clamp_mss(&mut frame[encap::HEADER_LEN..], mtu) {
                self.tx.stats.frag_tx.mss_clamped += 1;
            }
        }
        let packet = &frame[encap::HEADER_LEN..];
        let ethertype = ethertype_of(packet);
        let target = self.tx.route_packet(packet);
        // In connected mode a packet for a neighbour whose connection is in
        // use follows the big ones over it, whatever its size.
        #[cfg(feature = "alloc")]
        if let (Some(cm), Some(t)) = (self.cm.as_mut(), target) {
            if let Some(hw) = self.tx.unicast_hw(t) {
                if hw.flags & crate::wire::HwAddr::FLAG_CONNECTED_MODE != 0 {
                    if cm.carries(&hw) && cm.queue_copy(packet, ethertype, hw) {
                        self.tx.release(slot);
                        return result;
                    }
                    // This one goes over UD; the ones after it over RC.
                    cm.prime(hw);
                }
            }
        }
        let mut header = EncapPacket::new_unchecked(&mut *frame);
        let _ = EncapRepr { ethertype }.emit(&mut header);
        match target {
            Some(target) => self.tx.submit(slot, end as u16, target),
            None => self.tx.drop_slot(slot, DropReason::NoRoute),
        }
        result
    }
}

/// The IPoIB EtherType of an IP packet, by its version.
fn ethertype_of(packet: &[u8]) -> EtherType {
    match packet.first().map(|b| b >> 4) {
        Some(6) => EtherType::Ipv6,
        _ => EtherType::Ipv4,
    }
}

#[cfg(feature = "alloc")]
impl TxToken<'_> {
    /// Lets smoltcp write a packet larger than the MTU into a scratch
    /// buffer, then sends it as fragments, the first in this token's slot
    /// and the rest in free slots (keeping [`super::ARP_RESERVE`]). A packet
    /// that cannot be cut, or that needs more slots than are free, is
    /// dropped and counted.
    fn consume_fragmented<R, F>(&mut self, slot: TxSlot, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut scratch = alloc::vec![0u8; len];
        let result = f(&mut scratch);
        send_fragments(self.tx, &mut self.area, slot, &scratch);
        result
    }
}

/// Sends `packet` (an IP packet larger than the MTU) as fragments, the
/// first in `slot` and the rest in free slots (keeping
/// [`super::ARP_RESERVE`]). A packet that cannot be cut, or that needs more
/// slots than are free, is dropped and counted.
#[cfg(feature = "alloc")]
fn send_fragments(tx: &mut TxSide, area: &mut TxArea<'_>, slot: TxSlot, packet: &[u8]) {
    let ident = tx.frag_ident;
    tx.frag_ident = tx.frag_ident.wrapping_add(1);
    let Some(target) = tx.route_packet(packet) else {
        tx.drop_slot(slot, DropReason::NoRoute);
        return;
    };
    let pieces = super::frag_tx::fragments(packet, tx.ip_mtu, ident);
    let room = tx.free.len().saturating_sub(super::ARP_RESERVE) + 1;
    let Some(pieces) = pieces.filter(|p| p.len() <= room) else {
        tx.stats.tx_drops.fragmentation += 1;
        tx.release(slot);
        return;
    };
    let ethertype = ethertype_of(packet);
    tx.stats.frag_tx.datagrams += 1;
    let mut next = Some(slot);
    for piece in &pieces {
        let Some(slot) = next.take().or_else(|| tx.free.pop()) else {
            break;
        };
        let buffer = area.slot_mut(&slot);
        let end = encap::HEADER_LEN + piece.len();
        let Some(frame) = buffer.get_mut(..end) else {
            tx.stats.tx_drops.fragmentation += 1;
            tx.release(slot);
            continue;
        };
        frame[encap::HEADER_LEN..].copy_from_slice(piece);
        let _ = EncapRepr { ethertype }.emit(&mut EncapPacket::new_unchecked(&mut *frame));
        tx.stats.frag_tx.fragments += 1;
        tx.submit(slot, end as u16, target);
    }
}

impl Drop for TxToken<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.tx.release(slot);
        }
    }
}

#[cfg(feature = "alloc")]
impl<H: Hca, C: Capture> IpoibDevice<H, C> {
    /// The tokens for a reassembled datagram (no slot behind it).
    fn whole_tokens(
        &mut self,
        whole: alloc::vec::Vec<u8>,
        source: DatagramSource,
    ) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.owned_tokens(whole, source, Owned::Reassembled)
    }

    /// The tokens for a packet received over connected mode (copied out of
    /// its big slot already).
    fn cm_tokens(
        &mut self,
        packet: alloc::vec::Vec<u8>,
        source: DatagramSource,
    ) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.owned_tokens(packet, source, Owned::Connected)
    }

    /// Tokens for a packet the device owns (no RX slot behind it). Without a
    /// free TX slot the packet goes back to the front of the queue it came
    /// from, `from`, and there are no tokens.
    fn owned_tokens(
        &mut self,
        packet: alloc::vec::Vec<u8>,
        source: DatagramSource,
        from: Owned,
    ) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Some(tx_slot) = self.tx.free.pop() else {
            match from {
                Owned::Reassembled => {
                    let _ = self.rx.whole.push_front((packet, source));
                }
                Owned::Connected => {
                    if let Some(cm) = self.cm.as_mut() {
                        cm.rx.push_front((packet, source));
                    }
                }
            }
            return None;
        };
        let buffers = self.hca.buffers();
        // A connected-mode packet's buffer goes back to the pool after
        // smoltcp read it.
        let pool = match from {
            Owned::Connected => Some(&mut self.rx.cm_pool),
            Owned::Reassembled => None,
        };
        Some((
            RxToken {
                slot: None,
                end: 0,
                source,
                area: buffers.rx,
                repost: &mut self.rx.repost,
                copy: &mut self.rx.copy,
                whole: Some(packet),
                pool,
            },
            TxToken {
                slot: Some(tx_slot),
                area: buffers.tx,
                tx: &mut self.tx,
                cm: self.cm.as_mut(),
            },
        ))
    }
}

/// Where a packet the device owns came from.
#[cfg(feature = "alloc")]
enum Owned {
    /// The queue of reassembled datagrams.
    Reassembled,
    /// Connected mode's queue of received packets.
    Connected,
}

impl<H: Hca, C: Capture> crate::drive::TxRoom for IpoibDevice<H, C> {
    /// Free TX slots for the stack (none while the link is not up), and in
    /// connected mode no more than its queue takes.
    fn tx_room(&self) -> usize {
        if self.link != LinkState::Up {
            return 0;
        }
        let room = self.tx.slots_for_stack();
        #[cfg(feature = "alloc")]
        if let Some(cm) = &self.cm {
            return room.min(cm.room());
        }
        room
    }

    fn tx_room_max(&self) -> usize {
        let room = usize::from(self.hca.layout().tx_count).saturating_sub(super::ARP_RESERVE);
        #[cfg(feature = "alloc")]
        if let Some(cm) = &self.cm {
            return room.min(cm.room_max());
        }
        room
    }
}

impl<H: Hca, C: Capture> phy::Device for IpoibDevice<H, C> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        self.tx.now = timestamp;
        if self.link != LinkState::Up || self.tx.slots_for_stack() == 0 {
            return None;
        }
        #[cfg(feature = "alloc")]
        if let Some((whole, source)) = self.rx.whole.pop_front() {
            return self.whole_tokens(whole, source);
        }
        #[cfg(feature = "alloc")]
        if let Some((packet, source)) = self.cm.as_mut().and_then(|cm| cm.rx.pop_front()) {
            return self.cm_tokens(packet, source);
        }
        let ready = self.rx.ready.pop_front()?;
        let Some(tx_slot) = self.tx.free.pop() else {
            // Checked above; put the packet back if it ever happens.
            let _ = self.rx.ready.push_front(ready);
            return None;
        };
        let buffers = self.hca.buffers();
        Some((
            RxToken {
                slot: Some(ready.slot),
                end: usize::from(ready.end),
                source: ready.source,
                area: buffers.rx,
                repost: &mut self.rx.repost,
                copy: &mut self.rx.copy,
                #[cfg(feature = "alloc")]
                whole: None,
                #[cfg(feature = "alloc")]
                pool: None,
            },
            TxToken {
                slot: Some(tx_slot),
                area: buffers.tx,
                tx: &mut self.tx,
                #[cfg(feature = "alloc")]
                cm: self.cm.as_mut(),
            },
        ))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<TxToken<'_>> {
        self.tx.now = timestamp;
        if self.link != LinkState::Up || self.tx.slots_for_stack() == 0 {
            return None;
        }
        let slot = self.tx.free.pop()?;
        Some(TxToken {
            slot: Some(slot),
            area: self.hca.buffers().tx,
            tx: &mut self.tx,
            #[cfg(feature = "alloc")]
            cm: self.cm.as_mut(),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        // With `alloc` the device fragments what exceeds the IPoIB MTU
        // itself, IPv6 included (frag_tx.rs says why); in connected mode
        // `self.mtu` is the connected MTU, larger still.
        #[cfg(feature = "alloc")]
        let mtu = FRAGMENTED_MTU.max(self.mtu);
        #[cfg(not(feature = "alloc"))]
        let mtu = self.mtu;
        caps.max_transmission_unit = mtu;
        // Bursts larger than the posted receive slots are dropped.
        caps.max_burst_size = Some(self.rx_slots);
        caps.checksum = checksums(self.hca.offloads());
        caps
    }
}

/// The IP MTU reported to smoltcp when the device fragments.
#[cfg(feature = "alloc")]
const FRAGMENTED_MTU: usize = super::frag_tx::MAX_DATAGRAM;

/// IP checksums are ours to make; they are ours to check too unless the
/// provider promises that what it delivers was checked (the sim fabric,
/// whose ICRC check stands for the HCA's). Never offloaded on transmit:
/// nothing on the way fills them in.
fn checksums(offloads: verbs_shim::Offloads) -> ChecksumCapabilities {
    let rx = if offloads.rx_checksums {
        Checksum::Tx
    } else {
        Checksum::Both
    };
    let mut checksum = ChecksumCapabilities::default();
    checksum.ipv4 = rx;
    checksum.tcp = rx;
    checksum.udp = rx;
    checksum.icmpv4 = rx;
    checksum.icmpv6 = rx;
    checksum
}

#[cfg(test)]
mod checksum_tests {
    use super::*;

    #[test]
    fn checksums_are_checked_unless_the_provider_has() {
        let off = checksums(verbs_shim::Offloads::NONE);
        for c in [&off.ipv4, &off.tcp, &off.udp, &off.icmpv4] {
            assert!(c.tx() && c.rx());
        }
        let on = checksums(verbs_shim::Offloads { rx_checksums: true });
        for c in [&on.ipv4, &on.tcp, &on.udp, &on.icmpv4] {
            assert!(c.tx() && !c.rx());
        }
    }
}
