//! IP reassembly for both families, before smoltcp sees a packet: IPv6
//! (RFC 8200 section 4.5, RFC 5722), which smoltcp 0.14 lacks on
//! `Medium::Ip`, and IPv4 (RFC 791), so that every drop is counted here
//! ([`ReassemblyStats`], one set per family) instead of silently inside
//! smoltcp.
//!
//! Bounded: at most [`REASSEMBLIES`] datagrams at a time (both families
//! together), each at most [`MAX_PAYLOAD`] bytes after its IP header, each
//! given [`REASSEMBLY_TIMEOUT`] to complete. For IPv6 only a Fragment header
//! right after the fixed header is handled (what every sender we meet
//! produces). A fragment that repeats bytes already here is a duplicate
//! (the fabric may deliver a datagram twice) and is ignored if it carries
//! the same bytes; one that overlaps with different bytes drops the whole
//! datagram (RFC 5722 for IPv6; Linux does the same for IPv4).
//!
//! Needs the `alloc` feature (a datagram's buffer is allocated when its
//! first fragment arrives); without it fragments are counted and dropped.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Packet, Ipv6Address, Ipv6Packet};

pub use crate::stats::{Frag6Stats, ReassemblyStats};

/// Most datagrams reassembled at once (both families together).
pub const REASSEMBLIES: usize = 4;
/// Largest reassembled payload (after the IP header).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// How long a datagram may take to arrive whole (RFC 8200: 60 s; RFC 791
/// leaves it to the host, and smoltcp's was 60 s too).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The IPv6 fixed header.
const HEADER_LEN: usize = 40;
const FRAG_HEADER_LEN: usize = 8;
/// Fragment offsets count 8-byte units.
const UNIT: usize = 8;
const UNITS: usize = MAX_PAYLOAD / UNIT;
const WORDS: usize = UNITS / 64;

/// Which datagram a fragment belongs to (RFC 791: source, destination,
/// protocol and identification; RFC 8200: source, destination and
/// identification).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    V4 {
        src: Ipv4Address,
        dst: Ipv4Address,
        protocol: u8,
        ident: u16,
    },
    V6 {
        src: Ipv6Address,
        dst: Ipv6Address,
        ident: u32,
    },
}

/// One fragment, of either family.
struct Fragment<'a> {
    key: Key,
    /// The IP header to keep if this is the first fragment: IPv4's whole
    /// header (options and all), IPv6's fixed header.
    header: &'a [u8],
    /// IPv6: the Fragment header's next header (the datagram's protocol).
    next_header: u8,
    offset: usize,
    more: bool,
    data: &'a [u8],
}

/// Reads an IPv6 packet as a fragment: `None` if it is not one (or too
/// short to tell).
fn fragment6(packet: &[u8]) -> Option<Fragment<'_>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Ipv6Frag {
        return None;
    }
    let payload = ip.payload();
    let head: &[u8; FRAG_HEADER_LEN] = payload.get(..FRAG_HEADER_LEN)?.try_into().ok()?;
    let offset_flags = u16::from_be_bytes([head[2], head[3]]);
    Some(Fragment {
        key: Key::V6 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ident: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        },
        header: packet.get(..HEADER_LEN)?,
        next_header: head[0],
        offset: usize::from(offset_flags >> 3) * UNIT,
        more: offset_flags & 1 == 1,
        data: payload.get(FRAG_HEADER_LEN..)?,
    })
}

/// Reads an IPv4 packet as a fragment: `None` if it is not one, or its
/// header or lengths do not parse.
fn fragment4(packet: &[u8]) -> Option<Fragment<'_>> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if !ip.more_frags() && ip.frag_offset() == 0 {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    Some(Fragment {
        key: Key::V4 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            protocol: ip.next_header().into(),
            ident: ip.ident(),
        },
        header: packet.get(..header_len)?,
        next_header: 0,
        offset: usize::from(ip.frag_offset()),
        more: ip.more_frags(),
        data: packet.get(header_len..total)?,
    })
}

/// True if `packet` is an IPv6 packet with a Fragment header right after
/// the fixed header.
pub fn is_fragment(packet: &[u8]) -> bool {
    packet.first().map(|b| b >> 4) == Some(6)
        && packet.get(6) == Some(&u8::from(IpProtocol::Ipv6Frag))
}

struct Datagram {
    key: Key,
    /// The first fragment's IP header, once it came.
    header: Vec<u8>,
    payload: Vec<u8>,
    /// 8-byte units received.
    have: [u64; WORDS],
    /// The payload length, once the last fragment came.
    total: Option<usize>,
    /// IPv6: from the first fragment (offset 0).
    next_header: Option<u8>,
    deadline: Instant,
}

impl Datagram {
    fn complete(&self) -> Option<usize> {
        let total = self.total?;
        if self.header.is_empty() {
            return None;
        }
        let units = total.div_ceil(UNIT);
        (0..units)
            .all(|u| self.have[u / 64] & (1 << (u % 64)) != 0)
            .then_some(total)
    }

    /// How units `first..end` stand: all new, all here already, or some
    /// of each.
    fn coverage(&self, first: usize, end: usize) -> Coverage {
        let here = (first..end)
            .filter(|&u| self.have[u / 64] & (1 << (u % 64)) != 0)
            .count();
        match here {
            0 => Coverage::New,
            n if n == end - first => Coverage::Here,
            _ => Coverage::Partly,
        }
    }

    fn mark(&mut self, first: usize, end: usize) {
        for u in first..end {
            self.have[u / 64] |= 1 << (u % 64);
        }
    }

    /// True if a unit at or past byte `end` was received (a "last"
    /// fragment that would cut off data already here).
    fn have_past(&self, end: usize) -> bool {
        (end.div_ceil(UNIT)..UNITS).any(|u| self.have[u / 64] & (1 << (u % 64)) != 0)
    }

    /// The whole datagram: the first fragment's header, fixed up, and the
    /// payload.
    fn assemble(self, total: usize) -> Vec<u8> {
        let mut whole = self.header;
        let header_len = whole.len();
        whole.extend_from_slice(&self.payload[..total]);
        match self.key {
            Key::V4 { .. } => {
                let mut ip = Ipv4Packet::new_unchecked(&mut whole[..]);
                ip.set_total_len((header_len + total) as u16);
                ip.clear_flags();
                ip.set_frag_offset(0);
                ip.fill_checksum();
            }
            Key::V6 { .. } => {
                let mut ip = Ipv6Packet::new_unchecked(&mut whole[..]);
                ip.set_payload_len(total as u16);
                ip.set_next_header(IpProtocol::from(self.next_header.unwrap_or(59)));
            }
        }
        whole
    }
}

enum Coverage {
    New,
    Here,
    Partly,
}

/// The datagrams under way, of both families.
#[derive(Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    /// IPv6.
    pub stats: ReassemblyStats,
    /// IPv4.
    pub stats4: ReassemblyStats,
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams under way.
    pub fn pending(&self) -> usize {
        self.datagrams.len()
    }

    fn stats_of(&mut self, v4: bool) -> &mut ReassemblyStats {
        if v4 {
            &mut self.stats4
        } else {
            &mut self.stats
        }
    }

    /// Takes one fragment: an IPv6 packet for which [`is_fragment`] holds
    /// or an IPv4 one for which [`is_fragment4`] does. Returns the whole
    /// datagram once its last missing piece arrives.
    pub fn push(&mut self, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        let v4 = packet.first().map(|b| b >> 4) == Some(4);
        self.stats_of(v4).fragments += 1;
        let parsed = if v4 {
            fragment4(packet)
        } else {
            fragment6(packet)
        };
        let Some(f) = parsed else {
            self.stats_of(v4).malformed += 1;
            return None;
        };
        let end = f.offset + f.data.len();
        if end > MAX_PAYLOAD {
            self.stats_of(v4).too_big += 1;
            self.forget(&f.key);
            return None;
        }
        if f.more && (f.data.len() % UNIT != 0 || f.data.is_empty()) {
            self.stats_of(v4).malformed += 1;
            return None;
        }
        if !v4 && f.offset == 0 && !f.more {
            // An atomic fragment (RFC 6946): a whole datagram on its own.
            self.stats.reassembled += 1;
            return Some(rebuild(packet, f.next_header, f.data));
        }
        let i = self.find_or_start(&f, now)?;
        let d = &mut self.datagrams[i];
        let contradicts = match d.total {
            Some(total) => end > total || (!f.more && end != total),
            None => false,
        };
        if contradicts || (!f.more && d.have_past(end)) {
            self.datagrams.swap_remove(i);
            self.stats_of(v4).malformed += 1;
            return None;
        }
        let (first, last) = (f.offset / UNIT, end.div_ceil(UNIT));
        match d.coverage(first, last) {
            Coverage::New => {}
            Coverage::Here if d.payload[f.offset..end] == *f.data => {
                // The same bytes again: a duplicate, not an attack.
                self.stats_of(v4).duplicates += 1;
                return None;
            }
            Coverage::Here | Coverage::Partly => {
                self.datagrams.swap_remove(i);
                self.stats_of(v4).overlaps += 1;
                return None;
            }
        }
        d.mark(first, last);
        if !f.more {
            d.total = Some(end);
        }
        if f.offset == 0 {
            d.next_header = Some(f.next_header);
            d.header = f.header.to_vec();
        }
        d.payload[f.offset..end].copy_from_slice(f.data);
        let total = d.complete()?;
        let d = self.datagrams.swap_remove(i);
        self.stats_of(v4).reassembled += 1;
        Some(d.assemble(total))
    }

    fn find_or_start(&mut self, f: &Fragment<'_>, now: Instant) -> Option<usize> {
        if let Some(i) = self.datagrams.iter().position(|d| d.key == f.key) {
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
            let gone = self.datagrams.swap_remove(oldest);
            self.stats_of(matches!(gone.key, Key::V4 { .. })).evicted += 1;
        }
        self.datagrams.push(Datagram {
            key: f.key,
            header: Vec::new(),
            payload: vec![0u8; MAX_PAYLOAD],
            have: [0; WORDS],
            total: None,
            next_header: None,
            deadline: now + REASSEMBLY_TIMEOUT,
        });
        Some(self.datagrams.len() - 1)
    }

    /// Drops the datagram with `key`, if under way.
    fn forget(&mut self, key: &Key) {
        self.datagrams.retain(|d| d.key != *key);
    }

    /// Gives up on datagrams past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let (mut v4, mut v6) = (0, 0);
        self.datagrams.retain(|d| {
            let keep = now < d.deadline;
            if !keep {
                match d.key {
                    Key::V4 { .. } => v4 += 1,
                    Key::V6 { .. } => v6 += 1,
                }
            }
            keep
        });
        self.stats4.timeouts += v4;
        self.stats.timeouts += v6;
    }

    /// The next deadline, if any datagram is under way.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.datagrams.iter().map(|d| d.deadline).min()
    }
}

/// The datagram of an IPv6 atomic fragment: its fixed header with the
/// fragment header's next header, and the data.
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
#[cfg(test)]
mod tests4;
