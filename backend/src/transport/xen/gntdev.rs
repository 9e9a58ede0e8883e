//! `/dev/xen/gntdev`: mapping a domain's grant references into the worker.
//!
//! One device descriptor per session; every mapping made through it is a
//! [`GrantRegion`] that unmaps itself on drop, and closing the descriptor
//! (for example when the worker dies) releases whatever is left.
//!
//! Why not rust-vmm `vm-memory` (feature `xen`): its grant mappings
//! (`MmapXenGrant`) derive the references from the guest address, as
//! consecutive refs starting at `address / page size` (the virtio-on-Xen
//! "grant address" convention), so they cannot map an arbitrary list of
//! references such as the ibchan grant directory gives; and its unmap path
//! `unwrap()`s the ioctl result, which the back end must never do on
//! anything a guest influences. Two ioctls and an `mmap` are little code
//! (see `sys`).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::sys::{Access, GrantRegion};

/// Where the Linux gntdev driver lives.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";

/// An open gntdev descriptor.
pub struct GrantDevice {
    fd: Arc<OwnedFd>,
}

impl GrantDevice {
    pub fn open() -> io::Result<GrantDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(GNTDEV_PATH)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open {GNTDEV_PATH}: {e} (is this dom0 with xen-gntdev loaded?)"
                    ),
                )
            })?;
        Ok(GrantDevice {
            fd: Arc::new(OwnedFd::from(file)),
        })
    }

    /// Maps `refs` of `domid` as one contiguous region.
    pub fn map(&self, domid: u16, refs: &[u32], access: Access) -> io::Result<GrantRegion> {
        GrantRegion::map(self.fd.clone(), domid, refs, access)
    }
}
