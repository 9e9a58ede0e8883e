//! Two threads drive a small ring hard: the guest sends a million numbered
//! requests, the back end answers each. Both sleep (through the final check
//! and a doorbell) when idle. Everything must arrive once, in order, with far
//! fewer notifications than descriptors.

#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use ring::layout::ring_bytes;
use ring::{BackRing, FrontRing, RingError, Window};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq, Eq)]
struct Req {
    seq: u64,
    check: u64,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq, Eq)]
struct Rsp {
    seq: u64,
}

/// An event channel: a pending bit and a way to sleep until it is set.
#[derive(Default)]
struct Doorbell {
    pending: Mutex<bool>,
    cv: Condvar,
    rung: AtomicU64,
}

impl Doorbell {
    fn ring(&self) {
        self.rung.fetch_add(1, Ordering::Relaxed);
        *self.pending.lock().unwrap() = true;
        self.cv.notify_one();
    }

    /// Sleeps until rung (a lost wakeup would hang here: the timeout turns
    /// it into a failure).
    fn wait(&self) {
        let mut pending = self.pending.lock().unwrap();
        while !*pending {
            let (p, timeout) = self
                .cv
                .wait_timeout(pending, Duration::from_secs(10))
                .unwrap();
            pending = p;
            assert!(
                !timeout.timed_out(),
                "lost wakeup: slept 10 s with work pending"
            );
        }
        *pending = false;
    }
}

const ORDER: u8 = 3;
#[cfg(debug_assertions)]
const N: u64 = 1_000_000;
#[cfg(not(debug_assertions))]
const N: u64 = 5_000_000;

#[test]
fn a_million_descriptors_in_order_with_few_notifications() {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(ORDER));
    let mut front = FrontRing::<Req, Rsp>::attach(win.clone(), ORDER).unwrap();
    let mut back = BackRing::<Req, Rsp>::attach(win, ORDER).unwrap();
    // Start near the wrap so that it happens during the run.
    front.init_at(u32::MAX - 1000);
    back.init_at(u32::MAX - 1000);
    let to_back = Arc::new(Doorbell::default());
    let to_front = Arc::new(Doorbell::default());

    let backend = {
        let (to_back, to_front) = (to_back.clone(), to_front.clone());
        thread::spawn(move || -> Result<u64, RingError> {
            let mut next = 0u64;
            let mut sleeps = 0;
            while next < N {
                let mut progressed = false;
                while let Some(req) = back.pop_request()? {
                    assert_eq!(req.seq, next, "requests out of order");
                    assert_eq!(req.check, !next);
                    back.push_response(&Rsp { seq: req.seq })?;
                    next += 1;
                    progressed = true;
                }
                if back.publish_responses() {
                    to_front.ring();
                }
                if !progressed && !back.final_check_requests()? {
                    sleeps += 1;
                    to_back.wait();
                }
            }
            Ok(sleeps)
        })
    };

    let (mut sent, mut received) = (0u64, 0u64);
    while received < N {
        let mut progressed = false;
        while sent < N && front.free_requests() > 0 {
            let req = Req {
                seq: sent,
                check: !sent,
                pad: [0; 2],
            };
            front.push_request(&req).unwrap();
            sent += 1;
            progressed = true;
        }
        if front.publish_requests() {
            to_back.ring();
        }
        while let Some(rsp) = front.pop_response().unwrap() {
            assert_eq!(rsp.seq, received, "responses out of order");
            received += 1;
            progressed = true;
        }
        if !progressed && !front.final_check_responses().unwrap() {
            to_front.wait();
        }
    }
    let backend_sleeps = backend.join().unwrap().unwrap();
    let req_notes = to_back.rung.load(Ordering::Relaxed);
    let rsp_notes = to_front.rung.load(Ordering::Relaxed);
    eprintln!(
        "{N} descriptors: {req_notes} request notifications, {rsp_notes} response notifications, \
         back end slept {backend_sleeps} times"
    );
    assert_eq!(front.outstanding(), 0);
    assert!(req_notes < N, "{req_notes} request notifications");
    assert!(rsp_notes < N, "{rsp_notes} response notifications");
}

/// A hostile guest scribbles over the ring while the back end serves it: the
/// back end never panics and reports the overflow.
#[test]
fn back_end_survives_a_scribbling_guest() {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(ORDER));
    let mut back = BackRing::<Req, Rsp>::attach(win.clone(), ORDER).unwrap();
    back.init();
    let stop = Arc::new(AtomicBool::new(false));
    let guest = {
        let stop = stop.clone();
        let win = win.clone();
        thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                // xorshift: cheap, deterministic garbage.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let word = (x as usize % (win.len() / 4)) * 4;
                // Mostly small req_prod values so that some are accepted.
                let value = if x & 1 == 0 {
                    (x >> 40) as u32 % 16
                } else {
                    (x >> 32) as u32
                };
                win.store_u32(word, value, Ordering::Relaxed).unwrap();
            }
        })
    };
    let (mut served, mut overflows) = (0u64, 0u64);
    for _ in 0..200_000 {
        let step = (|| -> Result<(), RingError> {
            while let Some(req) = back.pop_request()? {
                back.push_response(&Rsp { seq: req.seq })?;
                served += 1;
            }
            back.publish_responses();
            back.final_check_requests()?;
            Ok(())
        })();
        match step {
            Ok(()) => {}
            Err(RingError::Overflow { .. }) => {
                overflows += 1;
                // A real back end disconnects; here we start over.
                back.init();
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    guest.join().unwrap();
    eprintln!("served {served}, overflows {overflows}");
    assert!(overflows > 0);
}
