//! Hosted guests: `ibguest-hosted` processes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::guard::{Guard, HarnessError};
use crate::workspace::bin;

pub struct Hosted;

impl Hosted {
    fn command(socket: &Path, ip: &str) -> crate::Result<Command> {
        Hosted::command_with(socket, "--ip", ip)
    }

    /// The command with `flag value` as its configuration (`--ip ADDR/P`
    /// or `--net "ip=... ip6=..."`).
    fn command_with(socket: &Path, flag: &str, value: &str) -> crate::Result<Command> {
        let mut cmd = Command::new(bin("ibguest-hosted")?);
        cmd.arg("--socket").arg(socket).arg(flag).arg(value);
        cmd.env(
            "RUST_LOG",
            std::env::var("IBGUEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        Ok(cmd)
    }

    /// Starts a guest that serves until killed; waits until its link is up.
    pub fn serve(dir: &Path, name: &str, socket: &Path, ip: &str) -> crate::Result<Guard> {
        Hosted::serve_with(dir, name, socket, ip, &[])
    }

    /// [`serve`](Hosted::serve) with global options (`--busy-poll-us N`)
    /// before the command.
    pub fn serve_with(
        dir: &Path,
        name: &str,
        socket: &Path,
        ip: &str,
        options: &[&str],
    ) -> crate::Result<Guard> {
        let mut cmd = Hosted::command(socket, ip)?;
        cmd.args(options).arg("serve");
        let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        guard.wait_for("joined broadcast group", Duration::from_secs(20))?;
        Ok(guard)
    }

    /// Starts a guest configured by `net` (the `--net` string, e.g.
    /// `"ip=10.77.0.2/24 ip6=fd77::2/64"`) that serves until killed; waits
    /// until its link is up.
    pub fn serve_net(dir: &Path, name: &str, socket: &Path, net: &str) -> crate::Result<Guard> {
        let mut cmd = Hosted::command_with(socket, "--net", net)?;
        cmd.arg("serve");
        let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        guard.wait_for("joined broadcast group", Duration::from_secs(20))?;
        Ok(guard)
    }

    /// Starts a client command configured by `net` and leaves it running
    /// (to be signalled or waited for through the guard); waits until its
    /// link is up.
    pub fn spawn_net(
        dir: &Path,
        name: &str,
        socket: &Path,
        net: &str,
        args: &[&str],
    ) -> crate::Result<Guard> {
        let mut cmd = Hosted::command_with(socket, "--net", net)?;
        cmd.args(args);
        let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        guard.wait_for("joined broadcast group", Duration::from_secs(20))?;
        Ok(guard)
    }

    /// Runs a client command to completion; returns its output, or an error
    /// with the output if it failed or timed out.
    pub fn run(
        dir: &Path,
        name: &str,
        socket: &Path,
        ip: &str,
        args: &[&str],
        timeout: Duration,
    ) -> crate::Result<String> {
        Hosted::run_with(dir, name, Hosted::command(socket, ip)?, args, timeout)
    }

    /// [`run`](Hosted::run) with a `--net` configuration.
    pub fn run_net(
        dir: &Path,
        name: &str,
        socket: &Path,
        net: &str,
        args: &[&str],
        timeout: Duration,
    ) -> crate::Result<String> {
        Hosted::run_with(
            dir,
            name,
            Hosted::command_with(socket, "--net", net)?,
            args,
            timeout,
        )
    }

    fn run_with(
        dir: &Path,
        name: &str,
        mut cmd: Command,
        args: &[&str],
        timeout: Duration,
    ) -> crate::Result<String> {
        cmd.args(args);
        let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        let status = guard.wait_exit(timeout)?;
        let out = guard.output();
        if !status.success() {
            return Err(HarnessError(format!(
                "{name} {args:?} failed ({status}):\n{}",
                guard.tail(30)
            )));
        }
        Ok(out)
    }
}
