//! The guest's end of a ring: produces requests, consumes responses.

use core::fmt;

use bytemuck::Pod;

use super::{field, RingError, RingFull, Shared};
use crate::shm::Window;
use crate::sync::{fence, Ordering};

/// The front (guest) end of a ring.
pub struct FrontRing<Req: Pod, Rsp: Pod> {
    shared: Shared<Req, Rsp>,
    /// Requests pushed (published or not).
    req_prod_pvt: u32,
    /// The `req_prod` value we last published.
    req_prod_pub: u32,
    /// Published up to here when the peer's event index was last checked:
    /// a checked publish covers everything published since.
    req_checked: u32,
    /// Responses consumed.
    rsp_cons: u32,
    /// The back end's `rsp_prod` as last loaded and validated.
    rsp_prod_seen: u32,
    /// A protocol violation seen earlier; returned from then on.
    fault: Option<RingError>,
}

impl<Req: Pod, Rsp: Pod> fmt::Debug for FrontRing<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("shared", &self.shared)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("req_prod_pub", &self.req_prod_pub)
            .field("req_checked", &self.req_checked)
            .field("rsp_cons", &self.rsp_cons)
            .field("rsp_prod_seen", &self.rsp_prod_seen)
            .field("fault", &self.fault)
            .finish()
    }
}

impl<Req: Pod, Rsp: Pod> FrontRing<Req, Rsp> {
    /// Attaches to a ring of `1 << order` entries at the start of `win`,
    /// which must hold `ring_bytes::<Req, Rsp>(order)` bytes. The shared
    /// indices are not touched: call [`init`](Self::init) to (re)initialise.
    pub fn attach(win: Window, order: u8) -> Result<Self, RingError> {
        Ok(FrontRing {
            shared: Shared::attach(win, order)?,
            req_prod_pvt: 0,
            req_prod_pub: 0,
            req_checked: 0,
            rsp_cons: 0,
            rsp_prod_seen: 0,
            fault: None,
        })
    }

    /// (Re)initialises the ring (handshake step 2): all four shared indices
    /// 0, then `rsp_event` = 1; private indices 0. Publish it to the back end
    /// with the guest state (`Release`).
    pub fn init(&mut self) {
        self.init_at(0);
    }

    /// Like [`init`](Self::init) but with every index starting at `start`
    /// instead of 0 (`rsp_event` = `start + 1`), to test wrap-around.
    #[doc(hidden)]
    pub fn init_at(&mut self, start: u32) {
        let s = &self.shared;
        s.store(field::REQ_PROD, start, Ordering::Relaxed);
        s.store(field::REQ_EVENT, start, Ordering::Relaxed);
        s.store(field::RSP_PROD, start, Ordering::Relaxed);
        s.store(field::RSP_EVENT, start.wrapping_add(1), Ordering::Release);
        self.req_prod_pvt = start;
        self.req_prod_pub = start;
        self.req_checked = start;
        self.rsp_cons = start;
        self.rsp_prod_seen = start;
        self.fault = None;
    }

    /// Number of entries.
    #[inline]
    pub fn entries(&self) -> u32 {
        self.shared.entries
    }

    /// Requests that can be pushed now: `entries - (req_prod_pvt - rsp_cons)`.
    #[inline]
    pub fn free_requests(&self) -> u32 {
        self.entries().saturating_sub(self.outstanding())
    }

    /// Requests pushed without a response yet.
    #[inline]
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next entry and advances the private producer
    /// index. Nothing is visible to the back end until
    /// [`publish_requests`](Self::publish_requests).
    #[inline]
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingFull> {
        if self.free_requests() == 0 {
            return Err(RingFull);
        }
        let offset = self.shared.req_offset(self.req_prod_pvt);
        // Cannot fail: `attach` sized the window for every entry.
        self.shared
            .win
            .write_pod(offset, req)
            .map_err(|_| RingFull)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Writes as many of `reqs` as there are free entries, in whole words,
    /// and returns how many. Like that many
    /// [`push_request`](Self::push_request) calls.
    #[inline]
    pub fn push_requests(&mut self, reqs: &[Req]) -> usize {
        let n = (self.free_requests() as usize).min(reqs.len());
        if n > 0 {
            let array = self.shared.req_array();
            // Cannot fail: `attach` sized the window for every entry.
            if self
                .shared
                .write_entries(array, self.req_prod_pvt, &reqs[..n])
                .is_err()
            {
                return 0;
            }
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(n as u32);
        }
        n
    }

    /// Publishes the pushed requests (`Release` store of `req_prod`), then,
    /// after a full fence, reads `req_event`. Returns `true` iff the back end
    /// must be notified: its event index lies in the newly published range.
    #[inline]
    pub fn publish_requests(&mut self) -> bool {
        let old = self.req_checked;
        let new = self.req_prod_pvt;
        self.req_prod_pub = new;
        self.req_checked = new;
        self.shared
            .publish(field::REQ_PROD, field::REQ_EVENT, old, new)
    }

    /// Publishes the pushed requests (`Release` store) without the full fence
    /// and the look at the peer's event index, for a producer that will
    /// publish again soon: the next [`publish_requests`](Self::publish_requests)
    /// checks the whole range published since the last check, so no
    /// notification is lost as long as a checked publish follows before the
    /// producer stops (as virtio kicks once at the end of a burst). The fence
    /// is the costliest step of publishing between two busy cores.
    #[inline]
    pub fn publish_requests_unchecked(&mut self) {
        let new = self.req_prod_pvt;
        self.req_prod_pub = new;
        self.shared.store(field::REQ_PROD, new, Ordering::Release);
    }

    /// Loads `rsp_prod` (`Acquire`) and checks it: the back end may not have
    /// answered more requests than were published.
    #[inline]
    fn refresh(&mut self) -> Result<(), RingError> {
        let prod = self.shared.load(field::RSP_PROD, Ordering::Acquire);
        let answered = prod.wrapping_sub(self.rsp_cons);
        let asked = self.req_prod_pub.wrapping_sub(self.rsp_cons);
        if answered > asked {
            let e = RingError::Overflow {
                prod,
                cons: self.rsp_cons,
                entries: self.entries(),
            };
            self.fault = Some(e);
            return Err(e);
        }
        self.rsp_prod_seen = prod;
        Ok(())
    }

    /// Copies out the next response, if any. `rsp_prod` is loaded only when
    /// the previously loaded batch is used up.
    #[inline(always)]
    pub fn pop_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        if self.rsp_cons == self.rsp_prod_seen {
            self.refresh()?;
            if self.rsp_cons == self.rsp_prod_seen {
                return Ok(None);
            }
        }
        let offset = self.shared.rsp_offset(self.rsp_cons);
        let rsp = self.shared.win.read_pod::<Rsp>(offset)?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Copies out up to `out.len()` responses at once and returns how many;
    /// like that many [`pop_response`](Self::pop_response) calls.
    #[inline]
    pub fn pop_responses(&mut self, out: &mut [Rsp]) -> Result<usize, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        // Look at the peer's index again only when what was seen last
        // cannot fill `out`.
        if (self.rsp_prod_seen.wrapping_sub(self.rsp_cons) as usize) < out.len() {
            self.refresh()?;
        }
        let ready = self.rsp_prod_seen.wrapping_sub(self.rsp_cons) as usize;
        let n = ready.min(out.len());
        if n > 0 {
            let array = self.shared.rsp_array();
            self.shared
                .read_entries(array, self.rsp_cons, &mut out[..n])?;
            self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        }
        Ok(n)
    }

    /// Call when [`pop_response`](Self::pop_response) returned `None`, before
    /// sleeping. Returns `true` if responses are pending after all (keep
    /// polling); otherwise it has armed `rsp_event = rsp_cons + 1`, and the
    /// back end will notify for the next response.
    pub fn final_check_responses(&mut self) -> Result<bool, RingError> {
        if let Some(e) = self.fault {
            return Err(e);
        }
        if self.rsp_cons != self.rsp_prod_seen {
            return Ok(true);
        }
        self.refresh()?;
        if self.rsp_cons != self.rsp_prod_seen {
            return Ok(true);
        }
        self.shared.store(
            field::RSP_EVENT,
            self.rsp_cons.wrapping_add(1),
            Ordering::Relaxed,
        );
        // Pairs with the fence in the back end's publish: either it sees the
        // armed event, or we see its new `rsp_prod` below.
        fence(Ordering::SeqCst);
        self.refresh()?;
        Ok(self.rsp_cons != self.rsp_prod_seen)
    }
}
