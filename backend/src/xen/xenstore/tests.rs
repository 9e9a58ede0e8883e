//! The client against a scripted xenstored on the other end of a socket
//! pair.

use super::*;
use crate::xen::store::NO_TX;
use std::collections::BTreeMap;
use std::thread::JoinHandle;

/// A raw frame: `ty`, answering `req` (its id and transaction).
fn frame(req: &Message, ty: MsgType, payload: &[u8]) -> Vec<u8> {
    Payload::new()
        .raw(payload)
        .message(ty, req.header.req_id, req.header.tx_id)
        .unwrap()
}

fn event(path: &str, token: &str) -> Vec<u8> {
    Payload::new()
        .arg(path.as_bytes())
        .arg(token.as_bytes())
        .message(MsgType::WatchEvent, 0, 0)
        .unwrap()
}

fn args(m: &Message) -> Vec<String> {
    m.payload
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Runs `answer` for every request; it returns the raw bytes to send
/// back (any number of frames, in any order, or nothing). The thread ends
/// at end of stream and returns every request it saw.
fn xenstored(
    mut answer: impl FnMut(&Message) -> Vec<Vec<u8>> + Send + 'static,
) -> (XsClient<UnixStream>, JoinHandle<Vec<Message>>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let mut theirs = theirs;
        let mut reader = MessageReader::new();
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match theirs.read(&mut buf) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => n,
            };
            reader.push(&buf[..n]);
            while let Ok(Some(m)) = reader.next_message() {
                for f in answer(&m) {
                    if theirs.write_all(&f).is_err() {
                        return seen;
                    }
                }
                seen.push(m);
            }
        }
    });
    (XsClient::new(ours).unwrap(), server)
}

/// A small but real store: read, write, mkdir, rm, directory, set_perms,
/// watch (with its initial event), transactions (the commit of the
/// transaction numbered `conflict` fails once with EAGAIN), and
/// introduced domains.
fn stateful(conflict: u32) -> impl FnMut(&Message) -> Vec<Vec<u8>> + Send + 'static {
    let mut nodes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut next_tx = 7;
    move |m: &Message| {
        let a = args(m);
        let ok = |m| frame(m, m.header.ty, b"OK\0");
        let err = |m, e: &str| frame(m, MsgType::Error, format!("{e}\0").as_bytes());
        match m.header.ty {
            MsgType::Read => match nodes.get(&a[0]) {
                Some(v) => vec![frame(m, MsgType::Read, v)],
                None => vec![err(m, "ENOENT")],
            },
            MsgType::Write => {
                let path_len = a[0].len() + 1;
                nodes.insert(a[0].clone(), m.payload[path_len..].to_vec());
                vec![ok(m)]
            }
            MsgType::Mkdir | MsgType::SetPerms => {
                nodes.entry(a[0].clone()).or_default();
                vec![ok(m)]
            }
            MsgType::Rm => match nodes.remove(&a[0]) {
                Some(_) => vec![ok(m)],
                None => vec![err(m, "ENOENT")],
            },
            MsgType::Directory => {
                let prefix = format!("{}/", a[0]);
                let mut listing = Vec::new();
                for k in nodes.keys().filter_map(|k| k.strip_prefix(&prefix)) {
                    listing.extend_from_slice(k.as_bytes());
                    listing.push(0);
                }
                vec![frame(m, MsgType::Directory, &listing)]
            }
            MsgType::Watch => vec![ok(m), event(&a[0], &a[1])],
            MsgType::TransactionStart => {
                next_tx += 1;
                vec![frame(m, m.header.ty, format!("{next_tx}\0").as_bytes())]
            }
            MsgType::TransactionEnd if m.header.tx_id == conflict && a[0] == "T" => {
                vec![err(m, "EAGAIN")]
            }
            MsgType::TransactionEnd => vec![ok(m)],
            MsgType::IsDomainIntroduced => {
                let answer: &[u8] = if a[0] == "5" { b"T\0" } else { b"F\0" };
                vec![frame(m, m.header.ty, answer)]
            }
            _ => vec![err(m, "EINVAL")],
        }
    }
}

#[test]
fn requests_get_their_replies() {
    let (mut xs, server) = xenstored(stateful(8));
    xs.write(NO_TX, "/local/domain/5/name", b"ibguest-g1")
        .unwrap();
    assert_eq!(
        xs.read(NO_TX, "/local/domain/5/name").unwrap().as_deref(),
        Some(&b"ibguest-g1"[..])
    );
    assert_eq!(xs.read(NO_TX, "/local/domain/6/name").unwrap(), None);
    xs.write(NO_TX, "/local/domain/6", b"").unwrap();
    assert_eq!(
        xs.directory(NO_TX, "/local/domain").unwrap(),
        Some(vec!["5/name".to_string(), "6".to_string()])
    );
    xs.mkdir(NO_TX, "/a/b").unwrap();
    xs.rm(NO_TX, "/a/b").unwrap();
    xs.rm(NO_TX, "/not/there").unwrap();
    let perms = Perms {
        owner: 5,
        readers: vec![0],
    };
    xs.set_perms(NO_TX, "/a", &perms).unwrap();
    assert!(xs.is_domain_introduced(5).unwrap());
    assert!(!xs.is_domain_introduced(6).unwrap());
    // Transaction 8 conflicts once; 9 commits; an abort always ends.
    let tx = xs.transaction_start().unwrap();
    assert_eq!(tx, 8);
    xs.write(tx, "/t", b"1").unwrap();
    assert!(!xs.transaction_end(tx, true).unwrap());
    let tx = xs.transaction_start().unwrap();
    assert!(xs.transaction_end(tx, true).unwrap());
    assert!(xs.transaction_end(tx, false).unwrap());
    // A refused request is an error answer, and the connection carries on.
    let e = xs.unwatch("/x", "t").unwrap_err();
    assert_eq!(e, StoreError::Remote(ErrorName::Inval));
    assert!(xs.read(NO_TX, "/t").unwrap().is_some());
    drop(xs);
    let seen = server.join().unwrap();
    // The wire: what libxenstore sends.
    let find = |ty: MsgType| seen.iter().find(|m| m.header.ty == ty).unwrap().clone();
    assert_eq!(find(MsgType::SetPerms).payload, b"/a\0n5\0r0\0");
    assert_eq!(
        find(MsgType::Write).payload,
        b"/local/domain/5/name\0ibguest-g1"
    );
    assert_eq!(find(MsgType::TransactionStart).payload, b"\0");
    assert_eq!(find(MsgType::IsDomainIntroduced).payload, b"5\0");
    let in_tx = seen
        .iter()
        .find(|m| m.header.ty == MsgType::Write && m.payload.starts_with(b"/t\0"))
        .unwrap();
    assert_eq!(in_tx.header.tx_id, 8);
    let ids: Vec<u32> = seen.iter().map(|m| m.header.req_id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[test]
fn watch_events_before_a_reply_are_queued_not_lost() {
    let (mut xs, server) = xenstored(|m| match m.header.ty {
        // An event sneaks in ahead of the reply, and one arrives after it.
        MsgType::Read => vec![
            event("/local/domain/5/device/ibchan/0/state", "fe"),
            frame(m, MsgType::Read, b"3"),
            event("@releaseDomain", "rel"),
        ],
        MsgType::Watch => vec![
            frame(m, MsgType::Watch, b"OK\0"),
            event("@introduceDomain", "intro"),
        ],
        _ => vec![frame(m, MsgType::Error, b"EINVAL\0")],
    });
    xs.watch("@introduceDomain", "intro").unwrap();
    assert_eq!(
        xs.read(NO_TX, "/local/domain/5/device/ibchan/0/state")
            .unwrap()
            .as_deref(),
        Some(&b"3"[..])
    );
    // The trailing event arrives on its own; the supervisor polls for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 3 && Instant::now() < deadline {
        xs.poll_events().unwrap();
        while let Some(e) = xs.take_event() {
            got.push((e.path, e.token));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let want = [
        ("@introduceDomain", "intro"),
        ("/local/domain/5/device/ibchan/0/state", "fe"),
        ("@releaseDomain", "rel"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    assert_eq!(got, want);
    drop(xs);
    server.join().unwrap();
}

#[test]
fn a_reply_split_across_reads_is_reassembled() {
    let (mut xs, server) = xenstored(|m| {
        let whole = frame(m, MsgType::Read, b"a value in pieces");
        whole.chunks(5).map(|c| c.to_vec()).collect()
    });
    assert_eq!(
        xs.read(NO_TX, "/x").unwrap().as_deref(),
        Some(&b"a value in pieces"[..])
    );
    drop(xs);
    server.join().unwrap();
}

#[test]
fn a_reply_that_is_too_long_breaks_the_connection() {
    let (mut xs, server) = xenstored(|m| {
        let header = xen_proto::xs::Header {
            ty: MsgType::Read,
            req_id: m.header.req_id,
            tx_id: 0,
            len: (MAX_PAYLOAD + 1) as u32,
        };
        vec![header.emit().to_vec()]
    });
    let e = xs.read(NO_TX, "/x").unwrap_err();
    assert!(e.is_connection(), "{e}");
    assert!(e.to_string().contains("exceeds"), "{e}");
    drop(xs);
    server.join().unwrap();
}

#[test]
fn wrong_answers_break_the_connection() {
    // A reply of the wrong type.
    let (mut xs, server) = xenstored(|m| vec![frame(m, MsgType::Directory, b"")]);
    let e = xs.read(NO_TX, "/x").unwrap_err();
    assert!(e.is_connection(), "{e}");
    drop(xs);
    server.join().unwrap();
    // A reply to another request.
    let (mut xs, server) = xenstored(|m| {
        let mut f = frame(m, MsgType::Read, b"v");
        f[4..8].copy_from_slice(&(m.header.req_id + 10).to_le_bytes());
        vec![f]
    });
    let e = xs.read(NO_TX, "/x").unwrap_err();
    assert!(e.to_string().contains("outstanding"), "{e}");
    drop(xs);
    server.join().unwrap();
    // A malformed transaction id.
    let (mut xs, server) = xenstored(|m| vec![frame(m, MsgType::TransactionStart, b"zero\0")]);
    assert!(xs.transaction_start().unwrap_err().is_connection());
    drop(xs);
    server.join().unwrap();
}

#[test]
fn a_silent_or_vanished_xenstored_is_an_error_not_a_hang() {
    let (mut xs, server) = xenstored(|_| Vec::new());
    xs.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let e = xs.read(NO_TX, "/x").unwrap_err();
    assert!(e.to_string().contains("no answer"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(xs);
    server.join().unwrap();

    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut xs = XsClient::new(ours).unwrap();
    drop(theirs);
    let e = xs.read(NO_TX, "/x").unwrap_err();
    assert!(e.is_connection(), "{e}");
}

#[test]
fn an_unsolicited_reply_is_a_protocol_error() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut xs = XsClient::new(ours).unwrap();
    xs.poll_events().unwrap();
    assert!(xs.take_event().is_none());
    theirs
        .write_all(
            &Payload::new()
                .raw(b"OK\0")
                .message(MsgType::Write, 9, 0)
                .unwrap(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(xs.poll_events().unwrap_err().is_connection());
}
