//! The client side of the ivshmem protocol: what QEMU's ivshmem-doorbell
//! device does, for hosted guests and tests.
//!
//! The server is not trusted: every number and descriptor it sends is
//! checked, and a server that breaks the protocol produces a
//! [`ClientError::Protocol`], never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{
    self, Message, Receiver, RecvError, Wait, MAX_VECTORS, PROTOCOL_VERSION, SHM_MESSAGE,
};
use crate::{wait, EventFd, SharedMemory};

/// A connection to an ivshmem server, after the handshake.
#[derive(Debug)]
pub struct Connection {
    /// The socket; the server keeps sending peer notifications on it (read
    /// them with [`poll_messages`](Connection::poll_messages)). Poll it for
    /// readability to learn when there is something to read.
    pub stream: UnixStream,
    /// Our id (QEMU's IVPosition register).
    pub peer_id: u16,
    /// The shared memory, mapped.
    pub shm: Arc<SharedMemory>,
    /// Vectors of the other peers: notify these to ring their doorbell
    /// (QEMU's Doorbell register).
    pub peers: BTreeMap<u16, Vec<EventFd>>,
    /// Our own vectors: the server/peers write these; wait on them (QEMU
    /// raises MSI-X vector i).
    pub vectors: Vec<EventFd>,
    receiver: Receiver,
}

/// A change in the set of peers, seen by [`Connection::poll_messages`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerEvent {
    /// The peer disconnected; its vectors are gone from
    /// [`Connection::peers`].
    Gone(u16),
    /// The peer (which may be us, for own vectors that arrive after
    /// [`connect`] returned) gained vectors and now has this many.
    Vectors(u16, usize),
}

/// Why connecting or talking to the server failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket, mapping or eventfd operation failed.
    Io(io::Error),
    /// The server broke the protocol (what it did is in the message).
    Protocol(String),
    /// The handshake did not complete in time.
    Timeout,
    /// Nothing listens at this path (no socket, or connection refused).
    NoServer(PathBuf),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(err) => write!(f, "ivshmem: {err}"),
            ClientError::Protocol(what) => write!(f, "ivshmem server broke the protocol: {what}"),
            ClientError::Timeout => {
                f.write_str("ivshmem server did not complete the handshake in time")
            }
            ClientError::NoServer(path) => write!(
                f,
                "no ivshmem server at {}: no socket there, or connection refused",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> ClientError {
        ClientError::Io(err)
    }
}

fn protocol(what: impl Into<String>) -> ClientError {
    ClientError::Protocol(what.into())
}

/// Connects to the server at `path` and reads the handshake until the shared
/// memory and `vectors` of our own eventfds have arrived, or `timeout` has
/// passed ([`ClientError::Timeout`]).
///
/// Other peers' vectors that arrive meanwhile land in
/// [`Connection::peers`]. More own vectors than `vectors` are kept too (the
/// ones that arrive later show up through
/// [`poll_messages`](Connection::poll_messages)).
pub fn connect(path: &Path, vectors: usize, timeout: Duration) -> Result<Connection, ClientError> {
    if vectors > MAX_VECTORS {
        return Err(ClientError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{vectors} vectors asked for; at most {MAX_VECTORS}"),
        )));
    }
    let deadline = Wait::Until(wait::deadline_after(timeout));
    let stream = UnixStream::connect(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NoServer(path.to_owned())
        }
        _ => ClientError::Io(err),
    })?;
    let mut receiver = Receiver::default();
    let mut next = |what: &str| -> Result<Message, ClientError> {
        match receiver.recv(&stream, deadline) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(ClientError::Timeout), // not reached with a deadline
            Err(err) => Err(recv_error(err, what)),
        }
    };

    // 1. The protocol version, without a descriptor.
    let version = next("the protocol version")?;
    if version.value != PROTOCOL_VERSION {
        return Err(protocol(format!(
            "protocol version {} (expected {PROTOCOL_VERSION})",
            version.value
        )));
    }
    if version.fd.is_some() {
        return Err(protocol("the version message came with a file descriptor"));
    }

    // 2. Our id, without a descriptor.
    let id = next("our peer id")?;
    let peer_id = peer_id(id.value)
        .ok_or_else(|| protocol(format!("client id {} is out of range", id.value)))?;
    if id.fd.is_some() {
        return Err(protocol("the id message came with a file descriptor"));
    }

    // 3.-5. The shared memory and the vectors, in any order (as QEMU accepts).
    let mut state = State {
        peer_id,
        shm: None,
        peers: BTreeMap::new(),
        vectors: Vec::new(),
    };
    while state.shm.is_none() || state.vectors.len() < vectors {
        let msg = next(if state.shm.is_none() {
            "the shared memory"
        } else {
            "our vectors"
        })?;
        state.handle(msg, &mut Vec::new())?;
    }
    let Some(shm) = state.shm else {
        return Err(protocol("no shared memory")); // not reached: the loop needs it
    };
    log::debug!(
        "ivshmem: connected to {} as peer {peer_id}: {} bytes, {} own vector(s), {} peer(s)",
        path.display(),
        shm.len(),
        state.vectors.len(),
        state.peers.len()
    );
    Ok(Connection {
        stream,
        peer_id,
        shm,
        peers: state.peers,
        vectors: state.vectors,
        receiver,
    })
}

impl Connection {
    /// Reads, without blocking, every message the server has sent since the
    /// last call (peers that left, vectors of new peers) and applies it to
    /// [`peers`](Connection::peers) / [`vectors`](Connection::vectors).
    ///
    /// The server closing the connection is an `UnexpectedEof` I/O error
    /// (after the events read before it have been returned).
    pub fn poll_messages(&mut self) -> Result<Vec<PeerEvent>, ClientError> {
        let mut events = Vec::new();
        let mut state = State {
            peer_id: self.peer_id,
            shm: Some(self.shm.clone()),
            peers: std::mem::take(&mut self.peers),
            vectors: std::mem::take(&mut self.vectors),
        };
        let result = loop {
            match self.receiver.recv(&self.stream, Wait::No) {
                Ok(Some(msg)) => {
                    if let Err(err) = state.handle(msg, &mut events) {
                        break Err(err);
                    }
                }
                Ok(None) => break Ok(()),
                // Hand out what came before the end; the next call reports it.
                Err(RecvError::Eof { partial: 0 }) if !events.is_empty() => break Ok(()),
                Err(RecvError::Eof { partial: 0 }) => {
                    break Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the ivshmem server closed the connection",
                    )))
                }
                Err(err) => break Err(recv_error(err, "a peer notification")),
            }
        };
        self.peers = state.peers;
        self.vectors = state.vectors;
        result.map(|()| events)
    }

    /// Rings vector `vector` of peer `peer`, as a write of
    /// `(peer << 16) | vector` to QEMU's Doorbell register would. `peer` may
    /// be our own id (we ring ourselves).
    pub fn ring(&self, peer: u16, vector: usize) -> io::Result<()> {
        let vectors = if peer == self.peer_id {
            &self.vectors
        } else {
            self.peers.get(&peer).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no ivshmem peer {peer}"))
            })?
        };
        let event = vectors.get(vector).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ivshmem peer {peer} has {} vector(s), no vector {vector}",
                    vectors.len()
                ),
            )
        })?;
        event.notify()
    }
}

/// What the client knows; shared by the handshake and later notifications.
struct State {
    peer_id: u16,
    shm: Option<Arc<SharedMemory>>,
    peers: BTreeMap<u16, Vec<EventFd>>,
    vectors: Vec<EventFd>,
}

impl State {
    /// Applies one message after the version and id (spec steps 3 to 6).
    fn handle(&mut self, msg: Message, events: &mut Vec<PeerEvent>) -> Result<(), ClientError> {
        if msg.value == SHM_MESSAGE {
            let fd = msg.fd.ok_or_else(|| {
                protocol("the shared-memory message (-1) came without a file descriptor")
            })?;
            if self.shm.is_some() {
                return Err(protocol("a second shared-memory message"));
            }
            let shm = SharedMemory::from_fd(fd).map_err(|err| match err.kind() {
                io::ErrorKind::InvalidData => protocol(format!("unusable shared memory: {err}")),
                _ => ClientError::Io(err),
            })?;
            self.shm = Some(Arc::new(shm));
            return Ok(());
        }
        let peer = peer_id(msg.value)
            .ok_or_else(|| protocol(format!("peer id {} is out of range", msg.value)))?;
        match msg.fd {
            None if peer == self.peer_id => {
                Err(protocol(format!("we (peer {peer}) were told we are gone")))
            }
            None => {
                if self.peers.remove(&peer).is_none() {
                    // A peer without vectors is never announced, only its
                    // departure is.
                    log::debug!("ivshmem: unknown peer {peer} is gone");
                }
                events.push(PeerEvent::Gone(peer));
                Ok(())
            }
            Some(fd) => {
                let vectors = if peer == self.peer_id {
                    &mut self.vectors
                } else {
                    self.peers.entry(peer).or_default()
                };
                if vectors.len() >= MAX_VECTORS {
                    return Err(protocol(format!(
                        "more than {MAX_VECTORS} vectors for peer {peer}"
                    )));
                }
                vectors.push(EventFd::from_fd(fd));
                let count = vectors.len();
                match events.last_mut() {
                    Some(PeerEvent::Vectors(last, n)) if *last == peer => *n = count,
                    _ => events.push(PeerEvent::Vectors(peer, count)),
                }
                Ok(())
            }
        }
    }
}

/// A peer id from the wire: 0..=65535 (the Doorbell register has 16 bits).
fn peer_id(value: i64) -> Option<u16> {
    u16::try_from(value).ok()
}

fn recv_error(err: RecvError, what: &str) -> ClientError {
    match err {
        RecvError::Io(err) => ClientError::Io(err),
        RecvError::TimedOut => {
            log::warn!("ivshmem: timed out waiting for {what}");
            ClientError::Timeout
        }
        RecvError::Eof { partial: 0 } => {
            protocol(format!("the server closed the connection before {what}"))
        }
        RecvError::Eof { partial } => protocol(format!(
            "the server closed the connection in the middle of a message ({partial} of {} bytes)",
            wire::MESSAGE_LEN
        )),
        RecvError::ExtraFds { count } => {
            protocol(format!("{count} file descriptors came with one message"))
        }
    }
}
