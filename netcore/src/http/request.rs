//! Request heads: where they end and what they say.

use core::fmt;

use super::{is_tchar, lines, split_field, Status};

/// Longest request head the server reads before answering 431.
pub const MAX_HEAD: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method<'a> {
    Get,
    Head,
    /// Any other well-formed method, which the server refuses with 405.
    Other(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A parsed request head. Header lines were checked; [`Request::header`]
/// finds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method<'a>,
    /// The target up to any `?`, not percent-decoded.
    pub path: &'a str,
    /// What follows `?`, if there is one.
    pub query: Option<&'a str>,
    pub version: Version,
    /// The header lines, one per `\n`, up to the blank line.
    headers: &'a str,
}

impl<'a> Request<'a> {
    /// The value of the first header called `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        lines(self.headers)
            .filter_map(split_field)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Why a request head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not UTF-8.
    NotText,
    /// Not `METHOD SP target SP version`.
    BadRequestLine,
    /// A method with characters a token cannot have.
    BadMethod,
    /// Not an origin-form target (`/path?query`, visible ASCII).
    BadTarget,
    /// Not `HTTP/d.d`.
    BadVersion,
    /// `HTTP/d.d` other than 1.0 and 1.1.
    UnsupportedVersion,
    /// A header line that is not `name: value`.
    BadHeader,
    /// A header continued on the next line (obsolete line folding).
    FoldedHeader,
    /// No blank line within [`MAX_HEAD`] bytes.
    TooLarge,
    /// The client closed before the blank line.
    Incomplete,
}

impl RequestError {
    /// The status to answer with.
    pub fn status(self) -> Status {
        match self {
            RequestError::UnsupportedVersion => Status::VERSION_NOT_SUPPORTED,
            RequestError::TooLarge => Status::HEADERS_TOO_LARGE,
            _ => Status::BAD_REQUEST,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::NotText => "the request head is not UTF-8 text",
            RequestError::BadRequestLine => {
                "the request line is not \"METHOD /path HTTP/1.1\" with single spaces"
            }
            RequestError::BadMethod => "the method is not a token",
            RequestError::BadTarget => "the target is not a path starting with /",
            RequestError::BadVersion => "the version is not HTTP/1.0 or HTTP/1.1",
            RequestError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are served",
            RequestError::BadHeader => "a header line is not \"Name: value\"",
            RequestError::FoldedHeader => "folded header lines are not accepted",
            RequestError::TooLarge => "the request head is larger than 4096 bytes",
            RequestError::Incomplete => "the connection closed before the end of the request head",
        })
    }
}

impl core::error::Error for RequestError {}

/// Skips empty lines before a request line (RFC 9112 section 2.2).
fn skip_blank_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// The length of the head at the start of `buf`, blank line included, once
/// `buf` holds all of it. Lines may end in CR LF or LF.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let start = skip_blank_lines(buf);
    let rest = buf.get(start..)?;
    if rest.is_empty() {
        return None;
    }
    rest.iter().enumerate().find_map(|(j, &b)| {
        if b != b'\n' {
            return None;
        }
        match rest.get(j + 1..) {
            Some([b'\n', ..]) => Some(start + j + 2),
            Some([b'\r', b'\n', ..]) => Some(start + j + 3),
            _ => None,
        }
    })
}

/// Parses a request head (as measured by [`head_len`]; anything after the
/// blank line is ignored).
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, RequestError> {
    let head = core::str::from_utf8(head).map_err(|_| RequestError::NotText)?;
    let head = &head[skip_blank_lines(head.as_bytes())..];
    let (line, headers) = head.split_once('\n').ok_or(RequestError::Incomplete)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::BadRequestLine);
    };
    let method = parse_method(method)?;
    let (path, query) = parse_target(target)?;
    let version = parse_version(version)?;
    let headers = check_headers(headers)?;
    Ok(Request {
        method,
        path,
        query,
        version,
        headers,
    })
}

fn parse_method(method: &str) -> Result<Method<'_>, RequestError> {
    if method.is_empty() {
        return Err(RequestError::BadRequestLine);
    }
    if !method.bytes().all(is_tchar) {
        return Err(RequestError::BadMethod);
    }
    Ok(match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other),
    })
}

fn parse_target(target: &str) -> Result<(&str, Option<&str>), RequestError> {
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::BadTarget);
    }
    Ok(match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    })
}

fn parse_version(version: &str) -> Result<Version, RequestError> {
    match version {
        "HTTP/1.1" => Ok(Version::Http11),
        "HTTP/1.0" => Ok(Version::Http10),
        _ => match version.as_bytes() {
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                Err(RequestError::UnsupportedVersion)
            }
            _ => Err(RequestError::BadVersion),
        },
    }
}

/// Checks the header lines up to the blank line; returns them.
fn check_headers(headers: &str) -> Result<&str, RequestError> {
    let mut len = 0;
    for raw in headers.split_inclusive('\n') {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return Ok(&headers[..len]);
        }
        if line.starts_with([' ', '\t']) {
            return Err(RequestError::FoldedHeader);
        }
        if split_field(line).is_none() {
            return Err(RequestError::BadHeader);
        }
        len += raw.len();
    }
    Err(RequestError::Incomplete)
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_len(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_len(b"\r\n\r\nGET / HTTP/1.0\n\n"), Some(20));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_len(b"\r\n\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn parses_a_request() {
        let head = b"GET /stats?x=1 HTTP/1.1\r\nHost: 10.77.0.2\r\nAccept:  */* \r\n\r\n";
        let r = parse_request(head).unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/stats");
        assert_eq!(r.query, Some("x=1"));
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("host"), Some("10.77.0.2"));
        assert_eq!(r.header("ACCEPT"), Some("*/*"));
        assert_eq!(r.header("cookie"), None);
        let r = parse_request(b"\r\nHEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!(
            (r.method, r.path, r.version),
            (Method::Head, "/", Version::Http10)
        );
        let r = parse_request(b"DELETE / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Other("DELETE"));
    }

    #[test]
    fn refuses_malformed_heads() {
        let cases: &[(&[u8], RequestError)] = &[
            (
                b"GET / HTTP/1.1 extra\r\n\r\n",
                RequestError::BadRequestLine,
            ),
            (b"GET  / HTTP/1.1\r\n\r\n", RequestError::BadRequestLine),
            (b"GET /\r\n\r\n", RequestError::BadRequestLine),
            (b"G(T / HTTP/1.1\r\n\r\n", RequestError::BadMethod),
            (b"GET stats HTTP/1.1\r\n\r\n", RequestError::BadTarget),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", RequestError::BadTarget),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", RequestError::BadTarget),
            (b"GET / HTTP/2.0\r\n\r\n", RequestError::UnsupportedVersion),
            (b"GET / HTTQ/1.1\r\n\r\n", RequestError::BadVersion),
            (
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                RequestError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
                RequestError::BadHeader,
            ),
            (b"GET / HTTP/1.1\r\nA b: c\r\n\r\n", RequestError::BadHeader),
            (
                b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
                RequestError::BadHeader,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                RequestError::FoldedHeader,
            ),
            (b"GET / HTTP/1.1\r\nA: b\r\n", RequestError::Incomplete),
            (b"GET / HTTP/1.1", RequestError::Incomplete),
            (b"GET /\xff HTTP/1.1\r\n\r\n", RequestError::NotText),
        ];
        for (head, want) in cases {
            assert_eq!(
                parse_request(head),
                Err(*want),
                "{:?}",
                alloc::string::String::from_utf8_lossy(head)
            );
        }
        assert_eq!(RequestError::TooLarge.status(), Status::HEADERS_TOO_LARGE);
        assert_eq!(RequestError::BadHeader.status(), Status::BAD_REQUEST);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Some(n) = head_len(&data) {
                prop_assert!(n <= data.len());
                let _ = parse_request(&data[..n]);
            }
            let _ = parse_request(&data);
        }

        #[test]
        fn request_like_bytes_never_panic(
            parts in prop::collection::vec(
                prop::sample::select(alloc::vec![
                    "GET", "HEAD", "POST", " ", "  ", "/", "/stats", "?", "HTTP/1.1", "HTTP/1.0",
                    "HTTP/9.9", "\r\n", "\n", "\r", "Host", ":", "x", "\t", "\u{e9}", "\0",
                ]),
                0..40,
            )
        ) {
            let data: Vec<u8> = parts.concat().into_bytes();
            if let Some(n) = head_len(&data) {
                if let Ok(r) = parse_request(&data[..n]) {
                    prop_assert!(r.path.starts_with('/'));
                    let _ = r.header("host");
                }
            }
        }
    }
}
