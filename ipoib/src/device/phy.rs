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
use smoltcp::wire::{Ipv4Packet, Ipv6Packet};
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

/// The EtherType of an IP packet and where it goes next.
fn classify(packet: &[u8], tx: &TxSide) -> (EtherType, Option<super::tx::Target>) {
    match packet.first().map(|b| b >> 4) {
        Some(6) => (
            EtherType::Ipv6,
            Ipv6Packet::new_checked(packet)
                .ok()
                .and_then(|ip| tx.route6(ip.dst_addr())),
        ),
        _ => (
            EtherType::Ipv4,
            Ipv4Packet::new_checked(packet)
                .ok()
                .and_then(|ip| tx.route(ip.dst_addr())),
        ),
    }
}

impl TxToken<'_> {
    /// Connected mode's path for a packet larger than the datagram MTU:
    /// smoltcp writes it into the scratch buffer; it is then queued for the
    /// neighbour's connection if the neighbour does connected mode, or cut
    /// into IPv4 fragments that go over UD (`docs/connected-mode.md` §8).
    /// `Err(f)` hands `f` back when this is not such a packet.
    #[cfg(feature = "alloc")]
    fn consume_big<R, F>(&mut self, len: usize, f: F) -> Result<R, F>
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if len <= self.tx.ud_mtu {
            return Err(f);
        }
        let TxToken { slot, area, tx, cm } = self;
        let Some(cm) = cm.as_mut() else {
            return Err(f);
        };
        let Some(buffer) = cm.scratch(len) else {
            return Err(f);
        };
        let result = f(&mut buffer[encap::HEADER_LEN..]);
        let (ethertype, target) = classify(&buffer[encap::HEADER_LEN..], tx);
        let hw = target.and_then(|t| tx.unicast_hw(t));
        match (hw, target) {
            (Some(hw), _) if hw.flags & crate::wire::HwAddr::FLAG_CONNECTED_MODE != 0 => {
                cm.queue(len, ethertype, hw);
                if let Some(slot) = slot.take() {
                    tx.release(slot);
                }
            }
            (_, Some(target)) => fragment(cm, len, slot, area, tx, target, ethertype),
            _ => {
                cm.stats.tx_too_big += 1;
                if let Some(slot) = slot.take() {
                    tx.release(slot);
                }
            }
        }
        Ok(result)
    }
}

/// Sends the scratch buffer's IP packet of `len` bytes to `target` in
/// fragments over UD, one TX slot each (the token's first), if it can be
/// cut and there are slots enough besides those kept for ARP; drops and
/// counts it otherwise.
#[cfg(feature = "alloc")]
fn fragment(
    cm: &mut super::cm::CmSide,
    len: usize,
    slot: &mut Option<TxSlot>,
    area: &mut TxArea<'_>,
    tx: &mut TxSide,
    target: super::tx::Target,
    ethertype: EtherType,
) {
    let mtu = tx.ud_mtu;
    let plan = super::fragment::plan(cm.packet(len), mtu);
    let enough = plan.is_some_and(|p| p.count <= tx.slots_for_stack() + 1);
    let (Some(plan), true, Some(first)) = (plan, enough, slot.take()) else {
        cm.stats.tx_too_big += 1;
        if let Some(s) = slot.take() {
            tx.release(s);
        }
        return;
    };
    let ident = tx.ip_ident;
    tx.ip_ident = tx.ip_ident.wrapping_add(1);
    let mut next = Some(first);
    for index in 0..plan.count {
        let Some(frag_slot) = next.take().or_else(|| tx.free.pop()) else {
            break;
        };
        let buffer = area.slot_mut(&frag_slot);
        let written = buffer
            .get_mut(encap::HEADER_LEN..)
            .and_then(|out| super::fragment::write(cm.packet(len), &plan, index, ident, out));
        let Some(written) = written else {
            tx.drop_slot(frag_slot, DropReason::NoRoute);
            break;
        };
        let mut header = EncapPacket::new_unchecked(&mut *buffer);
        let _ = EncapRepr { ethertype }.emit(&mut header);
        cm.stats.tx_fragments += 1;
        tx.submit(frag_slot, (encap::HEADER_LEN + written) as u16, target);
    }
    cm.stats.tx_fragmented += 1;
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
            return f(&whole);
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
        let buffer = self.area.slot_mut(&slot);
        // The MTU we report keeps `len` within the slot.
        let end = (encap::HEADER_LEN + len).min(buffer.len());
        let frame = &mut buffer[..end];
        let result = f(&mut frame[encap::HEADER_LEN..]);
        let (ethertype, target) = classify(&frame[encap::HEADER_LEN..], self.tx);
        let mut header = EncapPacket::new_unchecked(&mut *frame);
        let _ = EncapRepr { ethertype }.emit(&mut header);
        match target {
            Some(target) => self.tx.submit(slot, end as u16, target),
            None => self.tx.drop_slot(slot, DropReason::NoRoute),
        }
        result
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
        let Some(tx_slot) = self.tx.free.pop() else {
            let _ = self.rx.whole.push_front((whole, source));
            return None;
        };
        let buffers = self.hca.buffers();
        Some((
            RxToken {
                slot: None,
                end: 0,
                source,
                area: buffers.rx,
                repost: &mut self.rx.repost,
                copy: &mut self.rx.copy,
                whole: Some(whole),
            },
            TxToken {
                slot: Some(tx_slot),
                area: buffers.tx,
                tx: &mut self.tx,
                cm: self.cm.as_mut(),
            },
        ))
    }

    /// The tokens for a packet received over connected mode (copied out of
    /// its big slot already).
    fn cm_tokens(
        &mut self,
        packet: alloc::vec::Vec<u8>,
        source: DatagramSource,
    ) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Some(tx_slot) = self.tx.free.pop() else {
            if let Some(cm) = self.cm.as_mut() {
                cm.rx.push_front((packet, source));
            }
            return None;
        };
        let buffers = self.hca.buffers();
        Some((
            RxToken {
                slot: None,
                end: 0,
                source,
                area: buffers.rx,
                repost: &mut self.rx.repost,
                copy: &mut self.rx.copy,
                whole: Some(packet),
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
        caps.max_transmission_unit = self.mtu;
        // Bursts larger than the posted receive slots are dropped.
        caps.max_burst_size = Some(self.rx_slots);
        caps.checksum = checksums(self.hca.offloads());
        caps
    }
}

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
