//! The answering half of a DHCP server whose clients' addresses are decided
//! already: the back end knows each seat's `ip=`, so there is no pool and
//! no lease database, only the RFC 2131 §4.3 rules for what to answer and
//! where to send it.

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

use super::wire::{DhcpRepr, MessageType, Op, HTYPE_INFINIBAND};

/// The one address a client may have, and what comes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatLease {
    /// The seat's name, for the log.
    pub name: alloc::string::String,
    pub address: Ipv4Cidr,
    pub router: Option<Ipv4Address>,
    /// Seconds.
    pub lease_secs: u32,
}

/// What to do with a client's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send this to `dst`.
    Reply { repr: DhcpRepr, dst: Ipv4Address },
    /// Nothing to send: the reason, for the log and the counters.
    Silent(Silence),
}

/// Why a message got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Not a client message over IPoIB with a client identifier (RFC 4390
    /// requires `htype` 32, `hlen` 0 and option 61).
    NotIpoibClient,
    /// The client chose another server's offer.
    OtherServer,
    /// Relayed (`giaddr` set): this server serves its own link only.
    Relayed,
    /// The client declines or releases the address.
    Declined,
    Released,
    /// A message type a server does not answer.
    Unhandled(MessageType),
}

/// The reply to `request` from the client whose only address is `lease`,
/// by the server at `server`.
pub fn answer(request: &DhcpRepr, lease: &SeatLease, server: Ipv4Address) -> Answer {
    let ipoib = request.op == Op::Request
        && request.htype == HTYPE_INFINIBAND
        && request.hlen == 0
        && request.client_id.is_some();
    if !ipoib {
        return Answer::Silent(Silence::NotIpoibClient);
    }
    if !request.giaddr.is_unspecified() {
        return Answer::Silent(Silence::Relayed);
    }
    let address = lease.address.address();
    let t = match request.message_type {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            if request.server_id.is_some_and(|s| s != server) {
                return Answer::Silent(Silence::OtherServer);
            }
            // SELECTING and INIT-REBOOT name the address in option 50;
            // RENEWING and REBINDING in ciaddr.
            let asked = request.requested_ip.unwrap_or(request.ciaddr);
            if asked == address {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        MessageType::Decline => return Answer::Silent(Silence::Declined),
        MessageType::Release => return Answer::Silent(Silence::Released),
        other => return Answer::Silent(Silence::Unhandled(other)),
    };
    let mut repr = DhcpRepr::ipoib_client(t, request.xid);
    repr.op = Op::Reply;
    repr.parameter_request = false;
    repr.broadcast = request.broadcast;
    repr.client_id = request.client_id.clone();
    repr.server_id = Some(server);
    if t != MessageType::Nak {
        repr.ciaddr = request.ciaddr;
        repr.yiaddr = address;
        repr.subnet_mask = Some(mask_of(lease.address.prefix_len()));
        repr.router = lease.router;
        repr.lease_time = Some(lease.lease_secs);
        if lease.lease_secs != u32::MAX {
            repr.renewal_time = Some(lease.lease_secs / 2);
            repr.rebinding_time = Some((u64::from(lease.lease_secs) * 7 / 8) as u32);
        }
    }
    // RFC 2131 §4.1: a client with an address (renewing) is answered
    // there; everything else is broadcast, since over IPoIB `chaddr` is
    // empty and the BROADCAST flag is set (RFC 4390 §2.2). A NAK always is.
    // Only the seat's own address counts as the client's: a reply is never
    // aimed at another host because a guest wrote its address in ciaddr.
    let dst = if t != MessageType::Nak && request.ciaddr == address {
        request.ciaddr
    } else {
        Ipv4Address::BROADCAST
    };
    Answer::Reply { repr, dst }
}

/// The netmask of a prefix length.
pub fn mask_of(prefix: u8) -> Ipv4Address {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Address::from(bits.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::ClientId;

    const SERVER: Ipv4Address = Ipv4Address::new(10, 77, 0, 254);

    fn lease() -> SeatLease {
        SeatLease {
            name: "g1".into(),
            address: Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, 2), 24),
            router: Some(Ipv4Address::new(10, 77, 0, 1)),
            lease_secs: 3600,
        }
    }

    fn request(t: MessageType) -> DhcpRepr {
        let mut r = DhcpRepr::ipoib_client(t, 99);
        r.client_id = ClientId::from_slice(&[0xff, 1, 2, 3, 4]).ok();
        r
    }

    fn reply(a: Answer) -> (DhcpRepr, Ipv4Address) {
        match a {
            Answer::Reply { repr, dst } => (repr, dst),
            Answer::Silent(s) => panic!("silent: {s:?}"),
        }
    }

    #[test]
    fn discover_gets_the_seat_address_broadcast() {
        let (offer, dst) = reply(answer(&request(MessageType::Discover), &lease(), SERVER));
        assert_eq!(dst, Ipv4Address::BROADCAST);
        assert_eq!(offer.message_type, MessageType::Offer);
        assert_eq!(
            (offer.op, offer.htype, offer.hlen, offer.xid),
            (Op::Reply, 32, 0, 99)
        );
        assert!(offer.broadcast && offer.chaddr_is_zero());
        assert_eq!(offer.yiaddr, Ipv4Address::new(10, 77, 0, 2));
        assert_eq!(offer.subnet_mask, Some(Ipv4Address::new(255, 255, 255, 0)));
        assert_eq!(offer.server_id, Some(SERVER));
        assert_eq!(offer.client_id, request(MessageType::Discover).client_id);
        assert_eq!(
            (offer.lease_time, offer.renewal_time, offer.rebinding_time),
            (Some(3600), Some(1800), Some(3150))
        );
    }

    #[test]
    fn request_for_the_seat_address_is_acked_and_any_other_naked() {
        let mut r = request(MessageType::Request);
        r.server_id = Some(SERVER);
        r.requested_ip = Some(Ipv4Address::new(10, 77, 0, 2));
        assert_eq!(
            reply(answer(&r, &lease(), SERVER)).0.message_type,
            MessageType::Ack
        );
        r.requested_ip = Some(Ipv4Address::new(10, 77, 0, 3));
        let (nak, dst) = reply(answer(&r, &lease(), SERVER));
        assert_eq!(nak.message_type, MessageType::Nak);
        assert_eq!(nak.yiaddr, Ipv4Address::UNSPECIFIED);
        assert_eq!(nak.lease_time, None);
        assert_eq!(dst, Ipv4Address::BROADCAST);
        r.server_id = Some(Ipv4Address::new(10, 77, 0, 9));
        assert_eq!(
            answer(&r, &lease(), SERVER),
            Answer::Silent(Silence::OtherServer)
        );
    }

    #[test]
    fn renewal_is_answered_by_unicast_to_ciaddr() {
        let mut r = request(MessageType::Request);
        r.ciaddr = Ipv4Address::new(10, 77, 0, 2);
        r.broadcast = false;
        let (ack, dst) = reply(answer(&r, &lease(), SERVER));
        assert_eq!(ack.message_type, MessageType::Ack);
        assert_eq!(dst, r.ciaddr);
        assert!(!ack.broadcast);
        r.ciaddr = Ipv4Address::new(10, 77, 0, 7);
        let (nak, dst) = reply(answer(&r, &lease(), SERVER));
        assert_eq!(
            (nak.message_type, dst),
            (MessageType::Nak, Ipv4Address::BROADCAST)
        );
    }

    #[test]
    fn non_ipoib_relayed_and_other_messages_are_silent() {
        let mut eth = request(MessageType::Discover);
        eth.htype = 1;
        eth.hlen = 6;
        assert_eq!(
            answer(&eth, &lease(), SERVER),
            Answer::Silent(Silence::NotIpoibClient)
        );
        let mut no_id = request(MessageType::Discover);
        no_id.client_id = None;
        assert_eq!(
            answer(&no_id, &lease(), SERVER),
            Answer::Silent(Silence::NotIpoibClient)
        );
        let mut relayed = request(MessageType::Discover);
        relayed.giaddr = Ipv4Address::new(10, 0, 0, 1);
        assert_eq!(
            answer(&relayed, &lease(), SERVER),
            Answer::Silent(Silence::Relayed)
        );
        assert_eq!(
            answer(&request(MessageType::Release), &lease(), SERVER),
            Answer::Silent(Silence::Released)
        );
        assert_eq!(
            answer(&request(MessageType::Inform), &lease(), SERVER),
            Answer::Silent(Silence::Unhandled(MessageType::Inform))
        );
        let mut reply_op = request(MessageType::Discover);
        reply_op.op = Op::Reply;
        assert_eq!(
            answer(&reply_op, &lease(), SERVER),
            Answer::Silent(Silence::NotIpoibClient)
        );
    }

    proptest::proptest! {
        /// Whatever a client asks, the only address ever offered or acked
        /// is its seat's, and a reply goes to it or to broadcast.
        #[test]
        fn only_the_seat_address_is_ever_given(
            t in 0u8..=9,
            ciaddr in proptest::prelude::any::<[u8; 4]>(),
            requested in proptest::option::of(proptest::prelude::any::<[u8; 4]>()),
            server_id in proptest::option::of(proptest::prelude::any::<[u8; 4]>()),
            htype in proptest::prelude::any::<u8>(),
            broadcast in proptest::prelude::any::<bool>(),
        ) {
            let mut r = request(MessageType::from(t));
            r.ciaddr = Ipv4Address::from(ciaddr);
            r.requested_ip = requested.map(Ipv4Address::from);
            r.server_id = server_id.map(Ipv4Address::from);
            r.htype = htype;
            r.broadcast = broadcast;
            if let Answer::Reply { repr, dst } = answer(&r, &lease(), SERVER) {
                let seat = lease().address.address();
                proptest::prop_assert!(repr.yiaddr == seat || repr.yiaddr.is_unspecified());
                proptest::prop_assert!(repr.message_type != MessageType::Ack || repr.yiaddr == seat);
                proptest::prop_assert!(dst == Ipv4Address::BROADCAST || dst == seat);
                proptest::prop_assert_eq!(repr.htype, 32);
            }
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_of(24), Ipv4Address::new(255, 255, 255, 0));
        assert_eq!(mask_of(32), Ipv4Address::new(255, 255, 255, 255));
        assert_eq!(mask_of(0), Ipv4Address::new(0, 0, 0, 0));
        assert_eq!(mask_of(17), Ipv4Address::new(255, 255, 128, 0));
    }
}
