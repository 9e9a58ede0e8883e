//! [`SharedMemory`]: the ivshmem shared-memory object, mapped.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use crate::sys::Mapping;

/// A file (normally a memfd) mapped `MAP_SHARED` read/write, whole.
///
/// The back end creates one per guest with [`create`](SharedMemory::create)
/// and hands its descriptor to QEMU in the handshake; QEMU (or a hosted
/// guest) maps the same file. Access the memory through
/// [`window`](SharedMemory::window).
///
/// QEMU exposes the memory as BAR2, and a PCI BAR's size is a power of two:
/// give QEMU a power-of-two size.
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    map: Arc<Mapping>,
}

impl SharedMemory {
    /// A new zero-filled memfd of `len` bytes (`memfd_create` with
    /// `MFD_CLOEXEC`, `ftruncate`), mapped. `name` only shows up in
    /// `/proc/PID/fd` and `/proc/PID/maps`.
    pub fn create(name: &str, len: usize) -> io::Result<SharedMemory> {
        let size = NonZeroUsize::new(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "shared memory of 0 bytes")
        })?;
        let off = i64::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared memory of {len} bytes is too large"),
            )
        })?;
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
        ftruncate(&fd, off)?;
        let map = Mapping::new(fd.as_fd(), size)?;
        Ok(SharedMemory {
            fd,
            map: Arc::new(map),
        })
    }

    /// Maps the whole of an existing file, for example the descriptor an
    /// ivshmem server sent. Its size comes from `fstat`; an empty file (or
    /// anything that reports size 0, such as a socket or an eventfd) is an
    /// `InvalidData` error.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedMemory> {
        let st = fstat(&fd)?;
        let size = usize::try_from(st.st_size)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "shared-memory descriptor has size {}: nothing to map",
                        st.st_size
                    ),
                )
            })?;
        let map = Mapping::new(fd.as_fd(), size)?;
        Ok(SharedMemory {
            fd,
            map: Arc::new(map),
        })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The file's descriptor, for sending it to QEMU or a hosted guest.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new descriptor for the same file (close-on-exec).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// A [`ring::Window`] over the whole mapping. The window keeps the
    /// mapping alive on its own: the memory stays mapped until the last
    /// window (or clone or sub-window) onto it is dropped, even after this
    /// `SharedMemory` is gone.
    pub fn window(self: &Arc<Self>) -> ring::Window {
        self.map.window()
    }
}
