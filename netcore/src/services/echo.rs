//! Echo (RFC 862) over UDP and TCP.

use alloc::vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, Ipv4Address};

use super::pool::close_after_peer;
use super::{ServiceStats, ECHO_PORT, UDP_ECHO_BUFFER, UDP_ECHO_PACKETS};

/// Adds the UDP echo socket, bound to port 7.
pub(crate) fn udp_socket(sockets: &mut SocketSet<'static>) -> SocketHandle {
    let buffer = || {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_ECHO_PACKETS],
            vec![0; UDP_ECHO_BUFFER],
        )
    };
    let mut socket = udp::Socket::new(buffer(), buffer());
    if let Err(e) = socket.bind(ECHO_PORT) {
        log::error!("netcore: cannot bind UDP port {ECHO_PORT}: {e}");
    }
    sockets.add(socket)
}

/// Whether a datagram may be answered: not one sent to a broadcast or
/// multicast address, and not from a well-known port (another echo or
/// chargen server would answer back forever).
fn answerable(meta: &udp::UdpMetadata, subnet_broadcast: Option<Ipv4Address>) -> bool {
    let to_group = match meta.local_address {
        Some(IpAddress::Ipv4(a)) => {
            a.is_broadcast() || a.is_multicast() || Some(a) == subnet_broadcast
        }
        Some(IpAddress::Ipv6(a)) => a.is_multicast(),
        None => false,
    };
    !to_group && meta.endpoint.port >= 1024
}

/// Echoes every waiting datagram that fits in `scratch` and in the send
/// buffer. Returns true if it handled any.
pub(crate) fn poll_udp(
    socket: &mut udp::Socket<'_>,
    scratch: &mut [u8],
    subnet_broadcast: Option<Ipv4Address>,
    stats: &mut ServiceStats,
) -> bool {
    let mut did = false;
    while socket.can_recv() && socket.can_send() {
        did = true;
        let (n, meta) = match socket.recv_slice(scratch) {
            Ok(got) => got,
            Err(udp::RecvError::Truncated) => {
                stats.udp_echo_dropped += 1;
                continue;
            }
            Err(_) => break,
        };
        if !answerable(&meta, subnet_broadcast) {
            stats.udp_echo_dropped += 1;
            continue;
        }
        match socket.send_slice(&scratch[..n], meta.endpoint) {
            Ok(()) => {
                stats.udp_echo_datagrams += 1;
                stats.udp_echo_bytes += n as u64;
            }
            Err(_) => stats.udp_echo_dropped += 1,
        }
    }
    did
}

/// One TCP echo connection needs no state of its own.
#[derive(Default)]
pub(crate) struct EchoConn;

/// Sends back what arrived, never reading more than the send buffer can
/// take; closes once the peer has closed and everything was echoed.
pub(crate) fn serve_tcp(
    socket: &mut tcp::Socket<'_>,
    scratch: &mut [u8],
    stats: &mut ServiceStats,
) -> bool {
    let mut did = false;
    while socket.can_recv() && socket.can_send() {
        let room = socket.send_capacity() - socket.send_queue();
        let want = room.min(scratch.len());
        let got = match socket.recv_slice(&mut scratch[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match socket.send_slice(&scratch[..got]) {
            Ok(sent) => {
                if sent < got {
                    log::error!("netcore: echo lost {} bytes", got - sent);
                }
                stats.tcp_echo_bytes += sent as u64;
            }
            Err(e) => log::error!("netcore: echo lost {got} bytes: {e}"),
        }
        did = true;
    }
    did | close_after_peer(socket)
}
