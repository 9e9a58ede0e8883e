//! A Xen seat on a machine without xenstore fails at start, clearly, with
//! the fatal exit code (78: restarting would not help), and does not hang.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    let control = std::env::temp_dir().join(format!("xen-startup-{}.ctl", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ib-backend"))
        .arg("run")
        .arg("--control")
        .arg(&control)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ib-backend");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ib-backend hung instead of failing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_missing_xenstore_is_fatal() {
    let out = run(&[
        "--xenstore",
        "/nonexistent/xenstored.sock",
        "--guest",
        "name=g1,xen-domain=ibguest-g1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("no xenstore at /nonexistent/xenstored.sock"),
        "{err}"
    );
    if Path::new("/run/xenstored/socket").exists() || Path::new("/dev/xen/xenbus").exists() {
        return; // this machine has a xenstore: the default case cannot fail
    }
    let out = run(&["--guest", "name=g1,xen-domain=ibguest-g1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(
            "no xenstore: /run/xenstored/socket and /dev/xen/xenbus are absent; is this dom0 with xenstored running?"
        ),
        "{err}"
    );
}

#[test]
fn a_seat_with_both_socket_and_domain_is_a_configuration_error() {
    let out = run(&["--guest", "name=g1,xen-domain=d,socket=/tmp/g1.sock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not both"), "{err}");
}
