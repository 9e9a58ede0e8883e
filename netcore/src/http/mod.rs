//! Just enough HTTP/1.1 for a status page and a test client.
//!
//! - [`request`]: finding the end of a request head and parsing it,
//!   strictly but without panicking on any input.
//! - [`response`]: writing a complete response with `Content-Length` and
//!   `Connection: close`.
//! - [`client`]: parsing a whole response read until the server closed.

pub mod client;
pub mod request;
pub mod response;

pub use client::{expected_len, parse_response, parse_response_to, Response, ResponseError};
pub use request::{head_len, parse_request, Method, Request, RequestError, Version, MAX_HEAD};
pub use response::{write_response, Status};

/// RFC 9110 `tchar`: what a method or header name may contain.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value: visible characters, spaces, tabs and non-ASCII text; no
/// other control characters.
pub(crate) fn is_field_value(s: &str) -> bool {
    s.chars().all(|c| c == '\t' || (c >= ' ' && c != '\x7f'))
}

/// Splits `name: value`, checking both; `None` if the line is not a field.
pub(crate) fn split_field(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return None;
    }
    let value = value.trim_matches([' ', '\t']);
    is_field_value(value).then_some((name, value))
}

/// The lines of a head after its first line, up to the blank line, with
/// their line endings removed.
pub(crate) fn lines(head: &str) -> impl Iterator<Item = &str> {
    head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}
