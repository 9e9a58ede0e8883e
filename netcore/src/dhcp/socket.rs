//! [`DhcpSocket`]: the DHCP client on a smoltcp UDP socket.
//!
//! One UDP socket bound to port 68 on no particular address serves every
//! state. smoltcp hands it replies sent to 255.255.255.255 even while the
//! interface has no address (the server broadcasts them: the client sets
//! the BROADCAST flag, as RFC 4390 requires), and unicast ones once it has
//! one. Before there is an address each message names 0.0.0.0 as its
//! source in the datagram's metadata, so nothing needs a raw socket, and
//! the IPoIB device sends everything to 255.255.255.255 to the partition's
//! broadcast group.

use alloc::vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata, UdpMetadata};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::client::{DhcpClient, Event, Ignored, State};
use super::wire::{ClientId, DhcpRepr, CLIENT_PORT, MAX_MESSAGE_LEN, SERVER_PORT};

/// Datagrams the socket holds each way.
const PACKETS: usize = 4;
/// Datagrams read per poll: the rest wait for the next one.
const READ_BUDGET: usize = 8;

/// What the client has seen, for the status page and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhcpStats {
    pub sent: u64,
    pub received: u64,
    /// Datagrams on port 68 that are not DHCP this code parses.
    pub malformed: u64,
    /// DHCP messages not for this client, or not expected now.
    pub ignored: u64,
    /// Leases taken (first ones and renewals that changed something).
    pub leases: u64,
    /// Addresses given up (expiry, NAK while renewing).
    pub expired: u64,
}

/// The client and its socket.
pub struct DhcpSocket {
    handle: SocketHandle,
    client: DhcpClient,
    stats: DhcpStats,
}

impl DhcpSocket {
    /// Adds a UDP socket on port 68 to `sockets`; the client starts
    /// discovering on its first poll.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        client_id: ClientId,
        now: Instant,
        seed: u64,
    ) -> DhcpSocket {
        let buffer = || {
            PacketBuffer::new(
                vec![PacketMetadata::EMPTY; PACKETS],
                vec![0u8; PACKETS * MAX_MESSAGE_LEN],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        // Port 68 on a fresh socket: binding cannot fail.
        let _ = socket.bind(CLIENT_PORT);
        DhcpSocket {
            handle: sockets.add(socket),
            client: DhcpClient::new(client_id, now, seed),
            stats: DhcpStats::default(),
        }
    }

    pub fn client(&self) -> &DhcpClient {
        &self.client
    }

    pub fn stats(&self) -> DhcpStats {
        self.stats
    }

    pub fn state(&self) -> State {
        self.client.state()
    }

    /// When the client's next timer is due.
    pub fn poll_at(&self) -> Instant {
        self.client.poll_at()
    }

    /// Reads replies, runs the timers and sends what is due. Returns a
    /// change of address for the caller to apply.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> Option<Event> {
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        for _ in 0..READ_BUDGET {
            let Ok((n, meta)) = socket.recv_slice(&mut buf) else {
                break;
            };
            if meta.endpoint.port != SERVER_PORT {
                self.stats.malformed += 1;
                continue;
            }
            let repr = match DhcpRepr::parse(buf.get(..n).unwrap_or(&[])) {
                Ok(r) => r,
                Err(e) => {
                    self.stats.malformed += 1;
                    log::debug!("dhcp: dropped a reply from {}: {e}", meta.endpoint.addr);
                    continue;
                }
            };
            self.stats.received += 1;
            match self.client.receive(now, &repr) {
                Ok(Some(event)) => {
                    self.count(&event);
                    return Some(event);
                }
                Ok(None) => {}
                Err(Ignored::NotOurs | Ignored::Unexpected | Ignored::Unusable) => {
                    self.stats.ignored += 1
                }
            }
        }
        let (out, event) = self.client.poll(now);
        if let Some(out) = out {
            let mut msg = [0u8; MAX_MESSAGE_LEN];
            if let Ok(n) = out.repr.emit(&mut msg) {
                let meta = UdpMetadata {
                    endpoint: IpEndpoint::new(IpAddress::Ipv4(out.dst), SERVER_PORT),
                    local_address: Some(IpAddress::Ipv4(out.src)),
                    meta: Default::default(),
                };
                // A full buffer loses this one; the retransmission timer
                // sends it again.
                if socket.send_slice(&msg[..n], meta).is_ok() {
                    self.stats.sent += 1;
                }
            }
        }
        if let Some(e) = &event {
            self.count(e);
        }
        event
    }

    fn count(&mut self, event: &Event) {
        match event {
            Event::Configured(_) => self.stats.leases += 1,
            Event::Deconfigured { .. } => self.stats.expired += 1,
        }
    }
}
