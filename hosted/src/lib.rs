//! The hosted guest: the guest's network core as an ordinary Linux process,
//! attached to `ib-backend` through the same ivshmem-doorbell socket QEMU
//! uses.

pub mod channel;
pub mod runtime;
pub mod transport;

use std::fmt;

pub use runtime::Runtime;

/// Why the hosted guest stopped.
#[derive(Debug)]
pub enum HostedError {
    Connect(ivshmem::ClientError),
    Attach(verbs_shim::front::AttachError),
    Device(verbs_shim::HcaError),
    Ipoib(ipoib::IpoibError),
    Protocol(String),
    Io(std::io::Error),
}

impl fmt::Display for HostedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostedError::Connect(e) => write!(f, "cannot attach to the back end: {e}"),
            HostedError::Attach(e) => write!(f, "channel attach failed: {e}"),
            HostedError::Device(e) => write!(f, "channel failed: {e}"),
            HostedError::Ipoib(e) => write!(f, "IPoIB failed: {e}"),
            HostedError::Protocol(e) => write!(f, "{e}"),
            HostedError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HostedError {}
