use super::*;
use proptest::prelude::*;
use smoltcp::wire::Ipv6Repr;

const SRC: Ipv6Address = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const DST: Ipv6Address = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

fn t(s: i64) -> Instant {
    Instant::from_secs(s)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// One fragment of `ident`: `payload` at `offset` bytes, more to come or not.
fn frag(ident: u32, offset: usize, more: bool, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv6Repr {
        src_addr: SRC,
        dst_addr: DST,
        next_header: IpProtocol::Ipv6Frag,
        payload_len: FRAG_HEADER_LEN + payload.len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; HEADER_LEN + FRAG_HEADER_LEN + payload.len()];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
    let f = &mut out[HEADER_LEN..];
    f[0] = 17; // UDP
    let offset_flags = (((offset / UNIT) as u16) << 3) | u16::from(more);
    f[2..4].copy_from_slice(&offset_flags.to_be_bytes());
    f[4..8].copy_from_slice(&ident.to_be_bytes());
    f[FRAG_HEADER_LEN..].copy_from_slice(payload);
    out
}

/// `payload` cut into fragments of `size` bytes (a multiple of 8).
fn split(ident: u32, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| frag(ident, i * size, i + 1 < n, c))
        .collect()
}

fn check_whole(whole: &[u8], payload: &[u8]) {
    let ip = Ipv6Packet::new_checked(whole).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    assert_eq!(usize::from(ip.payload_len()), payload.len());
    assert_eq!(ip.src_addr(), SRC);
    assert_eq!(ip.dst_addr(), DST);
    assert_eq!(ip.payload(), payload);
}

#[test]
fn in_order_and_reversed() {
    let payload = data(5000);
    for reverse in [false, true] {
        let mut r = Reassembler::new();
        let mut frags = split(7, &payload, 1448);
        if reverse {
            frags.reverse();
        }
        let last = frags.pop().unwrap();
        for f in &frags {
            assert!(is_fragment(f));
            assert_eq!(r.push(f, t(0)), None);
        }
        let whole = r.push(&last, t(0)).expect("whole");
        check_whole(&whole, &payload);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.stats.reassembled, 1);
        assert_eq!(r.stats.fragments, 4);
    }
}

#[test]
fn interleaved_datagrams_and_an_atomic_fragment() {
    let (a, b) = (data(3000), data(2500));
    let mut r = Reassembler::new();
    let (fa, fb) = (split(1, &a, 1024), split(2, &b, 1024));
    let mut got = Vec::new();
    for i in 0..3 {
        for f in [fa.get(i), fb.get(i)].into_iter().flatten() {
            got.extend(r.push(f, t(0)));
        }
    }
    // Each completes with its last fragment: a's comes first.
    assert_eq!(got.len(), 2);
    check_whole(&got[0], &a);
    check_whole(&got[1], &b);
    let atomic = frag(3, 0, false, b"hello");
    check_whole(&r.push(&atomic, t(0)).expect("atomic"), b"hello");
    assert!(!is_fragment(&got[0]));
}

#[test]
fn overlapping_fragments_drop_the_datagram() {
    let payload = data(3000);
    let mut r = Reassembler::new();
    assert_eq!(r.push(&frag(9, 0, true, &payload[..1024]), t(0)), None);
    // Overlaps bytes 1016..1024.
    assert_eq!(
        r.push(&frag(9, 1016, true, &payload[1016..2048]), t(0)),
        None
    );
    assert_eq!(r.stats.overlaps, 1);
    assert_eq!(r.pending(), 0);
    // The rest of it no longer completes anything.
    assert_eq!(r.push(&frag(9, 1024, false, &payload[1024..]), t(0)), None);
    assert_eq!(r.stats.reassembled, 0);
}

#[test]
fn limits_and_malformed_fragments() {
    let mut r = Reassembler::new();
    // Past 16 KiB.
    assert_eq!(
        r.push(&frag(1, MAX_PAYLOAD - 8, false, &[0; 16]), t(0)),
        None
    );
    assert_eq!(r.stats.too_big, 1);
    // Not a multiple of 8 with more to come.
    assert_eq!(r.push(&frag(2, 0, true, &[0; 100]), t(0)), None);
    assert_eq!(r.stats.malformed, 1);
    // A second "last" fragment that disagrees on the length.
    assert_eq!(r.push(&frag(3, 1024, false, &[0; 8]), t(0)), None);
    assert_eq!(r.push(&frag(3, 2048, false, &[0; 8]), t(0)), None);
    assert_eq!(r.stats.malformed, 2);
    // Junk that says it is a fragment.
    let mut junk = frag(4, 0, true, &[0; 8]);
    junk.truncate(44);
    junk[5] = 4; // payload length 4: no room for the fragment header
    assert_eq!(r.push(&junk, t(0)), None);
    assert_eq!(r.stats.malformed, 3);
}

#[test]
fn timeouts_and_eviction() {
    let payload = data(2048);
    let mut r = Reassembler::new();
    assert_eq!(r.push(&frag(1, 0, true, &payload[..1024]), t(0)), None);
    assert_eq!(r.next_deadline(), Some(t(0) + REASSEMBLY_TIMEOUT));
    r.expire(t(60));
    assert_eq!(r.pending(), 0);
    assert_eq!(r.stats.timeouts, 1);
    assert_eq!(r.push(&frag(1, 1024, false, &payload[1024..]), t(61)), None);
    // A full table: the oldest gives way.
    let mut r = Reassembler::new();
    for ident in 0..=REASSEMBLIES as u32 {
        assert_eq!(
            r.push(&frag(ident, 0, true, &payload[..1024]), t(i64::from(ident))),
            None
        );
    }
    assert_eq!(r.pending(), REASSEMBLIES);
    assert_eq!(r.stats.evicted, 1);
    assert_eq!(r.push(&frag(0, 1024, false, &payload[1024..]), t(9)), None);
    let whole = r.push(
        &frag(REASSEMBLIES as u32, 1024, false, &payload[1024..]),
        t(9),
    );
    check_whole(&whole.expect("the newest completes"), &payload);
}

proptest! {
    #[test]
    fn any_order_reassembles(len in 1usize..MAX_PAYLOAD, size in 1usize..256, seed in any::<u64>()) {
        let payload = data(len);
        let mut frags = split(5, &payload, size * UNIT);
        // A seeded shuffle.
        let mut s = seed | 1;
        for i in (1..frags.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            frags.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut r = Reassembler::new();
        let mut got = Vec::new();
        for f in &frags {
            got.extend(r.push(f, t(0)));
        }
        prop_assert_eq!(got.len(), 1);
        let ip = Ipv6Packet::new_checked(&got[0][..]).unwrap();
        prop_assert_eq!(ip.payload(), &payload[..]);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut r = Reassembler::new();
        let mut packet = data;
        if packet.len() > 6 {
            packet[0] = 0x60;
            packet[6] = 44;
        }
        let _ = r.push(&packet, t(0));
    }
}
