//! Reading captures back with tshark, as the tests that check Wireshark's
//! decoding do.

use std::path::Path;
use std::process::Command;

use crate::BoxError;

/// Runs `tshark -r CAPTURE ARGS...` and returns what it printed. An error
/// says how to install tshark if it is missing, or what tshark said if it
/// failed.
pub fn read(capture: &Path, args: &[&str]) -> Result<String, BoxError> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture)
        .args(args)
        .output()
        .map_err(|e| format!("tshark is not installed ({e}): run `make deps`"))?;
    if !out.status.success() {
        return Err(format!(
            "tshark -r {} {}: {}",
            capture.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `fields` of every packet that matches `filter`, one line a packet,
/// tab-separated (`tshark -T fields -e F... -Y FILTER`).
pub fn fields(capture: &Path, filter: &str, fields: &[&str]) -> Result<String, BoxError> {
    let mut args = vec!["-Y", filter, "-T", "fields"];
    for f in fields {
        args.extend(["-e", f]);
    }
    read(capture, &args)
}
