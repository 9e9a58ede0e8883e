//! `GET path` over HTTP/1.1 with `Connection: close`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::task::Poll;

use smoltcp::iface::{Context, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpEndpoint;

use super::tcp::{ClientConn, Phase};
use super::ClientError;
use crate::http::{expected_len, parse_response, Response};

/// Largest response [`HttpGet`] accepts by default.
pub const HTTP_GET_MAX_RESPONSE: usize = 256 * 1024;
const RX_BUFFER: usize = 16 * 1024;
const TX_BUFFER: usize = 4 * 1024;

#[derive(Clone, Debug)]
pub struct HttpGetConfig {
    pub remote: IpEndpoint,
    /// Non-zero; see [`super::LocalPorts`].
    pub local_port: u16,
    /// Starts with `/`; visible ASCII only.
    pub path: String,
    pub timeout: Duration,
    pub max_response: usize,
}

impl HttpGetConfig {
    /// GET `path` within 10 s, up to [`HTTP_GET_MAX_RESPONSE`] bytes.
    pub fn new(remote: IpEndpoint, local_port: u16, path: &str) -> HttpGetConfig {
        HttpGetConfig {
            remote,
            local_port,
            path: path.into(),
            timeout: Duration::from_secs(10),
            max_response: HTTP_GET_MAX_RESPONSE,
        }
    }
}

/// Sends one request and reads the response until the server closes or
/// `Content-Length` is satisfied; then closes and reports.
pub struct HttpGet {
    conn: ClientConn,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
    max_response: usize,
    /// The whole response is in `response`.
    complete: bool,
    outcome: Option<Result<Response, ClientError>>,
}

impl HttpGet {
    /// Checks the path, adds the socket and starts connecting.
    pub fn new(
        cx: &mut Context,
        sockets: &mut SocketSet<'static>,
        config: HttpGetConfig,
    ) -> Result<HttpGet, ClientError> {
        let path = &config.path;
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidArgument(
                "the path must start with / and be visible ASCII",
            ));
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ibguest-netcore\r\nConnection: close\r\n\r\n",
            config.remote
        )
        .into_bytes();
        if request.len() > TX_BUFFER {
            return Err(ClientError::InvalidArgument("the path is too long"));
        }
        let conn = ClientConn::connect(
            cx,
            sockets,
            config.remote,
            config.local_port,
            (RX_BUFFER, TX_BUFFER),
            config.timeout,
        )?;
        Ok(HttpGet {
            conn,
            request,
            written: 0,
            response: Vec::new(),
            max_response: config.max_response,
            complete: false,
            outcome: None,
        })
    }

    pub fn poll(
        &mut self,
        sockets: &mut SocketSet<'_>,
        now: Instant,
    ) -> Poll<Result<Response, ClientError>> {
        if let Some(outcome) = &self.outcome {
            return Poll::Ready(outcome.clone());
        }
        let socket = sockets.get_mut::<tcp::Socket>(self.conn.handle);
        let outcome = match self.exchange(socket) {
            Err(e) => {
                socket.abort();
                Err(e)
            }
            Ok(()) => match self.conn.phase(socket, now) {
                Err(_) if self.complete => {
                    parse_response(&self.response).map_err(ClientError::Response)
                }
                Err(e) => Err(e),
                Ok(Phase::Open) => return Poll::Pending,
                Ok(Phase::HalfClosed | Phase::Finished) if self.complete => {
                    parse_response(&self.response).map_err(ClientError::Response)
                }
                // The server closed before the response was complete.
                Ok(_) => parse_response(&self.response).map_err(ClientError::Response),
            },
        };
        self.outcome = Some(outcome.clone());
        Poll::Ready(outcome)
    }

    /// Writes the request, reads the response, and closes once it is all
    /// there.
    fn exchange(&mut self, socket: &mut tcp::Socket<'_>) -> Result<(), ClientError> {
        while self.written < self.request.len() && socket.can_send() {
            match socket.send_slice(&self.request[self.written..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.written += n,
            }
        }
        while socket.can_recv() {
            let room = self.max_response - self.response.len();
            if room == 0 {
                return Err(ClientError::ResponseTooLarge(self.max_response));
            }
            let response = &mut self.response;
            let got = socket.recv(|data| {
                let n = data.len().min(room);
                response.extend_from_slice(&data[..n]);
                (n, n)
            });
            if !matches!(got, Ok(n) if n > 0) {
                break;
            }
        }
        let peer_done = socket.state() == tcp::State::CloseWait && !socket.can_recv();
        let length_done = expected_len(&self.response).is_some_and(|n| self.response.len() >= n);
        if !self.complete && (peer_done || length_done) && socket.is_active() {
            self.complete = true;
            socket.close();
        }
        Ok(())
    }

    /// Takes the socket out of the set.
    pub fn release(self, sockets: &mut SocketSet<'_>) {
        sockets.remove(self.conn.handle);
    }
}
