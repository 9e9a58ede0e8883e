//! When to read an rdma_cm event channel. Each read is a system call
//! (`rdma_get_cm_event` on a non-blocking descriptor), and the data path
//! polls far more often than connection and join events arrive: so a
//! channel is read on every [`EVERY`]th poll, and at once after the port's
//! event descriptor (which holds the channel) woke its owner, and whenever
//! the port is armed (before its owner sleeps).

/// Polls between two reads of a channel without a wake-up.
pub(super) const EVERY: u8 = 16;

#[derive(Clone, Copy, Debug)]
pub(super) struct CmGate {
    countdown: u8,
    woken: bool,
}

impl CmGate {
    pub(super) const fn new() -> CmGate {
        CmGate {
            countdown: 0,
            woken: true,
        }
    }

    /// The port's event descriptor woke its owner: read at the next poll.
    pub(super) fn wake(&mut self) {
        self.woken = true;
    }

    /// Whether this poll reads the channel.
    pub(super) fn due(&mut self) -> bool {
        if core::mem::take(&mut self.woken) || self.countdown == 0 {
            self.countdown = EVERY - 1;
            return true;
        }
        self.countdown -= 1;
        false
    }
}

impl Default for CmGate {
    fn default() -> Self {
        CmGate::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_on_a_wake_up_and_every_sixteenth_poll() {
        let mut g = CmGate::new();
        assert!(g.due(), "the first poll reads");
        let reads = (0..u32::from(EVERY) * 4).filter(|_| g.due()).count();
        assert_eq!(reads, 4);
        g.wake();
        assert!(g.due(), "a wake-up reads at once");
        assert!(!g.due());
    }
}
