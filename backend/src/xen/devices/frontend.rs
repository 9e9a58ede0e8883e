//! One seat's ibchan device: writing its nodes, following the frontend's
//! state, reading what it publishes, and the backend's state.

use xen_proto::ibchan::{self, node, FrontendPublication};
use xen_proto::xs::ErrorName;
use xen_proto::XenbusState;

use super::{tolerate, Devices, Phase, TX_RETRIES};
use crate::handoff::{EndReason, Handoff};
use crate::xen::store::{Perms, Store, StoreError, Tx, NO_TX};

impl Devices {
    /// Writes seat `i`'s device nodes (backend Initialising), then sets the
    /// backend to InitWait. The frontend's `state` is written only if the
    /// guest has not written one.
    pub(super) fn set_up<S: Store>(
        &mut self,
        xs: &mut S,
        i: usize,
        frontend_state: bool,
    ) -> Result<(), StoreError> {
        let Some(domid) = self.domid_of(i) else {
            return Ok(());
        };
        let spec = &self.seats[i].spec;
        let fe = ibchan::frontend_path(domid);
        let be = ibchan::backend_path(self.own, domid);
        let be_perms = Perms {
            owner: self.own,
            readers: vec![domid],
        };
        let fe_perms = Perms {
            owner: domid,
            readers: vec![self.own],
        };
        let initialising = XenbusState::Initialising.as_u32().to_string();
        let backend_nodes = vec![
            (node::FRONTEND, fe.clone()),
            (node::FRONTEND_ID, domid.to_string()),
            (node::SEAT, spec.name.clone()),
            (node::MAX_WINDOW_PAGES, spec.max_pages.to_string()),
            (node::STATE, initialising.clone()),
        ];
        let mut frontend_nodes = vec![
            (node::BACKEND, be.clone()),
            (node::BACKEND_ID, self.own.to_string()),
        ];
        if frontend_state {
            frontend_nodes.push((node::STATE, initialising));
        }
        let write_dir = |xs: &mut S, tx: Tx, dir: &str, perms: &Perms, nodes: &[(&str, String)]| {
            xs.mkdir(tx, dir)?;
            xs.set_perms(tx, dir, perms)?;
            for (name, value) in nodes {
                let path = format!("{dir}/{name}");
                xs.write(tx, &path, value.as_bytes())?;
                xs.set_perms(tx, &path, perms)?;
            }
            Ok::<(), StoreError>(())
        };
        let mut written = false;
        for _ in 0..TX_RETRIES {
            let tx = xs.transaction_start()?;
            let r = write_dir(xs, tx, &be, &be_perms, &backend_nodes)
                .and_then(|()| write_dir(xs, tx, &fe, &fe_perms, &frontend_nodes));
            match r {
                Ok(()) => {
                    if xs.transaction_end(tx, true)? {
                        written = true;
                        break;
                    }
                }
                Err(e) => {
                    tolerate("aborting a transaction", xs.transaction_end(tx, false))?;
                    if e.is_connection() {
                        return Err(e);
                    }
                    if !e.is(ErrorName::Again) {
                        log::error!("{}: cannot write its device nodes: {e}", self.who(i));
                        self.set_phase(i, Phase::Closed);
                        return Ok(());
                    }
                }
            }
        }
        if !written {
            log::error!(
                "{}: writing its device nodes conflicted {TX_RETRIES} times; giving up",
                self.who(i)
            );
            self.set_phase(i, Phase::Closed);
            return Ok(());
        }
        log::info!(
            "{}: wrote {be} and {fe} (max-window-pages {})",
            self.who(i),
            self.seats[i].spec.max_pages
        );
        self.set_phase(i, Phase::WaitFrontend);
        self.set_backend_state(xs, i, XenbusState::InitWait)
    }

    /// The frontend's state node changed (or the watch was set).
    pub(super) fn frontend_changed(
        &mut self,
        xs: &mut impl Store,
        i: usize,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        let Some(domid) = self.domid_of(i) else {
            return Ok(());
        };
        let path = format!("{}/{}", ibchan::frontend_path(domid), node::STATE);
        let Some(value) = tolerate(&format!("reading {path}"), xs.read(NO_TX, &path))? else {
            return Ok(());
        };
        let Some(value) = value else {
            if !self.alive(xs, i)? {
                return self.release(xs, i, out);
            }
            log::info!(
                "{}: its frontend directory has gone; setting the device up again",
                self.who(i)
            );
            self.end_session(i, out);
            return self.set_up(xs, i, true);
        };
        let state = XenbusState::parse(&value);
        let Some(b) = self.binding_mut(i) else {
            return Ok(());
        };
        let changed = b.frontend != Some(state);
        b.frontend = Some(state);
        let phase = b.phase.clone();
        if changed {
            log::info!("{}: frontend {state}", self.who(i));
        }
        use XenbusState as S;
        let reset = matches!(
            state,
            S::Closed | S::Initialising | S::InitWait | S::Unknown
        );
        match phase {
            Phase::WaitFrontend => match state {
                S::Initialised => self.publish(xs, i, false, out),
                // Connected to a back end before ours: its window holds
                // another worker's state.
                S::Connected => self.publish(xs, i, true, out),
                S::Closing => self.close(xs, i),
                _ => Ok(()),
            },
            Phase::Mapping(_) | Phase::Connected(_) => {
                if !(reset || state == S::Closing) {
                    return Ok(());
                }
                self.end_session(i, out);
                self.counters.closed += 1;
                self.close(xs, i)?;
                if reset {
                    self.reopen(xs, i)?;
                }
                Ok(())
            }
            Phase::Closed if reset => self.reopen(xs, i),
            Phase::Closed => Ok(()),
        }
    }

    /// Reads the frontend's publication once (in a transaction, for one
    /// consistent snapshot) and hands it to the worker, or refuses it.
    pub(super) fn publish(
        &mut self,
        xs: &mut impl Store,
        i: usize,
        restart: bool,
        out: &mut Vec<Handoff>,
    ) -> Result<(), StoreError> {
        let Some(domid) = self.domid_of(i) else {
            return Ok(());
        };
        let fe = ibchan::frontend_path(domid);
        let tx = xs.transaction_start()?;
        let mut failure: Option<StoreError> = None;
        let parsed = FrontendPublication::parse(
            |name| match xs.read(tx, &format!("{fe}/{name}")) {
                Ok(v) => v,
                Err(e) => {
                    failure.get_or_insert(e);
                    None
                }
            },
            self.seats[i].spec.max_pages,
        );
        tolerate("ending a read transaction", xs.transaction_end(tx, false))?;
        let parsed = match failure {
            Some(e) if e.is_connection() => return Err(e),
            Some(e) => Err(e.to_string()),
            None => parsed.map_err(|e| e.to_string()),
        };
        match parsed {
            Ok(publication) => {
                log::info!(
                    "{}: frontend published a window of {} pages, {} directory page(s), event channel {}; handing it to the worker",
                    self.who(i),
                    publication.window_pages,
                    publication.dir_refs.len(),
                    publication.event_channel
                );
                self.counters.handed += 1;
                out.push(Handoff::Xen {
                    seat: self.seats[i].spec.seat,
                    restart,
                    domid,
                    publication: publication.clone(),
                });
                self.set_phase(i, Phase::Mapping(publication));
                Ok(())
            }
            Err(reason) => {
                log::warn!("{}: refused its channel: {reason}", self.who(i));
                self.counters.refused += 1;
                out.push(Handoff::XenRefused {
                    seat: self.seats[i].spec.seat,
                    domid,
                });
                self.close(xs, i)
            }
        }
    }

    /// Tells the worker to end seat `i`'s session, if it has one.
    pub(super) fn end_session(&mut self, i: usize, out: &mut Vec<Handoff>) {
        let seat = self.seats[i].spec.seat;
        let Some(b) = self.binding_mut(i) else {
            return;
        };
        if matches!(b.phase, Phase::Mapping(_) | Phase::Connected(_)) {
            out.push(Handoff::End {
                seat,
                domid: b.domid,
                reason: EndReason::FrontendClosed,
            });
            b.phase = Phase::WaitFrontend;
        }
    }

    /// Backend Closed until the frontend resets.
    pub(super) fn close(&mut self, xs: &mut impl Store, i: usize) -> Result<(), StoreError> {
        self.set_phase(i, Phase::Closed);
        self.set_backend_state(xs, i, XenbusState::Closed)
    }

    /// Backend InitWait: the frontend may connect again.
    pub(super) fn reopen(&mut self, xs: &mut impl Store, i: usize) -> Result<(), StoreError> {
        self.set_phase(i, Phase::WaitFrontend);
        self.set_backend_state(xs, i, XenbusState::InitWait)
    }

    pub(super) fn set_backend_state(
        &mut self,
        xs: &mut impl Store,
        i: usize,
        state: XenbusState,
    ) -> Result<(), StoreError> {
        let Some(domid) = self.domid_of(i) else {
            return Ok(());
        };
        let path = format!("{}/{}", ibchan::backend_path(self.own, domid), node::STATE);
        let value = state.as_u32().to_string();
        if tolerate(
            &format!("writing {path}"),
            xs.write(NO_TX, &path, value.as_bytes()),
        )?
        .is_some()
        {
            log::info!("{}: backend {state}", self.who(i));
        }
        Ok(())
    }
}
