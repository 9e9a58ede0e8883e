//! The channel's transport, chosen at boot by what the guest finds: the
//! Xen transport when running on Xen (grants, an event channel, xenstore),
//! else QEMU's ivshmem-doorbell device. Both give the same three things:
//! the shared window, a bell that notifies the back end, and a count of
//! notifications from it. Nothing above this changes.

use core::fmt;

use ring::Window;

use crate::config::XenFault;
use crate::exit::ExitCode;
use crate::ivshmem::{Doorbell, Ivshmem, IvshmemError};
use crate::xen::channel::XenBell;
use crate::xen::{XenChannel, XenChannelError};

/// How long the Xen transport waits for the back end at each step.
const XEN_WAIT_MICROS: u64 = 60_000_000;

pub enum Transport {
    Ivshmem(Ivshmem),
    Xen(XenChannel),
}

/// Notifies the back end.
#[derive(Clone, Copy, Debug)]
pub enum Bell {
    Ivshmem(Doorbell),
    Xen(XenBell),
}

impl Bell {
    pub fn ring(&self) {
        match self {
            Bell::Ivshmem(d) => d.ring(),
            Bell::Xen(x) => x.ring(),
        }
    }
}

/// Why no transport could be opened.
#[derive(Debug)]
pub enum TransportError {
    Ivshmem(IvshmemError),
    Xen(XenChannelError),
}

impl TransportError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TransportError::Ivshmem(IvshmemError::NotFound) => ExitCode::NoIvshmem,
            TransportError::Ivshmem(_) => ExitCode::IvshmemUnusable,
            TransportError::Xen(_) => ExitCode::XenChannel,
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Ivshmem(e) => write!(f, "{e}"),
            TransportError::Xen(e) => write!(f, "Xen channel: {e}"),
        }
    }
}

impl Transport {
    /// Xen if the Xen platform is up, else ivshmem. `window_len` is what
    /// the channel layout needs (the Xen transport allocates that much;
    /// ivshmem's BAR has its own size). `fault` (tests only) makes the Xen
    /// transport publish a broken channel on purpose.
    pub fn open(window_len: usize, fault: Option<XenFault>) -> Result<Transport, TransportError> {
        if crate::xen::is_up() {
            XenChannel::connect(window_len, XEN_WAIT_MICROS, fault)
                .map(Transport::Xen)
                .map_err(TransportError::Xen)
        } else {
            Ivshmem::probe()
                .map(Transport::Ivshmem)
                .map_err(TransportError::Ivshmem)
        }
    }

    pub fn window(&self) -> Window {
        match self {
            Transport::Ivshmem(d) => d.window(),
            Transport::Xen(x) => x.window(),
        }
    }

    pub fn bell(&self) -> Bell {
        match self {
            Transport::Ivshmem(d) => Bell::Ivshmem(d.backend_doorbell()),
            Transport::Xen(x) => Bell::Xen(x.bell()),
        }
    }

    /// Notifications from the back end since the last call.
    pub fn take_interrupts(&self) -> u64 {
        match self {
            Transport::Ivshmem(d) => d.take_interrupts(),
            Transport::Xen(x) => x.take_interrupts(),
        }
    }

    /// Tells the back end the guest is leaving (Xen: Closing, Closed).
    pub fn close(&mut self) {
        if let Transport::Xen(x) = self {
            x.close();
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Ivshmem(_) => "ivshmem",
            Transport::Xen(_) => "xen",
        }
    }
}
