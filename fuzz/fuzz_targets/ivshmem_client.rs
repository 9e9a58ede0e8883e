//! The ivshmem client (`ivshmem::client`, and the message framing in
//! `ivshmem::wire` under it) against a hostile ivshmem server.
//!
//! Each input is a script the fake server plays on a real UNIX socket:
//! 8-byte messages with any number in them (the protocol version, ids in
//! and out of range, -1 for the shared memory, huge values), with no
//! descriptor, an eventfd, a memfd of odd size, or two descriptors at
//! once, and raw byte runs that split messages anywhere. The server then
//! closes the connection. The client runs `connect` and, if that succeeds,
//! `poll_messages` until it fails, ringing the doorbells it learnt.
//!
//! Checked: nothing panics or hangs (the server always closes, so every
//! read ends), and a successful `connect` has the shared memory and at
//! least the vectors it asked for.
//!
//! Input: `vectors u8` (mod 4), then ops `[op u8] [operands]`, op % 6:
//!   0 message (value sel u8 [, u16 | i64])   1 message + an eventfd
//!   2 message + a memfd (size sel u8)        3 raw bytes (len u8 % 9, bytes)
//!   4 message + two descriptors              5 close now

#![no_main]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ivshmem::wire::{self, PROTOCOL_VERSION, SHM_MESSAGE};
use ivshmem::{EventFd, SharedMemory};
use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{send, sendmsg, ControlMessage, MsgFlags};

/// One listener per fuzzing process.
fn listener() -> &'static (UnixListener, PathBuf) {
    static LISTENER: OnceLock<(UnixListener, PathBuf)> = OnceLock::new();
    LISTENER.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("ibguest-fuzz-ivshmem-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        match UnixListener::bind(&path) {
            Ok(l) => (l, path),
            Err(e) => panic!("cannot bind {}: {e}", path.display()),
        }
    })
}

/// Reads the script front to back; past the end it reads zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    fn value(&mut self) -> i64 {
        match self.u8() % 8 {
            0 => PROTOCOL_VERSION,
            1 => i64::from(self.u8() % 4),
            2 => SHM_MESSAGE,
            3 => i64::from(u16::from_le_bytes([self.u8(), self.u8()])),
            4 => 65_535,
            5 => 65_536,
            6 => i64::MIN,
            _ => {
                let b = self.take(8);
                let mut raw = [0u8; 8];
                raw[..b.len()].copy_from_slice(&b);
                i64::from_le_bytes(raw)
            }
        }
    }
}

fn memfd(sel: u8) -> io::Result<SharedMemory> {
    let len = match sel % 4 {
        0 => 4096,
        1 => 64 * 1024,
        2 => 1,
        _ => 0,
    };
    SharedMemory::create("ibguest-fuzz", len)
}

/// Sends 8 bytes with two descriptors attached.
fn send_two(
    stream: &UnixStream,
    value: i64,
    a: BorrowedFd<'_>,
    b: BorrowedFd<'_>,
) -> io::Result<()> {
    let fds = [a.as_raw_fd(), b.as_raw_fd()];
    let bytes = wire::encode(value);
    let iov = [io::IoSlice::new(&bytes)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// Plays the script; any send error (the client left) ends it.
fn serve(stream: UnixStream, script: Vec<u8>) {
    let mut input = Input(&script);
    while !input.0.is_empty() {
        let result = match input.u8() % 6 {
            0 => wire::send(&stream, input.value(), None),
            1 => EventFd::new().and_then(|e| wire::send(&stream, input.value(), Some(e.as_fd()))),
            2 => memfd(input.u8()).and_then(|m| wire::send(&stream, input.value(), Some(m.fd()))),
            3 => {
                let n = usize::from(input.u8() % 9);
                let bytes = input.take(n);
                send(stream.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
                    .map(|_| ())
                    .map_err(io::Error::from)
            }
            4 => match (EventFd::new(), memfd(0)) {
                (Ok(e), Ok(m)) => send_two(&stream, input.value(), e.as_fd(), m.fd()),
                _ => Ok(()),
            },
            _ => break,
        };
        if result.is_err() {
            break;
        }
    }
    // Dropping the stream closes it: the client's reads end.
}

fuzz_target!(|data: &[u8]| {
    let (listener, path) = listener();
    let Some((&vectors, script)) = data.split_first() else {
        return;
    };
    let vectors = usize::from(vectors % 4);
    let script = script.to_vec();
    let server = std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            serve(stream, script);
        }
    });
    match ivshmem::client::connect(path, vectors, Duration::from_secs(5)) {
        Ok(mut conn) => {
            assert!(conn.vectors.len() >= vectors);
            for _ in 0..64 {
                if conn.poll_messages().is_err() {
                    break;
                }
            }
            let peers: Vec<(u16, usize)> = conn.peers.iter().map(|(p, v)| (*p, v.len())).collect();
            for (peer, n) in peers {
                let _ = conn.ring(peer, n.saturating_sub(1));
                let _ = conn.ring(peer, n);
            }
            let _ = conn.ring(conn.peer_id, 0);
        }
        Err(ivshmem::ClientError::Timeout) => panic!("the client timed out on a closed server"),
        Err(_) => {}
    }
    let _ = server.join();
});
