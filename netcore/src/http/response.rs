//! Writing complete responses: status line, headers, body.

use alloc::vec::Vec;
use core::fmt::Write;

/// An HTTP status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    pub const VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The reason phrase for the codes this crate sends.
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }
}

/// Appends a whole response to `out`: the status line, `Content-Type`,
/// `Content-Length`, `Connection: close`, `Cache-Control: no-store`, the
/// `extra` headers, and the body unless `head_only` (a HEAD request, whose
/// `Content-Length` still gives the body's length).
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) {
    let mut head = alloc::string::String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nServer: ibguest-netcore\r\n",
        status.0,
        status.reason(),
        content_type,
        body.len()
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_length_and_close() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            Status::NOT_FOUND,
            "text/plain",
            &[("Allow", "GET")],
            b"nope\n",
            false,
        );
        let text = core::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(text.ends_with("\r\n\r\nnope\n"));
        let mut head = Vec::new();
        write_response(&mut head, Status::OK, "text/plain", &[], b"nope\n", true);
        assert!(core::str::from_utf8(&head).unwrap().ends_with("Content-Length: 5\r\nConnection: close\r\nCache-Control: no-store\r\nServer: ibguest-netcore\r\n\r\n"));
    }
}
