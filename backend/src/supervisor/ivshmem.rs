//! The supervisor's ivshmem seats: the listening sockets, the handshake
//! with each guest (QEMU or a hosted guest), and the descriptors of every
//! attached guest, kept here so that a new worker can be handed them again.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use ivshmem::server::ClientState;
use ivshmem::{EventFd, SharedMemory};

use crate::config::{Config, GuestConfig};
use crate::handoff::{Handoff, SessionFds};

/// Our peer id in the ivshmem protocol, and the guest's.
pub const BACKEND_PEER: u16 = 0;
pub const GUEST_PEER: u16 = 1;
/// One notification vector each way is all the channel needs; QEMU guests
/// use `vectors=1` (or more).
pub const VECTORS: usize = 1;

/// Which descriptor a poll slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Seat `i`'s listening socket.
    Listener(usize),
    /// Seat `i`'s attached guest's socket.
    Client(usize),
}

/// One ivshmem seat.
struct IvshmemSeat {
    seat: usize,
    name: String,
    config: GuestConfig,
    listener: UnixListener,
    session: Option<SessionFds>,
}

/// Every ivshmem seat. Removes the socket files it bound when dropped.
pub struct IvshmemSeats {
    seats: Vec<IvshmemSeat>,
    files: Vec<PathBuf>,
}

impl Drop for IvshmemSeats {
    fn drop(&mut self) {
        for path in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn new_session(config: &GuestConfig, client: UnixStream) -> std::io::Result<SessionFds> {
    let shm = SharedMemory::create(&format!("ibguest-{}", config.name), config.window)?;
    let doorbell = EventFd::new()?;
    let interrupt = EventFd::new()?;
    let own: [EventFd; VECTORS] = [doorbell.try_clone()?];
    let guest: [EventFd; VECTORS] = [interrupt.try_clone()?];
    ivshmem::server::send_handshake(
        &client,
        GUEST_PEER,
        shm.fd(),
        &[(BACKEND_PEER, &own[..])],
        &guest,
    )?;
    Ok(SessionFds {
        client,
        memory: shm.try_clone_fd()?,
        doorbell: doorbell.into(),
        interrupt: interrupt.into(),
    })
}

impl IvshmemSeats {
    /// Listens on every ivshmem seat's socket.
    pub fn bind(config: &Config) -> Result<IvshmemSeats, String> {
        let mut all = IvshmemSeats {
            seats: Vec::new(),
            files: Vec::new(),
        };
        for (i, g) in config.guests.iter().enumerate() {
            let Some(socket) = g.attach.socket() else {
                continue;
            };
            let listener = crate::listen::bind(
                socket,
                config.socket_group.as_ref(),
                &format!("guest {}", g.name),
            )
            .map_err(|e| e.to_string())?;
            // Only sockets this supervisor bound are removed when it ends.
            all.files.push(socket.to_path_buf());
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("guest {}: {e}", g.name))?;
            log::info!("guest {}: listening on {}", g.name, socket.display());
            all.seats.push(IvshmemSeat {
                seat: i,
                name: g.name.clone(),
                config: g.clone(),
                listener,
                session: None,
            });
        }
        Ok(all)
    }

    /// What to poll: every listener and every attached guest's socket.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Slot)> {
        let mut fds = Vec::new();
        for (k, s) in self.seats.iter().enumerate() {
            fds.push((s.listener.as_fd(), Slot::Listener(k)));
            if let Some(session) = &s.session {
                fds.push((session.client.as_fd(), Slot::Client(k)));
            }
        }
        fds
    }

    /// Handles the slots that polled ready; returns what to send the
    /// worker.
    pub fn ready(&mut self, ready: &[Slot]) -> Vec<Handoff> {
        let mut out = Vec::new();
        for slot in ready {
            if let Slot::Client(k) = *slot {
                let s = &mut self.seats[k];
                let Some(fds) = &s.session else { continue };
                // The rule (docs/CHANNEL.md): end of stream or an error is a
                // guest that left; any byte is a protocol violation. The
                // worker, which sees the same socket, counts the violation
                // and disconnects the guest; here the copies are released.
                match ivshmem::server::client_state(&fds.client) {
                    Ok(ClientState::Quiet) => continue,
                    Ok(ClientState::Closed) => {
                        log::info!("guest {}: socket closed; releasing its resources", s.name)
                    }
                    Ok(ClientState::Spoke) => log::warn!(
                        "guest {}: sent data on its ivshmem socket (protocol violation); releasing its resources",
                        s.name
                    ),
                    Err(e) => log::info!(
                        "guest {}: socket error ({e}); releasing its resources",
                        s.name
                    ),
                }
                s.session = None;
            }
        }
        for slot in ready {
            let Slot::Listener(k) = *slot else { continue };
            let s = &mut self.seats[k];
            let Ok((client, _)) = s.listener.accept() else {
                continue;
            };
            log::info!(
                "guest {}: connection from {}",
                s.name,
                crate::listen::peer_credentials(&client)
            );
            let seat = s.seat as u32;
            if s.session.is_some() {
                drop(client);
                out.push(Handoff::Refused { seat });
                continue;
            }
            match new_session(&s.config, client) {
                Ok(fds) => {
                    match fds.try_clone() {
                        Ok(copy) => out.push(Handoff::Session {
                            seat,
                            restart: false,
                            fds: copy,
                        }),
                        Err(e) => log::error!("cannot duplicate descriptors: {e}"),
                    }
                    s.session = Some(fds);
                }
                Err(e) => log::warn!("guest {}: handshake failed: {e}", s.name),
            }
        }
        out
    }

    /// Every attached guest, for a new worker.
    pub fn sessions(&self) -> Vec<Handoff> {
        let mut out = Vec::new();
        for s in &self.seats {
            let Some(fds) = &s.session else { continue };
            match fds.try_clone() {
                Ok(copy) => out.push(Handoff::Session {
                    seat: s.seat as u32,
                    restart: true,
                    fds: copy,
                }),
                Err(e) => log::error!("cannot duplicate descriptors: {e}"),
            }
        }
        out
    }
}
