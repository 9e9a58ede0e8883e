//! The supervisor ⇄ worker link, a UNIX stream socket.
//!
//! Supervisor → worker ([`Handoff`]): an ivshmem guest's descriptors by
//! SCM_RIGHTS (the client's socket, its shared memory, the doorbell and
//! interrupt eventfds; the supervisor keeps its own copies, so a worker that
//! dies takes none of them with it), and a Xen guest's validated xenstore
//! publication (no descriptors: the worker maps the grants itself).
//! Worker → supervisor ([`Report`]): how a Xen session went, so the
//! supervisor can set the backend's XenbusState.
//!
//! Every message is a 20-byte header `{magic, kind, seat, flags, body_len}`
//! (u32 each, native order: both ends are the same binary) and `body_len`
//! bytes of body, at most [`MAX_BODY`].

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use xen_proto::ibchan::{FrontendPublication, MAX_DIR_PAGES};

mod body;
#[cfg(test)]
mod tests;

use body::{Body, BodyReader};

const MAGIC: u32 = 0x4942_4846; // "IBHF"
const HEADER: usize = 20;
/// The longest body either side sends.
pub const MAX_BODY: usize = 4096;
/// The longest failure reason a report carries (longer ones are cut).
const MAX_REASON: usize = 1024;

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

/// Why the supervisor ends a Xen session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The domain was destroyed (or renamed away from the seat).
    DomainGone,
    /// The frontend went to Closing/Closed, reset itself, or removed its
    /// device directory.
    FrontendClosed,
}

impl EndReason {
    fn code(self) -> u32 {
        match self {
            EndReason::DomainGone => 1,
            EndReason::FrontendClosed => 2,
        }
    }

    fn from_code(code: u32) -> Option<EndReason> {
        match code {
            1 => Some(EndReason::DomainGone),
            2 => Some(EndReason::FrontendClosed),
            _ => None,
        }
    }
}

/// What the supervisor tells the worker.
pub enum Handoff {
    /// An ivshmem guest for `seat`. `restart` is set when a previous worker
    /// served it and died: the window holds its state and the epoch must
    /// change.
    Session {
        seat: u32,
        restart: bool,
        fds: SessionFds,
    },
    /// A connection to `seat` was refused because a guest is attached.
    Refused { seat: u32 },
    /// A Xen guest for `seat`: domain `domid` published `publication`
    /// (already parsed and checked). `restart` as for `Session`.
    Xen {
        seat: u32,
        restart: bool,
        domid: u16,
        publication: FrontendPublication,
    },
    /// End `seat`'s Xen session with `domid`.
    End {
        seat: u32,
        domid: u16,
        reason: EndReason,
    },
    /// The supervisor refused what `domid` published for `seat` (it logged
    /// why); the worker counts it.
    XenRefused { seat: u32, domid: u16 },
}

impl Handoff {
    /// The seat the message is for.
    pub fn seat(&self) -> u32 {
        match self {
            Handoff::Session { seat, .. }
            | Handoff::Refused { seat }
            | Handoff::Xen { seat, .. }
            | Handoff::End { seat, .. }
            | Handoff::XenRefused { seat, .. } => *seat,
        }
    }
}

/// What the worker tells the supervisor about a Xen session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The window is mapped and the event channel bound: the back end
    /// serves it (backend state Connected).
    XenConnected { seat: u32, domid: u16 },
    /// Mapping or binding failed, or the guest was disconnected for a
    /// protocol violation (backend state Closed).
    XenFailed {
        seat: u32,
        domid: u16,
        reason: String,
    },
}

const KIND_SESSION: u32 = 1;
const KIND_REFUSED: u32 = 2;
const KIND_XEN: u32 = 3;
const KIND_END: u32 = 4;
const KIND_XEN_REFUSED: u32 = 5;
const KIND_XEN_CONNECTED: u32 = 16;
const KIND_XEN_FAILED: u32 = 17;

fn frame(kind: u32, seat: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + body.len());
    for w in [MAGIC, kind, seat, flags, body.len() as u32] {
        m.extend_from_slice(&w.to_ne_bytes());
    }
    m.extend_from_slice(body);
    m
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn send_frame(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
    let sent = sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent < bytes.len() {
        // The descriptors went with the first part; the rest is plain data.
        io::Write::write_all(&mut &*sock, &bytes[sent..])?;
    }
    Ok(())
}

pub fn send(sock: &UnixStream, message: &Handoff) -> io::Result<()> {
    let (bytes, fds): (Vec<u8>, Vec<RawFd>) = match message {
        Handoff::Session { seat, restart, fds } => (
            frame(KIND_SESSION, *seat, u32::from(*restart), &[]),
            vec![
                fds.client.as_raw_fd(),
                fds.memory.as_raw_fd(),
                fds.doorbell.as_raw_fd(),
                fds.interrupt.as_raw_fd(),
            ],
        ),
        Handoff::Refused { seat } => (frame(KIND_REFUSED, *seat, 0, &[]), Vec::new()),
        Handoff::Xen {
            seat,
            restart,
            domid,
            publication,
        } => {
            let mut b = Body::new();
            b.u32(u32::from(*domid))
                .u32(publication.window_pages)
                .u32(publication.event_channel)
                .u32(publication.dir_refs.len() as u32);
            for r in &publication.dir_refs {
                b.u32(*r);
            }
            (
                frame(KIND_XEN, *seat, u32::from(*restart), b.bytes()),
                Vec::new(),
            )
        }
        Handoff::End {
            seat,
            domid,
            reason,
        } => {
            let mut b = Body::new();
            b.u32(u32::from(*domid)).u32(reason.code());
            (frame(KIND_END, *seat, 0, b.bytes()), Vec::new())
        }
        Handoff::XenRefused { seat, domid } => {
            let mut b = Body::new();
            b.u32(u32::from(*domid));
            (frame(KIND_XEN_REFUSED, *seat, 0, b.bytes()), Vec::new())
        }
    };
    send_frame(sock, &bytes, &fds)
}

/// Sends a report to the supervisor.
pub fn send_report(sock: &UnixStream, report: &Report) -> io::Result<()> {
    let bytes = match report {
        Report::XenConnected { seat, domid } => {
            let mut b = Body::new();
            b.u32(u32::from(*domid));
            frame(KIND_XEN_CONNECTED, *seat, 0, b.bytes())
        }
        Report::XenFailed {
            seat,
            domid,
            reason,
        } => {
            let mut cut = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut b = Body::new();
            b.u32(u32::from(*domid)).raw(&reason.as_bytes()[..cut]);
            frame(KIND_XEN_FAILED, *seat, 0, b.bytes())
        }
    };
    send_frame(sock, &bytes, &[])
}

/// The worker's sending end for reports, shared by its threads. A report
/// that cannot be sent is logged and dropped: the supervisor is gone or
/// restarting the worker, and will resend the sessions anyway.
#[derive(Clone, Default)]
pub struct Reporter(Option<Arc<Mutex<UnixStream>>>);

impl Reporter {
    pub fn new(link: UnixStream) -> Reporter {
        Reporter(Some(Arc::new(Mutex::new(link))))
    }

    pub fn send(&self, report: &Report) {
        let Some(link) = &self.0 else { return };
        let link = link.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = send_report(&link, report) {
            log::warn!("cannot report to the supervisor: {e}");
        }
    }
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

/// One frame off the link: `(kind, seat, flags, body, descriptors)`, or
/// `None` at end of stream.
type Frame = (u32, u32, u32, Vec<u8>, Vec<OwnedFd>);

fn recv_frame(sock: &UnixStream) -> io::Result<Option<Frame>> {
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
    if len < HEADER {
        (&*sock).read_exact(&mut bytes[len..])?;
    }
    let word = |i: usize| {
        u32::from_ne_bytes([
            bytes[i * 4],
            bytes[i * 4 + 1],
            bytes[i * 4 + 2],
            bytes[i * 4 + 3],
        ])
    };
    if word(0) != MAGIC {
        return Err(invalid("malformed handoff message"));
    }
    let body_len = word(4) as usize;
    if body_len > MAX_BODY {
        return Err(invalid(format!(
            "handoff body of {body_len} bytes exceeds {MAX_BODY}"
        )));
    }
    let mut body = vec![0u8; body_len];
    (&*sock).read_exact(&mut body)?;
    Ok(Some((word(1), word(2), word(3), body, fds)))
}

/// Reads one message. `Ok(None)` means the supervisor has gone.
pub fn recv(sock: &UnixStream) -> io::Result<Option<Handoff>> {
    let Some((kind, seat, flags, body, fds)) = recv_frame(sock)? else {
        return Ok(None);
    };
    let mut b = BodyReader::new(&body);
    let message = match kind {
        KIND_SESSION => {
            let mut it = fds.into_iter();
            let (Some(client), Some(memory), Some(doorbell), Some(interrupt)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(invalid("session handoff without its descriptors"));
            };
            Handoff::Session {
                seat,
                restart: flags != 0,
                fds: SessionFds {
                    client: UnixStream::from(client),
                    memory,
                    doorbell,
                    interrupt,
                },
            }
        }
        KIND_REFUSED => Handoff::Refused { seat },
        KIND_XEN => {
            let domid = b.domid()?;
            let window_pages = b.u32()?;
            let event_channel = b.u32()?;
            let count = b.u32()?;
            if count > MAX_DIR_PAGES {
                return Err(invalid(format!("{count} directory pages in a handoff")));
            }
            let dir_refs = (0..count).map(|_| b.u32()).collect::<io::Result<_>>()?;
            Handoff::Xen {
                seat,
                restart: flags != 0,
                domid,
                publication: FrontendPublication {
                    window_pages,
                    dir_refs,
                    event_channel,
                },
            }
        }
        KIND_END => {
            let domid = b.domid()?;
            let code = b.u32()?;
            let reason = EndReason::from_code(code)
                .ok_or_else(|| invalid(format!("unknown end reason {code}")))?;
            Handoff::End {
                seat,
                domid,
                reason,
            }
        }
        KIND_XEN_REFUSED => Handoff::XenRefused {
            seat,
            domid: b.domid()?,
        },
        other => return Err(invalid(format!("unknown handoff kind {other}"))),
    };
    b.finish()?;
    Ok(Some(message))
}

/// Reads one report. `Ok(None)` means the worker has gone.
pub fn recv_report(sock: &UnixStream) -> io::Result<Option<Report>> {
    let Some((kind, seat, _, body, _)) = recv_frame(sock)? else {
        return Ok(None);
    };
    let mut b = BodyReader::new(&body);
    let report = match kind {
        KIND_XEN_CONNECTED => Report::XenConnected {
            seat,
            domid: b.domid()?,
        },
        KIND_XEN_FAILED => Report::XenFailed {
            seat,
            domid: b.domid()?,
            reason: String::from_utf8_lossy(b.rest()).into_owned(),
        },
        other => return Err(invalid(format!("unknown report kind {other}"))),
    };
    b.finish()?;
    Ok(Some(report))
}
