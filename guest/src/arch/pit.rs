//! The 8254 PIT, channel 2, as a stopwatch for calibrating the other
//! clocks.

use x86_64::instructions::port::Port;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// The PIT is missing (Xen PVH has none) or never finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoPit;

/// Runs channel 2 for `ticks` PIT ticks (mode 0, gate on, speaker off) and
/// calls `sample` right after it starts and right after its output goes
/// high. Gives up after `max_spins` polls.
pub fn measure<R>(
    ticks: u16,
    max_spins: u64,
    mut sample: impl FnMut() -> R,
) -> Result<(R, R), NoPit> {
    let mut gate = Port::<u8>::new(0x61);
    let mut mode = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x61/0x43/0x42 are the PIT's channel 2 and its gate;
    // programming them only affects the (unused) speaker timer.
    unsafe {
        let g = gate.read();
        if g == 0xff {
            return Err(NoPit);
        }
        gate.write((g & !0x02) | 0x01);
        mode.write(0xb0); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(ticks as u8);
        ch2.write((ticks >> 8) as u8);
    }
    let start = sample();
    let mut spins = 0u64;
    loop {
        // SAFETY: reading the gate/status port has no side effects.
        let status = unsafe { gate.read() };
        if status & 0x20 != 0 {
            break;
        }
        spins += 1;
        if spins > max_spins {
            return Err(NoPit);
        }
    }
    let end = sample();
    Ok((start, end))
}
