//! The supervisor's Xen side: the xenstore connection and the ibchan
//! devices of the Xen seats.
//!
//! The supervisor owns what lives longer than a worker, so it owns this:
//! it finds each seat's domain, writes the device nodes, reads what the
//! frontend publishes, and hands it to the worker ([`Handoff::Xen`]); the
//! worker maps the grants and binds the event channel itself, and reports
//! back ([`Report`]). If the xenstore connection breaks, it is reopened
//! and everything re-read; sessions carry on meanwhile.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xen_proto::ibchan::{MAX_DIR_PAGES, PAGE_SIZE, REFS_PER_DIR_PAGE};

use crate::config::Config;
use crate::handoff::{Handoff, Report};

pub mod devices;
pub mod store;
pub mod xenstore;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use devices::{Devices, SeatSpec};
use store::{Store, StoreError, NO_TX};
use xenstore::{Conn, XsClient};

/// xenstored's socket in dom0.
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";
/// The kernel's xenstore device (any Linux domain).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// How long to wait before reopening a broken xenstore connection; the
/// wait doubles after each failed attempt, up to `RECONNECT_MAX`.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Which xenstore to open: `configured`, else the socket, else the
/// device. The error says what is missing.
pub fn xenstore_path(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "no xenstore at {} (given with --xenstore); is this dom0 with xenstored running?",
                p.display()
            ))
        };
    }
    for p in [XENSTORED_SOCKET, XENBUS_DEVICE] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err(format!(
        "no xenstore: {XENSTORED_SOCKET} and {XENBUS_DEVICE} are absent; is this dom0 with xenstored running?"
    ))
}

fn open_client(path: &Path) -> Result<XsClient<Conn>, String> {
    let conn =
        Conn::open(path).map_err(|e| format!("cannot open xenstore at {}: {e}", path.display()))?;
    XsClient::new(conn).map_err(|e| format!("xenstore at {}: {e}", path.display()))
}

/// The Xen seats and their xenstore connection.
pub struct XenSeats {
    path: PathBuf,
    client: Option<XsClient<Conn>>,
    devices: Devices,
    reconnect_at: Instant,
    reconnect_delay: Duration,
}

impl XenSeats {
    /// Opens xenstore if any seat is a Xen seat. An error is fatal: the
    /// back end cannot serve those seats at all.
    pub fn open(config: &Config) -> Result<Option<XenSeats>, String> {
        if !config.has_xen_seats() {
            return Ok(None);
        }
        let path = xenstore_path(config.xenstore.as_deref())?;
        let mut client = open_client(&path)?;
        let own = match client.read(NO_TX, "domid") {
            Ok(Some(v)) => xen_proto::xenbus::parse_u32(&v)
                .and_then(|d| u16::try_from(d).ok())
                .ok_or_else(|| {
                    format!(
                        "xenstore: own domid {:?} is not a domid",
                        String::from_utf8_lossy(&v)
                    )
                })?,
            Ok(None) => 0,
            Err(e) => {
                return Err(format!(
                    "xenstore at {}: reading domid: {e}",
                    path.display()
                ))
            }
        };
        let max_pages = (MAX_DIR_PAGES * REFS_PER_DIR_PAGE) as usize;
        let specs: Vec<SeatSpec> = config
            .guests
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                Some(SeatSpec {
                    seat: i as u32,
                    name: g.name.clone(),
                    domain: g.attach.xen_domain()?.to_owned(),
                    max_pages: (g.window / PAGE_SIZE).min(max_pages) as u32,
                })
            })
            .collect();
        for s in &specs {
            log::info!(
                "guest {}: serves Xen domain {:?} (at most {} window pages)",
                s.name,
                s.domain,
                s.max_pages
            );
        }
        log::info!(
            "xen: xenstore at {}, back-end domain {own}, {} Xen seat(s)",
            path.display(),
            specs.len()
        );
        Ok(Some(XenSeats {
            path,
            client: Some(client),
            devices: Devices::new(own, specs),
            reconnect_at: Instant::now(),
            reconnect_delay: RECONNECT_AFTER,
        }))
    }

    /// Registers the watches and binds the domains already running. An
    /// error is fatal at start-up.
    pub fn start(&mut self, out: &mut Vec<Handoff>) -> Result<(), String> {
        let Some(client) = &mut self.client else {
            return Err("xenstore is not connected".into());
        };
        self.devices
            .start(client, out)
            .map_err(|e| format!("xenstore at {}: {e}", self.path.display()))?;
        self.pump(out);
        Ok(())
    }

    /// The descriptor to poll, while connected.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.client.as_ref().map(|c| c.fd())
    }

    /// The xenstore descriptor is readable: handles the watch events.
    pub fn readable(&mut self, out: &mut Vec<Handoff>) {
        if let Some(client) = &mut self.client {
            if let Err(e) = client.poll_events() {
                self.lost(e);
                return;
            }
        }
        self.pump(out);
    }

    /// The worker reported on a session. Without a connection the seat is
    /// updated anyway, and its backend state written on reconnection.
    pub fn report(&mut self, report: &Report, out: &mut Vec<Handoff>) {
        match &mut self.client {
            Some(client) => {
                if let Err(e) = self.devices.report(client, report) {
                    self.lost(e);
                    return;
                }
            }
            None => {
                self.devices.apply_report(report);
            }
        }
        self.pump(out);
    }

    /// Logs what happened, at shutdown.
    pub fn log_summary(&self) {
        let c = self.devices.counters();
        log::info!(
            "xen: {} domain(s) bound, {} publication(s) handed over, {} connected, {} refused, {} failed, {} closed by the frontend, {} released",
            c.bound,
            c.handed,
            c.connected,
            c.refused,
            c.failed,
            c.closed,
            c.released
        );
    }

    /// Every session a new worker must take over.
    pub fn sessions(&self) -> Vec<Handoff> {
        self.devices.sessions()
    }

    /// Periodic upkeep: reopens a broken connection.
    pub fn tick(&mut self, out: &mut Vec<Handoff>) {
        if self.client.is_some() || Instant::now() < self.reconnect_at {
            return;
        }
        let failure = match open_client(&self.path) {
            Ok(mut client) => match self.devices.start(&mut client, out) {
                Ok(()) => {
                    log::info!("xen: reconnected to xenstore at {}", self.path.display());
                    self.client = Some(client);
                    self.reconnect_delay = RECONNECT_AFTER;
                    self.pump(out);
                    return;
                }
                Err(e) => format!("xenstore at {}: {e}", self.path.display()),
            },
            Err(e) => e,
        };
        log::warn!("xen: {failure}; retrying in {:?}", self.reconnect_delay);
        self.reconnect_at = Instant::now() + self.reconnect_delay;
        self.reconnect_delay = (self.reconnect_delay * 2).min(RECONNECT_MAX);
    }

    /// Handles every queued watch event (requests made while handling
    /// them may queue more; each is handled once).
    fn pump(&mut self, out: &mut Vec<Handoff>) {
        loop {
            let Some(client) = &mut self.client else {
                return;
            };
            let Some(event) = client.take_event() else {
                return;
            };
            if let Err(e) = self
                .devices
                .watch_event(client, &event.path, &event.token, out)
            {
                self.lost(e);
                return;
            }
        }
    }

    /// A request failed: a broken connection is reopened; an error answer
    /// (a refused request) is logged and the connection kept.
    fn lost(&mut self, e: StoreError) {
        if !e.is_connection() {
            log::warn!("xen: {e}");
            return;
        }
        log::error!(
            "xen: xenstore at {} failed: {e}; reconnecting",
            self.path.display()
        );
        self.client = None;
        self.reconnect_at = Instant::now() + RECONNECT_AFTER;
    }
}
