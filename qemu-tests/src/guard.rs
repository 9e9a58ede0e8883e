//! Child processes that cannot outlive the test.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A harness failure, with context.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError(e.to_string())
    }
}

/// A running child whose stdout and stderr go to a log file. Killed (and
/// reaped) on drop.
pub struct Guard {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Guard {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> crate::Result<Guard> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|e| {
            HarnessError(format!(
                "cannot start {name} ({:?}): {e}",
                cmd.get_program()
            ))
        })?;
        Ok(Guard {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn fail(&self, what: &str) -> HarnessError {
        HarnessError(format!(
            "{}: {what}\n--- last lines of {} ---\n{}",
            self.name,
            self.name,
            self.tail(25)
        ))
    }

    /// Waits until a line of output contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> crate::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Only whole lines while the child runs: a line it is still
            // writing (a console writes in pieces) would come back cut short.
            if let Some(line) = self.find_line(needle, false) {
                return Ok(line);
            }
            if let Some(status) = self.try_status() {
                if let Some(line) = self.find_line(needle, true) {
                    return Ok(line);
                }
                return Err(self.fail(&format!("exited ({status}) before printing {needle:?}")));
            }
            if Instant::now() >= deadline {
                return Err(self.fail(&format!("did not print {needle:?} within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first line of the log containing `needle`: among the lines
    /// ended by a newline, or, with `partial`, the last one too.
    fn find_line(&self, needle: &str, partial: bool) -> Option<String> {
        let bytes = std::fs::read(&self.log).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let whole = match (partial, text.rfind('\n')) {
            (true, _) => &text[..],
            (false, Some(end)) => &text[..end],
            (false, None) => "",
        };
        whole
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned)
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> crate::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(self.fail(&format!("still running after {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (for example SIGTERM = 15, SIGKILL = 9).
    pub fn signal(&self, signal: i32) -> crate::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            return Err(HarnessError(format!(
                "kill -{signal} {} failed",
                self.pid()
            )));
        }
        Ok(())
    }

    /// CPU time (user + system) the process has used, in clock ticks.
    pub fn cpu_ticks(&self) -> crate::Result<u64> {
        cpu_ticks_of(self.pid())
    }
}

/// CPU time (user + system) process `pid` has used, in clock ticks.
pub fn cpu_ticks_of(pid: u32) -> crate::Result<u64> {
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
        Ok(get(11) + get(12))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_sees_whole_lines_only_while_the_child_runs() {
        let log = std::env::temp_dir().join(format!("guard-test-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        // A line cut short, finished 0.4 s later, as a console writes it.
        cmd.args([
            "-c",
            "printf 'one\\nnetwork up: 10.77'; sleep 0.4; printf '.0.2/24 mtu 2044\\n'; sleep 0.4",
        ]);
        let mut guard = Guard::spawn("printf", cmd, &log).unwrap();
        let line = guard
            .wait_for("network up", Duration::from_secs(5))
            .unwrap();
        assert_eq!(line, "network up: 10.77.0.2/24 mtu 2044");
        let _ = std::fs::remove_file(&log);
    }
}
