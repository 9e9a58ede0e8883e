//! netcore's DHCP over IPoIB on arbitrary bytes: the message parser (with a
//! round trip), the server's answer to it, and a client taking it as a
//! reply to its own DISCOVER, then running its timers. Nothing may panic,
//! and the server may never give out any address but the seat's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netcore::dhcp::server::{answer, Answer};
use netcore::dhcp::{ClientId, DhcpClient, DhcpRepr, SeatLease};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

fuzz_target!(|data: &[u8]| {
    let Ok(repr) = DhcpRepr::parse(data) else {
        return;
    };
    let mut out = [0u8; 2048];
    let n = repr.emit(&mut out).expect("a parsed message re-emits");
    assert_eq!(DhcpRepr::parse(&out[..n]), Ok(repr.clone()));

    let seat = Ipv4Address::new(10, 77, 0, 2);
    let lease = SeatLease {
        name: "g1".into(),
        address: Ipv4Cidr::new(seat, 24),
        router: Some(Ipv4Address::new(10, 77, 0, 1)),
        lease_secs: 3600,
    };
    if let Answer::Reply { repr: reply, dst } =
        answer(&repr, &lease, Ipv4Address::new(10, 77, 0, 254))
    {
        assert!(reply.yiaddr == seat || reply.yiaddr.is_unspecified());
        assert!(dst == seat || dst == Ipv4Address::BROADCAST);
    }

    // The bytes as the reply to a client's DISCOVER (same xid), and as the
    // reply after that, with the clock run on past every timer.
    let id = ClientId::from_slice(&[0xff, 0, 0, 0, 1]).expect("fits");
    let mut client = DhcpClient::new(id, Instant::ZERO, 7);
    let (Some(discover), _) = client.poll(Instant::ZERO) else {
        return;
    };
    let mut reply = repr;
    reply.xid = discover.repr.xid;
    let mut now = Instant::ZERO;
    for _ in 0..4 {
        let _ = client.receive(now, &reply);
        let _ = client.poll(now);
        now = client.poll_at().max(now + Duration::from_millis(1));
        if let (Some(next), _) = client.poll(now) {
            reply.xid = next.repr.xid;
        }
    }
});
