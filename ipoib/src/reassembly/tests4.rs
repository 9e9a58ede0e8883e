//! IPv4 reassembly: the same table as IPv6's, RFC 791 fragments.

use super::*;
use proptest::prelude::*;
use smoltcp::wire::{IpProtocol, Ipv4Repr};

const SRC: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);
const DST: Ipv4Address = Ipv4Address::new(10, 77, 0, 2);
const IP_HEADER: usize = 20;

fn t(s: i64) -> Instant {
    Instant::from_secs(s)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 5 + 1) as u8).collect()
}

/// One fragment of datagram `ident`: `payload` at `offset` bytes.
fn frag(ident: u16, offset: usize, more: bool, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: SRC,
        dst_addr: DST,
        next_header: IpProtocol::Udp,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; IP_HEADER + payload.len()];
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut ip, &Default::default());
    ip.set_ident(ident);
    ip.set_more_frags(more);
    ip.set_frag_offset(offset as u16);
    ip.fill_checksum();
    out[IP_HEADER..].copy_from_slice(payload);
    out
}

fn split(ident: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| frag(ident, i * size, i + 1 < n, c))
        .collect()
}

fn check_whole(whole: &[u8], payload: &[u8]) {
    let ip = Ipv4Packet::new_checked(whole).unwrap();
    assert!(ip.verify_checksum(), "header checksum");
    assert!(!ip.more_frags());
    assert_eq!(ip.frag_offset(), 0);
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    assert_eq!(ip.src_addr(), SRC);
    assert_eq!(ip.dst_addr(), DST);
    assert_eq!(usize::from(ip.total_len()), IP_HEADER + payload.len());
    assert_eq!(ip.payload(), payload);
}

#[test]
fn fragments_in_any_order_make_the_datagram() {
    let payload = data(8000);
    for reverse in [false, true] {
        let mut r = Reassembler::new();
        let mut frags = split(7, &payload, 2000);
        if reverse {
            frags.reverse();
        }
        let last = frags.pop().unwrap();
        for f in &frags {
            assert!(r.push(f, t(0)).is_none());
        }
        let whole = r.push(&last, t(0)).expect("whole");
        check_whole(&whole, &payload);
        assert_eq!(r.stats4.reassembled, 1);
        assert_eq!(r.stats4.fragments, 4);
        assert_eq!(r.stats, ReassemblyStats::default(), "IPv6 untouched");
        assert_eq!(r.pending(), 0);
    }
}

#[test]
fn a_duplicate_is_ignored_and_an_overlap_drops_the_datagram() {
    let payload = data(6000);
    let frags = split(9, &payload, 2000);
    let mut r = Reassembler::new();
    assert!(r.push(&frags[0], t(0)).is_none());
    assert!(r.push(&frags[0], t(0)).is_none());
    assert_eq!(r.stats4.duplicates, 1);
    assert!(r.push(&frags[1], t(0)).is_none());
    let whole = r
        .push(&frags[2], t(0))
        .expect("whole despite the duplicate");
    check_whole(&whole, &payload);

    // The same range with other bytes: the datagram is dropped.
    let mut r = Reassembler::new();
    assert!(r.push(&frags[0], t(0)).is_none());
    let mut other = payload[..2000].to_vec();
    other[100] ^= 0xff;
    assert!(r.push(&frag(9, 0, true, &other), t(0)).is_none());
    assert_eq!(r.stats4.overlaps, 1);
    assert_eq!(r.pending(), 0);
    // Half over the first fragment: an overlap too.
    let mut r = Reassembler::new();
    assert!(r.push(&frags[0], t(0)).is_none());
    assert!(r
        .push(&frag(9, 1000, true, &payload[1000..3000]), t(0))
        .is_none());
    assert_eq!(r.stats4.overlaps, 1);
}

#[test]
fn limits_timeouts_and_evictions_are_counted() {
    let payload = data(4000);
    let mut r = Reassembler::new();
    // Past the 16 KiB a datagram may have.
    assert!(r
        .push(&frag(1, MAX_PAYLOAD - 8, true, &[0; 16]), t(0))
        .is_none());
    assert_eq!(r.stats4.too_big, 1);
    // A middle fragment that is not a multiple of 8 bytes.
    assert!(r.push(&frag(2, 0, true, &[0; 13]), t(0)).is_none());
    assert_eq!(r.stats4.malformed, 1);
    // Half a datagram, then the clock runs out.
    let frags = split(3, &payload, 2000);
    assert!(r.push(&frags[0], t(0)).is_none());
    r.expire(t(61));
    assert_eq!(r.stats4.timeouts, 1);
    assert!(r.push(&frags[1], t(61)).is_none(), "its first half is gone");
    // More datagrams than the table holds: the oldest goes.
    let mut r = Reassembler::new();
    for ident in 0..=REASSEMBLIES as u16 {
        let first = split(100 + ident, &payload, 2000).remove(0);
        assert!(r.push(&first, t(i64::from(ident))).is_none());
    }
    assert_eq!(r.stats4.evicted, 1);
    assert_eq!(r.pending(), REASSEMBLIES);
}

#[test]
fn the_two_families_share_the_table_but_not_the_counters() {
    let payload = data(4000);
    let mut r = Reassembler::new();
    let v4 = split(5, &payload, 2000);
    assert!(r.push(&v4[0], t(0)).is_none());
    // A datagram of each family under way at once.
    assert_eq!(r.pending(), 1);
    let whole = r.push(&v4[1], t(0)).expect("whole");
    check_whole(&whole, &payload);
    assert_eq!(r.stats4.reassembled, 1);
    assert_eq!(r.stats.reassembled, 0);
}

proptest! {
    /// Fragments of any size in any order, some sent twice, give the
    /// datagram back once, whole.
    #[test]
    fn any_order_with_duplicates(
        len in 9usize..12_000,
        size_units in 1usize..300,
        order in proptest::collection::vec(any::<u16>(), 64),
        dups in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let payload = data(len);
        let size = size_units * 8;
        let mut frags = split(77, &payload, size);
        let n = frags.len();
        prop_assume!(n > 1 && n <= 64);
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by_key(|&i| order[i]);
        let mut plan = Vec::new();
        for &i in &idx {
            plan.push(i);
            if dups[i] {
                plan.push(i);
            }
        }
        let mut r = Reassembler::new();
        let mut wholes = 0;
        for i in plan {
            let f = core::mem::take(&mut frags[i]);
            if let Some(w) = r.push(&f, t(0)) {
                check_whole(&w, &payload);
                wholes += 1;
            }
            frags[i] = f;
        }
        prop_assert_eq!(wholes, 1);
        prop_assert_eq!(r.stats4.overlaps, 0);
    }

    /// Junk never panics, and anything handed on is a well-formed IPv4
    /// packet.
    #[test]
    fn junk_never_panics(packets in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 0..40)
    ) {
        let mut r = Reassembler::new();
        for mut p in packets {
            if let Some(b) = p.first_mut() {
                *b = 0x45;
            }
            if let Some(w) = r.push(&p, t(0)) {
                prop_assert!(Ipv4Packet::new_checked(&w[..]).is_ok());
            }
        }
    }
}
