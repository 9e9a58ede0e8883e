//! QEMU guests: the PVH image booted with `-kernel` under TCG.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::guard::{Guard, HarnessError};

/// isa-debug-exit: the guest writes v, QEMU exits with (v << 1) | 1.
pub const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the image once per test process and returns its path.
pub fn image() -> crate::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "guest",
                    "--target",
                    "x86_64-unknown-none",
                    "--release",
                ])
                .current_dir(workspace())
                .status()
                .map_err(|e| format!("cannot run cargo build for the image: {e}"))?;
            if !status.success() {
                return Err(format!("building the guest image failed: {status}"));
            }
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| workspace().join("target"));
            Ok(target
                .join("x86_64-unknown-none")
                .join("release")
                .join("guest"))
        })
        .clone()
        .map_err(HarnessError)
}

/// The QEMU command for one guest. `socket` attaches an ivshmem-doorbell
/// device served by ib-backend.
pub fn command(socket: Option<&Path>, cmdline: &str) -> crate::Result<Command> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel", "tcg", "-machine", "q35", "-m", "128M", "-smp", "1",
    ])
    .args([
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .args(["-device", DEBUG_EXIT])
    .arg("-kernel")
    .arg(image()?)
    .arg("-append")
    .arg(cmdline);
    if let Some(s) = socket {
        cmd.arg("-chardev")
            .arg(format!("socket,path={},id=ib", s.display()))
            .args(["-device", "ivshmem-doorbell,chardev=ib,vectors=1"]);
    }
    Ok(cmd)
}

/// Boots a guest whose console goes to `DIR/NAME.log`.
pub fn boot(dir: &Path, name: &str, socket: Option<&Path>, cmdline: &str) -> crate::Result<Guard> {
    let cmd = command(socket, cmdline)?;
    Guard::spawn(name, cmd, &dir.join(format!("{name}.log")))
}

/// The guest's own exit code from QEMU's exit status: (v << 1) | 1 → v.
pub fn guest_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code().filter(|c| c & 1 == 1).map(|c| c >> 1)
}
