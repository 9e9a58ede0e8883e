//! Moving one packet: from the sender's TX slot, across the (faulty) wire,
//! through the receiver's checks, into its oldest posted RX slot.
//!
//! Delivery is synchronous: it happens inside `post_send`, under the fabric
//! lock, so sends from one port arrive in order unless the reorder fault
//! holds one back. A held packet is copied out of the TX slot (the send
//! completes and the slot may be reused) and is delivered after the next
//! send on the fabric, or at the next `poll_cq`, `arm_cq` or `flush` of any
//! port, or by [`super::SimFabric::drain_held`], whichever comes first.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use ring::Window;

use super::entry::{Entry, Notifier, PortId, Target};
use super::fabric::Inner;
use super::fault::{Faults, Verdict};
use super::grh::GrhRepr;
use crate::hca::{Completion, RecvInfo, UdDest, WcStatus};
use crate::slot::TxSlot;
use crate::types::{Gid, Lid, PKey, QKey, Qpn, GRH_LEN};

/// What the wire carries besides the payload.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub sgid: Gid,
    pub slid: Lid,
    pub sqpn: Qpn,
    pub pkey: PKey,
    /// The receiver's GID, or the MGID for a multicast packet.
    pub dgid: Gid,
    pub dqpn: Qpn,
    pub qkey: QKey,
    pub multicast: bool,
    pub len: usize,
}

/// Where the payload bytes are.
enum Payload<'a> {
    /// Still in the sender's TX slot, except the first `head.len()` bytes,
    /// which are the sender's own copy (`post_send_with_head`; empty for a
    /// plain send).
    Slot {
        region: &'a Window,
        offset: usize,
        head: &'a [u8],
    },
    /// Copied out (a held packet).
    Bytes(&'a [u8]),
}

/// A packet held back by the reorder fault.
pub(super) struct Held {
    pub to: PortId,
    copies: u8,
    hdr: Header,
    bytes: Vec<u8>,
}

impl Inner {
    /// Sends `len` bytes from `slot`, the first `head.len()` of them from
    /// `head` instead (see [`crate::Verbs::post_send_with_head`]; the caller
    /// checked `head.len() <= len`), and queues the send completion. Held
    /// packets from before this send are delivered after it. `Err` hands the
    /// slot back if the sender is no longer attached.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        from: PortId,
        region: &Window,
        slot: TxSlot,
        len: usize,
        head: &[u8],
        dest: &UdDest,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), TxSlot> {
        let earlier = if self.held.is_empty() {
            None
        } else {
            Some(core::mem::take(&mut self.held))
        };
        let frame = Frame { region, len, head };
        if let Err(slot) = self.transmit(from, &frame, slot, dest, fire) {
            // Not attached: nothing was sent, nothing else held.
            if let Some(earlier) = earlier {
                self.held = earlier;
            }
            return Err(slot);
        }
        if let Some(earlier) = earlier {
            self.deliver_held(earlier, fire);
        }
        Ok(())
    }

    /// Delivers everything held back; returns how many packets.
    pub(super) fn release_held(&mut self, fire: &mut Vec<Notifier>) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let batch = core::mem::take(&mut self.held);
        self.deliver_held(batch, fire)
    }

    fn deliver_held(&mut self, batch: VecDeque<Held>, fire: &mut Vec<Notifier>) -> usize {
        let count = batch.len();
        for held in batch {
            match self.ports.get_mut(&held.to) {
                Some(rx) => {
                    for _ in 0..held.copies {
                        arrive(rx, &held.hdr, &Payload::Bytes(&held.bytes), fire);
                    }
                }
                None => self.held_orphaned += 1,
            }
        }
        count
    }

    /// Validates the send, queues its completion and puts it on the wire.
    /// `Err` hands the slot back if the sender is not attached.
    ///
    /// The send completes before the packet crosses (one lookup of the
    /// sender instead of two): the fabric lock is held throughout, so
    /// nothing can see the difference but a port sending to itself, which
    /// finds the send's completion before the receive's, as a real HCA
    /// may order them.
    fn transmit(
        &mut self,
        from: PortId,
        frame: &Frame<'_>,
        slot: TxSlot,
        dest: &UdDest,
        fire: &mut Vec<Notifier>,
    ) -> Result<(), TxSlot> {
        let Frame { region, len, head } = *frame;
        let Some(sender) = self.ports.get_mut(&from) else {
            return Err(slot);
        };
        let checked = match (
            sender.layout.tx_offset(slot.index()),
            sender.target(dest.handle),
        ) {
            (Some(_), Some(_)) if len > sender.attr.mtu.bytes() => {
                sender.stats.oversize += 1;
                Err(WcStatus::LocalLength)
            }
            (Some(offset), Some(target))
                if len <= sender.layout.slot_size as usize && head.len() <= len =>
            {
                Ok((offset, target))
            }
            _ => {
                sender.stats.bad_send += 1;
                Err(WcStatus::LocalProtection)
            }
        };
        let (offset, target) = match checked {
            Ok(checked) => checked,
            Err(status) => {
                sender.complete(Completion::Send { slot, status }, fire);
                return Ok(());
            }
        };
        sender.complete(
            Completion::Send {
                slot,
                status: WcStatus::Success,
            },
            fire,
        );
        sender.stats.tx_packets += 1;
        sender.stats.tx_bytes += len as u64;
        let attr = sender.attr;
        let route = sender.route;
        let (dgid, multicast) = match target {
            Target::Port(gid) => (gid, false),
            Target::Group(mgid) => (mgid, true),
        };
        let hdr = Header {
            sgid: attr.gid,
            slid: attr.lid,
            sqpn: attr.qpn,
            pkey: attr.pkey,
            dgid,
            dqpn: dest.qpn,
            qkey: dest.qkey,
            multicast,
            len,
        };
        let payload = Payload::Slot {
            region,
            offset,
            head,
        };
        let Inner {
            faults,
            ports,
            by_gid,
            routes_gen,
            groups,
            held,
            ..
        } = self;
        let routes_gen = *routes_gen;
        let mut wire = Wire {
            faults,
            ports,
            held,
            fire,
        };
        let routed = match target {
            Target::Port(gid) => {
                // The port this sender reached last, while no port has come
                // or gone since: saves the route lookup.
                let cached = route
                    .filter(|&(g, _, gen)| g == gid && gen == routes_gen)
                    .map(|(_, id, _)| id);
                match cached.or_else(|| by_gid.get(&gid).copied()) {
                    Some(to) => {
                        wire.cross(to, &hdr, &payload);
                        if cached.is_none() {
                            if let Some(sender) = wire.ports.get_mut(&from) {
                                sender.route = Some((gid, to, routes_gen));
                            }
                        }
                        true
                    }
                    None => false,
                }
            }
            // Every member but the sender gets its own copy, in port order.
            Target::Group(mgid) if dest.qpn == Qpn::MULTICAST => {
                for &to in groups.get(&mgid).into_iter().flatten() {
                    if to != from {
                        wire.cross(to, &hdr, &payload);
                    }
                }
                true
            }
            Target::Group(_) => false,
        };
        if !routed {
            if let Some(sender) = self.ports.get_mut(&from) {
                sender.stats.unroutable += 1;
            }
        }
        Ok(())
    }
}

/// What one send puts on the wire.
#[derive(Clone, Copy)]
struct Frame<'a> {
    region: &'a Window,
    len: usize,
    head: &'a [u8],
}

/// The parts of the fabric one packet copy touches.
struct Wire<'a> {
    faults: &'a mut Faults,
    ports: &'a mut BTreeMap<PortId, Entry>,
    held: &'a mut VecDeque<Held>,
    fire: &'a mut Vec<Notifier>,
}

impl Wire<'_> {
    /// One copy of a packet crosses the wire to port `to`.
    fn cross(&mut self, to: PortId, hdr: &Header, payload: &Payload<'_>) {
        let verdict = self.faults.judge();
        let Some(rx) = self.ports.get_mut(&to) else {
            return;
        };
        let (copies, hold) = match verdict {
            Verdict::Lost => {
                rx.stats.fault_loss += 1;
                return;
            }
            Verdict::Corrupt => {
                rx.stats.drop_icrc += 1;
                return;
            }
            Verdict::Deliver { copies, held } => (copies, held),
        };
        if copies > 1 {
            rx.stats.fault_dup += 1;
        }
        if !hold {
            for _ in 0..copies {
                arrive(rx, hdr, payload, self.fire);
            }
            return;
        }
        match payload.to_vec(hdr.len) {
            Some(bytes) => {
                rx.stats.fault_reorder += 1;
                self.held.push_back(Held {
                    to,
                    copies,
                    hdr: *hdr,
                    bytes,
                });
            }
            None => rx.stats.drop_dma += 1,
        }
    }
}

impl Payload<'_> {
    fn to_vec(&self, len: usize) -> Option<Vec<u8>> {
        match self {
            Payload::Slot {
                region,
                offset,
                head,
            } => {
                let mut bytes = vec![0; len];
                let h = head.len().min(len);
                let (first, rest) = bytes.split_at_mut(h);
                first.copy_from_slice(head.get(..h)?);
                region.read_bytes(offset.checked_add(h)?, rest).ok()?;
                Some(bytes)
            }
            Payload::Bytes(bytes) => bytes.get(..len).map(<[u8]>::to_vec),
        }
    }

    /// The "DMA": copies `len` payload bytes into `dst` at `dst_off`.
    fn copy_to(&self, dst: &Window, dst_off: usize, len: usize) -> bool {
        match self {
            Payload::Slot {
                region,
                offset,
                head,
            } => {
                // The head from the sender's copy, the rest from its slot:
                // the slot's first bytes are never read.
                let h = head.len().min(len);
                let (Some(first), Some(src), Some(at)) =
                    (head.get(..h), offset.checked_add(h), dst_off.checked_add(h))
                else {
                    return false;
                };
                // A plain send has no head: skip the empty write (30
                // instructions per packet, callgrind).
                (first.is_empty() || dst.write_bytes(dst_off, first).is_ok())
                    && dst.copy_from(at, region, src, len - h).is_ok()
            }
            Payload::Bytes(bytes) => bytes
                .get(..len)
                .is_some_and(|b| dst.write_bytes(dst_off, b).is_ok()),
        }
    }
}

/// The receiver's side: checks, then the oldest posted RX slot.
fn arrive(rx: &mut Entry, hdr: &Header, payload: &Payload<'_>, fire: &mut Vec<Notifier>) {
    let me = rx.attr;
    let stats = &mut rx.stats;
    if !hdr.pkey.matches(me.pkey) {
        stats.drop_pkey += 1;
        return;
    }
    if !hdr.multicast && hdr.dqpn != me.qpn {
        stats.drop_qpn += 1;
        return;
    }
    if hdr.qkey != me.qkey {
        stats.drop_qkey += 1;
        return;
    }
    if hdr.len > me.mtu.bytes() {
        stats.drop_mtu += 1;
        return;
    }
    let Some(slot) = rx.recvs.front() else {
        stats.drop_no_recv += 1;
        return;
    };
    if GRH_LEN + hdr.len > rx.layout.slot_size as usize {
        stats.drop_too_small += 1;
        return;
    }
    let grh = GrhRepr::new(hdr.len, hdr.sgid, hdr.dgid).emit();
    let copied = rx.layout.rx_offset(slot.index()).is_some_and(|offset| {
        rx.region.write_bytes(offset, &grh).is_ok()
            && payload.copy_to(&rx.region, offset + GRH_LEN, hdr.len)
    });
    if !copied {
        stats.drop_dma += 1;
        return;
    }
    let Some(slot) = rx.recvs.pop_front() else {
        return;
    };
    stats.rx_packets += 1;
    stats.rx_bytes += hdr.len as u64;
    let info = RecvInfo {
        byte_len: (GRH_LEN + hdr.len) as u32,
        src_qpn: hdr.sqpn,
        src_lid: hdr.slid,
        pkey: hdr.pkey,
        grh_present: true,
        multicast: hdr.multicast,
    };
    rx.complete(
        Completion::Recv {
            slot,
            status: WcStatus::Success,
            info,
        },
        fire,
    );
}
