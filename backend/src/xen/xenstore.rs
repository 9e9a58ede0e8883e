//! A xenstore client for dom0: xenstored's UNIX socket or `/dev/xen/xenbus`
//! (both speak the `xs_wire.h` protocol), on the codec in `xen_proto::xs`.
//!
//! Requests are synchronous: one outstanding at a time, answered by
//! xenstored (never by a guest), with a timeout so a wedged daemon cannot
//! hang the supervisor. Watch events can arrive at any time, also between
//! a request and its reply; they are queued, never lost, and handed out by
//! [`XsClient::take_event`]. The descriptor stays non-blocking: the
//! supervisor polls it and calls [`XsClient::poll_events`] when readable.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use xen_proto::xs::{
    directory_entries, ErrorName, Message, MessageReader, MsgType, Payload, HEADER_LEN, MAX_PAYLOAD,
};

use super::store::{Perms, Store, StoreError, Tx};

/// How long xenstored may take to answer one request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A fired watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// The connection: xenstored's socket or the kernel's xenbus device.
pub enum Conn {
    Socket(UnixStream),
    Device(File),
}

impl Conn {
    /// Connects to `path`: a UNIX socket, or a device such as
    /// `/dev/xen/xenbus`.
    pub fn open(path: &Path) -> io::Result<Conn> {
        let meta = std::fs::metadata(path)?;
        if meta.file_type().is_socket() {
            Ok(Conn::Socket(UnixStream::connect(path)?))
        } else {
            Ok(Conn::Device(
                OpenOptions::new().read(true).write(true).open(path)?,
            ))
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.read(buf),
            Conn::Device(f) => f.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Socket(s) => s.write(buf),
            Conn::Device(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Socket(s) => s.as_fd(),
            Conn::Device(f) => f.as_fd(),
        }
    }
}

fn connection(what: impl Into<String>) -> StoreError {
    StoreError::Connection(what.into())
}

/// A xenstore connection.
pub struct XsClient<S> {
    stream: S,
    reader: MessageReader,
    events: VecDeque<WatchEvent>,
    next_id: u32,
    timeout: Duration,
}

impl<S: Read + Write + AsFd> XsClient<S> {
    pub fn new(stream: S) -> io::Result<XsClient<S>> {
        let flags = OFlag::from_bits_retain(fcntl(stream.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(stream.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(XsClient {
            stream,
            reader: MessageReader::new(),
            events: VecDeque::new(),
            next_id: 1,
            timeout: REPLY_TIMEOUT,
        })
    }

    /// Changes the reply timeout (tests).
    #[cfg(test)]
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Readable when xenstored has sent something (a watch event).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// The next queued watch event.
    pub fn take_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// Reads whatever has arrived, without blocking, and queues the watch
    /// events in it. Anything else is a protocol error: no request is
    /// outstanding.
    pub fn poll_events(&mut self) -> Result<(), StoreError> {
        self.fill(None)?;
        if let Some(m) = self.next_message()? {
            return Err(connection(format!(
                "unsolicited {:?} message from xenstored",
                m.header.ty
            )));
        }
        Ok(())
    }

    /// Reads what is available. With a deadline, first waits (until then)
    /// for something to arrive. Returns whether anything was read.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<bool, StoreError> {
        let mut buf = [0u8; HEADER_LEN + MAX_PAYLOAD];
        let mut got = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(connection("xenstored closed the connection")),
                Ok(n) => {
                    self.reader.push(&buf[..n]);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got {
                        return Ok(true);
                    }
                    let Some(deadline) = deadline else {
                        return Ok(false);
                    };
                    self.wait(PollFlags::POLLIN, deadline)?;
                }
                Err(e) => return Err(connection(format!("read: {e}"))),
            }
        }
    }

    fn wait(&self, flags: PollFlags, deadline: Instant) -> Result<(), StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(connection(format!(
                "no answer from xenstored within {:?}",
                self.timeout
            )));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.stream.as_fd(), flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(connection(format!("poll: {e}"))),
        }
    }

    /// The next complete message that is not a watch event (those are
    /// queued), if one has arrived.
    fn next_message(&mut self) -> Result<Option<Message>, StoreError> {
        while let Some(m) = self.reader.next_message()? {
            if m.header.ty != MsgType::WatchEvent {
                return Ok(Some(m));
            }
            match m.watch_event() {
                Some((path, token)) => self.events.push_back(WatchEvent {
                    path: String::from_utf8_lossy(path).into_owned(),
                    token: String::from_utf8_lossy(token).into_owned(),
                }),
                None => log::warn!("xenstore: malformed watch event ignored"),
            }
        }
        Ok(None)
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), StoreError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => return Err(connection("xenstored closed the connection")),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::POLLOUT, deadline)?
                }
                Err(e) => return Err(connection(format!("write: {e}"))),
            }
        }
        Ok(())
    }

    /// One request and its reply's payload.
    fn request(&mut self, ty: MsgType, tx: Tx, payload: Payload) -> Result<Vec<u8>, StoreError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = payload.message(ty, id, tx)?;
        let deadline = Instant::now() + self.timeout;
        self.send(&bytes, deadline)?;
        loop {
            if let Some(m) = self.next_message()? {
                if m.header.req_id != id {
                    return Err(connection(format!(
                        "xenstored answered request {} while {id} was outstanding",
                        m.header.req_id
                    )));
                }
                return Ok(m.reply_to(ty)?);
            }
            self.fill(Some(deadline))?;
        }
    }

    fn path_request(&mut self, ty: MsgType, tx: Tx, path: &str) -> Result<Vec<u8>, StoreError> {
        self.request(ty, tx, Payload::new().arg(path.as_bytes()))
    }
}

/// `Ok(None)` for `ENOENT`.
fn absent_is_none<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is(ErrorName::Noent) => Ok(None),
        Err(e) => Err(e),
    }
}

impl<S: Read + Write + AsFd> Store for XsClient<S> {
    fn read(&mut self, tx: Tx, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        absent_is_none(self.path_request(MsgType::Read, tx, path))
    }

    fn write(&mut self, tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let payload = Payload::new().arg(path.as_bytes()).raw(value);
        self.request(MsgType::Write, tx, payload).map(drop)
    }

    fn mkdir(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        self.path_request(MsgType::Mkdir, tx, path).map(drop)
    }

    fn rm(&mut self, tx: Tx, path: &str) -> Result<(), StoreError> {
        absent_is_none(self.path_request(MsgType::Rm, tx, path)).map(drop)
    }

    fn directory(&mut self, tx: Tx, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        let reply = absent_is_none(self.path_request(MsgType::Directory, tx, path))?;
        Ok(reply.map(|r| {
            directory_entries(&r)
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect()
        }))
    }

    fn set_perms(&mut self, tx: Tx, path: &str, perms: &Perms) -> Result<(), StoreError> {
        let mut payload = Payload::new().arg(path.as_bytes());
        for p in perms.to_args() {
            payload = payload.arg(p.as_bytes());
        }
        self.request(MsgType::SetPerms, tx, payload).map(drop)
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let payload = Payload::new().arg(path.as_bytes()).arg(token.as_bytes());
        self.request(MsgType::Watch, 0, payload).map(drop)
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let payload = Payload::new().arg(path.as_bytes()).arg(token.as_bytes());
        self.request(MsgType::Unwatch, 0, payload).map(drop)
    }

    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        let reply = self.request(MsgType::TransactionStart, 0, Payload::new().arg(b""))?;
        xen_proto::xenbus::parse_u32(&reply)
            .filter(|&t| t != 0)
            .ok_or_else(|| connection("xenstored gave a malformed transaction id"))
    }

    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<bool, StoreError> {
        let arg: &[u8] = if commit { b"T" } else { b"F" };
        match self.request(MsgType::TransactionEnd, tx, Payload::new().arg(arg)) {
            Ok(_) => Ok(true),
            Err(e) if e.is(ErrorName::Again) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn is_domain_introduced(&mut self, domid: u16) -> Result<bool, StoreError> {
        let reply = self.request(
            MsgType::IsDomainIntroduced,
            0,
            Payload::new().arg(domid.to_string().as_bytes()),
        )?;
        match reply.split(|&b| b == 0).next() {
            Some(b"T") => Ok(true),
            Some(b"F") => Ok(false),
            _ => Err(connection("malformed XS_IS_DOMAIN_INTRODUCED reply")),
        }
    }
}

#[cfg(test)]
mod tests;
