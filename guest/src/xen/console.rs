//! The PV console (`io/console.h`): the ring page and event channel the
//! toolstack gives every domain (`HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`), which
//! xenconsoled serves: `xl console` and the console log show it.
//!
//! Output only. Bytes go into the 2 KiB `out` ring; when it is full the
//! writer notifies and spins for a bounded time (xenconsoled drains it),
//! then drops the rest rather than hang the guest.

use core::sync::atomic::{AtomicBool, Ordering};

use ring::Window;
use spin::Mutex;

use crate::arch::{cpu, mmio};
use crate::timer::now_micros;

use super::events;
use super::hypercall::{self, param, XenError};

mod off {
    pub const OUT: usize = 1024;
    pub const OUT_SIZE: u32 = 2048;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}
/// How long a full ring may hold the writer up.
const FULL_WAIT_MICROS: u64 = 200_000;

struct PvConsole {
    ring: Window,
    port: u32,
    dropped: u64,
}

static CONSOLE: Mutex<Option<PvConsole>> = Mutex::new(None);
/// Set once the ring is mapped (read without the lock on every print).
static UP: AtomicBool = AtomicBool::new(false);

/// Why the PV console is not available.
#[derive(Clone, Copy, Debug)]
pub enum ConsoleError {
    Xen(XenError),
    /// The toolstack gave no console page.
    NoPage,
    Map,
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConsoleError::Xen(e) => write!(f, "{e}"),
            ConsoleError::NoPage => f.write_str("no PV console page"),
            ConsoleError::Map => f.write_str("cannot map the PV console page"),
        }
    }
}

/// Finds and maps the console ring.
pub fn init() -> Result<(), ConsoleError> {
    let pfn = hypercall::hvm_get_param(param::CONSOLE_PFN).map_err(ConsoleError::Xen)?;
    if pfn == 0 {
        return Err(ConsoleError::NoPage);
    }
    let port = hypercall::hvm_get_param(param::CONSOLE_EVTCHN).map_err(ConsoleError::Xen)? as u32;
    let ring = mmio::shared_window(pfn << 12, 4096).map_err(|_| ConsoleError::Map)?;
    *CONSOLE.lock() = Some(PvConsole {
        ring,
        port,
        dropped: 0,
    });
    UP.store(true, Ordering::Release);
    Ok(())
}

/// Whether the PV console is up, without taking its lock.
pub fn is_up_fast() -> bool {
    UP.load(Ordering::Acquire)
}

/// Whether the PV console is up.
pub fn is_up() -> bool {
    CONSOLE.lock().is_some()
}

/// Writes `bytes` to the console ring (callers hold interrupts off).
pub fn write(bytes: &[u8]) {
    let Some(mut guard) = CONSOLE.try_lock() else {
        return;
    };
    let Some(c) = guard.as_mut() else {
        return;
    };
    c.write(bytes);
}

impl PvConsole {
    fn write(&mut self, mut bytes: &[u8]) {
        let mut waited_since = None;
        while !bytes.is_empty() {
            let (Ok(cons), Ok(prod)) = (
                self.ring.load_u32(off::OUT_CONS, Ordering::Acquire),
                self.ring.load_u32(off::OUT_PROD, Ordering::Relaxed),
            ) else {
                return;
            };
            let used = prod.wrapping_sub(cons);
            if used > off::OUT_SIZE {
                // xenconsoled wrote nonsense; give up on this write.
                self.dropped += bytes.len() as u64;
                return;
            }
            let space = (off::OUT_SIZE - used) as usize;
            if space == 0 {
                events::notify(self.port);
                let since = *waited_since.get_or_insert_with(now_micros);
                if now_micros().saturating_sub(since) > FULL_WAIT_MICROS {
                    self.dropped += bytes.len() as u64;
                    return;
                }
                cpu::relax();
                continue;
            }
            let at = (prod & (off::OUT_SIZE - 1)) as usize;
            let n = bytes.len().min(space).min(off::OUT_SIZE as usize - at);
            if self.ring.write_bytes(off::OUT + at, &bytes[..n]).is_err() {
                return;
            }
            let _ = self.ring.store_u32(
                off::OUT_PROD,
                prod.wrapping_add(n as u32),
                Ordering::Release,
            );
            bytes = &bytes[n..];
        }
        events::notify(self.port);
    }
}

/// Bytes dropped because the ring stayed full.
pub fn dropped() -> u64 {
    CONSOLE.lock().as_ref().map_or(0, |c| c.dropped)
}
