//! Address handles created off the caller's thread.
//!
//! On RoCE `ibv_create_ah` resolves the destination's MAC address in the
//! kernel, which can wait up to a second or so for an unanswered neighbour.
//! The back end's worker serves many guests on one thread, so `resolve`
//! must not wait: it hands the work to a small pool of threads shared by
//! every port of a context, and returns. The finished handle goes into the
//! asking port's [`Inbox`]; the port's notifier (the worker's wake-up) is
//! called, and the port turns it into a `Path` completion at its next
//! `poll_cq`/`arm_cq`.
//!
//! Each port has at most one resolution in the pool at a time (the rest
//! wait in its [`Resolutions`]), so a guest whose resolutions are slow holds
//! one of the [`RESOLVER_THREADS`] at most, and the other guests' keep
//! going. How many resolutions one guest may have queued is bounded by the
//! caller (the back half's `max_pending_resolves`, and the port's handle
//! limit).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};

use super::context::Shared;
use super::ffi::{Ah, AhSpec, Device};
use crate::hca::PathError;
use crate::types::Gid;

/// Threads per context that create address handles.
pub const RESOLVER_THREADS: usize = 4;

/// Called when a resolution has finished (from a pool thread).
pub type ResolveNotifier = Arc<dyn Fn() + Send + Sync>;

/// A finished resolution.
pub(super) type Resolved = (Gid, Result<Ah, PathError>);

/// Where a port's finished resolutions wait for it.
#[derive(Default)]
pub(super) struct Inbox {
    done: Mutex<VecDeque<Resolved>>,
    notifier: Mutex<Option<ResolveNotifier>>,
}

impl Inbox {
    pub(super) fn set_notifier(&self, notifier: Option<ResolveNotifier>) {
        *self.notifier.lock().unwrap_or_else(PoisonError::into_inner) = notifier;
    }

    /// Takes every finished resolution, oldest first.
    pub(super) fn take(&self) -> VecDeque<Resolved> {
        core::mem::take(&mut *self.done.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn deliver(&self, resolved: Resolved) {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(resolved);
        let notifier = self
            .notifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(notify) = notifier {
            notify();
        }
    }
}

/// One address handle to create.
pub(super) struct Job {
    pub dev: Arc<Device>,
    pub name: Arc<str>,
    pub spec: AhSpec,
    pub dgid: Gid,
    pub inbox: Arc<Inbox>,
}

/// The pool. Dropping it (with the last context clone) lets the threads
/// finish their current job and exit; nobody waits for them.
pub(super) struct Resolver {
    jobs: Mutex<Sender<Job>>,
}

impl Resolver {
    /// Starts the pool. Fails only if no thread could be started.
    pub(super) fn start() -> io::Result<Resolver> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        let mut last_error = None;
        for i in 0..RESOLVER_THREADS {
            let queue = Arc::clone(&queue);
            match std::thread::Builder::new()
                .name(alloc::format!("rdma-resolve-{i}"))
                .spawn(move || run(&queue))
            {
                Ok(_) => started += 1,
                Err(e) => last_error = Some(e),
            }
        }
        match (started, last_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(Resolver {
                jobs: Mutex::new(jobs),
            }),
        }
    }

    /// Queues `job`; `Err` gives it back if the pool is gone.
    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .map_err(|e| e.0)
    }
}

fn run(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        let result = create(&job);
        job.inbox.deliver((job.dgid, result));
    }
}

fn create(job: &Job) -> Result<Ah, PathError> {
    Ah::create(&job.dev, &job.spec).map_err(|errno| {
        log::info!(
            "rdma: {}: ibv_create_ah for {} failed: {}",
            job.name,
            job.dgid,
            io::Error::from_raw_os_error(errno)
        );
        match errno {
            libc::ENOMEM => PathError::NoResources,
            _ => PathError::Unreachable,
        }
    })
}

/// One port's address resolutions: at most one in the pool at a time, the
/// rest waiting here in order. So a guest whose resolutions are slow holds
/// one pool thread at most, and the other guests' go on.
pub(super) struct Resolutions {
    inbox: Arc<Inbox>,
    waiting: VecDeque<(Gid, AhSpec)>,
    in_pool: bool,
    /// Resolutions the pool refused (it is gone), to report as failed.
    refused: VecDeque<Resolved>,
}

impl Resolutions {
    pub(super) fn new() -> Resolutions {
        Resolutions {
            inbox: Arc::new(Inbox::default()),
            waiting: VecDeque::new(),
            in_pool: false,
            refused: VecDeque::new(),
        }
    }

    pub(super) fn set_notifier(&self, notifier: Option<ResolveNotifier>) {
        self.inbox.set_notifier(notifier);
    }

    /// Resolutions started and not yet collected.
    pub(super) fn in_progress(&self) -> usize {
        self.waiting.len() + usize::from(self.in_pool) + self.refused.len()
    }

    /// Whether [`Resolutions::collect`] has something now.
    pub(super) fn has_finished(&self) -> bool {
        !self.refused.is_empty() || (self.in_pool && !self.inbox.is_empty())
    }

    /// Queues the creation of `dgid`'s address handle.
    pub(super) fn start(&mut self, shared: &Shared, dgid: Gid, spec: AhSpec) {
        self.waiting.push_back((dgid, spec));
        self.feed(shared);
    }

    /// Takes what has finished, oldest first, and hands the pool the next
    /// waiting resolution.
    pub(super) fn collect(&mut self, shared: &Shared) -> VecDeque<Resolved> {
        let mut done = core::mem::take(&mut self.refused);
        if self.in_pool {
            let finished = self.inbox.take();
            if !finished.is_empty() {
                self.in_pool = false;
            }
            done.extend(finished);
        }
        self.feed(shared);
        done
    }

    /// Gives the pool the next waiting resolution, if none of ours is there.
    fn feed(&mut self, shared: &Shared) {
        while !self.in_pool {
            let Some((dgid, spec)) = self.waiting.pop_front() else {
                return;
            };
            let job = Job {
                dev: Arc::clone(&shared.dev),
                name: Arc::from(shared.name.as_str()),
                spec,
                dgid,
                inbox: Arc::clone(&self.inbox),
            };
            match shared.resolver.submit(job) {
                Ok(()) => self.in_pool = true,
                Err(_) => {
                    log::error!(
                        "rdma: {}: the address resolution threads are gone",
                        shared.name
                    );
                    self.refused.push_back((dgid, Err(PathError::NoResources)));
                }
            }
        }
    }
}
