//! Nothing the system benchmarks start may outlive `make bench`, however it
//! ends:
//!
//! - normal exit and panics (unwinding): every child sits in a
//!   [`qemu_tests::Guard`], the network namespaces in a
//!   [`crate::netns::VethPair`], and their `Drop`s kill and delete them;
//! - SIGINT, SIGTERM, SIGHUP: [`install`] starts a thread that deletes the
//!   registered namespaces and exits; every child was started with
//!   `PR_SET_PDEATHSIG` ([`die_with_parent`]), so the kernel sends it
//!   SIGTERM when we go;
//! - a run killed with SIGKILL: the next run deletes namespaces whose owner
//!   is gone ([`crate::netns::remove_stale`]).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Namespaces to delete if a signal ends the run.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn register_namespace(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.push(name.to_owned());
    }
}

pub fn forget_namespace(name: &str) {
    if let Ok(mut v) = NAMESPACES.lock() {
        v.retain(|n| n != name);
    }
}

/// `ip netns del NAME`, quietly (it may not exist).
pub fn delete_namespace(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Starts the signal thread (once).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ibguest-bench: cannot handle signals ({e}); an interrupted run may leave namespaces behind");
                return;
            }
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let names = NAMESPACES.lock().map(|v| v.clone()).unwrap_or_default();
                for name in &names {
                    delete_namespace(name);
                }
                eprintln!(
                    "ibguest-bench: signal {sig}: deleted {} namespace(s); children get SIGTERM as we exit",
                    names.len()
                );
                std::process::exit(128 + sig);
            }
        });
    });
}

/// Makes the kernel send the child SIGTERM when this process dies (the
/// flag survives `ip netns exec`'s exec).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls prctl(2) and getppid(2), which are async-signal-safe, reads a
    // `u32` it owns, and builds errors without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We died before the flag was set: do not start at all.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}
