//! Finding each seat's domain by name, and letting it go when the domain
//! is destroyed (or renamed away).

use xen_proto::ibchan::{self, node};
use xen_proto::XenbusState;

use super::{tolerate, trim_nul, Binding, Devices, Phase};
use crate::handoff::{EndReason, Handoff};
use crate::xen::store::{Store, StoreError, NO_TX};

impl Devices {
    /// Binds every domain whose name matches a seat that lacks one.
    pub(super) fn scan(
        &mut self,
        xs: &mut impl Store,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        let Some(Some(ids)) = tolerate(
            "listing /local/domain",
            xs.directory(NO_TX, "/local/domain"),
        )?
        else {
            return Ok(());
        };
        for id in ids {
            let Ok(domid) = id.parse::<u16>() else {
                continue;
            };
            if domid == self.own
                || self
                    .seats
                    .iter()
                    .any(|s| s.binding.as_ref().is_some_and(|b| b.domid == domid))
            {
                continue;
            }
            let Some(name) = self.domain_name(xs, domid)? else {
                continue;
            };
            let Some(i) = self.seats.iter().position(|s| s.spec.domain == name) else {
                continue;
            };
            // Not yet (or no longer) introduced: the toolstack is still
            // building it (@introduceDomain will come), or it is dead and
            // its home was left behind.
            if !self.introduced(xs, domid)? {
                continue;
            }
            if let Some(old) = self.seats[i].binding.as_ref().map(|b| b.domid) {
                if self.alive(xs, i)? {
                    log::warn!(
                        "guest {}: domain {domid} is also named {name:?}; ignored while domain {old} has the seat",
                        self.seats[i].spec.name
                    );
                    continue;
                }
                self.release(xs, i, out)?;
            }
            self.bind(xs, i, domid, out)?;
        }
        Ok(())
    }

    /// Releases every seat whose domain has gone.
    pub(super) fn check_released(
        &mut self,
        xs: &mut impl Store,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        for i in 0..self.seats.len() {
            if self.seats[i].binding.is_some() && !self.alive(xs, i)? {
                self.release(xs, i, out)?;
            }
        }
        Ok(())
    }

    pub(super) fn domain_name(
        &self,
        xs: &mut impl Store,
        domid: u16,
    ) -> Result<Option<String>, StoreError> {
        let path = format!("/local/domain/{domid}/name");
        let value = tolerate(&format!("reading {path}"), xs.read(NO_TX, &path))?.flatten();
        Ok(value.map(|v| String::from_utf8_lossy(trim_nul(&v)).into_owned()))
    }

    /// Whether xenstored knows `domid` (if it cannot say, assume so).
    pub(super) fn introduced(
        &mut self,
        xs: &mut impl Store,
        domid: u16,
    ) -> Result<bool, StoreError> {
        let r = tolerate("XS_IS_DOMAIN_INTRODUCED", xs.is_domain_introduced(domid))?;
        Ok(r != Some(false))
    }

    /// Whether seat `i`'s domain still exists under the seat's name: its
    /// name node is there and xenstored still knows it. (A destroyed domain
    /// loses `/local/domain/<id>` and its introduction; a renamed one keeps
    /// the first and no longer matches.)
    pub(super) fn alive(&mut self, xs: &mut impl Store, i: usize) -> Result<bool, StoreError> {
        let Some(domid) = self.domid_of(i) else {
            return Ok(false);
        };
        if self.domain_name(xs, domid)?.as_deref() != Some(self.seats[i].spec.domain.as_str()) {
            return Ok(false);
        }
        self.introduced(xs, domid)
    }

    /// Seat `i` serves `domid` from now on.
    pub(super) fn bind<S: Store>(
        &mut self,
        xs: &mut S,
        i: usize,
        domid: u16,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        let fe = ibchan::frontend_path(domid);
        let be = ibchan::backend_path(self.own, domid);
        let read_state = |xs: &mut S, path: String| -> Result<Option<XenbusState>, StoreError> {
            let v = tolerate(&format!("reading {path}"), xs.read(NO_TX, &path))?;
            Ok(v.flatten().map(|v| XenbusState::parse(&v)))
        };
        let frontend = read_state(xs, format!("{fe}/{}", node::STATE))?;
        let backend = read_state(xs, format!("{be}/{}", node::STATE))?;
        self.seats[i].binding = Some(Binding {
            domid,
            phase: Phase::WaitFrontend,
            frontend,
        });
        self.counters.bound += 1;
        log::info!(
            "guest {}: domain {:?} is domain {domid}",
            self.seats[i].spec.name,
            self.seats[i].spec.domain
        );
        let adopt = backend.is_some()
            && matches!(
                frontend,
                Some(XenbusState::Initialised | XenbusState::Connected)
            );
        if adopt {
            log::info!(
                "{}: adopting a frontend already {} (the back end restarted)",
                self.who(i),
                frontend.unwrap_or(XenbusState::Unknown)
            );
            self.publish(xs, i, true, out)?;
        } else {
            self.set_up(xs, i, frontend.is_none())?;
        }
        let (path, token) = self.frontend_watch(i, domid);
        tolerate(&format!("watching {path}"), xs.watch(&path, &token))?;
        Ok(())
    }

    /// Seat `i`'s domain has gone (or its seat moves to another domain):
    /// ends the session and removes the device nodes.
    pub(super) fn release(
        &mut self,
        xs: &mut impl Store,
        i: usize,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        let who = self.who(i);
        let Some(b) = self.seats[i].binding.take() else {
            return Ok(());
        };
        let domid = b.domid;
        if matches!(b.phase, Phase::Mapping(_) | Phase::Connected(_)) {
            out.push(Handoff::End {
                seat: self.seats[i].spec.seat,
                domid,
                reason: EndReason::DomainGone,
            });
        }
        self.counters.released += 1;
        log::info!("{who}: domain gone; removing its device nodes");
        let (path, token) = self.frontend_watch(i, domid);
        tolerate(&format!("unwatching {path}"), xs.unwatch(&path, &token))?;
        let be_dir = format!(
            "/local/domain/{}/backend/{}/{domid}",
            self.own,
            ibchan::DEVICE_TYPE
        );
        tolerate(&format!("removing {be_dir}"), xs.rm(NO_TX, &be_dir))?;
        // Never recreate anything under a domain path the toolstack removed.
        let home = format!("/local/domain/{domid}");
        if tolerate(&format!("reading {home}"), xs.read(NO_TX, &home))?
            .flatten()
            .is_some()
        {
            let fe = ibchan::frontend_path(domid);
            tolerate(&format!("removing {fe}"), xs.rm(NO_TX, &fe))?;
        }
        Ok(())
    }
}
