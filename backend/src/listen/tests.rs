//! Socket modes, groups, live and stale sockets.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("listen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn owner_only_by_default_and_group_when_asked() {
    let dir = scratch("modes");
    let path = dir.join("a.sock");
    let listener = bind(&path, None, "test").unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Still reachable after the rename into place.
    let client = UnixStream::connect(&path).unwrap();
    let (server, _) = listener.accept().unwrap();
    let creds = peer_credentials(&server);
    assert!(
        creds.contains(&format!("pid={}", std::process::id())),
        "{creds}"
    );
    drop((client, server, listener));

    let own_gid = nix::unistd::getegid().as_raw();
    let group = SocketGroup {
        name: own_gid.to_string(),
        gid: own_gid,
    };
    let path = dir.join("b.sock");
    let _listener = bind(&path, Some(&group), "test").unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), own_gid);
    // No private directory is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".ib-backend-bind")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let dir = scratch("live");
    let path = dir.join("a.sock");
    let live = bind(&path, None, "test").unwrap();
    let err = bind(&path, None, "test").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    // The socket of a back end that died: the file stays, nobody listens.
    drop(live);
    assert!(path.exists());
    let _again = bind(&path, None, "test").unwrap();
    UnixStream::connect(&path).unwrap();
    // Something that is not a socket is left alone.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(bind(&file, None, "test").is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    std::fs::remove_dir_all(&dir).unwrap();
}
