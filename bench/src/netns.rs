//! Two network namespaces joined by a veth pair: the Linux peer's network.
//! `ibb-a-PID` holds `ibb-va` (10.99.0.1/24), `ibb-b-PID` holds `ibb-vb`
//! (10.99.0.2/24). Dropping the [`VethPair`] deletes both namespaces, which
//! deletes the veth pair with them.

use std::path::Path;
use std::process::{Command, Output};

use crate::cleanup;

pub const ADDR_A: &str = "10.99.0.1";
pub const ADDR_B: &str = "10.99.0.2";
const PREFIX: u8 = 24;
pub const DEV_A: &str = "ibb-va";
pub const DEV_B: &str = "ibb-vb";
/// Namespace names start with this, then `a-PID` or `b-PID`.
const NS_PREFIX: &str = "ibb-";

/// Which end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Deletes `ibb-a-PID`/`ibb-b-PID` namespaces left by runs that were
/// killed outright (their PID is gone).
pub fn remove_stale() {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let pid = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.strip_prefix("a-").or_else(|| r.strip_prefix("b-")))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("           deleting namespace {name} left by an earlier run");
                cleanup::delete_namespace(name);
            }
        }
    }
}

impl VethPair {
    /// Creates the namespaces and the veth pair with `mtu`, both ends up.
    /// Fails with the reason (not root, no `ip`, no CAP_NET_ADMIN, ...).
    pub fn create(mtu: u32) -> Result<VethPair, String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (network namespaces need CAP_NET_ADMIN)".into());
        }
        remove_stale();
        let pid = std::process::id();
        let pair = VethPair {
            ns_a: format!("{NS_PREFIX}a-{pid}"),
            ns_b: format!("{NS_PREFIX}b-{pid}"),
        };
        // Registered first, so that a failure half-way is cleaned up too.
        for ns in [&pair.ns_a, &pair.ns_b] {
            cleanup::register_namespace(ns);
            run("ip", &["netns", "add", ns])?;
        }
        let mtu = mtu.to_string();
        run(
            "ip",
            &[
                "link", "add", DEV_A, "netns", &pair.ns_a, "mtu", &mtu, "type", "veth", "peer",
                "name", DEV_B, "netns", &pair.ns_b, "mtu", &mtu,
            ],
        )?;
        for (side, dev, addr) in [(Side::A, DEV_A, ADDR_A), (Side::B, DEV_B, ADDR_B)] {
            let ns = pair.ns(side);
            let cidr = format!("{addr}/{PREFIX}");
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    fn dev(side: Side) -> &'static str {
        match side {
            Side::A => DEV_A,
            Side::B => DEV_B,
        }
    }

    /// `ip netns exec NS program`: add the arguments and spawn.
    pub fn exec(&self, side: Side, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(side)]).arg(program);
        cmd
    }

    /// Sets both ends' MTU (`ip link set DEV mtu N`).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), String> {
        let mtu = mtu.to_string();
        for side in [Side::A, Side::B] {
            run(
                "ip",
                &[
                    "-n",
                    self.ns(side),
                    "link",
                    "set",
                    Self::dev(side),
                    "mtu",
                    &mtu,
                ],
            )?;
        }
        Ok(())
    }

    /// Turns TSO, GSO and GRO on or off at both ends (`ethtool -K`).
    pub fn set_offloads(&self, on: bool) -> Result<(), String> {
        let state = if on { "on" } else { "off" };
        for side in [Side::A, Side::B] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    self.ns(side),
                    "ethtool",
                    "-K",
                    Self::dev(side),
                    "tso",
                    state,
                    "gso",
                    state,
                    "gro",
                    state,
                ],
            )?;
        }
        Ok(())
    }

    /// What `ethtool -k` reports for TSO, GSO, GRO and TX checksumming at
    /// end A, e.g. "tso off, gso off, gro off, tx-csum on".
    pub fn offloads(&self) -> Result<String, String> {
        let out = run("ip", &["netns", "exec", &self.ns_a, "ethtool", "-k", DEV_A])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.split_whitespace().next().unwrap_or("?").to_owned())
                .unwrap_or_else(|| "?".into())
        };
        Ok(format!(
            "tso {}, gso {}, gro {}, tx-csum {}",
            get("tcp-segmentation-offload"),
            get("generic-segmentation-offload"),
            get("generic-receive-offload"),
            get("tx-checksumming")
        ))
    }

    /// Packets sent by both ends so far (each crosses the pair once).
    pub fn tx_packets(&self) -> Result<u64, String> {
        let mut total = 0;
        for side in [Side::A, Side::B] {
            let file = format!("/sys/class/net/{}/statistics/tx_packets", Self::dev(side));
            let out = run("ip", &["netns", "exec", self.ns(side), "cat", &file])?;
            total += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("{file}: {e}"))?;
        }
        Ok(total)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            cleanup::delete_namespace(ns);
            cleanup::forget_namespace(ns);
        }
    }
}

/// `ethtool` is on the PATH.
pub fn have_ethtool() -> bool {
    Command::new("ethtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// NET_RX softirqs run so far, all CPUs (`/proc/softirqs`).
pub fn net_rx_softirqs() -> Result<u64, String> {
    let text =
        std::fs::read_to_string("/proc/softirqs").map_err(|e| format!("/proc/softirqs: {e}"))?;
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
        .ok_or("/proc/softirqs has no NET_RX line")?;
    Ok(line
        .split_whitespace()
        .filter_map(|n| n.parse::<u64>().ok())
        .sum())
}
