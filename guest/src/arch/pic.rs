//! The legacy 8259 pair: remapped off the exception vectors and masked.
//! Interrupts come through the local APIC and MSI-X only.

use x86_64::instructions::port::Port;

use super::vector;

/// Remaps the master to `PIC_BASE` and the slave to `PIC_BASE + 8`, then
/// masks every line. Harmless where there is no PIC (Xen PVH).
pub fn disable() {
    let mut cmd1 = Port::<u8>::new(0x20);
    let mut data1 = Port::<u8>::new(0x21);
    let mut cmd2 = Port::<u8>::new(0xa0);
    let mut data2 = Port::<u8>::new(0xa1);
    // SAFETY: the standard initialisation sequence of the 8259s; it only
    // changes where (and whether) they deliver interrupts.
    unsafe {
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(vector::PIC_BASE);
        data2.write(vector::PIC_BASE + 8);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}
