//! The back end's end of a ring: consumes requests, produces responses.

use core::fmt;

use bytemuck::Pod;

use super::{field, RingError, Shared};
use crate::shm::Window;
use crate::sync::{fence, Ordering};

/// The back end's end of a ring.
pub struct BackRing<Req: Pod, Rsp: Pod> {
    shared: Shared<Req, Rsp>,
    /// Requests consumed.
    req_cons: u32,
    /// The guest's `req_prod` as last loaded and validated.
    req_prod_seen: u32,
    /// Responses pushed (published or not).
    rsp_prod_pvt: u32,
    /// The `rsp_prod` value we last published.
    rsp_prod_pub: u32,
    /// Published up to here when the peer's event index was last checked:
    /// a checked publish covers everything published since.
    rsp_checked: u32,
    /// A protocol violation seen earlier; returned from then on.
    fault: Option<RingError>,
}

impl<Req: Pod, Rsp: Pod> fmt::Debug for BackRing<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("shared", &self.shared)
            .field("req_cons", &self.req_cons)
            .field("req_prod_seen", &self.req_prod_seen)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("rsp_prod_pub", &self.rsp_prod_pub)
            .field("rsp_checked", &self.rsp_checked)
            .field("fault", &self.fault)
            .finish()
    }
}

impl<Req: Pod, Rsp: Pod> BackRing<Req, Rsp> {
    /// Attaches to a ring of `1 << order` entries at the start of `win`,
    /// which must hold `ring_bytes::<Req, Rsp>(order)` bytes.
    pub fn attach(win: Window, order: u8) -> Result<Self, RingError> {
        Ok(BackRing {
            shared: Shared::attach(win, order)?,
            req_cons: 0,
            req_prod_seen: 0,
            rsp_prod_pvt: 0,
            rsp_prod_pub: 0,
            rsp_checked: 0,
            fault: None,
        })
    }

    /// Handshake step 3: private indices 0, `rsp_prod` = 0, `req_event` = 1.
    /// The guest-owned words are not touched.
    pub fn init(&mut self) {
        self.init_at(0);
    }

    /// Like [`init`](Self::init) with every index starting at `start`
    /// (`req_event` = `start + 1`), to test wrap-around.
    #[doc(hidden)]
    pub fn init_at(&mut self, start: u32) {
        let s = &self.shared;
        s.store(field::RSP_PROD, start, Ordering::Relaxed);
        s.store(field::REQ_EVENT, start.wrapping_add(1), Ordering::Release);
        self.req_cons = start;
        self.req_prod_seen = start;
        self.rsp_prod_pvt = start;
        self.rsp_prod_pub = start;
        self.rsp_checked = start;
        self.fault = None;
    }

    /// Number of entries.
    #[inline]
    pub fn entries(&self) -> u32 {
        self.shared.entries
    }

    /// Requests consumed but not answered yet: `req_cons - rsp_prod_pvt`.
    #[inline]
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Loads `req_prod` (`Acquire`) and checks it against both our consumer
    /// index and the responses we owe.
    #[inline]
    fn refresh(&mut self) -> Result<(), RingError> {
        let prod = self.shared.load(field::REQ_PROD, Ordering::Acquire);
        let entries = self.entries();
        let cons = if prod.wrapping_sub(self.req_cons) > entries {
            self.req_cons
        } else if prod.wrapping_sub(self.rsp_prod_pvt) > entries {
            // The guest has more than `entries` requests without a response.
            self.rsp_prod_pvt
        } else {
            self.req_prod_seen = prod;
            return Ok(());
        };
        let e = RingError::Overflow {
            prod,
            cons,
            entries,
        };
        self.fault = Some(e);
        Err(e)
    }

    /// Copies out the next request, once, if any. `req_prod` is loaded only
    /// when the previously loaded batch is used up.
    #[inline]
    pub fn pop_request(&mut self) -> Result<Option<Req>, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        if self.req_cons == self.req_prod_seen {
            self.refresh()?;
            if self.req_cons == self.req_prod_seen {
                return Ok(None);
            }
        }
        let offset = self.shared.req_offset(self.req_cons);
        let req = self.shared.win.read_pod::<Req>(offset)?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Copies out up to `out.len()` requests at once, in whole words, and
    /// returns how many. `req_prod` is loaded again only when the requests
    /// seen at the last load cannot fill `out`. The same requests, in the same order, as
    /// that many [`pop_request`](Self::pop_request) calls.
    #[inline]
    pub fn pop_requests(&mut self, out: &mut [Req]) -> Result<usize, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        // Look at the peer's index again only when what was seen last
        // cannot fill `out`.
        if (self.req_prod_seen.wrapping_sub(self.req_cons) as usize) < out.len() {
            self.refresh()?;
        }
        let ready = self.req_prod_seen.wrapping_sub(self.req_cons) as usize;
        let n = ready.min(out.len());
        if n > 0 {
            let array = self.shared.req_array();
            self.shared
                .read_entries(array, self.req_cons, &mut out[..n])?;
            self.req_cons = self.req_cons.wrapping_add(n as u32);
        }
        Ok(n)
    }

    /// Writes responses to the oldest unanswered requests, as many of `rsps`
    /// as there are unanswered requests, and returns how many. Like that
    /// many [`push_response`](Self::push_response) calls.
    #[inline]
    pub fn push_responses(&mut self, rsps: &[Rsp]) -> Result<usize, RingError> {
        let n = (self.unanswered() as usize).min(rsps.len());
        if n > 0 {
            let array = self.shared.rsp_array();
            self.shared
                .write_entries(array, self.rsp_prod_pvt, &rsps[..n])?;
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(n as u32);
        }
        Ok(n)
    }

    /// Writes the response to the oldest unanswered request and advances the
    /// private producer index. Nothing is visible to the guest until
    /// [`publish_responses`](Self::publish_responses).
    #[inline]
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if self.unanswered() == 0 {
            return Err(RingError::NoRequestToAnswer);
        }
        let offset = self.shared.rsp_offset(self.rsp_prod_pvt);
        self.shared.win.write_pod(offset, rsp)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the pushed responses (`Release` store of `rsp_prod`), then,
    /// after a full fence, reads `rsp_event`. Returns `true` iff the guest
    /// must be notified.
    #[inline]
    pub fn publish_responses(&mut self) -> bool {
        let old = self.rsp_checked;
        let new = self.rsp_prod_pvt;
        self.rsp_prod_pub = new;
        self.rsp_checked = new;
        self.shared
            .publish(field::RSP_PROD, field::RSP_EVENT, old, new)
    }

    /// Publishes the pushed responses (`Release` store) without the full fence
    /// and the look at the peer's event index, for a producer that will
    /// publish again soon: the next [`publish_responses`](Self::publish_responses)
    /// checks the whole range published since the last check, so no
    /// notification is lost as long as a checked publish follows before the
    /// producer stops (as virtio kicks once at the end of a burst). The fence
    /// is the costliest step of publishing between two busy cores.
    #[inline]
    pub fn publish_responses_unchecked(&mut self) {
        let new = self.rsp_prod_pvt;
        self.rsp_prod_pub = new;
        self.shared.store(field::RSP_PROD, new, Ordering::Release);
    }

    /// Call when [`pop_request`](Self::pop_request) returned `None`, before
    /// sleeping. Returns `true` if requests are pending after all; otherwise
    /// it has armed `req_event = req_cons + 1`, and the guest will notify for
    /// the next request.
    pub fn final_check_requests(&mut self) -> Result<bool, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        if self.req_cons != self.req_prod_seen {
            return Ok(true);
        }
        self.refresh()?;
        if self.req_cons != self.req_prod_seen {
            return Ok(true);
        }
        self.shared.store(
            field::REQ_EVENT,
            self.req_cons.wrapping_add(1),
            Ordering::Relaxed,
        );
        // Pairs with the fence in the guest's publish: either it sees the
        // armed event, or we see its new `req_prod` below.
        fence(Ordering::SeqCst);
        self.refresh()?;
        Ok(self.req_cons != self.req_prod_seen)
    }
}
