//! A worker thread: one epoll loop over its share of the seats. Each event
//! is handled in a batch; busy guests are serviced while busy and re-armed
//! when idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use verbs_shim::IbMtu;

use crate::provider::Fabric;
use crate::seat::{Seat, Source};
use crate::stats::SeatSnapshot;

/// Snapshots of every seat, indexed by seat, for the control socket.
pub type Snapshots = Arc<Mutex<Vec<Option<SeatSnapshot>>>>;

/// How often a worker looks at the stop flag when idle.
const TICK_MS: u16 = 100;

pub struct Worker {
    pub seats: Vec<Seat>,
    pub fabric: Fabric,
    pub mtu: IbMtu,
    pub stop: Arc<AtomicBool>,
    pub snapshots: Snapshots,
}

fn token(local: usize, source: Source) -> u64 {
    (local as u64) << 2
        | match source {
            Source::Listener => 0,
            Source::Client => 1,
            Source::Doorbell => 2,
            Source::Wake => 3,
        }
}

fn untoken(token: u64) -> (usize, Source) {
    let source = match token & 3 {
        0 => Source::Listener,
        1 => Source::Client,
        2 => Source::Doorbell,
        _ => Source::Wake,
    };
    ((token >> 2) as usize, source)
}

impl Worker {
    fn register(&self, epoll: &Epoll, local: usize, source: Source) {
        let Some(fd) = self.seats[local].fd(source) else {
            return;
        };
        let mut flags = EpollFlags::EPOLLIN;
        if source == Source::Client {
            flags |= EpollFlags::EPOLLRDHUP;
        }
        if let Err(e) = epoll.add(fd, EpollEvent::new(flags, token(local, source))) {
            log::error!("epoll add failed: {e}");
        }
    }

    fn publish(&self, local: usize) {
        let seat = &self.seats[local];
        let mut all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = all.get_mut(seat.index) {
            *slot = Some(seat.snapshot());
        }
    }

    pub fn run(mut self) {
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                log::error!("cannot create epoll: {e}");
                return;
            }
        };
        for local in 0..self.seats.len() {
            self.register(&epoll, local, Source::Listener);
            self.publish(local);
        }
        let mut events = vec![EpollEvent::empty(); 64];
        while !self.stop.load(Ordering::Relaxed) {
            let n = match epoll.wait(&mut events, EpollTimeout::from(TICK_MS)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("epoll wait failed: {e}");
                    break;
                }
            };
            for event in &events[..n] {
                let (local, source) = untoken(event.data());
                if local >= self.seats.len() {
                    continue;
                }
                match source {
                    Source::Listener => {
                        if self.seats[local].accept() {
                            for s in [Source::Client, Source::Doorbell, Source::Wake] {
                                self.register(&epoll, local, s);
                            }
                        }
                    }
                    Source::Client => {
                        self.seats[local].client_event();
                    }
                    Source::Doorbell | Source::Wake => {
                        let (fabric, mtu) = (&self.fabric, self.mtu);
                        self.seats[local].kick(source, fabric, mtu);
                    }
                }
                self.publish(local);
            }
        }
        for local in 0..self.seats.len() {
            self.seats[local].shutdown();
            self.publish(local);
        }
    }
}
