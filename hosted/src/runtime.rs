//! The hosted guest's main loop: netcore's `NetStack` (the same network core
//! the unikernel runs) on the `front` provider, driven by interrupts from the
//! back end and smoltcp's timers.
//!
//! Busy polling ([`Runtime::set_busy_poll`], the policy is
//! [`netcore::BusyPoll`]): after a pass that moved something, the loop keeps
//! polling without arming the interrupt or sleeping until the budget has
//! gone by since the last such pass (yielding the core each idle pass, so a
//! small machine's other threads run); then it arms and sleeps as without
//! it. An idle guest never spins, and one that loses its CPU while spinning
//! stops spinning for a while.

use std::path::Path;
use std::time::Duration;

use ipoib::IpoibError;
use netcore::{BusyPoll, NetConfig, NetStack};
use verbs_shim::front::FrontHca;
use verbs_shim::HcaError;

use crate::channel::Channel;
use crate::transport::{Doorbell, Transport, Wake};
use crate::HostedError;

/// How long to wait for a back end at start and after it went away.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest sleep without a timer, so signals and shutdown are noticed.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// The busy-polling budget when none is given (`--busy-poll-us`).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);
/// The largest busy-polling budget accepted.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(10);

pub use crate::channel::PARAMS;

pub type Stack = NetStack<FrontHca<Doorbell>>;

pub struct Runtime {
    pub transport: Transport,
    pub stack: Stack,
    origin: std::time::Instant,
    /// The channel asked for (connected mode's with `cm=`).
    channel: Channel,
    /// Times the guest moved to a new back end (restart or new epoch).
    pub reattaches: u64,
    /// Times the loop slept waiting for an interrupt or timer.
    pub sleeps: u64,
    /// When to keep polling instead of sleeping.
    pub busy: BusyPoll,
}

impl Runtime {
    /// Connects to the back end's socket, attaches, brings IPoIB up and
    /// starts the configured services.
    pub fn start(socket: &Path, net: &NetConfig) -> Result<Runtime, HostedError> {
        let mut transport = Transport::connect(socket, ATTACH_TIMEOUT)?;
        let channel = Channel::for_config(net);
        let front = transport.attach(channel, ATTACH_TIMEOUT)?;
        let origin = std::time::Instant::now();
        let seed = u64::from(u32::from(net.ip.address())) ^ u64::from(std::process::id()) << 32;
        let stack = NetStack::new(front, net, smoltcp::time::Instant::ZERO, seed)
            .map_err(|e| HostedError::Protocol(format!("network stack: {e}")))?;
        Ok(Runtime {
            transport,
            stack,
            origin,
            channel,
            reattaches: 0,
            sleeps: 0,
            busy: BusyPoll::new(DEFAULT_BUSY_POLL.as_micros() as u64),
        })
    }

    pub fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.origin.elapsed().as_micros() as i64)
    }

    fn reattach(&mut self, reconnect: bool) -> Result<(), HostedError> {
        if reconnect {
            self.transport.reconnect(ATTACH_TIMEOUT)?;
        }
        let front = self.transport.attach(self.channel, ATTACH_TIMEOUT)?;
        self.stack
            .replace_device(front)
            .map_err(HostedError::Ipoib)?;
        self.reattaches += 1;
        Ok(())
    }

    /// Sets the busy-polling budget (zero turns it off); at most
    /// [`MAX_BUSY_POLL`].
    pub fn set_busy_poll(&mut self, budget: Duration) {
        self.busy = BusyPoll::new(budget.min(MAX_BUSY_POLL).as_micros() as u64);
    }

    fn micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// One pass of the network core. Returns true if anything moved.
    pub fn poll(&mut self) -> Result<bool, HostedError> {
        let now = self.now();
        match self.stack.poll(now) {
            Ok(busy) => {
                if busy {
                    let now = self.micros();
                    self.busy.worked(now);
                }
                Ok(busy)
            }
            Err(IpoibError::Device(HcaError::Disconnected)) => {
                log::warn!("the back end went away (new epoch or closed); re-attaching");
                self.reattach(false)?;
                Ok(true)
            }
            Err(e) => Err(HostedError::Ipoib(e)),
        }
    }

    /// Arms the interrupt and sleeps until it fires or the next timer is
    /// due. Returns at once if work is already waiting, and, while busy
    /// polling, without arming or sleeping (after yielding the core).
    pub fn idle_wait(&mut self) -> Result<(), HostedError> {
        let now = self.micros();
        if self.busy.spin_on(now) {
            // Yield rather than spin on the core: on a small machine the
            // back end's threads need it (spinning without yielding was 3 to
            // 8 times slower on 2 cores; see docs/busy-polling.md).
            std::thread::yield_now();
            return Ok(());
        }
        match self.stack.arm() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(IpoibError::Device(HcaError::Disconnected)) => return self.reattach(false),
            Err(e) => return Err(HostedError::Ipoib(e)),
        }
        let now = self.now();
        let delay = self
            .stack
            .next_deadline(now)
            .map(|at| Duration::from((at - now).max(smoltcp::time::Duration::ZERO)))
            .unwrap_or(MAX_SLEEP);
        self.sleeps += 1;
        match self.transport.wait(Some(delay.min(MAX_SLEEP)))? {
            Wake::Interrupt | Wake::Timeout => Ok(()),
            Wake::BackendGone => {
                log::warn!("the back end closed the connection; waiting for it to come back");
                self.reattach(true)
            }
        }
    }
}
