//! Handing a guest's descriptors from the supervisor to the worker over a
//! UNIX socket with SCM_RIGHTS: the client's socket, its shared memory, and
//! the doorbell and interrupt eventfds. The supervisor keeps its own copies,
//! so a worker that dies takes none of them with it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

const MAGIC: u32 = 0x4942_4846; // "IBHF"
const HEADER: usize = 16;

/// A guest's descriptors.
pub struct SessionFds {
    pub client: UnixStream,
    pub memory: OwnedFd,
    pub doorbell: OwnedFd,
    pub interrupt: OwnedFd,
}

impl SessionFds {
    pub fn try_clone(&self) -> io::Result<SessionFds> {
        Ok(SessionFds {
            client: self.client.try_clone()?,
            memory: self.memory.try_clone()?,
            doorbell: self.doorbell.try_clone()?,
            interrupt: self.interrupt.try_clone()?,
        })
    }
}

/// What the supervisor tells the worker.
pub enum Handoff {
    /// A guest for `seat`. `restart` is set when a previous worker served it
    /// and died: the window holds its state and the epoch must change.
    Session {
        seat: u32,
        restart: bool,
        fds: SessionFds,
    },
    /// A connection to `seat` was refused because a guest is attached.
    Refused { seat: u32 },
}

const KIND_SESSION: u32 = 1;
const KIND_REFUSED: u32 = 2;

fn header(kind: u32, seat: u32, flags: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[8..12].copy_from_slice(&seat.to_le_bytes());
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h
}

pub fn send(sock: &UnixStream, message: &Handoff) -> io::Result<()> {
    let (bytes, fds): ([u8; HEADER], Vec<RawFd>) = match message {
        Handoff::Session { seat, restart, fds } => (
            header(KIND_SESSION, *seat, u32::from(*restart)),
            vec![
                fds.client.as_raw_fd(),
                fds.memory.as_raw_fd(),
                fds.doorbell.as_raw_fd(),
                fds.interrupt.as_raw_fd(),
            ],
        ),
        Handoff::Refused { seat } => (header(KIND_REFUSED, *seat, 0), Vec::new()),
    };
    let iov = [IoSlice::new(&bytes)];
    let cmsgs = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// The worker's end of the link, inherited from the supervisor as
/// descriptor `fd` (given on the command line).
pub fn inherited_link(fd: RawFd) -> io::Result<UnixStream> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--handoff-fd {fd} is not an open descriptor: {e}"),
        )
    })?;
    if !target.to_string_lossy().starts_with("socket:") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--handoff-fd {fd} is not a socket"),
        ));
    }
    // SAFETY: `fd` is open (/proc/self/fd names it) and is the socket the
    // supervisor left for us across exec; nothing else in this process owns
    // it, and it is taken exactly once, at start-up.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(UnixStream::from(owned))
}

/// Takes ownership of descriptors the kernel just installed for us.
fn own(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    raw.into_iter()
        // SAFETY: each descriptor was created in this process by the
        // `recvmsg` that returned it (SCM_RIGHTS), and nothing else holds it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Reads one message. `Ok(None)` means the supervisor has gone.
pub fn recv(sock: &UnixStream) -> io::Result<Option<Handoff>> {
    let mut bytes = [0u8; HEADER];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut bytes)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                fds.extend(raw);
            }
        }
        (msg.bytes, own(fds))
    };
    if len == 0 {
        return Ok(None);
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if len != HEADER || word(0) != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed handoff message",
        ));
    }
    match word(4) {
        KIND_SESSION => {
            let mut it = fds.into_iter();
            let (Some(client), Some(memory), Some(doorbell), Some(interrupt)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "session handoff without its descriptors",
                ));
            };
            Ok(Some(Handoff::Session {
                seat: word(8),
                restart: word(12) != 0,
                fds: SessionFds {
                    client: UnixStream::from(client),
                    memory,
                    doorbell,
                    interrupt,
                },
            }))
        }
        KIND_REFUSED => Ok(Some(Handoff::Refused { seat: word(8) })),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown handoff kind {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn session_descriptors_arrive_and_work() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (mut client_far, client_near) = UnixStream::pair()?;
        let memory = ivshmem::SharedMemory::create("handoff-test", 4096)?;
        let doorbell = ivshmem::EventFd::new()?;
        let interrupt = ivshmem::EventFd::new()?;
        let fds = SessionFds {
            client: client_near,
            memory: memory.try_clone_fd()?,
            doorbell: doorbell.try_clone()?.into(),
            interrupt: interrupt.try_clone()?.into(),
        };
        send(
            &a,
            &Handoff::Session {
                seat: 7,
                restart: true,
                fds,
            },
        )?;
        send(&a, &Handoff::Refused { seat: 3 })?;
        let Some(Handoff::Session { seat, restart, fds }) = recv(&b)? else {
            panic!("expected a session");
        };
        assert_eq!((seat, restart), (7, true));
        // The descriptors are the same objects.
        let mem = std::sync::Arc::new(ivshmem::SharedMemory::from_fd(fds.memory)?);
        assert_eq!(mem.len(), 4096);
        ivshmem::EventFd::from_fd(fds.doorbell).notify()?;
        assert_eq!(doorbell.drain()?, 1);
        let mut c = fds.client;
        c.write_all(b"hi")?;
        let mut buf = [0u8; 2];
        client_far.read_exact(&mut buf)?;
        assert_eq!(&buf, b"hi");
        assert!(matches!(recv(&b)?, Some(Handoff::Refused { seat: 3 })));
        drop(a);
        assert!(recv(&b)?.is_none());
        Ok(())
    }
}
