//! How the guest ends, and what each ending means to whoever started it.
//!
//! Under QEMU with `-device isa-debug-exit,iobase=0xf4,iosize=0x04`, the
//! guest writes a code `v` to port 0xf4 and QEMU exits with status
//! `(v << 1) | 1`, so a guest can never exit with status 0: success is
//! [`ExitCode::Success`], status 33. Without the device (Xen, or QEMU
//! without it) the guest halts with interrupts off. Under Xen it shuts
//! the domain down with `SCHEDOP_shutdown`: poweroff for success, crash
//! for every other code (the code is on the console first), so `xl list
//! -v` and `on_crash=` tell them apart.
//!
//! | code | QEMU status | meaning |
//! |---|---|---|
//! | 0x10 | 33 | success |
//! | 0x11 | 35 | bad kernel command line |
//! | 0x12 | 37 | no ivshmem device (PCI 1af4:1110) |
//! | 0x13 | 39 | CPU exception (register dump on the console) |
//! | 0x14 | 41 | network failure |
//! | 0x15 | 43 | Rust panic |
//! | 0x16 | 45 | boot failure: bad start info, memory map, page tables, heap or clock |
//! | 0x17 | 47 | the ivshmem device is there but unusable (BARs, MSI-X) |
//! | 0x18 | 49 | under Xen: the channel could not be set up (no back end in xenstore, grants, event channel) |

use core::fmt;

/// The port of QEMU's isa-debug-exit device.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0x10,
    BadCommandLine = 0x11,
    NoIvshmem = 0x12,
    CpuException = 0x13,
    NetworkFailure = 0x14,
    Panic = 0x15,
    BootFailure = 0x16,
    IvshmemUnusable = 0x17,
    XenChannel = 0x18,
}

impl ExitCode {
    /// Every code, in numeric order.
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Success,
        ExitCode::BadCommandLine,
        ExitCode::NoIvshmem,
        ExitCode::CpuException,
        ExitCode::NetworkFailure,
        ExitCode::Panic,
        ExitCode::BootFailure,
        ExitCode::IvshmemUnusable,
        ExitCode::XenChannel,
    ];

    /// The value written to the isa-debug-exit port.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit status QEMU reports for this code: `(code << 1) | 1`.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The code behind a QEMU exit status, if it is one of ours.
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        ExitCode::ALL
            .into_iter()
            .find(|c| c.qemu_status() == status)
    }

    /// A short name, as the console prints it.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "success",
            ExitCode::BadCommandLine => "bad command line",
            ExitCode::NoIvshmem => "no ivshmem device",
            ExitCode::CpuException => "CPU exception",
            ExitCode::NetworkFailure => "network failure",
            ExitCode::Panic => "panic",
            ExitCode::BootFailure => "boot failure",
            ExitCode::IvshmemUnusable => "ivshmem device unusable",
            ExitCode::XenChannel => "no Xen channel",
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {:#04x}, QEMU exit status {})",
            self.name(),
            self.code(),
            self.qemu_status()
        )
    }
}

/// Ends the guest: prints the reason, writes `code` to isa-debug-exit,
/// and halts with interrupts off if the device is absent.
#[cfg(target_os = "none")]
pub fn exit(code: ExitCode) -> ! {
    crate::println!("ibguest: exit: {code}");
    if !crate::serial::on_xen() {
        crate::arch::cpu::debug_exit(code.code());
    }
    if crate::xen::is_up() {
        crate::println!(
            "ibguest: xen: SCHEDOP_shutdown {}",
            if code == ExitCode::Success {
                "poweroff"
            } else {
                "crash"
            }
        );
        crate::xen::shutdown(code)
    }
    crate::arch::cpu::halt_forever()
}

/// Prints `message` as a fatal error and exits with `code`.
#[cfg(target_os = "none")]
pub fn fail(code: ExitCode, message: fmt::Arguments<'_>) -> ! {
    crate::println!("ibguest: fatal: {message}");
    exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_documented_values() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::BadCommandLine.qemu_status(), 35);
        assert_eq!(ExitCode::NoIvshmem.qemu_status(), 37);
        assert_eq!(ExitCode::CpuException.qemu_status(), 39);
        assert_eq!(ExitCode::NetworkFailure.qemu_status(), 41);
        assert_eq!(ExitCode::Panic.qemu_status(), 43);
        assert_eq!(ExitCode::BootFailure.qemu_status(), 45);
        assert_eq!(ExitCode::IvshmemUnusable.qemu_status(), 47);
        assert_eq!(ExitCode::XenChannel.qemu_status(), 49);
    }

    #[test]
    fn status_round_trips_and_unknown_is_none() {
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_qemu_status(c.qemu_status()), Some(c));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(1), None);
        assert_eq!(ExitCode::from_qemu_status(34), None);
    }

    #[test]
    fn codes_are_distinct_and_ordered() {
        for w in ExitCode::ALL.windows(2) {
            assert!(w[0].code() < w[1].code());
        }
    }
}
