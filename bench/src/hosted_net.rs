//! Our side of the system benchmarks: a release `ib-backend` (sim fabric)
//! with two seats, a release `ibguest-hosted` serving on g2 (10.77.0.2) and
//! client commands run on g1 (10.77.0.1), all in a scratch directory under
//! `target/`. Every process sits in a [`Guard`] and dies with the benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ibguest_testkit::BoxError;
use qemu_tests::Guard;

use crate::cleanup::die_with_parent;

pub const SERVER_IP: &str = "10.77.0.2";
const SERVER_CIDR: &str = "10.77.0.2/24";
const CLIENT_CIDR: &str = "10.77.0.1/24";

fn workspace_root() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench).to_owned()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The release binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub backend: PathBuf,
    pub hosted: PathBuf,
}

/// `cargo build --release -p ib-backend -p ibguest-hosted` (a no-op when
/// they are fresh); or, if `IBGUEST_BENCH_BINS` names a directory, the two
/// binaries found there, unbuilt (to measure older builds against newer).
pub fn build_release() -> Result<Binaries, BoxError> {
    if let Some(dir) = std::env::var_os("IBGUEST_BENCH_BINS") {
        let dir = PathBuf::from(dir);
        let bins = Binaries {
            backend: dir.join("ib-backend"),
            hosted: dir.join("ibguest-hosted"),
        };
        for b in [&bins.backend, &bins.hosted] {
            if !b.exists() {
                return Err(format!("IBGUEST_BENCH_BINS: {} is missing", b.display()).into());
            }
        }
        return Ok(bins);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "ib-backend",
            "-p",
            "ibguest-hosted",
        ])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {cargo} build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build --release of ib-backend and ibguest-hosted failed: {status}"
        )
        .into());
    }
    let release = target_dir().join("release");
    let bins = Binaries {
        backend: release.join("ib-backend"),
        hosted: release.join("ibguest-hosted"),
    };
    for b in [&bins.backend, &bins.hosted] {
        if !b.exists() {
            return Err(format!("{} was not built", b.display()).into());
        }
    }
    Ok(bins)
}

/// A fresh scratch directory for this run's sockets and logs.
pub fn scratch_dir() -> Result<PathBuf, BoxError> {
    let dir = target_dir()
        .join("bench-system")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The counters of one `ib-backend stats` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub interrupts: u64,
    pub doorbells: u64,
}

impl Counters {
    fn parse(line: &str) -> Counters {
        let get = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        Counters {
            tx_packets: get("tx_packets"),
            rx_packets: get("rx_packets"),
            interrupts: get("interrupts"),
            doorbells: get("doorbells"),
        }
    }

    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            interrupts: self.interrupts.saturating_sub(earlier.interrupts),
            doorbells: self.doorbells.saturating_sub(earlier.doorbells),
        }
    }

    pub fn add(&mut self, other: &Counters) {
        self.tx_packets += other.tx_packets;
        self.rx_packets += other.rx_packets;
        self.interrupts += other.interrupts;
        self.doorbells += other.doorbells;
    }
}

/// Counters per scope: "g1", "g2" and "total".
pub type Stats = BTreeMap<String, Counters>;

/// Parses `ib-backend stats` output.
pub fn parse_stats(text: &str) -> Stats {
    let mut out = Stats::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("guest ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            out.insert(name.to_owned(), Counters::parse(line));
        } else if line.starts_with("total ") {
            out.insert("total".into(), Counters::parse(line));
        }
    }
    out
}

/// `self - earlier` for every scope.
pub fn stats_since(now: &Stats, earlier: &Stats) -> Stats {
    now.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.since(&earlier.get(k).copied().unwrap_or_default()),
            )
        })
        .collect()
}

pub struct HostedNet {
    dir: PathBuf,
    bins: Binaries,
    /// Options every guest of this net gets (`--busy-poll-us N`).
    guest_options: Vec<String>,
    control: PathBuf,
    clients: usize,
    /// Serving guests started so far (for their logs' names).
    servers: usize,
    /// Connected mode: seats offer it, guests ask for it (`cm=on`).
    connected: bool,
    /// g2, serving (echo, discard, ...).
    server: Guard,
    backend: Guard,
}

fn log_env(cmd: &mut Command) {
    cmd.env(
        "RUST_LOG",
        std::env::var("IBGUEST_LOG").unwrap_or_else(|_| "info".into()),
    );
}

/// How a guest at `cidr` is configured: `--ip`, or `--net` asking for
/// connected mode too.
fn address_args(cidr: &str, connected: bool) -> [String; 2] {
    if connected {
        ["--net".into(), format!("ip={cidr} cm=on")]
    } else {
        ["--ip".into(), cidr.into()]
    }
}

/// Starts the serving guest on g2 (`ARGS serve`), and waits until its
/// link is up.
fn start_server(
    bins: &Binaries,
    dir: &Path,
    name: &str,
    connected: bool,
    args: &[&str],
) -> Result<Guard, BoxError> {
    let mut cmd = Command::new(&bins.hosted);
    cmd.arg("--socket")
        .arg(dir.join("g2.sock"))
        .args(address_args(SERVER_CIDR, connected))
        .args(args)
        .arg("serve");
    log_env(&mut cmd);
    die_with_parent(&mut cmd);
    let mut server = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
    server.wait_for("joined broadcast group", Duration::from_secs(20))?;
    Ok(server)
}

impl HostedNet {
    /// Starts the back end and the serving guest, and waits until the
    /// guest's link is up.
    pub fn start(bins: &Binaries, dir: &Path) -> Result<HostedNet, BoxError> {
        HostedNet::start_with(bins, dir, &[], &[])
    }

    /// [`start`](HostedNet::start) with more `ib-backend run` options and
    /// options for every guest (before the guest's command).
    pub fn start_with(
        bins: &Binaries,
        dir: &Path,
        backend_options: &[&str],
        guest_options: &[&str],
    ) -> Result<HostedNet, BoxError> {
        HostedNet::start_mode(bins, dir, backend_options, guest_options, false)
    }

    /// [`start`](HostedNet::start) in connected mode: the seats offer it
    /// (`max-rc-conns=`) and both guests ask for it (`cm=on`, RC with IP
    /// MTU 65520).
    pub fn start_connected(bins: &Binaries, dir: &Path) -> Result<HostedNet, BoxError> {
        HostedNet::start_mode(bins, dir, &[], &[], true)
    }

    fn start_mode(
        bins: &Binaries,
        dir: &Path,
        backend_options: &[&str],
        guest_options: &[&str],
        connected: bool,
    ) -> Result<HostedNet, BoxError> {
        std::fs::create_dir_all(dir)?;
        let control = dir.join("control.sock");
        let mut cmd = Command::new(&bins.backend);
        cmd.arg("run").arg("--control").arg(&control);
        cmd.args(backend_options);
        for g in ["g1", "g2"] {
            cmd.arg("--guest").arg(format!(
                "name={g},socket={}{}",
                dir.join(format!("{g}.sock")).display(),
                if connected { ",max-rc-conns=4" } else { "" }
            ));
        }
        log_env(&mut cmd);
        die_with_parent(&mut cmd);
        let mut backend = Guard::spawn("ib-backend", cmd, &dir.join("backend.log"))?;
        backend.wait_for("ib-backend: provider", Duration::from_secs(20))?;
        let server = start_server(bins, dir, "g2", connected, guest_options)?;
        Ok(HostedNet {
            dir: dir.to_owned(),
            bins: bins.clone(),
            guest_options: guest_options.iter().map(|o| o.to_string()).collect(),
            control,
            clients: 0,
            servers: 1,
            connected,
            server,
            backend,
        })
    }

    /// Stops the serving guest and starts it again with `args` before
    /// `serve` (`--raw-discard`, or none); its discard reports count from
    /// zero again.
    pub fn restart_server(&mut self, args: &[&str]) -> Result<(), BoxError> {
        if self.server.signal(15).is_ok() {
            self.server.wait_exit(Duration::from_secs(10))?;
        }
        self.servers += 1;
        let name = format!("g2-{}", self.servers);
        let mut all: Vec<&str> = self.guest_options.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        self.server = start_server(&self.bins, &self.dir, &name, self.connected, &all)?;
        Ok(())
    }

    /// Runs `ibguest-hosted ... ARGS` on g1 to completion; its output.
    pub fn client(&mut self, args: &[&str], timeout: Duration) -> Result<String, BoxError> {
        self.clients += 1;
        let name = format!("g1-{}", self.clients);
        let mut cmd = Command::new(&self.bins.hosted);
        cmd.arg("--socket")
            .arg(self.dir.join("g1.sock"))
            .args(address_args(CLIENT_CIDR, self.connected))
            .args(&self.guest_options)
            .args(args);
        log_env(&mut cmd);
        die_with_parent(&mut cmd);
        let mut guard = Guard::spawn(&name, cmd, &self.dir.join(format!("{name}.log")))?;
        let status = guard.wait_exit(timeout)?;
        if !status.success() {
            return Err(format!("{name} {args:?} failed ({status}):\n{}", guard.tail(30)).into());
        }
        Ok(guard.output())
    }

    /// Whether the guests ask for connected mode.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// `ib-backend stats`, parsed.
    pub fn stats(&self) -> Result<Stats, BoxError> {
        let out = Command::new(&self.bins.backend)
            .arg("stats")
            .arg("--control")
            .arg(&self.control)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "ib-backend stats failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let stats = parse_stats(&String::from_utf8_lossy(&out.stdout));
        if !stats.contains_key("total") {
            return Err("ib-backend stats printed no total line".into());
        }
        Ok(stats)
    }

    /// Waits until the serving guest has printed `n` discard reports; the
    /// last one.
    pub fn discard_report(&self, n: usize, timeout: Duration) -> Result<String, BoxError> {
        wait_reports(&self.server, n, timeout)
    }
}

/// Waits until `guard` has printed `n` lines starting "discard from"; the
/// last of them.
pub fn wait_reports(guard: &Guard, n: usize, timeout: Duration) -> Result<String, BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = guard.output();
        let reports: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("discard from"))
            .collect();
        if reports.len() >= n {
            return Ok(reports[n - 1].to_owned());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: no discard report #{n} within {timeout:?}:\n{}",
                guard.name,
                guard.tail(10)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for HostedNet {
    fn drop(&mut self) {
        // A clean stop for the back end (its worker follows); the guards
        // then kill whatever is left.
        if self.backend.signal(15).is_ok() {
            let _ = self.backend.wait_exit(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats_lines() {
        let text = "backend provider=sim epoch=1 guests=2 worker_pid=9\n\
guest g1 state=connected qpn=0x4a pkey=0xffff tx_packets=10 tx_bytes=1 rx_packets=4 rx_bytes=2 interrupts=3 doorbells=5 violations=0\n\
guest g2 state=waiting tx_packets=4 rx_packets=10 interrupts=7 doorbells=1\n\
total tx_packets=14 rx_packets=14 interrupts=10 doorbells=6\n";
        let s = parse_stats(text);
        assert_eq!(
            s["g1"],
            Counters {
                tx_packets: 10,
                rx_packets: 4,
                interrupts: 3,
                doorbells: 5
            }
        );
        assert_eq!(s["total"].interrupts, 10);
        let mut earlier = s.clone();
        earlier.get_mut("total").unwrap().interrupts = 4;
        assert_eq!(stats_since(&s, &earlier)["total"].interrupts, 6);
    }
}
