//! The SYN gate: a connection attempt to a service port with no free
//! listening socket is dropped in silence instead of being answered with a
//! reset by smoltcp. The client retransmits its SYN (after 1 s, then 3 s,
//! 7 s, ... on Linux) and by then the pool has grown or a connection has
//! finished. Every SYN dropped here is counted.
//!
//! The gate also drops a SYN from a client that already has a socket on
//! that port (a retransmitted SYN while the first one's SYN-ACK is on its
//! way). smoltcp hands a SYN to the first socket that accepts it, and a
//! listening socket accepts any SYN to its port: a second half-open socket
//! for the same client would answer the client's ACK with a reset, and an
//! established connection would die (seen in the gateway test's chargen
//! burst). The first socket retransmits its SYN-ACK by itself.

use alloc::vec::Vec;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

/// One service port: how many more SYNs may pass in this pass, and how
/// many were held back since the owner last looked.
#[derive(Clone, Copy, Debug)]
struct Port {
    port: u16,
    free: usize,
    deferred: usize,
}

/// A client's connection (or half-open one) to a gated port: its address
/// and port, and ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub addr: IpAddress,
    pub port: u16,
    pub local_port: u16,
}

/// Free listening sockets per service port, spent by the SYNs that pass.
#[derive(Clone, Debug, Default)]
pub struct SynGate {
    ports: Vec<Port>,
    /// The clients with a socket on a gated port, and those whose SYN
    /// passed since [`SynGate::set_peers`].
    peers: Vec<Peer>,
    /// SYNs dropped since the gate was made.
    pub deferred: u64,
    /// SYNs dropped because their client already had a socket.
    pub duplicates: u64,
}

impl SynGate {
    pub fn new() -> SynGate {
        SynGate::default()
    }

    /// Lets `free` more SYNs to `port` pass (the listening sockets it has).
    pub fn set(&mut self, port: u16, free: usize) {
        match self.ports.iter_mut().find(|p| p.port == port) {
            Some(p) => p.free = free,
            None => self.ports.push(Port {
                port,
                free,
                deferred: 0,
            }),
        }
    }

    /// The list of clients with a socket on a gated port, emptied for the
    /// pools to fill.
    pub(crate) fn clear_peers(&mut self) -> &mut Vec<Peer> {
        self.peers.clear();
        &mut self.peers
    }

    /// SYNs to `port` held back since the last call (the pool's demand).
    pub fn take_deferred(&mut self, port: u16) -> usize {
        self.ports
            .iter_mut()
            .find(|p| p.port == port)
            .map_or(0, |p| core::mem::take(&mut p.deferred))
    }

    /// Whether `packet` (an IPv4 or IPv6 packet as received) may go on to the
    /// stack. Only a SYN without ACK to a gated port with no free listener
    /// is held back; everything else, malformed packets included, passes
    /// (smoltcp judges those).
    pub fn admit(&mut self, packet: &[u8]) -> bool {
        let Some(peer) = syn_peer(packet) else {
            return true;
        };
        let Some(p) = self.ports.iter_mut().find(|p| p.port == peer.local_port) else {
            return true;
        };
        if self.peers.contains(&peer) {
            self.duplicates += 1;
            return false;
        }
        if p.free > 0 {
            p.free -= 1;
            self.peers.push(peer);
            return true;
        }
        p.deferred += 1;
        self.deferred += 1;
        false
    }
}

/// Who sends a connection-opening TCP segment (SYN, no ACK) in an
/// unfragmented IPv4 packet, or an IPv6 packet whose next header is TCP
/// (no extension headers), and to which port.
fn syn_peer(packet: &[u8]) -> Option<Peer> {
    let (addr, payload) = match packet.first()? >> 4 {
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            (IpAddress::Ipv6(ip.src_addr()), ip.payload())
        }
        _ => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            (IpAddress::Ipv4(ip.src_addr()), ip.payload())
        }
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| Peer {
        addr,
        port: tcp.src_port(),
        local_port: tcp.dst_port(),
    })
}

/// A TCP segment from 10.77.0.1:40000 to 10.77.0.2:`dst_port`, for tests.
#[cfg(test)]
pub(crate) fn segment(
    dst_port: u16,
    control: smoltcp::wire::TcpControl,
    ack: bool,
) -> alloc::vec::Vec<u8> {
    segment_from(40_000, dst_port, control, ack)
}

/// `segment` from 10.77.0.1:`src_port` (another client), for tests.
#[cfg(test)]
pub(crate) fn segment_from(
    src_port: u16,
    dst_port: u16,
    control: smoltcp::wire::TcpControl,
    ack: bool,
) -> alloc::vec::Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Repr, TcpRepr, TcpSeqNumber};
    let src = Ipv4Address::new(10, 77, 0, 1);
    let dst = Ipv4Address::new(10, 77, 0, 2);
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(1),
        ack_number: ack.then_some(TcpSeqNumber(7)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = alloc::vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut packet, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    buf
}

/// `segment`'s TCP segment in an IPv6 packet from fd77::1 to fd77::2.
#[cfg(test)]
fn segment6(dst_port: u16) -> alloc::vec::Vec<u8> {
    use smoltcp::wire::{IpAddress, Ipv6Address, Ipv6Repr};
    let v4 = segment(dst_port, smoltcp::wire::TcpControl::Syn, false);
    let tcp = &v4[20..];
    let src = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    let dst = Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.len(),
        hop_limit: 64,
    };
    let mut buf = alloc::vec![0u8; ip.buffer_len() + tcp.len()];
    let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut packet);
    packet.payload_mut().copy_from_slice(tcp);
    let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
    segment.fill_checksum(&IpAddress::Ipv6(src), &IpAddress::Ipv6(dst));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::TcpControl;

    #[test]
    fn ipv6_syns_are_gated_too() {
        let mut gate = SynGate::new();
        gate.set(80, 0);
        let syn = segment6(80);
        assert!(!gate.admit(&syn));
        assert!(gate.admit(&segment6(81)));
        assert_eq!(gate.deferred, 1);
        gate.set(80, 1);
        assert!(gate.admit(&syn));
    }

    #[test]
    fn syns_pass_while_listeners_are_free_then_are_deferred() {
        let mut gate = SynGate::new();
        gate.set(80, 2);
        let syn = |client: u16| segment_from(client, 80, TcpControl::Syn, false);
        assert!(gate.admit(&syn(1)));
        assert!(gate.admit(&syn(2)));
        assert!(!gate.admit(&syn(3)));
        assert!(!gate.admit(&syn(4)));
        assert_eq!(gate.deferred, 2);
        assert_eq!(gate.take_deferred(80), 2);
        assert_eq!(gate.take_deferred(80), 0);
        gate.set(80, 1);
        assert!(gate.admit(&syn(3)));
        assert_eq!(gate.deferred, 2);
    }

    #[test]
    fn a_second_syn_from_a_client_with_a_socket_is_dropped() {
        let mut gate = SynGate::new();
        gate.set(80, 3);
        let syn = segment(80, TcpControl::Syn, false);
        assert!(gate.admit(&syn));
        // Its retransmission in the same pass: the first socket has it.
        assert!(!gate.admit(&syn));
        assert_eq!((gate.duplicates, gate.deferred), (1, 0));
        // In a later pass, while the client's socket exists.
        let client = Peer {
            addr: IpAddress::Ipv4(smoltcp::wire::Ipv4Address::new(10, 77, 0, 1)),
            port: 40_000,
            local_port: 80,
        };
        gate.set(80, 3);
        gate.clear_peers().push(client);
        assert!(!gate.admit(&syn));
        assert_eq!(gate.duplicates, 2);
        // Once it is gone, the client may connect again.
        gate.clear_peers();
        assert!(gate.admit(&syn));
        // Another client's SYN is not a duplicate.
        assert!(gate.admit(&segment6(80)));
        assert_eq!(gate.duplicates, 2);
    }

    #[test]
    fn everything_else_passes() {
        let mut gate = SynGate::new();
        gate.set(80, 0);
        // A SYN-ACK, an ACK, a SYN to an ungated port, junk.
        assert!(gate.admit(&segment(80, TcpControl::Syn, true)));
        assert!(gate.admit(&segment(80, TcpControl::None, true)));
        assert!(gate.admit(&segment(81, TcpControl::Syn, false)));
        assert!(gate.admit(&[]));
        assert!(gate.admit(&[0x45; 30]));
        assert_eq!(gate.deferred, 0);
        assert!(!gate.admit(&segment(80, TcpControl::Syn, false)));
    }
}
