//! `XenbusState` (`xen/include/public/io/xenbus.h`): the states each side of
//! a split device publishes in its `state` node.

use core::fmt;

/// The state a frontend or backend publishes in its `state` node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenbusState {
    Unknown,
    Initialising,
    InitWait,
    Initialised,
    Connected,
    Closing,
    Closed,
    Reconfiguring,
    Reconfigured,
    /// A value Xen does not define.
    Invalid(u32),
}

impl XenbusState {
    pub fn from_u32(v: u32) -> XenbusState {
        match v {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            n => XenbusState::Invalid(n),
        }
    }

    pub fn as_u32(self) -> u32 {
        match self {
            XenbusState::Unknown => 0,
            XenbusState::Initialising => 1,
            XenbusState::InitWait => 2,
            XenbusState::Initialised => 3,
            XenbusState::Connected => 4,
            XenbusState::Closing => 5,
            XenbusState::Closed => 6,
            XenbusState::Reconfiguring => 7,
            XenbusState::Reconfigured => 8,
            XenbusState::Invalid(n) => n,
        }
    }

    /// Parses a `state` node's value (decimal, surrounding blanks and a
    /// trailing NUL tolerated). A missing or non-numeric node reads as
    /// `Unknown`, as the toolstack treats it.
    pub fn parse(text: &[u8]) -> XenbusState {
        match parse_u32(text) {
            Some(v) => XenbusState::from_u32(v),
            None => XenbusState::Unknown,
        }
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            XenbusState::Unknown => "Unknown",
            XenbusState::Initialising => "Initialising",
            XenbusState::InitWait => "InitWait",
            XenbusState::Initialised => "Initialised",
            XenbusState::Connected => "Connected",
            XenbusState::Closing => "Closing",
            XenbusState::Closed => "Closed",
            XenbusState::Reconfiguring => "Reconfiguring",
            XenbusState::Reconfigured => "Reconfigured",
            XenbusState::Invalid(n) => return write!(f, "Invalid({n})"),
        };
        write!(f, "{name}({})", self.as_u32())
    }
}

/// A decimal `u32` from a xenstore value: ASCII digits only (blanks and a
/// trailing NUL around them are ignored), no sign, no overflow.
pub fn parse_u32(text: &[u8]) -> Option<u32> {
    let text = trim(text);
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    let mut v: u32 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(v)
}

fn trim(mut text: &[u8]) -> &[u8] {
    while let [rest @ .., last] = text {
        if *last == 0 || last.is_ascii_whitespace() {
            text = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = text {
        if first.is_ascii_whitespace() {
            text = rest;
        } else {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for v in 0..12 {
            assert_eq!(XenbusState::from_u32(v).as_u32(), v);
        }
        assert_eq!(XenbusState::parse(b"4"), XenbusState::Connected);
        assert_eq!(XenbusState::parse(b" 3\0"), XenbusState::Initialised);
        assert_eq!(XenbusState::parse(b"x"), XenbusState::Unknown);
        assert_eq!(XenbusState::parse(b"99"), XenbusState::Invalid(99));
    }

    #[test]
    fn numbers_reject_junk() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b"1 2"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"00000000000012"), None);
    }
}
