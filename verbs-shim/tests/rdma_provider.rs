//! The `rdma` provider on real libibverbs.
//!
//! Without a device only the "no device" path can be checked; the tests that
//! need one print `SKIPPED: no RDMA device ...` and return. With a device
//! (soft-RoCE: `rdma link add rxe0 type rxe netdev eth0`) they run a real
//! loopback between two ports of one context. `IBGUEST_RDMA_DEVICE`,
//! `IBGUEST_RDMA_PORT` and `IBGUEST_RDMA_GID_INDEX` pick the device, port
//! and GID (defaults: the first device, port 1, GID index 0).
#![cfg(feature = "rdma")]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ring::Window;
use verbs_shim::rdma::{LinkLayer, RdmaConfig, RdmaContext, RdmaError, RdmaPort};
use verbs_shim::{
    Completion, DestHandle, Gid, Hca, HcaError, McastError, PathError, QKey, Qpn, RecvInfo,
    SlotLayout, TxSlot, UdDest, Verbs, WcStatus, GRH_LEN,
};

const LAYOUT: SlotLayout = SlotLayout {
    tx_count: 32,
    rx_count: 32,
    slot_size: 4096,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Prints a line that `cargo test` shows even for a passing test: libtest
/// captures `eprintln!`, not writes to the stderr handle.
fn notice(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Shows the provider's log lines (warnings, or everything from `debug` with
/// `IBGUEST_RDMA_LOG` set), for diagnosing a real device, and counts its
/// errors: the provider logs every failed destroy (a leak) as one.
struct StderrLog;

static ERRORS: AtomicUsize = AtomicUsize::new(0);

/// No test so far made the provider log an error.
fn assert_no_errors_logged() {
    assert_eq!(
        ERRORS.load(Ordering::SeqCst),
        0,
        "the provider logged errors"
    );
}

impl log::Log for StderrLog {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error {
            ERRORS.fetch_add(1, Ordering::SeqCst);
        }
        if self.enabled(record.metadata()) {
            notice(&format!("{}: {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

fn init_log() {
    static LOGGER: StderrLog = StderrLog;
    if log::set_logger(&LOGGER).is_ok() {
        let verbose = std::env::var_os("IBGUEST_RDMA_LOG").is_some();
        log::set_max_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
}

fn env_config() -> RdmaConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut config = RdmaConfig {
        device: var("IBGUEST_RDMA_DEVICE"),
        ..RdmaConfig::default()
    };
    if let Some(port) = var("IBGUEST_RDMA_PORT") {
        config.port = port.parse().expect("IBGUEST_RDMA_PORT is a port number");
    }
    if let Some(index) = var("IBGUEST_RDMA_GID_INDEX") {
        config.gid_index = index.parse().expect("IBGUEST_RDMA_GID_INDEX is a number");
    }
    config
}

/// The context for a device test, or `None` after a visible notice when
/// this machine has no RDMA device.
fn context_or_skip(test: &str) -> Option<RdmaContext> {
    init_log();
    let devices = RdmaContext::devices().unwrap_or_else(|e| panic!("{e}"));
    if devices.is_empty() {
        notice(&format!(
            "SKIPPED: no RDMA device, so `{test}` did not run (load one, e.g. \
             `rdma link add rxe0 type rxe netdev eth0`)"
        ));
        return None;
    }
    Some(RdmaContext::open(&env_config()).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn open_reports_no_device_or_names_the_devices() {
    let devices = RdmaContext::devices().unwrap_or_else(|e| panic!("{e}"));
    if devices.is_empty() {
        for device in [None, Some("rxe0".to_string())] {
            let config = RdmaConfig {
                device,
                ..RdmaConfig::default()
            };
            let err = RdmaContext::open(&config).unwrap_err();
            assert_eq!(err, RdmaError::NoDevice);
            let msg = err.to_string();
            assert!(msg.contains("no RDMA device"), "{msg}");
            assert!(msg.contains("rdma link add"), "{msg}");
        }
        return;
    }
    let config = RdmaConfig {
        device: Some("no-such-device9".into()),
        ..RdmaConfig::default()
    };
    match RdmaContext::open(&config) {
        Err(RdmaError::NotFound { name, available }) => {
            assert_eq!(name, "no-such-device9");
            assert_eq!(available, devices);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn bad_config_is_refused_before_any_device_is_touched() {
    let config = RdmaConfig {
        port: 0,
        ..RdmaConfig::default()
    };
    let err = RdmaContext::open(&config).unwrap_err();
    assert!(
        matches!(err, RdmaError::InvalidConfig { field: "port", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("port numbers start at 1"));
}

/// A port plus the bookkeeping a consumer does.
struct Node {
    port: RdmaPort,
    tx: Vec<TxSlot>,
    sends: VecDeque<WcStatus>,
    /// Successful receives: the info and the bytes written (GRH area first).
    recvs: VecDeque<(RecvInfo, Vec<u8>)>,
    flushed: usize,
    events: VecDeque<Completion>,
}

impl Node {
    fn new(ctx: &RdmaContext) -> Node {
        let region = Window::new_heap(LAYOUT.region_len());
        let mut port = ctx
            .open_port(region, LAYOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = port.take_slots().expect("slots");
        assert!(port.take_slots().is_none(), "slots are handed out once");
        for slot in rx {
            port.post_recv(slot).expect("post_recv");
        }
        Node {
            port,
            tx: tx.collect(),
            sends: VecDeque::new(),
            recvs: VecDeque::new(),
            flushed: 0,
            events: VecDeque::new(),
        }
    }

    fn attr(&self) -> verbs_shim::PortAttr {
        self.port.port_attr()
    }

    /// Reaps every completion; receive slots are copied out and reposted.
    fn poll(&mut self) {
        while let Some(c) = self.port.poll_cq().expect("poll_cq") {
            match c {
                Completion::Send { slot, status } => {
                    self.tx.push(slot);
                    self.sends.push_back(status);
                }
                Completion::Recv { slot, status, info } => {
                    if status == WcStatus::Flushed {
                        self.flushed += 1;
                        continue;
                    }
                    assert_eq!(status, WcStatus::Success, "{info:?}");
                    let len = info.byte_len as usize;
                    let bytes = self.port.buffers().rx.slot(&slot)[..len].to_vec();
                    self.recvs.push_back((info, bytes));
                    self.port.post_recv(slot).expect("repost");
                }
                other => self.events.push_back(other),
            }
        }
    }

    /// Polls until `done` holds, or panics after [`TIMEOUT`].
    fn wait(&mut self, what: &str, mut done: impl FnMut(&Node) -> bool) {
        let start = Instant::now();
        loop {
            self.poll();
            if done(self) {
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn event(&mut self) -> Completion {
        self.wait("a control completion", |n| !n.events.is_empty());
        self.events.pop_front().expect("event")
    }

    fn resolve(&mut self, gid: Gid) -> Result<DestHandle, PathError> {
        self.port.resolve(gid).expect("resolve");
        match self.event() {
            Completion::Path { dgid, result } => {
                assert_eq!(dgid, gid);
                result
            }
            other => panic!("expected a path completion, got {other:?}"),
        }
    }

    fn mcast(&mut self, mgid: Gid, attach: bool) -> Result<(), McastError> {
        if attach {
            self.port.attach_mcast(mgid).expect("attach");
        } else {
            self.port.detach_mcast(mgid).expect("detach");
        }
        match self.event() {
            Completion::Mcast {
                mgid: g,
                attach: a,
                result,
            } => {
                assert_eq!((g, a), (mgid, attach));
                result
            }
            other => panic!("expected a multicast completion, got {other:?}"),
        }
    }

    /// Sends `payload` from a free TX slot.
    fn send(&mut self, payload: &[u8], dest: &UdDest) {
        if self.tx.is_empty() {
            self.wait("a free TX slot", |n| !n.tx.is_empty());
        }
        let slot = self.tx.pop().expect("free TX slot");
        self.port.buffers().tx.slot_mut(&slot)[..payload.len()].copy_from_slice(payload);
        self.port
            .post_send(slot, payload.len(), dest)
            .expect("post_send");
        self.port.flush().expect("flush");
    }
}

/// Says how many of the port's paths went through rdma_cm (softroce's
/// step a adds these lines up).
impl Drop for Node {
    fn drop(&mut self) {
        let st = self.port.stats();
        if st.cm_paths + st.cm_path_errors > 0 {
            notice(&format!(
                "CM-PATHS resolved={} unreachable={}",
                st.cm_paths, st.cm_path_errors
            ));
        }
    }
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u32 ^ seq.wrapping_mul(131)) as u8)
        .collect();
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// True for an IPv4-mapped GID (`::ffff:a.b.c.d`), RoCEv2 over IPv4.
fn is_ipv4_mapped(gid: Gid) -> bool {
    gid.0[..10] == [0; 10] && gid.0[10..12] == [0xff, 0xff]
}

/// Checks the GRH area of a received buffer: an IPv6-style GRH with both
/// GIDs, or (RoCEv2 over IPv4) an IPv4 header at bytes 20..40.
fn check_grh(grh: &[u8], sgid: Gid, dgid: Gid) {
    if grh[0] >> 4 == 6 {
        assert_eq!(Gid::from_slice(&grh[8..24]), Some(sgid), "GRH source GID");
        assert_eq!(
            Gid::from_slice(&grh[24..40]),
            Some(dgid),
            "GRH destination GID"
        );
    } else {
        assert_eq!(
            grh[20] >> 4,
            4,
            "neither a GRH nor an IPv4 header: {grh:02x?}"
        );
        assert_eq!(&grh[32..36], &sgid.0[12..], "IPv4 source address");
        assert_eq!(&grh[36..40], &dgid.0[12..], "IPv4 destination address");
    }
}

/// An IPoIB-style MGID in the port's partition (RFC 4391 layout).
fn mgid(pkey: u16, last: u8) -> Gid {
    let p = pkey.to_be_bytes();
    Gid([
        0xff, 0x12, 0x40, 0x1b, p[0], p[1], 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, last,
    ])
}

#[test]
fn loopback_100_unicast_packets_with_grh() {
    let Some(ctx) = context_or_skip("loopback_100_unicast_packets_with_grh") else {
        return;
    };
    let mut a = Node::new(&ctx);
    let mut b = Node::new(&ctx);
    let (aa, ba) = (a.attr(), b.attr());
    assert_ne!(aa.qpn, ba.qpn);
    assert_eq!(aa.gid, ctx.gid());
    assert!(aa.mtu <= ctx.mtu());
    // The address handle is made on a resolver thread, which calls the
    // port's notifier when it is done.
    let finished = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&finished);
    a.port.set_notifier(Some(std::sync::Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    })));
    let handle = a.resolve(ba.gid).expect("B's GID resolves");
    if a.port.has_cm() {
        // The address handle's attributes came from rdma_cm's route.
        assert_eq!(a.port.stats().cm_paths, 1, "resolved through rdma_cm");
    } else {
        notice("NOTE: no rdma_cm (rdma_ucm not loaded?): the path was not resolved through it");
    }
    // The thread delivers the handle, then calls the notifier: the handle
    // may be polled first.
    let start = Instant::now();
    while finished.load(Ordering::Relaxed) == 0 && start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        finished.load(Ordering::Relaxed) >= 1,
        "the notifier was called"
    );
    assert_eq!(a.port.resolving(), 0);
    let dest = UdDest {
        handle,
        qpn: ba.qpn,
        qkey: ba.qkey,
    };
    let len = 200;
    // UD drops what finds no posted receive: keep at most half of B's slots
    // in flight.
    let window = usize::from(LAYOUT.rx_count) / 2;
    let mut sent = 0u32;
    while sent < 100 {
        let batch = (100 - sent).min(window as u32);
        for seq in sent..sent + batch {
            a.send(&payload(seq, len), &dest);
        }
        sent += batch;
        b.wait("the batch to arrive", |n| n.recvs.len() == sent as usize);
    }
    a.wait("100 send completions", |n| n.sends.len() == 100);
    assert!(
        a.sends.iter().all(|s| *s == WcStatus::Success),
        "{:?}",
        a.sends
    );
    let mut seen = [false; 100];
    for (info, bytes) in &b.recvs {
        assert_eq!(info.byte_len as usize, GRH_LEN + len);
        assert_eq!(info.src_qpn, aa.qpn);
        assert_eq!(info.pkey, ba.pkey);
        assert!(info.grh_present);
        assert!(!info.multicast);
        if ctx.link_layer() == LinkLayer::Ethernet {
            assert_eq!(info.src_lid.0, 0);
        }
        check_grh(&bytes[..GRH_LEN], aa.gid, ba.gid);
        let seq = u32::from_be_bytes(bytes[GRH_LEN..GRH_LEN + 4].try_into().unwrap());
        assert_eq!(&bytes[GRH_LEN..], &payload(seq, len)[..], "packet {seq}");
        assert!(
            !std::mem::replace(&mut seen[seq as usize], true),
            "dup {seq}"
        );
    }
    assert!(seen.iter().all(|s| *s));
    let stats = b.port.stats();
    assert_eq!(stats.rx_completions, 100);
    assert_eq!(stats.bogus_wc, 0);
    drop((a, b, ctx));
    assert_no_errors_logged();
}

#[test]
fn a_send_with_a_head_takes_the_head_from_the_arena_not_the_slot() {
    let Some(ctx) =
        context_or_skip("a_send_with_a_head_takes_the_head_from_the_arena_not_the_slot")
    else {
        return;
    };
    let mut a = Node::new(&ctx);
    let mut b = Node::new(&ctx);
    let (aa, ba) = (a.attr(), b.attr());
    let handle = a.resolve(ba.gid).expect("B's GID resolves");
    let dest = UdDest {
        handle,
        qpn: ba.qpn,
        qkey: ba.qkey,
    };
    // (frame length, head length): a head and a tail, a frame that is all
    // head, and an empty head.
    let cases = [(300usize, 64usize), (40, 40), (200, 0), (1000, 17)];
    for (seq, &(len, head_len)) in cases.iter().enumerate() {
        let frame = payload(seq as u32, len);
        let head: Vec<u8> = frame[..head_len].iter().map(|b| !b).collect();
        a.wait("a free TX slot", |n| !n.tx.is_empty());
        let slot = a.tx.pop().expect("free TX slot");
        // The slot holds the frame; the head passed in differs from the
        // slot's first bytes, and only it may arrive.
        a.port.buffers().tx.slot_mut(&slot)[..len].copy_from_slice(&frame);
        a.port
            .post_send_with_head(slot, len, &dest, &head)
            .expect("post_send_with_head");
        a.port.flush().expect("flush");
        b.wait("the frame", |n| n.recvs.len() == seq + 1);
        let (info, bytes) = b.recvs.back().expect("received");
        assert_eq!(info.byte_len as usize, GRH_LEN + len);
        assert_eq!(info.src_qpn, aa.qpn);
        let got = &bytes[GRH_LEN..];
        assert_eq!(&got[..head_len], &head[..], "head of case {seq}");
        assert_eq!(&got[head_len..], &frame[head_len..], "tail of case {seq}");
    }
    a.wait("the send completions", |n| n.sends.len() == cases.len());
    assert!(
        a.sends.iter().all(|s| *s == WcStatus::Success),
        "{:?}",
        a.sends
    );
    assert_eq!(a.port.stats().tx_head_posted, cases.len() as u64);
    // A head longer than 64 bytes or than the frame is refused unposted.
    let slot = a.tx.pop().expect("free TX slot");
    let err = a
        .port
        .post_send_with_head(slot, 100, &dest, &[0; 65])
        .expect_err("head too long");
    assert_eq!(err.error, HcaError::InvalidArgument);
    let err = a
        .port
        .post_send_with_head(err.slot, 10, &dest, &[0; 20])
        .expect_err("head longer than the frame");
    assert_eq!(err.error, HcaError::InvalidArgument);
    drop((a, b, ctx));
    assert_no_errors_logged();
}

#[test]
fn mtu_sized_send_arrives_and_oversize_completes_with_local_length() {
    let Some(ctx) =
        context_or_skip("mtu_sized_send_arrives_and_oversize_completes_with_local_length")
    else {
        return;
    };
    let mut a = Node::new(&ctx);
    let mut b = Node::new(&ctx);
    let mtu = a.attr().mtu.bytes();
    let handle = a.resolve(b.attr().gid).expect("resolve");
    let dest = UdDest {
        handle,
        qpn: b.attr().qpn,
        qkey: b.attr().qkey,
    };
    a.send(&payload(1, mtu + 1), &dest);
    a.wait("the oversize send", |n| !n.sends.is_empty());
    assert_eq!(a.sends.pop_front(), Some(WcStatus::LocalLength));
    assert_eq!(a.port.stats().oversize, 1);
    a.send(&payload(2, mtu), &dest);
    b.wait("the MTU-sized packet", |n| !n.recvs.is_empty());
    let (info, bytes) = b.recvs.pop_front().expect("packet");
    assert_eq!(info.byte_len as usize, GRH_LEN + mtu);
    assert_eq!(&bytes[GRH_LEN..], &payload(2, mtu)[..]);
    a.wait("its send completion", |n| !n.sends.is_empty());
    assert_eq!(a.sends.pop_front(), Some(WcStatus::Success));
    assert!(b.recvs.is_empty(), "the oversize send never left");
    drop((a, b, ctx));
    assert_no_errors_logged();
}

#[test]
fn completion_channel_wakes_an_armed_port() {
    let Some(ctx) = context_or_skip("completion_channel_wakes_an_armed_port") else {
        return;
    };
    let mut a = Node::new(&ctx);
    let mut b = Node::new(&ctx);
    let handle = a.resolve(b.attr().gid).expect("resolve");
    b.poll();
    b.port.ack_events().expect("ack");
    assert!(!b.port.arm_cq().expect("arm"), "nothing is waiting yet");
    let dest = UdDest {
        handle,
        qpn: b.attr().qpn,
        qkey: b.attr().qkey,
    };
    a.send(&payload(9, 64), &dest);
    let mut fds = [libc::pollfd {
        fd: b.port.event_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one pollfd for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, TIMEOUT.as_millis() as libc::c_int) };
    assert_eq!(ready, 1, "the event fd became readable");
    assert!(b.port.ack_events().expect("ack") >= 1);
    b.wait("the packet", |n| n.recvs.len() == 1);
    assert!(b.port.ack_events().expect("ack") <= 1);
    drop((a, b, ctx));
    assert_no_errors_logged();
}

#[test]
fn multicast_attach_detach_and_group_send() {
    let Some(ctx) = context_or_skip("multicast_attach_detach_and_group_send") else {
        return;
    };
    let mut a = Node::new(&ctx);
    let mut b = Node::new(&ctx);
    let pkey = b.attr().pkey.0;
    let group = mgid(pkey, 1);
    let foreign = mgid(pkey.wrapping_add(1) | 0x8000, 1);
    assert_eq!(b.mcast(b.attr().gid, true), Err(McastError::NotMulticast));
    assert_eq!(b.mcast(foreign, true), Err(McastError::PartitionMismatch));
    assert_eq!(b.mcast(group, false), Err(McastError::NotAttached));
    assert_eq!(a.resolve(foreign), Err(PathError::Unreachable));
    if ctx.link_layer() == LinkLayer::InfiniBand {
        // rdma_join_multicast makes the SA join; without a subnet manager
        // that knows the group it fails.
        let joined = b.mcast(group, true);
        notice(&format!(
            "NOTE: native InfiniBand: joining {group} through rdma_cm: {joined:?}; group send \
             not tested"
        ));
        return;
    }
    assert_eq!(b.mcast(group, true), Ok(()));
    let st = b.port.stats();
    notice(&format!(
        "NOTE: the join of {group} went through rdma_join_multicast: {} (refused by rdma_cm: {})",
        st.cm_joins, st.cm_join_refusals
    ));
    assert_eq!(
        st.cm_joins + st.cm_join_refusals,
        1,
        "the join was made through rdma_cm (or refused by it first)"
    );
    assert_eq!(b.mcast(group, true), Ok(()), "joining twice is fine");
    let handle = a.resolve(group).expect("the group resolves");
    let dest = UdDest {
        handle,
        qpn: Qpn::MULTICAST,
        qkey: b.attr().qkey,
    };
    a.send(&payload(77, 128), &dest);
    a.wait("the group send", |n| !n.sends.is_empty());
    assert_eq!(a.sends.pop_front(), Some(WcStatus::Success));
    if is_ipv4_mapped(ctx.gid()) {
        notice(&format!(
            "NOTE: GID {} is IPv4-mapped; an IPv6 MGID is not routable from it, \
             group delivery not checked",
            ctx.gid()
        ));
    } else {
        // The provider joined the group's IPv6 address on the netdev, so
        // even soft-RoCE loops the packet back to a member on this device.
        assert!(ctx.netdev().is_some(), "RoCE GID without a netdev");
        b.wait("the group packet", |n| !n.recvs.is_empty());
        let (info, bytes) = b.recvs.pop_front().expect("packet");
        assert!(info.multicast, "{info:?}");
        assert!(info.grh_present);
        assert_eq!(info.src_qpn, a.attr().qpn);
        assert_eq!(info.byte_len as usize, GRH_LEN + 128);
        assert_eq!(&bytes[GRH_LEN..], &payload(77, 128)[..]);
        check_grh(&bytes[..GRH_LEN], a.attr().gid, group);
        assert!(a.recvs.is_empty(), "the sender is not a member");
    }
    assert_eq!(b.mcast(group, false), Ok(()));
    assert_eq!(b.mcast(group, false), Err(McastError::NotAttached));

    // A port dropped while attached, and one closed while attached, leave
    // their groups: otherwise the kernel refuses to destroy the QP (EBUSY)
    // and everything under it leaks, which the provider logs as errors.
    let mut c = Node::new(&ctx);
    assert_eq!(c.mcast(group, true), Ok(()));
    drop(c);
    let mut d = Node::new(&ctx);
    assert_eq!(d.mcast(group, true), Ok(()));
    d.port.close().expect("close");
    d.wait("the flushes", |n| n.port.in_flight() == 0);
    drop((a, b, d, ctx));
    assert_no_errors_logged();
}

#[test]
fn released_handles_and_close_flush_everything() {
    let Some(ctx) = context_or_skip("released_handles_and_close_flush_everything") else {
        return;
    };
    let mut a = Node::new(&ctx);
    let b_attr = Node::new(&ctx).attr();
    let handle = a.resolve(b_attr.gid).expect("resolve");
    assert_eq!(a.resolve(Gid::ZERO), Err(PathError::Unreachable));
    a.port.release_dest(handle).expect("release");
    assert_eq!(
        a.port.release_dest(handle),
        Err(HcaError::InvalidArgument),
        "a handle is released once"
    );
    assert_eq!(a.port.handles(), 0);
    let dest = UdDest {
        handle,
        qpn: b_attr.qpn,
        qkey: QKey::IPOIB_DEFAULT,
    };
    a.send(&payload(3, 64), &dest);
    a.wait("the send through a released handle", |n| {
        !n.sends.is_empty()
    });
    assert_eq!(a.sends.pop_front(), Some(WcStatus::LocalProtection));

    // Released with a send outstanding: the AH lives until it completes.
    let held = a.resolve(b_attr.gid).expect("resolve");
    let dest_held = UdDest {
        handle: held,
        ..dest
    };
    a.send(&payload(5, 64), &dest_held);
    a.port.release_dest(held).expect("release");
    assert_eq!(a.port.handles(), 1, "kept for the outstanding send");
    a.wait("the send", |n| !n.sends.is_empty());
    assert_eq!(a.sends.pop_front(), Some(WcStatus::Success));
    assert_eq!(a.port.handles(), 0, "destroyed with its last send");

    let posted = usize::from(LAYOUT.rx_count);
    assert_eq!(a.port.in_flight(), posted);
    a.port.close().expect("close");
    a.port.close().expect("closing twice does nothing");
    assert!(a.port.is_closed());
    a.wait("every receive to come back flushed", |n| {
        n.flushed == posted
    });
    assert_eq!(a.port.in_flight(), 0);
    assert_eq!(a.port.arm_cq(), Err(HcaError::Disconnected));
    assert_eq!(a.port.resolve(b_attr.gid), Err(HcaError::Disconnected));
    assert_eq!(
        a.port.attach_mcast(mgid(0xffff, 2)),
        Err(HcaError::Disconnected)
    );
    // Posts after close complete at once.
    a.send(&payload(4, 64), &dest);
    a.poll();
    assert_eq!(a.sends.pop_front(), Some(WcStatus::Flushed));
    assert_eq!(a.port.port_attr().state, verbs_shim::PortState::Down);
    drop((a, ctx));
    assert_no_errors_logged();
}

#[test]
fn each_port_gets_its_own_pkey_index_or_is_refused() {
    let Some(ctx) = context_or_skip("each_port_gets_its_own_pkey_index_or_is_refused") else {
        return;
    };
    let table = ctx.pkey_table().unwrap_or_else(|e| panic!("{e}"));
    // The context's own key is in the table: a port in it opens.
    let own = ctx.pkey();
    let port = ctx
        .open_port_in(Window::new_heap(LAYOUT.region_len()), LAYOUT, own)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port.port_attr().pkey, own);
    drop(port);
    // A full-member key whose partition the table lacks is refused, naming
    // the key and the port; there is no fallback to another index.
    let missing = (1..0x7fffu16)
        .map(|p| p | 0x8000)
        .find(|k| !table.iter().any(|t| t & 0x7fff == k & 0x7fff))
        .expect("a partition the table does not hold");
    let err = ctx
        .open_port_in(
            Window::new_heap(LAYOUT.region_len()),
            LAYOUT,
            verbs_shim::PKey(missing),
        )
        .expect_err("refused");
    assert!(
        matches!(err, RdmaError::PkeyNotInTable { pkey, .. } if pkey == missing),
        "{err:?}"
    );
    let text = err.to_string();
    let named = format!(
        "P_Key {missing:#06x} is not in the P_Key table of {} port {}",
        ctx.device_name(),
        ctx.port_num()
    );
    assert!(text.contains(&named), "{text}");
    drop(ctx);
    assert_no_errors_logged();
}

/// Connected mode (RFC 4755 over rdma_cm): one port's big slots and RC
/// queues, seen from the test.
struct RcNode {
    port: RdmaPort,
    tx: Vec<verbs_shim::rc::BigTxSlot>,
    sends: VecDeque<(verbs_shim::rc::ConnHandle, verbs_shim::rc::RcStatus)>,
    recvs: VecDeque<(verbs_shim::rc::RcRecvInfo, Vec<u8>)>,
    events: VecDeque<verbs_shim::rc::RcEvent>,
}

const BIG: verbs_shim::rc::BigLayout = verbs_shim::rc::BigLayout {
    tx_count: 8,
    rx_count: 8,
    slot_size: 16384,
};

impl RcNode {
    fn new(ctx: &RdmaContext) -> RcNode {
        use verbs_shim::rc::RcVerbs;
        let mut port = ctx
            .open_port(Window::new_heap(LAYOUT.region_len()), LAYOUT)
            .expect("open_port");
        port.enable_rc(Window::new_heap(BIG.region_len()), BIG, 4)
            .expect("enable_rc");
        let caps = port.rc_caps().expect("caps");
        assert_eq!((caps.big, caps.max_conns), (BIG, 4));
        let (tx, rx) = port.take_big_slots().expect("big slots");
        assert!(port.take_big_slots().is_none(), "tokens come once");
        for slot in rx {
            port.rc_post_recv(slot).expect("post big recv");
        }
        RcNode {
            port,
            tx: tx.collect(),
            sends: VecDeque::new(),
            recvs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn poll(&mut self) {
        use verbs_shim::rc::{RcCompletion, RcStatus, RcVerbs};
        // The UD side too: it arms and pumps nothing here, but a real
        // worker polls both.
        while self.port.poll_cq().expect("poll_cq").is_some() {}
        while let Some(c) = self.port.poll_rc().expect("poll_rc") {
            match c {
                RcCompletion::Send { slot, conn, status } => {
                    self.tx.push(slot);
                    self.sends.push_back((conn, status));
                }
                RcCompletion::Recv { slot, status, info } => {
                    if status == RcStatus::Success {
                        let mut bytes = vec![0; info.byte_len as usize];
                        assert!(self.port.big_area().read(&slot, 0, &mut bytes));
                        self.recvs.push_back((info, bytes));
                    }
                    self.port.rc_post_recv(slot).expect("repost");
                }
                RcCompletion::Event(e) => self.events.push_back(e),
            }
        }
    }

    fn wait(&mut self, what: &str, mut done: impl FnMut(&RcNode) -> bool) {
        let start = Instant::now();
        loop {
            self.poll();
            if done(self) {
                return;
            }
            assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn event(&mut self, what: &str) -> verbs_shim::rc::RcEvent {
        self.wait(what, |n| !n.events.is_empty());
        self.events.pop_front().expect("event")
    }

    fn send(&mut self, conn: verbs_shim::rc::ConnHandle, payload: &[u8]) {
        use verbs_shim::rc::RcVerbs;
        if self.tx.is_empty() {
            self.wait("a free big TX slot", |n| !n.tx.is_empty());
        }
        let slot = self.tx.pop().expect("free slot");
        assert!(self.port.big_area().write(&slot, 0, payload));
        self.port
            .rc_post_send(conn, slot, payload.len())
            .expect("rc_post_send");
    }
}

/// Polls both until `a` and `b` each reported an event.
fn both_events(
    a: &mut RcNode,
    b: &mut RcNode,
    what: &str,
) -> (verbs_shim::rc::RcEvent, verbs_shim::rc::RcEvent) {
    let start = Instant::now();
    loop {
        a.poll();
        b.poll();
        if !a.events.is_empty() && !b.events.is_empty() {
            return (a.events.pop_front().unwrap(), b.events.pop_front().unwrap());
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn connected_mode_between_two_ports_over_rdma_cm() {
    use verbs_shim::rc::{BreakReason, RcEvent, RcStatus, RcVerbs, RejectReason};
    let Some(ctx) = context_or_skip("connected_mode_between_two_ports_over_rdma_cm") else {
        return;
    };
    let mut a = RcNode::new(&ctx);
    let mut b = RcNode::new(&ctx);
    let (aa, ba) = (a.port.port_attr(), b.port.port_attr());

    // A request wakes b's event descriptor (the rdma_cm channel is in it).
    b.poll();
    b.port.ack_events().expect("ack");
    assert!(!b.port.arm_cq().expect("arm"), "nothing waits yet");
    let conn_a = a.port.rc_connect(ba.gid, ba.qpn, 8192).expect("connect");
    let mut fds = [libc::pollfd {
        fd: b.port.event_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // The active side needs polling to get through address and route
    // resolution before the request goes out.
    let start = Instant::now();
    loop {
        a.poll();
        // SAFETY: `fds` is a valid array of one pollfd for the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 10) } == 1 {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "b's descriptor never woke");
    }
    b.port.ack_events().expect("ack");
    let conn_b = match b.event("the request") {
        RcEvent::Request { conn, peer } => {
            assert_eq!(peer.gid, aa.gid);
            assert_eq!(peer.ud_qpn, aa.qpn);
            assert_eq!(peer.recv_mtu, 8192);
            conn
        }
        other => panic!("expected a request, got {other:?}"),
    };
    assert!(
        b.port.rc_accept(conn_b, 100).is_err(),
        "an MTU below 256 is refused"
    );
    b.port.rc_accept(conn_b, 16384).expect("accept");
    match both_events(&mut a, &mut b, "establishment") {
        (
            RcEvent::Established {
                conn: ca,
                send_mtu: ma,
            },
            RcEvent::Established {
                conn: cb,
                send_mtu: mb,
            },
        ) => {
            assert_eq!((ca, cb), (conn_a, conn_b));
            assert_eq!(ma, 16384, "a sends up to b's receive MTU");
            assert_eq!(mb, 8192, "b sends up to a's receive MTU");
        }
        other => panic!("expected both established, got {other:?}"),
    }

    // 64 messages a -> b of up to 16 KiB (more than the 8 big receives:
    // b reposts as it goes, and RNR retries wait for it), and some back.
    for seq in 0..64u32 {
        let len = 256 + (seq as usize * 4093) % (16384 - 256);
        a.send(conn_a, &payload(seq, len));
        a.poll();
        b.poll();
    }
    b.send(conn_b, &payload(1000, 8192));
    b.wait("64 messages", |n| n.recvs.len() == 64);
    a.wait("b's message", |n| n.recvs.len() == 1);
    for seq in 0..64u32 {
        let len = 256 + (seq as usize * 4093) % (16384 - 256);
        let (info, bytes) = b.recvs.pop_front().expect("message");
        assert_eq!(info.conn, conn_b);
        assert_eq!(info.src_qpn, aa.qpn);
        assert_eq!(
            bytes,
            payload(seq, len),
            "message {seq} in order and intact"
        );
    }
    let (info, bytes) = a.recvs.pop_front().expect("message");
    assert_eq!((info.conn, info.src_qpn), (conn_a, ba.qpn));
    assert_eq!(bytes, payload(1000, 8192));
    a.wait("64 send completions", |n| n.sends.len() == 64);
    assert!(a.sends.iter().all(|s| *s == (conn_a, RcStatus::Success)));

    // Longer than the peer's receive MTU: completes LocalLength, unsent.
    b.send(conn_b, &payload(7, 8193));
    b.wait("the oversize send", |n| n.sends.len() == 2);
    assert_eq!(b.sends.pop_back(), Some((conn_b, RcStatus::LocalLength)));

    // A request for a UD QPN nobody listens for is rejected; one whose
    // low 16 bits match b's but is not b's is refused by b's listener.
    let none = a
        .port
        .rc_connect(ba.gid, verbs_shim::Qpn::new_truncated(0xfffe), 8192)
        .expect("connect");
    match a.event("the rejection") {
        RcEvent::Rejected { conn, reason } => {
            assert_eq!(conn, none);
            assert!(
                matches!(reason, RejectReason::NoListener | RejectReason::Unreachable),
                "{reason:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let other = a
        .port
        .rc_connect(
            ba.gid,
            verbs_shim::Qpn::new_truncated(ba.qpn.get() ^ 0x10000),
            8192,
        )
        .expect("connect");
    let start = Instant::now();
    let reason = loop {
        a.poll();
        b.poll();
        assert!(
            b.events.is_empty(),
            "b's guest never sees a request for another QP"
        );
        if let Some(e) = a.events.pop_front() {
            match e {
                RcEvent::Rejected { conn, reason } if conn == other => break reason,
                e => panic!("expected a rejection, got {e:?}"),
            }
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out waiting for the refusal"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    assert_eq!(reason, RejectReason::Refused);
    assert_eq!(b.port.rc_stats().requests_refused, 1);

    // a disconnects: a gets Closed, b gets Broken(PeerClosed); both
    // handles are dead afterwards.
    a.port.rc_disconnect(conn_a).expect("disconnect");
    let (ea, eb) = both_events(&mut a, &mut b, "the disconnect");
    assert_eq!(ea, RcEvent::Closed { conn: conn_a });
    assert_eq!(
        eb,
        RcEvent::Broken {
            conn: conn_b,
            reason: BreakReason::PeerClosed
        }
    );
    assert!(a.port.rc_disconnect(conn_a).is_err());
    assert_eq!((a.port.rc_held(), b.port.rc_held()), (0, 0));
    drop((a, b, ctx));
    assert_no_errors_logged();
}

/// A GID on the port's own subnet that nobody has: the port's own with
/// its last bytes changed (an IPv4-mapped GID gets host .250 or .251).
fn unused_gid(own: Gid) -> Gid {
    let mut g = own;
    if is_ipv4_mapped(own) {
        g.0[15] = if own.0[15] == 250 { 251 } else { 250 };
    } else {
        g.0[14] ^= 0x5a;
        g.0[15] ^= 0xa5;
    }
    g
}

#[test]
fn an_unused_address_is_unreachable_through_rdma_cm_without_blocking() {
    let Some(ctx) =
        context_or_skip("an_unused_address_is_unreachable_through_rdma_cm_without_blocking")
    else {
        return;
    };
    let mut a = Node::new(&ctx);
    let b = Node::new(&ctx);
    if !a.port.has_cm() {
        notice(
            "NOTE: no rdma_cm (rdma_ucm not loaded?): paths are not resolved through it, \
             nothing to check here",
        );
        return;
    }
    let nobody = unused_gid(ctx.gid());
    // `resolve` only starts the query: it returns at once, however long
    // rdma_cm takes to give up. A second resolution waits behind it.
    let start = Instant::now();
    a.port.resolve(nobody).expect("resolve");
    let took = start.elapsed();
    a.port.resolve(b.attr().gid).expect("resolve");
    assert!(
        took < Duration::from_millis(100),
        "resolve() took {took:?}: it must not wait for the answer"
    );
    assert_eq!(a.port.resolving(), 2);
    let first = a.event();
    let failed_after = start.elapsed();
    match first {
        Completion::Path { dgid, result } => {
            assert_eq!(dgid, nobody, "resolutions complete in order");
            assert_eq!(result, Err(PathError::Unreachable));
        }
        other => panic!("expected a path completion, got {other:?}"),
    }
    // rdma_cm gives up after its 2 s timeout (or at once, if the kernel
    // knows there is no route); the provider's own backstop is 5 s.
    assert!(
        failed_after < Duration::from_secs(6),
        "Unreachable came after {failed_after:?}"
    );
    match a.event() {
        Completion::Path { dgid, result } => {
            assert_eq!(dgid, b.attr().gid);
            result.expect("B's GID resolves after the failure");
        }
        other => panic!("expected a path completion, got {other:?}"),
    }
    let st = a.port.stats();
    assert_eq!((st.cm_path_errors, st.cm_paths), (1, 1), "{st:?}");
    assert_eq!(a.port.resolving(), 0);
    notice(&format!(
        "NOTE: {nobody} (nobody's): resolve() returned in {} us, Unreachable after {} ms",
        took.as_micros(),
        failed_after.as_millis()
    ));
    drop((a, b, ctx));
    assert_no_errors_logged();
}
