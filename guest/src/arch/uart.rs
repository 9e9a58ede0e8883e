//! COM1, through `uart_16550`.

use uart_16550::SerialPort;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;

/// The first serial port.
pub struct Com1(SerialPort);

impl Com1 {
    /// Initialises COM1 if there is one (its line status register does
    /// not read as 0xff, as an absent port's does under Xen PVH).
    pub fn init() -> Option<Com1> {
        let mut lsr = Port::<u8>::new(LINE_STATUS);
        // SAFETY: reading COM1's line status register has no side effects
        // (and an absent port reads 0xff).
        if unsafe { lsr.read() } == 0xff {
            return None;
        }
        // SAFETY: 0x3f8 is COM1 (just probed); this is the only handle
        // apart from `steal`'s emergency ones.
        let mut port = unsafe { SerialPort::new(COM1) };
        port.init();
        Some(Com1(port))
    }

    /// A handle for emergencies (exception and panic reports) that does
    /// not wait for the console lock. Bytes may interleave with a
    /// half-written line; nothing worse.
    pub fn steal() -> Com1 {
        // SAFETY: as in `init`; port writes have no memory effects, and an
        // absent port ignores them.
        Com1(unsafe { SerialPort::new(COM1) })
    }

    pub fn write_byte(&mut self, b: u8) {
        self.0.send_raw(b);
    }
}
