//! The handshake's bytes and descriptors, checked against the order of
//! QEMU's `docs/specs/ivshmem-spec.rst` with readers that do not use the
//! client.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::sys::socket::MsgFlags;
use nix::sys::stat::fstat;

use super::*;
use crate::{sys, wire::MESSAGE_LEN, SharedMemory};

struct Fixture {
    shm: SharedMemory,
    /// Peer 2 with two vectors, peer 5 with one.
    peer2: Vec<EventFd>,
    peer5: Vec<EventFd>,
    /// The client's (id 3) two vectors.
    client: Vec<EventFd>,
}

fn fixture() -> Fixture {
    let ev = |n| (0..n).map(|_| EventFd::new().unwrap()).collect::<Vec<_>>();
    Fixture {
        shm: SharedMemory::create("ivshmem-spec-test", 4096).unwrap(),
        peer2: ev(2),
        peer5: ev(1),
        client: ev(2),
    }
}

fn send(f: &Fixture, stream: &UnixStream) {
    send_handshake(
        stream,
        3,
        f.shm.fd(),
        &[(2, &f.peer2), (5, &f.peer5)],
        &f.client,
    )
    .unwrap();
}

/// The numbers, in order, as plain bytes.
const EXPECTED: [i64; 8] = [
    0,  // 1. version
    3,  // 2. the client's id
    -1, // 3. shared memory
    2, 2, 5, // 4. peer 2's two vectors, peer 5's one
    3, 3, // 5. the client's own two vectors
];

#[test]
fn handshake_bytes_in_spec_order() {
    let f = fixture();
    let (a, mut b) = UnixStream::pair().unwrap();
    send(&f, &a);
    drop(a);
    // A plain read: the bytes only (the kernel discards the descriptors).
    let mut bytes = Vec::new();
    b.read_to_end(&mut bytes).unwrap();
    let expected: Vec<u8> = EXPECTED.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(bytes, expected);
    assert_eq!(&bytes[16..24], &[0xff; 8], "-1 is all ones, little-endian");
}

#[test]
fn handshake_descriptors_travel_with_the_right_messages() {
    let f = fixture();
    let (a, b) = UnixStream::pair().unwrap();
    send(&f, &a);
    drop(a);
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; MESSAGE_LEN];
        let (n, mut fds) = sys::recv_with_fds(b.as_fd(), &mut buf, MsgFlags::empty()).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(
            n, MESSAGE_LEN,
            "each message arrives whole from this server"
        );
        assert!(fds.len() <= 1);
        got.push((i64::from_le_bytes(buf), fds.pop()));
    }
    let values: Vec<i64> = got.iter().map(|(v, _)| *v).collect();
    assert_eq!(values, EXPECTED);
    let has_fd: Vec<bool> = got.iter().map(|(_, fd)| fd.is_some()).collect();
    assert_eq!(has_fd, [false, false, true, true, true, true, true, true]);

    // Message 3 carries the very memfd (same inode).
    let shm_fd = got[2].1.as_ref().unwrap();
    assert_eq!(
        fstat(shm_fd).unwrap().st_ino,
        fstat(f.shm.fd()).unwrap().st_ino
    );

    // Messages 4..8 carry the eventfds in order: ringing the received copy
    // rings the original, and only that one.
    let originals: Vec<&EventFd> = f.peer2.iter().chain(&f.peer5).chain(&f.client).collect();
    for (i, (_, fd)) in got.into_iter().skip(3).enumerate() {
        let copy = EventFd::from_fd(fd.unwrap());
        copy.notify().unwrap();
        for (j, original) in originals.iter().enumerate() {
            assert_eq!(
                original.drain().unwrap(),
                u64::from(i == j),
                "message {} vs vector {j}",
                i + 3
            );
        }
    }
}

#[test]
fn notifications_after_the_handshake() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let ev = [EventFd::new().unwrap(), EventFd::new().unwrap()];
    send_peer_vectors(&a, 9, &ev).unwrap();
    send_peer_gone(&a, 9).unwrap();
    drop(a);
    let mut bytes = Vec::new();
    b.read_to_end(&mut bytes).unwrap();
    let expected: Vec<u8> = [9i64, 9, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(bytes, expected);
}

#[test]
fn bind_replaces_a_stale_socket_but_not_a_live_one() {
    let dir = std::env::temp_dir().join(format!("ivshmem-bind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    drop(bind(&path).unwrap()); // leaves a stale socket file behind
    let live = bind(&path).unwrap();
    let err = bind(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    drop(live);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_gone_sees_hang_up_and_data() {
    let (a, b) = UnixStream::pair().unwrap();
    assert!(!client_gone(&a).unwrap());
    drop(b);
    assert!(client_gone(&a).unwrap());

    let (a, mut b) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut b, b"x").unwrap();
    assert!(client_gone(&a).unwrap(), "clients never talk");
}

#[test]
fn client_state_tells_leaving_from_speaking_and_consumes_nothing() {
    let (a, b) = UnixStream::pair().unwrap();
    assert_eq!(client_state(&a).unwrap(), ClientState::Quiet);
    drop(b);
    assert_eq!(client_state(&a).unwrap(), ClientState::Closed);

    let (a, mut b) = UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut b, b"xy").unwrap();
    assert_eq!(client_state(&a).unwrap(), ClientState::Spoke);
    // Peeked, not read: whoever else holds the socket sees the bytes too.
    a.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(std::io::Read::read(&mut &a, &mut buf).unwrap(), 2);
}
