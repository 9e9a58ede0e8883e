//! One guest seat in the worker: while a guest is attached, its session
//! (shared window, doorbell and interrupt eventfds, back half and provider
//! port). The supervisor accepts guests and hands their descriptors over.
//!
//! Everything a guest could have touched belongs to the session and is
//! dropped with it: when a guest leaves or is disconnected, its port (QP,
//! buffers, handles) goes away, and the next guest gets fresh resources.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ivshmem::{EventFd, SharedMemory};
use ring::Window;
use verbs_shim::back::{BackConfig, BackError, BackHalf, BackStats, ViolationKind};
use verbs_shim::notify::Notify;
use verbs_shim::{IbMtu, PortAttr, Verbs};

use crate::capture::FabricCapture;
use crate::config::GuestConfig;
use crate::handoff::SessionFds;
use crate::provider::{Fabric, Port};
use crate::stats::{SeatCounters, SeatSnapshot};

/// Service rounds per wake-up before other guests get their turn.
const BUSY_ROUNDS: usize = 64;

/// Raises the guest's interrupt: writes its vector's eventfd.
pub struct Interrupt(Arc<EventFd>);

impl Notify for Interrupt {
    fn notify(&self) {
        if let Err(e) = self.0.notify() {
            log::warn!("cannot raise guest interrupt: {e}");
        }
    }
}

/// A guest attached to the seat.
pub struct Session {
    client: UnixStream,
    /// Kept so the mapping and memfd live as long as the session.
    _shm: Arc<SharedMemory>,
    window: Window,
    doorbell: EventFd,
    interrupt: Arc<EventFd>,
    wake: Arc<EventFd>,
    back: BackHalf<Port, Interrupt>,
    /// The port's attributes once connected.
    port: Option<PortAttr>,
    /// The port's event descriptor has been handed to the worker's epoll.
    port_events_watched: bool,
}

/// One configured guest.
pub struct Seat {
    pub index: usize,
    pub config: GuestConfig,
    session: Option<Session>,
    epoch: u32,
    counters: SeatCounters,
    /// Back-half counters of sessions that have ended.
    past: BackStats,
    capture: Option<FabricCapture>,
}

/// Which of a seat's descriptors an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Client,
    Doorbell,
    Wake,
    /// The provider's own completion descriptor (rdma).
    PortEvents,
}

impl Seat {
    pub fn new(
        index: usize,
        config: GuestConfig,
        epoch: u32,
        capture: Option<FabricCapture>,
    ) -> Seat {
        Seat {
            index,
            config,
            session: None,
            epoch,
            counters: SeatCounters::default(),
            past: BackStats::default(),
            capture,
        }
    }

    /// The descriptor to watch for `source`, if it exists now.
    pub fn fd(&self, source: Source) -> Option<BorrowedFd<'_>> {
        match source {
            Source::Client => self.session.as_ref().map(|s| s.client.as_fd()),
            Source::Doorbell => self.session.as_ref().map(|s| s.doorbell.as_fd()),
            Source::Wake => self.session.as_ref().map(|s| s.wake.as_fd()),
            Source::PortEvents => self
                .session
                .as_ref()
                .and_then(|s| s.back.provider()?.event_fd()),
        }
    }

    /// The port's event descriptor, once, when a new port has one to watch.
    pub fn new_port_events(&mut self) -> Option<BorrowedFd<'_>> {
        let s = self.session.as_mut()?;
        if s.port_events_watched {
            return None;
        }
        let fd = s.back.provider()?.event_fd()?;
        s.port_events_watched = true;
        Some(fd)
    }

    /// The supervisor refused a second connection to this seat.
    pub fn refused(&mut self) {
        log::warn!(
            "guest {}: refused a second connection while one is attached",
            self.config.name
        );
        self.counters.refused += 1;
    }

    /// Takes over a guest the supervisor accepted. `restart` means a worker
    /// before us served it: its window is in use, so the epoch changes and
    /// the guest re-attaches. Returns true if the session started (the
    /// caller registers its descriptors).
    pub fn adopt(&mut self, fds: SessionFds, restart: bool) -> bool {
        if self.session.is_some() {
            log::warn!(
                "guest {}: replacing a session the supervisor says is gone",
                self.config.name
            );
            self.end_session();
        }
        match self.build_session(fds, restart) {
            Ok(session) => {
                self.session = Some(session);
                if restart {
                    self.counters.restarts += 1;
                    log::info!(
                        "guest {}: taken over after a back-end restart",
                        self.config.name
                    );
                } else {
                    self.counters.connects += 1;
                    log::info!("guest {}: attached", self.config.name);
                }
                true
            }
            Err(e) => {
                log::warn!(
                    "guest {}: cannot take over the session: {e}",
                    self.config.name
                );
                false
            }
        }
    }

    fn build_session(&self, fds: SessionFds, restart: bool) -> io::Result<Session> {
        let shm = Arc::new(SharedMemory::from_fd(fds.memory)?);
        let window = shm.window();
        let mut epoch = self.epoch;
        if restart {
            // The guest must see a different epoch to know to re-attach.
            let old = ring::Header::new(&window).map(|h| h.epoch()).unwrap_or(0);
            if epoch == old {
                epoch = epoch.wrapping_add(2) | 1;
            }
        }
        let interrupt = Arc::new(EventFd::from_fd(fds.interrupt));
        let config = BackConfig {
            epoch,
            ..BackConfig::default()
        };
        let mut back = BackHalf::new(window.clone(), config, Interrupt(interrupt.clone()))
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(c) = &self.capture {
            back.set_tap(Some(c.tap()));
        }
        fds.client.set_nonblocking(true)?;
        Ok(Session {
            client: fds.client,
            _shm: shm,
            window,
            doorbell: EventFd::from_fd(fds.doorbell),
            interrupt,
            wake: Arc::new(EventFd::new()?),
            back,
            port: None,
            port_events_watched: false,
        })
    }

    /// Data or hang-up on the guest's socket. Returns true if the session
    /// ended (the caller unregisters its descriptors first).
    pub fn client_event(&mut self) -> bool {
        let Some(s) = &mut self.session else {
            return false;
        };
        let mut buf = [0u8; 64];
        loop {
            match s.client.read(&mut buf) {
                Ok(0) => {
                    log::info!("guest {}: disconnected", self.config.name);
                    self.end_session();
                    return true;
                }
                // Clients have nothing to say in this protocol; ignore it.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    log::info!("guest {}: connection error: {e}", self.config.name);
                    self.end_session();
                    return true;
                }
            }
        }
    }

    /// The guest rang its doorbell, or the provider has completions.
    /// Returns true if the session ended.
    pub fn kick(&mut self, source: Source, fabric: &Fabric, mtu: IbMtu) -> bool {
        let Some(s) = &mut self.session else {
            return false;
        };
        match source {
            Source::Doorbell => {
                if let Ok(n) = s.doorbell.drain() {
                    self.counters.doorbells += n;
                }
            }
            Source::PortEvents => {
                if let Some(p) = s.back.provider_mut() {
                    p.ack_events();
                }
            }
            _ => {
                let _ = s.wake.drain();
            }
        }
        self.run(fabric, mtu)
    }

    /// Serves the session: finishes the handshake, then services while busy
    /// and arms when idle.
    fn run(&mut self, fabric: &Fabric, mtu: IbMtu) -> bool {
        let Some(s) = &mut self.session else {
            return false;
        };
        let result = (|| -> Result<(), BackError> {
            if let Some(setup) = s.back.poll_guest_init()? {
                match fabric.open_port(self.index, &self.config, &setup, mtu, s.wake.clone()) {
                    Ok(port) => {
                        s.port = Some(port.port_attr());
                        if let Some(c) = &self.capture {
                            c.add_local(port.port_attr().gid);
                        }
                        s.back.connect(port)?;
                        log::info!("guest {}: connected, {:?}", self.config.name, setup.slots);
                    }
                    Err(e) => {
                        log::error!("{e}");
                        return Err(BackError::NotReady);
                    }
                }
            }
            for _ in 0..BUSY_ROUNDS {
                if s.back.service()? == 0 && !s.back.arm()? {
                    return Ok(());
                }
            }
            // Still busy: come back soon without waiting for an event.
            let _ = s.wake.notify();
            Ok(())
        })();
        match result {
            Ok(()) => false,
            Err(BackError::GuestClosed) => {
                // The guest (a rebooted one, say) asked to start over on the
                // same connection: fresh back half, same window.
                log::info!("guest {}: closed the channel; resetting", self.config.name);
                self.counters.guest_closes += 1;
                self.reset_back_half();
                false
            }
            Err(e) => {
                if let BackError::Violation(_) = e {
                    self.counters.violation_disconnects += 1;
                }
                log::warn!("guest {}: {e}; disconnecting it", self.config.name);
                self.end_session();
                true
            }
        }
    }

    fn reset_back_half(&mut self) {
        let Some(s) = &mut self.session else {
            return;
        };
        add_stats(&mut self.past, s.back.stats());
        let config = BackConfig {
            epoch: self.epoch,
            ..BackConfig::default()
        };
        match BackHalf::new(s.window.clone(), config, Interrupt(s.interrupt.clone())) {
            Ok(mut b) => {
                if let Some(c) = &self.capture {
                    b.set_tap(Some(c.tap()));
                    if let Some(p) = s.port {
                        c.remove_local(&p.gid);
                    }
                }
                s.back = b;
                s.port = None;
                s.port_events_watched = false;
                self.counters.reclaims += 1;
            }
            Err(e) => log::error!("guest {}: cannot reset the window: {e}", self.config.name),
        }
    }

    /// Drops the session: window, eventfds, port. The guest's socket is
    /// closed.
    pub fn end_session(&mut self) {
        if let Some(mut s) = self.session.take() {
            if let Some(p) = s.back.provider_mut() {
                p.close();
            }
            add_stats(&mut self.past, s.back.stats());
            if let (Some(c), Some(p)) = (&self.capture, s.port) {
                c.remove_local(&p.gid);
            }
            let _ = s.client.shutdown(std::net::Shutdown::Both);
            self.counters.disconnects += 1;
            self.counters.reclaims += 1;
        }
    }

    /// The back end is going away: tell the guest (state Closed, an
    /// interrupt) and drop the session.
    pub fn shutdown(&mut self) {
        if let Some(s) = &mut self.session {
            s.back.shutdown();
        }
        self.end_session();
    }

    pub fn snapshot(&self) -> SeatSnapshot {
        let mut back = self.past;
        let (connected, port) = match &self.session {
            Some(s) => {
                add_stats(&mut back, s.back.stats());
                (s.back.is_connected(), s.port)
            }
            None => (false, None),
        };
        SeatSnapshot {
            name: self.config.name.clone(),
            attached: self.session.is_some(),
            connected,
            port,
            counters: self.counters,
            back,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.end_session();
    }
}

fn add_stats(total: &mut BackStats, s: &BackStats) {
    total.tx_requests += s.tx_requests;
    total.tx_bytes += s.tx_bytes;
    total.rx_requests += s.rx_requests;
    total.tx_completions += s.tx_completions;
    total.tx_errors += s.tx_errors;
    total.rx_completions += s.rx_completions;
    total.rx_bytes += s.rx_bytes;
    total.ctrl_requests += s.ctrl_requests;
    total.interrupts += s.interrupts;
    for k in ViolationKind::ALL {
        total.violations[k as usize] += s.violations_of(k);
    }
}
