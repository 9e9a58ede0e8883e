//! A running `ib-backend`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::guard::{Guard, HarnessError};
use crate::workspace::bin;

/// One guest seat to configure.
#[derive(Clone, Debug)]
pub struct Seat {
    pub name: String,
    pub socket: PathBuf,
    pub pkey: Option<u16>,
    /// The seat's `ip=` (port security, and the DHCP server's lease).
    pub ip: Option<String>,
    /// The seat's `max-rc-conns=` (connected mode is offered when > 0).
    pub max_rc_conns: Option<u32>,
}

impl Seat {
    pub fn new(dir: &Path, name: &str) -> Seat {
        Seat {
            name: name.to_owned(),
            socket: dir.join(format!("{name}.sock")),
            pkey: None,
            ip: None,
            max_rc_conns: None,
        }
    }

    /// Offers connected mode with up to `n` RC connections.
    pub fn with_max_rc_conns(mut self, n: u32) -> Seat {
        self.max_rc_conns = Some(n);
        self
    }

    pub fn with_ip(mut self, ip: &str) -> Seat {
        self.ip = Some(ip.to_owned());
        self
    }

    pub fn with_pkey(mut self, pkey: u16) -> Seat {
        self.pkey = Some(pkey);
        self
    }
}

pub struct Backend {
    pub guard: Guard,
    pub control: PathBuf,
    pub seats: Vec<Seat>,
}

impl Backend {
    /// Starts the back end with `seats` and waits until every socket listens.
    pub fn start(dir: &Path, seats: &[Seat], extra: &[&str]) -> crate::Result<Backend> {
        Backend::start_named(dir, "backend", seats, extra)
    }

    pub fn start_named(
        dir: &Path,
        name: &str,
        seats: &[Seat],
        extra: &[&str],
    ) -> crate::Result<Backend> {
        let control = dir.join("control.sock");
        let mut cmd = Command::new(bin("ib-backend")?);
        cmd.arg("run").arg("--control").arg(&control);
        for s in seats {
            let mut spec = format!("name={},socket={}", s.name, s.socket.display());
            if let Some(p) = s.pkey {
                spec.push_str(&format!(",pkey={p:#06x}"));
            }
            if let Some(ip) = &s.ip {
                spec.push_str(&format!(",ip={ip}"));
            }
            if let Some(n) = s.max_rc_conns {
                spec.push_str(&format!(",max-rc-conns={n}"));
            }
            cmd.arg("--guest").arg(spec);
        }
        cmd.args(extra);
        cmd.env(
            "RUST_LOG",
            std::env::var("IBGUEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        guard.wait_for("ib-backend: provider", Duration::from_secs(20))?;
        Ok(Backend {
            guard,
            control,
            seats: seats.to_vec(),
        })
    }

    /// `ib-backend stats` output.
    pub fn stats(&self) -> crate::Result<String> {
        let out = Command::new(bin("ib-backend")?)
            .arg("stats")
            .arg("--control")
            .arg(&self.control)
            .output()?;
        if !out.status.success() {
            return Err(HarnessError(format!(
                "ib-backend stats failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A counter from the stats line of `guest` (or `total`).
    pub fn counter(&self, guest: &str, key: &str) -> crate::Result<u64> {
        let stats = self.stats()?;
        let prefix = if guest == "total" {
            "total ".to_owned()
        } else {
            format!("guest {guest} ")
        };
        let line = stats
            .lines()
            .find(|l| l.starts_with(&prefix))
            .ok_or_else(|| HarnessError(format!("no stats line for {guest}:\n{stats}")))?;
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .ok_or_else(|| HarnessError(format!("no counter {key} for {guest}: {line}")))
    }

    /// The state word (`waiting`, `attached`, `connected`) of `guest`.
    pub fn state(&self, guest: &str) -> crate::Result<String> {
        let stats = self.stats()?;
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("guest {guest} ")))
            .ok_or_else(|| HarnessError(format!("no stats line for {guest}")))?;
        Ok(line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("state="))
            .unwrap_or("")
            .to_owned())
    }

    /// Waits until `check` holds on the stats, or fails with them.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Backend) -> bool,
    ) -> crate::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if check(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError(format!(
            "back end: {what} did not happen within {timeout:?}\n{}\n--- log ---\n{}",
            self.stats().unwrap_or_default(),
            self.guard.tail(20)
        )))
    }

    /// The worker process's pid, from `stats`.
    pub fn worker_pid(&self) -> crate::Result<u32> {
        let stats = self.stats()?;
        stats
            .lines()
            .next()
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("worker_pid="))
            })
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| HarnessError(format!("no worker_pid in {stats}")))
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.seats
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.socket.clone())
            .unwrap_or_default()
    }
}
