//! The ivshmem-doorbell transport: QEMU's inter-VM shared memory device
//! (PCI 1af4:1110), served by `ib-backend`.
//!
//! - BAR0: registers. IVPosition (+8) is our peer id; writing
//!   `(peer << 16) | vector` to Doorbell (+12) interrupts `peer` on
//!   `vector`.
//! - BAR1: the MSI-X table. Entry `i` (the back end ringing our vector `i`)
//!   is pointed at local APIC vector `MSIX_BASE + i` on this CPU; the
//!   interrupt handler counts and acknowledges it.
//! - BAR2: the shared memory (64-bit, prefetchable; may sit above 4 GiB),
//!   mapped write-back and handed out as a [`ring::Window`].
//!
//! The back end is peer 0 and rings our vector 0; we ring its vector 0.

use alloc::boxed::Box;
use core::fmt;

use ring::Window;

use crate::arch::mmio::{self, Mmio};
use crate::arch::paging::MapError;
use crate::arch::{idt, lapic, vector};
use crate::pci::{self, command, Bar, ConfigSpace, Function, MsixCapability, MsixEntry, MsixError};

pub const VENDOR_ID: u16 = 0x1af4;
pub const DEVICE_ID: u16 = 0x1110;
/// The back end's peer id.
pub const BACKEND_PEER: u16 = 0;
/// The vector the back end listens on, and the one it rings us on.
pub const CHANNEL_VECTOR: u16 = 0;

mod reg {
    pub const IV_POSITION: u64 = 8;
    pub const DOORBELL: u64 = 12;
}
/// Bytes of BAR0 the guest maps.
const REGISTERS_LEN: u64 = 16;

/// Why the device cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IvshmemError {
    /// No function 1af4:1110 on any bus.
    NotFound,
    /// A BAR is absent, unassigned or of the wrong kind.
    BadBar {
        index: usize,
        bar: Bar,
    },
    /// No MSI-X capability: this is `ivshmem-plain`, or `ivshmem-doorbell`
    /// with MSI-X off; notifications need `ivshmem-doorbell` with vectors.
    NoMsix,
    Msix(MsixError),
    Map {
        what: &'static str,
        error: MapError,
    },
}

impl fmt::Display for IvshmemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IvshmemError::NotFound => write!(
                f,
                "no ivshmem device (PCI {VENDOR_ID:04x}:{DEVICE_ID:04x}); start QEMU with \
                 -chardev socket,path=SOCK,id=ib -device ivshmem-doorbell,chardev=ib,vectors=1"
            ),
            IvshmemError::BadBar { index, bar } => {
                write!(f, "ivshmem BAR{index} is unusable: {bar}")
            }
            IvshmemError::NoMsix => f.write_str(
                "the ivshmem device has no MSI-X capability; use ivshmem-doorbell with vectors=1",
            ),
            IvshmemError::Msix(e) => write!(f, "ivshmem MSI-X: {e}"),
            IvshmemError::Map { what, error } => write!(f, "cannot map ivshmem {what}: {error}"),
        }
    }
}

impl core::error::Error for IvshmemError {}

/// A probed, mapped and interrupt-enabled ivshmem device.
#[derive(Debug)]
pub struct Ivshmem {
    function: Function,
    /// Leaked: device mappings live for ever, and doorbells are `'static`.
    registers: &'static Mmio,
    msix_table: Mmio,
    msix: MsixCapability,
    /// MSI-X entries in use (`min(table size, MSIX_COUNT)`).
    vectors: u8,
    bars: [Bar; 6],
    shared: (u64, u64),
    window: Window,
}

/// Rings one peer's vector: a cheap, `'static` handle to give a channel's
/// front end.
#[derive(Clone, Copy, Debug)]
pub struct Doorbell {
    registers: &'static Mmio,
    value: u32,
}

impl Doorbell {
    pub fn ring(&self) {
        self.registers.write32(reg::DOORBELL, self.value);
    }
}

impl Ivshmem {
    /// Finds the device, maps BAR0 (uncached), the MSI-X table (uncached)
    /// and BAR2 (write-back), points its MSI-X entries at this CPU and
    /// enables MSI-X, memory decoding and bus mastering.
    pub fn probe() -> Result<Ivshmem, IvshmemError> {
        let function = pci::find(VENDOR_ID, DEVICE_ID).ok_or(IvshmemError::NotFound)?;
        let bars = pci::read_bars(&function);
        let memory_bar = |i: usize| {
            bars[i].memory().ok_or(IvshmemError::BadBar {
                index: i,
                bar: bars[i],
            })
        };
        let (bar0, bar0_len) = memory_bar(0)?;
        let shared = memory_bar(2)?;

        let at = pci::find_capability(&function, pci::CAP_MSIX).ok_or(IvshmemError::NoMsix)?;
        let at16 = u16::from(at);
        let msix = MsixCapability::parse(
            at,
            function.read16(at16 + 2),
            function.read32(at16 + 4),
            function.read32(at16 + 8),
        )
        .map_err(IvshmemError::Msix)?;
        let table_bar = usize::from(msix.table_bar);
        let (table_base, table_bar_len) = memory_bar(table_bar)?;
        msix.check_table(table_bar_len)
            .map_err(IvshmemError::Msix)?;

        let map = |what, e| IvshmemError::Map { what, error: e };
        let registers: &'static Mmio = Box::leak(Box::new(
            Mmio::map(bar0, REGISTERS_LEN.min(bar0_len)).map_err(|e| map("registers (BAR0)", e))?,
        ));
        let table_len = msix.entry_offset(msix.table_size);
        let msix_table = Mmio::map(table_base, table_len).map_err(|e| map("MSI-X table", e))?;
        let window =
            mmio::shared_window(shared.0, shared.1).map_err(|e| map("shared memory (BAR2)", e))?;

        let dev = Ivshmem {
            function,
            registers,
            msix_table,
            msix,
            vectors: msix.table_size.min(u16::from(vector::MSIX_COUNT)) as u8,
            bars,
            shared,
            window,
        };
        dev.enable();
        Ok(dev)
    }

    /// Memory decoding and bus mastering on, INTx off; MSI-X entries
    /// programmed with the function masked, then unmasked.
    fn enable(&self) {
        let f = &self.function;
        let ctl = self.msix.control_offset();
        let control = f.read16(ctl);
        f.write16(
            ctl,
            control | pci::msix_control::ENABLE | pci::msix_control::FUNCTION_MASK,
        );
        f.set_command(
            f.command() | command::MEMORY_SPACE | command::BUS_MASTER | command::INTX_DISABLE,
        );
        let apic = lapic::id();
        for i in 0..u16::from(self.vectors) {
            let entry = MsixEntry::fixed(apic, vector::MSIX_BASE + i as u8);
            let base = self.msix.entry_offset(i);
            let words = entry.words();
            // Masked while the address and data change, then unmasked.
            self.msix_table.write32(base + 12, 1);
            self.msix_table.write32(base, words[0]);
            self.msix_table.write32(base + 4, words[1]);
            self.msix_table.write32(base + 8, words[2]);
            self.msix_table.write32(base + 12, words[3]);
        }
        // Entries beyond ours stay masked (their reset state).
        f.write16(
            ctl,
            (control | pci::msix_control::ENABLE) & !pci::msix_control::FUNCTION_MASK,
        );
    }

    /// The shared memory (BAR2) as a channel window.
    pub fn window(&self) -> Window {
        self.window.clone()
    }

    /// Our peer id (IVPosition).
    pub fn my_id(&self) -> u16 {
        self.registers.read32(reg::IV_POSITION) as u16
    }

    /// Interrupts `peer` on its `vector`.
    pub fn ring_doorbell(&self, peer: u16, vector: u16) {
        self.doorbell(peer, vector).ring();
    }

    /// A handle that rings `peer`'s `vector`; `FrontHca` takes any
    /// `Fn()`, so `move || bell.ring()` is its `Notify`.
    pub fn doorbell(&self, peer: u16, vector: u16) -> Doorbell {
        Doorbell {
            registers: self.registers,
            value: u32::from(peer) << 16 | u32::from(vector),
        }
    }

    /// The back end's channel doorbell (peer 0, vector 0).
    pub fn backend_doorbell(&self) -> Doorbell {
        self.doorbell(BACKEND_PEER, CHANNEL_VECTOR)
    }

    /// Interrupts taken on any of the device's vectors since the last
    /// call.
    pub fn take_interrupts(&self) -> u64 {
        (0..self.vectors).map(idt::take_msix).sum()
    }

    /// MSI-X vectors in use.
    pub fn vectors(&self) -> u8 {
        self.vectors
    }

    pub fn location(&self) -> pci::Location {
        self.function.at
    }

    pub fn bars(&self) -> &[Bar; 6] {
        &self.bars
    }

    /// BAR2's physical address and size.
    pub fn shared_memory(&self) -> (u64, u64) {
        self.shared
    }

    pub fn msix(&self) -> &MsixCapability {
        &self.msix
    }
}
