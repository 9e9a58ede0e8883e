//! A cross-check of the Linux peer's UDP RR figure with `sockperf
//! ping-pong` (Debian's `sockperf`, installed by `make deps`) over the same
//! veth pair: 64-byte datagrams, one at a time. sockperf reports half the
//! round trip; [`ping_pong`] doubles it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qemu_tests::Guard;

use crate::cleanup::die_with_parent;
use crate::netns::{Side, VethPair, ADDR_B};
use crate::system::RR_SIZE;

const PORT: u16 = 11111;

/// Round trips in µs (twice what sockperf prints).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundTrips {
    pub median: f64,
    pub p99: f64,
}

/// Whether `sockperf` can be run.
pub fn installed() -> bool {
    Command::new("sockperf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `sockperf server` in namespace B and `sockperf ping-pong` for
/// `seconds` from namespace A.
pub fn ping_pong(pair: &VethPair, dir: &Path, seconds: u32) -> Result<RoundTrips, String> {
    let sockperf = Path::new("sockperf");
    let mut cmd = pair.exec(Side::B, sockperf);
    cmd.args(["server", "-i", ADDR_B, "-p", &PORT.to_string()]);
    die_with_parent(&mut cmd);
    let mut server = Guard::spawn("sockperf-server", cmd, &dir.join("sockperf-server.log"))
        .map_err(|e| e.to_string())?;
    server
        .wait_for("using recvfrom", Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut cmd = pair.exec(Side::A, sockperf);
    cmd.args([
        "ping-pong",
        "-i",
        ADDR_B,
        "-p",
        &PORT.to_string(),
        "-m",
        &RR_SIZE.to_string(),
        "-t",
        &seconds.to_string(),
    ]);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run sockperf: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "sockperf ping-pong failed ({}):\n{text}",
            out.status
        ));
    }
    parse(&text).ok_or_else(|| format!("no percentiles in sockperf's output:\n{text}"))
}

/// Reads `---> percentile 50.000 =    2.015` (and 99.000): half round trips.
fn parse(text: &str) -> Option<RoundTrips> {
    let percentile = |p: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = l.split("percentile ").nth(1)?;
            let (which, value) = rest.split_once('=')?;
            (which.trim() == p)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
    };
    Some(RoundTrips {
        median: 2.0 * percentile("50.000")?,
        p99: 2.0 * percentile("99.000")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_percentiles_and_doubles_them() {
        let out = "sockperf: Summary: Latency is 2.379 usec\n\
sockperf: ---> percentile 99.990 =  940.200\n\
sockperf: ---> percentile 99.000 =    3.660\n\
sockperf: ---> percentile 50.000 =    2.015\n";
        assert_eq!(
            parse(out),
            Some(RoundTrips {
                median: 4.03,
                p99: 7.32
            })
        );
        assert_eq!(parse("sockperf: Test ended\n"), None);
    }
}
