//! Per-guest resource limits: what one guest may hold in the back end, so
//! that a compromised guest cannot starve the others. Past a limit a
//! request is refused and counted (`ib-backend stats`: `refused.*`); the
//! guest stays connected.
//!
//! In a `[[guest]]` table: `max_mcast_groups`, `max_dests`, `max_qps`,
//! `max_pending_resolves`, `max_rc_conns`. On the command line, in
//! `--guest`: `max-mcast-groups=`, `max-dests=`, `max-qps=`,
//! `max-pending-resolves=`, `max-rc-conns=`.

use super::ConfigError;

/// One guest's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLimits {
    /// Multicast groups attached at once (each is a fabric group, and on
    /// RoCE a socket joined to the IPv6 group).
    pub max_mcast_groups: usize,
    /// Destination (address) handles held at once.
    pub max_dests: usize,
    /// QPs open at once. A session has one; a reconnecting guest briefly
    /// needs the next before the last is gone in some paths.
    pub max_qps: usize,
    /// Address resolutions in progress at once (the per-guest queue of the
    /// asynchronous resolver).
    pub max_pending_resolves: usize,
    /// Connected mode (RFC 4755, `docs/connected-mode.md`): RC connections
    /// held at once. 0 (the default) does not offer connected mode to the
    /// guest; setting it does, where the provider has RC (the sim fabric).
    pub max_rc_conns: usize,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            max_mcast_groups: 64,
            max_dests: 1024,
            max_qps: 2,
            max_pending_resolves: 16,
            max_rc_conns: 0,
        }
    }
}

/// The keys, their flag spellings and their ranges.
const KEYS: [(&str, &str, usize); 5] = [
    ("max_mcast_groups", "max-mcast-groups", 4096),
    ("max_dests", "max-dests", 65536),
    ("max_qps", "max-qps", 64),
    ("max_pending_resolves", "max-pending-resolves", 1024),
    ("max_rc_conns", "max-rc-conns", 1024),
];

/// The flag keys, for "known keys" messages.
pub const FLAG_KEYS: &str =
    "max-mcast-groups, max-dests, max-qps, max-pending-resolves, max-rc-conns";

impl GuestLimits {
    fn slot(&mut self, index: usize) -> Option<&mut usize> {
        match index {
            0 => Some(&mut self.max_mcast_groups),
            1 => Some(&mut self.max_dests),
            2 => Some(&mut self.max_qps),
            3 => Some(&mut self.max_pending_resolves),
            4 => Some(&mut self.max_rc_conns),
            _ => None,
        }
    }

    /// Sets the limit named `key` (file or flag spelling) from `value`.
    /// `Ok(false)`: `key` is not a limit. `field` names it in errors.
    pub fn set(&mut self, key: &str, value: Option<u64>, field: &str) -> Result<bool, ConfigError> {
        let Some(index) = KEYS
            .iter()
            .position(|(file, flag, _)| *file == key || *flag == key)
        else {
            return Ok(false);
        };
        let max = KEYS[index].2;
        let n = value
            .and_then(|v| usize::try_from(v).ok())
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ConfigError::new(field, format!("must be a whole number in 1..={max}"))
            })?;
        if let Some(slot) = self.slot(index) {
            *slot = n;
        }
        Ok(true)
    }

    /// Reads the limits of a `[[guest]]` table (absent keys keep their
    /// defaults).
    pub(super) fn from_file(
        values: &[(&str, Option<&toml::Value>)],
        field: impl Fn(&str) -> String,
    ) -> Result<GuestLimits, ConfigError> {
        let mut limits = GuestLimits::default();
        for (key, value) in values {
            if let Some(v) = value {
                let n = v.as_integer().and_then(|n| u64::try_from(n).ok());
                limits.set(key, Some(n.unwrap_or(0)), &field(key))?;
            }
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_set_the_same_limit() {
        let mut l = GuestLimits::default();
        assert_eq!(l.set("max-dests", Some(8), "f"), Ok(true));
        assert_eq!(l.set("max_qps", Some(1), "f"), Ok(true));
        assert_eq!((l.max_dests, l.max_qps), (8, 1));
        assert_eq!(l.set("window", Some(1), "f"), Ok(false));
    }

    #[test]
    fn connected_mode_is_off_until_a_seat_allows_connections() {
        let mut l = GuestLimits::default();
        assert_eq!(l.max_rc_conns, 0);
        assert_eq!(l.set("max-rc-conns", Some(16), "f"), Ok(true));
        assert_eq!(l.max_rc_conns, 16);
        assert!(l.set("max_rc_conns", Some(0), "f").is_err());
        assert!(l.set("max_rc_conns", Some(1025), "f").is_err());
        let config = crate::limits::back_config(1, &l);
        assert!(config.connected_mode);
        assert_eq!(config.max_rc_conns, 16);
        assert!(!crate::limits::back_config(1, &GuestLimits::default()).connected_mode);
    }

    #[test]
    fn out_of_range_limits_are_refused_naming_the_field() {
        let mut l = GuestLimits::default();
        let e = l.set("max-qps", Some(0), "--guest #1 max-qps");
        assert_eq!(e.map_err(|e| e.field), Err("--guest #1 max-qps".to_owned()));
        assert!(l.set("max-mcast-groups", Some(5000), "f").is_err());
        assert!(l.set("max-mcast-groups", None, "f").is_err());
    }
}

#[cfg(test)]
mod config_tests {
    use super::super::{Config, Overrides};
    use super::GuestLimits;

    #[test]
    fn limits_come_from_the_guest_table_and_the_guest_flag() {
        let c = Config::from_toml(
            r#"
            [[guest]]
            name = "g1"
            socket = "/tmp/g1.sock"
            max_mcast_groups = 8
            max_pending_resolves = 4

            [[guest]]
            name = "g2"
            socket = "/tmp/g2.sock"
            "#,
        )
        .map_err(|e| e.to_string());
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let l = c.guests[0].limits;
        assert_eq!((l.max_mcast_groups, l.max_pending_resolves), (8, 4));
        assert_eq!(l.max_dests, GuestLimits::default().max_dests);
        assert_eq!(c.guests[1].limits, GuestLimits::default());

        let o = Overrides {
            guests: vec!["name=g3,socket=/tmp/g3.sock,max-dests=32,max-qps=1".into()],
            ..Overrides::default()
        };
        let c = Config::load(None, &o).map_err(|e| e.to_string());
        let l = match c {
            Ok(c) => c.guests[0].limits,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((l.max_dests, l.max_qps), (32, 1));
    }

    #[test]
    fn bad_limits_name_their_field() {
        let e = Config::from_toml("[[guest]]\nname = \"g1\"\nsocket = \"/s\"\nmax_qps = 0\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("guest[0].max_qps: must be"), "{e}");
        let o = Overrides {
            guests: vec!["name=g1,socket=/s,max-dests=lots".into()],
            ..Overrides::default()
        };
        let e = Config::load(None, &o)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("max-dests: must be"), "{e}");
    }
}
