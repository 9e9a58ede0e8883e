//! The supervisor's side of the ibchan device: for each Xen seat, finds
//! the domain of that name, writes its device nodes, waits for the
//! frontend to publish, hands the publication to the worker, and follows
//! the frontend and the domain until they go.
//!
//! Everything is driven by xenstore watch events and worker reports; no
//! call here waits for a guest. Per seat:
//!
//! ```text
//!  (no domain) --domain named X appears--> write nodes, backend InitWait   [WaitFrontend]
//!  WaitFrontend --frontend Initialised--> parse once --ok--> Handoff::Xen  [Mapping]
//!                                                   --bad--> backend Closed [Closed]
//!  Mapping --worker: XenConnected--> backend Connected                      [Connected]
//!  Mapping/Connected --worker: XenFailed--> backend Closed                  [Closed]
//!  Mapping/Connected --frontend Closing/Closed/reset--> End, backend Closed [Closed]
//!  Closed --frontend Closed/Initialising--> backend InitWait                [WaitFrontend]
//!  any --domain destroyed--> End, device nodes removed                      (no domain)
//! ```
//!
//! A frontend already at Initialised/Connected with a backend directory
//! when the seat binds (the supervisor restarted) is adopted with
//! `restart = true`, without rewriting its nodes.

use xen_proto::ibchan::{self, node, FrontendPublication};
use xen_proto::XenbusState;

use super::store::{Store, StoreError};
use crate::handoff::{Handoff, Report};

/// How often a conflicting transaction is retried.
const TX_RETRIES: usize = 8;
const INTRODUCE: &str = "@introduceDomain";
const RELEASE: &str = "@releaseDomain";
const INTRODUCE_TOKEN: &str = "ibchan:introduce";
const RELEASE_TOKEN: &str = "ibchan:release";
const FRONTEND_TOKEN: &str = "ibchan:fe:";

/// One Xen seat, from the configuration.
#[derive(Clone, Debug)]
pub struct SeatSpec {
    /// The seat's index in the configuration (the worker's seat number).
    pub seat: u32,
    /// The seat's name (`--guest name=`).
    pub name: String,
    /// The Xen domain name it serves.
    pub domain: String,
    /// The most window pages the back end maps for it.
    pub max_pages: u32,
}

/// Where a bound seat is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Backend InitWait: waiting for the frontend to publish.
    WaitFrontend,
    /// Handed to the worker; waiting for its report.
    Mapping(FrontendPublication),
    /// The worker serves it; backend Connected.
    Connected(FrontendPublication),
    /// Refused, failed, or closed by the frontend: backend Closed until the
    /// frontend resets (Closed or Initialising).
    Closed,
}

/// A seat's current domain.
#[derive(Debug)]
struct Binding {
    domid: u16,
    phase: Phase,
    /// The frontend state last seen, for logging changes.
    frontend: Option<XenbusState>,
}

struct XenSeat {
    spec: SeatSpec,
    binding: Option<Binding>,
}

/// What happened, in total, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Domains bound to a seat.
    pub bound: u64,
    /// Publications handed to the worker.
    pub handed: u64,
    /// Sessions the worker reported connected.
    pub connected: u64,
    /// Publications refused (bad values).
    pub refused: u64,
    /// Sessions the worker reported failed.
    pub failed: u64,
    /// Sessions ended because the frontend closed.
    pub closed: u64,
    /// Domains released (destroyed).
    pub released: u64,
}

/// The ibchan devices of every Xen seat.
pub struct Devices {
    own: u16,
    seats: Vec<XenSeat>,
    counters: DeviceCounters,
}

/// A remote error (a node gone, a permission) is logged and the seat
/// carries on; a broken connection goes up.
fn tolerate<T>(what: &str, r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_connection() => Err(e),
        Err(e) => {
            log::warn!("xen: {what}: {e}");
            Ok(None)
        }
    }
}

fn trim_nul(v: &[u8]) -> &[u8] {
    match v.iter().position(|&b| b == 0) {
        Some(i) => &v[..i],
        None => v,
    }
}

impl Devices {
    pub fn new(own: u16, seats: Vec<SeatSpec>) -> Devices {
        Devices {
            own,
            seats: seats
                .into_iter()
                .map(|spec| XenSeat {
                    spec,
                    binding: None,
                })
                .collect(),
            counters: DeviceCounters::default(),
        }
    }

    pub fn counters(&self) -> DeviceCounters {
        self.counters
    }

    /// The domain bound to the seat with configuration index `seat`.
    #[cfg(test)]
    pub fn bound_domid(&self, seat: u32) -> Option<u16> {
        self.seats
            .iter()
            .find(|s| s.spec.seat == seat)
            .and_then(|s| s.binding.as_ref().map(|b| b.domid))
    }

    /// (Re)starts on a fresh xenstore connection: registers the watches,
    /// drops seats whose domain has gone, and binds domains that match.
    pub fn start(&mut self, xs: &mut impl Store, out: &mut Vec<Handoff>) -> Result<(), StoreError> {
        xs.watch(INTRODUCE, INTRODUCE_TOKEN)?;
        xs.watch(RELEASE, RELEASE_TOKEN)?;
        for i in 0..self.seats.len() {
            let Some(b) = &self.seats[i].binding else {
                continue;
            };
            let (path, token) = self.frontend_watch(i, b.domid);
            // Writes lost while xenstore was unreachable are made again.
            let state = match b.phase {
                Phase::WaitFrontend | Phase::Mapping(_) => XenbusState::InitWait,
                Phase::Connected(_) => XenbusState::Connected,
                Phase::Closed => XenbusState::Closed,
            };
            xs.watch(&path, &token)?;
            self.set_backend_state(xs, i, state)?;
        }
        self.check_released(xs, out)?;
        self.scan(xs, out)
    }

    /// A watch fired.
    pub fn watch_event(
        &mut self,
        xs: &mut impl Store,
        path: &str,
        token: &str,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        match token {
            INTRODUCE_TOKEN => self.scan(xs, out),
            RELEASE_TOKEN => {
                self.check_released(xs, out)?;
                self.scan(xs, out)
            }
            t => {
                let Some((seat, domid)) = t
                    .strip_prefix(FRONTEND_TOKEN)
                    .and_then(|r| r.split_once(':'))
                    .and_then(|(s, d)| Some((s.parse::<u32>().ok()?, d.parse::<u16>().ok()?)))
                else {
                    log::debug!("xen: watch {path} with unknown token {t:?}");
                    return Ok(());
                };
                match self.bound_index(seat, domid) {
                    Some(i) => self.frontend_changed(xs, i, out),
                    None => Ok(()), // a stale watch of a domain since released
                }
            }
        }
    }

    /// The worker reported on a session: updates the seat and writes the
    /// backend state.
    pub fn report(&mut self, xs: &mut impl Store, report: &Report) -> Result<(), StoreError> {
        match self.apply_report(report) {
            Some((i, state)) => self.set_backend_state(xs, i, state),
            None => Ok(()),
        }
    }

    /// Updates the seat a report is about (without xenstore, e.g. while it
    /// is unreachable: [`Devices::start`] writes the states again) and says
    /// which backend state to write.
    pub fn apply_report(&mut self, report: &Report) -> Option<(usize, XenbusState)> {
        let (seat, domid) = match report {
            Report::XenConnected { seat, domid } | Report::XenFailed { seat, domid, .. } => {
                (*seat, *domid)
            }
        };
        let Some(i) = self.bound_index(seat, domid) else {
            log::debug!("xen: stale report for seat {seat}, domain {domid}: {report:?}");
            return None;
        };
        let Some(binding) = self.seats[i].binding.as_ref() else {
            self.unbound(i);
            return None;
        };
        let publication = match binding.phase.clone() {
            Phase::Mapping(p) | Phase::Connected(p) => p,
            phase => {
                log::debug!("xen: report for seat {seat} in phase {phase:?} ignored: {report:?}");
                return None;
            }
        };
        match report {
            Report::XenConnected { .. } => {
                self.counters.connected += 1;
                self.set_phase(i, Phase::Connected(publication));
                Some((i, XenbusState::Connected))
            }
            Report::XenFailed { reason, .. } => {
                log::warn!("{}: the worker disconnected it: {reason}", self.who(i));
                self.counters.failed += 1;
                self.set_phase(i, Phase::Closed);
                Some((i, XenbusState::Closed))
            }
        }
    }

    /// Every session the worker should be serving, for a new worker
    /// (`restart = true`: the guest's window holds the old worker's state).
    pub fn sessions(&self) -> Vec<Handoff> {
        let mut out = Vec::new();
        for s in &self.seats {
            let Some(b) = &s.binding else { continue };
            if let Phase::Mapping(p) | Phase::Connected(p) = &b.phase {
                out.push(Handoff::Xen {
                    seat: s.spec.seat,
                    restart: true,
                    domid: b.domid,
                    publication: p.clone(),
                });
            }
        }
        out
    }

    // ---- helpers ----

    fn bound_index(&self, seat: u32, domid: u16) -> Option<usize> {
        self.seats.iter().position(|s| {
            s.spec.seat == seat && s.binding.as_ref().is_some_and(|b| b.domid == domid)
        })
    }

    fn frontend_watch(&self, i: usize, domid: u16) -> (String, String) {
        (
            format!("{}/{}", ibchan::frontend_path(domid), node::STATE),
            format!("{FRONTEND_TOKEN}{}:{domid}", self.seats[i].spec.seat),
        )
    }

    /// "guest g1 (domain 5)" for logs.
    fn who(&self, i: usize) -> String {
        match &self.seats[i].binding {
            Some(b) => format!("guest {} (domain {})", self.seats[i].spec.name, b.domid),
            None => format!("guest {}", self.seats[i].spec.name),
        }
    }

    /// The domain seat `i` serves. Callers only ask for bound seats; should
    /// one ever ask for an unbound seat, that is logged as an internal error
    /// and the caller skips its work, rather than the supervisor panicking.
    fn domid_of(&self, i: usize) -> Option<u16> {
        let domid = self.seats[i].binding.as_ref().map(|b| b.domid);
        if domid.is_none() {
            self.unbound(i);
        }
        domid
    }

    /// Seat `i`'s binding, mutable (see [`Devices::domid_of`]).
    fn binding_mut(&mut self, i: usize) -> Option<&mut Binding> {
        if self.seats[i].binding.is_none() {
            self.unbound(i);
        }
        self.seats[i].binding.as_mut()
    }

    fn set_phase(&mut self, i: usize, phase: Phase) {
        if let Some(b) = self.binding_mut(i) {
            b.phase = phase;
        }
    }

    fn unbound(&self, i: usize) {
        log::error!(
            "xen: internal error: seat {} is not bound to a domain here; skipped",
            self.seats[i].spec.name
        );
    }
}

mod domains;
mod frontend;
#[cfg(test)]
mod tests;
