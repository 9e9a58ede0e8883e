//! Discard (RFC 863): reads everything, counts it and, in the default
//! [`DiscardMode::Sha256`], hashes it. [`DiscardMode::Count`] only counts:
//! a raw sink for measuring the transport without the data work.

use alloc::collections::VecDeque;
use core::fmt;

use sha2::{Digest, Sha256};
use smoltcp::socket::tcp;
use smoltcp::wire::IpEndpoint;

use super::pool::close_after_peer;
use super::{ServiceStats, DISCARD_REPORTS};

/// What the discard service does with what it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiscardMode {
    /// Counts it and SHA-256s it (the report carries the hash).
    #[default]
    Sha256,
    /// Counts it only (the report carries no hash).
    Count,
}

/// What one discard connection received, reported when the peer closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardReport {
    pub remote: Option<IpEndpoint>,
    pub bytes: u64,
    /// SHA-256 of everything received, in order; `None` in
    /// [`DiscardMode::Count`].
    pub sha256: Option<[u8; 32]>,
}

impl fmt::Display for DiscardReport {
    /// `discard from 10.77.0.1:49152: 1048576 bytes sha256 <64 hex digits>`,
    /// or without ` sha256 ...` when nothing was hashed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("discard from ")?;
        match self.remote {
            Some(remote) => write!(f, "{remote}")?,
            None => f.write_str("?")?,
        }
        write!(f, ": {} bytes", self.bytes)?;
        match &self.sha256 {
            Some(hash) => {
                f.write_str(" sha256 ")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            None => Ok(()),
        }
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
    mode: DiscardMode,
    stats: &mut ServiceStats,
    reports: &mut VecDeque<DiscardReport>,
) -> bool {
    let mut did = false;
    while socket.can_recv() {
        let got = socket.recv(|data| {
            if mode == DiscardMode::Sha256 {
                conn.hash.update(&*data);
            }
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
            sha256: match mode {
                DiscardMode::Sha256 => Some(conn.hash.finalize_reset().into()),
                DiscardMode::Count => None,
            },
        });
        did = true;
    }
    did
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use smoltcp::wire::{IpAddress, Ipv4Address};

    use super::*;

    #[test]
    fn reports_name_the_hash_only_when_there_is_one() {
        let remote = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 77, 0, 1)), 49152);
        let mut r = DiscardReport {
            remote: Some(remote),
            bytes: 5,
            sha256: None,
        };
        assert_eq!(r.to_string(), "discard from 10.77.0.1:49152: 5 bytes");
        r.sha256 = Some([0xab; 32]);
        let text = r.to_string();
        assert!(text.starts_with("discard from 10.77.0.1:49152: 5 bytes sha256 abab"));
        assert_eq!(
            text.len(),
            "discard from 10.77.0.1:49152: 5 bytes sha256 ".len() + 64
        );
    }
}
