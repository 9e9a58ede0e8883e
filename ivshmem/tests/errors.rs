//! Connecting to nothing, and servers that break the protocol: typed errors,
//! never panics or hangs.

mod common;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::{serve_one, TempDir};
use ivshmem::client::{self, ClientError, Connection};
use ivshmem::{server, wire, EventFd, SharedMemory};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `garbage` as the server and connects to it, wanting `vectors`.
fn against<F>(vectors: usize, timeout: Duration, garbage: F) -> Result<Connection, ClientError>
where
    F: FnOnce(&UnixStream) + Send + 'static,
{
    let dir = TempDir::new("garbage");
    let (path, server) = serve_one(&dir, move |stream| {
        garbage(&stream);
        stream // kept open until joined, unless `garbage` shut it down
    });
    let result = client::connect(&path, vectors, timeout);
    drop(server.join().unwrap());
    result
}

fn send(stream: &UnixStream, value: i64, fd: Option<BorrowedFd<'_>>) {
    // The client may hang up first when it sees the violation.
    let _ = wire::send(stream, value, fd);
}

fn protocol_error(result: Result<Connection, ClientError>, expect: &str) {
    match result {
        Err(ClientError::Protocol(what)) => {
            assert!(
                what.contains(expect),
                "{what:?} does not mention {expect:?}"
            );
            let shown = ClientError::Protocol(what).to_string();
            assert!(
                shown.starts_with("ivshmem server broke the protocol: "),
                "{shown}"
            );
        }
        other => panic!("expected a protocol error about {expect:?}, got {other:?}"),
    }
}

fn shm() -> SharedMemory {
    SharedMemory::create("ivshmem-test", 4096).unwrap()
}

#[test]
fn missing_socket_is_no_server() {
    let dir = TempDir::new("nosock");
    let path = dir.socket();
    match client::connect(&path, 1, TIMEOUT) {
        Err(ClientError::NoServer(p)) => assert_eq!(p, path),
        other => panic!("expected NoServer, got {other:?}"),
    }
    let shown = ClientError::NoServer(path.clone()).to_string();
    assert!(
        shown.starts_with(&format!("no ivshmem server at {}", path.display())),
        "{shown}"
    );
}

#[test]
fn socket_without_listener_is_no_server() {
    let dir = TempDir::new("refused");
    let path = dir.socket();
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody listens
    assert!(matches!(
        client::connect(&path, 1, TIMEOUT),
        Err(ClientError::NoServer(_))
    ));
}

#[test]
fn wrong_version() {
    protocol_error(
        against(1, TIMEOUT, |s| send(s, 1, None)),
        "protocol version 1",
    );
}

#[test]
fn version_with_fd() {
    protocol_error(
        against(1, TIMEOUT, |s| send(s, 0, Some(shm().fd()))),
        "version message came with a file descriptor",
    );
}

#[test]
fn id_out_of_range() {
    for id in [65536, -1, -7] {
        protocol_error(
            against(1, TIMEOUT, move |s| {
                send(s, 0, None);
                send(s, id, None);
            }),
            "client id",
        );
    }
}

#[test]
fn id_with_fd() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, Some(shm().fd()));
        }),
        "id message came with a file descriptor",
    );
}

#[test]
fn shared_memory_without_fd() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -1, None);
        }),
        "without a file descriptor",
    );
}

#[test]
fn shared_memory_that_is_not_memory() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -1, Some(EventFd::new().unwrap().as_fd()));
        }),
        "unusable shared memory",
    );
}

#[test]
fn second_shared_memory() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -1, Some(shm().fd()));
            send(s, -1, Some(shm().fd()));
        }),
        "second shared-memory message",
    );
}

#[test]
fn invalid_number_after_the_id() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -2, Some(shm().fd()));
        }),
        "peer id -2 is out of range",
    );
}

#[test]
fn told_that_we_are_gone() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -1, Some(shm().fd()));
            send(s, 3, None);
        }),
        "were told we are gone",
    );
}

#[test]
fn too_many_vectors_for_a_peer() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            send(s, -1, Some(shm().fd()));
            let event = EventFd::new().unwrap();
            for _ in 0..=wire::MAX_VECTORS {
                send(s, 5, Some(event.as_fd()));
            }
        }),
        "more than 64 vectors for peer 5",
    );
}

#[test]
fn two_fds_with_one_message() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            send(s, 3, None);
            let (a, b) = (EventFd::new().unwrap(), EventFd::new().unwrap());
            let fds = [a.as_fd().as_raw_fd(), b.as_fd().as_raw_fd()];
            let bytes = wire::encode(-1);
            let iov = [io::IoSlice::new(&bytes)];
            let _ = sendmsg::<()>(
                s.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            );
        }),
        "2 file descriptors came with one message",
    );
}

#[test]
fn server_hangs_up_during_handshake() {
    protocol_error(
        against(1, TIMEOUT, |s| {
            send(s, 0, None);
            s.shutdown(std::net::Shutdown::Both).unwrap();
        }),
        "closed the connection before our peer id",
    );
}

#[test]
fn server_hangs_up_mid_message() {
    protocol_error(
        against(1, TIMEOUT, |mut s| {
            send(s, 0, None);
            s.write_all(&wire::encode(3)[..6]).unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
        }),
        "middle of a message (6 of 8 bytes)",
    );
}

#[test]
fn silent_server_times_out() {
    let start = Instant::now();
    let result = against(2, Duration::from_millis(200), |s| {
        send(s, 0, None);
        send(s, 3, None);
        send(s, -1, Some(shm().fd()));
        send(s, 3, Some(EventFd::new().unwrap().as_fd()));
        // ...and the second vector never comes.
        std::thread::sleep(Duration::from_millis(400));
    });
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(ClientError::Timeout.to_string().contains("in time"));
}

#[test]
fn too_many_vectors_asked_for() {
    let dir = TempDir::new("ask");
    match client::connect(&dir.socket(), wire::MAX_VECTORS + 1, TIMEOUT) {
        Err(ClientError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::InvalidInput),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn server_refuses_bad_handshakes() {
    let (a, _b) = UnixStream::pair().unwrap();
    let shm = shm();
    let one = [EventFd::new().unwrap()];
    let err = server::send_handshake(&a, 2, shm.fd(), &[(2, &one)], &[]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let many: Vec<EventFd> = (0..=wire::MAX_VECTORS)
        .map(|_| EventFd::new().unwrap())
        .collect();
    let err = server::send_handshake(&a, 2, shm.fd(), &[], &many).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = server::send_peer_vectors(&a, 4, &many).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn server_send_to_a_vanished_client_is_an_error() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let err = server::send_peer_gone(&a, 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}
