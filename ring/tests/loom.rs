//! Model checks of publish + notify with loom: every interleaving and every
//! weak-memory outcome loom can produce, for tiny rings.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p ring --test loom --release`

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::Notify;
use loom::thread;

use ring::layout::ring_bytes;
use ring::{BackRing, FrontRing, Window};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Debug, PartialEq, Eq)]
struct Req {
    seq: u32,
    check: u32,
}

fn req(seq: u32) -> Req {
    Req {
        seq,
        check: !seq ^ 0x5a5a_0000,
    }
}

type Rsp = u32;

const ORDER: u8 = 1;

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    // Bounded preemptions keep the search short; 3 covers the store-buffer
    // race between the two fences with room to spare.
    b.preemption_bound = Some(3);
    b
}

fn rings() -> (FrontRing<Req, Rsp>, BackRing<Req, Rsp>) {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(ORDER));
    let mut front = FrontRing::attach(win.clone(), ORDER).unwrap();
    let mut back = BackRing::attach(win, ORDER).unwrap();
    front.init();
    back.init();
    (front, back)
}

/// One batch of `n` requests. The consumer drains, final-checks and goes to
/// sleep; if it went to sleep before seeing everything, the producer's publish
/// must have asked for a notification. Woken, it must then find the rest.
///
/// A warm-up request is exchanged first, so that the event index armed by
/// `init` is stale and only the consumer's final check can re-arm it.
fn one_batch(n: u32) {
    builder().check(move || {
        let (mut front, mut back) = rings();
        front.push_request(&req(100)).unwrap();
        assert!(front.publish_requests());
        assert_eq!(back.pop_request().unwrap(), Some(req(100)));
        back.push_response(&0).unwrap();
        back.publish_responses();
        assert_eq!(front.pop_response().unwrap(), Some(0));

        let producer = thread::spawn(move || {
            for seq in 0..n {
                front.push_request(&req(seq)).unwrap();
            }
            front.publish_requests()
        });

        let mut next = 0;
        let drain = |back: &mut BackRing<Req, Rsp>, next: &mut u32| {
            while let Some(r) = back.pop_request().unwrap() {
                assert_eq!(r, req(*next), "descriptor contents");
                *next += 1;
            }
        };
        let slept = loop {
            drain(&mut back, &mut next);
            if next == n {
                break false;
            }
            if !back.final_check_requests().unwrap() {
                break true;
            }
        };
        let notified = producer.join().unwrap();
        if slept {
            assert!(
                notified,
                "lost wakeup: consumer asleep with {next}/{n} seen"
            );
            drain(&mut back, &mut next);
        }
        assert_eq!(next, n);
    });
}

#[test]
fn one_request_no_lost_wakeup() {
    one_batch(1);
}

#[test]
fn two_requests_no_lost_wakeup() {
    one_batch(2);
}

/// Two publishes of one request each. The consumer sleeps on an event
/// channel (`Notify`, which keeps a pending bit like a real one) whenever the
/// final check finds nothing; a lost wakeup leaves it blocked forever, which
/// loom reports as a deadlock.
#[test]
fn two_batches_no_lost_wakeup() {
    builder().check(|| {
        let (mut front, mut back) = rings();
        let bell = Arc::new(Notify::new());
        let producer = {
            let bell = bell.clone();
            thread::spawn(move || {
                for seq in 0..2 {
                    front.push_request(&req(seq)).unwrap();
                    if front.publish_requests() {
                        bell.notify();
                    }
                }
            })
        };
        let mut next = 0;
        while next < 2 {
            while let Some(r) = back.pop_request().unwrap() {
                assert_eq!(r, req(next), "descriptor contents");
                next += 1;
            }
            if next < 2 && !back.final_check_requests().unwrap() {
                bell.wait();
            }
        }
        producer.join().unwrap();
    });
}

/// A burst: the first request is published unchecked (no fence, no look at
/// the event index), the second with the check, which must notify for
/// either if the consumer went to sleep meanwhile.
#[test]
fn unchecked_then_checked_no_lost_wakeup() {
    builder().check(|| {
        let (mut front, mut back) = rings();
        let bell = Arc::new(Notify::new());
        let producer = {
            let bell = bell.clone();
            thread::spawn(move || {
                front.push_request(&req(0)).unwrap();
                front.publish_requests_unchecked();
                front.push_request(&req(1)).unwrap();
                if front.publish_requests() {
                    bell.notify();
                }
            })
        };
        let mut next = 0;
        while next < 2 {
            while let Some(r) = back.pop_request().unwrap() {
                assert_eq!(r, req(next), "descriptor contents");
                next += 1;
            }
            if next < 2 && !back.final_check_requests().unwrap() {
                bell.wait();
            }
        }
        producer.join().unwrap();
    });
}

/// The batch calls: two requests pushed and published as one batch, the
/// consumer taking whatever it sees in batches of up to two and sleeping
/// through the final check; the entries it copies out are whole.
#[test]
fn batches_no_lost_wakeup() {
    builder().check(|| {
        let (mut front, mut back) = rings();
        let bell = Arc::new(Notify::new());
        let producer = {
            let bell = bell.clone();
            thread::spawn(move || {
                assert_eq!(front.push_requests(&[req(0), req(1)]), 2);
                if front.publish_requests() {
                    bell.notify();
                }
            })
        };
        let mut next = 0;
        let mut out = [req(9); 2];
        while next < 2 {
            loop {
                let n = back.pop_requests(&mut out).unwrap();
                if n == 0 {
                    break;
                }
                for r in &out[..n] {
                    assert_eq!(*r, req(next), "descriptor contents");
                    next += 1;
                }
            }
            if next < 2 && !back.final_check_requests().unwrap() {
                bell.wait();
            }
        }
        producer.join().unwrap();
    });
}

/// A full round trip: the guest's request wakes the back end, whose response
/// wakes the guest. Both sides sleep through the final check.
#[test]
fn round_trip_no_lost_wakeup() {
    builder().check(|| {
        let (mut front, mut back) = rings();
        let to_back = Arc::new(Notify::new());
        let to_front = Arc::new(Notify::new());
        let backend = {
            let (to_back, to_front) = (to_back.clone(), to_front.clone());
            thread::spawn(move || loop {
                if let Some(r) = back.pop_request().unwrap() {
                    assert_eq!(r, req(7), "descriptor contents");
                    back.push_response(&(r.seq + 1)).unwrap();
                    if back.publish_responses() {
                        to_front.notify();
                    }
                    return;
                }
                if !back.final_check_requests().unwrap() {
                    to_back.wait();
                }
            })
        };
        front.push_request(&req(7)).unwrap();
        if front.publish_requests() {
            to_back.notify();
        }
        loop {
            if let Some(rsp) = front.pop_response().unwrap() {
                assert_eq!(rsp, 8);
                break;
            }
            if !front.final_check_responses().unwrap() {
                to_front.wait();
            }
        }
        backend.join().unwrap();
    });
}
