//! The ivshmem-doorbell transport of the ibguest channel (std, Linux).
//!
//! Under QEMU a guest's channel window is the shared memory of an
//! `ivshmem-doorbell` device, and notifications are its eventfds: the back
//! end writes the guest's eventfd for vector *v* and QEMU raises MSI-X vector
//! *v*; the guest writes `(peer << 16) | v` to the Doorbell register and QEMU
//! writes that peer's eventfd. The back end is the ivshmem server that hands
//! out the memory and the eventfds (QEMU `docs/specs/ivshmem-spec.rst`).
//!
//! - [`SharedMemory`]: a memfd mapped shared, seen through a [`ring::Window`].
//! - [`EventFd`]: one interrupt vector.
//! - [`server`]: the handshake and notifications the back end sends.
//! - [`client`]: what QEMU does with them, for hosted guests and tests.
//! - [`wire`]: the message framing both share.
//!
//! # Example
//!
//! A back end serving one client (QEMU would be that client), with the back
//! end itself as peer 0:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ivshmem::{client, server, EventFd, SharedMemory};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::env::temp_dir().join(format!("ivshmem-doc-{}.sock", std::process::id()));
//! let listener = server::bind(&path)?;
//! let back_end = std::thread::spawn(move || -> std::io::Result<_> {
//!     let (stream, _) = listener.accept()?;
//!     let shm = Arc::new(SharedMemory::create("guest-1", 1 << 20)?);
//!     let mine = [EventFd::new()?];  // back end = peer 0, one vector
//!     let guest = [EventFd::new()?]; // the guest's one vector
//!     server::send_handshake(&stream, 1, shm.fd(), &[(0, &mine)], &guest)?;
//!     Ok((stream, shm, mine, guest))
//! });
//!
//! let conn = client::connect(&path, 1, Duration::from_secs(5))?;
//! let (_stream, shm, mine, guest) = back_end.join().unwrap()?;
//! std::fs::remove_file(&path)?;
//!
//! shm.window().write_bytes(0, b"IBGC")?;          // the back end writes...
//! let mut magic = [0u8; 4];
//! conn.shm.window().read_bytes(0, &mut magic)?;   // ...the guest sees it
//! assert_eq!(&magic, b"IBGC");
//!
//! guest[0].notify()?;                             // QEMU: MSI-X vector 0
//! assert!(conn.vectors[0].wait_timeout(Some(Duration::from_secs(5)))?);
//! conn.ring(0, 0)?;                               // guest: Doorbell = (0 << 16) | 0
//! assert!(mine[0].wait_timeout(Some(Duration::from_secs(5)))?);
//! # Ok(())
//! # }
//! ```
//!
//! `unsafe` code lives only in the private `sys` module (mmap/munmap, the
//! window over the mapping, descriptors received by `SCM_RIGHTS`) and in
//! `stall_guard` (installing its no-op signal handler).

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod client;
mod eventfd;
pub mod server;
mod shm;
#[allow(unsafe_code)]
pub mod stall_guard;
#[allow(unsafe_code)]
mod sys;
mod wait;
pub mod wire;

pub use client::{ClientError, Connection, PeerEvent};
pub use eventfd::{EventFd, NotifyRefused, NOTIFY_STALL_LIMIT};
pub use shm::{SharedMemory, ShmRefused, REQUIRED_SEALS};
