//! The control socket: `ib-backend stats` connects, sends `stats`, and reads
//! the report.
//!
//! It is served on its own thread ([`Control::run`]), so a slow client
//! delays only other control clients, never the supervisor link; and each
//! client gets one request line of at most [`request::MAX_REQUEST`] bytes
//! within [`request::REQUEST_DEADLINE`], and at most that long again to take
//! the reply.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::SocketGroup;

mod request;

use request::{RequestError, REQUEST_DEADLINE};

use crate::dhcp::SharedDhcpStats;
use crate::gateway::SharedGatewayStats;
use crate::stats;
use crate::worker::Snapshots;
use std::sync::Mutex;

pub struct Control {
    gateway: Mutex<Option<(SharedGatewayStats, String)>>,
    dhcp: Mutex<Option<SharedDhcpStats>>,
    /// The sim fabric, for its drop counters (none on rdma).
    sim: Mutex<Option<verbs_shim::sim::SimFabric>>,
    listener: UnixListener,
    provider: &'static str,
    epoch: std::sync::atomic::AtomicU32,
    snapshots: Snapshots,
}

impl Control {
    pub fn bind(
        path: &Path,
        group: Option<&SocketGroup>,
        provider: &'static str,
        epoch: u32,
        snapshots: Snapshots,
    ) -> io::Result<Control> {
        let listener = crate::listen::bind(path, group, "control socket")?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            gateway: Mutex::new(None),
            dhcp: Mutex::new(None),
            sim: Mutex::new(None),
            listener,
            provider,
            epoch: std::sync::atomic::AtomicU32::new(epoch),
            snapshots,
        })
    }

    pub fn set_gateway(&self, stats: SharedGatewayStats, tap: String) {
        *self.gateway.lock().unwrap_or_else(|e| e.into_inner()) = Some((stats, tap));
    }

    /// `stats` also reports the sim fabric's counters.
    pub fn set_sim_fabric(&self, fabric: verbs_shim::sim::SimFabric) {
        *self.sim.lock().unwrap_or_else(|e| e.into_inner()) = Some(fabric);
    }

    pub fn set_dhcp(&self, stats: SharedDhcpStats) {
        *self.dhcp.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    pub fn set_epoch(&self, epoch: u32) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn snapshots(&self) -> Snapshots {
        self.snapshots.clone()
    }

    /// Serves requests until `stop` is set.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => self.serve_pending(),
                Err(e) => {
                    log::error!("control socket: poll failed: {e}");
                    return;
                }
            }
        }
    }

    /// Answers every waiting request, each within its deadlines.
    pub fn serve_pending(&self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    log::debug!(
                        "control: connection from {}",
                        crate::listen::peer_credentials(&stream)
                    );
                    if let Err(e) = self.answer(stream) {
                        log::debug!("control request failed: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket: {e}");
                    return;
                }
            }
        }
    }

    fn answer(&self, stream: UnixStream) -> io::Result<()> {
        let line = request::read_line(&stream, Instant::now() + REQUEST_DEADLINE);
        // The reply is small; a client that does not take it within the
        // timeout loses it.
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
        let mut stream = stream;
        let line = match line {
            Ok(line) => line,
            Err(e @ (RequestError::TooLong | RequestError::NotText)) => {
                log::warn!(
                    "control: refused a request from {}: {e}",
                    crate::listen::peer_credentials(&stream)
                );
                return writeln!(stream, "error: {e}");
            }
            Err(e) => {
                log::debug!("control: no request: {e}");
                return Ok(());
            }
        };
        match line.trim() {
            "stats" => {
                let seats: Vec<_> = {
                    let all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
                    all.iter().flatten().cloned().collect()
                };
                if let Some((stats, tap)) = &*self.gateway.lock().unwrap_or_else(|e| e.into_inner())
                {
                    let g = *stats.lock().unwrap_or_else(|e| e.into_inner());
                    writeln!(
                        stream,
                        "gateway tap={tap} up={} to_fabric={} to_linux={} arp_proxied={} dropped_from_linux={} dropped_to_linux={} dropped_spoofed={} dropped_spoofed_arp={} nd_proxied={} dropped_spoofed_nd={}",
                        u8::from(g.up),
                        g.to_fabric,
                        g.to_linux,
                        g.arp_proxied,
                        g.dropped_from_linux,
                        g.dropped_to_linux,
                        g.dropped_spoofed,
                        g.dropped_spoofed_arp,
                        g.nd_proxied,
                        g.dropped_spoofed_nd
                    )?;
                }
                if let Some(stats) = &*self.dhcp.lock().unwrap_or_else(|e| e.into_inner()) {
                    let d = *stats.lock().unwrap_or_else(|e| e.into_inner());
                    writeln!(
                        stream,
                        "dhcp requests={} offers={} acks={} naks={} no_lease={} malformed={} silent={} send_failures={}",
                        d.requests,
                        d.offers,
                        d.acks,
                        d.naks,
                        d.no_lease,
                        d.malformed,
                        d.silent,
                        d.send_failures
                    )?;
                }
                stream.write_all(
                    stats::render(
                        self.provider,
                        self.epoch.load(std::sync::atomic::Ordering::Relaxed),
                        &seats,
                    )
                    .as_bytes(),
                )?;
                // After the report: tools read it from its `backend` line on.
                match &*self.sim.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(fabric) => {
                        stream.write_all(stats::render_sim_fabric(&fabric.stats()).as_bytes())
                    }
                    None => Ok(()),
                }
            }
            other => writeln!(stream, "error: unknown command {other:?} (known: stats)"),
        }
    }
}

/// The client side, for `ib-backend stats`.
pub fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the back end's control socket {}: {e} (is ib-backend running? see --control)", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(stream, "{command}")?;
    let mut out = String::new();
    io::Read::read_to_string(&mut stream, &mut out)?;
    Ok(out)
}
