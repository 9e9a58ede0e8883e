//! Where the binaries are, and a scratch directory per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::HarnessError;

fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
}

/// Builds the workspace's binaries once per test process (a no-op when
/// they are fresh) and returns the path of `name`.
pub fn bin(name: &str) -> crate::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ib-backend",
                "-p",
                "ibguest-hosted",
            ])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {status}"))
        }
    });
    built.clone().map_err(HarnessError)?;
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        return Err(HarnessError(format!("{} was not built", path.display())));
    }
    Ok(path)
}

/// A fresh directory for one test's sockets and logs.
pub fn scratch_dir(test: &str) -> crate::Result<PathBuf> {
    let dir = target_dir()
        .join("e2e")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
