//! A server thread and `client::connect` over a real socket: the handshake,
//! shared memory both ways, doorbells both ways, later peer notifications.

mod common;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;
use std::time::Duration;

use common::{serve_one, TempDir};
use ivshmem::client::{self, ClientError, PeerEvent};
use ivshmem::{server, wire, EventFd, SharedMemory};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

const TIMEOUT: Duration = Duration::from_secs(5);
const SHM_LEN: usize = 1 << 16;

/// What the server side keeps after the handshake.
struct Backend {
    stream: UnixStream,
    shm: Arc<SharedMemory>,
    /// The back end's own vectors, as peer 0.
    own: Vec<EventFd>,
    /// The client's vectors (the server keeps its copies).
    client: Vec<EventFd>,
}

fn vectors(n: usize) -> Vec<EventFd> {
    (0..n).map(|_| EventFd::new().unwrap()).collect()
}

/// The back end as peer 0 with two vectors; the client gets id 1 and two
/// vectors.
fn backend(stream: UnixStream) -> Backend {
    let shm = Arc::new(SharedMemory::create("ivshmem-test", SHM_LEN).unwrap());
    let own = vectors(2);
    let client = vectors(2);
    server::send_handshake(&stream, 1, shm.fd(), &[(0, &own)], &client).unwrap();
    Backend {
        stream,
        shm,
        own,
        client,
    }
}

#[test]
fn handshake_shares_memory_both_ways() {
    let dir = TempDir::new("shm");
    let (path, server) = serve_one(&dir, backend);
    let conn = client::connect(&path, 2, TIMEOUT).unwrap();
    let back = server.join().unwrap();

    assert_eq!(conn.peer_id, 1);
    assert_eq!(conn.shm.len(), SHM_LEN);
    assert_eq!(conn.peers.keys().copied().collect::<Vec<_>>(), [0]);
    assert_eq!(conn.peers[&0].len(), 2);
    assert_eq!(conn.vectors.len(), 2);

    let (ours, theirs) = (back.shm.window(), conn.shm.window());
    ours.write_bytes(4096, b"hello from the back end").unwrap();
    let mut got = [0u8; 23];
    theirs.read_bytes(4096, &mut got).unwrap();
    assert_eq!(&got, b"hello from the back end");

    theirs.store_u32(SHM_LEN - 4, 0xdead_beef, Release).unwrap();
    assert_eq!(ours.load_u32(SHM_LEN - 4, Acquire).unwrap(), 0xdead_beef);
}

#[test]
fn doorbells_ring_both_ways() {
    let dir = TempDir::new("bell");
    let (path, server) = serve_one(&dir, backend);
    let conn = client::connect(&path, 2, TIMEOUT).unwrap();
    let back = server.join().unwrap();
    let short = Some(Duration::from_millis(20));
    let long = Some(TIMEOUT);

    // Guest to back end: the Doorbell register's (0 << 16) | 1.
    conn.ring(0, 1).unwrap();
    assert!(back.own[1].wait_timeout(long).unwrap());
    assert!(
        !back.own[0].wait_timeout(short).unwrap(),
        "only vector 1 rang"
    );

    // Back end to guest: QEMU would raise MSI-X vector 0.
    back.client[0].notify().unwrap();
    assert!(conn.vectors[0].wait_timeout(long).unwrap());
    assert!(!conn.vectors[1].wait_timeout(short).unwrap());

    // Ringing ourselves reaches our own vector (and the server's copy).
    conn.ring(1, 1).unwrap();
    assert!(back.client[1].wait_timeout(long).unwrap());

    let err = conn.ring(9, 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    let err = conn.ring(0, 2).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn later_messages_reach_poll_messages() {
    let dir = TempDir::new("poll");
    let (path, server) = serve_one(&dir, backend);
    let mut conn = client::connect(&path, 2, TIMEOUT).unwrap();
    let back = server.join().unwrap();

    assert_eq!(conn.poll_messages().unwrap(), []);

    // A new peer 7 with one vector.
    let seven = vectors(1);
    server::send_peer_vectors(&back.stream, 7, &seven).unwrap();
    assert_eq!(conn.poll_messages().unwrap(), [PeerEvent::Vectors(7, 1)]);
    conn.ring(7, 0).unwrap();
    assert!(seven[0].wait_timeout(Some(TIMEOUT)).unwrap());

    // Peer 0 leaves.
    server::send_peer_gone(&back.stream, 0).unwrap();
    assert_eq!(conn.poll_messages().unwrap(), [PeerEvent::Gone(0)]);
    assert!(!conn.peers.contains_key(&0));
    assert_eq!(conn.ring(0, 0).unwrap_err().kind(), io::ErrorKind::NotFound);

    // Several at once come back in order, vectors of one peer merged.
    server::send_peer_vectors(&back.stream, 3, &vectors(2)).unwrap();
    server::send_peer_gone(&back.stream, 7).unwrap();
    assert_eq!(
        conn.poll_messages().unwrap(),
        [PeerEvent::Vectors(3, 2), PeerEvent::Gone(7)]
    );
    assert_eq!(conn.poll_messages().unwrap(), []);

    // The server going away is an error, after the events before it.
    server::send_peer_gone(&back.stream, 3).unwrap();
    drop(back);
    assert_eq!(conn.poll_messages().unwrap(), [PeerEvent::Gone(3)]);
    match conn.poll_messages() {
        Err(ClientError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
}

#[test]
fn client_waits_for_as_many_vectors_as_it_asked_for() {
    let dir = TempDir::new("fewer");
    let (path, server) = serve_one(&dir, backend);
    // Asking for none returns after the shared memory...
    let mut conn = client::connect(&path, 0, TIMEOUT).unwrap();
    let _back = server.join().unwrap();
    assert!(conn.vectors.is_empty());
    assert!(conn.peers.is_empty());
    // ...and the rest show up as events (our own id included).
    assert_eq!(
        conn.poll_messages().unwrap(),
        [PeerEvent::Vectors(0, 2), PeerEvent::Vectors(1, 2)]
    );
    assert_eq!(conn.peers[&0].len(), 2);
    assert_eq!(conn.vectors.len(), 2);
}

/// Sends `bytes` in one `sendmsg`, with `fd` attached if given.
fn send_raw(stream: &UnixStream, bytes: &[u8], fd: Option<BorrowedFd<'_>>) {
    let iov = [io::IoSlice::new(bytes)];
    let raw = fd.map(|fd| [fd.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .iter()
        .map(|raw| ControlMessage::ScmRights(raw))
        .collect();
    let n = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).unwrap();
    assert_eq!(n, bytes.len());
}

#[test]
fn messages_split_and_coalesced_on_the_stream() {
    let dir = TempDir::new("split");
    let (path, server) = serve_one(&dir, |mut stream| {
        let shm = SharedMemory::create("ivshmem-test", 4096).unwrap();
        let mine = vectors(2);
        // Version and id in one write.
        let mut head = wire::encode(0).to_vec();
        head.extend(wire::encode(4));
        stream.write_all(&head).unwrap();
        // The shared memory: 3 bytes with the fd, then 5.
        let shm_msg = wire::encode(-1);
        send_raw(&stream, &shm_msg[..3], Some(shm.fd()));
        stream.write_all(&shm_msg[3..]).unwrap();
        // Own vector 0: 1 byte with the fd, then 7.
        let own = wire::encode(4);
        send_raw(&stream, &own[..1], Some(mine[0].as_fd()));
        stream.write_all(&own[1..]).unwrap();
        // Own vector 1 whole, then two departures in one write.
        send_raw(&stream, &own, Some(mine[1].as_fd()));
        let mut gone = wire::encode(5).to_vec();
        gone.extend(wire::encode(6));
        stream.write_all(&gone).unwrap();
        (stream, mine)
    });
    let mut conn = client::connect(&path, 2, TIMEOUT).unwrap();
    let (_stream, mine) = server.join().unwrap();
    assert_eq!(conn.peer_id, 4);
    assert_eq!(conn.shm.len(), 4096);
    assert_eq!(conn.vectors.len(), 2);
    mine[1].notify().unwrap();
    assert!(conn.vectors[1].wait_timeout(Some(TIMEOUT)).unwrap());
    assert_eq!(
        conn.poll_messages().unwrap(),
        [PeerEvent::Gone(5), PeerEvent::Gone(6)]
    );
}

#[test]
fn poll_messages_keeps_a_half_received_message() {
    let dir = TempDir::new("half");
    let (path, server) = serve_one(&dir, backend);
    let mut conn = client::connect(&path, 2, TIMEOUT).unwrap();
    let mut back = server.join().unwrap();
    let late = vectors(1);
    let msg = wire::encode(9);
    send_raw(&back.stream, &msg[..5], Some(late[0].as_fd()));
    assert_eq!(conn.poll_messages().unwrap(), []);
    back.stream.write_all(&msg[5..]).unwrap();
    assert_eq!(conn.poll_messages().unwrap(), [PeerEvent::Vectors(9, 1)]);
    conn.ring(9, 0).unwrap();
    assert!(late[0].wait_timeout(Some(TIMEOUT)).unwrap());
}
