use super::*;
use alloc::string::ToString;

#[test]
fn default_layout_matches_the_spec() {
    let p = LayoutParams::DEFAULT;
    let len = Layout::window_len_for(p).unwrap();
    let l = Layout::compute(p, len).unwrap();
    // ctrl: 256 + 16 * (32 + 32) = 1280 bytes at 4096.
    assert_eq!(l.ctrl, 4096..5376);
    // tx: 256 + 256 * (24 + 8) = 8448 bytes, 64-aligned.
    assert_eq!(l.tx, 5376..13824);
    // rx: 256 + 256 * (8 + 24).
    assert_eq!(l.rx, 13824..22272);
    // buffers: 4096-aligned, 512 slots of 4096.
    assert_eq!(l.buffers, 24576..24576 + 512 * 4096);
    assert_eq!(len, l.buffers.end);
    assert_eq!(l.tx_buffers(), 24576..24576 + 256 * 4096);
    assert_eq!(l.rx_buffers(), l.tx_buffers().end..l.buffers.end);
    assert_eq!(l.tx_slot(0), Some(24576..28672));
    assert_eq!(l.tx_slot(255).unwrap().end, l.tx_buffers().end);
    assert_eq!(l.tx_slot(256), None);
    assert_eq!(l.rx_slot(0).unwrap().start, l.rx_buffers().start);
    assert_eq!(l.rx_slot(255).unwrap().end, l.buffers.end);
    assert_eq!(l.rx_slot(256), None);
    assert_eq!(l.params, p);
}

#[test]
fn rings_are_64_aligned_when_sizes_are_odd() {
    // A ring of `u8`/`u8` entries leaves the next ring unaligned unless
    // `place` rounds up.
    assert_eq!(ring_bytes::<u8, u8>(1), 260);
    assert_eq!(place(4096 + 260, 64, 10), Some(4416..4426));
    assert_eq!(place(usize::MAX - 2, 64, 1), None);
    assert_eq!(place(usize::MAX - 64, 64, 100), None);
    assert_eq!(place(0, 4096, 1), Some(0..1));
}

#[test]
fn ring_bytes_is_checked() {
    assert_eq!(ring_bytes::<CtrlRequest, CtrlResponse>(4), 256 + 16 * 64);
    assert_eq!(ring_bytes::<u8, u8>(200), usize::MAX);
    assert_eq!(ring_bytes::<[u8; 4096], u8>(63), usize::MAX);
}

#[test]
fn does_not_fit() {
    let p = LayoutParams::DEFAULT;
    let need = Layout::window_len_for(p).unwrap();
    assert_eq!(
        Layout::compute(p, need - 1),
        Err(LayoutError::DoesNotFit {
            needed: need,
            window_len: need - 1
        })
    );
    assert!(Layout::compute(p, 0).is_err());
    assert!(Layout::compute(p, need + 12345).is_ok());
}

#[test]
fn errors_name_the_field() {
    let d = LayoutParams::DEFAULT;
    let cases: [(LayoutParams, &str); 12] = [
        (LayoutParams { ctrl_order: 0, ..d }, "ctrl_order"),
        (
            LayoutParams {
                ctrl_order: 13,
                ..d
            },
            "ctrl_order",
        ),
        (LayoutParams { tx_order: 0, ..d }, "tx_order"),
        (LayoutParams { tx_order: 255, ..d }, "tx_order"),
        (LayoutParams { rx_order: 13, ..d }, "rx_order"),
        (LayoutParams { tx_slots: 0, ..d }, "tx_slots"),
        (
            LayoutParams {
                tx_slots: 4097,
                ..d
            },
            "tx_slots",
        ),
        (LayoutParams { rx_slots: 0, ..d }, "rx_slots"),
        (
            LayoutParams {
                slot_size: 192,
                ..d
            },
            "slot_size",
        ),
        (
            LayoutParams {
                slot_size: 300,
                ..d
            },
            "slot_size",
        ),
        (
            LayoutParams {
                slot_size: 65600,
                ..d
            },
            "slot_size",
        ),
        (
            LayoutParams {
                slot_size: u32::MAX,
                ..d
            },
            "slot_size",
        ),
    ];
    for (p, name) in cases {
        let e = Layout::compute(p, usize::MAX).unwrap_err();
        assert!(e.to_string().contains(name), "{e} should name {name}");
        assert_eq!(Layout::window_len_for(p), Err(e));
    }
    assert_eq!(
        Layout::compute(LayoutParams { rx_order: 13, ..d }, usize::MAX),
        Err(LayoutError::BadRingOrder {
            ring: "rx_order",
            order: 13
        })
    );
    let e = Layout::compute(d, 10).unwrap_err();
    assert!(e.to_string().contains("window_len"));
}

#[test]
fn extremes_are_accepted() {
    let min = LayoutParams {
        ctrl_order: 1,
        tx_order: 1,
        rx_order: 1,
        tx_slots: 1,
        rx_slots: 1,
        slot_size: 256,
    };
    let l = Layout::compute(min, Layout::window_len_for(min).unwrap()).unwrap();
    assert_eq!(l.buffers.len(), 512);
    let max = LayoutParams {
        ctrl_order: 12,
        tx_order: 12,
        rx_order: 12,
        tx_slots: 4096,
        rx_slots: 4096,
        slot_size: 65536,
    };
    let len = Layout::window_len_for(max).unwrap();
    assert_eq!(
        Layout::compute(max, len).unwrap().buffers.len(),
        8192 * 65536
    );
}

proptest::proptest! {
    /// Any parameters either fail cleanly or give ordered, aligned,
    /// non-overlapping parts inside the window.
    #[test]
    fn any_params_are_safe(
        ctrl_order: u8, tx_order: u8, rx_order: u8,
        tx_slots: u16, rx_slots: u16, slot_size: u32, window_len: usize,
    ) {
        let p = LayoutParams { ctrl_order, tx_order, rx_order, tx_slots, rx_slots, slot_size };
        if let Ok(l) = Layout::compute(p, window_len) {
            proptest::prop_assert_eq!(l.ctrl.start, 4096);
            proptest::prop_assert!(l.ctrl.end <= l.tx.start && l.tx.end <= l.rx.start);
            proptest::prop_assert!(l.rx.end <= l.buffers.start && l.buffers.end <= window_len);
            proptest::prop_assert_eq!(l.tx.start % 64, 0);
            proptest::prop_assert_eq!(l.rx.start % 64, 0);
            proptest::prop_assert_eq!(l.buffers.start % 4096, 0);
        }
    }
}

#[test]
fn connected_mode_adds_a_cm_ring_and_a_big_area_and_changes_nothing_without_it() {
    let p = LayoutParams::DEFAULT;
    let old = Layout::compute(p, Layout::window_len_for(p).unwrap()).unwrap();
    assert_eq!(
        Layout::compute_with(p, None, old.buffers.end),
        Ok(old.clone())
    );
    assert_eq!(old.big, None);
    let big = BigParams::DEFAULT;
    let len = Layout::window_len_with(p, Some(big)).unwrap();
    let l = Layout::compute_with(p, Some(big), len).unwrap();
    let b = l.big.clone().unwrap();
    assert_eq!(
        (l.ctrl.clone(), l.tx.clone(), l.rx.clone()),
        (old.ctrl, old.tx, old.rx)
    );
    // cm: 256 + 16 * (48 + 48) right after the RX ring, 64-aligned.
    assert_eq!(b.cm, 22272..22272 + 256 + 16 * 96);
    // The buffer area moves up behind it, to the next page.
    assert_eq!(l.buffers.start, 24576);
    assert!(b.cm.end <= l.buffers.start);
    assert_eq!(b.area.start, l.buffers.end);
    assert_eq!(b.area.len(), 48 * 65536);
    assert_eq!(len, b.area.end);
    assert_eq!(b.tx_slot(0), Some(b.area.start..b.area.start + 65536));
    assert_eq!(b.tx_slot(16), None);
    assert_eq!(b.rx_slot(0).unwrap().start, b.area.start + 16 * 65536);
    assert_eq!(b.rx_slot(31).unwrap().end, b.area.end);
    assert_eq!(b.rx_slot(32), None);
    assert!(matches!(
        Layout::compute_with(p, Some(big), len - 1),
        Err(LayoutError::DoesNotFit { .. })
    ));
}

#[test]
fn bad_big_params_name_the_field() {
    let p = LayoutParams::DEFAULT;
    let d = BigParams::DEFAULT;
    let cases = [
        (BigParams { cm_order: 0, ..d }, "cm_order"),
        (BigParams { cm_order: 9, ..d }, "cm_order"),
        (BigParams { tx_slots: 0, ..d }, "big_tx_slots"),
        (BigParams { rx_slots: 257, ..d }, "big_rx_slots"),
        (
            BigParams {
                slot_size: 4096,
                ..d
            },
            "big_slot_size",
        ),
        (
            BigParams {
                slot_size: 65536 + 4096,
                ..d
            },
            "big_slot_size",
        ),
        (
            BigParams {
                slot_size: 8192 + 64,
                ..d
            },
            "big_slot_size",
        ),
    ];
    for (big, name) in cases {
        let err = Layout::compute_with(p, Some(big), usize::MAX).unwrap_err();
        assert!(
            matches!(err, LayoutError::BadBigParam { field, .. } if field == name),
            "{err:?}"
        );
        assert!(err.to_string().contains(name));
    }
}
