//! ICMP echo (ICMPv4 or ICMPv6, by the target's family): `count` requests,
//! one every `interval`, each given `timeout` for its reply.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::task::Poll;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, Ipv6Address};

use super::ClientError;

/// Largest payload per request.
pub const PING_MAX_PAYLOAD: usize = 1024;
const PACKETS: usize = 8;

#[derive(Clone, Copy, Debug)]
pub struct PingConfig {
    pub target: IpAddress,
    /// Requests to send, numbered 1..=count.
    pub count: u16,
    pub interval: Duration,
    /// How long each request waits for its reply before it counts as lost.
    pub timeout: Duration,
    /// The ICMP identifier; replies carrying another are not ours.
    pub ident: u16,
    /// Payload bytes per request, at most [`PING_MAX_PAYLOAD`].
    pub payload_len: usize,
}

impl PingConfig {
    /// Three requests a second apart, a second each to answer.
    pub fn new(target: impl Into<IpAddress>) -> PingConfig {
        PingConfig {
            target: target.into(),
            count: 3,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ident: 0x6e63,
            payload_len: 32,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReport {
    pub target: IpAddress,
    /// Request `seq` (from 1) took `rtts[seq - 1]`, or got no reply in time.
    pub rtts: Vec<Option<Duration>>,
}

impl PingReport {
    pub fn transmitted(&self) -> usize {
        self.rtts.len()
    }

    pub fn received(&self) -> usize {
        self.rtts.iter().flatten().count()
    }

    pub fn lost(&self) -> usize {
        self.transmitted() - self.received()
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtts.iter().flatten().min().copied()
    }

    pub fn max_rtt(&self) -> Option<Duration> {
        self.rtts.iter().flatten().max().copied()
    }

    pub fn avg_rtt(&self) -> Option<Duration> {
        let n = self.received() as u64;
        let total: u64 = self.rtts.iter().flatten().map(|d| d.total_micros()).sum();
        (n > 0).then(|| Duration::from_micros(total / n))
    }
}

impl fmt::Display for PingReport {
    /// `ping 10.77.0.2: 3 sent, 3 received, 0 lost; rtt min/avg/max 20/40/60 us`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ping {}: {} sent, {} received, {} lost",
            self.target,
            self.transmitted(),
            self.received(),
            self.lost()
        )?;
        if let (Some(min), Some(avg), Some(max)) = (self.min_rtt(), self.avg_rtt(), self.max_rtt())
        {
            write!(
                f,
                "; rtt min/avg/max {}/{}/{} us",
                min.total_micros(),
                avg.total_micros(),
                max.total_micros()
            )?;
        }
        Ok(())
    }
}

/// The identifier, sequence number and data of an echo reply from `from`
/// (checksum checked by smoltcp on the way in, as the device asks).
fn echo_reply(data: &[u8], from: IpAddress) -> Option<(u16, u16, &[u8])> {
    match from {
        IpAddress::Ipv4(_) => {
            let packet = Icmpv4Packet::new_checked(data).ok()?;
            match Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).ok()? {
                Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                } => Some((ident, seq_no, data)),
                _ => None,
            }
        }
        IpAddress::Ipv6(src) => {
            let packet = Icmpv6Packet::new_checked(data).ok()?;
            let any = Ipv6Address::UNSPECIFIED;
            match Icmpv6Repr::parse(&src, &any, &packet, &ChecksumCapabilities::ignored()).ok()? {
                Icmpv6Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                } => Some((ident, seq_no, data)),
                _ => None,
            }
        }
    }
}

pub struct Pinger {
    handle: SocketHandle,
    config: PingConfig,
    /// When request `seq` went out, by `seq - 1`.
    sent_at: Vec<Option<Instant>>,
    rtts: Vec<Option<Duration>>,
    next_send: Option<Instant>,
    done: Option<PingReport>,
}

impl Pinger {
    /// Adds an ICMP socket bound to `config.ident`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        config: PingConfig,
    ) -> Result<Pinger, ClientError> {
        if config.payload_len > PING_MAX_PAYLOAD {
            return Err(ClientError::InvalidArgument(
                "ping payload longer than 1024 bytes",
            ));
        }
        let buffer = || {
            icmp::PacketBuffer::new(
                vec![icmp::PacketMetadata::EMPTY; PACKETS],
                vec![0; PACKETS * (PING_MAX_PAYLOAD + 8)],
            )
        };
        let mut socket = icmp::Socket::new(buffer(), buffer());
        socket
            .bind(icmp::Endpoint::Ident(config.ident))
            .map_err(ClientError::Bind)?;
        let count = usize::from(config.count);
        Ok(Pinger {
            handle: sockets.add(socket),
            config,
            sent_at: vec![None; count],
            rtts: vec![None; count],
            next_send: None,
            done: None,
        })
    }

    /// The payload of request `seq`.
    fn payload(&self, seq: u16) -> impl Iterator<Item = u8> {
        (0..self.config.payload_len).map(move |i| (i as u16).wrapping_add(seq) as u8)
    }

    /// Sends what is due, takes in replies, and reports once every request
    /// has its reply or has timed out. Never fails once made.
    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        now: Instant,
    ) -> Poll<Result<PingReport, ClientError>> {
        if let Some(report) = &self.done {
            return Poll::Ready(Ok(report.clone()));
        }
        let socket = sockets.get_mut::<icmp::Socket>(self.handle);
        self.receive(socket, now);
        self.send(socket, now);
        let all_sent = self.sent_at.iter().all(Option::is_some);
        let settled = self.sent_at.iter().zip(&self.rtts).all(|(sent, rtt)| {
            rtt.is_some() || sent.is_some_and(|t| now >= t + self.config.timeout)
        });
        if !(all_sent && settled) {
            return Poll::Pending;
        }
        let report = PingReport {
            target: self.config.target,
            rtts: self.rtts.clone(),
        };
        self.done = Some(report.clone());
        Poll::Ready(Ok(report))
    }

    fn receive(&mut self, socket: &mut icmp::Socket<'_>, now: Instant) {
        while let Ok((data, from)) = socket.recv() {
            if from != self.config.target {
                continue;
            }
            let Some((ident, seq_no, data)) = echo_reply(data, from) else {
                continue;
            };
            let index = usize::from(seq_no).wrapping_sub(1);
            let (Some(Some(sent)), Some(None)) = (self.sent_at.get(index), self.rtts.get(index))
            else {
                continue;
            };
            let sent = *sent;
            let rtt = now - sent;
            if ident == self.config.ident
                && rtt <= self.config.timeout
                && data.iter().copied().eq(self.payload(seq_no))
            {
                self.rtts[index] = Some(rtt);
            }
        }
    }

    fn send(&mut self, socket: &mut icmp::Socket<'_>, now: Instant) {
        let Some(index) = self.sent_at.iter().position(Option::is_none) else {
            return;
        };
        if self.next_send.is_some_and(|t| now < t) || !socket.can_send() {
            return;
        }
        let seq = (index + 1) as u16;
        let payload: Vec<u8> = self.payload(seq).collect();
        let (ident, target) = (self.config.ident, self.config.target);
        let sent = match target {
            IpAddress::Ipv4(_) => {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: &payload,
                };
                socket.send(repr.buffer_len(), target).map(|buf| {
                    repr.emit(
                        &mut Icmpv4Packet::new_unchecked(buf),
                        &ChecksumCapabilities::default(),
                    )
                })
            }
            IpAddress::Ipv6(dst) => {
                let repr = Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data: &payload,
                };
                // smoltcp fills in the checksum once it has chosen the
                // source address.
                socket.send(repr.buffer_len(), target).map(|buf| {
                    repr.emit(
                        &Ipv6Address::UNSPECIFIED,
                        &dst,
                        &mut Icmpv6Packet::new_unchecked(buf),
                        &ChecksumCapabilities::ignored(),
                    )
                })
            }
        };
        if sent.is_err() {
            return;
        }
        self.sent_at[index] = Some(now);
        self.next_send = Some(now + self.config.interval);
    }

    /// When the pinger next has something to do: a request to send or a
    /// reply to give up on. `None` once it has reported.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.done.is_some() {
            return None;
        }
        let expiries = self
            .sent_at
            .iter()
            .zip(&self.rtts)
            .filter(|(_, rtt)| rtt.is_none())
            .filter_map(|(sent, _)| sent.map(|t| t + self.config.timeout));
        let next_send = self
            .sent_at
            .iter()
            .any(Option::is_none)
            .then_some(self.next_send)
            .flatten();
        expiries.chain(next_send).min()
    }

    /// Takes the socket out of the set.
    pub fn release(self, sockets: &mut SocketSet<'_>) {
        sockets.remove(self.handle);
    }
}
