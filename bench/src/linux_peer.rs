//! The Linux peer's programs, run by re-executing this binary inside a
//! namespace (`ip netns exec NS ibguest-bench __peer ...`). They do what
//! the hosted guests do, with the kernel's UDP and TCP instead of ours, and
//! print the same lines, so one parser reads both:
//!
//! - `udp-echo ADDR:PORT`: echoes datagrams (the guests' UDP echo, port 7);
//! - `udp-rr ADDR:PORT COUNT SIZE`: the guests' `udp-rr`: the same
//!   warm-up, datagrams, timing and percentiles;
//! - `tcp-sink ADDR:PORT`: the guests' discard service: reads and SHA-256s
//!   each connection, then closes it;
//! - `tcp-send ADDR:PORT BYTES`: the guests' `send`: the same seeded bytes
//!   (netcore's `Payload::Seeded(1)`), SHA-256 while sending, close, wait
//!   for the peer's close.
//! - `tcp-sink-raw ADDR:PORT`, `tcp-send-raw ADDR:PORT BYTES [WRITE]`: the same
//!   without the data work, as the guests' `--raw-discard` and
//!   `send --raw`: the sender writes one zeroed buffer over and over, the
//!   sink only counts; `raw` stands where the hash would. WRITE is the
//!   raw sender's write size (default 64 KiB).
//!
//! The servers stop by themselves after [`SERVER_LIFETIME`] in case nobody
//! kills them; the clients are bounded in count and time.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netcore::pattern::Payload;
use sha2::{Digest, Sha256};

/// Untimed exchanges before the timed ones (as the guests' `udp-rr`).
pub const RR_WARMUP: u64 = 100;
/// An exchange without an echo by then is lost (as the guests' `udp-rr`).
const RR_TIMEOUT: Duration = Duration::from_secs(1);
/// Servers exit after this even if nobody stops them.
const SERVER_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The seed the guests' `send` uses by default.
pub const SEED: u64 = 1;
/// Application reads and writes.
const CHUNK: usize = 64 * 1024;
/// A client gives up after this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

type Res = Result<(), String>;

/// `__peer ARGS...`: runs one program; returns its exit code.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["udp-echo", addr] => addr_of(addr).and_then(udp_echo),
        ["udp-rr", addr, count, size] => {
            addr_of(addr).and_then(|a| udp_rr(a, num(count)?, num(size)? as usize))
        }
        ["tcp-sink", addr] => addr_of(addr).and_then(|a| tcp_sink(a, Data::Hashed)),
        ["tcp-send", addr, bytes] => {
            addr_of(addr).and_then(|a| tcp_send(a, num(bytes)?, Data::Hashed, CHUNK))
        }
        ["tcp-sink-raw", addr] => addr_of(addr).and_then(|a| tcp_sink(a, Data::Raw)),
        ["tcp-send-raw", addr, bytes] => {
            addr_of(addr).and_then(|a| tcp_send(a, num(bytes)?, Data::Raw, CHUNK))
        }
        ["tcp-send-raw", addr, bytes, write] => {
            addr_of(addr).and_then(|a| tcp_send(a, num(bytes)?, Data::Raw, num(write)? as usize))
        }
        _ => Err(format!("unknown peer program {args:?}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ibguest-bench peer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn addr_of(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn exit_after_lifetime() {
    std::thread::spawn(|| {
        std::thread::sleep(SERVER_LIFETIME);
        eprintln!("ibguest-bench peer: lifetime over, exiting");
        std::process::exit(0);
    });
}

fn udp_echo(addr: SocketAddr) -> Res {
    exit_after_lifetime();
    let socket = UdpSocket::bind(addr).map_err(err("bind"))?;
    println!("listening on udp {addr}");
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).map_err(err("recv"))?;
        socket.send_to(&buf[..n], from).map_err(err("send"))?;
    }
}

/// Datagram `seq`, as the guests' `udp-rr` builds it.
pub fn rr_payload(payload: &mut [u8], seq: u64) {
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in payload[8..].iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(seq) as u8;
    }
}

/// The nearest-rank `p` quantile of sorted values (as the guests' `udp-rr`).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `udp-rr: N round trips, median X us, p99 Y us`, as the guests print it.
pub fn rr_line(sorted: &[Duration]) -> String {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!(
        "udp-rr: {} round trips, median {:.1} us, p99 {:.1} us",
        sorted.len(),
        us(percentile(sorted, 0.5)),
        us(percentile(sorted, 0.99))
    )
}

fn udp_rr(to: SocketAddr, count: u64, size: usize) -> Res {
    if !(8..=65507).contains(&size) {
        return Err(format!("size {size} is not 8..=65507"));
    }
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(err("bind"))?;
    socket.connect(to).map_err(err("connect"))?;
    socket
        .set_read_timeout(Some(RR_TIMEOUT))
        .map_err(err("timeout"))?;
    let (mut payload, mut buf) = (vec![0u8; size], vec![0u8; size + 64]);
    let mut rtts = Vec::with_capacity(count as usize);
    let mut lost = 0u64;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut seq = 0u64;
    while (rtts.len() as u64) < count {
        if Instant::now() >= deadline {
            return Err(format!(
                "only {} of {count} round trips ({lost} lost)",
                rtts.len()
            ));
        }
        rr_payload(&mut payload, seq);
        let started = Instant::now();
        socket.send(&payload).map_err(err("send"))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) if buf[..n] == payload[..] => {
                    let rtt = started.elapsed();
                    if seq >= RR_WARMUP {
                        rtts.push(rtt);
                    }
                    break;
                }
                Ok(_) => {} // a late echo of an exchange given up on
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if seq >= RR_WARMUP {
                        lost += 1;
                    }
                    break;
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        seq += 1;
    }
    rtts.sort();
    println!("{}", rr_line(&rtts));
    if lost > 0 {
        println!("udp-rr: {lost} exchanges lost (no echo within {RR_TIMEOUT:?})");
    }
    Ok(())
}

/// With or without the data work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Seeded bytes, SHA-256 at both ends.
    Hashed,
    /// A zeroed buffer, only counted.
    Raw,
}

fn tcp_sink(addr: SocketAddr, data: Data) -> Res {
    exit_after_lifetime();
    let listener = TcpListener::bind(addr).map_err(err("bind"))?;
    println!("listening on tcp {addr}");
    let mut buf = vec![0u8; CHUNK];
    loop {
        let (mut stream, from) = listener.accept().map_err(err("accept"))?;
        let mut hash = Sha256::new();
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if data == Data::Hashed {
                        hash.update(&buf[..n]);
                    }
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("sink: {from}: {e}");
                    break;
                }
            }
        }
        drop(stream);
        // The guests' discard service prints the same line.
        match data {
            Data::Hashed => println!(
                "discard from {from}: {total} bytes sha256 {}",
                hex(&hash.finalize())
            ),
            Data::Raw => println!("discard from {from}: {total} bytes"),
        }
    }
}

fn tcp_send(to: SocketAddr, bytes: u64, data: Data, write: usize) -> Res {
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&to, Duration::from_secs(10)).map_err(err("connect"))?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(err("timeout"))?;
    stream
        .set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(err("timeout"))?;
    let mut seeded = Payload::Seeded(SEED).stream();
    let mut hash = Sha256::new();
    // `write` bytes per write: the raw sender's best differs with the MTU
    // (raw::RawMode picks it).
    let size = write.max(1);
    let mut chunk = vec![0u8; size];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(size as u64) as usize;
        if data == Data::Hashed {
            seeded.fill(&mut chunk[..n]);
            hash.update(&chunk[..n]);
        }
        stream.write_all(&chunk[..n]).map_err(err("write"))?;
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write).map_err(err("shutdown"))?;
    // Done when the receiver has read everything and closed.
    let mut rest = [0u8; 256];
    while stream.read(&mut rest).map_err(err("read"))? > 0 {}
    let secs = started.elapsed().as_secs_f64();
    let hash = match data {
        Data::Hashed => hex(&hash.finalize()),
        Data::Raw => "raw".into(),
    };
    println!(
        "sent {sent} bytes sha256 {hash} in {secs:.3} s ({:.1} MB/s)",
        sent as f64 / secs / 1e6
    );
    Ok(())
}

/// The application's work alone, no network: generate the seeded bytes and
/// hash them at the sender, hash them again at the receiver, on one thread.
/// MB/s.
pub fn data_only(bytes: u64) -> f64 {
    let started = Instant::now();
    let mut data = Payload::Seeded(SEED).stream();
    let (mut tx, mut rx) = (Sha256::new(), Sha256::new());
    let mut chunk = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(CHUNK as u64) as usize;
        data.fill(&mut chunk[..n]);
        tx.update(&chunk[..n]);
        rx.update(&chunk[..n]);
        done += n as u64;
    }
    let mbps = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box((tx.finalize(), rx.finalize()));
    mbps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_the_guests() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_micros(99));
        assert_eq!(
            rr_line(&v[..3]),
            "udp-rr: 3 round trips, median 2.0 us, p99 3.0 us"
        );
    }

    #[test]
    fn loopback_programs_agree() {
        // The sink and sender over 127.0.0.1 in this process's namespace.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
            }
            hex(&hash.finalize())
        });
        tcp_send(addr, 300_000, Data::Hashed, CHUNK).unwrap();
        let got = server.join().unwrap();
        let mut want = vec![0u8; 300_000];
        Payload::Seeded(SEED).stream().fill(&mut want);
        assert_eq!(got, hex(&Sha256::digest(&want)));
    }

    #[test]
    fn raw_send_moves_the_requested_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut total = 0u64;
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break total;
                }
                total += n as u64;
            }
        });
        tcp_send(addr, 3 * CHUNK as u64 + 7, Data::Raw, 5000).unwrap();
        assert_eq!(server.join().unwrap(), 3 * CHUNK as u64 + 7);
    }
}
