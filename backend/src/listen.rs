//! Listening UNIX sockets that only the right people can reach: the
//! guests' ivshmem sockets and the control socket.
//!
//! - A path a *live* socket holds is refused (we try to connect first); a
//!   stale socket file (a back end that died) is replaced; any other kind
//!   of file is left alone.
//! - The socket is bound inside a fresh private directory (mode 0700) next
//!   to the final path, given its mode (0600, or 0660 and the configured
//!   group) there, and only then renamed into place: at no moment can
//!   anyone else connect to it with looser permissions, whatever the umask.
//! - Each accepted peer's credentials (`SO_PEERCRED`) are logged.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{chown, mkdtemp, Gid};

use crate::config::SocketGroup;

/// Mode of a socket only its owner may use.
const OWNER_ONLY: u32 = 0o600;
/// Mode of a socket its group may use too.
const OWNER_AND_GROUP: u32 = 0o660;

/// Binds a listening socket at `path` (see the module docs). `what` names
/// it in errors and logs, e.g. `guest g1` or `control`.
pub fn bind(path: &Path, group: Option<&SocketGroup>, what: &str) -> io::Result<UnixListener> {
    clear_stale(path, what)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: socket path {} has no file name", path.display()),
        )
    })?;
    let private = mkdtemp(&parent.join(".ib-backend-bind-XXXXXX")).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "{what}: cannot create a private directory in {}: {e}",
                parent.display()
            ),
        )
    })?;
    let staged = private.join(file_name);
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        let mode = match group {
            Some(g) => {
                chown(&staged, None, Some(Gid::from_raw(g.gid))).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!(
                            "{what}: cannot give socket {} to group {} (gid {}): {e} (is the back end's user a member of it?)",
                            path.display(),
                            g.name,
                            g.gid
                        ),
                    )
                })?;
                OWNER_AND_GROUP
            }
            None => OWNER_ONLY,
        };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(|e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{what}: cannot listen on {}: {e}", path.display()),
        )
    })
}

/// Removes a stale socket file at `path`; refuses a live one or a file
/// that is not a socket.
fn clear_stale(path: &Path, what: &str) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{what}: {} exists and is not a socket; not touching it",
                path.display()
            ),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{what}: socket {} is in use by a running process (another back end?)",
                path.display()
            ),
        ));
    }
    log::info!("{what}: replacing stale socket {}", path.display());
    std::fs::remove_file(path)
}

/// `pid=.. uid=.. gid=..` of the process at the other end of `stream`.
pub fn peer_credentials(stream: &UnixStream) -> String {
    match getsockopt(&stream.as_fd(), PeerCredentials) {
        Ok(c) => format!("pid={} uid={} gid={}", c.pid(), c.uid(), c.gid()),
        Err(e) => format!("credentials unknown ({e})"),
    }
}

#[cfg(test)]
mod tests;
