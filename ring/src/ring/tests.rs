use super::*;
use crate::desc::{TxRequest, TxResponse};
use crate::layout::ring_bytes;
use alloc::string::ToString;
use alloc::vec::Vec;
use proptest::prelude::*;

/// A request carrying a sequence number and its complement.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, PartialEq, Eq, Debug)]
struct Req {
    seq: u32,
    check: u32,
}

/// A response echoing a request's sequence number.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, PartialEq, Eq, Debug)]
struct Rsp {
    seq: u32,
    status: u16,
    pad: u16,
    extra: u64,
}

fn req(seq: u32) -> Req {
    Req { seq, check: !seq }
}

fn rsp(seq: u32) -> Rsp {
    Rsp {
        seq,
        status: 1,
        pad: 0,
        extra: u64::from(seq) << 7,
    }
}

const ORDER: u8 = 2;
const ENTRIES: u32 = 1 << ORDER;

fn pair(order: u8, start: u32) -> (Window, FrontRing<Req, Rsp>, BackRing<Req, Rsp>) {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(order));
    let mut front = FrontRing::attach(win.clone(), order).unwrap();
    let mut back = BackRing::attach(win.clone(), order).unwrap();
    front.init_at(start);
    back.init_at(start);
    (win, front, back)
}

#[test]
fn attach_checks_order_size_and_alignment() {
    let need = ring_bytes::<TxRequest, TxResponse>(8);
    assert_eq!(need, 256 + 256 * 32);
    let win = Window::new_heap(need);
    assert!(FrontRing::<TxRequest, TxResponse>::attach(win.clone(), 8).is_ok());
    assert!(BackRing::<TxRequest, TxResponse>::attach(win.clone(), 8).is_ok());
    assert_eq!(
        FrontRing::<TxRequest, TxResponse>::attach(win.clone(), 9).unwrap_err(),
        RingError::TooSmall {
            needed: 256 + 512 * 32,
            have: need
        }
    );
    assert_eq!(
        BackRing::<TxRequest, TxResponse>::attach(win.clone(), 0).unwrap_err(),
        RingError::BadOrder(0)
    );
    assert_eq!(
        BackRing::<TxRequest, TxResponse>::attach(win.clone(), 13).unwrap_err(),
        RingError::BadOrder(13)
    );
    let big = Window::new_heap(need + 4);
    let odd = big.sub(2, need).unwrap();
    assert!(matches!(
        FrontRing::<TxRequest, TxResponse>::attach(odd, 8),
        Err(RingError::OutOfBounds(_))
    ));
    assert!(RingError::BadOrder(13).to_string().contains("13"));
}

#[test]
fn round_trip_and_counters() {
    let (_w, mut front, mut back) = pair(ORDER, 0);
    assert_eq!(front.entries(), ENTRIES);
    assert_eq!(back.entries(), ENTRIES);
    assert_eq!(front.free_requests(), ENTRIES);
    for i in 0..ENTRIES {
        front.push_request(&req(i)).unwrap();
    }
    assert_eq!(front.push_request(&req(99)), Err(RingFull));
    assert_eq!(front.outstanding(), ENTRIES);
    assert_eq!(front.free_requests(), 0);
    // Nothing is visible before publishing.
    assert_eq!(back.pop_request().unwrap(), None);
    assert!(front.publish_requests());
    for i in 0..ENTRIES {
        assert_eq!(back.pop_request().unwrap(), Some(req(i)));
        assert_eq!(back.unanswered(), i + 1);
    }
    assert_eq!(back.pop_request().unwrap(), None);
    for i in 0..ENTRIES {
        back.push_response(&rsp(i)).unwrap();
    }
    assert_eq!(
        back.push_response(&rsp(9)),
        Err(RingError::NoRequestToAnswer)
    );
    assert_eq!(back.unanswered(), 0);
    assert_eq!(front.pop_response().unwrap(), None);
    assert!(back.publish_responses());
    for i in 0..ENTRIES {
        assert_eq!(front.pop_response().unwrap(), Some(rsp(i)));
    }
    assert_eq!(front.pop_response().unwrap(), None);
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.free_requests(), ENTRIES);
}

#[test]
fn notify_rules() {
    let (_w, mut front, mut back) = pair(3, 0);
    // Nothing new: no notification.
    assert!(!front.publish_requests());
    // The back end armed req_event = 1 in init: the first request notifies.
    front.push_request(&req(0)).unwrap();
    assert!(front.publish_requests());
    // The back end has not re-armed: the next batch is silent.
    front.push_request(&req(1)).unwrap();
    front.push_request(&req(2)).unwrap();
    assert!(!front.publish_requests());
    // The back end drains and re-arms; the check finds nothing.
    while back.pop_request().unwrap().is_some() {}
    assert!(!back.final_check_requests().unwrap());
    // One notification for a batch of two.
    front.push_request(&req(3)).unwrap();
    front.push_request(&req(4)).unwrap();
    assert!(front.publish_requests());
    // Pending work: final check says so and does not re-arm.
    assert!(back.final_check_requests().unwrap());
    front.push_request(&req(5)).unwrap();
    assert!(!front.publish_requests());
    while back.pop_request().unwrap().is_some() {}
    assert_eq!(back.unanswered(), 6);

    // Responses: the guest armed rsp_event = 1 in init.
    back.push_response(&rsp(0)).unwrap();
    assert!(back.publish_responses());
    back.push_response(&rsp(1)).unwrap();
    assert!(!back.publish_responses());
    assert!(front.final_check_responses().unwrap());
    assert_eq!(front.pop_response().unwrap(), Some(rsp(0)));
    assert_eq!(front.pop_response().unwrap(), Some(rsp(1)));
    assert_eq!(front.pop_response().unwrap(), None);
    assert!(!front.final_check_responses().unwrap());
    back.push_response(&rsp(2)).unwrap();
    assert!(back.publish_responses());
}

/// Unchecked publishes make the work visible at once, and the next checked
/// publish notifies for an event index anywhere in the range published
/// since the last check, unchecked part included.
#[test]
fn unchecked_publishes_are_covered_by_the_next_check() {
    let (_w, mut front, mut back) = pair(3, 0);
    // The back end armed req_event = 1: request 0 is the one to notify for.
    front.push_request(&req(0)).unwrap();
    front.publish_requests_unchecked();
    assert_eq!(back.pop_request().unwrap(), Some(req(0)), "visible at once");
    front.push_request(&req(1)).unwrap();
    front.publish_requests_unchecked();
    front.push_request(&req(2)).unwrap();
    assert!(
        front.publish_requests(),
        "the event lay in the unchecked part"
    );
    // Checked: nothing pending until the back end re-arms.
    front.push_request(&req(3)).unwrap();
    assert!(!front.publish_requests());
    while back.pop_request().unwrap().is_some() {}
    assert!(!back.final_check_requests().unwrap());
    // Re-armed for request 4; it goes out unchecked, then a checked publish
    // of nothing new still owes the notification.
    front.push_request(&req(4)).unwrap();
    front.publish_requests_unchecked();
    assert!(front.publish_requests());
    assert!(!front.publish_requests(), "owed once");

    // The same for responses (the guest armed rsp_event = 1).
    while back.pop_request().unwrap().is_some() {}
    for i in 0..5 {
        back.push_response(&rsp(i)).unwrap();
        back.publish_responses_unchecked();
    }
    assert!(back.publish_responses());
    for i in 0..5 {
        assert_eq!(front.pop_response().unwrap(), Some(rsp(i)));
    }
    assert!(!front.final_check_responses().unwrap());
    assert!(!back.publish_responses());
}

#[test]
fn final_check_sees_work_published_before_it() {
    let (_w, mut front, mut back) = pair(ORDER, 7);
    assert!(!back.final_check_requests().unwrap());
    front.push_request(&req(1)).unwrap();
    assert!(front.publish_requests());
    assert!(back.final_check_requests().unwrap());
    assert_eq!(back.pop_request().unwrap(), Some(req(1)));
    back.push_response(&rsp(1)).unwrap();
    assert!(!front.final_check_responses().unwrap());
    assert!(back.publish_responses());
    assert!(front.final_check_responses().unwrap());
}

#[test]
fn init_overwrites_garbage() {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(ORDER));
    win.fill(0, win.len(), 0xa5).unwrap();
    let mut front = FrontRing::<Req, Rsp>::attach(win.clone(), ORDER).unwrap();
    let mut back = BackRing::<Req, Rsp>::attach(win.clone(), ORDER).unwrap();
    front.init();
    back.init();
    assert_eq!(win.load_u32(0, Ordering::Relaxed).unwrap(), 0);
    assert_eq!(win.load_u32(64, Ordering::Relaxed).unwrap(), 1);
    assert_eq!(win.load_u32(128, Ordering::Relaxed).unwrap(), 0);
    assert_eq!(win.load_u32(192, Ordering::Relaxed).unwrap(), 1);
    assert_eq!(back.pop_request().unwrap(), None);
    assert_eq!(front.pop_response().unwrap(), None);
}

#[test]
fn guest_side_init_leaves_req_event_zero() {
    let win = Window::new_heap(ring_bytes::<Req, Rsp>(ORDER));
    win.fill(0, win.len(), 0xa5).unwrap();
    let mut front = FrontRing::<Req, Rsp>::attach(win.clone(), ORDER).unwrap();
    front.init();
    for (offset, want) in [(0, 0), (64, 0), (128, 0), (192, 1)] {
        assert_eq!(win.load_u32(offset, Ordering::Relaxed).unwrap(), want);
    }
}

// --- the peer breaks the rules ---

#[test]
fn back_end_rejects_req_prod_beyond_the_ring() {
    let (w, _front, mut back) = pair(ORDER, 0);
    w.store_u32(field::REQ_PROD, ENTRIES + 1, Ordering::Relaxed)
        .unwrap();
    let e = RingError::Overflow {
        prod: ENTRIES + 1,
        cons: 0,
        entries: ENTRIES,
    };
    assert_eq!(back.pop_request(), Err(e));
    // Sticky, even once the index looks sane again.
    w.store_u32(field::REQ_PROD, 0, Ordering::Relaxed).unwrap();
    assert_eq!(back.pop_request(), Err(e));
    assert_eq!(back.final_check_requests(), Err(e));
    assert!(e.to_string().contains("violated"));
}

#[test]
fn back_end_rejects_req_prod_going_backwards() {
    let (w, _front, mut back) = pair(ORDER, 10);
    w.store_u32(field::REQ_PROD, 9, Ordering::Relaxed).unwrap();
    assert!(matches!(
        back.final_check_requests(),
        Err(RingError::Overflow {
            prod: 9,
            cons: 10,
            ..
        })
    ));
}

#[test]
fn back_end_rejects_a_guest_that_overruns_its_responses() {
    let (w, mut front, mut back) = pair(ORDER, 0);
    for i in 0..ENTRIES {
        front.push_request(&req(i)).unwrap();
    }
    front.publish_requests();
    for _ in 0..ENTRIES {
        assert!(back.pop_request().unwrap().is_some());
    }
    // The hostile guest claims one more request with none answered:
    // req_prod - req_cons = 1 is fine, req_prod - rsp_prod_pvt is not.
    w.store_u32(field::REQ_PROD, ENTRIES + 1, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        back.pop_request(),
        Err(RingError::Overflow {
            prod: ENTRIES + 1,
            cons: 0,
            entries: ENTRIES
        })
    );
}

#[test]
fn front_rejects_responses_never_asked_for() {
    let (w, mut front, _back) = pair(ORDER, 0);
    front.push_request(&req(0)).unwrap();
    front.publish_requests();
    // Pushed but not published: the back end cannot have seen it.
    front.push_request(&req(1)).unwrap();
    w.store_u32(field::RSP_PROD, 2, Ordering::Relaxed).unwrap();
    assert_eq!(
        front.pop_response(),
        Err(RingError::Overflow {
            prod: 2,
            cons: 0,
            entries: ENTRIES
        })
    );
    assert!(front.final_check_responses().is_err());
}

#[test]
fn front_rejects_a_response_with_nothing_outstanding() {
    let (w, mut front, _back) = pair(ORDER, u32::MAX);
    w.store_u32(field::RSP_PROD, 0, Ordering::Relaxed).unwrap();
    assert!(front.final_check_responses().is_err());
}

// --- properties ---

#[derive(Clone, Debug)]
enum Op {
    PushReq(u8),
    PublishReq,
    PopReq(u8),
    PushRsp(u8),
    PublishRsp,
    PopRsp(u8),
    FinalReq,
    FinalRsp,
    /// The batch forms, with a buffer of this many entries.
    PushReqs(u8),
    PopReqs(u8),
    PushRsps(u8),
    PopRsps(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6u8).prop_map(Op::PushReq),
        Just(Op::PublishReq),
        (0..6u8).prop_map(Op::PopReq),
        (0..6u8).prop_map(Op::PushRsp),
        Just(Op::PublishRsp),
        (0..6u8).prop_map(Op::PopRsp),
        Just(Op::FinalReq),
        Just(Op::FinalRsp),
        (0..10u8).prop_map(Op::PushReqs),
        (0..10u8).prop_map(Op::PopReqs),
        (0..10u8).prop_map(Op::PushRsps),
        (0..10u8).prop_map(Op::PopRsps),
    ]
}

/// What the two ends should have done, counted without wrapping.
#[derive(Default)]
struct Model {
    pushed: u64,
    published: u64,
    popped: u64,
    answered: u64,
    answers_published: u64,
    received: u64,
    /// The consumer armed its event index and has not been notified since.
    back_asleep: bool,
    front_asleep: bool,
}

fn start_value() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), (u32::MAX - 40)..=u32::MAX, any::<u32>(),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random interleavings of both ends, from a start near the wrap: every
    /// descriptor arrives once and in order, the counters agree with a model,
    /// and a publish notifies exactly when the consumer is asleep.
    #[test]
    fn interleavings_match_the_model(
        start in start_value(),
        order in 1..=3u8,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let (_w, mut front, mut back) = pair(order, start);
        let entries = u64::from(front.entries());
        let seq = |n: u64| start.wrapping_add(n as u32);
        let mut m = Model { back_asleep: true, front_asleep: true, ..Model::default() };
        for op in ops {
            match op {
                Op::PushReq(k) => for _ in 0..k {
                    let ok = m.pushed - m.received < entries;
                    prop_assert_eq!(front.push_request(&req(seq(m.pushed))).is_ok(), ok);
                    if ok { m.pushed += 1; }
                },
                Op::PublishReq => {
                    let fresh = m.pushed > m.published;
                    let notify = front.publish_requests();
                    prop_assert_eq!(notify, fresh && m.back_asleep);
                    if notify { m.back_asleep = false; }
                    m.published = m.pushed;
                }
                Op::PopReq(k) => for _ in 0..k {
                    let got = back.pop_request().unwrap();
                    if m.popped < m.published {
                        prop_assert_eq!(got, Some(req(seq(m.popped))));
                        m.popped += 1;
                    } else {
                        prop_assert_eq!(got, None);
                    }
                },
                Op::PushRsp(k) => for _ in 0..k {
                    let ok = m.answered < m.popped;
                    prop_assert_eq!(back.push_response(&rsp(seq(m.answered))).is_ok(), ok);
                    if ok { m.answered += 1; }
                },
                Op::PublishRsp => {
                    let fresh = m.answered > m.answers_published;
                    let notify = back.publish_responses();
                    prop_assert_eq!(notify, fresh && m.front_asleep);
                    if notify { m.front_asleep = false; }
                    m.answers_published = m.answered;
                }
                Op::PopRsp(k) => for _ in 0..k {
                    let got = front.pop_response().unwrap();
                    if m.received < m.answers_published {
                        prop_assert_eq!(got, Some(rsp(seq(m.received))));
                        m.received += 1;
                    } else {
                        prop_assert_eq!(got, None);
                    }
                },
                Op::PushReqs(k) => {
                    let reqs: Vec<Req> = (0..u64::from(k)).map(|i| req(seq(m.pushed + i))).collect();
                    let room = entries - (m.pushed - m.received);
                    let n = front.push_requests(&reqs) as u64;
                    prop_assert_eq!(n, u64::from(k).min(room));
                    m.pushed += n;
                }
                Op::PopReqs(k) => {
                    let mut out = alloc::vec![req(0xdead); usize::from(k)];
                    let n = back.pop_requests(&mut out).unwrap() as u64;
                    prop_assert_eq!(n, u64::from(k).min(m.published - m.popped));
                    for (i, got) in out.iter().enumerate() {
                        if (i as u64) < n {
                            prop_assert_eq!(*got, req(seq(m.popped + i as u64)));
                        } else {
                            prop_assert_eq!(*got, req(0xdead), "written past the count");
                        }
                    }
                    m.popped += n;
                }
                Op::PushRsps(k) => {
                    let rsps: Vec<Rsp> = (0..u64::from(k)).map(|i| rsp(seq(m.answered + i))).collect();
                    let n = back.push_responses(&rsps).unwrap() as u64;
                    prop_assert_eq!(n, u64::from(k).min(m.popped - m.answered));
                    m.answered += n;
                }
                Op::PopRsps(k) => {
                    let mut out = alloc::vec![rsp(0xdead); usize::from(k)];
                    let n = front.pop_responses(&mut out).unwrap() as u64;
                    prop_assert_eq!(n, u64::from(k).min(m.answers_published - m.received));
                    for (i, got) in out.iter().enumerate() {
                        if (i as u64) < n {
                            prop_assert_eq!(*got, rsp(seq(m.received + i as u64)));
                        } else {
                            prop_assert_eq!(*got, rsp(0xdead), "written past the count");
                        }
                    }
                    m.received += n;
                }
                Op::FinalReq => {
                    let pending = back.final_check_requests().unwrap();
                    prop_assert_eq!(pending, m.popped < m.published);
                    if !pending { m.back_asleep = true; }
                }
                Op::FinalRsp => {
                    let pending = front.final_check_responses().unwrap();
                    prop_assert_eq!(pending, m.received < m.answers_published);
                    if !pending { m.front_asleep = true; }
                }
            }
            prop_assert_eq!(u64::from(front.outstanding()), m.pushed - m.received);
            prop_assert_eq!(u64::from(front.free_requests()), entries - (m.pushed - m.received));
            prop_assert_eq!(u64::from(back.unanswered()), m.popped - m.answered);
        }
    }

    /// Whatever the guest writes as `req_prod`, the back end either accepts
    /// exactly the requests that fit or reports an overflow. Never a panic.
    #[test]
    fn any_req_prod_is_accepted_or_rejected(start in start_value(), delta: u32) {
        let (w, _front, mut back) = pair(ORDER, start);
        let prod = start.wrapping_add(delta);
        w.store_u32(field::REQ_PROD, prod, Ordering::Relaxed).unwrap();
        if delta <= ENTRIES {
            for _ in 0..delta {
                prop_assert!(back.pop_request().unwrap().is_some());
            }
            prop_assert_eq!(back.pop_request(), Ok(None));
        } else {
            prop_assert_eq!(
                back.pop_request(),
                Err(RingError::Overflow { prod, cons: start, entries: ENTRIES })
            );
        }
    }

    /// The same for the batch form: a whole batch or an overflow.
    #[test]
    fn any_req_prod_is_accepted_or_rejected_in_batches(start in start_value(), delta: u32) {
        let (w, _front, mut back) = pair(ORDER, start);
        let prod = start.wrapping_add(delta);
        w.store_u32(field::REQ_PROD, prod, Ordering::Relaxed).unwrap();
        let mut out = [req(0); 2 * ENTRIES as usize];
        if delta <= ENTRIES {
            prop_assert_eq!(back.pop_requests(&mut out), Ok(delta as usize));
            prop_assert_eq!(back.pop_requests(&mut out), Ok(0));
        } else {
            let overflow = Err(RingError::Overflow { prod, cons: start, entries: ENTRIES });
            prop_assert_eq!(back.pop_requests(&mut out), overflow);
            // Sticky.
            prop_assert_eq!(back.pop_requests(&mut out), overflow);
        }
    }

    /// Likewise for the guest and `rsp_prod`, with `asked` requests published.
    #[test]
    fn any_rsp_prod_is_accepted_or_rejected(start in start_value(), asked in 0..=ENTRIES, delta: u32) {
        let (w, mut front, _back) = pair(ORDER, start);
        for i in 0..asked {
            front.push_request(&req(i)).unwrap();
        }
        front.publish_requests();
        w.store_u32(field::RSP_PROD, start.wrapping_add(delta), Ordering::Relaxed).unwrap();
        let got: Result<Vec<Rsp>, RingError> = core::iter::from_fn(|| front.pop_response().transpose()).collect();
        if delta <= asked {
            prop_assert_eq!(got.map(|v| v.len()), Ok(delta as usize));
        } else {
            let is_overflow = matches!(got, Err(RingError::Overflow { .. }));
            prop_assert!(is_overflow);
        }
    }

    /// Random bytes over the whole ring, and random words written between
    /// operations, never make either end panic or break its own invariants.
    #[test]
    fn hostile_memory_never_panics(
        junk in proptest::collection::vec(any::<u8>(), ring_bytes::<Req, Rsp>(ORDER)),
        scribbles in proptest::collection::vec((0..4usize, any::<u32>(), op()), 0..100),
    ) {
        let (w, mut front, mut back) = pair(ORDER, 0);
        w.write_bytes(0, &junk).unwrap();
        for (word, value, op) in scribbles {
            w.store_u32(word * 64, value, Ordering::Relaxed).unwrap();
            match op {
                Op::PushReq(_) => { let _ = front.push_request(&req(1)); }
                Op::PublishReq => { front.publish_requests(); }
                Op::PopReq(_) => { let _ = back.pop_request(); }
                Op::PushRsp(_) => { let _ = back.push_response(&rsp(1)); }
                Op::PublishRsp => { back.publish_responses(); }
                Op::PopRsp(_) => { let _ = front.pop_response(); }
                Op::FinalReq => { let _ = back.final_check_requests(); }
                Op::FinalRsp => { let _ = front.final_check_responses(); }
                Op::PushReqs(k) => { front.push_requests(&alloc::vec![req(2); usize::from(k)]); }
                Op::PopReqs(k) => {
                    let mut out = alloc::vec![req(0); usize::from(k)];
                    if let Ok(n) = back.pop_requests(&mut out) { prop_assert!(n <= usize::from(k)); }
                }
                Op::PushRsps(k) => { let _ = back.push_responses(&alloc::vec![rsp(2); usize::from(k)]); }
                Op::PopRsps(k) => {
                    let mut out = alloc::vec![rsp(0); usize::from(k)];
                    if let Ok(n) = front.pop_responses(&mut out) { prop_assert!(n <= usize::from(k)); }
                }
            }
            prop_assert!(front.outstanding() <= ENTRIES);
            prop_assert!(front.free_requests() <= ENTRIES);
            prop_assert!(back.unanswered() <= ENTRIES);
        }
    }
}
