//! The console and the `log` logger.
//!
//! Output goes to COM1 (QEMU's `-serial stdio`). Under Xen, where a PVH
//! domain has no COM1, it goes to port 0xe9 (Xen's debug console, shown by
//! `xl dmesg`) until the PV console ring is up (`xl console`,
//! xenconsoled's log), and to the ring from then on; exception and panic
//! reports go to both. Lines are `[seconds.micros] LEVEL target: text`.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::arch::cpu;
use crate::arch::uart::Com1;

struct Console {
    com1: Option<Com1>,
    debugcon: bool,
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if let Some(c) = &mut self.com1 {
                if b == b'\n' {
                    c.write_byte(b'\r');
                }
                c.write_byte(b);
            }
            if self.debugcon {
                cpu::debugcon_write(b);
            }
        }
        if crate::xen::console::is_up_fast() {
            // The PV console is a terminal for `xl console`: CR LF.
            let mut lines = s.split('\n');
            if let Some(first) = lines.next() {
                crate::xen::console::write(first.as_bytes());
            }
            for line in lines {
                crate::xen::console::write(b"\r\n");
                crate::xen::console::write(line.as_bytes());
            }
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);
static ON_XEN: AtomicBool = AtomicBool::new(false);
static HAVE_COM1: AtomicBool = AtomicBool::new(false);

/// Finds the console devices. Before this, [`print`] writes nothing; the
/// emergency path always works.
pub fn init() {
    let xen = cpu::xen_cpuid_base().is_some();
    ON_XEN.store(xen, Ordering::Relaxed);
    // A PVH domain has no COM1 (reads 0xff, writes vanish): do not probe it.
    let com1 = if xen { None } else { Com1::init() };
    HAVE_COM1.store(com1.is_some(), Ordering::Relaxed);
    *CONSOLE.lock() = Some(Console {
        com1,
        debugcon: xen,
    });
}

/// Whether the guest runs on Xen (so the console is mirrored to port 0xe9).
pub fn on_xen() -> bool {
    ON_XEN.load(Ordering::Relaxed)
}

/// Whether COM1 answered.
pub fn have_com1() -> bool {
    HAVE_COM1.load(Ordering::Relaxed)
}

/// Writes to the console, with interrupts off while it holds the lock.
/// Interrupt handlers never print, so the lock is only ever busy when a
/// panic or an exception struck in the middle of a print; then the text
/// goes out the emergency way instead of deadlocking.
pub fn print(args: fmt::Arguments<'_>) {
    cpu::without_interrupts(|| match CONSOLE.try_lock() {
        Some(mut guard) => {
            if let Some(c) = guard.as_mut() {
                // Port 0xe9 is the early and fallback output under Xen:
                // once the PV console is up, lines go there instead.
                c.debugcon = on_xen() && !crate::xen::console::is_up_fast();
                let _ = c.write_fmt(args);
            }
        }
        None => emergency(args),
    });
}

/// Writes without the console lock (exception and panic reports, which
/// may interrupt a half-written line).
pub fn emergency(args: fmt::Arguments<'_>) {
    let mut c = Console {
        com1: (!on_xen()).then(Com1::steal),
        debugcon: on_xen(),
    };
    let _ = c.write_fmt(args);
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::serial::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let t = crate::timer::now_micros();
        print(format_args!(
            "[{:>4}.{:06}] {:<5} {}: {}\n",
            t / 1_000_000,
            t % 1_000_000,
            record.level(),
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Installs the logger at `level` (later changes: `log::set_max_level`).
pub fn init_logger(level: LevelFilter) {
    // Only fails if a logger is already set, which is then ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
