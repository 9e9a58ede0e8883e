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
//!
//! Xen guests work the same way with other long-lived things: the
//! supervisor holds the xenstore connection and each domain's device state
//! ([`crate::xen`]), and hands the worker what the domain published; a new
//! worker maps the (still valid) grants again.

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::Config;
use crate::handoff::{self, Handoff};
use crate::xen::XenSeats;

mod ivshmem;

use self::ivshmem::{IvshmemSeats, Slot};

/// A worker that exits with this code could not start (no device, a
/// socket in use): restarting it would not help. The supervisor exits with
/// it too when it cannot start (no xenstore for Xen seats).
pub const EXIT_FATAL: u8 = 78;
/// Most worker restarts in `RESTART_WINDOW` before the supervisor gives up.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(30);

/// Why the supervisor stopped.
#[derive(Debug)]
pub enum SupervisorError {
    /// It could not start, and trying again would not help (exit
    /// [`EXIT_FATAL`]).
    Fatal(String),
    Failed(Box<dyn std::error::Error>),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::Fatal(m) => f.write_str(m),
            SupervisorError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl<E: Into<Box<dyn std::error::Error>>> From<E> for SupervisorError {
    fn from(e: E) -> SupervisorError {
        SupervisorError::Failed(e.into())
    }
}

struct WorkerProcess {
    child: Child,
    link: UnixStream,
    /// The link has not reached end of stream.
    open: bool,
}

impl WorkerProcess {
    fn spawn(args: &[OsString]) -> std::io::Result<WorkerProcess> {
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
        Ok(WorkerProcess {
            child,
            link,
            open: true,
        })
    }

    fn send(&self, messages: Vec<Handoff>) {
        for m in messages {
            if let Err(e) = handoff::send(&self.link, &m) {
                log::error!("cannot hand seat {} to the worker: {e}", m.seat());
            }
        }
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// What polled ready in one round.
struct Ready {
    ivshmem: Vec<Slot>,
    link: bool,
    xen: bool,
}

fn wait_ready(
    ivshmem: &IvshmemSeats,
    worker: &WorkerProcess,
    xen: Option<&XenSeats>,
) -> nix::Result<Ready> {
    let slots = ivshmem.fds();
    let mut fds: Vec<PollFd<'_>> = slots
        .iter()
        .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let link_at = worker.open.then(|| {
        fds.push(PollFd::new(worker.link.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    let xen_at = xen.and_then(|x| x.fd()).map(|fd| {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
        fds.len() - 1
    });
    match poll(&mut fds, PollTimeout::from(100u16)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    Ok(Ready {
        ivshmem: slots
            .iter()
            .zip(&fds)
            .filter(|(_, f)| ready(f))
            .map(|((_, slot), _)| *slot)
            .collect(),
        link: link_at.is_some_and(|i| ready(&fds[i])),
        xen: xen_at.is_some_and(|i| ready(&fds[i])),
    })
}

/// Runs until SIGTERM/SIGINT. `worker_args` are the `run` arguments, passed
/// on to each worker.
pub fn run(config: Config, worker_args: Vec<OsString>) -> Result<(), SupervisorError> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let mut xen = XenSeats::open(&config).map_err(SupervisorError::Fatal)?;
    let mut pending = Vec::new();
    if let Some(x) = &mut xen {
        x.start(&mut pending).map_err(SupervisorError::Fatal)?;
    }
    let mut ivshmem = IvshmemSeats::bind(&config)?;
    let mut worker = WorkerProcess::spawn(&worker_args)?;
    worker.send(pending);
    let mut restarts: Vec<Instant> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let ready = wait_ready(&ivshmem, &worker, xen.as_ref())?;
        worker.send(ivshmem.ready(&ready.ivshmem));
        let mut out = Vec::new();
        if ready.link {
            match handoff::recv_report(&worker.link) {
                Ok(Some(report)) => match &mut xen {
                    Some(x) => x.report(&report, &mut out),
                    None => log::warn!("a Xen report without Xen seats: {report:?}"),
                },
                Ok(None) => worker.open = false,
                Err(e) => {
                    // Our own worker sent something we cannot read: the
                    // stream is out of step. Stop reading it; the worker is
                    // restarted if it dies.
                    log::error!("worker link: {e}");
                    worker.open = false;
                }
            }
        }
        if let Some(x) = &mut xen {
            if ready.xen {
                x.readable(&mut out);
            }
            x.tick(&mut out);
        }
        worker.send(out);
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
            worker = WorkerProcess::spawn(&worker_args)?;
            worker.send(ivshmem.sessions());
            if let Some(x) = &xen {
                worker.send(x.sessions());
            }
        }
    }
    log::info!("supervisor: shutting down");
    worker.stop();
    if let Some(x) = &xen {
        x.log_summary();
    }
    Ok(())
}
