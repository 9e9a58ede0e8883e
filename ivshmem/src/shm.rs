//! [`SharedMemory`]: the ivshmem shared-memory object, mapped.
//!
//! Whoever else holds the memfd (QEMU, a hosted guest, a compromised guest
//! process) could `ftruncate` it: shrinking it turns our next access into a
//! `SIGBUS`, growing it hands out more memory than configured. So the memfd
//! is created with `MFD_ALLOW_SEALING` and sealed against shrinking and
//! growing (and against further sealing) before anyone else gets it, and a
//! memfd that arrives from elsewhere is mapped only if it carries those
//! seals (`F_GET_SEALS`) and, where the caller knows it, has the expected
//! size.

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;

use crate::sys::Mapping;

/// The seals a shared-memory file must carry before it is mapped: its size
/// can then change no more.
pub const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// Why a shared-memory descriptor was refused (wrapped in an
/// `io::ErrorKind::InvalidData` error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShmRefused {
    /// `fstat` reports no size (an empty file, a socket, an eventfd...).
    Empty {
        /// What `fstat` said.
        size: i64,
    },
    /// The file cannot be sealed at all (not a memfd, or one created
    /// without `MFD_ALLOW_SEALING`).
    NotSealable {
        /// The `F_GET_SEALS` error.
        errno: nix::errno::Errno,
    },
    /// Its size may still change: shrink and grow seals are missing.
    Unsealed {
        /// The seals it has (`F_SEAL_*` bits).
        seals: i32,
    },
    /// Its size is not the one expected.
    WrongSize {
        /// What `fstat` said.
        size: i64,
        /// What the caller expected.
        expected: usize,
    },
}

impl fmt::Display for ShmRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmRefused::Empty { size } => {
                write!(f, "shared-memory descriptor has size {size}: nothing to map")
            }
            ShmRefused::NotSealable { errno } => write!(
                f,
                "shared-memory descriptor cannot carry seals ({errno}): not a memfd created with MFD_ALLOW_SEALING"
            ),
            ShmRefused::Unsealed { seals } => write!(
                f,
                "shared-memory descriptor is not sealed against shrinking and growing (seals {seals:#x}); refusing to map it"
            ),
            ShmRefused::WrongSize { size, expected } => write!(
                f,
                "shared-memory descriptor has {size} bytes, expected {expected}"
            ),
        }
    }
}

impl std::error::Error for ShmRefused {}

impl From<ShmRefused> for io::Error {
    fn from(refused: ShmRefused) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, refused)
    }
}

/// A memfd mapped `MAP_SHARED` read/write, whole, whose size is sealed.
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
    /// `MFD_CLOEXEC | MFD_ALLOW_SEALING`, `ftruncate`, then sealed with
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), mapped. `name` only
    /// shows up in `/proc/PID/fd` and `/proc/PID/maps`.
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
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        ftruncate(&fd, off)?;
        fcntl(
            fd.as_fd(),
            FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
        )?;
        let map = Mapping::new(fd.as_fd(), size)?;
        Ok(SharedMemory {
            fd,
            map: Arc::new(map),
        })
    }

    /// Maps the whole of an existing memfd, for example the descriptor an
    /// ivshmem server sent. Its size comes from `fstat`.
    ///
    /// Errors (`InvalidData`, carrying a [`ShmRefused`]): the file reports
    /// size 0 (a socket or an eventfd does), or it is not sealed against
    /// shrinking and growing, so whoever else holds it could truncate it
    /// under the mapping.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SharedMemory> {
        let size = sealed_size(fd.as_fd())?;
        let map = Mapping::new(fd.as_fd(), size)?;
        Ok(SharedMemory {
            fd,
            map: Arc::new(map),
        })
    }

    /// [`from_fd`](SharedMemory::from_fd), and the size must be exactly
    /// `expected` bytes (the configured window): a descriptor handed over
    /// by someone else is refused with [`ShmRefused::WrongSize`] otherwise.
    pub fn from_fd_of_size(fd: OwnedFd, expected: usize) -> io::Result<SharedMemory> {
        let size = sealed_size(fd.as_fd())?;
        if size.get() != expected {
            return Err(ShmRefused::WrongSize {
                size: i64::try_from(size.get()).unwrap_or(i64::MAX),
                expected,
            }
            .into());
        }
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

/// The size of a memfd whose size can no longer change. The seals are
/// checked first: only then is the size that `fstat` reports final.
fn sealed_size(fd: BorrowedFd<'_>) -> Result<NonZeroUsize, ShmRefused> {
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(|errno| {
        if errno == nix::errno::Errno::EINVAL {
            // A socket, an eventfd, a pipe: not even a file that could be
            // sealed. Say what fstat sees, which is the clearer story.
            match fstat(fd) {
                Ok(st) if st.st_size <= 0 => ShmRefused::Empty { size: st.st_size },
                _ => ShmRefused::NotSealable { errno },
            }
        } else {
            ShmRefused::NotSealable { errno }
        }
    })?;
    if !SealFlag::from_bits_retain(seals).contains(REQUIRED_SEALS) {
        return Err(ShmRefused::Unsealed { seals });
    }
    let st = fstat(fd).map_err(|errno| ShmRefused::NotSealable { errno })?;
    usize::try_from(st.st_size)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or(ShmRefused::Empty { size: st.st_size })
}
