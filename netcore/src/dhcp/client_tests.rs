//! The state machine against a scripted server: loss, NAK, renewal,
//! rebinding and expiry.

use super::*;

const SERVER: Ipv4Address = Ipv4Address::new(10, 77, 0, 254);
const ADDR: Ipv4Address = Ipv4Address::new(10, 77, 0, 2);
const ROUTER: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);

fn id() -> ClientId {
    ClientId::from_slice(&[0xff, 1, 2, 3, 4]).unwrap()
}

fn at(secs: f64) -> Instant {
    Instant::from_micros((secs * 1e6) as i64)
}

/// The server's reply of `t` to `request`, with a 100 s lease.
fn reply(request: &DhcpRepr, t: MessageType) -> DhcpRepr {
    let mut r = DhcpRepr::ipoib_client(t, request.xid);
    r.op = Op::Reply;
    r.parameter_request = false;
    r.client_id = request.client_id.clone();
    r.server_id = Some(SERVER);
    if t != MessageType::Nak {
        r.yiaddr = ADDR;
        r.subnet_mask = Some(Ipv4Address::new(255, 255, 255, 0));
        r.router = Some(ROUTER);
        r.lease_time = Some(100);
    }
    r
}

fn send(c: &mut DhcpClient, now: Instant) -> Outgoing {
    let (out, event) = c.poll(now);
    assert_eq!(event, None);
    out.expect("a message is due")
}

/// DISCOVER, OFFER, REQUEST, ACK at `t0`; returns the client, bound.
fn bound(t0: f64) -> DhcpClient {
    let mut c = DhcpClient::new(id(), at(t0), 42);
    let d = send(&mut c, at(t0));
    assert_eq!(
        c.receive(at(t0), &reply(&d.repr, MessageType::Offer)),
        Ok(None)
    );
    let r = send(&mut c, at(t0));
    let ev = c.receive(at(t0), &reply(&r.repr, MessageType::Ack));
    assert!(matches!(ev, Ok(Some(Event::Configured(_)))));
    c
}

#[test]
fn discover_is_rfc4390_from_nothing_to_broadcast() {
    let mut c = DhcpClient::new(id(), at(0.0), 1);
    let d = send(&mut c, at(0.0));
    assert_eq!(d.src, Ipv4Address::UNSPECIFIED);
    assert_eq!(d.dst, Ipv4Address::BROADCAST);
    assert_eq!(d.repr.message_type, MessageType::Discover);
    assert_eq!((d.repr.htype, d.repr.hlen), (32, 0));
    assert!(d.repr.broadcast && d.repr.chaddr_is_zero());
    assert_eq!(d.repr.client_id, Some(id()));
}

#[test]
fn full_exchange_gives_the_lease() {
    let mut c = DhcpClient::new(id(), at(0.0), 1);
    let d = send(&mut c, at(0.0));
    c.receive(at(0.1), &reply(&d.repr, MessageType::Offer))
        .unwrap();
    let r = send(&mut c, at(0.1));
    assert_eq!(r.repr.message_type, MessageType::Request);
    assert_eq!(r.repr.server_id, Some(SERVER));
    assert_eq!(r.repr.requested_ip, Some(ADDR));
    assert_eq!(r.repr.xid, d.repr.xid);
    let Ok(Some(Event::Configured(lease))) = c.receive(at(0.2), &reply(&r.repr, MessageType::Ack))
    else {
        panic!("no lease");
    };
    assert_eq!(lease.address, Ipv4Cidr::new(ADDR, 24));
    assert_eq!(lease.router, Some(ROUTER));
    assert_eq!(lease.server, SERVER);
    assert_eq!(lease.duration, Some(Duration::from_secs(100)));
    assert_eq!(lease.renew_after, Some(Duration::from_secs(50)));
    assert_eq!(lease.rebind_after, Some(Duration::from_secs(87)));
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.poll_at(), at(50.2));
}

#[test]
fn lost_offers_are_retransmitted_with_backoff() {
    let mut c = DhcpClient::new(id(), at(0.0), 7);
    let first = send(&mut c, at(0.0));
    let mut sent = std::vec![0.0f64];
    // No OFFER comes: each DISCOVER waits about twice as long as the last.
    for _ in 0..5 {
        let t = c.poll_at();
        assert_eq!(c.poll(t - Duration::from_millis(1)), (None, None));
        let again = send(&mut c, t);
        assert_eq!(again.repr.xid, first.repr.xid);
        sent.push(t.total_millis() as f64 / 1000.0);
    }
    let gaps: std::vec::Vec<f64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, nominal) in gaps.iter().zip([4.0, 8.0, 16.0, 32.0, 64.0]) {
        assert!((gap - nominal).abs() <= 1.0, "gaps {gaps:?}");
    }
    // Then capped at 64 s.
    let t = c.poll_at();
    send(&mut c, t);
    let gap = (c.poll_at() - t).total_millis();
    assert!((63_000..=65_000).contains(&gap), "{gap}");
    assert_eq!(c.transmissions(), 7);
}

#[test]
fn lost_ack_retransmits_the_request_then_starts_over() {
    let mut c = DhcpClient::new(id(), at(0.0), 3);
    let d = send(&mut c, at(0.0));
    c.receive(at(0.0), &reply(&d.repr, MessageType::Offer))
        .unwrap();
    for i in 0..MAX_REQUESTS {
        let t = c.poll_at();
        let r = send(&mut c, t);
        assert_eq!(r.repr.message_type, MessageType::Request, "request {i}");
    }
    // Four REQUESTs without an ACK: back to DISCOVER, with a new xid.
    let t = c.poll_at();
    let again = send(&mut c, t);
    assert_eq!(again.repr.message_type, MessageType::Discover);
    assert_ne!(again.repr.xid, d.repr.xid);
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn nak_restarts_after_a_pause() {
    let mut c = DhcpClient::new(id(), at(0.0), 3);
    let d = send(&mut c, at(0.0));
    c.receive(at(0.0), &reply(&d.repr, MessageType::Offer))
        .unwrap();
    let r = send(&mut c, at(0.0));
    assert_eq!(
        c.receive(at(1.0), &reply(&r.repr, MessageType::Nak)),
        Ok(None)
    );
    assert_eq!(c.state(), State::Selecting);
    assert_eq!(c.poll(at(2.5)), (None, None));
    let again = send(&mut c, at(3.0));
    assert_eq!(again.repr.message_type, MessageType::Discover);
    assert_ne!(again.repr.xid, r.repr.xid);
}

#[test]
fn replies_to_others_and_out_of_state_are_ignored() {
    let mut c = DhcpClient::new(id(), at(0.0), 3);
    let d = send(&mut c, at(0.0));
    let mut other_xid = reply(&d.repr, MessageType::Offer);
    other_xid.xid ^= 1;
    assert_eq!(c.receive(at(0.0), &other_xid), Err(Ignored::NotOurs));
    let mut other_id = reply(&d.repr, MessageType::Offer);
    other_id.client_id = ClientId::from_slice(&[0xff, 9, 9, 9, 9]).ok();
    assert_eq!(c.receive(at(0.0), &other_id), Err(Ignored::NotOurs));
    let mut request = reply(&d.repr, MessageType::Offer);
    request.op = Op::Request;
    assert_eq!(c.receive(at(0.0), &request), Err(Ignored::NotOurs));
    assert_eq!(
        c.receive(at(0.0), &reply(&d.repr, MessageType::Ack)),
        Err(Ignored::Unexpected)
    );
    let mut no_lease = reply(&d.repr, MessageType::Offer);
    no_lease.lease_time = None;
    assert_eq!(c.receive(at(0.0), &no_lease), Err(Ignored::Unusable));
    let mut network = reply(&d.repr, MessageType::Offer);
    network.yiaddr = Ipv4Address::new(10, 77, 0, 0);
    assert_eq!(c.receive(at(0.0), &network), Err(Ignored::Unusable));
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn renews_at_t1_by_unicast_and_the_ack_extends_the_lease() {
    let mut c = bound(0.0);
    assert_eq!(c.poll(at(49.9)), (None, None));
    let r = send(&mut c, at(50.0));
    assert_eq!(c.state(), State::Renewing);
    assert_eq!(r.src, ADDR);
    assert_eq!(r.dst, SERVER);
    assert_eq!(r.repr.ciaddr, ADDR);
    assert!(!r.repr.broadcast);
    assert_eq!(r.repr.requested_ip, None);
    assert_eq!(r.repr.server_id, None);
    // Same address: no event, the lease runs from now.
    assert_eq!(
        c.receive(at(50.5), &reply(&r.repr, MessageType::Ack)),
        Ok(None)
    );
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.poll_at(), at(100.5));
}

#[test]
fn rebinds_at_t2_by_broadcast_and_expiry_removes_the_address() {
    let mut c = bound(0.0);
    let r1 = send(&mut c, at(50.0));
    // Renewal retries: half the way to T2 (37 s left, so at T2 itself since
    // the minute floor is longer).
    assert_eq!(c.poll_at(), at(87.0));
    let r2 = send(&mut c, at(87.0));
    assert_eq!(c.state(), State::Rebinding);
    assert_eq!(r2.dst, Ipv4Address::BROADCAST);
    assert!(r2.repr.broadcast);
    assert_ne!(r2.repr.xid, r1.repr.xid);
    assert_eq!(c.poll_at(), at(100.0));
    let (out, event) = c.poll(at(100.0));
    assert_eq!(out, None);
    assert_eq!(
        event,
        Some(Event::Deconfigured {
            address: Ipv4Cidr::new(ADDR, 24)
        })
    );
    assert_eq!(c.lease(), None);
    // And it starts over at once.
    let d = send(&mut c, at(100.0));
    assert_eq!(d.repr.message_type, MessageType::Discover);
    assert_eq!(d.src, Ipv4Address::UNSPECIFIED);
}

#[test]
fn nak_while_renewing_removes_the_address() {
    let mut c = bound(0.0);
    let r = send(&mut c, at(50.0));
    assert_eq!(
        c.receive(at(51.0), &reply(&r.repr, MessageType::Nak)),
        Ok(Some(Event::Deconfigured {
            address: Ipv4Cidr::new(ADDR, 24)
        }))
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn lease_of_checks_and_defaults() {
    let base = reply(
        &DhcpRepr::ipoib_client(MessageType::Discover, 1),
        MessageType::Ack,
    );
    let mut r = base.clone();
    r.router = Some(Ipv4Address::new(192, 168, 0, 1));
    assert_eq!(lease_of(&r).map(|l| l.router), Some(None));
    let mut r = base.clone();
    r.subnet_mask = Some(Ipv4Address::new(255, 0, 255, 0));
    assert_eq!(lease_of(&r), None);
    let mut r = base.clone();
    r.lease_time = Some(u32::MAX);
    assert_eq!(lease_of(&r).map(|l| l.duration), Some(None));
    let mut r = base.clone();
    r.renewal_time = Some(90);
    r.rebinding_time = Some(80);
    let l = lease_of(&r).unwrap();
    assert_eq!(
        (l.renew_after, l.rebind_after),
        (Some(Duration::from_secs(80)), Some(Duration::from_secs(80)))
    );
    let mut r = base;
    r.lease_time = Some(2);
    assert_eq!(lease_of(&r), None);
    assert_eq!(prefix_of(Ipv4Address::new(255, 255, 255, 255)), Some(32));
    assert_eq!(prefix_of(Ipv4Address::new(0, 0, 0, 0)), None);
}
