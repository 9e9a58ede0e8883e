//! Several guests on one sim fabric, run in one thread on a virtual clock.
//!
//! Each round polls every guest and its back half. When a round moves
//! nothing, the clock jumps to the earliest timer any guest has, so
//! retransmission and ARP timeouts cost no wall time and runs are
//! deterministic for a given fault seed.

use smoltcp::time::{Duration, Instant};
use verbs_shim::sim::{FaultConfig, SimFabric};

use crate::capture::SharedCapture;
use crate::guest::{BoxError, Guest, GuestSpec};

/// Virtual time that passes per busy round, so RTTs are not zero.
const ROUND_TIME: Duration = Duration::from_micros(20);
/// Largest jump when idle and no timer is pending.
const IDLE_STEP: Duration = Duration::from_millis(10);

pub struct Net {
    pub fabric: SimFabric,
    pub now: Instant,
    pub guests: Vec<Guest>,
    /// Rounds run so far.
    pub rounds: u64,
}

impl Net {
    pub fn new(faults: FaultConfig) -> Net {
        Net {
            fabric: SimFabric::new(faults),
            now: Instant::from_millis(1),
            guests: Vec::new(),
            rounds: 0,
        }
    }

    /// Adds a guest; returns its index.
    pub fn add(&mut self, spec: GuestSpec) -> Result<usize, BoxError> {
        let guest = Guest::new(&self.fabric, spec, self.now)?;
        self.guests.push(guest);
        Ok(self.guests.len() - 1)
    }

    /// Adds a guest whose packets go to `capture`.
    pub fn add_captured(
        &mut self,
        spec: GuestSpec,
        capture: SharedCapture,
    ) -> Result<usize, BoxError> {
        let guest = Guest::with_capture(&self.fabric, spec, capture, self.now)?;
        self.guests.push(guest);
        Ok(self.guests.len() - 1)
    }

    /// Builds a net of guests 1..=n, all in the default partition.
    pub fn with_guests(n: u8, faults: FaultConfig) -> Result<Net, BoxError> {
        let mut net = Net::new(faults);
        for i in 1..=n {
            net.add(GuestSpec::new(i))?;
        }
        Ok(net)
    }

    /// One round over every guest. Returns true if anything moved.
    pub fn round(&mut self) -> Result<bool, BoxError> {
        let mut progress = false;
        for g in &mut self.guests {
            progress |= g.poll(self.now)?;
        }
        self.fabric.drain_held();
        self.rounds += 1;
        Ok(progress)
    }

    /// Moves the clock: a little after a busy round, to the next timer after
    /// an idle one.
    pub fn advance(&mut self, busy: bool) {
        if busy {
            self.now += ROUND_TIME;
            return;
        }
        let now = self.now;
        let next = self.guests.iter_mut().filter_map(|g| g.poll_at(now)).min();
        self.now = match next {
            Some(t) if t > now => t.min(now + IDLE_STEP),
            _ => now + ROUND_TIME,
        };
    }

    /// Runs rounds until `done` holds or `limit` of virtual time passes.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Net) -> bool,
    ) -> Result<(), BoxError> {
        let deadline = self.now + limit;
        while !done(self) {
            if self.now > deadline {
                return Err(format!("condition not met within {limit} of virtual time").into());
            }
            let busy = self.round()?;
            self.advance(busy);
        }
        Ok(())
    }

    /// Runs for `span` of virtual time.
    pub fn run_for(&mut self, span: Duration) -> Result<(), BoxError> {
        let end = self.now + span;
        while self.now < end {
            let busy = self.round()?;
            self.advance(busy);
        }
        Ok(())
    }
}
