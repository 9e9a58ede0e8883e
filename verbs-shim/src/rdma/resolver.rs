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
//! Where rdma_cm is available, a unicast path is first resolved through it
//! (`path_cm`: address, then route, answered on the port's event fd, which
//! the port pumps from `poll_cq`/`arm_cq`), and only the creation of the
//! handle from the route's attributes goes to the pool.
//!
//! Each port has at most one resolution under way at a time, in rdma_cm or
//! in the pool (the rest wait in its [`Resolutions`]), so a guest whose
//! resolutions are slow holds one of the [`RESOLVER_THREADS`] or one
//! rdma_cm id at most, and the other guests' keep going. How many
//! resolutions one guest may have queued is bounded by the caller (the back
//! half's `max_pending_resolves`, and the port's handle limit).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::context::Shared;
use super::ffi::{Ah, AhSpec, CmEvent, Device};
use super::path_cm::{PathCm, PathFailure, PathQuery, Step};
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

/// How a resolution gets its address handle.
#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    /// The attributes are known: the pool creates the handle.
    Spec(AhSpec),
    /// rdma_cm resolves the address and route first (`path_cm`), on the
    /// port's own thread; then the pool creates the handle.
    Route,
}

/// The one resolution of a port that is under way.
enum Active {
    /// In the pool, creating the handle.
    Pool,
    /// rdma_cm is resolving its address or route.
    Query(PathQuery),
}

/// Paths resolved through rdma_cm, and those it could not resolve.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct PathCounts {
    pub resolved: u64,
    pub failed: u64,
}

/// One port's address resolutions: at most one under way at a time (in
/// rdma_cm or in the pool), the rest waiting here in order. So a guest
/// whose resolutions are slow holds one pool thread or one rdma_cm id at
/// most, and the other guests' go on.
pub(super) struct Resolutions {
    inbox: Arc<Inbox>,
    waiting: VecDeque<(Gid, Plan)>,
    active: Option<Active>,
    /// Resolutions that ended without the pool (refused by it, or by
    /// rdma_cm), to report.
    failed: VecDeque<Resolved>,
    /// Path queries through rdma_cm, where it is available.
    cm: Option<PathCm>,
    pub(super) counts: PathCounts,
}

impl Resolutions {
    pub(super) fn new() -> Resolutions {
        Resolutions {
            inbox: Arc::new(Inbox::default()),
            waiting: VecDeque::new(),
            active: None,
            failed: VecDeque::new(),
            cm: None,
            counts: PathCounts::default(),
        }
    }

    pub(super) fn set_notifier(&self, notifier: Option<ResolveNotifier>) {
        self.inbox.set_notifier(notifier);
    }

    /// Resolves unicast paths through rdma_cm from now on.
    pub(super) fn use_cm(&mut self, cm: PathCm) {
        self.cm = Some(cm);
    }

    /// Whether unicast paths are resolved through rdma_cm.
    pub(super) fn has_cm(&self) -> bool {
        self.cm.is_some()
    }

    /// Resolutions started and not yet collected.
    pub(super) fn in_progress(&self) -> usize {
        self.waiting.len() + usize::from(self.active.is_some()) + self.failed.len()
    }

    /// Whether [`Resolutions::collect`] has something now. (An rdma_cm
    /// answer is not counted: it makes the port's event fd readable.)
    pub(super) fn has_finished(&self) -> bool {
        !self.failed.is_empty()
            || (matches!(self.active, Some(Active::Pool)) && !self.inbox.is_empty())
    }

    /// Queues the resolution of `dgid`.
    pub(super) fn start(&mut self, shared: &Shared, dgid: Gid, plan: Plan) {
        self.waiting.push_back((dgid, plan));
        self.feed(shared);
    }

    /// Takes what has finished, oldest first, and starts the next waiting
    /// resolution.
    pub(super) fn collect(&mut self, shared: &Shared) -> VecDeque<Resolved> {
        match &self.active {
            Some(Active::Pool) => {
                let finished = self.inbox.take();
                if !finished.is_empty() {
                    self.active = None;
                }
                self.failed.extend(finished);
            }
            Some(Active::Query(q)) if q.expired(Instant::now()) => {
                let dgid = q.dgid();
                self.active = None;
                self.fail_query(shared, dgid, PathFailure::TimedOut);
            }
            _ => {}
        }
        let done = core::mem::take(&mut self.failed);
        self.feed(shared);
        done
    }

    /// Hands an rdma_cm event to the path query it is for; false if it is
    /// for none.
    pub(super) fn cm_event(&mut self, shared: &Shared, event: &CmEvent) -> bool {
        let (Some(cm), Some(Active::Query(q))) = (&self.cm, &self.active) else {
            return false;
        };
        if q.key() != event.id {
            return false;
        }
        let dgid = q.dgid();
        match cm.advance(q, event) {
            Step::Pending => {}
            Step::Done(Ok(spec)) => {
                self.counts.resolved += 1;
                log::info!(
                    "rdma: {}: path to {dgid} through rdma_cm: {}",
                    shared.name,
                    describe(&spec)
                );
                // Dropping the query destroys its id (its events are all
                // acknowledged, so this does not wait).
                self.active = None;
                self.submit(shared, dgid, spec);
            }
            Step::Done(Err(why)) => {
                self.active = None;
                self.fail_query(shared, dgid, why);
            }
        }
        self.feed(shared);
        true
    }

    fn fail_query(&mut self, shared: &Shared, dgid: Gid, why: PathFailure) {
        self.counts.failed += 1;
        log::info!(
            "rdma: {}: rdma_cm cannot resolve a path to {dgid}: {why}",
            shared.name
        );
        self.failed.push_back((dgid, Err(PathError::Unreachable)));
    }

    /// Starts the next waiting resolution, if none is under way.
    fn feed(&mut self, shared: &Shared) {
        while self.active.is_none() {
            let Some((dgid, plan)) = self.waiting.pop_front() else {
                return;
            };
            match (plan, &self.cm) {
                (Plan::Spec(spec), _) => self.submit(shared, dgid, spec),
                (Plan::Route, Some(cm)) => match cm.start(dgid) {
                    Ok(query) => self.active = Some(Active::Query(query)),
                    Err(why) => self.fail_query(shared, dgid, why),
                },
                (Plan::Route, None) => {
                    self.failed.push_back((dgid, Err(PathError::Unreachable)));
                }
            }
        }
    }

    /// Gives the pool `dgid`'s handle to create.
    fn submit(&mut self, shared: &Shared, dgid: Gid, spec: AhSpec) {
        let job = Job {
            dev: Arc::clone(&shared.dev),
            name: Arc::from(shared.name.as_str()),
            spec,
            dgid,
            inbox: Arc::clone(&self.inbox),
        };
        match shared.resolver.submit(job) {
            Ok(()) => self.active = Some(Active::Pool),
            Err(_) => {
                log::error!(
                    "rdma: {}: the address resolution threads are gone",
                    shared.name
                );
                self.failed.push_back((dgid, Err(PathError::NoResources)));
            }
        }
    }
}

/// An address handle's attributes, for logs.
fn describe(spec: &AhSpec) -> alloc::string::String {
    let mut s = alloc::format!("port {} dlid {:#x} sl {}", spec.port, spec.dlid, spec.sl);
    if let Some(g) = spec.grh {
        s.push_str(&alloc::format!(
            ", GRH to {} from GID index {} hop limit {} traffic class {:#x} flow label {:#x}",
            Gid(g.dgid),
            g.sgid_index,
            g.hop_limit,
            g.traffic_class,
            g.flow_label
        ));
    }
    s
}
