//! Byte fixtures both ways, and properties of the parser on hostile input.

use proptest::prelude::*;

use super::*;

/// A DISCOVER as the client sends it over IPoIB: op 1, htype 32, hlen 0,
/// xid 0x01020304, BROADCAST, zero addresses and chaddr, the magic cookie,
/// then message type 1, client id (type 0xff, 4 bytes), parameter request
/// list, end.
fn discover_bytes() -> std::vec::Vec<u8> {
    let mut b = std::vec![0u8; HEADER_LEN];
    b[0] = 1;
    b[1] = 32;
    b[2] = 0;
    b[4..8].copy_from_slice(&[1, 2, 3, 4]);
    b[10] = 0x80;
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, 1]);
    b.extend_from_slice(&[61, 5, 0xff, 0xaa, 0xbb, 0xcc, 0xdd]);
    b.extend_from_slice(&[55, 5, 1, 3, 51, 58, 59]);
    b.push(255);
    b
}

fn discover_repr() -> DhcpRepr {
    let mut r = DhcpRepr::ipoib_client(MessageType::Discover, 0x0102_0304);
    r.client_id = ClientId::from_slice(&[0xff, 0xaa, 0xbb, 0xcc, 0xdd]).ok();
    r
}

#[test]
fn discover_parses_and_emits_byte_for_byte() {
    let bytes = discover_bytes();
    let parsed = DhcpRepr::parse(&bytes).expect("parses");
    assert_eq!(parsed, discover_repr());
    assert_eq!(parsed.htype, HTYPE_INFINIBAND);
    assert_eq!(parsed.hlen, 0);
    assert!(parsed.broadcast && parsed.chaddr_is_zero());
    let mut out = [0u8; 400];
    let n = discover_repr().emit(&mut out).expect("fits");
    assert_eq!(n, discover_repr().buffer_len());
    assert_eq!(&out[..n], &bytes[..]);
}

#[test]
fn ack_options_round_trip() {
    let mut ack = DhcpRepr::ipoib_client(MessageType::Ack, 7);
    ack.op = Op::Reply;
    ack.parameter_request = false;
    ack.yiaddr = Ipv4Address::new(10, 77, 0, 2);
    ack.server_id = Some(Ipv4Address::new(10, 77, 0, 254));
    ack.subnet_mask = Some(Ipv4Address::new(255, 255, 255, 0));
    ack.router = Some(Ipv4Address::new(10, 77, 0, 1));
    ack.lease_time = Some(3600);
    ack.renewal_time = Some(1800);
    ack.rebinding_time = Some(3150);
    let mut out = [0u8; 400];
    let n = ack.emit(&mut out).expect("fits");
    // 240 + type 3 + three addresses and three times at 6 each + end.
    assert_eq!(n, 240 + 3 + 6 * 6 + 1);
    assert_eq!(&out[240..243], &[53, 1, 5]);
    assert_eq!(DhcpRepr::parse(&out[..n]), Ok(ack));
}

#[test]
fn pads_and_unknown_options_are_skipped_and_several_routers_give_the_first() {
    let mut b = discover_bytes();
    b.truncate(HEADER_LEN);
    b.extend_from_slice(&[0, 0, 12, 3, b'a', b'b', b'c', 53, 1, 2]);
    b.extend_from_slice(&[3, 8, 10, 0, 0, 1, 10, 0, 0, 2, 255, 9, 9, 9]);
    let r = DhcpRepr::parse(&b).expect("parses");
    assert_eq!(r.message_type, MessageType::Offer);
    assert_eq!(r.router, Some(Ipv4Address::new(10, 0, 0, 1)));
    assert_eq!(r.client_id, None);
}

#[test]
fn malformed_messages_are_typed_errors() {
    let good = discover_bytes();
    assert_eq!(DhcpRepr::parse(&good[..239]), Err(DhcpError::Truncated));
    let mut bad = good.clone();
    bad[236] = 0;
    assert_eq!(DhcpRepr::parse(&bad), Err(DhcpError::BadMagic));
    let mut cut = good[..HEADER_LEN].to_vec();
    cut.extend_from_slice(&[61, 9, 0xff]);
    assert_eq!(
        DhcpRepr::parse(&cut),
        Err(DhcpError::OptionTruncated { code: 61 })
    );
    let mut no_len = good[..HEADER_LEN].to_vec();
    no_len.push(53);
    assert_eq!(
        DhcpRepr::parse(&no_len),
        Err(DhcpError::OptionTruncated { code: 53 })
    );
    let mut wrong = good[..HEADER_LEN].to_vec();
    wrong.extend_from_slice(&[53, 1, 1, 54, 3, 1, 2, 3, 255]);
    assert_eq!(
        DhcpRepr::parse(&wrong),
        Err(DhcpError::BadOptionLength { code: 54, len: 3 })
    );
    let mut bootp = good[..HEADER_LEN].to_vec();
    bootp.push(255);
    assert_eq!(DhcpRepr::parse(&bootp), Err(DhcpError::NoMessageType));
    let mut out = [0u8; 100];
    assert_eq!(
        discover_repr().emit(&mut out),
        Err(DhcpError::BufferTooSmall)
    );
}

#[test]
fn unknown_message_type_and_op_are_kept_not_rejected() {
    let mut b = discover_bytes();
    b[0] = 9;
    b[HEADER_LEN + 2] = 200;
    let r = DhcpRepr::parse(&b).expect("parses");
    assert_eq!(r.op, Op::Unknown(9));
    assert_eq!(r.message_type, MessageType::Unknown(200));
    let mut out = [0u8; 400];
    let n = r.emit(&mut out).expect("fits");
    assert_eq!(&out[..n], &b[..]);
}

fn arb_addr() -> impl Strategy<Value = Ipv4Address> {
    any::<[u8; 4]>().prop_map(Ipv4Address::from)
}

fn arb_repr() -> impl Strategy<Value = DhcpRepr> {
    (
        (any::<u8>(), any::<u32>(), any::<bool>(), 1u8..=8),
        (
            arb_addr(),
            arb_addr(),
            proptest::option::of(arb_addr()),
            any::<[u8; 16]>(),
        ),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 2..MAX_CLIENT_ID)),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_addr()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((op, xid, bc, t), (ci, yi, sid, chaddr), id, (lease, t1, router, pr))| {
                let mut r = DhcpRepr::ipoib_client(MessageType::from(t), xid);
                r.op = Op::from(op);
                r.broadcast = bc;
                r.ciaddr = ci;
                r.yiaddr = yi;
                r.chaddr = chaddr;
                r.server_id = sid;
                r.client_id = id.and_then(|v| ClientId::from_slice(&v).ok());
                r.lease_time = lease;
                r.renewal_time = t1;
                r.router = router;
                r.parameter_request = pr;
                r
            },
        )
}

proptest! {
    /// Whatever the bytes, parsing returns (no panic) and never reads a
    /// client id longer than the bound.
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok(r) = DhcpRepr::parse(&bytes) {
            prop_assert!(r.client_id.map_or(0, |c| c.len()) <= MAX_CLIENT_ID);
        }
    }

    /// A header with arbitrary fields and the magic cookie, followed by
    /// arbitrary option bytes: still no panic, and what parses re-emits to
    /// something that parses to the same (the fuzz target found a `chaddr`
    /// that did not).
    #[test]
    fn arbitrary_options_parse_or_fail_cleanly(
        head in proptest::collection::vec(any::<u8>(), 236),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut b = head;
        b.extend_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&tail);
        if let Ok(r) = DhcpRepr::parse(&b) {
            let mut out = [0u8; 1024];
            let n = r.emit(&mut out).expect("fits");
            prop_assert_eq!(DhcpRepr::parse(&out[..n]), Ok(r));
        }
    }

    /// Emit then parse is the identity.
    #[test]
    fn emit_then_parse_round_trips(r in arb_repr()) {
        let mut out = [0u8; 1024];
        let n = r.emit(&mut out).expect("fits");
        prop_assert_eq!(n, r.buffer_len());
        prop_assert_eq!(DhcpRepr::parse(&out[..n]), Ok(r));
    }
}
