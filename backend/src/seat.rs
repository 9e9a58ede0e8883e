//! One guest seat in the worker: while a guest is attached, its session
//! (the transport — shared window and notifications — plus the back half and
//! the provider port). The supervisor accepts ivshmem guests and finds Xen
//! domains, and hands them over; the seat does not care which transport a
//! session has.
//!
//! Everything a guest could have touched belongs to the session and is
//! dropped with it: when a guest leaves or is disconnected, its port (QP,
//! buffers, handles) goes away, its window is unmapped, and the next guest
//! gets fresh resources.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use ivshmem::EventFd;
use ring::Window;
use verbs_shim::back::{BackError, BackHalf, BackStats, Refusal, SenderPort, ViolationKind};
use verbs_shim::{IbMtu, PortAttr, Verbs};

use crate::capture::FabricCapture;
use crate::config::GuestConfig;
use crate::handoff::{EndReason, Report, Reporter};
use crate::limits::{back_config, QpGauge};
use crate::port_security::{self, SeatDirectory};
use crate::provider::{Fabric, Port};
use crate::stats::{SeatCounters, SeatSnapshot};
use crate::transport::{GuestNotifier, Interrupt, Transport, TransportViolation};

/// Service rounds per wake-up before other guests get their turn.
const BUSY_ROUNDS: usize = 64;

/// A guest attached to the seat.
pub struct Session {
    transport: Box<dyn Transport>,
    window: Window,
    notifier: GuestNotifier,
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
    /// Counts sessions started, so the worker can tell one session's
    /// descriptors from the next one's.
    generation: u64,
    counters: SeatCounters,
    /// Back-half counters of sessions that have ended.
    past: BackStats,
    capture: Option<FabricCapture>,
    /// Tells the supervisor how Xen sessions go.
    reporter: Reporter,
    /// QPs open for this seat (bounded by `config.limits.max_qps`).
    qps: QpGauge,
    /// Where the port-security filter registers the guest's port.
    directory: Option<Arc<SeatDirectory>>,
}

/// Whether a service pass arms the guest's and the provider's
/// notifications once it finds nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// Arm when idle, so the worker can sleep.
    WhenIdle,
    /// Do not arm: the worker is busy polling and will look again.
    Never,
}

/// What a service pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The session ended (the caller unregisters its descriptors).
    pub ended: bool,
    /// Requests and completions handled (0: the session was idle).
    pub work: usize,
}

/// Which of a seat's descriptors an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The transport's hang-up descriptor (ivshmem's client socket).
    Hangup,
    /// The guest's notifications (doorbell eventfd, event channel).
    Guest,
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
        reporter: Reporter,
    ) -> Seat {
        Seat {
            index,
            config,
            session: None,
            epoch,
            generation: 0,
            counters: SeatCounters::default(),
            past: BackStats::default(),
            capture,
            reporter,
            qps: QpGauge::default(),
            directory: None,
        }
    }

    /// Registers the guest's port in `directory` (for the gateway) once its
    /// port-security filter sees it send.
    pub fn with_directory(mut self, directory: Arc<SeatDirectory>) -> Seat {
        self.directory = Some(directory);
        self
    }

    /// The descriptor to watch for `source`, if it exists now.
    pub fn fd(&self, source: Source) -> Option<BorrowedFd<'_>> {
        let s = self.session.as_ref()?;
        match source {
            Source::Hangup => s.transport.hangup_fd(),
            Source::Guest => Some(s.transport.event_fd()),
            Source::Wake => Some(std::os::fd::AsFd::as_fd(&*s.wake)),
            Source::PortEvents => s.back.provider()?.event_fd(),
        }
    }

    /// Which session is attached (a number that changes with every new
    /// session), or `None`.
    pub fn session_generation(&self) -> Option<u64> {
        self.session.as_ref().map(|_| self.generation)
    }

    /// Whether the guest's notification descriptor must be watched
    /// edge-triggered (see [`Transport::events_edge_triggered`]).
    pub fn events_edge_triggered(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.transport.events_edge_triggered())
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

    /// The supervisor refused what Xen domain `domid` published (it logged
    /// why).
    pub fn xen_refused(&mut self, domid: u16) {
        log::warn!(
            "guest {}: domain {domid}'s channel was refused by the supervisor",
            self.config.name
        );
        self.counters.xen_refused += 1;
    }

    /// Setting up domain `domid`'s transport failed: count it and tell the
    /// supervisor, which closes the device.
    pub fn xen_failed(&mut self, domid: u16, reason: String) {
        log::warn!(
            "guest {}: domain {domid}: {reason}; disconnecting it",
            self.config.name
        );
        self.counters.xen_failures += 1;
        self.reporter.send(&Report::XenFailed {
            seat: self.index as u32,
            domid,
            reason,
        });
    }

    /// Takes over a guest's transport. `restart` means a worker before us
    /// served it: its window is in use, so the epoch changes and the guest
    /// re-attaches. Returns true if the session started (the caller
    /// registers its descriptors). Xen sessions are reported to the
    /// supervisor either way.
    pub fn adopt(&mut self, transport: Box<dyn Transport>, restart: bool) -> bool {
        if self.session.is_some() {
            log::warn!(
                "guest {}: replacing a session the supervisor says is gone",
                self.config.name
            );
            self.end_session();
        }
        let domid = transport.xen_domid();
        let what = transport.describe();
        match self.build_session(transport, restart) {
            Ok(session) => {
                self.session = Some(session);
                self.generation += 1;
                if restart {
                    self.counters.restarts += 1;
                    log::info!(
                        "guest {}: taken over after a back-end restart ({what})",
                        self.config.name
                    );
                } else {
                    self.counters.connects += 1;
                    log::info!("guest {}: attached ({what})", self.config.name);
                }
                if let Some(domid) = domid {
                    self.reporter.send(&Report::XenConnected {
                        seat: self.index as u32,
                        domid,
                    });
                }
                true
            }
            Err(e) => {
                let reason = format!("cannot take over the session: {e}");
                match domid {
                    Some(domid) => self.xen_failed(domid, reason),
                    None => log::warn!("guest {}: {reason}", self.config.name),
                }
                false
            }
        }
    }

    fn build_session(
        &self,
        transport: Box<dyn Transport>,
        restart: bool,
    ) -> Result<Session, String> {
        let window = transport.window();
        let mut epoch = self.epoch;
        if restart {
            // The guest must see a different epoch to know to re-attach.
            let old = ring::Header::new(&window).map(|h| h.epoch()).unwrap_or(0);
            if epoch == old {
                epoch = epoch.wrapping_add(2) | 1;
            }
        }
        let notifier = transport.notifier();
        let config = back_config(epoch, &self.config.limits);
        let mut back = BackHalf::new(window.clone(), config, Interrupt(notifier.clone()))
            .map_err(|e| e.to_string())?;
        if let Some(c) = &self.capture {
            back.set_tap(Some(c.tap()));
        }
        back.set_tx_filter(port_security::filter_for(
            &self.config,
            self.directory.as_ref(),
        ));
        Ok(Session {
            transport,
            window,
            notifier,
            wake: Arc::new(EventFd::new().map_err(|e| e.to_string())?),
            back,
            port: None,
            port_events_watched: false,
        })
    }

    /// The transport's hang-up descriptor fired. Returns true if the
    /// session ended (the caller unregisters its descriptors first).
    pub fn hangup_event(&mut self) -> bool {
        let Some(s) = &mut self.session else {
            return false;
        };
        let Some(why) = s.transport.hangup_event() else {
            return false;
        };
        match s.transport.violation() {
            Some(violation) => {
                log::warn!(
                    "guest {}: {why}: protocol violation; disconnecting it",
                    self.config.name
                );
                self.count_transport_violation(violation);
            }
            None => log::info!("guest {}: {why}", self.config.name),
        }
        if let Some(note) = self.end_session() {
            log::debug!("guest {}: {note}", self.config.name);
        }
        true
    }

    fn count_transport_violation(&mut self, violation: TransportViolation) {
        self.counters.violation_disconnects += 1;
        self.counters.transport_violations[violation as usize] += 1;
    }

    /// Ends the session if the guest misused its transport's descriptors
    /// (found while raising its interrupt, say). Returns true if it ended.
    fn end_on_transport_violation(&mut self) -> bool {
        let Some(violation) = self.session.as_ref().and_then(|s| s.transport.violation()) else {
            return false;
        };
        log::warn!(
            "guest {}: transport violation: {violation}; disconnecting it",
            self.config.name
        );
        self.count_transport_violation(violation);
        let domid = self.session.as_ref().and_then(|s| s.transport.xen_domid());
        self.disconnect(domid, violation.to_string());
        true
    }

    /// Ends the session after a failure, and tells the supervisor when the
    /// guest is a Xen domain (it closes the device).
    fn disconnect(&mut self, domid: Option<u16>, reason: String) {
        if let Some(note) = self.end_session() {
            log::info!("guest {}: {note}", self.config.name);
        }
        if let Some(domid) = domid {
            self.reporter.send(&Report::XenFailed {
                seat: self.index as u32,
                domid,
                reason,
            });
        }
    }

    /// The guest notified us, or the provider has completions: serves the
    /// session and arms its notifications once it is idle. Returns true if
    /// the session ended.
    pub fn kick(&mut self, source: Source, fabric: &Fabric, mtu: IbMtu) -> bool {
        self.kick_with(source, fabric, mtu, Arm::WhenIdle).ended
    }

    /// [`kick`](Seat::kick), arming the notifications when idle or not
    /// (while the worker busy-polls).
    pub fn kick_with(&mut self, source: Source, fabric: &Fabric, mtu: IbMtu, arm: Arm) -> Served {
        let Some(s) = &mut self.session else {
            return Served::default();
        };
        match source {
            Source::Guest => match s.transport.drain_events() {
                Ok(n) => self.counters.doorbells += n,
                Err(e) => log::warn!(
                    "guest {}: cannot read its notifications: {e}",
                    self.config.name
                ),
            },
            Source::PortEvents => {
                if let Some(p) = s.back.provider_mut() {
                    p.ack_events();
                }
            }
            _ => {
                let _ = s.wake.drain();
            }
        }
        let mut served = self.run(fabric, mtu, arm);
        served.ended |= self.end_on_transport_violation();
        if let Some(s) = &mut self.session {
            s.transport.rearm();
        }
        served
    }

    /// Serves the session without being notified: one busy-polling pass
    /// (no notifications armed), or, with [`Arm::WhenIdle`], the last pass
    /// before the worker sleeps. A seat without a session does nothing.
    pub fn poll(&mut self, fabric: &Fabric, mtu: IbMtu, arm: Arm) -> Served {
        if self.session.is_none() {
            return Served::default();
        }
        let mut served = self.run(fabric, mtu, arm);
        if arm == Arm::Never && served.work > 0 {
            self.counters.busy_polled += served.work as u64;
        }
        served.ended |= self.end_on_transport_violation();
        served
    }

    /// Serves the session: finishes the handshake, then services while busy
    /// and, with [`Arm::WhenIdle`], arms when idle.
    fn run(&mut self, fabric: &Fabric, mtu: IbMtu, arm: Arm) -> Served {
        let Some(s) = &mut self.session else {
            return Served::default();
        };
        let mut work = 0;
        let result = (|| -> Result<(), BackError> {
            if let Some(setup) = s.back.poll_guest_init()? {
                let wake = s.wake.clone();
                match fabric.open_port(self.index, &self.config, &setup, mtu, wake, &self.qps) {
                    Ok(mut port) => {
                        if let Some((region, big)) = s.back.rc_region() {
                            let max = self.config.limits.max_rc_conns;
                            if let Err(e) = port.enable_rc(region, big, max) {
                                log::warn!("guest {}: {e}", self.config.name);
                            }
                        }
                        s.port = Some(port.port_attr());
                        register_port(&self.config, self.directory.as_deref(), s.port);
                        if let Some(c) = &self.capture {
                            c.add_local(port.port_attr().gid);
                        }
                        s.back.connect(port)?;
                        log::info!("guest {}: connected, {:?}", self.config.name, setup.slots);
                        work += 1;
                    }
                    Err(e) => {
                        log::error!("{e}");
                        self.counters.port_refusals += 1;
                        return Err(BackError::PortRefused);
                    }
                }
            }
            for _ in 0..BUSY_ROUNDS {
                let n = s.back.service()?;
                work += n;
                if n == 0 && (arm == Arm::Never || !s.back.arm()?) {
                    return Ok(());
                }
            }
            // Still busy: come back soon without waiting for an event.
            let _ = s.wake.notify();
            Ok(())
        })();
        let ended = match result {
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
                let domid = s.transport.xen_domid();
                log::warn!("guest {}: {e}; disconnecting it", self.config.name);
                self.disconnect(domid, e.to_string());
                true
            }
        };
        Served { ended, work }
    }

    fn reset_back_half(&mut self) {
        let Some(s) = &mut self.session else {
            return;
        };
        add_stats(&mut self.past, s.back.stats());
        let config = back_config(self.epoch, &self.config.limits);
        match BackHalf::new(s.window.clone(), config, Interrupt(s.notifier.clone())) {
            Ok(mut b) => {
                b.set_tx_filter(port_security::filter_for(
                    &self.config,
                    self.directory.as_ref(),
                ));
                if let Some(c) = &self.capture {
                    b.set_tap(Some(c.tap()));
                    if let Some(p) = s.port {
                        c.remove_local(&p.gid);
                    }
                }
                s.back = b;
                unregister_port(&self.config, self.directory.as_deref(), s.port.take());
                s.port_events_watched = false;
                self.counters.reclaims += 1;
            }
            Err(e) => log::error!("guest {}: cannot reset the window: {e}", self.config.name),
        }
    }

    /// The supervisor ends the Xen session with `domid`: the domain went
    /// away or its frontend closed.
    pub fn end_xen(&mut self, domid: u16, reason: EndReason) {
        let ours = self
            .session
            .as_ref()
            .is_some_and(|s| s.transport.xen_domid() == Some(domid));
        if !ours {
            log::debug!(
                "guest {}: no session with domain {domid} to end",
                self.config.name
            );
            return;
        }
        let note = self.end_session().unwrap_or_default();
        match reason {
            EndReason::DomainGone => {
                self.counters.domain_releases += 1;
                log::info!(
                    "guest {}: domain {domid} destroyed; reclaimed its port, {note}",
                    self.config.name
                );
            }
            EndReason::FrontendClosed => {
                self.counters.guest_closes += 1;
                log::info!(
                    "guest {}: domain {domid} closed its frontend; reclaimed its port, {note}",
                    self.config.name
                );
            }
        }
    }

    /// Drops the session: back half and port, then the transport (window
    /// unmapped, notifications unbound, socket closed). Returns what the
    /// transport released.
    pub fn end_session(&mut self) -> Option<String> {
        let mut s = self.session.take()?;
        if let Some(p) = s.back.provider_mut() {
            p.close();
        }
        add_stats(&mut self.past, s.back.stats());
        unregister_port(&self.config, self.directory.as_deref(), s.port);
        if let (Some(c), Some(p)) = (&self.capture, s.port) {
            c.remove_local(&p.gid);
        }
        self.counters.disconnects += 1;
        self.counters.reclaims += 1;
        let Session {
            transport,
            window,
            notifier,
            wake,
            back,
            ..
        } = s;
        // Everything that holds the window or the notifier goes first, so
        // the transport can release them for real.
        drop((back, window, notifier, wake));
        Some(transport.release())
    }

    /// The back end is going away: tell the guest (state Closed, an
    /// interrupt) and drop the session.
    pub fn shutdown(&mut self) {
        if let Some(s) = &mut self.session {
            s.back.shutdown();
        }
        if let Some(note) = self.end_session() {
            log::info!("guest {}: {note}", self.config.name);
        }
    }

    #[cfg(test)]
    pub fn snapshot(&self) -> SeatSnapshot {
        self.snapshot_named(self.config.name.clone())
    }

    /// Overwrites `slot` with a snapshot, reusing the name it holds: the
    /// worker publishes after every event, and this makes that free of
    /// allocation.
    pub fn snapshot_into(&self, slot: &mut Option<SeatSnapshot>) {
        let name = slot
            .take()
            .map(|s| s.name)
            .filter(|n| *n == self.config.name)
            .unwrap_or_else(|| self.config.name.clone());
        *slot = Some(self.snapshot_named(name));
    }

    fn snapshot_named(&self, name: String) -> SeatSnapshot {
        let mut back = self.past;
        let (connected, port) = match &self.session {
            Some(s) => {
                add_stats(&mut back, s.back.stats());
                (s.back.is_connected(), s.port)
            }
            None => (false, None),
        };
        SeatSnapshot {
            name,
            attached: self.session.is_some(),
            connected,
            port,
            counters: self.counters,
            back,
            qps_open: self.qps.open(),
            qp_refusals: self.qps.refused(),
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.end_session();
    }
}

/// A new port for a seat with `ip=`: the gateway believes the seat's
/// address from it at once (and no longer from any earlier port).
fn register_port(config: &GuestConfig, directory: Option<&SeatDirectory>, port: Option<PortAttr>) {
    if let (Some(ip), Some(d), Some(p)) = (config.ip, directory, port) {
        d.register(
            ip,
            SenderPort {
                qpn: p.qpn,
                gid: p.gid,
            },
        );
    }
    if let (Some(ip6), Some(d), Some(p)) = (config.ip6, directory, port) {
        d.register6(
            ip6,
            SenderPort {
                qpn: p.qpn,
                gid: p.gid,
            },
        );
    }
}

/// The seat's port is gone: the gateway stops believing its address from
/// it (unless a newer port has taken the entry over already).
fn unregister_port(
    config: &GuestConfig,
    directory: Option<&SeatDirectory>,
    port: Option<PortAttr>,
) {
    if let (Some(ip), Some(d), Some(p)) = (config.ip, directory, port) {
        d.unregister(
            ip,
            SenderPort {
                qpn: p.qpn,
                gid: p.gid,
            },
        );
    }
    if let (Some(ip6), Some(d), Some(p)) = (config.ip6, directory, port) {
        d.unregister6(
            ip6,
            SenderPort {
                qpn: p.qpn,
                gid: p.gid,
            },
        );
    }
}

fn add_stats(total: &mut BackStats, s: &BackStats) {
    total.tx_requests += s.tx_requests;
    total.tx_bytes += s.tx_bytes;
    total.rx_requests += s.rx_requests;
    total.tx_completions += s.tx_completions;
    total.tx_errors += s.tx_errors;
    total.tx_filtered += s.tx_filtered;
    total.rx_completions += s.rx_completions;
    total.rx_bytes += s.rx_bytes;
    total.ctrl_requests += s.ctrl_requests;
    total.interrupts += s.interrupts;
    for k in ViolationKind::ALL {
        total.violations[k as usize] += s.violations_of(k);
    }
    for k in Refusal::ALL {
        total.refusals[k as usize] += s.refusals_of(k);
    }
}

#[cfg(test)]
mod tests;
