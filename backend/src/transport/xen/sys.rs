//! The Xen transport's one room for `unsafe`: the gntdev and evtchn ioctls
//! (Linux `include/uapi/xen/gntdev.h` and `evtchn.h`), mapping and
//! unmapping granted pages, reading the read-only grant directory, and the
//! [`ring::Window`] over a read-write grant mapping.
//!
//! Everything the guest controls (which refs, which port) arrives here as
//! plain numbers; the hypervisor and the kernel check them, and a bad one
//! comes back as an error from the ioctl or from `mmap`, never as a fault.

use std::any::Any;
use std::io;
use std::mem::size_of;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::ioctl::NONE;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Xen's page size: each grant reference is one page.
pub const PAGE_SIZE: usize = 4096;

/// `sizeof(struct ioctl_gntdev_map_grant_ref)`: `count`, `pad`, `index`
/// and the one `refs[1]` entry the header declares (the real request
/// carries `count` of them, but the ioctl number encodes this size).
const MAP_GRANT_REF_SIZE: usize = 24;

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
struct UnmapGrantRef {
    index: u64,
    count: u32,
    pad: u32,
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`.
#[repr(C)]
struct PortArg {
    port: u32,
}

nix::ioctl_readwrite_bad!(
    ioctl_gntdev_map_grant_ref,
    nix::ioc!(NONE, b'G', 0, MAP_GRANT_REF_SIZE),
    u64
);
nix::ioctl_write_ptr_bad!(
    ioctl_gntdev_unmap_grant_ref,
    nix::ioc!(NONE, b'G', 1, size_of::<UnmapGrantRef>()),
    UnmapGrantRef
);
nix::ioctl_write_ptr_bad!(
    ioctl_evtchn_bind_interdomain,
    nix::ioc!(NONE, b'E', 1, size_of::<BindInterdomain>()),
    BindInterdomain
);
nix::ioctl_write_ptr_bad!(
    ioctl_evtchn_unbind,
    nix::ioc!(NONE, b'E', 3, size_of::<PortArg>()),
    PortArg
);
nix::ioctl_write_ptr_bad!(
    ioctl_evtchn_notify,
    nix::ioc!(NONE, b'E', 4, size_of::<PortArg>()),
    PortArg
);
nix::ioctl_none_bad!(ioctl_evtchn_reset, nix::ioc!(NONE, b'E', 5, 0));

/// Two `u32`s laid out in memory one after the other, as one `u64` (so the
/// request buffer is 8-byte aligned for its `index` field).
fn pair(first: u32, second: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&first.to_ne_bytes());
    b[4..].copy_from_slice(&second.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// Whether a mapping may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// `refs` of domain `domid` mapped contiguously into this process through
/// gntdev. Dropping it unmaps the memory and releases the grants
/// (`munmap`, then `IOCTL_GNTDEV_UNMAP_GRANT_REF`).
///
/// The memory is never touched through a Rust reference: read-only
/// mappings are copied out with volatile reads ([`copy_pages`]); read-write
/// ones are only reachable through a [`ring::Window`] ([`window`]).
///
/// [`copy_pages`]: GrantRegion::copy_pages
/// [`window`]: GrantRegion::window
pub struct GrantRegion {
    device: Arc<OwnedFd>,
    index: u64,
    pages: u32,
    ptr: NonNull<u8>,
    len: NonZeroUsize,
    access: Access,
}

// SAFETY: `GrantRegion` owns an address range and the gntdev reservation
// behind it and only releases them on drop; it never reads or writes the
// memory except in `copy_pages`, which uses volatile reads of memory that
// stays mapped while `&self` exists. Which thread drops it does not matter
// to `munmap` or the ioctl.
unsafe impl Send for GrantRegion {}
// SAFETY: `&GrantRegion` offers volatile reads (`copy_pages`) and windows,
// whose accesses are atomic or volatile; concurrent use is no different from
// the granting domain writing the pages at any time.
unsafe impl Sync for GrantRegion {}

impl GrantRegion {
    /// Maps `refs` of `domid` through the gntdev descriptor `device`, in
    /// one request, as one contiguous region. A ref the domain has not
    /// granted to us (or granted read-only, for `ReadWrite`) fails here.
    pub fn map(
        device: Arc<OwnedFd>,
        domid: u16,
        refs: &[u32],
        access: Access,
    ) -> io::Result<GrantRegion> {
        let count = u32::try_from(refs.len())
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot map {} grant references", refs.len()),
                )
            })?;
        let len = refs
            .len()
            .checked_mul(PAGE_SIZE)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mapping too large"))?;
        // struct ioctl_gntdev_map_grant_ref: {count, pad}, index, then
        // `count` x {domid, ref}.
        let mut request = vec![0u64; 2 + refs.len()];
        request[0] = pair(count, 0);
        for (slot, r) in request[2..].iter_mut().zip(refs) {
            *slot = pair(u32::from(domid), *r);
        }
        // SAFETY: the kernel reads the 16-byte header and `count` 8-byte
        // grant entries from the pointer and writes `index` back; `request`
        // holds exactly that many initialised, 8-byte aligned bytes and
        // outlives the call. `device` is an open gntdev descriptor.
        unsafe { ioctl_gntdev_map_grant_ref(device.as_raw_fd(), request.as_mut_ptr()) }.map_err(
            |e| io::Error::other(format!("IOCTL_GNTDEV_MAP_GRANT_REF of {count} refs: {e}")),
        )?;
        let index = request[1];
        let offset = match i64::try_from(index) {
            Ok(o) => o,
            Err(_) => {
                let _ = unmap_grant_refs(&device, index, count);
                return Err(io::Error::other(format!("gntdev offset {index:#x}")));
            }
        };
        let prot = match access {
            Access::ReadOnly => ProtFlags::PROT_READ,
            Access::ReadWrite => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        };
        // SAFETY: with no address hint the kernel picks an unused range, so
        // the new mapping cannot overlap (and so invalidate) memory Rust
        // already uses. The result is owned by the returned `GrantRegion`
        // and accessed only by volatile reads or through `Window`, never by
        // reference, so the granting domain writing it is no data race in
        // Rust's sense. gntdev maps the grants here (or refuses with an
        // error, which is handled below).
        let mapped = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, &*device, offset) };
        match mapped {
            Ok(ptr) => Ok(GrantRegion {
                device,
                index,
                pages: count,
                ptr: ptr.cast(),
                len,
                access,
            }),
            Err(e) => {
                let _ = unmap_grant_refs(&device, index, count);
                Err(io::Error::other(format!(
                    "mmap of {count} grant pages ({}): {e}",
                    match access {
                        Access::ReadOnly => "read-only",
                        Access::ReadWrite => "read-write",
                    }
                )))
            }
        }
    }

    /// Pages mapped.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Copies every page out, once, with volatile reads.
    pub fn copy_pages(&self) -> Vec<[u8; PAGE_SIZE]> {
        let mut out = vec![[0u8; PAGE_SIZE]; self.pages as usize];
        const WORD: usize = size_of::<u64>();
        for (p, page) in out.iter_mut().enumerate() {
            for (w, chunk) in page.chunks_exact_mut(WORD).enumerate() {
                let at = p * PAGE_SIZE + w * WORD;
                // SAFETY: `at + 8 <= pages * PAGE_SIZE == len`, so the word is
                // inside the mapping, which is readable and stays mapped while
                // `self` exists; `ptr` is page-aligned, so the word is 8-byte
                // aligned. The read is volatile: the guest may change the page
                // concurrently, and each word is read exactly once.
                let word =
                    unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(at).cast::<u64>()) };
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
        }
        out
    }

    /// A window over the whole region that keeps it mapped for as long as
    /// the window (or any clone or sub-window) exists; `None` for a
    /// read-only region.
    pub fn window(self: &Arc<Self>) -> Option<ring::Window> {
        if self.access != Access::ReadWrite {
            return None;
        }
        let owner: Arc<dyn Any + Send + Sync> = self.clone();
        // SAFETY: `ptr..ptr + len` is mapped read/write (`map` with
        // `ReadWrite`) and stays mapped until this `GrantRegion` is dropped,
        // which `owner` (a strong reference held by the window) prevents
        // while any window exists. This module never creates a reference
        // into the memory, and nothing else can reach the pointer.
        Some(unsafe {
            ring::Window::from_raw_parts(self.ptr.as_ptr(), self.len.get(), Some(owner))
        })
    }
}

impl Drop for GrantRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made in `map`,
        // unmapped once, here. Every window onto it holds an `Arc` to this
        // region, so none can outlive the unmap.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len.get()) } {
            log::error!("gntdev: munmap of {} grant pages failed: {e}", self.pages);
        }
        if let Err(e) = unmap_grant_refs(&self.device, self.index, self.pages) {
            log::error!(
                "gntdev: releasing {} grant pages at {:#x} failed: {e}",
                self.pages,
                self.index
            );
        }
    }
}

fn unmap_grant_refs(device: &OwnedFd, index: u64, count: u32) -> nix::Result<()> {
    let request = UnmapGrantRef {
        index,
        count,
        pad: 0,
    };
    // SAFETY: the kernel reads one `struct ioctl_gntdev_unmap_grant_ref`
    // from the pointer, which points at `request`, laid out as the header
    // declares and alive for the call.
    unsafe { ioctl_gntdev_unmap_grant_ref(device.as_raw_fd(), &request) }.map(drop)
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: binds `remote_port` of `domid` (which
/// the domain allocated unbound for us) to a new local port on `evtchn`.
pub fn bind_interdomain(evtchn: BorrowedFd<'_>, domid: u16, remote_port: u32) -> io::Result<u32> {
    let request = BindInterdomain {
        remote_domain: u32::from(domid),
        remote_port,
    };
    // SAFETY: the kernel reads one `struct ioctl_evtchn_bind_interdomain`
    // from the pointer, which points at `request`, alive for the call.
    let local = unsafe { ioctl_evtchn_bind_interdomain(evtchn.as_raw_fd(), &request) }?;
    u32::try_from(local).map_err(|_| io::Error::other(format!("local port {local}")))
}

/// `IOCTL_EVTCHN_UNBIND`.
pub fn unbind(evtchn: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let request = PortArg { port };
    // SAFETY: the kernel reads one `struct ioctl_evtchn_unbind` from the
    // pointer, which points at `request`, alive for the call.
    unsafe { ioctl_evtchn_unbind(evtchn.as_raw_fd(), &request) }?;
    Ok(())
}

/// `IOCTL_EVTCHN_NOTIFY`: signals the remote end of `port`. Never blocks.
pub fn notify(evtchn: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let request = PortArg { port };
    // SAFETY: the kernel reads one `struct ioctl_evtchn_notify` from the
    // pointer, which points at `request`, alive for the call.
    unsafe { ioctl_evtchn_notify(evtchn.as_raw_fd(), &request) }?;
    Ok(())
}

/// `IOCTL_EVTCHN_RESET`: clears the pending-port buffer after an overflow.
pub fn reset(evtchn: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the ioctl takes no argument; the descriptor is an open evtchn
    // device.
    unsafe { ioctl_evtchn_reset(evtchn.as_raw_fd()) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers as `_IOC(_IOC_NONE, type, nr, size)` gives them
    /// on x86: size in bits 16..30, type in 8..16, nr in 0..8.
    #[test]
    fn ioctl_numbers_match_the_linux_headers() {
        type N = nix::sys::ioctl::ioctl_num_type;
        let ioc = |ty: u8, nr: N, size: N| (size << 16) | (N::from(ty) << 8) | nr;
        assert_eq!(
            nix::ioc!(NONE, b'G', 0, MAP_GRANT_REF_SIZE),
            ioc(b'G', 0, 24)
        );
        assert_eq!(
            nix::ioc!(NONE, b'G', 1, size_of::<UnmapGrantRef>()),
            ioc(b'G', 1, 16)
        );
        assert_eq!(
            nix::ioc!(NONE, b'E', 1, size_of::<BindInterdomain>()),
            ioc(b'E', 1, 8)
        );
        assert_eq!(
            nix::ioc!(NONE, b'E', 3, size_of::<PortArg>()),
            ioc(b'E', 3, 4)
        );
        assert_eq!(
            nix::ioc!(NONE, b'E', 4, size_of::<PortArg>()),
            ioc(b'E', 4, 4)
        );
        assert_eq!(nix::ioc!(NONE, b'E', 5, 0), ioc(b'E', 5, 0));
        // IOCTL_GNTDEV_MAP_GRANT_REF is 0x184700 in every libxengnttab.
        assert_eq!(ioc(b'G', 0, 24), 0x18_4700);
    }

    #[test]
    fn pairs_lay_out_first_then_second() {
        let p = pair(0x1122_3344, 0x5566_7788);
        let b = p.to_ne_bytes();
        assert_eq!(&b[..4], &0x1122_3344u32.to_ne_bytes());
        assert_eq!(&b[4..], &0x5566_7788u32.to_ne_bytes());
    }
}
