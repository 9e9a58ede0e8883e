//! The DHCP client's state machine (RFC 2131 §4.4), with no sockets and no
//! clock of its own: [`DhcpClient::poll`] says what to send and when, and
//! [`DhcpClient::receive`] takes the server's replies. `super::socket`
//! runs it on a smoltcp UDP socket.
//!
//! INIT sends DISCOVER; SELECTING takes the first OFFER and sends REQUEST;
//! REQUESTING takes ACK (BOUND) or NAK (INIT again, after a pause). BOUND
//! renews at T1 with a REQUEST unicast to the server (RENEWING), and
//! rebinds at T2 with a broadcast one (REBINDING); an ACK extends the lease,
//! a NAK or the lease running out takes the address away. Every wait for a
//! reply is retransmitted with exponential backoff.

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

use super::wire::{ClientId, DhcpRepr, MessageType, Op};

/// First retransmission timeout in INIT/SELECTING and REQUESTING (RFC 2131
/// §4.1: 4 s, doubled each time up to 64 s, randomised by ±1 s).
const FIRST_TIMEOUT: Duration = Duration::from_secs(4);
const MAX_TIMEOUT: Duration = Duration::from_secs(64);
/// REQUESTs sent for one OFFER before starting over with DISCOVER.
const MAX_REQUESTS: u8 = 4;
/// The wait after a NAK before DISCOVER again, so that a server that always
/// says no is not asked in a tight loop.
const NAK_PAUSE: Duration = Duration::from_secs(2);
/// Least wait between two REQUESTs while RENEWING or REBINDING (RFC 2131
/// §4.4.5), unless T2 or the expiry is nearer.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(60);
/// The shortest lease taken: a shorter one would have the client renewing
/// all the time.
const MIN_LEASE_SECS: u32 = 8;

/// A deadline that never comes (an infinite lease has no T1).
const NEVER: Instant = Instant::from_micros_const(1 << 60);

/// What the server gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Cidr,
    pub router: Option<Ipv4Address>,
    pub server: Ipv4Address,
    /// `None`: infinite.
    pub duration: Option<Duration>,
    pub renew_after: Option<Duration>,
    pub rebind_after: Option<Duration>,
}

/// Where the client stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Sending DISCOVER, waiting for an OFFER.
    Selecting,
    /// Sending REQUEST for an offer, waiting for ACK or NAK.
    Requesting { offer: Lease },
    /// Holding the address.
    Bound,
    /// Past T1: asking the server that gave the lease to extend it.
    Renewing,
    /// Past T2: asking any server.
    Rebinding,
}

/// A change of address for the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Use this address and router (a new lease, or a renewed one whose
    /// address changed).
    Configured(Lease),
    /// The lease ran out or was refused: drop the address.
    Deconfigured { address: Ipv4Cidr },
}

/// A message to send: the payload and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub repr: DhcpRepr,
    /// Source: 0.0.0.0 before there is an address.
    pub src: Ipv4Address,
    pub dst: Ipv4Address,
}

/// Why a reply was not taken (for counters and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not a reply, or not to our transaction or client id.
    NotOurs,
    /// Not expected in this state.
    Unexpected,
    /// An OFFER or ACK without a usable address, mask or lease time.
    Unusable,
}

/// The client.
#[derive(Debug)]
pub struct DhcpClient {
    client_id: ClientId,
    state: State,
    lease: Option<(Lease, Instant)>,
    xid: u32,
    rng: u64,
    /// When to send next (or act on a timer).
    deadline: Instant,
    /// The current retransmission timeout.
    timeout: Duration,
    /// Sends in this state.
    attempts: u8,
    transmissions: u64,
}

impl DhcpClient {
    /// A client identified by `client_id` (see [`super::client_id`]) that
    /// starts discovering at `now`. `seed` varies the transaction ids and
    /// the jitter.
    pub fn new(client_id: ClientId, now: Instant, seed: u64) -> DhcpClient {
        let mut c = DhcpClient {
            client_id,
            state: State::Selecting,
            lease: None,
            xid: 0,
            rng: seed | 1,
            deadline: now,
            timeout: FIRST_TIMEOUT,
            attempts: 0,
            transmissions: 0,
        };
        c.xid = c.random();
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lease held, if any.
    pub fn lease(&self) -> Option<Lease> {
        self.lease.map(|(l, _)| l)
    }

    /// Messages sent so far (first sends and retransmissions).
    pub fn transmissions(&self) -> u64 {
        self.transmissions
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn poll_at(&self) -> Instant {
        self.deadline
    }

    /// xorshift64*: good enough for transaction ids and jitter.
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// `t` plus or minus up to a second.
    fn jitter(&mut self, t: Duration) -> Duration {
        let r = u64::from(self.random() % 2001);
        let ms = t.total_millis() + r;
        Duration::from_millis(ms.saturating_sub(1000).max(500))
    }

    /// Backs off: the next send after the current timeout, which doubles.
    fn schedule_retry(&mut self, now: Instant) {
        let t = self.timeout;
        self.deadline = now + self.jitter(t);
        self.timeout = (t * 2).min(MAX_TIMEOUT);
    }

    fn restart(&mut self, now: Instant) {
        self.state = State::Selecting;
        self.xid = self.random();
        self.timeout = FIRST_TIMEOUT;
        self.attempts = 0;
        self.deadline = now;
    }

    fn message(&self, t: MessageType) -> DhcpRepr {
        let mut r = DhcpRepr::ipoib_client(t, self.xid);
        r.client_id = Some(self.client_id.clone());
        r
    }

    /// Timers: what to send now, and any change of address. Call when
    /// `now >= poll_at()` (earlier calls do nothing).
    pub fn poll(&mut self, now: Instant) -> (Option<Outgoing>, Option<Event>) {
        if now < self.deadline {
            return (None, None);
        }
        let broadcast = Ipv4Address::BROADCAST;
        let unspecified = Ipv4Address::UNSPECIFIED;
        match self.state {
            State::Selecting => {
                self.attempts = self.attempts.saturating_add(1);
                self.schedule_retry(now);
                self.transmissions += 1;
                let out = Outgoing {
                    repr: self.message(MessageType::Discover),
                    src: unspecified,
                    dst: broadcast,
                };
                (Some(out), None)
            }
            State::Requesting { offer } => {
                if self.attempts >= MAX_REQUESTS {
                    self.restart(now);
                    return self.poll(now);
                }
                self.attempts += 1;
                self.schedule_retry(now);
                self.transmissions += 1;
                let mut repr = self.message(MessageType::Request);
                repr.server_id = Some(offer.server);
                repr.requested_ip = Some(offer.address.address());
                let out = Outgoing {
                    repr,
                    src: unspecified,
                    dst: broadcast,
                };
                (Some(out), None)
            }
            State::Bound | State::Renewing | State::Rebinding => self.poll_lease(now),
        }
    }

    /// BOUND, RENEWING and REBINDING: move on at T1, T2 and expiry, and
    /// send the REQUESTs in between.
    fn poll_lease(&mut self, now: Instant) -> (Option<Outgoing>, Option<Event>) {
        let Some((lease, start)) = self.lease else {
            self.restart(now);
            return (None, None);
        };
        let at = |d: Option<Duration>| d.map(|d| start + d);
        let (t1, t2, end) = (
            at(lease.renew_after),
            at(lease.rebind_after),
            at(lease.duration),
        );
        if end.is_some_and(|e| now >= e) {
            self.lease = None;
            self.restart(now);
            let address = lease.address;
            log::warn!("dhcp: lease of {address} expired; the address is removed");
            return (None, Some(Event::Deconfigured { address }));
        }
        let past = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        let (state, until) = if past(t2) {
            (State::Rebinding, end)
        } else if past(t1) {
            (State::Renewing, t2)
        } else {
            // Bound: nothing until T1 (an infinite lease waits forever).
            self.state = State::Bound;
            self.deadline = t1.unwrap_or(NEVER);
            return (None, None);
        };
        if state != self.state {
            self.state = state;
            self.xid = self.random();
        }
        // Half the time left to the next stage, at least a minute unless
        // that stage comes sooner (RFC 2131 §4.4.5).
        let left = until.map_or(MIN_RENEW_RETRY, |u| u - now);
        let wait = (left / 2).max(MIN_RENEW_RETRY.min(left));
        self.deadline = now + wait.max(Duration::from_millis(1));
        self.transmissions += 1;
        let mut repr = self.message(MessageType::Request);
        repr.ciaddr = lease.address.address();
        // RENEWING unicasts to the server, so the broadcast flag is off.
        let dst = if state == State::Renewing {
            repr.broadcast = false;
            lease.server
        } else {
            Ipv4Address::BROADCAST
        };
        let out = Outgoing {
            repr,
            src: lease.address.address(),
            dst,
        };
        (Some(out), None)
    }

    /// Takes a message from the server port. Returns the change of address
    /// it causes, or why it was ignored.
    pub fn receive(&mut self, now: Instant, reply: &DhcpRepr) -> Result<Option<Event>, Ignored> {
        let ours = reply.op == Op::Reply
            && reply.xid == self.xid
            && reply
                .client_id
                .as_ref()
                .is_none_or(|id| *id == self.client_id);
        if !ours {
            return Err(Ignored::NotOurs);
        }
        match (self.state, reply.message_type) {
            (State::Selecting, MessageType::Offer) => {
                let offer = lease_of(reply).ok_or(Ignored::Unusable)?;
                self.state = State::Requesting { offer };
                self.timeout = FIRST_TIMEOUT;
                self.attempts = 0;
                self.deadline = now;
                Ok(None)
            }
            (State::Requesting { offer }, MessageType::Ack) => {
                let mut lease = lease_of(reply).ok_or(Ignored::Unusable)?;
                if lease.address != offer.address {
                    return Err(Ignored::Unusable);
                }
                lease.server = reply.server_id.unwrap_or(offer.server);
                Ok(Some(self.bind(now, lease)))
            }
            (State::Renewing | State::Rebinding, MessageType::Ack) => {
                let mut lease = lease_of(reply).ok_or(Ignored::Unusable)?;
                let old = self.lease.map(|(l, _)| l);
                if let Some(old) = old {
                    lease.server = reply.server_id.unwrap_or(old.server);
                }
                let event = self.bind(now, lease);
                let same =
                    old.is_some_and(|o| o.address == lease.address && o.router == lease.router);
                Ok((!same).then_some(event))
            }
            (State::Requesting { .. }, MessageType::Nak) => {
                log::warn!("dhcp: the server refused the offered address (NAK); starting over");
                self.restart(now + NAK_PAUSE);
                Ok(None)
            }
            (State::Renewing | State::Rebinding, MessageType::Nak) => {
                let address = self.lease.take().map(|(l, _)| l.address);
                log::warn!("dhcp: the server refused to extend the lease (NAK); starting over");
                self.restart(now + NAK_PAUSE);
                Ok(address.map(|address| Event::Deconfigured { address }))
            }
            _ => Err(Ignored::Unexpected),
        }
    }

    fn bind(&mut self, now: Instant, lease: Lease) -> Event {
        self.lease = Some((lease, now));
        self.state = State::Bound;
        self.attempts = 0;
        self.timeout = FIRST_TIMEOUT;
        self.deadline = lease.renew_after.map_or(NEVER, |t| now + t);
        Event::Configured(lease)
    }
}

/// The lease an OFFER or ACK describes, if it is usable: a unicast host
/// address with a contiguous mask, a server identifier and a lease time of
/// at least [`MIN_LEASE_SECS`]. T1 and T2 default to 1/2 and 7/8 of the
/// lease (RFC 2131 §4.4.5) and are kept in order; a router off the subnet
/// is left out.
pub fn lease_of(reply: &DhcpRepr) -> Option<Lease> {
    let server = reply.server_id?;
    let mask = reply.subnet_mask?;
    let prefix = prefix_of(mask)?;
    let address = Ipv4Cidr::new(reply.yiaddr, prefix);
    let a = reply.yiaddr;
    let host = !a.is_unspecified()
        && !a.is_broadcast()
        && !a.is_multicast()
        && !a.is_loopback()
        && (prefix > 30 || (a != address.network().address() && Some(a) != address.broadcast()));
    if !host {
        return None;
    }
    let secs = reply.lease_time?;
    if secs < MIN_LEASE_SECS {
        return None;
    }
    let (duration, renew_after, rebind_after) = if secs == u32::MAX {
        (None, None, None)
    } else {
        let lease = u64::from(secs);
        let t2 = reply
            .rebinding_time
            .map_or(lease * 7 / 8, u64::from)
            .min(lease);
        let t1 = reply.renewal_time.map_or(lease / 2, u64::from).min(t2);
        let s = Duration::from_secs;
        (Some(s(lease)), Some(s(t1)), Some(s(t2)))
    };
    let router = reply
        .router
        .filter(|r| address.contains_addr(r) && *r != a && !r.is_unspecified());
    Some(Lease {
        address,
        router,
        server,
        duration,
        renew_after,
        rebind_after,
    })
}

/// The prefix length of a contiguous mask.
pub fn prefix_of(mask: Ipv4Address) -> Option<u8> {
    let m = u32::from_be_bytes(mask.octets());
    let prefix = m.leading_ones();
    (m.checked_shl(prefix).unwrap_or(0) == 0 && prefix > 0).then_some(prefix as u8)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
