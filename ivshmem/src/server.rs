//! The server side of the ivshmem protocol. The back end *is* the ivshmem
//! server: Debian ships no `ivshmem-server`, and QEMU's
//! `-device ivshmem-doorbell,chardev=..` connects to whoever listens on the
//! chardev's socket. Listen before QEMU starts.
//!
//! The server creates the eventfds, one per vector per client, keeps them,
//! and gives copies to the clients: a client's own vectors to wait on, the
//! other peers' vectors to ring. The back end itself is simply one more peer
//! (it usually takes an id nobody else uses and rings/waits on the eventfds
//! directly).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use crate::wire::{self, MAX_VECTORS, PROTOCOL_VERSION, SHM_MESSAGE};
use crate::EventFd;

/// Sends the whole handshake to a freshly accepted client, in QEMU's order:
///
/// 1. protocol version 0 (no fd);
/// 2. the client's peer id (no fd);
/// 3. -1 with the shared-memory fd;
/// 4. for every other peer and each of its vectors: (peer id, eventfd);
/// 5. for each of the client's own vectors: (client id, eventfd).
///
/// QEMU's device reads steps 1 to 3 while it starts (and exits if they are
/// wrong); it takes the eventfds as they come.
///
/// Errors: `InvalidInput` if an other peer has the client's id or anyone has
/// more than [`MAX_VECTORS`] vectors (nothing is sent then); any socket error.
pub fn send_handshake(
    stream: &UnixStream,
    client_id: u16,
    shm: BorrowedFd<'_>,
    other_peers: &[(u16, &[EventFd])],
    client_vectors: &[EventFd],
) -> io::Result<()> {
    check_vectors(client_id, client_vectors)?;
    for &(peer, vectors) in other_peers {
        if peer == client_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("other peer has the client's own id {client_id}"),
            ));
        }
        check_vectors(peer, vectors)?;
    }
    wire::send(stream, PROTOCOL_VERSION, None)?;
    wire::send(stream, i64::from(client_id), None)?;
    wire::send(stream, SHM_MESSAGE, Some(shm))?;
    for &(peer, vectors) in other_peers {
        send_vectors(stream, peer, vectors)?;
    }
    send_vectors(stream, client_id, client_vectors)?;
    log::debug!(
        "ivshmem: handshake sent to client {client_id}: {} other peer(s), {} vector(s)",
        other_peers.len(),
        client_vectors.len()
    );
    Ok(())
}

/// Tells a client that a peer is gone (the peer's id, no fd). The client
/// drops the eventfds it had for that peer.
pub fn send_peer_gone(stream: &UnixStream, peer_id: u16) -> io::Result<()> {
    wire::send(stream, i64::from(peer_id), None)
}

/// Tells a client about a (new) peer's vectors: the peer's id once per
/// vector, each with that vector's eventfd, in vector order. Vectors add to
/// those the client already has for the peer.
pub fn send_peer_vectors(stream: &UnixStream, peer_id: u16, vectors: &[EventFd]) -> io::Result<()> {
    check_vectors(peer_id, vectors)?;
    send_vectors(stream, peer_id, vectors)
}

/// What a client's socket says, looked at without blocking and without
/// consuming anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Nothing to read: the client is there and silent, as it should be.
    Quiet,
    /// End of stream or a reset: the client has gone.
    Closed,
    /// The client sent data. Clients never send anything in this protocol:
    /// a protocol violation (and the server should treat the client as
    /// done).
    Spoke,
}

/// Looks at the client on `stream` without blocking (`MSG_DONTWAIT |
/// MSG_PEEK`, whatever the socket's flags), and leaves any data in place
/// for others who hold the same socket.
pub fn client_state(stream: &UnixStream) -> io::Result<ClientState> {
    let mut byte = [0u8; 1];
    loop {
        match recv(
            stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK,
        ) {
            Ok(0) => return Ok(ClientState::Closed),
            Ok(_) => return Ok(ClientState::Spoke),
            Err(Errno::EAGAIN) => return Ok(ClientState::Quiet),
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Ok(ClientState::Closed),
            Err(err) => return Err(err.into()),
        }
    }
}

/// Whether the client on `stream` has gone away, checked without blocking.
///
/// Clients never send anything, so (as in QEMU's `ivshmem-server`) the end
/// of the stream, an error, or any data at all means the client is done: the
/// server should then tell the other clients with [`send_peer_gone`].
/// [`client_state`] tells the two apart.
pub fn client_gone(stream: &UnixStream) -> io::Result<bool> {
    Ok(client_state(stream)? != ClientState::Quiet)
}

/// Binds a listening socket at `path` for clients (QEMU) to connect to.
///
/// A stale socket file that nobody listens on any more (a back end that
/// crashed) is replaced; a live one is an `AddrInUse` error, and any other
/// kind of file at `path` is left alone (the bind fails).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)
                .map(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
                .unwrap_or(false);
            if !is_socket {
                return Err(err);
            }
            match UnixStream::connect(path) {
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("an ivshmem server already listens at {}", path.display()),
                )),
                Err(_) => {
                    log::info!("ivshmem: replacing stale socket {}", path.display());
                    std::fs::remove_file(path)?;
                    UnixListener::bind(path)
                }
            }
        }
        other => other,
    }
}

fn send_vectors(stream: &UnixStream, id: u16, vectors: &[EventFd]) -> io::Result<()> {
    for vector in vectors {
        wire::send(stream, i64::from(id), Some(vector.as_fd()))?;
    }
    Ok(())
}

fn check_vectors(id: u16, vectors: &[EventFd]) -> io::Result<()> {
    if vectors.len() > MAX_VECTORS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "peer {id} has {} vectors; at most {MAX_VECTORS}",
                vectors.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
