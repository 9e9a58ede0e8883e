//! Descriptor throughput: one producer thread, one consumer thread, 24-byte
//! `TxRequest`s one way and 8-byte `TxResponse`s back, on our Xen-style ring
//! over a heap `Window` and on two `rtrb` SPSC rings of the same capacity.
//!
//! Both sides work in batches of up to [`BATCH`]: the producer publishes
//! after each batch (or when the ring is full), the consumer answers every
//! request and publishes the responses after each batch (or when it ran
//! out of requests). Neither side ever has more than [`ORDER`]'s entries
//! outstanding, as the channel protocol requires. Nobody sleeps: an idle
//! side spins a little and then yields.
//!
//! Our side publishes each batch without the notification check
//! (`publish_*_unchecked`: no full fence, no look at the peer's event
//! index) and makes the checked publish a sleeping peer relies on when it
//! runs out of work, as virtio kicks once per burst. rtrb has no
//! notification protocol at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use ibguest_testkit::BoxError;
use ring::desc::{TxRequest, TxResponse};
use ring::layout::ring_bytes;
use ring::{BackRing, FrontRing, Window};

/// Ring order: 256 entries, the channel's default TX ring.
pub const ORDER: u8 = ring::LayoutParams::DEFAULT.tx_order;
/// Descriptors per publish.
pub const BATCH: u32 = 32;

const ENTRIES: u32 = 1 << ORDER;

/// The request numbered `seq`: every field derives from it, so the consumer
/// can check each descriptor in full.
fn request(seq: u64) -> TxRequest {
    TxRequest {
        slot: (seq as u32 & (ENTRIES - 1)) as u16,
        flags: 0,
        len: 64,
        dest: seq as u32,
        remote_qpn: (seq >> 32) as u32,
        qkey: 0x1b_0b1b,
        _reserved: 0,
    }
}

/// The response to `req`.
fn response(req: &TxRequest) -> TxResponse {
    TxResponse {
        slot: req.slot,
        status: 0,
        _reserved: 0,
    }
}

/// The slot the response numbered `seq` must name.
fn response_slot(seq: u64) -> u16 {
    (seq as u32 & (ENTRIES - 1)) as u16
}

/// Spin a little, then yield: the two threads share two noisy cores.
struct Backoff(u32);

impl Backoff {
    fn reset(&mut self) {
        self.0 = 0;
    }

    fn snooze(&mut self) {
        if self.0 < 64 {
            std::hint::spin_loop();
            self.0 += 1;
        } else {
            thread::yield_now();
        }
    }
}

/// A failure found on either thread; the other one stops at its next wait.
fn fail(stop: &AtomicBool, msg: String) -> BoxError {
    stop.store(true, Ordering::Relaxed);
    msg.into()
}

/// Runs `producer` and `consumer` on two threads and returns descriptors per
/// second (millions) over the wall time of both.
fn run_pair(
    n: u64,
    producer: impl FnOnce(&AtomicBool) -> Result<(), BoxError> + Send,
    consumer: impl FnOnce(&AtomicBool) -> Result<(), BoxError> + Send,
) -> Result<f64, BoxError> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (p, c) = thread::scope(|s| {
        let c = s.spawn(|| consumer(&stop));
        let p = producer(&stop);
        (p, c.join())
    });
    let elapsed = start.elapsed().as_secs_f64();
    let c = c.map_err(|_| "ring consumer thread panicked")?;
    // Report the consumer's error first: it names the bad descriptor.
    c?;
    p?;
    Ok(n as f64 / elapsed / 1e6)
}

/// Our ring: `FrontRing` on the producer thread, `BackRing` on the consumer,
/// each moving whole batches with the batch calls (`push_requests`,
/// `pop_requests`, `push_responses`, `pop_responses`), as rtrb's side uses
/// its chunk API.
pub fn ours(n: u64) -> Result<f64, BoxError> {
    let win = Window::new_heap(ring_bytes::<TxRequest, TxResponse>(ORDER));
    let mut front = FrontRing::<TxRequest, TxResponse>::attach(win.clone(), ORDER)?;
    let mut back = BackRing::<TxRequest, TxResponse>::attach(win, ORDER)?;
    front.init();
    back.init();
    const B: usize = BATCH as usize;
    run_pair(
        n,
        move |stop| {
            let mut sent = 0u64;
            let mut answered = 0u64;
            let mut backoff = Backoff(0);
            let mut unchecked = false;
            let mut batch = [TxRequest::default(); B];
            let mut rsps = [TxResponse::default(); ENTRIES as usize];
            while answered < n {
                let mut progress = false;
                let k = (front.free_requests() as usize)
                    .min(B)
                    .min((n - sent) as usize);
                if k > 0 {
                    for (i, r) in batch[..k].iter_mut().enumerate() {
                        *r = request(sent + i as u64);
                    }
                    let pushed = front.push_requests(&batch[..k]);
                    if pushed != k {
                        return Err(fail(stop, format!("push_requests: {pushed} of {k}")));
                    }
                    sent += k as u64;
                    // More follows at once: publish without the fence and
                    // the look at the event index; the checked publish
                    // below, before this side idles, covers the whole range.
                    front.publish_requests_unchecked();
                    unchecked = true;
                    progress = true;
                }
                let got = front
                    .pop_responses(&mut rsps)
                    .map_err(|e| fail(stop, format!("pop_responses: {e}")))?;
                for rsp in &rsps[..got] {
                    if rsp.slot != response_slot(answered) || rsp.status != 0 {
                        return Err(fail(stop, format!("response {answered}: got {rsp:?}")));
                    }
                    answered += 1;
                }
                progress |= got > 0;
                if progress {
                    backoff.reset();
                } else if stop.load(Ordering::Relaxed) {
                    return Err("producer stopped: the consumer failed".into());
                } else {
                    if unchecked {
                        // About to idle: the notification check a sleeping
                        // consumer relies on.
                        front.publish_requests();
                        unchecked = false;
                    }
                    backoff.snooze();
                }
            }
            front.publish_requests();
            Ok(())
        },
        move |stop| {
            let mut received = 0u64;
            let mut backoff = Backoff(0);
            let mut unchecked = false;
            let mut reqs = [TxRequest::default(); B];
            let mut rsps = [TxResponse::default(); B];
            while received < n {
                let got = back
                    .pop_requests(&mut reqs)
                    .map_err(|e| fail(stop, format!("pop_requests: {e}")))?;
                for (req, rsp) in reqs[..got].iter().zip(rsps.iter_mut()) {
                    if *req != request(received) {
                        return Err(fail(
                            stop,
                            format!(
                                "request {received}: got {req:?}, want {:?}",
                                request(received)
                            ),
                        ));
                    }
                    *rsp = response(req);
                    received += 1;
                }
                if got > 0 {
                    let pushed = back
                        .push_responses(&rsps[..got])
                        .map_err(|e| fail(stop, format!("push_responses: {e}")))?;
                    if pushed != got {
                        return Err(fail(stop, format!("push_responses: {pushed} of {got}")));
                    }
                    back.publish_responses_unchecked();
                    unchecked = true;
                    backoff.reset();
                } else if stop.load(Ordering::Relaxed) {
                    return Err("consumer stopped: the producer failed".into());
                } else {
                    if unchecked {
                        back.publish_responses();
                        unchecked = false;
                    }
                    backoff.snooze();
                }
            }
            back.publish_responses();
            Ok(())
        },
    )
}

/// The peer: an `rtrb` ring of requests and one of responses, each of
/// [`ENTRIES`] entries, moved in the same batches with rtrb's chunk API (one
/// index publish per batch, like ours).
pub fn rtrb(n: u64) -> Result<f64, BoxError> {
    let cap = ENTRIES as usize;
    let (mut req_tx, mut req_rx) = rtrb::RingBuffer::<TxRequest>::new(cap);
    let (mut rsp_tx, mut rsp_rx) = rtrb::RingBuffer::<TxResponse>::new(cap);
    run_pair(
        n,
        move |stop| {
            let mut sent = 0u64;
            let mut answered = 0u64;
            let mut backoff = Backoff(0);
            while answered < n {
                let mut progress = false;
                let outstanding = (sent - answered) as usize;
                let k = req_tx
                    .slots()
                    .min(cap - outstanding)
                    .min(BATCH as usize)
                    .min((n - sent) as usize);
                if k > 0 {
                    let chunk = req_tx.write_chunk_uninit(k)?;
                    chunk.fill_from_iter((sent..sent + k as u64).map(request));
                    sent += k as u64;
                    progress = true;
                }
                let avail = rsp_rx.slots();
                if avail > 0 {
                    for rsp in rsp_rx.read_chunk(avail)? {
                        if rsp.slot != response_slot(answered) || rsp.status != 0 {
                            return Err(fail(stop, format!("response {answered}: got {rsp:?}")));
                        }
                        answered += 1;
                    }
                    progress = true;
                }
                if progress {
                    backoff.reset();
                } else if stop.load(Ordering::Relaxed) {
                    return Err("producer stopped: the consumer failed".into());
                } else {
                    backoff.snooze();
                }
            }
            Ok(())
        },
        move |stop| {
            let mut received = 0u64;
            let mut backoff = Backoff(0);
            while received < n {
                let k = req_rx.slots().min(BATCH as usize);
                if k == 0 {
                    if stop.load(Ordering::Relaxed) {
                        return Err("consumer stopped: the producer failed".into());
                    }
                    backoff.snooze();
                    continue;
                }
                // The producer keeps at most `cap` requests outstanding, so
                // there is always room for their responses.
                let out = rsp_tx.write_chunk_uninit(k)?;
                let mut bad = None;
                out.fill_from_iter(req_rx.read_chunk(k)?.into_iter().map(|req| {
                    if bad.is_none() && req != request(received) {
                        bad = Some((received, req));
                    }
                    received += 1;
                    response(&req)
                }));
                if let Some((seq, req)) = bad {
                    return Err(fail(
                        stop,
                        format!("request {seq}: got {req:?}, want {:?}", request(seq)),
                    ));
                }
                backoff.reset();
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rings_move_every_descriptor() {
        assert!(ours(10_000).unwrap() > 0.0);
        assert!(rtrb(10_000).unwrap() > 0.0);
    }
}
