use super::*;
use crate::layout::Layout;
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::sync::Arc;

fn port(n: u32) -> PortBlock {
    PortBlock {
        gid: [n as u8; 16],
        lid: n as u16,
        pkey: 0xffff,
        qpn: n,
        qkey: n.wrapping_mul(3),
        mtu: 4,
        state: 4,
        _reserved: [0; 2],
    }
}

#[test]
fn port_block_is_32_bytes() {
    assert_eq!(core::mem::size_of::<PortBlock>(), 32);
}

#[test]
fn state_round_trips_and_unknown_values_are_unknown() {
    for v in 0..=6 {
        assert_eq!(State::from_u32(v).to_u32(), v);
    }
    assert_eq!(State::from_u32(7), State::Unknown);
    assert_eq!(State::from_u32(u32::MAX), State::Unknown);
}

#[test]
fn header_needs_a_whole_aligned_page() {
    assert!(Header::new(&Window::new_heap(4095)).is_err());
    assert!(Header::new(&Window::new_heap(4096)).is_ok());
    let w = Window::new_heap(8192);
    assert!(Header::new(&w.sub(2, 5000).unwrap()).is_err());
}

#[test]
fn fields_sit_at_the_spec_offsets() {
    let w = Window::new_heap(4096);
    let h = Header::new(&w).unwrap();
    h.init_backend(0x1234, &port(7));
    h.set_backend_features(0x55);
    h.set_guest_state(State::Initialised);
    h.set_guest_epoch(0x1234);
    h.set_guest_features(0x66);
    h.write_params(&LayoutParams::DEFAULT);
    let word = |o| w.load_u32(o, Relaxed).unwrap();
    assert_eq!(word(0), MAGIC);
    assert_eq!(&w.read_pod::<[u8; 4]>(0).unwrap(), b"CGBI");
    assert_eq!(word(4), VERSION);
    assert_eq!(word(8), 2);
    assert_eq!(word(12), 0x1234);
    assert_eq!(word(16) % 2, 0);
    assert_eq!(word(20), 0x55);
    assert_eq!(w.read_pod::<PortBlock>(64).unwrap(), port(7));
    assert_eq!(word(128), 3);
    assert_eq!(word(132), 0x1234);
    assert_eq!(word(136), 0x66);
    let mut p = [0u8; 12];
    w.read_bytes(140, &mut p).unwrap();
    assert_eq!(p, [4, 8, 8, 0, 0, 1, 0, 1, 0, 0x10, 0, 0]);
}

#[test]
fn handshake() {
    let w = Window::new_heap(Layout::window_len_for(LayoutParams::DEFAULT).unwrap());
    // Stale garbage from a previous life is wiped by the back end.
    w.fill(0, 4096, 0xee).unwrap();
    let back = Header::new(&w).unwrap();
    let guest = Header::new(&w).unwrap();
    assert_eq!(guest.backend_state(), State::Unknown);

    back.init_backend(7, &port(1));
    assert_eq!(guest.magic(), MAGIC);
    assert_eq!(guest.version(), VERSION);
    assert_eq!(guest.backend_state(), State::InitWait);
    assert_eq!(guest.guest_state(), State::Unknown);
    assert_eq!(guest.epoch(), 7);
    assert_eq!(guest.read_port(), Some(port(1)));
    assert_eq!(guest.backend_features(), 0);

    let params = LayoutParams {
        tx_slots: 100,
        ..LayoutParams::DEFAULT
    };
    guest.write_params(&params);
    guest.set_guest_features(1);
    guest.set_guest_epoch(guest.epoch());
    guest.set_guest_state(State::Initialised);

    assert_eq!(back.guest_state(), State::Initialised);
    assert_eq!(back.guest_epoch(), 7);
    assert_eq!(back.guest_features(), 1);
    let got = back.read_params();
    assert_eq!(got, params);
    assert!(Layout::compute(got, w.len()).is_ok());
    back.set_backend_state(State::Connected);
    assert_eq!(guest.backend_state(), State::Connected);

    // Back end restarts: new epoch, guest's fields wiped.
    back.init_backend(8, &port(2));
    assert_eq!(guest.epoch(), 8);
    assert_ne!(guest.guest_epoch(), guest.epoch());
    assert_eq!(back.guest_state(), State::Unknown);
    back.set_epoch(9);
    assert_eq!(guest.epoch(), 9);
}

#[test]
fn params_are_not_validated_by_the_header() {
    let w = Window::new_heap(4096);
    let h = Header::new(&w).unwrap();
    w.write_bytes(140, &[0xff; 12]).unwrap();
    let p = h.read_params();
    assert_eq!(p.ctrl_order, 0xff);
    assert_eq!(p.slot_size, u32::MAX);
    assert!(Layout::compute(p, usize::MAX).is_err());
}

#[test]
fn seqlock_gives_up_on_a_stuck_writer() {
    let w = Window::new_heap(4096);
    let h = Header::new(&w).unwrap();
    h.write_port(&port(3));
    let gen = w.load_u32(16, Relaxed).unwrap();
    assert_eq!(gen % 2, 0);
    w.store_u32(16, gen + 1, Relaxed).unwrap();
    assert_eq!(h.read_port(), None);
    // The next write recovers from an odd generation.
    h.write_port(&port(4));
    assert_eq!(w.load_u32(16, Relaxed).unwrap() % 2, 0);
    assert_eq!(h.read_port(), Some(port(4)));
}

#[test]
fn seqlock_never_returns_a_torn_block() {
    let w = Window::new_heap(4096);
    let h = Header::new(&w).unwrap();
    h.write_port(&port(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let h = h.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(StdOrdering::Relaxed) {
                n = n.wrapping_add(1);
                h.write_port(&port(n));
            }
        })
    };
    let mut seen = 0;
    for _ in 0..200_000 {
        if let Some(p) = h.read_port() {
            // Every field derives from one `n`: a torn copy would mix two.
            assert_eq!(p, port(p.qpn));
            seen += 1;
        }
    }
    stop.store(true, StdOrdering::Relaxed);
    writer.join().unwrap();
    assert!(seen > 0);
}

#[test]
fn big_params_round_trip_and_sit_after_the_layout_params() {
    let w = Window::new_heap(HEADER_SIZE);
    let h = Header::new(&w).unwrap();
    h.init_backend(1, &port(1));
    // A zeroed header (what every old guest leaves) reads as all zero.
    let (zero, reserved_ok) = h.read_big_params();
    assert!(reserved_ok);
    assert_eq!((zero.cm_order, zero.tx_slots, zero.slot_size), (0, 0, 0));
    h.write_params(&LayoutParams::DEFAULT);
    let big = crate::layout::BigParams::DEFAULT;
    h.write_big_params(&big);
    assert_eq!(h.read_big_params(), (big, true));
    assert_eq!(h.read_params(), LayoutParams::DEFAULT, "untouched");
    let mut b = [0u8; 12];
    w.read_bytes(152, &mut b).unwrap();
    assert_eq!(b, [4, 0, 0, 0, 16, 0, 32, 0, 0, 0, 1, 0]);
    // Reserved bytes are reported, not hidden.
    w.write_bytes(153, &[1]).unwrap();
    assert!(!h.read_big_params().1);
    assert_eq!(features::GUEST_KNOWN & features::RX_CHECKSUMS, 0);
}
