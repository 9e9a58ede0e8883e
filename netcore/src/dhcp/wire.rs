//! The DHCP message (RFC 2131 §2, options from RFC 2132) as IPoIB carries
//! it (RFC 4390): a [`DhcpRepr`] with the fields and options this client
//! and the back end's server use, parsed from untrusted bytes and emitted
//! into a buffer.
//!
//! Over IPoIB the link-layer address (20 octets) does not fit `chaddr`
//! (16), so RFC 4390 §2.1 has `htype` 32, `hlen` 0 and a zeroed `chaddr`,
//! and identifies the client by its client identifier (option 61) alone;
//! §2.2 has the client set the BROADCAST flag, because the server cannot
//! address a reply to a link address it was not given.

use core::fmt;

use smoltcp::wire::Ipv4Address;

/// `htype` for IPoIB: ARP hardware type 32 (InfiniBand).
pub const HTYPE_INFINIBAND: u8 = 32;
/// The server's UDP port.
pub const SERVER_PORT: u16 = 67;
/// The client's UDP port.
pub const CLIENT_PORT: u16 = 68;
/// The fixed header up to and including the magic cookie.
pub const HEADER_LEN: usize = 240;
/// The largest DHCP message parsed: a UDP payload in the smallest IPoIB
/// MTU is smaller still; anything longer is cut here.
pub const MAX_MESSAGE_LEN: usize = 1500;
/// The longest client identifier kept (option data is at most 255).
pub const MAX_CLIENT_ID: usize = 64;
/// The BROADCAST bit of `flags`.
const FLAG_BROADCAST: u16 = 0x8000;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

mod field {
    use core::ops::Range;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Range<usize> = 4..8;
    pub const SECS: Range<usize> = 8..10;
    pub const FLAGS: Range<usize> = 10..12;
    pub const CIADDR: Range<usize> = 12..16;
    pub const YIADDR: Range<usize> = 16..20;
    pub const SIADDR: Range<usize> = 20..24;
    pub const GIADDR: Range<usize> = 24..28;
    pub const CHADDR: Range<usize> = 28..44;
    pub const MAGIC: Range<usize> = 236..240;
}

mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST: u8 = 55;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// BOOTP `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
    Unknown(u8),
}

impl From<u8> for Op {
    fn from(v: u8) -> Op {
        match v {
            1 => Op::Request,
            2 => Op::Reply,
            n => Op::Unknown(n),
        }
    }
}

impl From<Op> for u8 {
    fn from(op: Op) -> u8 {
        match op {
            Op::Request => 1,
            Op::Reply => 2,
            Op::Unknown(n) => n,
        }
    }
}

/// DHCP message type (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> MessageType {
        match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            n => MessageType::Unknown(n),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        match t {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::Unknown(n) => n,
        }
    }
}

/// A client identifier (option 61): its type octet and data.
pub type ClientId = heapless::Vec<u8, MAX_CLIENT_ID>;

/// Why bytes are not a DHCP message this code accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpError {
    /// Shorter than the fixed header.
    Truncated,
    /// The magic cookie is missing: BOOTP, or not DHCP at all.
    BadMagic,
    /// An option runs past the end of the message.
    OptionTruncated { code: u8 },
    /// A known option with a length it cannot have.
    BadOptionLength { code: u8, len: u8 },
    /// No message type (option 53).
    NoMessageType,
    /// A buffer too small to emit into.
    BufferTooSmall,
}

impl fmt::Display for DhcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpError::Truncated => f.write_str("shorter than a DHCP header"),
            DhcpError::BadMagic => f.write_str("no DHCP magic cookie"),
            DhcpError::OptionTruncated { code } => write!(f, "option {code} is truncated"),
            DhcpError::BadOptionLength { code, len } => {
                write!(f, "option {code} has length {len}")
            }
            DhcpError::NoMessageType => f.write_str("no message type (option 53)"),
            DhcpError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

impl core::error::Error for DhcpError {}

/// The fields and options of one DHCP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpRepr {
    pub op: Op,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    /// The BROADCAST flag.
    pub broadcast: bool,
    pub ciaddr: Ipv4Address,
    pub yiaddr: Ipv4Address,
    pub siaddr: Ipv4Address,
    pub giaddr: Ipv4Address,
    /// `chaddr`: all zeros over IPoIB (RFC 4390); kept as received.
    pub chaddr: [u8; 16],
    pub message_type: MessageType,
    pub client_id: Option<ClientId>,
    pub server_id: Option<Ipv4Address>,
    pub requested_ip: Option<Ipv4Address>,
    /// Seconds; `u32::MAX` is infinite.
    pub lease_time: Option<u32>,
    /// T1, seconds.
    pub renewal_time: Option<u32>,
    /// T2, seconds.
    pub rebinding_time: Option<u32>,
    pub subnet_mask: Option<Ipv4Address>,
    /// The first router of option 3.
    pub router: Option<Ipv4Address>,
    /// Emit a parameter request list (subnet mask, router, lease times).
    /// Parsing sets it when the message carries one.
    pub parameter_request: bool,
}

/// The parameters a client asks for.
const PARAMETERS: [u8; 5] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::LEASE_TIME,
    opt::RENEWAL_TIME,
    opt::REBINDING_TIME,
];

fn addr(b: &[u8], r: core::ops::Range<usize>) -> Ipv4Address {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(r) {
        a.copy_from_slice(s);
    }
    Ipv4Address::from(a)
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

impl DhcpRepr {
    /// True if `chaddr` is all zeros, as RFC 4390 has it over IPoIB.
    pub fn chaddr_is_zero(&self) -> bool {
        self.chaddr.iter().all(|&x| x == 0)
    }

    /// A message of `message_type` from a client over IPoIB: `op` 1, `htype`
    /// 32, `hlen` 0, zero `chaddr`, the BROADCAST flag, no options but the
    /// type and the parameter request list.
    pub fn ipoib_client(message_type: MessageType, xid: u32) -> DhcpRepr {
        DhcpRepr {
            op: Op::Request,
            htype: HTYPE_INFINIBAND,
            hlen: 0,
            hops: 0,
            xid,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Address::UNSPECIFIED,
            yiaddr: Ipv4Address::UNSPECIFIED,
            siaddr: Ipv4Address::UNSPECIFIED,
            giaddr: Ipv4Address::UNSPECIFIED,
            chaddr: [0; 16],
            message_type,
            client_id: None,
            server_id: None,
            requested_ip: None,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            subnet_mask: None,
            router: None,
            parameter_request: true,
        }
    }

    /// Parses a message from untrusted bytes. Unknown options are skipped;
    /// `sname` and `file` are not read (option overload is not honoured).
    pub fn parse(bytes: &[u8]) -> Result<DhcpRepr, DhcpError> {
        let b = bytes
            .get(..bytes.len().min(MAX_MESSAGE_LEN))
            .unwrap_or(bytes);
        if b.len() < HEADER_LEN {
            return Err(DhcpError::Truncated);
        }
        if b[field::MAGIC] != MAGIC {
            return Err(DhcpError::BadMagic);
        }
        let mut flags = [0u8; 2];
        flags.copy_from_slice(&b[field::FLAGS]);
        let mut secs = [0u8; 2];
        secs.copy_from_slice(&b[field::SECS]);
        let mut repr = DhcpRepr {
            op: Op::from(b[field::OP]),
            htype: b[field::HTYPE],
            hlen: b[field::HLEN],
            hops: b[field::HOPS],
            xid: be32(&b[field::XID]),
            secs: u16::from_be_bytes(secs),
            broadcast: u16::from_be_bytes(flags) & FLAG_BROADCAST != 0,
            ciaddr: addr(b, field::CIADDR),
            yiaddr: addr(b, field::YIADDR),
            siaddr: addr(b, field::SIADDR),
            giaddr: addr(b, field::GIADDR),
            chaddr: {
                let mut c = [0u8; 16];
                c.copy_from_slice(&b[field::CHADDR]);
                c
            },
            message_type: MessageType::Unknown(0),
            client_id: None,
            server_id: None,
            requested_ip: None,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            subnet_mask: None,
            router: None,
            parameter_request: false,
        };
        let mut have_type = false;
        let mut rest = &b[HEADER_LEN..];
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                opt::PAD => {
                    rest = tail;
                    continue;
                }
                opt::END => break,
                _ => {}
            }
            let (&len, tail) = tail
                .split_first()
                .ok_or(DhcpError::OptionTruncated { code })?;
            let data = tail
                .get(..usize::from(len))
                .ok_or(DhcpError::OptionTruncated { code })?;
            rest = &tail[usize::from(len)..];
            let bad = DhcpError::BadOptionLength { code, len };
            let four = || (data.len() == 4).then(|| be32(data)).ok_or(bad);
            let ip = || four().map(|v| Ipv4Address::from(v.to_be_bytes()));
            match code {
                opt::MESSAGE_TYPE => {
                    let [t] = data else { return Err(bad) };
                    repr.message_type = MessageType::from(*t);
                    have_type = true;
                }
                opt::CLIENT_ID => {
                    if data.len() < 2 {
                        return Err(bad);
                    }
                    // Longer identifiers than this code makes are cut: they
                    // are compared only with our own.
                    let kept = &data[..data.len().min(MAX_CLIENT_ID)];
                    repr.client_id = ClientId::from_slice(kept).ok();
                }
                opt::SERVER_ID => repr.server_id = Some(ip()?),
                opt::REQUESTED_IP => repr.requested_ip = Some(ip()?),
                opt::LEASE_TIME => repr.lease_time = Some(four()?),
                opt::RENEWAL_TIME => repr.renewal_time = Some(four()?),
                opt::REBINDING_TIME => repr.rebinding_time = Some(four()?),
                opt::SUBNET_MASK => repr.subnet_mask = Some(ip()?),
                opt::ROUTER => {
                    if data.is_empty() || data.len() % 4 != 0 {
                        return Err(bad);
                    }
                    repr.router = Some(Ipv4Address::from([data[0], data[1], data[2], data[3]]));
                }
                opt::PARAMETER_REQUEST => repr.parameter_request = true,
                _ => {}
            }
        }
        if !have_type {
            return Err(DhcpError::NoMessageType);
        }
        Ok(repr)
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        let mut len = HEADER_LEN + 3 + 1; // message type, end
        if let Some(id) = &self.client_id {
            len += 2 + id.len();
        }
        let four = [
            self.server_id.is_some(),
            self.requested_ip.is_some(),
            self.lease_time.is_some(),
            self.renewal_time.is_some(),
            self.rebinding_time.is_some(),
            self.subnet_mask.is_some(),
            self.router.is_some(),
        ];
        len += 6 * four.iter().filter(|&&b| b).count();
        if self.parameter_request {
            len += 2 + PARAMETERS.len();
        }
        len
    }

    /// Writes the message to the front of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, DhcpError> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(DhcpError::BufferTooSmall)?;
        b.fill(0);
        b[field::OP] = self.op.into();
        b[field::HTYPE] = self.htype;
        b[field::HLEN] = self.hlen;
        b[field::HOPS] = self.hops;
        b[field::XID].copy_from_slice(&self.xid.to_be_bytes());
        b[field::SECS].copy_from_slice(&self.secs.to_be_bytes());
        let flags = if self.broadcast { FLAG_BROADCAST } else { 0 };
        b[field::FLAGS].copy_from_slice(&flags.to_be_bytes());
        b[field::CIADDR].copy_from_slice(&self.ciaddr.octets());
        b[field::YIADDR].copy_from_slice(&self.yiaddr.octets());
        b[field::SIADDR].copy_from_slice(&self.siaddr.octets());
        b[field::GIADDR].copy_from_slice(&self.giaddr.octets());
        b[field::CHADDR].copy_from_slice(&self.chaddr);
        b[field::MAGIC].copy_from_slice(&MAGIC);
        let mut w = Writer {
            buf: &mut b[HEADER_LEN..],
            at: 0,
        };
        w.option(opt::MESSAGE_TYPE, &[self.message_type.into()]);
        if let Some(id) = &self.client_id {
            w.option(opt::CLIENT_ID, id);
        }
        let addrs = [
            (opt::SERVER_ID, self.server_id),
            (opt::REQUESTED_IP, self.requested_ip),
            (opt::SUBNET_MASK, self.subnet_mask),
            (opt::ROUTER, self.router),
        ];
        for (code, a) in addrs {
            if let Some(a) = a {
                w.option(code, &a.octets());
            }
        }
        let times = [
            (opt::LEASE_TIME, self.lease_time),
            (opt::RENEWAL_TIME, self.renewal_time),
            (opt::REBINDING_TIME, self.rebinding_time),
        ];
        for (code, t) in times {
            if let Some(t) = t {
                w.option(code, &t.to_be_bytes());
            }
        }
        if self.parameter_request {
            w.option(opt::PARAMETER_REQUEST, &PARAMETERS);
        }
        w.buf[w.at] = opt::END;
        Ok(len)
    }
}

/// Writes options into a buffer sized by `buffer_len`.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn option(&mut self, code: u8, data: &[u8]) {
        // `buffer_len` counted this option, and its data is at most 64.
        let end = self.at + 2 + data.len();
        if let Some(out) = self.buf.get_mut(self.at..end) {
            out[0] = code;
            out[1] = data.len() as u8;
            out[2..].copy_from_slice(data);
            self.at = end;
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
