//! Configuration mechanism #1: ports 0xCF8 (address) and 0xCFC (data).

use spin::Mutex;
use x86_64::instructions::port::Port;

use super::{ConfigAddress, ConfigSpace, Location};

/// The address/data pair is one shared register: hold this across both.
static CONFIG_PORTS: Mutex<()> = Mutex::new(());

/// A PCI function, reached through ports 0xCF8/0xCFC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub at: Location,
}

impl ConfigSpace for Function {
    fn read32(&self, offset: u16) -> u32 {
        let _lock = CONFIG_PORTS.lock();
        let mut address = Port::<u32>::new(0xcf8);
        let mut data = Port::<u32>::new(0xcfc);
        // SAFETY: selecting a configuration register and reading it: no
        // memory effects (BAR contents only matter once something maps
        // them, which goes through the page-table checks).
        unsafe {
            address.write(ConfigAddress::new(self.at, offset).0);
            data.read()
        }
    }

    fn write32(&self, offset: u16, value: u32) {
        let _lock = CONFIG_PORTS.lock();
        let mut address = Port::<u32>::new(0xcf8);
        let mut data = Port::<u32>::new(0xcfc);
        // SAFETY: writing a configuration register. The guest only writes
        // the command register, BARs (sizing, restored at once) and MSI-X
        // control; MSI-X then only targets the local APIC's window, and
        // bus mastering is enabled only for devices whose DMA targets
        // memory the guest shares on purpose.
        unsafe {
            address.write(ConfigAddress::new(self.at, offset).0);
            data.write(value);
        }
    }
}

/// Every present function on every bus, in bus/device/function order.
pub fn functions() -> impl Iterator<Item = Function> {
    (0..=255u8).flat_map(|bus| {
        (0..32u8).flat_map(move |device| {
            let f0 = Function {
                at: Location {
                    bus,
                    device,
                    function: 0,
                },
            };
            let present = f0.vendor_id() != 0xffff;
            let multi = present && f0.read8(super::reg::HEADER_TYPE) & 0x80 != 0;
            let count = if !present {
                0
            } else if multi {
                8
            } else {
                1
            };
            (0..count).filter_map(move |function| {
                let f = Function {
                    at: Location {
                        bus,
                        device,
                        function,
                    },
                };
                (f.vendor_id() != 0xffff).then_some(f)
            })
        })
    })
}

/// The first function with `vendor:device`.
pub fn find(vendor: u16, device: u16) -> Option<Function> {
    functions().find(|f| f.vendor_id() == vendor && f.device_id() == device)
}
