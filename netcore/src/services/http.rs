//! The HTTP/1.1 status server on port 80: one request per connection,
//! answered with `Connection: close` and an exact `Content-Length`.

use alloc::format;
use alloc::vec::Vec;

use smoltcp::socket::tcp;

use super::pages::PageContext;
use super::pool::{drain, peer_closed};
use super::ServiceStats;
use crate::http::{
    head_len, parse_request, write_response, Method, RequestError, Status, MAX_HEAD,
};

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

pub(crate) enum HttpConn {
    /// Collecting the request head.
    Reading(Vec<u8>),
    /// Sending `response[sent..]`.
    Writing { response: Vec<u8>, sent: usize },
    /// Response sent and our half closed.
    Done,
}

impl Default for HttpConn {
    fn default() -> Self {
        HttpConn::Reading(Vec::new())
    }
}

pub(crate) fn serve(
    socket: &mut tcp::Socket<'_>,
    conn: &mut HttpConn,
    page: &PageContext<'_>,
    stats: &mut ServiceStats,
) -> bool {
    let mut did = false;
    if let HttpConn::Reading(head) = conn {
        did |= read_head(socket, head);
        if let Some(response) = answer(socket, head, page, stats) {
            *conn = HttpConn::Writing { response, sent: 0 };
            did = true;
        } else if head.is_empty() && peer_closed(socket) {
            // Connected and closed without asking anything.
            socket.close();
            *conn = HttpConn::Done;
            return true;
        }
    }
    if let HttpConn::Writing { response, sent } = conn {
        while *sent < response.len() && socket.can_send() {
            match socket.send_slice(&response[*sent..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    *sent += n;
                    did = true;
                }
            }
        }
        if *sent == response.len() {
            socket.close();
            *conn = HttpConn::Done;
            did = true;
        }
    }
    // Whatever else the client sends (a body, more requests) is not read.
    did | (drain(socket) > 0)
}

/// Reads up to [`MAX_HEAD`] bytes. Returns true if it read any.
fn read_head(socket: &mut tcp::Socket<'_>, head: &mut Vec<u8>) -> bool {
    let mut did = false;
    while socket.can_recv() && head.len() < MAX_HEAD {
        let room = MAX_HEAD - head.len();
        let got = socket.recv(|data| {
            let n = data.len().min(room);
            head.extend_from_slice(&data[..n]);
            (n, n)
        });
        match got {
            Ok(0) | Err(_) => break,
            Ok(_) => did = true,
        }
    }
    did
}

/// The response, once there is one to give: the head is complete, too
/// large, or cut short by the client closing.
fn answer(
    socket: &tcp::Socket<'_>,
    head: &[u8],
    page: &PageContext<'_>,
    stats: &mut ServiceStats,
) -> Option<Vec<u8>> {
    let request = match head_len(head) {
        Some(n) => parse_request(&head[..n]),
        None if head.len() >= MAX_HEAD => Err(RequestError::TooLarge),
        None if peer_closed(socket) && !head.is_empty() => Err(RequestError::Incomplete),
        None => return None,
    };
    stats.http_requests += 1;
    let mut out = Vec::new();
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            log::debug!("netcore: http: {e}");
            let status = e.status();
            count(stats, status);
            write_response(
                &mut out,
                status,
                TEXT,
                &[],
                format!("{e}\n").as_bytes(),
                false,
            );
            return Some(out);
        }
    };
    let head_only = match request.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other(_) => {
            let status = Status::METHOD_NOT_ALLOWED;
            count(stats, status);
            let body = b"only GET and HEAD are served\n";
            write_response(
                &mut out,
                status,
                TEXT,
                &[("Allow", "GET, HEAD")],
                body,
                false,
            );
            return Some(out);
        }
    };
    let (status, content_type, body) = match request.path {
        "/" => {
            count(stats, Status::OK);
            (Status::OK, HTML, page.status_html(stats))
        }
        "/stats" => {
            count(stats, Status::OK);
            (Status::OK, TEXT, page.stats_text(stats))
        }
        path => {
            count(stats, Status::NOT_FOUND);
            (
                Status::NOT_FOUND,
                TEXT,
                format!("no page at {path}; try / or /stats\n"),
            )
        }
    };
    write_response(
        &mut out,
        status,
        content_type,
        &[],
        body.as_bytes(),
        head_only,
    );
    Some(out)
}

fn count(stats: &mut ServiceStats, status: Status) {
    match status.0 {
        200 => stats.http_ok += 1,
        404 => stats.http_not_found += 1,
        _ => stats.http_errors += 1,
    }
}
