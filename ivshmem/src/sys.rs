//! The crate's one room for `unsafe`: mapping and unmapping shared memory,
//! turning a mapping into a [`ring::Window`], and taking ownership of the
//! descriptors that arrive by `SCM_RIGHTS`.
//!
//! Everything else in the crate is safe code on top of these three things.

use std::any::Any;
use std::io::{self, IoSliceMut};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// A `MAP_SHARED`, read/write mapping of the first `len` bytes of a file,
/// unmapped when dropped.
///
/// The memory is never touched through a Rust reference: the only way in is
/// [`Mapping::window`], whose accesses are atomic or volatile.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: `Mapping` owns an address range and only unmaps it on drop; it never
// reads or writes through the pointer itself. Which thread drops it does not
// matter to `munmap`.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` offers no access to the memory except by creating a
// `Window`, which is itself `Sync` (atomic and volatile accesses only).
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared and read/write.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: NonZeroUsize) -> io::Result<Mapping> {
        // SAFETY: with no address hint the kernel picks an unused range, so the
        // new mapping cannot overlap (and so invalidate) any memory Rust
        // already uses. The result is owned by the returned `Mapping` and
        // accessed only through `Window` (atomics and volatile copies), never
        // through references, so another process writing the same file at any
        // time is no data race in Rust's sense.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// A window over the whole mapping that keeps it mapped for as long as
    /// the window (or any clone or sub-window) exists.
    pub(crate) fn window(self: &Arc<Self>) -> ring::Window {
        let owner: Arc<dyn Any + Send + Sync> = self.clone();
        // SAFETY: `ptr..ptr + len` is mapped read/write (`Mapping::new`) and
        // stays mapped until this `Mapping` is dropped, which `owner` (a
        // strong reference to it, held by the window) prevents while any
        // window exists. This module never creates a reference into the
        // memory, and nothing else can reach the pointer.
        unsafe { ring::Window::from_raw_parts(self.ptr.as_ptr(), self.len.get(), Some(owner)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made in
        // `Mapping::new`, unmapped once, here. Every window onto it holds an
        // `Arc` to this `Mapping`, so none can outlive the unmap.
        if let Err(err) = unsafe { munmap(self.ptr.cast(), self.len.get()) } {
            log::error!("ivshmem: munmap of {} bytes failed: {err}", self.len);
        }
    }
}

/// `SCM_MAX_FD` in Linux: no sender can attach more descriptors to one
/// message, so a control buffer this large is never truncated by
/// `SCM_RIGHTS` and every descriptor the kernel installs comes back owned.
const SCM_MAX_FD: usize = 253;

/// `recvmsg` into `buf`, returning the byte count and every descriptor that
/// came along (close-on-exec, owned: dropping one closes it).
///
/// A return of `(0, _)` for a non-empty `buf` means end of stream.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut control = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    // `cmsgs` fails only on MSG_CTRUNC, which SCM_RIGHTS alone cannot cause
    // with this buffer (credentials are never enabled on these sockets).
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel has just installed `fd` in this
                // process's table for this `recvmsg` call; no other code has
                // seen the number, so this `OwnedFd` is its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
