//! The busy-polling policy of the guests' main loops (NAPI busy-poll
//! style): after a pass that moved something, keep polling instead of
//! arming the interrupt and sleeping, until `budget` microseconds have gone
//! by since the last such pass. An idle loop never spins.
//!
//! Spinning only pays while the spinner keeps its CPU. A loop that finds
//! it lost the CPU between two idle passes (more than [`PREEMPTED_US`]
//! between them: a busier thread ran, or the hypervisor took the vCPU)
//! stops spinning for [`BACKOFF_US`]: while it spins nobody sends it an
//! interrupt, so a preempted spinner would wait a whole time slice for its
//! next packet, where a sleeper is woken at once.
//!
//! Times are microseconds on any monotonic clock.

/// A gap this long between two idle passes means the loop lost its CPU.
pub const PREEMPTED_US: u64 = 200;
/// How long spinning stays off after the loop lost its CPU.
pub const BACKOFF_US: u64 = 100_000;

/// The state of one loop's busy polling.
#[derive(Clone, Copy, Debug)]
pub struct BusyPoll {
    budget: u64,
    /// The last pass that moved something, while spinning is allowed.
    last_work: Option<u64>,
    /// The previous idle pass that decided to spin on.
    last_idle: Option<u64>,
    /// No spinning before this time (after a preemption).
    resume_at: u64,
    /// Idle passes spent spinning.
    pub spins: u64,
    /// Times spinning was suspended because the loop lost its CPU.
    pub backoffs: u64,
}

impl BusyPoll {
    /// A policy with `budget_us` microseconds of spinning (0: off).
    pub const fn new(budget_us: u64) -> BusyPoll {
        BusyPoll {
            budget: budget_us,
            last_work: None,
            last_idle: None,
            resume_at: 0,
            spins: 0,
            backoffs: 0,
        }
    }

    pub fn budget_us(&self) -> u64 {
        self.budget
    }

    /// A pass at `now` moved something.
    pub fn worked(&mut self, now: u64) {
        if self.preempted(now) {
            return;
        }
        self.last_idle = None;
        if self.budget > 0 && now >= self.resume_at {
            self.last_work = Some(now);
        }
    }

    /// A pass at `now` found nothing: whether to poll again (true) or arm
    /// and sleep (false).
    pub fn spin_on(&mut self, now: u64) -> bool {
        if self.preempted(now) {
            return false;
        }
        let Some(t) = self.last_work else {
            return false;
        };
        if now.saturating_sub(t) >= self.budget {
            self.stop();
            return false;
        }
        self.last_idle = Some(now);
        self.spins += 1;
        true
    }

    /// Whether the loop lost its CPU since the last idle pass (whatever
    /// this pass found); if so, spinning is suspended.
    fn preempted(&mut self, now: u64) -> bool {
        match self.last_idle {
            Some(prev) if now.saturating_sub(prev) > PREEMPTED_US => {
                self.backoffs += 1;
                self.resume_at = now.saturating_add(BACKOFF_US);
                self.stop();
                true
            }
            _ => false,
        }
    }

    /// Whether the loop is spinning at `now`.
    pub fn spinning(&self, now: u64) -> bool {
        self.last_work
            .is_some_and(|t| now.saturating_sub(t) < self.budget)
    }

    /// Gives up spinning until the next work.
    pub fn stop(&mut self) {
        self.last_work = None;
        self.last_idle = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_spins() {
        let mut b = BusyPoll::new(0);
        b.worked(10);
        assert!(!b.spinning(10));
        assert!(!b.spin_on(11));
    }

    #[test]
    fn idle_never_spins() {
        let mut b = BusyPoll::new(50);
        for now in [0, 10, 1000] {
            assert!(!b.spin_on(now));
        }
        assert_eq!(b.spins, 0);
    }

    #[test]
    fn spins_for_the_budget_after_the_last_work_only() {
        let mut b = BusyPoll::new(50);
        b.worked(1000);
        let mut now = 1000;
        while b.spin_on(now) {
            now += 5;
        }
        assert_eq!(now, 1050, "stopped exactly at the budget");
        // More work extends it, counted from the work.
        b.worked(2000);
        assert!(b.spin_on(2040));
        b.worked(2045);
        assert!(b.spin_on(2090));
        assert!(!b.spin_on(2095));
        // Stopped: nothing without new work.
        assert!(!b.spin_on(2096));
        assert!(!b.spinning(2096));
    }

    #[test]
    fn losing_the_cpu_suspends_spinning() {
        let mut b = BusyPoll::new(10_000);
        b.worked(0);
        assert!(b.spin_on(5));
        // 300 µs between two idle passes: preempted.
        assert!(!b.spin_on(305));
        assert_eq!(b.backoffs, 1);
        // Work during the backoff does not restart spinning...
        b.worked(1000);
        assert!(!b.spinning(1000));
        assert!(!b.spin_on(1001));
        // ...after it, it does.
        b.worked(305 + BACKOFF_US);
        assert!(b.spin_on(306 + BACKOFF_US));
        // A long pass with work (after work) is not a preemption.
        b.worked(306 + BACKOFF_US + 100);
        b.worked(306 + BACKOFF_US + 5000);
        assert!(b.spin_on(306 + BACKOFF_US + 5001));
        assert_eq!(b.backoffs, 1);
        // Work found after losing the CPU while spinning idle is.
        b.worked(306 + BACKOFF_US + 6000);
        assert_eq!(b.backoffs, 2);
        assert!(!b.spinning(306 + BACKOFF_US + 6000));
    }
}
