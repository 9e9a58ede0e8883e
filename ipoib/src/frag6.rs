//! IPv6 reassembly (RFC 8200 section 4.5, RFC 5722): smoltcp 0.14 has none
//! on `Medium::Ip`, so the device puts fragmented datagrams back together
//! before smoltcp sees them.
//!
//! Bounded: at most [`REASSEMBLIES`] datagrams at a time, each at most
//! [`MAX_PAYLOAD`] bytes after the IPv6 header, each given
//! [`REASSEMBLY_TIMEOUT`] to complete. Only a Fragment header right after
//! the fixed header is handled (what every sender we meet produces); a
//! datagram whose fragments overlap is dropped whole (RFC 5722), and every
//! drop is counted in [`Frag6Stats`].
//!
//! Needs the `alloc` feature (a datagram's buffer is allocated when its
//! first fragment arrives); without it fragments are counted and dropped.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpProtocol, Ipv6Address, Ipv6Packet};

pub use crate::stats::Frag6Stats;

/// Most datagrams reassembled at once.
pub const REASSEMBLIES: usize = 4;
/// Largest reassembled payload (after the 40-byte IPv6 header).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// How long a datagram may take to arrive whole (RFC 8200: 60 s).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(60);

const HEADER_LEN: usize = 40;
const FRAG_HEADER_LEN: usize = 8;
/// Fragment offsets count 8-byte units.
const UNIT: usize = 8;
const UNITS: usize = MAX_PAYLOAD / UNIT;
const WORDS: usize = UNITS / 64;

/// The fragment header of an IPv6 packet whose fixed header is followed
/// directly by one.
struct Fragment<'a> {
    src: Ipv6Address,
    dst: Ipv6Address,
    ident: u32,
    next_header: u8,
    offset: usize,
    more: bool,
    data: &'a [u8],
}

/// Reads `packet` as a fragment: `None` if it is not one (or too short to
/// tell).
fn fragment(packet: &[u8]) -> Option<Fragment<'_>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Ipv6Frag {
        return None;
    }
    let payload = ip.payload();
    let head: &[u8; FRAG_HEADER_LEN] = payload.get(..FRAG_HEADER_LEN)?.try_into().ok()?;
    let offset_flags = u16::from_be_bytes([head[2], head[3]]);
    Some(Fragment {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        ident: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        next_header: head[0],
        offset: usize::from(offset_flags >> 3) * UNIT,
        more: offset_flags & 1 == 1,
        data: payload.get(FRAG_HEADER_LEN..)?,
    })
}

/// True if `packet` is an IPv6 packet with a Fragment header right after
/// the fixed header.
pub fn is_fragment(packet: &[u8]) -> bool {
    packet.first().map(|b| b >> 4) == Some(6)
        && packet.get(6) == Some(&u8::from(IpProtocol::Ipv6Frag))
}

struct Datagram {
    src: Ipv6Address,
    dst: Ipv6Address,
    ident: u32,
    /// The fixed header (from the first fragment) and the payload.
    buffer: Vec<u8>,
    /// 8-byte units received.
    have: [u64; WORDS],
    /// The payload length, once the last fragment came.
    total: Option<usize>,
    /// From the first fragment (offset 0).
    next_header: Option<u8>,
    deadline: Instant,
}

impl Datagram {
    fn complete(&self) -> Option<usize> {
        let total = self.total?;
        self.next_header?;
        let units = total.div_ceil(UNIT);
        (0..units)
            .all(|u| self.have[u / 64] & (1 << (u % 64)) != 0)
            .then_some(total)
    }

    /// Marks units `first..end`; false if any was already there.
    fn mark(&mut self, first: usize, end: usize) -> bool {
        let mut fresh = true;
        for u in first..end {
            let (w, b) = (u / 64, 1u64 << (u % 64));
            fresh &= self.have[w] & b == 0;
            self.have[w] |= b;
        }
        fresh
    }
}

/// The datagrams under way.
#[derive(Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    pub stats: Frag6Stats,
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams under way.
    pub fn pending(&self) -> usize {
        self.datagrams.len()
    }

    /// Takes one fragment (an IPv6 packet for which [`is_fragment`] holds).
    /// Returns the whole datagram once its last missing piece arrives.
    pub fn push(&mut self, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        self.stats.fragments += 1;
        let Some(f) = fragment(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        let end = f.offset + f.data.len();
        if end > MAX_PAYLOAD {
            self.stats.too_big += 1;
            self.forget(&f);
            return None;
        }
        if f.more && (f.data.len() % UNIT != 0 || f.data.is_empty()) {
            self.stats.malformed += 1;
            return None;
        }
        if f.offset == 0 && !f.more {
            // An atomic fragment (RFC 6946): a whole datagram on its own.
            self.stats.reassembled += 1;
            return Some(rebuild(packet, f.next_header, f.data));
        }
        let i = self.find_or_start(&f, packet, now)?;
        let d = &mut self.datagrams[i];
        let contradicts = match d.total {
            Some(total) => end > total || (!f.more && end != total),
            None => false,
        };
        if contradicts || (!f.more && d.have_past(end)) {
            self.stats.malformed += 1;
            self.datagrams.swap_remove(i);
            return None;
        }
        if !d.mark(f.offset / UNIT, end.div_ceil(UNIT)) {
            self.stats.overlaps += 1;
            self.datagrams.swap_remove(i);
            return None;
        }
        if !f.more {
            d.total = Some(end);
        }
        if f.offset == 0 {
            d.next_header = Some(f.next_header);
            if let Some(header) = packet.get(..HEADER_LEN) {
                d.buffer[..HEADER_LEN].copy_from_slice(header);
            }
        }
        d.buffer[HEADER_LEN + f.offset..HEADER_LEN + end].copy_from_slice(f.data);
        let total = d.complete()?;
        let d = self.datagrams.swap_remove(i);
        self.stats.reassembled += 1;
        let mut whole = d.buffer;
        whole.truncate(HEADER_LEN + total);
        let mut ip = Ipv6Packet::new_unchecked(&mut whole[..]);
        ip.set_payload_len(total as u16);
        ip.set_next_header(IpProtocol::from(d.next_header.unwrap_or(59)));
        Some(whole)
    }

    fn find_or_start(&mut self, f: &Fragment<'_>, packet: &[u8], now: Instant) -> Option<usize> {
        let same = |d: &Datagram| d.ident == f.ident && d.src == f.src && d.dst == f.dst;
        if let Some(i) = self.datagrams.iter().position(same) {
            return Some(i);
        }
        if self.datagrams.len() >= REASSEMBLIES {
            // The oldest gives way.
            let oldest = self
                .datagrams
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| d.deadline)
                .map(|(i, _)| i)?;
            self.datagrams.swap_remove(oldest);
            self.stats.evicted += 1;
        }
        let mut buffer = vec![0u8; HEADER_LEN + MAX_PAYLOAD];
        buffer[..HEADER_LEN].copy_from_slice(packet.get(..HEADER_LEN)?);
        self.datagrams.push(Datagram {
            src: f.src,
            dst: f.dst,
            ident: f.ident,
            buffer,
            have: [0; WORDS],
            total: None,
            next_header: None,
            deadline: now + REASSEMBLY_TIMEOUT,
        });
        Some(self.datagrams.len() - 1)
    }

    /// Drops the datagram `f` belongs to, if under way.
    fn forget(&mut self, f: &Fragment<'_>) {
        self.datagrams
            .retain(|d| !(d.ident == f.ident && d.src == f.src && d.dst == f.dst));
    }

    /// Gives up on datagrams past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let before = self.datagrams.len();
        self.datagrams.retain(|d| now < d.deadline);
        self.stats.timeouts += (before - self.datagrams.len()) as u64;
    }

    /// The next deadline, if any datagram is under way.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.datagrams.iter().map(|d| d.deadline).min()
    }
}

impl Datagram {
    /// True if a unit at or past byte `end` was received (a "last"
    /// fragment that would cut off data already here).
    fn have_past(&self, end: usize) -> bool {
        (end.div_ceil(UNIT)..UNITS).any(|u| self.have[u / 64] & (1 << (u % 64)) != 0)
    }
}

/// The datagram of an atomic fragment: its fixed header with the fragment
/// header's next header, and the data.
fn rebuild(packet: &[u8], next_header: u8, data: &[u8]) -> Vec<u8> {
    let mut whole = Vec::with_capacity(HEADER_LEN + data.len());
    whole.extend_from_slice(packet.get(..HEADER_LEN).unwrap_or(&[0; HEADER_LEN]));
    whole.extend_from_slice(data);
    let mut ip = Ipv6Packet::new_unchecked(&mut whole[..]);
    ip.set_payload_len(data.len() as u16);
    ip.set_next_header(IpProtocol::from(next_header));
    whole
}

#[cfg(test)]
mod tests;
