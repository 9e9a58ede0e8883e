//! `udp-rr`: UDP request/response latency against an echo service.
//!
//! One datagram at a time: send it, wait for its echo, repeat. The guest's
//! loop is the ordinary one (poll, then arm the interrupt and sleep when
//! nothing moves), so each round trip pays for the doorbells and interrupts
//! a real guest would take. Each exchange is timed with `std::time::Instant`
//! from just before the datagram is queued to the pass that reads its echo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ibguest_hosted::{HostedError, Runtime};
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;

/// Untimed exchanges first (the first one also resolves the address).
pub const WARMUP: u32 = 100;
/// An exchange whose echo has not come back by then is counted as lost and
/// the next one starts.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);
/// The sequence number at the start of each datagram.
const SEQ_BYTES: usize = 8;
/// Largest datagram that fits one IPoIB packet (MTU 2044 less the IPv4 and
/// UDP headers), so no exchange is fragmented.
pub const MAX_SIZE: usize = 2044 - 20 - 8;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct RrConfig {
    pub to: IpEndpoint,
    pub local_port: u16,
    /// Timed round trips wanted.
    pub count: u32,
    /// UDP payload bytes, `SEQ_BYTES..=MAX_SIZE`.
    pub size: usize,
    /// For the whole command.
    pub timeout: Duration,
}

/// Timed round trips, sorted, and the exchanges that got no echo.
#[derive(Clone, Debug, Default)]
pub struct RrReport {
    pub rtts: Vec<Duration>,
    pub lost: u32,
}

/// The nearest-rank `p` quantile (0 < p <= 1) of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl RrReport {
    pub fn median(&self) -> Duration {
        percentile(&self.rtts, 0.5)
    }

    pub fn p99(&self) -> Duration {
        percentile(&self.rtts, 0.99)
    }

    /// `udp-rr: N round trips, median X us, p99 Y us`
    pub fn line(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "udp-rr: {} round trips, median {:.1} us, p99 {:.1} us",
            self.rtts.len(),
            us(self.median()),
            us(self.p99())
        )
    }
}

/// Datagram `seq`: the sequence number, then a pattern that depends on it.
fn fill(payload: &mut [u8], seq: u64) {
    payload[..SEQ_BYTES].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in payload[SEQ_BYTES..].iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(seq) as u8;
    }
}

/// Runs the exchanges. `Ok(None)` if `stop` was set first.
pub fn udp_rr(
    rt: &mut Runtime,
    stop: &AtomicBool,
    config: RrConfig,
) -> Result<Option<RrReport>, HostedError> {
    if !(SEQ_BYTES..=MAX_SIZE).contains(&config.size) {
        return Err(HostedError::Protocol(format!(
            "--size must be {SEQ_BYTES}..={MAX_SIZE} bytes (one IPoIB packet), not {}",
            config.size
        )));
    }
    let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]);
    let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]);
    let mut socket = udp::Socket::new(rx, tx);
    socket
        .bind(config.local_port)
        .map_err(|e| HostedError::Protocol(format!("udp bind: {e}")))?;
    let handle = rt.stack.sockets.add(socket);

    let count = u64::from(config.count);
    let warmup = u64::from(WARMUP);
    let mut report = RrReport {
        rtts: Vec::with_capacity(config.count as usize),
        lost: 0,
    };
    let mut payload = vec![0u8; config.size];
    let mut expected = vec![0u8; config.size];
    let mut buf = vec![0u8; config.size + 64];
    // Exchanges started so far; the one in flight and when it started.
    let mut next_seq = 0u64;
    let mut in_flight: Option<(u64, Instant)> = None;
    let deadline = Instant::now() + config.timeout;

    while !stop.load(Ordering::Relaxed) {
        let progress = rt.poll()?;
        let socket = rt.stack.sockets.get_mut::<udp::Socket>(handle);
        while let Ok((n, meta)) = socket.recv_slice(&mut buf) {
            let Some((seq, started)) = in_flight else {
                continue; // a late echo of an exchange given up on
            };
            fill(&mut expected, seq);
            if meta.endpoint == config.to && buf[..n] == expected[..] {
                let rtt = started.elapsed();
                if seq >= warmup {
                    report.rtts.push(rtt);
                }
                in_flight = None;
            }
        }
        if let Some((seq, started)) = in_flight {
            if started.elapsed() >= EXCHANGE_TIMEOUT {
                if seq >= warmup {
                    report.lost += 1;
                }
                in_flight = None;
            }
        }
        if report.rtts.len() as u64 >= count {
            report.rtts.sort();
            return Ok(Some(report));
        }
        if Instant::now() >= deadline {
            return Err(HostedError::Protocol(format!(
                "udp-rr: only {} of {count} round trips ({} lost) within {:?}",
                report.rtts.len(),
                report.lost,
                config.timeout
            )));
        }
        if in_flight.is_none() {
            fill(&mut payload, next_seq);
            // Started just before the datagram is queued; it leaves in the
            // poll that follows at once.
            let started = Instant::now();
            socket
                .send_slice(&payload, config.to)
                .map_err(|e| HostedError::Protocol(format!("udp send: {e}")))?;
            in_flight = Some((next_seq, started));
            next_seq += 1;
            continue;
        }
        if !progress {
            rt.idle_wait()?;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = us(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_micros(100));
        assert_eq!(percentile(&us(&[7]), 0.99), Duration::from_micros(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn report_line() {
        let r = RrReport {
            rtts: us(&[10, 20, 30]),
            lost: 0,
        };
        assert_eq!(
            r.line(),
            "udp-rr: 3 round trips, median 20.0 us, p99 30.0 us"
        );
    }

    #[test]
    fn payload_carries_its_sequence() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill(&mut a, 1);
        fill(&mut b, 2);
        assert_ne!(a, b);
        assert_eq!(u64::from_le_bytes(a[..8].try_into().unwrap()), 1);
    }
}
