//! Driving smoltcp over a device that can run out of room, without losing
//! TCP state: [`poll_interface`] in place of `Interface::poll`.
//!
//! smoltcp 0.14 asks the device for a TX token only after a TCP socket has
//! decided what to send. For most segments a refusal costs nothing (the
//! socket tries again next time), but a fast retransmit is forgotten: the
//! socket clears its pending flag and its retransmission timer before it
//! asks, so a refused fast retransmit leaves the data unacknowledged with no
//! timer running, and the connection stalls for good. We saw exactly that:
//! a hosted 256 MiB transfer over connected mode stopped in about one run
//! in eight, the sender's socket showing a full window in flight, 25
//! duplicate ACKs and an idle timer (the hole was 24 bytes the receiver
//! had trimmed after its window shrank by the window scale's rounding).
//!
//! So egress runs in passes (`Interface::poll_egress`; each pass lets
//! every socket send at most one packet) and a pass starts only when the
//! device has room for one packet from every socket that may send
//! ([`TxRoom`]). Ingress is not held back: a refused receive leaves the
//! packet where it is.

use smoltcp::iface::{Interface, PollIngressSingleResult, PollResult, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp, Socket};
use smoltcp::time::Instant;

/// How many packets a device can take from the stack right now.
pub trait TxRoom {
    /// Packets the device takes now without refusing a TX token, dropping
    /// or making an avoidable copy.
    fn tx_room(&self) -> usize;
    /// [`tx_room`](TxRoom::tx_room) with nothing queued or in flight.
    fn tx_room_max(&self) -> usize;
}

/// `Interface::poll`, except that an egress pass starts only when `device`
/// has room for every socket that may send in it (module docs say why).
pub fn poll_interface<D>(
    iface: &mut Interface,
    now: Instant,
    device: &mut D,
    sockets: &mut SocketSet<'_>,
) -> PollResult
where
    D: Device + TxRoom + ?Sized,
{
    let mut result = PollResult::None;
    iface.poll_maintenance(now);
    loop {
        match iface.poll_ingress_single(now, device, sockets) {
            PollIngressSingleResult::None => break,
            PollIngressSingleResult::PacketProcessed => {}
            PollIngressSingleResult::SocketStateChanged => result = PollResult::SocketStateChanged,
        }
    }
    let need = pass_need(sockets).min(device.tx_room_max()).max(1);
    while device.tx_room() >= need {
        match iface.poll_egress(now, device, sockets) {
            PollResult::None => break,
            PollResult::SocketStateChanged => result = PollResult::SocketStateChanged,
        }
    }
    result
}

/// Packets one egress pass may send: one per socket that can send (a TCP
/// socket that is neither listening nor closed, a UDP or ICMP socket with
/// something queued, any other kind), and one for the interface's own (an
/// IGMP report, an IPv4 fragment). A socket with nothing to send does not
/// count: many idle sockets must not hold egress back until every slot is
/// free.
fn pass_need(sockets: &SocketSet<'_>) -> usize {
    1 + sockets
        .iter()
        .filter(|(_, socket)| match socket {
            Socket::Tcp(t) => !matches!(t.state(), tcp::State::Listen | tcp::State::Closed),
            Socket::Udp(u) => u.send_queue() > 0,
            Socket::Icmp(i) => i.send_queue() > 0,
            #[allow(unreachable_patterns)]
            _ => true,
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec;
    use alloc::vec::Vec;
    use smoltcp::iface::Config;
    use smoltcp::phy::{self, DeviceCapabilities, Medium};
    use smoltcp::time::Duration;
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Packet, TcpPacket};

    /// One end of a wire: what it sent waits in `sent`, what it receives
    /// in `inbox`; `room` TX tokens are left (a refusal is counted).
    #[derive(Default)]
    struct Wire {
        room: usize,
        refused: usize,
        sent: VecDeque<Vec<u8>>,
        inbox: VecDeque<Vec<u8>>,
    }

    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

    impl phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl phy::TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut packet = vec![0; len];
            let result = f(&mut packet);
            self.0.push_back(packet);
            result
        }
    }

    impl Device for Wire {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;

        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
            let packet = self.inbox.pop_front()?;
            Some((Rx(packet), Tx(&mut self.sent)))
        }

        fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
            if self.room == 0 {
                self.refused += 1;
                return None;
            }
            self.room -= 1;
            Some(Tx(&mut self.sent))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ip;
            caps.max_transmission_unit = 1500;
            caps
        }
    }

    impl TxRoom for Wire {
        fn tx_room(&self) -> usize {
            self.room
        }

        fn tx_room_max(&self) -> usize {
            64
        }
    }

    struct End {
        iface: Interface,
        wire: Wire,
        sockets: SocketSet<'static>,
        socket: smoltcp::iface::SocketHandle,
    }

    fn end(address: Ipv4Address, now: Instant) -> End {
        let mut wire = Wire {
            room: 64,
            ..Wire::default()
        };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut wire, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(address), 24))
                .expect("room");
        });
        let mut sockets = SocketSet::new(Vec::new());
        let socket = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        ));
        End {
            iface,
            wire,
            sockets,
            socket,
        }
    }

    /// Whether `packet` (IPv4) is a TCP segment that carries data.
    fn carries_data(packet: &[u8]) -> bool {
        Ipv4Packet::new_checked(packet)
            .ok()
            .and_then(|ip| {
                let header = usize::from(ip.header_len());
                let total = usize::from(ip.total_len());
                let tcp = TcpPacket::new_checked(ip.into_inner().get(header..total)?).ok()?;
                Some(!tcp.payload().is_empty())
            })
            .unwrap_or(false)
    }

    /// A sends 8 segments to B; the first is lost on the wire; A takes the
    /// duplicate ACKs the rest bring in a round where its device has no
    /// room. Returns what A still has unacknowledged after 5 s more.
    fn lose_a_segment_then_refuse(
        poll: fn(&mut Interface, Instant, &mut Wire, &mut SocketSet<'_>),
    ) -> (usize, usize) {
        let mut now = Instant::from_millis(1);
        let a_ip = Ipv4Address::new(10, 0, 0, 1);
        let b_ip = Ipv4Address::new(10, 0, 0, 2);
        let (mut a, mut b) = (end(a_ip, now), end(b_ip, now));
        b.sockets
            .get_mut::<tcp::Socket>(b.socket)
            .listen(9)
            .expect("listen");
        a.sockets
            .get_mut::<tcp::Socket>(a.socket)
            .connect(a.iface.context(), (b_ip, 9), 40000)
            .expect("connect");
        let round = |a: &mut End, b: &mut End, now: Instant, drop_first_data: bool| {
            let mut dropped = false;
            poll(&mut a.iface, now, &mut a.wire, &mut a.sockets);
            while let Some(packet) = a.wire.sent.pop_front() {
                if drop_first_data && !dropped && carries_data(&packet) {
                    dropped = true;
                    continue;
                }
                b.wire.inbox.push_back(packet);
            }
            poll(&mut b.iface, now, &mut b.wire, &mut b.sockets);
            // B reads what arrived in order (its window stays open).
            let mut sink = [0u8; 4096];
            let socket = b.sockets.get_mut::<tcp::Socket>(b.socket);
            while socket.recv_slice(&mut sink).unwrap_or(0) > 0 {}
            a.wire.inbox.extend(b.wire.sent.drain(..));
            dropped
        };
        for _ in 0..10 {
            round(&mut a, &mut b, now, false);
            now += Duration::from_millis(1);
        }
        assert!(
            a.sockets.get::<tcp::Socket>(a.socket).may_send(),
            "connected"
        );
        let data = vec![7u8; 8 * 1400];
        a.sockets
            .get_mut::<tcp::Socket>(a.socket)
            .send_slice(&data)
            .expect("queued");
        // A sends; the first data segment is lost; B answers the others
        // with duplicate ACKs, which wait in A's inbox.
        assert!(round(&mut a, &mut b, now, true), "a data segment to lose");
        assert!(
            a.wire.inbox.len() >= 3,
            "{} duplicate ACKs",
            a.wire.inbox.len()
        );
        // A takes them with no room in its device.
        now += Duration::from_millis(1);
        a.wire.room = 0;
        poll(&mut a.iface, now, &mut a.wire, &mut a.sockets);
        let refused = a.wire.refused;
        b.wire.inbox.extend(a.wire.sent.drain(..));
        // Room again; 5 s of rounds.
        a.wire.room = 64;
        for _ in 0..5000 {
            now += Duration::from_millis(1);
            a.wire.room = 64;
            round(&mut a, &mut b, now, false);
        }
        (a.sockets.get::<tcp::Socket>(a.socket).send_queue(), refused)
    }

    #[test]
    fn a_fast_retransmit_waits_for_room_instead_of_being_lost() {
        let (unacked, refused) = lose_a_segment_then_refuse(|iface, now, wire, sockets| {
            poll_interface(iface, now, wire, sockets);
        });
        assert_eq!(refused, 0, "no token asked for without room");
        assert_eq!(
            unacked, 0,
            "the lost segment was sent again and acknowledged"
        );
    }

    /// What `poll_interface` is for: smoltcp 0.14 on its own forgets the
    /// fast retransmit the device refused, and the connection never moves
    /// again. (If a later smoltcp passes this, the workaround can go.)
    #[test]
    fn plain_interface_poll_loses_a_refused_fast_retransmit() {
        let (unacked, refused) = lose_a_segment_then_refuse(|iface, now, wire, sockets| {
            iface.poll(now, wire, sockets);
        });
        assert!(refused > 0);
        assert!(
            unacked > 0,
            "smoltcp recovered on its own: drop the workaround"
        );
    }

    #[test]
    fn a_pass_needs_one_packet_per_socket_that_can_send() {
        let mut sockets = SocketSet::new(alloc::vec::Vec::new());
        let tcp_socket = || {
            tcp::Socket::new(
                tcp::SocketBuffer::new(alloc::vec![0; 64]),
                tcp::SocketBuffer::new(alloc::vec![0; 64]),
            )
        };
        assert_eq!(pass_need(&sockets), 1);
        let mut listening = tcp_socket();
        listening.listen(9).expect("listen");
        sockets.add(listening);
        sockets.add(tcp_socket());
        assert_eq!(
            pass_need(&sockets),
            1,
            "listening and closed sockets send nothing"
        );
        let udp = smoltcp::socket::udp::Socket::new(
            smoltcp::socket::udp::PacketBuffer::new(
                alloc::vec![smoltcp::socket::udp::PacketMetadata::EMPTY; 1],
                alloc::vec![0; 64],
            ),
            smoltcp::socket::udp::PacketBuffer::new(
                alloc::vec![smoltcp::socket::udp::PacketMetadata::EMPTY; 1],
                alloc::vec![0; 64],
            ),
        );
        let udp = sockets.add(udp);
        assert_eq!(pass_need(&sockets), 1, "a UDP socket with nothing queued");
        let to = smoltcp::wire::IpEndpoint::new(IpAddress::v4(10, 0, 0, 2), 9);
        let socket = sockets.get_mut::<smoltcp::socket::udp::Socket>(udp);
        socket.bind(9).expect("bind");
        socket.send_slice(b"x", to).expect("queued");
        assert_eq!(pass_need(&sockets), 2);
    }
}
