//! Discard (RFC 863): reads everything, counts it and hashes it.

use alloc::collections::VecDeque;
use core::fmt;

use sha2::{Digest, Sha256};
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;

use super::pool::close_after_peer;
use super::{ServiceStats, DISCARD_REPORTS};

/// What one discard connection received, reported when the peer closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardReport {
    pub remote: Option<IpEndpoint>,
    pub bytes: u64,
    /// SHA-256 of everything received, in order.
    pub sha256: [u8; 32],
}

impl fmt::Display for DiscardReport {
    /// `discard from 10.77.0.1:49152: 1048576 bytes sha256 <64 hex digits>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("discard from ")?;
        match self.remote {
            Some(remote) => write!(f, "{remote}")?,
            None => f.write_str("?")?,
        }
        write!(f, ": {} bytes sha256 ", self.bytes)?;
        self.sha256.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[derive(Default)]
pub(crate) struct DiscardConn {
    bytes: u64,
    hash: Sha256,
}

pub(crate) fn serve(
    socket: &mut tcp::Socket<'_>,
    conn: &mut DiscardConn,
    stats: &mut ServiceStats,
    reports: &mut VecDeque<DiscardReport>,
) -> bool {
    let mut did = false;
    while socket.can_recv() {
        let got = socket.recv(|data| {
            conn.hash.update(&*data);
            (data.len(), data.len())
        });
        match got {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                conn.bytes += n as u64;
                stats.discard_bytes += n as u64;
                did = true;
            }
        }
    }
    if close_after_peer(socket) {
        if reports.len() == DISCARD_REPORTS {
            reports.pop_front();
        }
        reports.push_back(DiscardReport {
            remote: socket.remote_endpoint(),
            bytes: conn.bytes,
            sha256: conn.hash.finalize_reset().into(),
        });
        did = true;
    }
    did
}
