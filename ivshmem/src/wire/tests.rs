use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;
use crate::EventFd;

/// Fixtures: the number and its 8 bytes on the wire.
const FIXTURES: [(i64, [u8; 8]); 5] = [
    (0, [0, 0, 0, 0, 0, 0, 0, 0]),
    (1, [1, 0, 0, 0, 0, 0, 0, 0]),
    (-1, [0xff; 8]),
    (0x1234, [0x34, 0x12, 0, 0, 0, 0, 0, 0]),
    (65535, [0xff, 0xff, 0, 0, 0, 0, 0, 0]),
];

#[test]
fn encode_and_decode_fixtures() {
    for (value, bytes) in FIXTURES {
        assert_eq!(encode(value), bytes, "encode {value}");
        assert_eq!(decode(bytes), value, "decode {bytes:?}");
    }
}

#[test]
fn send_then_recv_keeps_value_and_fd() {
    let (a, b) = UnixStream::pair().unwrap();
    let event = EventFd::new().unwrap();
    send(&a, 42, None).unwrap();
    send(&a, 7, Some(event.as_fd())).unwrap();
    let mut rx = Receiver::default();
    let first = rx.recv(&b, Wait::No).unwrap().unwrap();
    assert_eq!(first.value, 42);
    assert!(first.fd.is_none());
    let second = rx.recv(&b, Wait::No).unwrap().unwrap();
    assert_eq!(second.value, 7);
    let got = EventFd::from_fd(second.fd.unwrap());
    got.notify().unwrap();
    assert_eq!(event.drain().unwrap(), 1, "the fd is the same eventfd");
    assert!(rx.recv(&b, Wait::No).unwrap().is_none());
}

#[test]
fn byte_at_a_time_with_fd_in_the_middle() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let event = EventFd::new().unwrap();
    let bytes = encode(0x0102_0304_0506_0708);
    let mut rx = Receiver::default();
    for (i, byte) in bytes.iter().enumerate() {
        assert!(rx.recv(&b, Wait::No).unwrap().is_none());
        if i == 3 {
            let fds = [event.as_fd().as_raw_fd()];
            let iov = [IoSlice::new(std::slice::from_ref(byte))];
            sendmsg::<()>(
                a.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        } else {
            a.write_all(std::slice::from_ref(byte)).unwrap();
        }
    }
    let msg = rx.recv(&b, Wait::No).unwrap().unwrap();
    assert_eq!(msg.value, 0x0102_0304_0506_0708);
    assert!(msg.fd.is_some());
}

#[test]
fn coalesced_messages_come_out_one_by_one() {
    let (mut a, b) = UnixStream::pair().unwrap();
    let mut all = Vec::new();
    for v in [3i64, -1, 9] {
        all.extend(encode(v));
    }
    a.write_all(&all).unwrap();
    let mut rx = Receiver::default();
    for v in [3i64, -1, 9] {
        assert_eq!(rx.recv(&b, Wait::No).unwrap().unwrap().value, v);
    }
}

#[test]
fn second_fd_for_one_message_is_an_error() {
    let (a, b) = UnixStream::pair().unwrap();
    let (e1, e2) = (EventFd::new().unwrap(), EventFd::new().unwrap());
    let bytes = encode(5);
    for (half, fd) in [(&bytes[..4], &e1), (&bytes[4..], &e2)] {
        let fds = [fd.as_fd().as_raw_fd()];
        let iov = [IoSlice::new(half)];
        sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }
    let mut rx = Receiver::default();
    match rx.recv(&b, Wait::No) {
        Err(RecvError::ExtraFds { count: 2 }) => {}
        other => panic!("expected ExtraFds, got {other:?}"),
    }
}

#[test]
fn eof_reports_partial_bytes() {
    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(&encode(1)[..3]).unwrap();
    drop(a);
    let mut rx = Receiver::default();
    match rx.recv(&b, Wait::No) {
        Err(RecvError::Eof { partial: 3 }) => {}
        other => panic!("expected Eof after 3 bytes, got {other:?}"),
    }
}

#[test]
fn deadline_passes() {
    let (_a, b) = UnixStream::pair().unwrap();
    let mut rx = Receiver::default();
    let deadline = Some(Instant::now() + Duration::from_millis(20));
    assert!(matches!(
        rx.recv(&b, Wait::Until(deadline)),
        Err(RecvError::TimedOut)
    ));
}
