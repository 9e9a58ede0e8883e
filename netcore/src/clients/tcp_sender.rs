//! Sends a known amount of known data over TCP and hashes both directions;
//! or, raw ([`TcpSenderConfig::raw`]), a known amount of whatever the
//! socket buffer holds, with no generation and no hashing, for measuring
//! the transport alone.

use core::task::Poll;
use smoltcp::iface::{Context, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use sha2::{Digest, Sha256};

use super::tcp::{ClientConn, Phase};
use super::ClientError;
use crate::pattern::{Payload, PayloadStream};

/// A sender's send buffer: what it can have in flight, so as much as the
/// receiver's window (discard offers [`crate::services::DISCARD_RX_BUFFER`]).
pub const SENDER_TX_BUFFER: usize = 192 * 1024;
/// A sender's receive buffer (an echo service returns everything).
pub const SENDER_RX_BUFFER: usize = 64 * 1024;

/// What to send where.
#[derive(Clone, Copy, Debug)]
pub struct TcpSenderConfig {
    pub remote: IpEndpoint,
    /// Non-zero; see [`super::LocalPorts`].
    pub local_port: u16,
    pub bytes: u64,
    pub payload: Payload,
    /// Raw: neither generate nor hash; send `bytes` of what the send buffer
    /// holds (zeros: it is allocated zeroed and nothing writes it), and
    /// only count what comes back. `payload` is then unused and the
    /// report's hashes are all zero.
    pub raw: bool,
    /// For the whole exchange, from the first poll.
    pub timeout: Duration,
    /// The send buffer: what can be in flight (at most the receiver's
    /// window; `NetStack::tcp_window` for a stack's own device).
    pub window: usize,
}

impl TcpSenderConfig {
    /// `bytes` of [`Payload::Pattern`] within 60 s.
    pub fn new(remote: IpEndpoint, local_port: u16, bytes: u64) -> TcpSenderConfig {
        TcpSenderConfig {
            remote,
            local_port,
            bytes,
            payload: Payload::Pattern,
            raw: false,
            timeout: Duration::from_secs(60),
            window: SENDER_TX_BUFFER,
        }
    }
}

/// What a finished transfer sent and got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReport {
    pub sent: u64,
    /// All zero for a raw transfer (nothing hashed).
    pub sent_sha256: [u8; 32],
    /// What the peer sent back (an echo server returns everything).
    pub received: u64,
    /// All zero for a raw transfer.
    pub received_sha256: [u8; 32],
    /// From the first poll to the close.
    pub elapsed: Duration,
}

/// Connects, sends `bytes`, closes, reads whatever comes back, and reports
/// once both sides have closed.
pub struct TcpSender {
    conn: ClientConn,
    bytes: u64,
    raw: bool,
    /// Bytes handed to the socket so far.
    sent: u64,
    data: PayloadStream,
    tx_hash: Sha256,
    rx_hash: Sha256,
    received: u64,
    closing: bool,
    started: Option<Instant>,
    outcome: Option<Result<SendReport, ClientError>>,
}

impl TcpSender {
    /// Adds the socket and starts connecting.
    pub fn new(
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        config: TcpSenderConfig,
    ) -> Result<TcpSender, ClientError> {
        let conn = ClientConn::connect(
            cx,
            sockets,
            config.remote,
            config.local_port,
            (SENDER_RX_BUFFER, config.window),
            config.timeout,
        )?;
        Ok(TcpSender {
            conn,
            bytes: config.bytes,
            raw: config.raw,
            sent: 0,
            data: config.payload.stream(),
            tx_hash: Sha256::new(),
            rx_hash: Sha256::new(),
            received: 0,
            closing: false,
            started: None,
            outcome: None,
        })
    }

    /// Bytes handed to the socket so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        now: Instant,
    ) -> Poll<Result<SendReport, ClientError>> {
        if let Some(outcome) = &self.outcome {
            return Poll::Ready(outcome.clone());
        }
        let started = *self.started.get_or_insert(now);
        let socket = sockets.get_mut::<tcp::Socket>(self.conn.handle);
        self.transfer(socket);
        let outcome = match self.conn.phase(socket, now) {
            Ok(Phase::Open | Phase::HalfClosed) => return Poll::Pending,
            Ok(Phase::Finished) if self.sent() < self.bytes => Err(ClientError::Reset),
            Ok(Phase::Finished) => Ok(SendReport {
                sent: self.sent(),
                sent_sha256: self.digest(|s| &s.tx_hash),
                received: self.received,
                received_sha256: self.digest(|s| &s.rx_hash),
                elapsed: now - started,
            }),
            Err(e) => Err(e),
        };
        self.outcome = Some(outcome.clone());
        Poll::Ready(outcome)
    }

    /// The hash `which` picks, or all zero for a raw transfer.
    fn digest(&self, which: impl Fn(&Self) -> &Sha256) -> [u8; 32] {
        if self.raw {
            [0; 32]
        } else {
            which(self).clone().finalize().into()
        }
    }

    /// Fills the send buffer, drains the receive buffer, and closes once
    /// everything sent is acknowledged.
    fn transfer(&mut self, socket: &mut tcp::Socket<'_>) {
        while socket.can_send() && self.sent < self.bytes {
            let left = self.bytes - self.sent;
            let (raw, data, hash) = (self.raw, &mut self.data, &mut self.tx_hash);
            let queued = socket.send(|buf| {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if !raw {
                    data.fill(&mut buf[..n]);
                    hash.update(&buf[..n]);
                }
                (n, n)
            });
            match queued {
                Ok(n) if n > 0 => self.sent += n as u64,
                _ => break,
            }
        }
        while socket.can_recv() {
            let (raw, hash) = (self.raw, &mut self.rx_hash);
            let got = socket.recv(|data| {
                if !raw {
                    hash.update(&*data);
                }
                (data.len(), data.len())
            });
            match got {
                Ok(0) | Err(_) => break,
                Ok(n) => self.received += n as u64,
            }
        }
        // The FIN goes alone, once everything sent is acknowledged: on the
        // last data segment at the edge of the receiver's window it was
        // lost with the bytes smoltcp's receiver trimmed there, and came
        // back only after smoltcp's 1 s minimum retransmission timeout.
        if !self.closing && self.sent == self.bytes && socket.may_send() && socket.send_queue() == 0
        {
            socket.close();
            self.closing = true;
        }
    }

    /// Takes the socket out of the set.
    pub fn release(self, sockets: &mut SocketSet<'_>) {
        sockets.remove(self.conn.handle);
    }
}
