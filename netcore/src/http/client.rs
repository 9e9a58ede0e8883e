//! Parsing a response that was read until the server closed.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{head_len, lines, split_field};

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        core::str::from_utf8(&self.body).ok()
    }
}

/// Why a response could not be understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The connection closed before the blank line after the headers.
    Incomplete,
    /// The head is not UTF-8.
    NotText,
    /// Not `HTTP/1.x NNN reason`.
    BadStatusLine,
    /// A header line that is not `Name: value`, or a bad `Content-Length`.
    BadHeader,
    /// `Transfer-Encoding`, which this client does not decode.
    TransferEncoding,
    /// The body is not as long as `Content-Length` says.
    LengthMismatch { declared: usize, received: usize },
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Incomplete => f.write_str("the response ended inside its head"),
            ResponseError::NotText => f.write_str("the response head is not UTF-8"),
            ResponseError::BadStatusLine => {
                f.write_str("the status line is not \"HTTP/1.x NNN reason\"")
            }
            ResponseError::BadHeader => f.write_str("a response header is malformed"),
            ResponseError::TransferEncoding => {
                f.write_str("the response uses Transfer-Encoding, which is not supported")
            }
            ResponseError::LengthMismatch { declared, received } => write!(
                f,
                "Content-Length says {declared} bytes but the body has {received}"
            ),
        }
    }
}

impl core::error::Error for ResponseError {}

/// How many bytes the whole response takes, once its head is in `data`
/// and it declares a `Content-Length`. Lets a client stop reading without
/// waiting for the server to close.
pub fn expected_len(data: &[u8]) -> Option<usize> {
    let head = head_len(data)?;
    let text = core::str::from_utf8(&data[..head]).ok()?;
    let declared = lines(text)
        .skip(1)
        .filter_map(split_field)
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| parse_length(v))?;
    head.checked_add(declared)
}

fn parse_length(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses everything the server sent.
pub fn parse_response(data: &[u8]) -> Result<Response, ResponseError> {
    parse_response_to(data, false)
}

/// Parses everything the server sent in answer to a request; `head` says
/// the request was a HEAD, whose response has no body whatever its
/// Content-Length says (RFC 9110, section 9.3.2).
pub fn parse_response_to(data: &[u8], head_request: bool) -> Result<Response, ResponseError> {
    let head_end = head_len(data).ok_or(ResponseError::Incomplete)?;
    let text = core::str::from_utf8(&data[..head_end]).map_err(|_| ResponseError::NotText)?;
    let text = text.trim_start_matches(['\r', '\n']);
    let mut lines = lines(text);
    let (status, reason) = parse_status_line(lines.next().unwrap_or(""))?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = split_field(line).ok_or(ResponseError::BadHeader)?;
        headers.push((String::from(name), String::from(value)));
    }
    let mut response = Response {
        status,
        reason: reason.into(),
        headers,
        body: Vec::new(),
    };
    if response.header("transfer-encoding").is_some() {
        return Err(ResponseError::TransferEncoding);
    }
    let body = &data[head_end..];
    if head_request {
        if !body.is_empty() {
            return Err(ResponseError::LengthMismatch {
                declared: 0,
                received: body.len(),
            });
        }
        return Ok(response);
    }
    if let Some(v) = response.header("content-length") {
        let declared = parse_length(v).ok_or(ResponseError::BadHeader)?;
        if declared != body.len() {
            return Err(ResponseError::LengthMismatch {
                declared,
                received: body.len(),
            });
        }
    }
    response.body = body.to_vec();
    Ok(response)
}

fn parse_status_line(line: &str) -> Result<(u16, &str), ResponseError> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .ok_or(ResponseError::BadStatusLine)?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ResponseError::BadStatusLine);
    }
    let code = code.parse().map_err(|_| ResponseError::BadStatusLine)?;
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_a_response() {
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
        assert_eq!(expected_len(data), Some(data.len()));
        let r = parse_response(data).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.header("x"), Some("y"));
        assert_eq!(r.text(), Some("abc"));
        let r = parse_response(b"HTTP/1.0 404\n\nrest until close").unwrap();
        assert_eq!((r.status, r.body.len()), (404, 16));
    }

    #[test]
    fn refuses_bad_responses() {
        let cases: &[(&[u8], ResponseError)] = &[
            (b"HTTP/1.1 200 OK\r\n", ResponseError::Incomplete),
            (b"HTTP/2 200 OK\r\n\r\n", ResponseError::BadStatusLine),
            (b"HTTP/1.1 20x OK\r\n\r\n", ResponseError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nbad\r\n\r\n", ResponseError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::BadHeader,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::TransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabc",
                ResponseError::LengthMismatch {
                    declared: 4,
                    received: 3,
                },
            ),
            (b"HTTP/1.1 200 \xff\r\n\r\n", ResponseError::NotText),
        ];
        for (data, want) in cases {
            assert_eq!(parse_response(data).as_ref().err(), Some(want));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = expected_len(&data);
            let _ = parse_response(&data);
        }
    }
}
