//! UDP request/response latency against an echo service, the no_std
//! counterpart of the hosted guest's `udp-rr` (hosted/src/latency.rs) and of
//! the benchmark's Linux peer (`ibguest-bench __peer udp-rr`): the same
//! warm-up, datagrams, per-exchange timeout, nearest-rank percentiles and
//! report line.
//!
//! One datagram at a time: send it, wait for its echo, repeat. Each exchange
//! is timed from the `poll` that queues the datagram to the `poll` that reads
//! its echo, so the caller should poll the interface at once after a `poll`
//! that returned with [`UdpRr::wants_poll`] set, and pass a fresh time.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::task::Poll;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use super::ClientError;

/// Untimed exchanges first (the first one also resolves the address).
pub const UDP_RR_WARMUP: u64 = 100;
/// The sequence number at the start of each datagram.
const SEQ_BYTES: usize = 8;
/// Largest datagram: one IPoIB packet at MTU 2044 less the IPv4 and UDP
/// headers, so no exchange is fragmented.
pub const UDP_RR_MAX_SIZE: usize = 2044 - 20 - 8;
const PACKETS: usize = 8;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct UdpRrConfig {
    pub to: IpEndpoint,
    /// Non-zero; see [`super::LocalPorts`].
    pub local_port: u16,
    /// Timed round trips wanted.
    pub count: u32,
    /// UDP payload bytes, 8..=[`UDP_RR_MAX_SIZE`].
    pub size: usize,
    /// An exchange without its echo by then is lost and the next starts.
    pub exchange_timeout: Duration,
    /// For the whole run, from the first poll.
    pub timeout: Duration,
}

impl UdpRrConfig {
    /// `count` exchanges of `size` bytes, a second each, 300 s in all.
    pub fn new(to: IpEndpoint, local_port: u16, count: u32, size: usize) -> UdpRrConfig {
        UdpRrConfig {
            to,
            local_port,
            count,
            size,
            exchange_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(300),
        }
    }
}

/// Timed round trips, sorted, and the timed exchanges that got no echo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpRrReport {
    pub rtts: Vec<Duration>,
    pub lost: u32,
}

impl UdpRrReport {
    /// The nearest-rank `per_mille`/1000 quantile.
    pub fn quantile(&self, per_mille: u32) -> Duration {
        let n = self.rtts.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (n * per_mille as usize).div_ceil(1000);
        self.rtts[rank.clamp(1, n) - 1]
    }

    pub fn median(&self) -> Duration {
        self.quantile(500)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(990)
    }
}

/// `udp-rr: N round trips, median X us, p99 Y us`, as the hosted guest and
/// the Linux peer print it.
impl fmt::Display for UdpRrReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |d: Duration| d.total_micros();
        write!(
            f,
            "udp-rr: {} round trips, median {}.0 us, p99 {}.0 us",
            self.rtts.len(),
            us(self.median()),
            us(self.p99())
        )
    }
}

/// Datagram `seq`: the sequence number, then a pattern that depends on it
/// (the same bytes as the hosted guest's and the Linux peer's).
fn fill(payload: &mut [u8], seq: u64) {
    payload[..SEQ_BYTES].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in payload[SEQ_BYTES..].iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(seq) as u8;
    }
}

/// The running exchanges.
pub struct UdpRr {
    handle: SocketHandle,
    config: UdpRrConfig,
    report: UdpRrReport,
    payload: Vec<u8>,
    buf: Vec<u8>,
    next_seq: u64,
    in_flight: Option<(u64, Instant)>,
    started: Option<Instant>,
    sent_now: bool,
    outcome: Option<Result<UdpRrReport, ClientError>>,
}

impl UdpRr {
    /// Adds the socket, bound to `config.local_port`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        config: UdpRrConfig,
    ) -> Result<UdpRr, ClientError> {
        if !(SEQ_BYTES..=UDP_RR_MAX_SIZE).contains(&config.size) {
            return Err(ClientError::InvalidArgument(
                "udp-rr size must be 8..=2016 bytes (one IPoIB packet)",
            ));
        }
        if config.count == 0 || config.local_port == 0 {
            return Err(ClientError::InvalidArgument(
                "udp-rr needs a count and a local port",
            ));
        }
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; PACKETS],
                vec![0; PACKETS * (UDP_RR_MAX_SIZE + 64)],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket
            .bind(config.local_port)
            .map_err(|_| ClientError::InvalidArgument("udp-rr cannot bind its local port"))?;
        Ok(UdpRr {
            handle: sockets.add(socket),
            config,
            report: UdpRrReport {
                rtts: Vec::with_capacity(config.count as usize),
                lost: 0,
            },
            payload: vec![0; config.size],
            buf: vec![0; config.size + 64],
            next_seq: 0,
            in_flight: None,
            started: None,
            sent_now: false,
            outcome: None,
        })
    }

    /// Reads echoes, gives up on a late one, and queues the next datagram.
    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        now: Instant,
    ) -> Poll<Result<UdpRrReport, ClientError>> {
        self.sent_now = false;
        if let Some(outcome) = &self.outcome {
            return Poll::Ready(outcome.clone());
        }
        let started = *self.started.get_or_insert(now);
        let socket = sockets.get_mut::<udp::Socket>(self.handle);
        while let Ok((n, meta)) = socket.recv_slice(&mut self.buf) {
            let Some((seq, sent_at)) = self.in_flight else {
                continue; // a late echo of an exchange given up on
            };
            fill(&mut self.payload, seq);
            if meta.endpoint == self.config.to && self.buf[..n] == self.payload[..] {
                if seq >= UDP_RR_WARMUP {
                    self.report.rtts.push(now - sent_at);
                }
                self.in_flight = None;
            }
        }
        if let Some((seq, sent_at)) = self.in_flight {
            if now - sent_at >= self.config.exchange_timeout {
                if seq >= UDP_RR_WARMUP {
                    self.report.lost += 1;
                }
                self.in_flight = None;
            }
        }
        if self.report.rtts.len() as u64 >= u64::from(self.config.count) {
            let mut report = core::mem::take(&mut self.report);
            report.rtts.sort_unstable();
            return self.finish(Ok(report));
        }
        if now - started >= self.config.timeout {
            return self.finish(Err(ClientError::TimedOut(self.config.timeout)));
        }
        if self.in_flight.is_none() {
            fill(&mut self.payload, self.next_seq);
            if socket.send_slice(&self.payload, self.config.to).is_ok() {
                self.in_flight = Some((self.next_seq, now));
                self.next_seq += 1;
                self.sent_now = true;
            }
        }
        Poll::Pending
    }

    fn finish(
        &mut self,
        outcome: Result<UdpRrReport, ClientError>,
    ) -> Poll<Result<UdpRrReport, ClientError>> {
        self.outcome = Some(outcome.clone());
        Poll::Ready(outcome)
    }

    /// The last `poll` queued a datagram: poll the interface now.
    pub fn wants_poll(&self) -> bool {
        self.sent_now
    }

    /// When the exchange in flight counts as lost.
    pub fn poll_at(&self) -> Option<Instant> {
        self.in_flight
            .map(|(_, sent_at)| sent_at + self.config.exchange_timeout)
    }

    /// Timed round trips so far and the timed exchanges lost.
    pub fn progress(&self) -> (usize, u32) {
        (self.report.rtts.len(), self.report.lost)
    }

    /// Takes the socket out of the set.
    pub fn release(self, sockets: &mut SocketSet<'_>) {
        sockets.remove(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn us(v: &[i64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u as u64)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_and_line() {
        let r = UdpRrReport {
            rtts: us(&(1..=100).collect::<Vec<_>>()),
            lost: 0,
        };
        assert_eq!(r.median(), Duration::from_micros(50));
        assert_eq!(r.p99(), Duration::from_micros(99));
        let r = UdpRrReport {
            rtts: us(&[10, 20, 30]),
            lost: 0,
        };
        assert_eq!(
            r.to_string(),
            "udp-rr: 3 round trips, median 20.0 us, p99 30.0 us"
        );
        assert_eq!(UdpRrReport::default().median(), Duration::ZERO);
    }

    #[test]
    fn payload_matches_the_hosted_guest() {
        let mut a = vec![0u8; 16];
        fill(&mut a, 3);
        assert_eq!(u64::from_le_bytes(a[..8].try_into().unwrap()), 3);
        assert_eq!(a[8], 3);
        assert_eq!(a[9], 34);
    }
}
