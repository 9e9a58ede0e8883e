//! TCP bulk throughput: seeded ChaCha8 data from one socket to another,
//! SHA-256 on both ends, 256 KiB socket buffers, Nagle off. Ours: the
//! testkit's `apps::tcp_transfer` between two guests on the sim fabric. Peer:
//! the same loop, the same sockets, on one smoltcp interface over `Loopback`.

use std::time::Instant;

use ibguest_testkit::apps::{tcp_socket, tcp_transfer, BulkReceiver, BulkSender};
use ibguest_testkit::{BoxError, GuestSpec, Net};
use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::sim::FaultConfig;

use crate::loopback::{CountingLoopback, Lo, ADDR};
use crate::udp_bench::two_guests;

/// Socket buffer size, both ends, both stacks (as in `apps::tcp_transfer`).
pub const SOCKET_BUFFER: usize = 256 * 1024;
/// The data's seed, both stacks.
const SEED: u64 = 7;
/// Virtual-time limit of one transfer.
const LIMIT: Duration = Duration::from_secs(3600);
const PORT: u16 = 5001;

/// Megabytes (10^6 bytes) per second of wall time.
fn rate(bytes: usize, start: Instant) -> f64 {
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn check(bytes: usize, got: usize, sent: [u8; 32], received: [u8; 32]) -> Result<(), BoxError> {
    if got != bytes {
        return Err(format!("TCP transfer delivered {got} of {bytes} bytes").into());
    }
    if sent != received {
        return Err("TCP transfer: SHA-256 of the received data differs from the sent data".into());
    }
    Ok(())
}

/// Ours: `apps::tcp_transfer` from guest 0 to guest 1.
pub fn ours(bytes: usize) -> Result<f64, BoxError> {
    timed_transfer(&mut two_guests()?, bytes)
}

/// `apps::tcp_transfer` from guest 0 to guest 1 of `net`, checked; MB/s.
fn timed_transfer(net: &mut Net, bytes: usize) -> Result<f64, BoxError> {
    let start = Instant::now();
    let report = tcp_transfer(net, 0, 1, bytes, SEED, LIMIT)?;
    let mbps = rate(bytes, start);
    check(
        bytes,
        report.bytes,
        report.sent_sha256,
        report.received_sha256,
    )?;
    Ok(mbps)
}

/// The connected IP MTU of the connected-mode rows (Linux's).
pub const CONNECTED_MTU: u32 = 65520;

/// Two guests in connected mode (`GuestSpec::with_connected_mode`), links
/// up.
fn two_connected_guests() -> Result<Net, BoxError> {
    let mut net = Net::new(FaultConfig::NONE);
    for n in 1..=2 {
        net.add(GuestSpec::new(n).with_connected_mode(CONNECTED_MTU))?;
    }
    net.run_until(Duration::from_secs(1), |n| {
        n.guests
            .iter()
            .all(|g| g.device.link() == ipoib::LinkState::Up)
    })?;
    Ok(net)
}

/// Ours in connected mode: `apps::tcp_transfer` from guest 0 to guest 1
/// over RC; an error unless RC carried the bulk of it.
pub fn ours_connected(bytes: usize) -> Result<f64, BoxError> {
    let mut net = two_connected_guests()?;
    let mbps = timed_transfer(&mut net, bytes)?;
    let cm = net.guests[0].device.stats().cm;
    if !cm.enabled || (cm.tx_bytes as usize) < bytes / 10 * 9 {
        return Err(format!(
            "connected mode carried {} of {bytes} bytes (enabled: {})",
            cm.tx_bytes, cm.enabled
        )
        .into());
    }
    Ok(mbps)
}

/// The capabilities our connected-mode device reports (its MTU is the
/// connected MTU), for the loopback peer of the connected-mode row.
pub fn connected_caps() -> Result<DeviceCapabilities, BoxError> {
    Ok(caps_of(&two_connected_guests()?))
}

/// The capabilities our device reports (checksum duties) with the IPoIB
/// MTU, for a loopback peer that has to do the same per-packet work. The
/// device reports a larger MTU to smoltcp (it fragments what exceeds the
/// IPoIB MTU itself and clamps TCP's MSS to it), so TCP's segments are
/// IPoIB-MTU sized: the peer gets that MTU.
pub fn ipoib_caps() -> Result<DeviceCapabilities, BoxError> {
    Ok(caps_of(&two_guests()?))
}

/// Guest 0's device capabilities, with its MTU.
fn caps_of(net: &ibguest_testkit::Net) -> DeviceCapabilities {
    use smoltcp::phy::Device;
    let device = &net.guests[0].device;
    let mut caps = device.capabilities();
    caps.max_transmission_unit = device.mtu();
    caps
}

/// Peer: the same transfer over smoltcp's `Loopback`, reporting `caps`
/// (`None`: `Loopback`'s own).
pub fn loopback(bytes: usize, caps: Option<&DeviceCapabilities>) -> Result<f64, BoxError> {
    let device = match caps {
        Some(c) => CountingLoopback::with_caps(c.clone()),
        None => CountingLoopback::plain(),
    };
    let mut lo = Lo::new(device);
    let mut server = tcp_socket(SOCKET_BUFFER);
    server.listen(PORT)?;
    let server = lo.sockets.add(server);
    let client = lo.sockets.add(tcp_socket(SOCKET_BUFFER));
    lo.sockets.get_mut::<tcp::Socket>(client).connect(
        lo.iface.context(),
        IpEndpoint::new(IpAddress::Ipv4(ADDR), PORT),
        49152,
    )?;

    // From here on, the loop of `apps::tcp_transfer`, on one interface.
    let start = Instant::now();
    let mut sender = BulkSender::new(bytes, SEED);
    let mut receiver = BulkReceiver::default();
    let deadline = lo.now + LIMIT;
    loop {
        sender.pump(lo.sockets.get_mut::<tcp::Socket>(client));
        receiver.drain(lo.sockets.get_mut::<tcp::Socket>(server));
        if receiver.received >= bytes {
            break;
        }
        if lo.now > deadline {
            return Err(
                format!("loopback TCP transfer not done within {LIMIT} of virtual time").into(),
            );
        }
        let busy = lo.round();
        lo.advance(busy);
    }
    let mbps = rate(bytes, start);
    let received = receiver.received;
    check(bytes, received, sender.sha256(), receiver.sha256())?;
    Ok(mbps)
}

/// The application's share of a transfer alone, for context: the same
/// ChaCha8 data generated in the same 64 KiB chunks and hashed once for each
/// end, with no stack and no copies. MB/s.
pub fn data_only(bytes: usize) -> Result<f64, BoxError> {
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut tx_hash = Sha256::new();
    let mut rx_hash = Sha256::new();
    let mut done = 0;
    while done < bytes {
        let n = chunk.len().min(bytes - done);
        rng.fill_bytes(&mut chunk[..n]);
        tx_hash.update(&chunk[..n]);
        rx_hash.update(&chunk[..n]);
        done += n;
    }
    let mbps = rate(bytes, start);
    let (a, b): ([u8; 32], [u8; 32]) = (tx_hash.finalize().into(), rx_hash.finalize().into());
    check(bytes, done, a, b)?;
    Ok(mbps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_arrives_intact() {
        let bytes = 512 * 1024;
        assert!(ours(bytes).unwrap() > 0.0);
        assert!(loopback(bytes, None).unwrap() > 0.0);
        let caps = ipoib_caps().unwrap();
        assert!(loopback(bytes, Some(&caps)).unwrap() > 0.0);
        assert!(data_only(bytes).unwrap() > 0.0);
        assert!(ours_connected(bytes).unwrap() > 0.0);
        let caps = connected_caps().unwrap();
        assert_eq!(caps.max_transmission_unit, CONNECTED_MTU as usize);
        assert!(loopback(bytes, Some(&caps)).unwrap() > 0.0);
    }
}
