//! Poll-driven clients, for tests and the hosted guest's command line.
//!
//! Each client adds one socket to a `SocketSet` when it is made, and is then
//! polled after every `ipoib::poll_interface` with the current time:
//!
//! ```text
//! let mut ping = Pinger::new(&mut sockets, PingConfig::new(target))?;
//! let report = loop {
//!     ipoib::poll_interface(&mut iface, now(), &mut device, &mut sockets);
//!     if let Poll::Ready(result) = ping.poll(&mut sockets, now()) { break result?; }
//! };
//! ping.release(&mut sockets);
//! ```
//!
//! `poll` returns `Poll::Pending` until the client is done, then
//! `Poll::Ready` with its outcome, and keeps returning that outcome if
//! polled again. TCP clients connect in `new`, which needs the interface's
//! context (`iface.context()`) to pick a source address. A client's time
//! limit counts from its first poll. `release` takes the socket out of the
//! set; the TCP clients report only once their connection is closed (or
//! our half is closed and acknowledged), so releasing then drops nothing
//! the peer still waits for.

mod http_get;
mod ping;
mod tcp;
mod tcp_sender;
mod udp_rr;

use core::fmt;

use smoltcp::socket::{icmp, tcp as smol_tcp};
use smoltcp::time::Duration;

use crate::http::ResponseError;

pub use http_get::{HttpGet, HttpGetConfig, HTTP_GET_MAX_RESPONSE};
pub use ping::{PingConfig, PingReport, Pinger, PING_MAX_PAYLOAD};
pub use tcp_sender::{SendReport, TcpSender, TcpSenderConfig};
pub use udp_rr::{UdpRr, UdpRrConfig, UdpRrReport, UDP_RR_MAX_SIZE, UDP_RR_WARMUP};

/// Why a client gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A setting that cannot work, named.
    InvalidArgument(&'static str),
    /// The ICMP socket could not be bound.
    Bind(icmp::BindError),
    /// smoltcp refused to start the connection.
    Connect(smol_tcp::ConnectError),
    /// The peer answered the SYN with a reset: nothing listens there.
    Refused,
    /// The connection was reset or given up on after it was established.
    Reset,
    /// The time limit passed first.
    TimedOut(Duration),
    /// The HTTP response could not be parsed.
    Response(ResponseError),
    /// The HTTP response was longer than the limit.
    ResponseTooLarge(usize),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            ClientError::Bind(e) => write!(f, "cannot bind the ICMP socket: {e}"),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Refused => f.write_str("connection refused"),
            ClientError::Reset => f.write_str("connection reset"),
            ClientError::TimedOut(limit) => write!(f, "no result within {limit}"),
            ClientError::Response(e) => write!(f, "bad HTTP response: {e}"),
            ClientError::ResponseTooLarge(limit) => {
                write!(f, "the HTTP response is larger than {limit} bytes")
            }
        }
    }
}

impl core::error::Error for ClientError {}

/// Hands out local ports for client connections, cycling through the
/// dynamic range 49152..=65535 so that consecutive connections differ.
#[derive(Clone, Debug)]
pub struct LocalPorts {
    next: u16,
}

impl LocalPorts {
    pub const FIRST: u16 = 49152;

    /// Starts at `FIRST + offset` (wrapped into the range): give different
    /// guests or runs different offsets.
    pub fn new(offset: u16) -> LocalPorts {
        LocalPorts {
            next: Self::FIRST + offset % (u16::MAX - Self::FIRST + 1),
        }
    }

    /// The next port.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u16 {
        let port = self.next;
        self.next = if port == u16::MAX {
            Self::FIRST
        } else {
            port + 1
        };
        port
    }
}

impl Default for LocalPorts {
    fn default() -> Self {
        LocalPorts::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_cycle_in_range() {
        let mut p = LocalPorts::new(16383);
        assert_eq!(p.next(), 65535);
        assert_eq!(p.next(), 49152);
        let mut p = LocalPorts::new(u16::MAX);
        assert!(p.next() >= LocalPorts::FIRST);
        let mut p = LocalPorts::default();
        assert_eq!((p.next(), p.next()), (49152, 49153));
    }
}
