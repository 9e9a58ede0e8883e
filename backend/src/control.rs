//! The control socket: `ib-backend stats` connects, sends `stats`, and reads
//! the report.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::gateway::SharedGatewayStats;
use crate::stats;
use crate::worker::Snapshots;
use std::sync::Mutex;

pub struct Control {
    gateway: Mutex<Option<(SharedGatewayStats, String)>>,
    listener: UnixListener,
    provider: &'static str,
    epoch: std::sync::atomic::AtomicU32,
    snapshots: Snapshots,
}

impl Control {
    pub fn bind(
        path: &Path,
        provider: &'static str,
        epoch: u32,
        snapshots: Snapshots,
    ) -> io::Result<Control> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {} is in use by a running back end",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on control socket {}: {e}", path.display()),
            )
        })?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            gateway: Mutex::new(None),
            listener,
            provider,
            epoch: std::sync::atomic::AtomicU32::new(epoch),
            snapshots,
        })
    }

    pub fn set_gateway(&self, stats: SharedGatewayStats, tap: String) {
        *self.gateway.lock().unwrap_or_else(|e| e.into_inner()) = Some((stats, tap));
    }

    pub fn set_epoch(&self, epoch: u32) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn snapshots(&self) -> Snapshots {
        self.snapshots.clone()
    }

    /// Answers every waiting request. Never blocks for long.
    pub fn serve_pending(&self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
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
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let mut line = String::new();
        BufReader::new(&stream).take_line(&mut line)?;
        let mut stream = stream;
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
                        "gateway tap={tap} up={} to_fabric={} to_linux={} arp_proxied={} dropped_from_linux={} dropped_to_linux={} dropped_spoofed={}",
                        u8::from(g.up),
                        g.to_fabric,
                        g.to_linux,
                        g.arp_proxied,
                        g.dropped_from_linux,
                        g.dropped_to_linux,
                        g.dropped_spoofed
                    )?;
                }
                stream.write_all(
                    stats::render(
                        self.provider,
                        self.epoch.load(std::sync::atomic::Ordering::Relaxed),
                        &seats,
                    )
                    .as_bytes(),
                )
            }
            other => writeln!(stream, "error: unknown command {other:?} (known: stats)"),
        }
    }
}

trait TakeLine {
    fn take_line(self, out: &mut String) -> io::Result<usize>;
}

impl<R: io::Read> TakeLine for BufReader<R> {
    fn take_line(mut self, out: &mut String) -> io::Result<usize> {
        self.read_line(out)
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
