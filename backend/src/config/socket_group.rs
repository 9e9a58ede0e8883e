//! `socket_group` (`--socket-group`): the group that may connect to the
//! back end's sockets (the guests' ivshmem sockets and the control socket).
//! Without it they are owner-only (0600); with it, 0660 and owned by that
//! group, so that a QEMU running as another user in the group can attach.

use super::ConfigError;

/// A group, resolved when the configuration is loaded so that a typo fails
/// at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

/// Resolves a group name (or a numeric gid) from the system's group
/// database.
pub fn resolve(name: &str, field: &str) -> Result<SocketGroup, ConfigError> {
    let fix = "name a group from /etc/group (or a numeric gid), or leave it unset for owner-only (0600) sockets";
    if name.is_empty() {
        return Err(ConfigError::new(field, format!("empty group name: {fix}")));
    }
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(SocketGroup {
            name: name.to_owned(),
            gid,
        });
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(SocketGroup {
            name: name.to_owned(),
            gid: group.gid.as_raw(),
        }),
        Ok(None) => Err(ConfigError::new(
            field,
            format!("no such group {name:?}: {fix}"),
        )),
        Err(e) => Err(ConfigError::new(
            field,
            format!("cannot look up group {name:?} ({e}): {fix}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn names_and_numbers_resolve_and_typos_say_what_to_fix() {
        assert_eq!(resolve("root", "backend.socket_group").unwrap().gid, 0);
        assert_eq!(resolve("4242", "backend.socket_group").unwrap().gid, 4242);
        let err = resolve("no-such-group-x9", "backend.socket_group").unwrap_err();
        assert_eq!(err.field, "backend.socket_group");
        assert!(err.message.contains("no such group"), "{}", err.message);
        assert!(err.message.contains("/etc/group"), "{}", err.message);
        assert!(resolve("", "backend.socket_group").is_err());
    }
}
