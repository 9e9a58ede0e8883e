//! A per-thread watchdog that keeps one system call from blocking for more
//! than a moment, whatever the flags of the descriptor it works on say.
//!
//! The back end writes eventfds that a guest also holds. The guest can clear
//! `O_NONBLOCK` on the shared open file description and fill the counter, so
//! a write that "cannot block" can. Checking the flags first does not help:
//! the guest can change them between the check and the write. (And QEMU
//! itself clears `O_NONBLOCK` on every descriptor it receives by
//! `SCM_RIGHTS`, so a cleared flag is not even a sign of malice.)
//!
//! So the call is made with a per-thread POSIX timer armed
//! (`timer_create` with `SIGEV_THREAD_ID`: the signal goes to this thread,
//! not to the process). The signal's handler does nothing and is installed
//! without `SA_RESTART`, so a call blocked when the timer fires returns
//! `EINTR`. The timer is periodic while armed: if the thread is preempted
//! between arming and the call for longer than one period, the first signal
//! is spent before the call starts, and the next one interrupts it. Once the
//! call returns, the timer is disarmed; a signal already pending is taken
//! at the very next return to user space, where the handler does nothing.
//!
//! Cost on the common path: two `timer_settime` calls around the guarded
//! call, no thread hop. The timer is created once per thread and deleted
//! when the thread ends.

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{
    sigaction, SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify, Signal,
};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;

/// The signal the watchdog sends. Its default action is to be ignored, so a
/// stray one (from before the handler is installed, or from elsewhere) does
/// no harm; with the handler installed it interrupts a blocked call.
pub const WATCHDOG_SIGNAL: Signal = Signal::SIGURG;

/// The watchdog could not be set up on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardUnavailable {
    /// Which step failed.
    pub step: &'static str,
    /// How.
    pub errno: Errno,
}

impl fmt::Display for GuardUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stall watchdog unavailable: {} failed: {}",
            self.step, self.errno
        )
    }
}

impl std::error::Error for GuardUnavailable {}

extern "C" fn interrupt_only(_: nix::libc::c_int) {
    // Nothing: the point of the signal is the EINTR of the blocked call.
}

fn install_handler() -> Result<(), GuardUnavailable> {
    static INSTALLED: OnceLock<Result<(), Errno>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let action = SigAction::new(
            SigHandler::Handler(interrupt_only),
            // No SA_RESTART: that is the whole point.
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing at all, so it is async-signal
        // safe, and replacing the disposition of WATCHDOG_SIGNAL (ignored by
        // default, used by nothing else in this program) affects no other
        // code's expectations.
        unsafe { sigaction(WATCHDOG_SIGNAL, &action) }.map(|_| ())
    });
    result.map_err(|errno| GuardUnavailable {
        step: "sigaction",
        errno,
    })
}

fn new_thread_timer() -> Result<Timer, GuardUnavailable> {
    install_handler()?;
    let mut mask = SigSet::empty();
    mask.add(WATCHDOG_SIGNAL);
    mask.thread_unblock().map_err(|errno| GuardUnavailable {
        step: "pthread_sigmask",
        errno,
    })?;
    let event = SigEvent::new(SigevNotify::SigevThreadId {
        signal: WATCHDOG_SIGNAL,
        thread_id: nix::unistd::gettid().as_raw(),
        si_value: 0,
    });
    Timer::new(ClockId::CLOCK_MONOTONIC, event).map_err(|errno| GuardUnavailable {
        step: "timer_create",
        errno,
    })
}

thread_local! {
    static THREAD_TIMER: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

/// Runs `call` (one system call) with the watchdog armed: if it blocks, it
/// is interrupted within about `limit` and returns `EINTR`, which the
/// caller must treat as "would have blocked" and not retry.
pub fn guarded<T>(
    limit: Duration,
    call: impl FnOnce() -> nix::Result<T>,
) -> Result<nix::Result<T>, GuardUnavailable> {
    THREAD_TIMER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(new_thread_timer()?);
        }
        let Some(timer) = slot.as_mut() else {
            return Err(GuardUnavailable {
                step: "timer_create",
                errno: Errno::ENOENT,
            });
        };
        let period = TimeSpec::from_duration(limit);
        timer
            .set(
                Expiration::IntervalDelayed(period, period),
                TimerSetTimeFlags::empty(),
            )
            .map_err(|errno| GuardUnavailable {
                step: "timer_settime (arm)",
                errno,
            })?;
        let result = call();
        // A zero one-shot expiration disarms the timer.
        if let Err(errno) = timer.set(
            Expiration::OneShot(TimeSpec::from_duration(Duration::ZERO)),
            TimerSetTimeFlags::empty(),
        ) {
            // Left armed, it would keep interrupting this thread: drop it
            // (timer_delete) and make a new one next time.
            log::error!("ivshmem: cannot disarm the stall watchdog: {errno}");
            *slot = None;
        }
        Ok(result)
    })
}
