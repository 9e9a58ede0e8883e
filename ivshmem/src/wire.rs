//! Message framing of the ivshmem server-to-client protocol
//! (QEMU `docs/specs/ivshmem-spec.rst`, "The ivshmem Client-Server Protocol").
//!
//! The connection is one-way, server to client, over a UNIX stream socket.
//! Each message is one little-endian `i64` (8 bytes), optionally accompanied
//! by exactly one file descriptor in `SCM_RIGHTS` ancillary data. The stream
//! does not keep message boundaries, so the reader collects exactly 8 bytes
//! per message and keeps the descriptor that arrived with them.
//!
//! What a number means depends on where it is in the conversation:
//!
//! | when | number | descriptor |
//! |---|---|---|
//! | first | protocol version, [`PROTOCOL_VERSION`] | none |
//! | second | the client's own id, 0..=65535 | none |
//! | then | [`SHM_MESSAGE`] (-1) | the shared memory |
//! | then | a peer's id, once per vector of that peer | that vector's eventfd |
//! | then | the client's own id, once per own vector | that vector's eventfd |
//! | later | a peer id | eventfd: the peer gained a vector; none: the peer is gone |

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::{sys, wait};

/// Bytes per message.
pub const MESSAGE_LEN: usize = 8;

/// The only protocol version there is (QEMU 2.5 and later).
pub const PROTOCOL_VERSION: i64 = 0;

/// The number that comes with the shared-memory descriptor.
pub const SHM_MESSAGE: i64 = -1;

/// Most vectors a peer may have (QEMU's `ivshmem-client` limit); a server
/// that sends more for one peer breaks the protocol.
pub const MAX_VECTORS: usize = 64;

/// How long [`send`] waits for room in a full socket buffer before it gives
/// up on a client that does not read.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes of one message.
pub fn encode(value: i64) -> [u8; MESSAGE_LEN] {
    value.to_le_bytes()
}

/// The number in one message.
pub fn decode(bytes: [u8; MESSAGE_LEN]) -> i64 {
    i64::from_le_bytes(bytes)
}

/// One message as received: the number and the descriptor that came with it.
#[derive(Debug)]
pub struct Message {
    /// The little-endian `i64`.
    pub value: i64,
    /// The descriptor sent with it, if any.
    pub fd: Option<OwnedFd>,
}

/// Sends one message: `value` as 8 little-endian bytes, with `fd` (if any)
/// attached by `SCM_RIGHTS` to the first byte sent.
///
/// Partial sends are completed; a full socket buffer is waited out for at
/// most [`SEND_TIMEOUT`] (every send is `MSG_DONTWAIT`, whatever the
/// socket's flags, so a client that does not read cannot block us);
/// `MSG_NOSIGNAL` turns a vanished client into an `EPIPE` error instead of
/// a `SIGPIPE`.
pub fn send(stream: &UnixStream, value: i64, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let bytes = encode(value);
    let raw = fd.map(|fd| [fd.as_raw_fd()]);
    let mut sent = 0;
    let mut deadline = None;
    while sent < MESSAGE_LEN {
        let iov = [IoSlice::new(&bytes[sent..])];
        let rights;
        let cmsgs: &[ControlMessage<'_>] = match &raw {
            Some(raw) if sent == 0 => {
                rights = [ControlMessage::ScmRights(raw)];
                &rights
            }
            _ => &[],
        };
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let until = *deadline.get_or_insert_with(|| wait::deadline_after(SEND_TIMEOUT));
                if !wait::wait_for(stream.as_fd(), PollFlags::POLLOUT, until)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "ivshmem client is not reading: socket buffer stayed full",
                    ));
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// How long [`Receiver::recv`] may wait for a message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all: return what is already there.
    No,
    /// Until this instant (`None`: forever).
    Until(Option<Instant>),
}

/// Why [`Receiver::recv`] returned no message.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// The socket failed.
    Io(io::Error),
    /// The server closed the stream; `partial` bytes of a message had
    /// arrived (0: it closed between messages).
    Eof { partial: usize },
    /// More than one descriptor arrived with one message.
    ExtraFds { count: usize },
    /// The deadline passed before a whole message arrived.
    TimedOut,
}

/// Reassembles messages from the stream, across calls: a message split over
/// several reads (or cut short by a [`Wait::No`] read) is kept until its
/// remaining bytes arrive.
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    buf: [u8; MESSAGE_LEN],
    filled: usize,
    fd: Option<OwnedFd>,
}

impl Receiver {
    /// The next whole message, or `Ok(None)` with [`Wait::No`] if none is
    /// complete yet.
    ///
    /// Reads never ask for more than the rest of the current message, so
    /// bytes and descriptors of the next message stay in the socket.
    pub(crate) fn recv(
        &mut self,
        stream: &UnixStream,
        wait: Wait,
    ) -> Result<Option<Message>, RecvError> {
        loop {
            let want = &mut self.buf[self.filled..];
            match sys::recv_with_fds(stream.as_fd(), want, MsgFlags::MSG_DONTWAIT) {
                Ok((0, _)) => {
                    let partial = self.filled;
                    self.reset();
                    return Err(RecvError::Eof { partial });
                }
                Ok((n, fds)) => {
                    self.filled += n;
                    let count = fds.len() + usize::from(self.fd.is_some());
                    if count > 1 {
                        self.reset();
                        return Err(RecvError::ExtraFds { count });
                    }
                    if let Some(fd) = fds.into_iter().next() {
                        self.fd = Some(fd);
                    }
                    if self.filled == MESSAGE_LEN {
                        let value = decode(self.buf);
                        let fd = self.fd.take();
                        self.filled = 0;
                        return Ok(Some(Message { value, fd }));
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => match wait {
                    Wait::No => return Ok(None),
                    Wait::Until(deadline) => {
                        let ready = wait::wait_for(stream.as_fd(), PollFlags::POLLIN, deadline)
                            .map_err(RecvError::Io)?;
                        if !ready {
                            return Err(RecvError::TimedOut);
                        }
                    }
                },
                Err(err) => return Err(RecvError::Io(err.into())),
            }
        }
    }

    /// Drops a half-read message (and its descriptor).
    fn reset(&mut self) {
        self.filled = 0;
        self.fd = None;
    }
}

#[cfg(test)]
mod tests;
