//! The supervisor: the long-lived process that owns what guests attach to.
//!
//! QEMU takes the shared memory and eventfds only once per device and cannot
//! re-attach to a new server. So the supervisor owns the listening sockets
//! and, for every attached guest, its socket, shared memory and eventfds. It
//! does the ivshmem handshake itself and hands copies of the descriptors to
//! a worker process over SCM_RIGHTS. When the worker dies (a crash, or
//! `kill -9`), the supervisor starts a new one and hands it every guest
//! again; the new worker announces a new epoch and the guests re-attach,
//! with their TCP connections intact.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivshmem::{EventFd, SharedMemory};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::Config;
use crate::handoff::{self, Handoff, SessionFds};

/// Our peer id in the ivshmem protocol, and the guest's.
pub const BACKEND_PEER: u16 = 0;
pub const GUEST_PEER: u16 = 1;
/// One notification vector each way is all the channel needs; QEMU guests
/// use `vectors=1` (or more).
pub const VECTORS: usize = 1;
/// A worker that exits with this code could not start (no device, a
/// socket in use): restarting it would not help.
pub const EXIT_FATAL: u8 = 78;
/// Most worker restarts in `RESTART_WINDOW` before the supervisor gives up.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(30);

struct WorkerProcess {
    child: Child,
    link: UnixStream,
}

fn spawn_worker(args: &[OsString]) -> std::io::Result<WorkerProcess> {
    let (link, theirs) = UnixStream::pair()?;
    // The worker's end must survive exec.
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty()))?;
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("worker")
        .arg("--handoff-fd")
        .arg(theirs.as_raw_fd().to_string())
        .args(args)
        .spawn()?;
    drop(theirs);
    log::info!("supervisor: worker {} started", child.id());
    Ok(WorkerProcess { child, link })
}

fn new_session(
    config: &crate::config::GuestConfig,
    client: UnixStream,
) -> std::io::Result<SessionFds> {
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

/// Removes the guests' socket files however the supervisor ends.
struct SocketFiles(Vec<std::path::PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Runs until SIGTERM/SIGINT. `worker_args` are the `run` arguments, passed
/// on to each worker.
pub fn run(config: Config, worker_args: Vec<OsString>) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    // Only sockets this supervisor bound are removed when it ends.
    let mut files = SocketFiles(Vec::new());
    let mut listeners: Vec<UnixListener> = Vec::new();
    for g in &config.guests {
        let l = ivshmem::server::bind(&g.socket).map_err(|e| {
            format!(
                "guest {}: cannot listen on {}: {e}",
                g.name,
                g.socket.display()
            )
        })?;
        files.0.push(g.socket.clone());
        l.set_nonblocking(true)?;
        log::info!("guest {}: listening on {}", g.name, g.socket.display());
        listeners.push(l);
    }
    let mut sessions: Vec<Option<SessionFds>> = config.guests.iter().map(|_| None).collect();
    let mut worker = spawn_worker(&worker_args)?;
    let mut restarts: Vec<Instant> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // What to watch: every listener and every attached guest's socket.
        let (listen_ready, gone): (Vec<bool>, Vec<bool>) = {
            let mut fds: Vec<PollFd<'_>> = listeners
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .collect();
            let mut owners = Vec::new();
            for (i, s) in sessions.iter().enumerate() {
                if let Some(s) = s {
                    fds.push(PollFd::new(s.client.as_fd(), PollFlags::POLLIN));
                    owners.push(i);
                }
            }
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            let listen_ready = fds[..listeners.len()].iter().map(ready).collect();
            let mut gone = vec![false; sessions.len()];
            for (f, &i) in fds[listeners.len()..].iter().zip(&owners) {
                if ready(f) {
                    gone[i] = sessions[i]
                        .as_ref()
                        .is_some_and(|s| ivshmem::server::client_gone(&s.client).unwrap_or(true));
                }
            }
            (listen_ready, gone)
        };
        for (i, g) in gone.iter().enumerate() {
            if *g {
                log::info!(
                    "guest {}: socket closed; releasing its resources",
                    config.guests[i].name
                );
                sessions[i] = None;
            }
        }
        for (i, ready) in listen_ready.iter().enumerate() {
            if !ready {
                continue;
            }
            let Ok((client, _)) = listeners[i].accept() else {
                continue;
            };
            if sessions[i].is_some() {
                drop(client);
                let _ = handoff::send(&worker.link, &Handoff::Refused { seat: i as u32 });
                continue;
            }
            match new_session(&config.guests[i], client) {
                Ok(fds) => {
                    match fds.try_clone() {
                        Ok(copy) => {
                            if let Err(e) = handoff::send(
                                &worker.link,
                                &Handoff::Session {
                                    seat: i as u32,
                                    restart: false,
                                    fds: copy,
                                },
                            ) {
                                log::error!(
                                    "cannot hand guest {} to the worker: {e}",
                                    config.guests[i].name
                                );
                            }
                        }
                        Err(e) => log::error!("cannot duplicate descriptors: {e}"),
                    }
                    sessions[i] = Some(fds);
                }
                Err(e) => log::warn!("guest {}: handshake failed: {e}", config.guests[i].name),
            }
        }
        if let Ok(Some(status)) = worker.child.try_wait() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if status.code() == Some(i32::from(EXIT_FATAL)) {
                return Err("the worker could not start (see above); not restarting it".into());
            }
            log::error!(
                "supervisor: worker {} died ({status}); restarting it",
                worker.child.id()
            );
            restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
            restarts.push(Instant::now());
            if restarts.len() > MAX_RESTARTS {
                return Err(format!(
                    "the worker died {} times within {RESTART_WINDOW:?}; giving up",
                    restarts.len()
                )
                .into());
            }
            worker = spawn_worker(&worker_args)?;
            for (i, s) in sessions.iter().enumerate() {
                let Some(s) = s else { continue };
                match s.try_clone() {
                    Ok(copy) => {
                        let _ = handoff::send(
                            &worker.link,
                            &Handoff::Session {
                                seat: i as u32,
                                restart: true,
                                fds: copy,
                            },
                        );
                    }
                    Err(e) => log::error!("cannot duplicate descriptors: {e}"),
                }
            }
        }
    }
    log::info!("supervisor: shutting down");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match worker.child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > deadline => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}
