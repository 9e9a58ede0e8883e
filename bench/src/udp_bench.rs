//! UDP packet rate: K 64-byte datagrams from one socket to another, counted
//! at the receiver. Ours: guest 0 → guest 1 on the testkit's sim fabric, each
//! through its own shared-memory channel. Peer: two sockets on one smoltcp
//! interface over `Loopback`. The same driver runs both.

use std::time::Instant;

use ibguest_testkit::{BoxError, Net};
use smoltcp::iface::SocketHandle;
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::udp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::sim::FaultConfig;

use crate::loopback::{CountingLoopback, Lo, ADDR};

/// UDP payload bytes per datagram.
pub const PAYLOAD: usize = 64;
const RX_PORT: u16 = 9000;
const TX_PORT: u16 = 9001;
/// Socket buffers, both sockets, both directions, both stacks.
const SOCKET_PACKETS: usize = 256;
const SOCKET_BYTES: usize = 64 * 1024;
/// Rounds without any progress after the last send before the rest counts as
/// lost.
const IDLE_ROUNDS: u32 = 1000;
/// Marks the datagram sent before the clock starts (it resolves ARP).
const PRIMER: u64 = u64::MAX;

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct UdpRun {
    /// Datagrams received per second of wall time.
    pub rate: f64,
    /// Datagrams sent but never received.
    pub lost: usize,
}

/// A bound UDP socket with the benchmark's buffer sizes.
fn socket(port: u16) -> Result<udp::Socket<'static>, BoxError> {
    let rx = udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_BYTES],
    );
    let tx = udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; SOCKET_PACKETS],
        vec![0; SOCKET_BYTES],
    );
    let mut socket = udp::Socket::new(rx, tx);
    socket.bind(port)?;
    Ok(socket)
}

/// A sender socket, a receiver socket and the stack(s) between them.
trait Pair {
    /// Queues one datagram; false if the send buffer is full.
    fn send(&mut self, payload: &[u8]) -> bool;
    /// One round of the stack(s); true if anything moved.
    fn round(&mut self) -> Result<bool, BoxError>;
    /// Takes one received datagram into `buf`, returning its length.
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize>;
}

/// Sends `k` datagrams numbered `0..k` and counts what arrives. The clock
/// runs from the first send until the last datagram arrived (or, if some are
/// lost, until the stacks have been idle for [`IDLE_ROUNDS`] rounds).
fn blast(pair: &mut impl Pair, k: usize) -> Result<UdpRun, BoxError> {
    let mut buf = [0u8; 2048];
    // Prime the path (ARP) outside the measurement.
    let mut primer = [0u8; PAYLOAD];
    primer[..8].copy_from_slice(&PRIMER.to_le_bytes());
    if !pair.send(&primer) {
        return Err("UDP send buffer full before the first datagram".into());
    }
    let mut primed = false;
    for _ in 0..100_000 {
        pair.round()?;
        if pair.recv(&mut buf).is_some() {
            primed = true;
            break;
        }
    }
    if !primed {
        return Err("the priming UDP datagram never arrived".into());
    }

    let mut payload = [0u8; PAYLOAD];
    let mut sent = 0usize;
    let mut received = 0usize;
    let mut idle = 0u32;
    let start = Instant::now();
    while received < k {
        while sent < k {
            payload[..8].copy_from_slice(&(sent as u64).to_le_bytes());
            if !pair.send(&payload) {
                break;
            }
            sent += 1;
        }
        let mut busy = pair.round()?;
        while let Some(n) = pair.recv(&mut buf) {
            let seq = u64::from_le_bytes(buf[..8].try_into()?);
            if n != PAYLOAD || seq >= k as u64 {
                return Err(format!("unexpected UDP datagram: {n} bytes, number {seq}").into());
            }
            received += 1;
            busy = true;
        }
        if sent == k && !busy {
            idle += 1;
            if idle >= IDLE_ROUNDS {
                break;
            }
        } else {
            idle = 0;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(UdpRun {
        rate: received as f64 / elapsed,
        lost: k - received,
    })
}

/// Guest 0 → guest 1 over the sim fabric.
struct Guests {
    net: Net,
    tx: SocketHandle,
    rx: SocketHandle,
    dst: IpEndpoint,
}

impl Pair for Guests {
    fn send(&mut self, payload: &[u8]) -> bool {
        let s = self.net.guests[0].sockets.get_mut::<udp::Socket>(self.tx);
        s.send_slice(payload, self.dst).is_ok()
    }

    fn round(&mut self) -> Result<bool, BoxError> {
        let busy = self.net.round()?;
        self.net.advance(busy);
        Ok(busy)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let s = self.net.guests[1].sockets.get_mut::<udp::Socket>(self.rx);
        s.recv_slice(buf).ok().map(|(n, _)| n)
    }
}

/// Two in-process guests on a fault-free fabric, links up.
pub fn two_guests() -> Result<Net, BoxError> {
    let mut net = Net::with_guests(2, FaultConfig::NONE)?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    Ok(net)
}

/// Ours: guest 0 sends `k` datagrams to guest 1.
pub fn ours(k: usize) -> Result<UdpRun, BoxError> {
    let mut net = two_guests()?;
    let rx = net.guests[1].sockets.add(socket(RX_PORT)?);
    let tx = net.guests[0].sockets.add(socket(TX_PORT)?);
    let dst = IpEndpoint::new(IpAddress::Ipv4(net.guests[1].spec.ipv4()), RX_PORT);
    blast(&mut Guests { net, tx, rx, dst }, k)
}

/// Both sockets on one loopback interface.
struct Looped {
    lo: Lo,
    tx: SocketHandle,
    rx: SocketHandle,
    dst: IpEndpoint,
}

impl Pair for Looped {
    fn send(&mut self, payload: &[u8]) -> bool {
        let s = self.lo.sockets.get_mut::<udp::Socket>(self.tx);
        s.send_slice(payload, self.dst).is_ok()
    }

    fn round(&mut self) -> Result<bool, BoxError> {
        let busy = self.lo.round();
        self.lo.advance(busy);
        Ok(busy)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let s = self.lo.sockets.get_mut::<udp::Socket>(self.rx);
        s.recv_slice(buf).ok().map(|(n, _)| n)
    }
}

/// Peer: the same `k` datagrams through smoltcp's `Loopback`.
pub fn loopback(k: usize) -> Result<UdpRun, BoxError> {
    loopback_with(k, None)
}

/// The same through a `Loopback` reporting `caps` (the IPoIB device's MTU
/// and checksum duties: it then makes the IPv4 and UDP checksums ours
/// makes), or as it is.
pub fn loopback_with(k: usize, caps: Option<&DeviceCapabilities>) -> Result<UdpRun, BoxError> {
    let device = match caps {
        Some(caps) => CountingLoopback::with_caps(caps.clone()),
        None => CountingLoopback::plain(),
    };
    let mut lo = Lo::new(device);
    let rx = lo.sockets.add(socket(RX_PORT)?);
    let tx = lo.sockets.add(socket(TX_PORT)?);
    let dst = IpEndpoint::new(IpAddress::Ipv4(ADDR), RX_PORT);
    blast(&mut Looped { lo, tx, rx, dst }, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_stacks_deliver_every_datagram() {
        let run = ours(500).unwrap();
        assert_eq!(run.lost, 0);
        let run = loopback(500).unwrap();
        assert_eq!(run.lost, 0);
        let caps = crate::tcp_bench::ipoib_caps().unwrap();
        let run = loopback_with(500, Some(&caps)).unwrap();
        assert_eq!(run.lost, 0);
    }
}
