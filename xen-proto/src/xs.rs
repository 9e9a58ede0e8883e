//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`).
//!
//! A message is a 16-byte header `{type, req_id, tx_id, len}` (u32 each,
//! little-endian on x86) and `len` bytes of payload, at most
//! [`MAX_PAYLOAD`]. Paths and arguments are NUL-terminated; a written value
//! is the raw bytes after the path's NUL; a reply is the raw value, or
//! `"OK\0"`, or for `XS_ERROR` an errno name such as `"ENOENT\0"`.
//!
//! The same bytes travel over the guest's shared ring (two 1 KiB byte rings
//! in the xenstore page) and over dom0's socket or `/dev/xen/xenbus`;
//! [`MessageReader`] reassembles them from either stream.

use alloc::vec::Vec;
use core::fmt;

/// Header bytes.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the longest payload either side may send.
pub const MAX_PAYLOAD: usize = 4096;
/// `XENSTORE_RING_SIZE`: each byte ring in the shared page.
pub const RING_SIZE: u32 = 1024;

/// Byte offsets of `struct xenstore_domain_interface` in the shared page.
pub mod ring_offset {
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
    pub const SERVER_FEATURES: usize = 2064;
    pub const CONNECTION: usize = 2068;
    pub const ERROR: usize = 2072;
}

/// Bytes in a byte ring between a consumer and a producer index, or `None`
/// if the indices are inconsistent (`prod - cons > RING_SIZE`).
pub fn ring_used(cons: u32, prod: u32) -> Option<u32> {
    let used = prod.wrapping_sub(cons);
    (used <= RING_SIZE).then_some(used)
}

/// Where index `i` lives in a byte ring.
pub fn ring_index(i: u32) -> usize {
    (i & (RING_SIZE - 1)) as usize
}

/// `enum xsd_sockmsg_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    Control,
    Directory,
    Read,
    GetPerms,
    Watch,
    Unwatch,
    TransactionStart,
    TransactionEnd,
    Introduce,
    Release,
    GetDomainPath,
    Write,
    Mkdir,
    Rm,
    SetPerms,
    WatchEvent,
    Error,
    IsDomainIntroduced,
    Resume,
    SetTarget,
    ResetWatches,
    DirectoryPart,
    Unknown(u32),
}

impl MsgType {
    pub fn from_u32(v: u32) -> MsgType {
        use MsgType::*;
        match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            n => Unknown(n),
        }
    }

    pub fn as_u32(self) -> u32 {
        use MsgType::*;
        match self {
            Control => 0,
            Directory => 1,
            Read => 2,
            GetPerms => 3,
            Watch => 4,
            Unwatch => 5,
            TransactionStart => 6,
            TransactionEnd => 7,
            Introduce => 8,
            Release => 9,
            GetDomainPath => 10,
            Write => 11,
            Mkdir => 12,
            Rm => 13,
            SetPerms => 14,
            WatchEvent => 15,
            Error => 16,
            IsDomainIntroduced => 17,
            Resume => 18,
            SetTarget => 19,
            ResetWatches => 21,
            DirectoryPart => 22,
            Unknown(n) => n,
        }
    }
}

/// `struct xsd_sockmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: MsgType::from_u32(w(0)),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }

    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.ty.as_u32().to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }
}

/// An errno name from an `XS_ERROR` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorName {
    Noent,
    Acces,
    Exist,
    Inval,
    Again,
    Busy,
    Nospc,
    Isdir,
    Rofs,
    Nomem,
    TooBig,
    Quota,
    Nosys,
    Io,
    Perm,
    Other,
}

impl ErrorName {
    pub fn parse(payload: &[u8]) -> ErrorName {
        let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
        match name {
            b"ENOENT" => ErrorName::Noent,
            b"EACCES" => ErrorName::Acces,
            b"EEXIST" => ErrorName::Exist,
            b"EINVAL" => ErrorName::Inval,
            b"EAGAIN" => ErrorName::Again,
            b"EBUSY" => ErrorName::Busy,
            b"ENOSPC" => ErrorName::Nospc,
            b"EISDIR" => ErrorName::Isdir,
            b"EROFS" => ErrorName::Rofs,
            b"ENOMEM" => ErrorName::Nomem,
            b"E2BIG" => ErrorName::TooBig,
            b"EQUOTA" => ErrorName::Quota,
            b"ENOSYS" => ErrorName::Nosys,
            b"EIO" => ErrorName::Io,
            b"EPERM" => ErrorName::Perm,
            _ => ErrorName::Other,
        }
    }
}

/// What can go wrong with a xenstore exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// The daemon answered `XS_ERROR`.
    Remote(ErrorName),
    /// A request would exceed [`MAX_PAYLOAD`].
    RequestTooLong { len: usize },
    /// The peer announced a payload longer than [`MAX_PAYLOAD`].
    ReplyTooLong { len: u32 },
    /// The reply's type is not the request's (nor `XS_ERROR`).
    UnexpectedReply { expected: MsgType, got: MsgType },
    /// A reply's payload is not what its type promises.
    Malformed,
    /// The ring's indices are inconsistent.
    RingCorrupt,
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Remote(e) => write!(f, "xenstore error {e:?}"),
            XsError::RequestTooLong { len } => {
                write!(f, "xenstore request of {len} bytes exceeds {MAX_PAYLOAD}")
            }
            XsError::ReplyTooLong { len } => {
                write!(f, "xenstore reply of {len} bytes exceeds {MAX_PAYLOAD}")
            }
            XsError::UnexpectedReply { expected, got } => {
                write!(f, "xenstore answered {got:?} to {expected:?}")
            }
            XsError::Malformed => f.write_str("malformed xenstore reply"),
            XsError::RingCorrupt => f.write_str("xenstore ring indices are inconsistent"),
        }
    }
}

impl core::error::Error for XsError {}

/// A request's payload, built from NUL-terminated arguments and an
/// optional raw value (as `XS_WRITE` wants).
#[derive(Clone, Debug, Default)]
pub struct Payload(Vec<u8>);

impl Payload {
    pub fn new() -> Payload {
        Payload(Vec::new())
    }

    /// Appends `arg` and a NUL.
    pub fn arg(mut self, arg: &[u8]) -> Payload {
        self.0.extend_from_slice(arg);
        self.0.push(0);
        self
    }

    /// Appends raw bytes (a written value: no NUL).
    pub fn raw(mut self, value: &[u8]) -> Payload {
        self.0.extend_from_slice(value);
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The whole message: header and payload.
    pub fn message(&self, ty: MsgType, req_id: u32, tx_id: u32) -> Result<Vec<u8>, XsError> {
        if self.0.len() > MAX_PAYLOAD {
            return Err(XsError::RequestTooLong { len: self.0.len() });
        }
        let header = Header {
            ty,
            req_id,
            tx_id,
            len: self.0.len() as u32,
        };
        let mut m = Vec::with_capacity(HEADER_LEN + self.0.len());
        m.extend_from_slice(&header.emit());
        m.extend_from_slice(&self.0);
        Ok(m)
    }
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Message {
    /// This reply's payload if it answers a request of type `expected`;
    /// `XS_ERROR` becomes [`XsError::Remote`].
    pub fn reply_to(self, expected: MsgType) -> Result<Vec<u8>, XsError> {
        match self.header.ty {
            MsgType::Error => Err(XsError::Remote(ErrorName::parse(&self.payload))),
            t if t == expected => Ok(self.payload),
            got => Err(XsError::UnexpectedReply { expected, got }),
        }
    }

    /// `(path, token)` of an `XS_WATCH_EVENT`.
    pub fn watch_event(&self) -> Option<(&[u8], &[u8])> {
        if self.header.ty != MsgType::WatchEvent {
            return None;
        }
        let mut parts = self.payload.split(|&b| b == 0);
        let path = parts.next()?;
        let token = parts.next()?;
        Some((path, token))
    }
}

/// The NUL-separated entries of an `XS_DIRECTORY` reply.
pub fn directory_entries(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|&b| b == 0).filter(|e| !e.is_empty())
}

/// Reassembles messages from a byte stream (the ring or a socket).
#[derive(Debug, Default)]
pub struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    pub fn new() -> MessageReader {
        MessageReader { buf: Vec::new() }
    }

    /// How many more bytes the message being assembled needs (at least 1
    /// while a header is incomplete).
    pub fn wanted(&self) -> usize {
        if self.buf.len() < HEADER_LEN {
            return HEADER_LEN - self.buf.len();
        }
        let len = self.header().map(|h| h.len as usize).unwrap_or(0);
        (HEADER_LEN + len).saturating_sub(self.buf.len())
    }

    fn header(&self) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = self.buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header::parse(h))
    }

    /// Takes bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if there is one. A header announcing too
    /// long a payload is an error: the stream cannot be trusted after it.
    pub fn next_message(&mut self) -> Result<Option<Message>, XsError> {
        let Some(header) = self.header() else {
            return Ok(None);
        };
        if header.len as usize > MAX_PAYLOAD {
            return Err(XsError::ReplyTooLong { len: header.len });
        }
        let end = HEADER_LEN + header.len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(Message { header, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_request_bytes() {
        let m = Payload::new()
            .arg(b"device/ibchan/0/state")
            .raw(b"3")
            .message(MsgType::Write, 7, 0)
            .unwrap();
        let mut want = alloc::vec![11, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0];
        want.extend_from_slice(b"device/ibchan/0/state\x003");
        assert_eq!(m, want);
    }

    #[test]
    fn reader_reassembles_split_messages() {
        let a = Payload::new()
            .arg(b"OK")
            .message(MsgType::Write, 1, 0)
            .unwrap();
        let b = Payload::new()
            .arg(b"/local/domain/3")
            .arg(b"tok")
            .message(MsgType::WatchEvent, 0, 0)
            .unwrap();
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        let mut r = MessageReader::new();
        let mut got = alloc::vec::Vec::new();
        for chunk in stream.chunks(5) {
            r.push(chunk);
            while let Some(m) = r.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].clone().reply_to(MsgType::Write).unwrap(), b"OK\0");
        assert_eq!(
            got[1].watch_event(),
            Some((&b"/local/domain/3"[..], &b"tok"[..]))
        );
        assert_eq!(r.wanted(), HEADER_LEN);
    }

    #[test]
    fn errors_and_oversize() {
        let m = Message {
            header: Header {
                ty: MsgType::Error,
                req_id: 1,
                tx_id: 0,
                len: 7,
            },
            payload: b"ENOENT\0".to_vec(),
        };
        assert_eq!(
            m.reply_to(MsgType::Read),
            Err(XsError::Remote(ErrorName::Noent))
        );
        let mut r = MessageReader::new();
        r.push(
            &Header {
                ty: MsgType::Read,
                req_id: 0,
                tx_id: 0,
                len: 5000,
            }
            .emit(),
        );
        assert_eq!(r.next_message(), Err(XsError::ReplyTooLong { len: 5000 }));
        let big = Payload::new().raw(&[b'x'; MAX_PAYLOAD + 1]);
        assert!(big.message(MsgType::Write, 0, 0).is_err());
    }

    #[test]
    fn ring_indices() {
        assert_eq!(ring_used(10, 20), Some(10));
        assert_eq!(ring_used(u32::MAX - 1, 3), Some(5));
        assert_eq!(ring_used(0, RING_SIZE + 1), None);
        assert_eq!(ring_index(1025), 1);
    }

    #[test]
    fn types_round_trip() {
        for v in 0..30 {
            assert_eq!(MsgType::from_u32(v).as_u32(), v);
        }
        let e: Vec<&[u8]> = directory_entries(b"a\0bc\0\0").collect();
        assert_eq!(e, [&b"a"[..], b"bc"]);
    }
}
