use super::*;
use smoltcp::time::Duration;
use verbs_shim::Qpn;

fn hw(n: u8) -> HwAddr {
    HwAddr::new(
        Qpn::new_truncated(0x48 + u32::from(n)),
        Gid::from_parts(0xfe80_0000_0000_0000, u64::from(n)),
    )
}

fn ip(n: u8) -> IpAddress {
    IpAddress::v4(10, 0, 0, n)
}

fn t(ms: i64) -> Instant {
    Instant::from_millis(ms)
}

#[test]
fn request_retries_then_fails() {
    let timers = ArpTimers::default();
    let mut cache = NeighbourCache::new();
    cache.start(ip(2), t(0), &timers);
    assert_eq!(cache.lookup(ip(2), t(0)), NeighLookup::Incomplete);
    let mut events = std::vec::Vec::new();
    for ms in (0..=4000).step_by(100) {
        cache.poll(t(ms), &timers, |e| events.push((ms, e)));
    }
    assert_eq!(
        events,
        [
            (0, NeighEvent::SendRequest(ip(2))),
            (1000, NeighEvent::SendRequest(ip(2))),
            (2000, NeighEvent::SendRequest(ip(2))),
            (3000, NeighEvent::Failed(ip(2))),
        ]
    );
    assert_eq!(cache.lookup(ip(2), t(4000)), NeighLookup::Unknown);
}

#[test]
fn reply_completes_and_entry_expires() {
    let timers = ArpTimers::default();
    let mut cache = NeighbourCache::new();
    cache.start(ip(3), t(0), &timers);
    assert!(cache.learn(ip(3), hw(3), t(5), &timers, false));
    assert_eq!(cache.lookup(ip(3), t(10)), NeighLookup::Reachable(hw(3)));
    let later = t(5) + timers.reachable_time;
    assert_eq!(cache.lookup(ip(3), later), NeighLookup::Unknown);
    cache.poll(later, &timers, |_| panic!("no events for an expired entry"));
    assert!(cache.is_empty());
}

#[test]
fn learning_without_create_only_updates() {
    let timers = ArpTimers::default();
    let mut cache = NeighbourCache::new();
    assert!(!cache.learn(ip(4), hw(4), t(0), &timers, false));
    assert!(cache.is_empty());
    assert!(cache.learn(ip(4), hw(4), t(0), &timers, true));
    assert!(cache.learn(ip(4), hw(5), t(1), &timers, false));
    assert_eq!(cache.lookup(ip(4), t(2)), NeighLookup::Reachable(hw(5)));
}

#[test]
fn full_cache_evicts_least_recently_used() {
    let timers = ArpTimers::default();
    let mut cache = NeighbourCache::new();
    for i in 0..NEIGHBOURS as u8 {
        cache.learn(
            IpAddress::v4(10, 1, 0, i),
            hw(i),
            t(i64::from(i)),
            &timers,
            true,
        );
    }
    // Touch the oldest so the second oldest goes.
    let _ = cache.lookup(IpAddress::v4(10, 1, 0, 0), t(1000));
    cache.learn(ip(200), hw(200), t(1001), &timers, true);
    assert_eq!(cache.len(), NEIGHBOURS);
    assert!(matches!(
        cache.lookup(IpAddress::v4(10, 1, 0, 0), t(1002)),
        NeighLookup::Reachable(_)
    ));
    assert_eq!(
        cache.lookup(IpAddress::v4(10, 1, 0, 1), t(1002)),
        NeighLookup::Unknown
    );
}

#[test]
fn path_lifecycle_and_eviction_returns_handle() {
    let timers = ArpTimers::default();
    let mut paths = PathCache::new();
    let g = hw(1).gid;
    assert_eq!(paths.lookup(&g, t(0)), PathLookup::Unknown);
    assert_eq!(paths.start(g, t(0)), None);
    let mut asked = 0;
    paths.request_unasked(|_| {
        asked += 1;
        true
    });
    paths.request_unasked(|_| {
        asked += 1;
        true
    });
    assert_eq!(asked, 1, "a path is asked for once");
    assert_eq!(paths.resolved(&g, Ok(DestHandle(7)), t(1), &timers), None);
    assert_eq!(paths.lookup(&g, t(2)), PathLookup::Valid(DestHandle(7)));
    // Failure is remembered, then retried.
    let g2 = hw(2).gid;
    paths.start(g2, t(3));
    paths.resolved(&g2, Err(()), t(3), &timers);
    assert_eq!(paths.lookup(&g2, t(4)), PathLookup::Failed);
    assert_eq!(
        paths.lookup(&g2, t(3) + timers.path_retry),
        PathLookup::Unknown
    );
    // Filling the table evicts the least recently used valid path's handle.
    for i in 10..(10 + PATHS as u8) {
        if let Some(h) = paths.start(hw(i).gid, t(100 + i64::from(i))) {
            assert_eq!(h, DestHandle(7));
        }
    }
    let mut released = std::vec::Vec::new();
    paths.clear(|h| released.push(h));
    assert!(!released.contains(&DestHandle(7)));
    let _ = Duration::ZERO;
}
