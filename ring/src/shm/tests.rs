use super::*;
use core::sync::atomic::Ordering::*;
use proptest::prelude::*;

#[test]
fn heap_window_is_zeroed_and_page_aligned() {
    let w = Window::new_heap(8192);
    assert_eq!(w.len(), 8192);
    assert!(!w.is_empty());
    assert_eq!(w.as_ptr() as usize % 4096, 0);
    let mut buf = [0xffu8; 8192];
    w.read_bytes(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(Window::new_heap(0).is_empty());
}

#[test]
fn words_round_trip_and_alignment_is_checked() {
    let w = Window::new_heap(64);
    w.store_u32(8, 0xdead_beef, Release).unwrap();
    assert_eq!(w.load_u32(8, Acquire).unwrap(), 0xdead_beef);
    assert_eq!(w.read_pod::<u32>(8).unwrap(), 0xdead_beef);
    // Misaligned offsets are refused, not silently rounded.
    assert!(w.load_u32(2, Relaxed).is_err());
    assert!(w.store_u32(7, 1, Relaxed).is_err());
    // A sub-window with a misaligned base refuses words at offset 0 too.
    let odd = w.sub(1, 32).unwrap();
    assert!(odd.load_u32(0, Relaxed).is_err());
    assert!(odd.load_u32(3, Relaxed).is_ok());
    // The last word fits, one past does not.
    assert!(w.load_u32(60, Relaxed).is_ok());
    assert_eq!(
        w.load_u32(64, Relaxed),
        Err(OutOfBounds {
            offset: 64,
            len: 4,
            window_len: 64
        })
    );
}

#[test]
fn orderings_invalid_for_the_access_do_not_panic() {
    let w = Window::new_heap(8);
    w.store_u32(0, 5, Acquire).unwrap();
    w.store_u32(0, 6, AcqRel).unwrap();
    assert_eq!(w.load_u32(0, Release).unwrap(), 6);
    assert_eq!(w.load_u32(0, AcqRel).unwrap(), 6);
    assert_eq!(w.load_u32(0, SeqCst).unwrap(), 6);
}

#[test]
fn overflowing_offsets_are_errors() {
    let w = Window::new_heap(4096);
    let huge = [
        usize::MAX,
        usize::MAX - 1,
        usize::MAX - 3,
        usize::MAX - 4095,
    ];
    for &off in &huge {
        assert!(w.sub(off, 2).is_err());
        assert!(w.sub(off, 0).is_err());
        assert!(w.load_u32(off, Relaxed).is_err());
        assert!(w.store_u32(off, 1, Relaxed).is_err());
        assert!(w.read_bytes(off, &mut [0; 8]).is_err());
        assert!(w.write_bytes(off, &[0; 8]).is_err());
        assert!(w.fill(off, 8, 1).is_err());
        assert!(w.fill(1, off, 1).is_err());
        assert!(w.read_pod::<u64>(off).is_err());
        assert!(w.write_pod(off, &7u64).is_err());
        assert!(w.copy_from(off, &w, 0, 8).is_err());
        assert!(w.copy_from(0, &w, off, 8).is_err());
        assert!(w.copy_from(0, &w, 0, off).is_err());
    }
    assert!(w.sub(1, usize::MAX).is_err());
    let err = w.sub(4000, 100).unwrap_err();
    assert_eq!(
        err,
        OutOfBounds {
            offset: 4000,
            len: 100,
            window_len: 4096
        }
    );
    assert!(err.to_string().contains("0xfa0"));
}

#[test]
fn empty_accesses_at_the_end_are_fine() {
    let w = Window::new_heap(16);
    assert!(w.read_bytes(16, &mut []).is_ok());
    assert!(w.write_bytes(16, &[]).is_ok());
    assert!(w.sub(16, 0).unwrap().is_empty());
    assert!(w.read_bytes(17, &mut []).is_err());
}

#[test]
fn sub_windows_share_memory_and_are_bounded() {
    let w = Window::new_heap(256);
    let s = w.sub(100, 50).unwrap();
    assert_eq!(s.len(), 50);
    s.write_bytes(0, b"hello").unwrap();
    let mut buf = [0; 5];
    w.read_bytes(100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(s.write_bytes(46, b"hello").is_err());
    assert!(s.sub(10, 41).is_err());
    // The sub-window keeps the memory alive after the parent is gone.
    drop(w);
    s.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn fill_and_pod() {
    let w = Window::new_heap(1024);
    w.fill(3, 1000, 0xab).unwrap();
    let mut buf = [0; 1024];
    w.read_bytes(0, &mut buf).unwrap();
    assert!(buf[..3].iter().all(|&b| b == 0));
    assert!(buf[3..1003].iter().all(|&b| b == 0xab));
    assert!(buf[1003..].iter().all(|&b| b == 0));
    w.write_pod(5, &[1u16, 2, 3]).unwrap();
    assert_eq!(w.read_pod::<[u16; 3]>(5).unwrap(), [1, 2, 3]);
}

#[test]
fn from_raw_parts_null_is_empty() {
    // SAFETY: a null pointer yields an empty window that never dereferences.
    let w = unsafe { Window::from_raw_parts(core::ptr::null_mut(), 100, None) };
    assert!(w.is_empty());
    assert!(w.read_bytes(0, &mut [0]).is_err());
}

#[test]
fn from_raw_parts_keeps_owner_alive() {
    use alloc::sync::Arc;
    let backing = Window::new_heap(64);
    let owner: Arc<dyn core::any::Any + Send + Sync> = Arc::new(backing.clone());
    // SAFETY: `owner` holds a window that keeps the heap allocation alive for
    // as long as the new window exists; it is only accessed through windows.
    let w = unsafe { Window::from_raw_parts(backing.as_ptr(), 64, Some(owner)) };
    drop(backing);
    w.store_u32(0, 9, Relaxed).unwrap();
    assert_eq!(w.load_u32(0, Relaxed).unwrap(), 9);
}

#[test]
fn copy_between_windows_and_overlapping() {
    let a = Window::new_heap(4096);
    let b = Window::new_heap(4096);
    let data: alloc::vec::Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    a.write_bytes(10, &data).unwrap();
    b.copy_from(2000, &a, 10, 1000).unwrap();
    let mut out = alloc::vec![0; 1000];
    b.read_bytes(2000, &mut out).unwrap();
    assert_eq!(out, data);
    // Overlap, destination above the source: memmove semantics.
    a.copy_from(300, &a, 10, 1000).unwrap();
    a.read_bytes(300, &mut out).unwrap();
    assert_eq!(out, data);
    // Overlap, destination below the source.
    a.copy_from(5, &a, 300, 1000).unwrap();
    a.read_bytes(5, &mut out).unwrap();
    assert_eq!(out, data);
    // Out-of-range destination: nothing copied.
    assert!(b.copy_from(3500, &a, 0, 1000).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize, alloc::vec::Vec<u8>),
    Fill(usize, usize, u8),
    Copy(usize, usize, usize),
    Word(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets and lengths deliberately overshoot the 600-byte window.
    prop_oneof![
        (0..700usize, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(o, v)| Op::Write(o, v)),
        (0..700usize, 0..700usize, any::<u8>()).prop_map(|(o, l, b)| Op::Fill(o, l, b)),
        (0..700usize, 0..700usize, 0..700usize).prop_map(|(d, s, l)| Op::Copy(d, s, l)),
        (0..700usize, any::<u32>()).prop_map(|(o, v)| Op::Word(o, v)),
    ]
}

proptest! {
    /// The window behaves exactly like a byte vector, and refuses exactly the
    /// accesses the vector would reject.
    #[test]
    fn window_matches_a_vec_model(ops in proptest::collection::vec(op(), 1..40)) {
        const LEN: usize = 600;
        let w = Window::new_heap(LEN);
        let mut model = alloc::vec![0u8; LEN];
        for op in ops {
            match op {
                Op::Write(o, v) => {
                    let ok = o + v.len() <= LEN;
                    prop_assert_eq!(w.write_bytes(o, &v).is_ok(), ok);
                    if ok { model[o..o + v.len()].copy_from_slice(&v); }
                }
                Op::Fill(o, l, b) => {
                    let ok = o + l <= LEN;
                    prop_assert_eq!(w.fill(o, l, b).is_ok(), ok);
                    if ok { model[o..o + l].fill(b); }
                }
                Op::Copy(d, s, l) => {
                    let ok = d + l <= LEN && s + l <= LEN;
                    prop_assert_eq!(w.copy_from(d, &w, s, l).is_ok(), ok);
                    if ok { model.copy_within(s..s + l, d); }
                }
                Op::Word(o, v) => {
                    let ok = o + 4 <= LEN && o % 4 == 0;
                    prop_assert_eq!(w.store_u32(o, v, Relaxed).is_ok(), ok);
                    if ok { model[o..o + 4].copy_from_slice(&v.to_ne_bytes()); }
                }
            }
        }
        let mut out = alloc::vec![0u8; LEN];
        w.read_bytes(0, &mut out).unwrap();
        prop_assert_eq!(out, model);
    }

    /// Copies between two windows at any offsets (the word-by-word path when
    /// both sides are equally aligned, the bounce buffer otherwise) move
    /// exactly the bytes asked for.
    #[test]
    fn copies_between_windows(
        fill in proptest::collection::vec(any::<u8>(), 256),
        d in 0..128usize,
        s in 0..128usize,
        l in 0..128usize,
    ) {
        let a = Window::new_heap(256);
        let b = Window::new_heap(256);
        a.write_bytes(0, &fill).unwrap();
        b.copy_from(d, &a, s, l).unwrap();
        let mut model = alloc::vec![0u8; 256];
        model[d..d + l].copy_from_slice(&fill[s..s + l]);
        let mut out = alloc::vec![0u8; 256];
        b.read_bytes(0, &mut out).unwrap();
        prop_assert_eq!(out, model);
    }

    /// Descriptors read and written at every offset, aligned or not, are the
    /// bytes of the value.
    #[test]
    fn pods_at_any_offset(offset in 0..64usize, v in any::<[u32; 6]>()) {
        let w = Window::new_heap(128);
        w.write_pod(offset, &v).unwrap();
        let mut raw = [0u8; 24];
        w.read_bytes(offset, &mut raw).unwrap();
        prop_assert_eq!(&raw[..], bytemuck::bytes_of(&v));
        prop_assert_eq!(w.read_pod::<[u32; 6]>(offset).unwrap(), v);
        prop_assert_eq!(w.read_pod::<[u8; 3]>(offset).unwrap(), [raw[0], raw[1], raw[2]]);
        prop_assert!(w.read_pod::<[u32; 6]>(128 - 23).is_err());
    }

    /// Unaligned reads of every length return the same bytes as the model.
    #[test]
    fn unaligned_reads(start in 0..64usize, len in 0..64usize) {
        let w = Window::new_heap(128);
        let data: alloc::vec::Vec<u8> = (0..128u8).collect();
        w.write_bytes(0, &data).unwrap();
        let mut out = alloc::vec![0u8; len];
        w.read_bytes(start, &mut out).unwrap();
        prop_assert_eq!(&out[..], &data[start..start + len]);
    }
}

#[test]
fn compare_exchange_swaps_only_the_expected_word() {
    let w = Window::new_heap(16);
    w.store_u32(4, 0x0001_0005, Release).unwrap();
    // Someone else changed it first: we get what is there, nothing changes.
    assert_eq!(
        w.compare_exchange_u32(4, 0x0001_0001, 0),
        Ok(Err(0x0001_0005))
    );
    assert_eq!(w.load_u32(4, Acquire), Ok(0x0001_0005));
    assert_eq!(
        w.compare_exchange_u32(4, 0x0001_0005, 0),
        Ok(Ok(0x0001_0005))
    );
    assert_eq!(w.load_u32(4, Acquire), Ok(0));
    assert!(w.compare_exchange_u32(14, 0, 1).is_err());
    assert!(w.compare_exchange_u32(2, 0, 1).is_err());
}
