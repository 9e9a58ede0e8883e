//! Small traffic generators driven from outside the stack: ping, UDP echo
//! and a bulk TCP transfer checked with SHA-256.

use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Duration;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpEndpoint, Ipv6Address,
};

use crate::guest::BoxError;
use crate::net::Net;

/// Sends one echo request from guest `from` to `to` and waits for the reply.
/// Returns the virtual round-trip time.
pub fn ping(
    net: &mut Net,
    from: usize,
    to: impl Into<IpAddress>,
    seq: u16,
    limit: Duration,
) -> Result<Duration, BoxError> {
    ping_with(net, from, to, seq, b"ibguest ping payload", limit)
}

/// [`ping`] with `payload` as the echo data (of any size the stacks can
/// fragment and reassemble).
pub fn ping_with(
    net: &mut Net,
    from: usize,
    to: impl Into<IpAddress>,
    seq: u16,
    payload: &[u8],
    limit: Duration,
) -> Result<Duration, BoxError> {
    let to = to.into();
    let room = payload.len() + 64;
    let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4 * room]);
    let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4 * room]);
    let mut socket = icmp::Socket::new(rx, tx);
    let ident = 0x4242;
    socket.bind(icmp::Endpoint::Ident(ident))?;
    let handle = net.guests[from].sockets.add(socket);
    {
        let socket = net.guests[from].sockets.get_mut::<icmp::Socket>(handle);
        match to {
            IpAddress::Ipv4(_) => {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: payload,
                };
                let buf = socket.send(repr.buffer_len(), to)?;
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
            }
            IpAddress::Ipv6(dst) => {
                let repr = Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: payload,
                };
                let buf = socket.send(repr.buffer_len(), to)?;
                // smoltcp fills in the checksum once it knows the source.
                let caps = ChecksumCapabilities::ignored();
                let any = Ipv6Address::UNSPECIFIED;
                repr.emit(&any, &dst, &mut Icmpv6Packet::new_unchecked(buf), &caps);
            }
        }
    }
    let start = net.now;
    let mut ok = false;
    let result = net.run_until(limit, |net| {
        let socket = net.guests[from].sockets.get_mut::<icmp::Socket>(handle);
        while let Ok((data, _addr)) = socket.recv() {
            ok |= is_echo_reply(data, to, seq, payload);
        }
        ok
    });
    let rtt = net.now - start;
    net.guests[from].sockets.remove(handle);
    result.map(|()| rtt)
}

/// True if `data` (an ICMP message from `from`) is the echo reply to `seq`
/// carrying `payload`.
fn is_echo_reply(data: &[u8], from: IpAddress, seq: u16, payload: &[u8]) -> bool {
    match from {
        IpAddress::Ipv4(_) => Icmpv4Packet::new_checked(data)
            .ok()
            .and_then(|p| Icmpv4Repr::parse(&p, &Default::default()).ok())
            .is_some_and(|r| {
                matches!(r, Icmpv4Repr::EchoReply { seq_no, data, .. } if seq_no == seq && data == payload)
            }),
        IpAddress::Ipv6(src) => {
            let caps = ChecksumCapabilities::ignored();
            let any = Ipv6Address::UNSPECIFIED;
            Icmpv6Packet::new_checked(data)
                .ok()
                .and_then(|p| Icmpv6Repr::parse(&src, &any, &p, &caps).ok())
                .is_some_and(|r| {
                    matches!(r, Icmpv6Repr::EchoReply { seq_no, data, .. } if seq_no == seq && data == payload)
                })
        }
    }
}

/// Binds a UDP socket on guest `g`.
pub fn udp_socket(net: &mut Net, g: usize, port: u16) -> Result<SocketHandle, BoxError> {
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 65536]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 65536]);
    let mut socket = udp::Socket::new(rx, tx);
    socket.bind(port)?;
    Ok(net.guests[g].sockets.add(socket))
}

/// Echoes every datagram waiting on a UDP socket back to its sender.
pub fn udp_echo_step(net: &mut Net, g: usize, handle: SocketHandle) -> usize {
    let socket = net.guests[g].sockets.get_mut::<udp::Socket>(handle);
    let mut echoed = 0;
    let mut buf = vec![0u8; 65536];
    while socket.can_send() {
        let Ok((n, meta)) = socket.recv_slice(&mut buf) else {
            break;
        };
        if socket.send_slice(&buf[..n], meta.endpoint).is_ok() {
            echoed += 1;
        }
    }
    echoed
}

/// A TCP socket with generous buffers.
pub fn tcp_socket(buffer: usize) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    );
    socket.set_nagle_enabled(false);
    socket
}

/// The sending end of a bulk transfer: `bytes` of seeded ChaCha8 data,
/// hashed as they are handed to the socket, then a close.
pub struct BulkSender {
    rng: ChaCha8Rng,
    chunk: Vec<u8>,
    chunk_len: usize,
    chunk_off: usize,
    sent: usize,
    bytes: usize,
    hash: Sha256,
    closed: bool,
}

impl BulkSender {
    pub fn new(bytes: usize, seed: u64) -> BulkSender {
        BulkSender {
            rng: ChaCha8Rng::seed_from_u64(seed),
            chunk: vec![0u8; 64 * 1024],
            chunk_len: 0,
            chunk_off: 0,
            sent: 0,
            bytes,
            hash: Sha256::new(),
            closed: false,
        }
    }

    /// Keeps the socket's send buffer full; closes once everything is in.
    pub fn pump(&mut self, socket: &mut tcp::Socket<'_>) {
        while socket.can_send() && self.sent < self.bytes {
            if self.chunk_off == self.chunk_len {
                self.chunk_len = self.chunk.len().min(self.bytes - self.sent);
                self.rng.fill_bytes(&mut self.chunk[..self.chunk_len]);
                self.hash.update(&self.chunk[..self.chunk_len]);
                self.chunk_off = 0;
            }
            match socket.send_slice(&self.chunk[self.chunk_off..self.chunk_len]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.chunk_off += n;
                    self.sent += n;
                }
            }
        }
        if self.sent == self.bytes && self.chunk_off == self.chunk_len && !self.closed {
            socket.close();
            self.closed = true;
        }
    }

    pub fn sha256(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

/// The receiving end: hashes whatever arrives.
#[derive(Default)]
pub struct BulkReceiver {
    pub received: usize,
    hash: Sha256,
}

impl BulkReceiver {
    /// Drains the socket's receive buffer.
    pub fn drain(&mut self, socket: &mut tcp::Socket<'_>) {
        while socket.can_recv() {
            let hash = &mut self.hash;
            let got = socket.recv(|data| {
                hash.update(&*data);
                (data.len(), data.len())
            });
            match got {
                Ok(0) | Err(_) => break,
                Ok(n) => self.received += n,
            }
        }
    }

    pub fn sha256(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

/// Outcome of a bulk transfer.
#[derive(Debug)]
pub struct TransferReport {
    pub bytes: usize,
    pub sent_sha256: [u8; 32],
    pub received_sha256: [u8; 32],
    pub virtual_time: Duration,
    pub rounds: u64,
}

/// Sends `bytes` of seeded pseudo-random data from guest `from` to guest
/// `to` over TCP, hashing both ends.
pub fn tcp_transfer(
    net: &mut Net,
    from: usize,
    to: usize,
    bytes: usize,
    seed: u64,
    limit: Duration,
) -> Result<TransferReport, BoxError> {
    tcp_transfer_with(net, from, to, bytes, seed, limit, |_, _| Ok(()))
}

/// [`tcp_transfer`] to guest `to`'s address `to_ip` (an IPv6 address, say).
pub fn tcp_transfer_to(
    net: &mut Net,
    from: usize,
    to: usize,
    to_ip: IpAddress,
    bytes: usize,
    seed: u64,
    limit: Duration,
) -> Result<TransferReport, BoxError> {
    transfer(net, from, (to, to_ip), bytes, seed, limit, |_, _| Ok(()))
}

/// Like [`tcp_transfer`], calling `each_round(net, bytes_received)` after
/// every round so a test can interfere mid-transfer.
pub fn tcp_transfer_with(
    net: &mut Net,
    from: usize,
    to: usize,
    bytes: usize,
    seed: u64,
    limit: Duration,
    each_round: impl FnMut(&mut Net, usize) -> Result<(), BoxError>,
) -> Result<TransferReport, BoxError> {
    let to_ip = IpAddress::Ipv4(net.guests[to].spec.ipv4());
    transfer(net, from, (to, to_ip), bytes, seed, limit, each_round)
}

fn transfer(
    net: &mut Net,
    from: usize,
    (to, to_ip): (usize, IpAddress),
    bytes: usize,
    seed: u64,
    limit: Duration,
    mut each_round: impl FnMut(&mut Net, usize) -> Result<(), BoxError>,
) -> Result<TransferReport, BoxError> {
    const PORT: u16 = 5001;
    let mut server = tcp_socket(256 * 1024);
    server.listen(PORT)?;
    let server = net.guests[to].sockets.add(server);
    let client = net.guests[from].sockets.add(tcp_socket(256 * 1024));
    {
        let g = &mut net.guests[from];
        let socket = g.sockets.get_mut::<tcp::Socket>(client);
        socket.connect(g.iface.context(), IpEndpoint::new(to_ip, PORT), 49152)?;
    }
    let mut sender = BulkSender::new(bytes, seed);
    let mut receiver = BulkReceiver::default();
    let start_time = net.now;
    let start_rounds = net.rounds;
    let mut hook_error = None;
    let result = net.run_until(limit, |net| {
        if let Err(e) = each_round(net, receiver.received) {
            hook_error = Some(e);
            return true;
        }
        sender.pump(net.guests[from].sockets.get_mut::<tcp::Socket>(client));
        receiver.drain(net.guests[to].sockets.get_mut::<tcp::Socket>(server));
        receiver.received >= bytes
    });
    if let Some(e) = hook_error {
        return Err(e);
    }
    result?;
    net.guests[from].sockets.remove(client);
    net.guests[to].sockets.remove(server);
    Ok(TransferReport {
        bytes: receiver.received,
        sent_sha256: sender.sha256(),
        received_sha256: receiver.sha256(),
        virtual_time: net.now - start_time,
        rounds: net.rounds - start_rounds,
    })
}
