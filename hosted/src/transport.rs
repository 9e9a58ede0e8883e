//! The hosted guest's side of ivshmem-doorbell: connect to the back end's
//! socket exactly as QEMU does, ring its doorbell, and wait for our
//! interrupt vector.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ivshmem::client::{self, ClientError, Connection, PeerEvent};
use ivshmem::EventFd;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ring::Window;
use verbs_shim::front::{AttachError, FrontHca};
use verbs_shim::notify::Notify;

use crate::channel::Channel;
use crate::HostedError;

/// The back end's peer id and the vector we ring.
pub const BACKEND_PEER: u16 = 0;
/// Vectors we ask for: one notification vector each way.
pub const VECTORS: usize = 1;

/// Rings the back end's doorbell (QEMU's Doorbell register write).
pub struct Doorbell(EventFd);

impl Notify for Doorbell {
    fn notify(&self) {
        if let Err(e) = self.0.notify() {
            log::warn!("cannot ring the back end's doorbell: {e}");
        }
    }
}

/// What woke a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Interrupt,
    Timeout,
    /// The back end closed the socket.
    BackendGone,
}

/// A connection to one back-end seat.
pub struct Transport {
    path: PathBuf,
    conn: Connection,
    /// Interrupts taken since start.
    pub interrupts: u64,
}

impl Transport {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Transport, HostedError> {
        let conn = client::connect(path, VECTORS, timeout).map_err(HostedError::Connect)?;
        log::info!("attached to {} as peer {}", path.display(), conn.peer_id);
        Ok(Transport {
            path: path.to_owned(),
            conn,
            interrupts: 0,
        })
    }

    /// Connects again after the back end went away, retrying until
    /// `timeout`.
    pub fn reconnect(&mut self, timeout: Duration) -> Result<(), HostedError> {
        let deadline = Instant::now() + timeout;
        loop {
            match client::connect(&self.path, VECTORS, Duration::from_secs(2)) {
                Ok(conn) => {
                    log::info!(
                        "re-attached to {} as peer {}",
                        self.path.display(),
                        conn.peer_id
                    );
                    self.conn = conn;
                    return Ok(());
                }
                Err(e @ (ClientError::NoServer(_) | ClientError::Timeout))
                    if Instant::now() < deadline =>
                {
                    log::debug!("back end not back yet: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(HostedError::Connect(e)),
            }
        }
    }

    pub fn window(&self) -> Window {
        self.conn.shm.window()
    }

    fn doorbell(&self) -> Result<Doorbell, HostedError> {
        let fd = self
            .conn
            .peers
            .get(&BACKEND_PEER)
            .and_then(|v| v.first())
            .ok_or_else(|| HostedError::Protocol("the back end sent no doorbell vector".into()))?;
        Ok(Doorbell(fd.try_clone().map_err(HostedError::Io)?))
    }

    /// Attaches a `FrontHca` to the window, waiting for the back end to be
    /// ready and then connected.
    pub fn attach(
        &mut self,
        channel: Channel,
        timeout: Duration,
    ) -> Result<FrontHca<Doorbell>, HostedError> {
        let deadline = Instant::now() + timeout;
        let mut front = loop {
            let window = self.window();
            let attached =
                FrontHca::attach_with(window, channel.params, channel.big, self.doorbell()?);
            match attached {
                Ok(f) => break f,
                Err(AttachError::NotReady) if Instant::now() < deadline => {
                    self.wait(Some(Duration::from_millis(50)))?;
                }
                Err(e) => return Err(HostedError::Attach(e)),
            }
        };
        loop {
            if front.poll_connected().map_err(HostedError::Device)? {
                return Ok(front);
            }
            if Instant::now() >= deadline {
                return Err(HostedError::Protocol(
                    "the back end did not complete the handshake".into(),
                ));
            }
            self.wait(Some(Duration::from_millis(50)))?;
        }
    }

    /// Sleeps until our interrupt vector fires, the back end goes away, or
    /// `timeout` passes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake, HostedError> {
        let ms = timeout.map(|t| t.as_millis().min(60_000) as u16);
        let ready = {
            let Some(interrupt) = self.conn.vectors.first() else {
                return Err(HostedError::Protocol("no interrupt vector".into()));
            };
            let mut fds = [
                PollFd::new(interrupt.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.conn.stream.as_fd(), PollFlags::POLLIN),
            ];
            let t = ms.map(PollTimeout::from).unwrap_or(PollTimeout::NONE);
            match poll(&mut fds, t) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(Wake::Timeout),
                Err(e) => return Err(HostedError::Io(e.into())),
            }
            (
                fds[0].revents().unwrap_or(PollFlags::empty()),
                fds[1].revents().unwrap_or(PollFlags::empty()),
            )
        };
        if !ready.1.is_empty() {
            match self.conn.poll_messages() {
                Ok(events) => {
                    if events
                        .iter()
                        .any(|e| matches!(e, PeerEvent::Gone(p) if *p == BACKEND_PEER))
                    {
                        return Ok(Wake::BackendGone);
                    }
                }
                Err(_) => return Ok(Wake::BackendGone),
            }
        }
        if ready.0.contains(PollFlags::POLLIN) {
            let n = self
                .conn
                .vectors
                .first()
                .map(|v| v.drain())
                .transpose()
                .map_err(HostedError::Io)?
                .unwrap_or(0);
            self.interrupts += n;
            return Ok(Wake::Interrupt);
        }
        Ok(Wake::Timeout)
    }
}
