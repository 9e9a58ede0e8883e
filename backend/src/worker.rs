//! A worker thread: one epoll loop over its share of the seats. Events are
//! handled in batches; busy guests are serviced while busy and re-armed when
//! idle.
//!
//! Busy polling ([`Worker::busy_poll`], NAPI busy-poll style): after real
//! work (requests or completions handled, not mere doorbells), the worker
//! keeps passing over all its seats without arming any notification and
//! without sleeping, until `busy_poll` has gone by since the last real
//! work; then it arms every seat (re-checking each ring) and sleeps in
//! `epoll_wait` as without it. Each pass serves every seat once, at most
//! `BUSY_ROUNDS` service rounds each, so seats stay fair; a guest can only
//! keep the worker spinning by giving it real work, which it would have done
//! anyway. An idle worker never spins, and one that loses its CPU while
//! spinning stops spinning for a while (the policy is
//! [`netcore::BusyPoll`], shared with the guests' loops).
//!
//! New guests (and the end of Xen sessions) arrive through the inbox from
//! the supervisor link; the worker builds each guest's transport here.
//!
//! A session's descriptors are watched through duplicates the worker owns
//! ([`Watched`]). When the session ends (however it ends), every one is
//! removed from the epoll set (`EPOLL_CTL_DEL`) before it is closed: the
//! guest holds other copies of the same files (its doorbell eventfd, its
//! socket), and an epoll registration lives as long as the file does, not
//! as long as our descriptor. Without the removal, a disconnected guest
//! ringing its doorbell would wake this loop forever for a seat that has no
//! session (level-triggered) or at least once per ring. (The provider's
//! own completion descriptor, rdma's, is not shared with anyone: closing it
//! with the port removes it from the set.)

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netcore::BusyPoll;

use ivshmem::EventFd;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use verbs_shim::IbMtu;

use crate::handoff::Handoff;
use crate::provider::Fabric;
use crate::seat::{Arm, Seat, Served, Source};
use crate::stats::SeatSnapshot;
use crate::transport::ivshmem::IvshmemTransport;
use crate::transport::xen::XenTransport;
use crate::transport::Transport;

/// Snapshots of every seat, indexed by seat, for the control socket.
pub type Snapshots = Arc<Mutex<Vec<Option<SeatSnapshot>>>>;

/// How often a worker looks at the stop flag when idle.
const TICK_MS: u16 = 100;
/// The token of the inbox bell.
const INBOX: u64 = u64::MAX;

/// The descriptors of one session that are in the epoll set: the worker's
/// own duplicates, so it can remove them whenever it likes.
pub struct Watched {
    generation: u64,
    fds: Vec<OwnedFd>,
}

pub struct Worker {
    pub seats: Vec<Seat>,
    pub fabric: Fabric,
    pub mtu: IbMtu,
    pub stop: Arc<AtomicBool>,
    pub snapshots: Snapshots,
    pub inbox: Receiver<Handoff>,
    pub bell: Arc<EventFd>,
    /// Per seat, the descriptors in the epoll set (filled in by `run`).
    pub watched: Vec<Option<Watched>>,
    /// How long to keep polling after the last real work before arming and
    /// sleeping (zero: never busy-poll).
    pub busy_poll: Duration,
}

fn token(local: usize, source: Source) -> u64 {
    (local as u64) << 2
        | match source {
            Source::Hangup => 0,
            Source::Guest => 1,
            Source::Wake => 2,
            Source::PortEvents => 3,
        }
}

fn untoken(token: u64) -> (usize, Source) {
    let source = match token & 3 {
        0 => Source::Hangup,
        1 => Source::Guest,
        2 => Source::Wake,
        _ => Source::PortEvents,
    };
    ((token >> 2) as usize, source)
}

impl Worker {
    /// Watches a duplicate of seat `local`'s descriptor for `source`.
    fn register(&self, epoll: &Epoll, local: usize, source: Source, into: &mut Vec<OwnedFd>) {
        let seat = &self.seats[local];
        let Some(fd) = seat.fd(source) else {
            return;
        };
        let copy = match fd.try_clone_to_owned() {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "guest {}: cannot duplicate a descriptor: {e}",
                    seat.config.name
                );
                return;
            }
        };
        let mut flags = EpollFlags::EPOLLIN;
        if source == Source::Hangup {
            flags |= EpollFlags::EPOLLRDHUP;
        }
        if source == Source::Guest && seat.events_edge_triggered() {
            flags |= EpollFlags::EPOLLET;
        }
        match epoll.add(copy.as_fd(), EpollEvent::new(flags, token(local, source))) {
            Ok(()) => into.push(copy),
            Err(e) => log::error!("epoll add failed: {e}"),
        }
    }

    /// If seat `local`'s session is not the one whose descriptors are
    /// watched (it ended, or another replaced it), removes the old ones from
    /// the epoll set, then closes them.
    fn unwatch_ended(&mut self, epoll: &Epoll, local: usize) {
        let current = self.seats[local].session_generation();
        let Some(watched) = self.watched[local].take_if(|w| Some(w.generation) != current) else {
            return;
        };
        for fd in watched.fds {
            if let Err(e) = epoll.delete(fd.as_fd()) {
                log::error!("epoll delete failed: {e}");
            }
        }
    }

    /// Adds a freshly opened port's event descriptor (rdma) to the loop.
    fn watch_port_events(&mut self, epoll: &Epoll, local: usize) {
        if let Some(fd) = self.seats[local].new_port_events() {
            if let Err(e) = epoll.add(
                fd,
                EpollEvent::new(EpollFlags::EPOLLIN, token(local, Source::PortEvents)),
            ) {
                log::error!("epoll add failed: {e}");
            }
        }
    }

    fn publish(&self, local: usize) {
        let seat = &self.seats[local];
        let mut all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = all.get_mut(seat.index) {
            seat.snapshot_into(slot);
        }
    }

    /// Starts a session on seat `local` over `transport` and watches its
    /// descriptors.
    fn start_session(
        &mut self,
        epoll: &Epoll,
        local: usize,
        transport: Box<dyn Transport>,
        restart: bool,
    ) {
        let adopted = self.seats[local].adopt(transport, restart);
        // A session the new one replaced is gone either way.
        self.unwatch_ended(epoll, local);
        if adopted {
            let Some(generation) = self.seats[local].session_generation() else {
                return;
            };
            let mut fds = Vec::new();
            for s in [Source::Hangup, Source::Guest, Source::Wake] {
                self.register(epoll, local, s, &mut fds);
            }
            self.watched[local] = Some(Watched { generation, fds });
            // Serve whatever the guest already queued.
            let (fabric, mtu) = (&self.fabric, self.mtu);
            self.seats[local].kick(Source::Guest, fabric, mtu);
            self.watch_port_events(epoll, local);
        }
    }

    fn take_inbox(&mut self, epoll: &Epoll) {
        let _ = self.bell.drain();
        while let Ok(message) = self.inbox.try_recv() {
            let seat = message.seat() as usize;
            let Some(local) = self.seats.iter().position(|s| s.index == seat) else {
                log::error!("handoff for seat {seat}, which this worker does not serve");
                continue;
            };
            match message {
                Handoff::Session { restart, fds, .. } => {
                    let client = fds.client.try_clone();
                    match IvshmemTransport::new(fds, self.seats[local].config.window) {
                        Ok(t) => self.start_session(epoll, local, Box::new(t), restart),
                        Err(e) => {
                            log::warn!(
                                "guest {}: cannot take over the session: {e}; disconnecting it",
                                self.seats[local].config.name
                            );
                            // Hang up, so the supervisor releases the seat
                            // too instead of keeping it busy.
                            if let Ok(c) = client {
                                let _ = c.shutdown(std::net::Shutdown::Both);
                            }
                        }
                    }
                }
                Handoff::Xen {
                    restart,
                    domid,
                    publication,
                    ..
                } => match XenTransport::connect(domid, &publication) {
                    Ok(t) => self.start_session(epoll, local, Box::new(t), restart),
                    Err(e) => self.seats[local].xen_failed(domid, e.to_string()),
                },
                Handoff::End { domid, reason, .. } => self.seats[local].end_xen(domid, reason),
                Handoff::Refused { .. } => self.seats[local].refused(),
                Handoff::XenRefused { domid, .. } => self.seats[local].xen_refused(domid),
            }
            self.unwatch_ended(epoll, local);
            self.publish(local);
        }
    }

    /// Serves every seat once without a notification and without arming
    /// it (busy polling); a seat that had work is marked in `unarmed`.
    /// Returns the work done.
    fn spin_pass(&mut self, epoll: &Epoll, unarmed: &mut [bool]) -> usize {
        let mut work = 0;
        for (local, unarmed) in unarmed.iter_mut().enumerate() {
            let (fabric, mtu) = (&self.fabric, self.mtu);
            let Served { ended, work: w } = self.seats[local].poll(fabric, mtu, Arm::Never);
            work += w;
            *unarmed |= w > 0;
            self.after_pass(epoll, local, ended, w);
        }
        work
    }

    /// Serves the seats marked in `unarmed` and arms them once idle, before
    /// the worker sleeps. Returns the work done.
    fn arm_pass(&mut self, epoll: &Epoll, unarmed: &mut [bool]) -> usize {
        let mut work = 0;
        for (local, unarmed) in unarmed.iter_mut().enumerate() {
            if !std::mem::take(unarmed) {
                continue;
            }
            let (fabric, mtu) = (&self.fabric, self.mtu);
            let Served { ended, work: w } = self.seats[local].poll(fabric, mtu, Arm::WhenIdle);
            work += w;
            self.after_pass(epoll, local, ended, w);
        }
        work
    }

    fn after_pass(&mut self, epoll: &Epoll, local: usize, ended: bool, work: usize) {
        if ended {
            self.unwatch_ended(epoll, local);
        }
        if ended || work > 0 {
            self.publish(local);
        }
    }

    pub fn run(mut self) {
        self.watched = (0..self.seats.len()).map(|_| None).collect();
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                log::error!("cannot create epoll: {e}");
                return;
            }
        };
        if let Err(e) = epoll.add(
            self.bell.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, INBOX),
        ) {
            log::error!("epoll add failed: {e}");
            return;
        }
        for local in 0..self.seats.len() {
            self.publish(local);
        }
        let mut events = vec![EpollEvent::empty(); 64];
        let origin = Instant::now();
        let micros = || origin.elapsed().as_micros() as u64;
        let mut busy = BusyPoll::new(self.busy_poll.as_micros() as u64);
        // Busy polling is on: seats are served without arming, and armed
        // all together when the spinning stops.
        let arm = if self.busy_poll.is_zero() {
            Arm::WhenIdle
        } else {
            Arm::Never
        };
        // The seats served without arming since they were last armed.
        let mut unarmed = vec![false; self.seats.len()];
        while !self.stop.load(Ordering::Relaxed) {
            let spinning = busy.spinning(micros());
            if !spinning && unarmed.contains(&true) {
                // Done spinning: arm those seats before sleeping. One that
                // had work meanwhile was served (and armed only once idle);
                // spin again.
                if self.arm_pass(&epoll, &mut unarmed) > 0 {
                    busy.worked(micros());
                    continue;
                }
            }
            let timeout = if spinning {
                EpollTimeout::ZERO
            } else {
                EpollTimeout::from(TICK_MS)
            };
            let n = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("epoll wait failed: {e}");
                    break;
                }
            };
            let mut work = 0;
            for event in &events[..n] {
                if event.data() == INBOX {
                    self.take_inbox(&epoll);
                    continue;
                }
                let (local, source) = untoken(event.data());
                if local >= self.seats.len() {
                    continue;
                }
                match source {
                    Source::Hangup => {
                        self.seats[local].hangup_event();
                    }
                    Source::Guest | Source::Wake | Source::PortEvents => {
                        let (fabric, mtu) = (&self.fabric, self.mtu);
                        work += self.seats[local].kick_with(source, fabric, mtu, arm).work;
                        unarmed[local] |= arm == Arm::Never;
                        self.watch_port_events(&epoll, local);
                    }
                }
                self.unwatch_ended(&epoll, local);
                self.publish(local);
            }
            if spinning {
                work += self.spin_pass(&epoll, &mut unarmed);
            }
            if work > 0 {
                busy.worked(micros());
            } else if spinning && busy.spin_on(micros()) {
                // Nothing this pass: let whatever else wants this core run
                // (a guest or the other worker, on a small machine).
                std::thread::yield_now();
            }
        }
        if busy.budget_us() > 0 {
            log::info!(
                "worker: busy polling {} µs: {} idle passes spun, {} backoffs after losing the CPU",
                busy.budget_us(),
                busy.spins,
                busy.backoffs
            );
        }
        for local in 0..self.seats.len() {
            self.seats[local].shutdown();
            self.publish(local);
        }
    }
}

#[cfg(test)]
mod tests;
