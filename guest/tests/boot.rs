//! The bootable image under QEMU (TCG): the documented failure paths, the
//! PVH note, and the ivshmem transport against a real `ib-backend`.
//!
//! The harness (`qemu_tests::qemu`) builds the image once (`cargo build -p
//! guest --target x86_64-unknown-none --release`) and boots it with
//!
//! ```text
//! qemu-system-x86_64 -accel tcg -machine q35 -m 128M -smp 1 -display none
//!   -serial stdio -monitor none -no-reboot -nic none
//!   -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel IMAGE -append CMDLINE
//!   [-chardev socket,path=SOCK,id=ib -device ivshmem-doorbell,chardev=ib,vectors=1]
//! ```
//!
//! Every QEMU runs in a [`Guard`] (killed on drop) with a timeout.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use guest::exit::ExitCode;
use qemu_tests::backend::Seat;
use qemu_tests::{qemu, scratch_dir, Backend, Guard, HarnessError, Result};

/// Generous: a guest run takes well under a second.
const QEMU_TIMEOUT: Duration = Duration::from_secs(30);

/// Boots the image until it exits; returns the exit code it chose and its
/// console output.
fn boot(
    dir: &Path,
    name: &str,
    cmdline: &str,
    socket: Option<&Path>,
) -> Result<(ExitCode, String)> {
    let cmd = qemu::command(socket, cmdline)?;
    let mut guard = Guard::spawn(name, cmd, &dir.join(format!("{name}.log"))).map_err(|e| {
        HarnessError(format!(
            "{e}\n(is qemu-system-x86_64 installed? apt-get install qemu-system-x86)"
        ))
    })?;
    let status = guard.wait_exit(QEMU_TIMEOUT)?;
    let out = guard.output();
    let code = status
        .code()
        .and_then(ExitCode::from_qemu_status)
        .ok_or_else(|| {
            HarnessError(format!(
                "{name}: QEMU exited with {status}, not one of the guest's codes\n{out}"
            ))
        })?;
    Ok((code, out))
}

fn expect(out: &str, needle: &str) {
    assert!(
        out.contains(needle),
        "expected {needle:?} in the console output:\n{out}"
    );
}

#[test]
fn bad_command_line_says_what_is_wrong() -> Result<()> {
    let dir = scratch_dir("guest-cmdline")?;
    let (code, out) = boot(&dir, "unknown", "ip=10.77.0.2/24 colour=blue", None)?;
    assert_eq!(code, ExitCode::BadCommandLine, "{out}");
    expect(
        &out,
        "ibguest: fatal: bad command line: unknown option \"colour=blue\" (known: ip, gw, services, log, name, tcp-budget, ip6, gw6, cm; guest: peer, send, rr, fetch, exit-after, busy-poll, xen-fault, crash)",
    );
    expect(
        &out,
        "exit: bad command line (code 0x11, QEMU exit status 35)",
    );

    let (code, out) = boot(&dir, "empty", "", None)?;
    assert_eq!(code, ExitCode::BadCommandLine, "{out}");
    expect(&out, "missing required option ip=");

    let (code, out) = boot(&dir, "badcrash", "ip=10.77.0.2/24 crash=explode", None)?;
    assert_eq!(code, ExitCode::BadCommandLine, "{out}");
    expect(&out, "crash=explode: not a crash kind");
    Ok(())
}

#[test]
fn missing_ivshmem_device_is_reported() -> Result<()> {
    let dir = scratch_dir("guest-noivshmem")?;
    let (code, out) = boot(&dir, "guest", "ip=10.77.0.2/24 gw=10.77.0.1", None)?;
    assert_eq!(code, ExitCode::NoIvshmem, "{out}");
    assert_eq!(code.qemu_status(), 37);
    expect(&out, "no ivshmem device");
    // The boot itself was fine: start info, memory map, command line.
    expect(&out, "ibguest: booted (hvm_start_info v1");
    expect(&out, "RAM");
    expect(
        &out,
        "ibguest: command line: \"ip=10.77.0.2/24 gw=10.77.0.1\"",
    );
    Ok(())
}

#[test]
fn cpu_exceptions_print_a_register_dump() -> Result<()> {
    let dir = scratch_dir("guest-crash")?;
    let (code, out) = boot(&dir, "ud2", "ip=10.77.0.2/24 crash=ud2", None)?;
    assert_eq!(code, ExitCode::CpuException, "{out}");
    assert_eq!(code.qemu_status(), 39);
    for needle in [
        "CPU exception 6 (#UD invalid opcode), error code 0x0",
        "RIP    0x",
        "RSP    0x",
        "RFLAGS 0x",
        "RAX 0x",
        "R15 0x",
        "CR3 0x",
        "return addresses on the stack:",
    ] {
        expect(&out, needle);
    }

    let (code, out) = boot(&dir, "pagefault", "ip=10.77.0.2/24 crash=pagefault", None)?;
    assert_eq!(code, ExitCode::CpuException, "{out}");
    expect(&out, "CPU exception 14 (#PF page fault)");
    expect(&out, "CR2    0x00007eadbeef0000  (page not present, read)");

    let (code, out) = boot(&dir, "overflow", "ip=10.77.0.2/24 crash=overflow", None)?;
    assert_eq!(code, ExitCode::CpuException, "{out}");
    expect(&out, "CPU exception 8 (#DF double fault)");
    expect(&out, "stack overflow");

    let (code, out) = boot(&dir, "panic", "ip=10.77.0.2/24 crash=panic", None)?;
    assert_eq!(code, ExitCode::Panic, "{out}");
    expect(&out, "ibguest: panic: panicked at");
    Ok(())
}

#[test]
fn image_carries_the_pvh_note() -> Result<()> {
    let image = qemu::image()?;
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new("readelf")
            .args(args)
            .arg(&image)
            .output()
            .map_err(|e| HarnessError(format!("cannot run readelf (binutils): {e}")))?;
        assert!(out.status.success(), "readelf {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let notes = run(&["-n"])?;
    // readelf does not name Xen's note types: type 18 is
    // XEN_ELFNOTE_PHYS32_ENTRY, 8 bytes of description.
    let line = notes
        .lines()
        .find(|l| l.contains("Xen") && l.contains("(0x00000012)"))
        .unwrap_or_else(|| panic!("no Xen PHYS32_ENTRY note:\n{notes}"));
    assert!(line.contains("0x00000008"), "descsz is not 8: {line}");
    // Its value is the entry point (pvh_start), which the linker script
    // also makes e_entry.
    let entry = run(&["-h"])?
        .lines()
        .find_map(|l| l.trim().strip_prefix("Entry point address:"))
        .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .expect("an entry point");
    let desc: Vec<u8> = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("description data:"))
        .expect("description data")
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    assert_eq!(desc, entry.to_le_bytes(), "{notes}");
    assert!(run(&["-l"])?.contains("NOTE"), "no PT_NOTE segment");
    Ok(())
}

#[test]
fn ivshmem_channel_against_the_back_end() -> Result<()> {
    let dir = scratch_dir("guest-ivshmem")?;
    // g1 has the default 8 MiB window (BAR2 below 4 GiB); g2 has 1 GiB,
    // which SeaBIOS places at 4 GiB.
    let g2_socket = dir.join("g2.sock");
    let g2 = format!("name=g2,socket={},window=1G", g2_socket.display());
    let be = Backend::start(&dir, &[Seat::new(&dir, "g1")], &["--guest", &g2])?;
    for (name, socket, bar2) in [
        ("g1", be.socket("g1"), "BAR2: memory 0x"),
        (
            "g2",
            g2_socket,
            "BAR2: memory 0x100000000 size 0x40000000 (64-bit, prefetchable)",
        ),
    ] {
        let (code, out) = boot(&dir, name, "ip=10.77.0.2/24 exit-after=1", Some(&socket))?;
        assert_eq!(code, ExitCode::Success, "{out}");
        assert_eq!(code.qemu_status(), 33);
        expect(&out, "ibguest: ivshmem at ");
        expect(&out, "MSI-X 1 vector(s), table in BAR1");
        expect(&out, bar2);
        expect(&out, "ibguest: channel magic 0x49424743 (IBGC)");
        expect(&out, "ibguest: channel connected after");
        expect(&out, "ibguest: network up: 10.77.0.2/24");
        // The back end's notification arrives as an MSI-X interrupt.
        assert!(
            !out.contains("ibguest: 0 interrupt(s)"),
            "the back end's interrupt never arrived:\n{out}"
        );
    }
    Ok(())
}
