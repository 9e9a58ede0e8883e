//! The sim fabric through the public verbs contract.
#![cfg(feature = "sim")]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ring::Window;
use verbs_shim::sim::{FaultConfig, GrhRepr, PortConfig, SimError, SimFabric, SimPort};
use verbs_shim::{
    Completion, DestHandle, Gid, Hca, HcaError, IbMtu, Lid, McastError, PKey, PathError, QKey, Qpn,
    RecvInfo, SendWr, SlotLayout, TxSlot, UdDest, Verbs, WcStatus, GRH_LEN,
};

/// An IPoIB-style MGID for `pkey` (RFC 4391 broadcast group layout).
fn mgid(pkey: u16, last: u8) -> Gid {
    let p = pkey.to_be_bytes();
    Gid([
        0xff, 0x12, 0x40, 0x1b, p[0], p[1], 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, last,
    ])
}

/// A port plus the bookkeeping a consumer would do.
struct Node {
    port: SimPort,
    tx: Vec<TxSlot>,
    sends: VecDeque<WcStatus>,
    /// Successful receives: the info and the bytes written (GRH included).
    recvs: VecDeque<(RecvInfo, Vec<u8>)>,
    flushed: usize,
    events: VecDeque<Completion>,
}

impl Node {
    fn new(fabric: &SimFabric, config: PortConfig) -> Node {
        Node::with_recvs(fabric, config, usize::MAX)
    }

    /// Posts at most `posted` receive slots.
    fn with_recvs(fabric: &SimFabric, config: PortConfig, posted: usize) -> Node {
        let mut port = fabric.add_port(config).unwrap();
        let (tx, rx) = port.take_slots().unwrap();
        assert!(port.take_slots().is_none(), "slots are handed out once");
        for slot in rx.take(posted) {
            port.post_recv(slot).unwrap();
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

    fn local(fabric: &SimFabric, n: u16) -> Node {
        Node::new(fabric, PortConfig::local(n, PKey::DEFAULT))
    }

    fn gid(&self) -> Gid {
        self.port.port_attr().gid
    }

    fn qpn(&self) -> Qpn {
        self.port.port_attr().qpn
    }

    /// Reaps every completion; receive slots are copied out and reposted.
    fn poll(&mut self) {
        while let Some(c) = self.port.poll_cq().unwrap() {
            match c {
                Completion::Send { slot, status } => {
                    self.tx.push(slot);
                    self.sends.push_back(status);
                }
                Completion::Recv { slot, status, info } => {
                    if status == WcStatus::Success {
                        let bytes =
                            self.port.buffers().rx.slot(&slot)[..info.byte_len as usize].to_vec();
                        self.recvs.push_back((info, bytes));
                    } else {
                        self.flushed += 1;
                    }
                    if !self.port.is_closed() {
                        self.port.post_recv(slot).unwrap();
                    }
                }
                other => self.events.push_back(other),
            }
        }
    }

    fn event(&mut self) -> Completion {
        self.poll();
        self.events.pop_front().expect("an event completion")
    }

    fn resolve(&mut self, gid: Gid) -> Result<DestHandle, PathError> {
        self.port.resolve(gid).unwrap();
        match self.event() {
            Completion::Path { dgid, result } => {
                assert_eq!(dgid, gid);
                result
            }
            other => panic!("expected a path completion, got {other:?}"),
        }
    }

    fn dest_to(&mut self, peer: &Node) -> UdDest {
        let handle = self.resolve(peer.gid()).unwrap();
        UdDest {
            handle,
            qpn: peer.qpn(),
            qkey: QKey::IPOIB_DEFAULT,
        }
    }

    fn mcast(&mut self, mgid: Gid, attach: bool) -> Result<(), McastError> {
        if attach {
            self.port.attach_mcast(mgid).unwrap();
        } else {
            self.port.detach_mcast(mgid).unwrap();
        }
        match self.event() {
            Completion::Mcast {
                mgid: got,
                attach: a,
                result,
            } => {
                assert_eq!((got, a), (mgid, attach));
                result
            }
            other => panic!("expected a multicast completion, got {other:?}"),
        }
    }

    /// Posts one send of `len` bytes (the payload repeats `fill`), without
    /// polling.
    fn post(&mut self, dest: &UdDest, len: usize, fill: &[u8]) {
        let slot = self.tx.pop().expect("a free TX slot");
        {
            let mut bufs = self.port.buffers();
            let buf = bufs.tx.slot_mut(&slot);
            let n = len.min(buf.len());
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = fill[i % fill.len()];
            }
        }
        self.port.post_send(slot, len, dest).unwrap();
    }

    /// Sends and returns the send completion status.
    fn send(&mut self, dest: &UdDest, payload: &[u8]) -> WcStatus {
        self.post(dest, payload.len(), payload);
        self.poll();
        self.sends.pop_back().expect("a send completion")
    }

    /// The payloads received so far (GRH stripped), oldest first.
    fn take_payloads(&mut self) -> Vec<Vec<u8>> {
        self.poll();
        self.recvs
            .drain(..)
            .map(|(_, bytes)| bytes[GRH_LEN..].to_vec())
            .collect()
    }
}

fn faults(loss: f64, duplicate: f64, reorder: f64, corrupt: f64) -> FaultConfig {
    FaultConfig::new(0x5eed, loss, duplicate, reorder, corrupt).unwrap()
}

#[test]
fn unicast_delivery_writes_grh_and_payload() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    assert_eq!(a.qpn(), Qpn::new(0x49).unwrap());
    assert_eq!(b.qpn(), Qpn::new(0x4a).unwrap());
    assert_eq!(b.port.port_attr().lid, Lid(2));

    let dest = a.dest_to(&b);
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(a.send(&dest, &payload), WcStatus::Success);

    b.poll();
    let (info, bytes) = b.recvs.pop_front().expect("one packet");
    assert!(b.recvs.is_empty());
    assert_eq!(
        info,
        RecvInfo {
            byte_len: (GRH_LEN + 300) as u32,
            src_qpn: a.qpn(),
            src_lid: Lid(1),
            pkey: PKey::DEFAULT,
            grh_present: true,
            multicast: false,
        }
    );
    assert_eq!(bytes[0], 0x60);
    assert_eq!(&bytes[1..4], &[0, 0, 0]);
    assert_eq!(&bytes[4..6], &300u16.to_be_bytes());
    assert_eq!(bytes[6], 0x1b);
    assert_eq!(bytes[7], verbs_shim::sim::HOP_LIMIT);
    assert_eq!(&bytes[8..24], a.gid().as_bytes());
    assert_eq!(&bytes[24..40], b.gid().as_bytes());
    assert_eq!(&bytes[GRH_LEN..], &payload[..]);
    let grh = GrhRepr::parse(&bytes).unwrap();
    assert_eq!(
        (grh.sgid, grh.dgid, grh.payload_len),
        (a.gid(), b.gid(), 300)
    );

    let (sa, sb) = (a.port.stats(), b.port.stats());
    assert_eq!((sa.tx_packets, sa.tx_bytes), (1, 300));
    assert_eq!((sb.rx_packets, sb.rx_bytes), (1, 300));
    let totals = fabric.stats().totals;
    assert_eq!((totals.tx_packets, totals.rx_packets), (1, 1));
    assert_eq!(totals.rx_dropped(), 0);
}

#[test]
fn batched_sends_and_receives_behave_like_single_posts() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    // b posts three receives, as one batch, and keeps the rest.
    let mut b = Node::with_recvs(&fabric, PortConfig::local(2, PKey::DEFAULT), 0);
    let mut c = fabric
        .add_port(PortConfig::local(3, PKey::DEFAULT))
        .unwrap();
    let (_, mut rx) = c.take_slots().unwrap();
    let three: Vec<_> = rx.by_ref().take(3).collect();
    let mut refused_rx = Vec::new();
    c.post_recvs(&mut three.into_iter(), &mut refused_rx);
    assert!(refused_rx.is_empty());
    b.port = c;
    let dest = a.dest_to(&b);
    let slots: Vec<_> = (0..4).map(|_| a.tx.pop().expect("a TX slot")).collect();
    for (i, slot) in slots.iter().enumerate() {
        a.port.buffers().tx.slot_mut(slot)[..8].copy_from_slice(&[i as u8; 8]);
    }
    let mut refused = Vec::new();
    a.port.post_sends(
        &mut slots.into_iter().map(|slot| SendWr { slot, len: 8, dest }),
        &mut refused,
    );
    assert!(refused.is_empty());
    a.poll();
    assert_eq!(a.sends.len(), 4, "every send completes");
    // In posting order; the fourth found no receive and was dropped.
    let got = b.take_payloads();
    assert_eq!(got, vec![vec![0u8; 8], vec![1u8; 8], vec![2u8; 8]]);
    assert_eq!(b.port.stats().drop_no_recv, 1);

    // A closed port hands batched slots back flushed.
    a.port.close();
    let slots: Vec<_> = (0..2).map(|_| a.tx.pop().expect("a TX slot")).collect();
    a.port.post_sends(
        &mut slots.into_iter().map(|slot| SendWr { slot, len: 8, dest }),
        &mut refused,
    );
    assert!(refused.is_empty());
    a.poll();
    assert_eq!(
        a.sends.iter().filter(|s| **s == WcStatus::Flushed).count(),
        2
    );
}

#[test]
fn receives_fill_slots_in_posting_order() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for i in 0..5u8 {
        a.post(&dest, 10, &[i]);
    }
    let mut slots = Vec::new();
    while let Some(c) = b.port.poll_cq().unwrap() {
        match c {
            Completion::Recv { slot, .. } => slots.push(slot.index()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(slots, [0, 1, 2, 3, 4]);
}

#[test]
fn multicast_fans_out_to_every_member_but_the_sender() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut nodes: Vec<Node> = (1..=4).map(|n| Node::local(&fabric, n)).collect();
    let group = mgid(0xffff, 1);

    // A send-only join: the group resolves before anyone attached, and a
    // send then reaches nobody.
    let early = UdDest {
        handle: nodes[0].resolve(group).unwrap(),
        qpn: Qpn::MULTICAST,
        qkey: QKey::IPOIB_DEFAULT,
    };
    assert_eq!(nodes[0].send(&early, b"nobody"), WcStatus::Success);
    for node in nodes.iter_mut() {
        assert!(node.take_payloads().is_empty(), "no member yet");
    }
    // Another partition's group does not resolve.
    assert_eq!(
        nodes[0].resolve(mgid(0x8001, 1)),
        Err(PathError::Unreachable)
    );
    for node in nodes.iter_mut() {
        assert_eq!(node.mcast(group, true), Ok(()));
    }
    assert_eq!(nodes[1].mcast(group, true), Ok(()), "joining twice is fine");
    assert_eq!(fabric.stats().groups, 1);

    let handle = nodes[0].resolve(group).unwrap();
    let dest = UdDest {
        handle,
        qpn: Qpn::MULTICAST,
        qkey: QKey::IPOIB_DEFAULT,
    };
    assert_eq!(nodes[0].send(&dest, b"to everyone"), WcStatus::Success);
    assert!(nodes[0].take_payloads().is_empty(), "no loopback");
    for node in &mut nodes[1..] {
        node.poll();
        let (info, bytes) = node.recvs.pop_front().expect("a copy");
        assert!(info.multicast);
        assert_eq!(info.src_lid, Lid(1));
        assert_eq!(&bytes[24..40], group.as_bytes(), "DGID is the MGID");
        assert_eq!(&bytes[GRH_LEN..], b"to everyone");
        assert!(node.recvs.is_empty());
    }

    assert_eq!(nodes[3].mcast(group, false), Ok(()));
    assert_eq!(nodes[3].mcast(group, false), Err(McastError::NotAttached));
    nodes[0].send(&dest, b"again");
    let got: Vec<usize> = nodes.iter_mut().map(|n| n.take_payloads().len()).collect();
    assert_eq!(got, [0, 1, 1, 0]);
    assert_eq!(nodes[0].port.stats().tx_packets, 3);

    // A group handle needs the multicast QPN.
    let wrong = UdDest {
        qpn: nodes[1].qpn(),
        ..dest
    };
    nodes[0].send(&wrong, b"lost");
    assert_eq!(nodes[0].port.stats().unroutable, 1);
    assert!(nodes[1].take_payloads().is_empty());
}

#[test]
fn multicast_attach_checks_the_mgid() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, PortConfig::local(1, PKey(0x8001)));
    assert_eq!(
        a.mcast(Gid::from_parts(0xfe80 << 48, 9), true),
        Err(McastError::NotMulticast)
    );
    assert_eq!(
        a.mcast(mgid(0x8002, 1), true),
        Err(McastError::PartitionMismatch)
    );
    // The membership bit in the MGID does not matter, only the partition.
    assert_eq!(a.mcast(mgid(0x0001, 1), true), Ok(()));
    assert_eq!(a.mcast(mgid(0x8001, 1), true), Ok(()));
    assert_eq!(fabric.stats().groups, 2);
    drop(a);
    assert_eq!(fabric.stats().groups, 0, "groups go with their last member");
}

#[test]
fn pkey_membership_matrix() {
    let cases = [
        (0x8001, 0x8001, true),  // full - full
        (0x8001, 0x0001, true),  // full - limited
        (0x0001, 0x8001, true),  // limited - full
        (0x0001, 0x0001, false), // limited - limited
        (0x8001, 0x8002, false), // different partitions
        (0xffff, 0x7fff, true),  // default partition, limited receiver
    ];
    for (tx_key, rx_key, delivered) in cases {
        let fabric = SimFabric::new(FaultConfig::NONE);
        let mut a = Node::new(&fabric, PortConfig::local(1, PKey(tx_key)));
        let mut b = Node::new(&fabric, PortConfig::local(2, PKey(rx_key)));
        let dest = a.dest_to(&b);
        assert_eq!(a.send(&dest, b"pkey"), WcStatus::Success);
        let got = b.take_payloads();
        assert_eq!(
            got.len(),
            usize::from(delivered),
            "{tx_key:#x} -> {rx_key:#x}"
        );
        let drops = b.port.stats().drop_pkey;
        assert_eq!(drops, u64::from(!delivered), "{tx_key:#x} -> {rx_key:#x}");
    }
}

#[test]
fn pkey_is_checked_per_multicast_member() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::new(&fabric, PortConfig::local(1, PKey(0x0001)));
    let mut full = Node::new(&fabric, PortConfig::local(2, PKey(0x8001)));
    let mut limited = Node::new(&fabric, PortConfig::local(3, PKey(0x0001)));
    let group = mgid(0x8001, 1);
    for n in [&mut a, &mut full, &mut limited] {
        n.mcast(group, true).unwrap();
    }
    let handle = a.resolve(group).unwrap();
    let dest = UdDest {
        handle,
        qpn: Qpn::MULTICAST,
        qkey: QKey::IPOIB_DEFAULT,
    };
    a.send(&dest, b"m");
    assert_eq!(full.take_payloads().len(), 1);
    assert!(limited.take_payloads().is_empty());
    assert_eq!(limited.port.stats().drop_pkey, 1);
}

#[test]
fn wrong_qkey_and_wrong_qpn_are_dropped_and_counted() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let bad_qkey = UdDest {
        qkey: QKey(0x1234),
        ..dest
    };
    assert_eq!(a.send(&bad_qkey, b"q"), WcStatus::Success);
    let bad_qpn = UdDest {
        qpn: a.qpn(),
        ..dest
    };
    assert_eq!(a.send(&bad_qpn, b"q"), WcStatus::Success);
    assert!(b.take_payloads().is_empty());
    let s = b.port.stats();
    assert_eq!((s.drop_qkey, s.drop_qpn, s.rx_packets), (1, 1, 0));
    assert_eq!(b.port.posted_recvs(), 64, "the receives are still posted");
}

#[test]
fn oversize_send_completes_with_local_length() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    assert_eq!(a.send(&dest, &[1; 2049]), WcStatus::LocalLength);
    assert!(b.take_payloads().is_empty());
    assert_eq!(a.port.stats().oversize, 1);
    assert_eq!(a.port.stats().tx_packets, 0);
    assert_eq!(a.send(&dest, &[2; 2048]), WcStatus::Success);
    assert_eq!(b.take_payloads(), [vec![2; 2048]]);
    assert_eq!(a.tx.len(), 64, "every slot came back");
}

#[test]
fn receiver_mtu_and_slot_size_are_enforced() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut big = PortConfig::local(1, PKey::DEFAULT);
    big.mtu = IbMtu::Mtu4096;
    let mut a = Node::new(&fabric, big);
    let small_slots = SlotLayout {
        tx_count: 4,
        rx_count: 4,
        slot_size: 1024,
    };
    let mut b = Node::new(
        &fabric,
        PortConfig::with_layout(2, PKey::DEFAULT, small_slots),
    );
    let dest = a.dest_to(&b);
    a.send(&dest, &[0; 3000]);
    a.send(&dest, &[0; 1000]); // 40 + 1000 > 1024
    a.send(&dest, &[7; 984]); // fits exactly
    assert_eq!(b.take_payloads(), [vec![7; 984]]);
    let s = b.port.stats();
    assert_eq!((s.drop_mtu, s.drop_too_small, s.rx_packets), (1, 1, 1));
}

#[test]
fn no_posted_receive_is_a_silent_counted_drop() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::with_recvs(&fabric, PortConfig::local(2, PKey::DEFAULT), 1);
    let dest = a.dest_to(&b);
    for _ in 0..3 {
        assert_eq!(a.send(&dest, b"x"), WcStatus::Success);
    }
    b.poll();
    assert_eq!(b.recvs.len(), 1);
    assert_eq!(b.port.stats().drop_no_recv, 2);
    assert_eq!(fabric.stats().totals.drop_no_recv, 2);
}

#[test]
fn bad_handles_complete_with_local_protection() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let forged = UdDest {
        handle: DestHandle(77),
        ..dest
    };
    assert_eq!(a.send(&forged, b"x"), WcStatus::LocalProtection);
    a.port.release_dest(dest.handle).unwrap();
    assert_eq!(
        a.port.release_dest(dest.handle),
        Err(HcaError::InvalidArgument)
    );
    assert_eq!(a.send(&dest, b"x"), WcStatus::LocalProtection);
    assert_eq!(a.port.stats().bad_send, 2);
    // A freed handle number is reused.
    assert_eq!(a.resolve(b.gid()), Ok(dest.handle));
    assert_eq!(
        a.resolve(Gid::from_parts(1, 2)),
        Err(PathError::Unreachable)
    );
}

#[test]
fn loss_at_one_drops_everything() {
    let fabric = SimFabric::new(faults(1.0, 0.0, 0.0, 0.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for _ in 0..20 {
        assert_eq!(a.send(&dest, b"gone"), WcStatus::Success);
    }
    assert!(b.take_payloads().is_empty());
    assert_eq!(b.port.stats().fault_loss, 20);
    assert_eq!(fabric.stats().totals.fault_loss, 20);
}

#[test]
fn corruption_at_one_fails_every_icrc() {
    let fabric = SimFabric::new(faults(0.0, 0.0, 0.0, 1.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for _ in 0..20 {
        a.send(&dest, b"bad");
    }
    assert!(b.take_payloads().is_empty());
    assert_eq!(b.port.stats().drop_icrc, 20);
    assert_eq!(b.port.posted_recvs(), 64);
}

#[test]
fn duplication_at_one_delivers_twice() {
    let fabric = SimFabric::new(faults(0.0, 1.0, 0.0, 0.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for i in 0..10u8 {
        a.send(&dest, &[i; 8]);
    }
    let got = b.take_payloads();
    let want: Vec<Vec<u8>> = (0..10u8).flat_map(|i| [vec![i; 8], vec![i; 8]]).collect();
    assert_eq!(got, want);
    assert_eq!(b.port.stats().fault_dup, 10);
    assert_eq!(b.port.stats().rx_packets, 20);
}

#[test]
fn reorder_at_one_holds_every_packet_but_loses_none() {
    let fabric = SimFabric::new(faults(0.0, 0.0, 1.0, 0.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for i in 0..30u8 {
        a.post(&dest, 4, &[i]);
    }
    assert_eq!(fabric.stats().held, 1, "the last one is still held");
    assert_eq!(fabric.drain_held(), 1);
    assert_eq!(fabric.drain_held(), 0);
    let got = b.take_payloads();
    assert_eq!(got.len(), 30);
    assert_eq!(b.port.stats().fault_reorder, 30);
}

#[test]
fn reorder_swaps_a_held_packet_with_the_next_one() {
    let fabric = SimFabric::new(faults(0.0, 0.0, 1.0, 0.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    a.post(&dest, 4, b"frst");
    fabric.set_faults(FaultConfig::NONE);
    a.post(&dest, 4, b"scnd");
    assert_eq!(b.take_payloads(), [b"scnd".to_vec(), b"frst".to_vec()]);
    // Polling any CQ releases a held packet.
    fabric.set_faults(faults(0.0, 0.0, 1.0, 0.0));
    a.send(&dest, b"old!");
    assert_eq!(fabric.stats().held, 0, "poll_cq released it");
    assert_eq!(b.take_payloads(), [b"old!".to_vec()]);
}

#[test]
fn held_packets_are_released_by_flush_and_poll() {
    let fabric = SimFabric::new(faults(0.0, 0.0, 1.0, 0.0));
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    a.post(&dest, 4, b"held");
    assert_eq!(fabric.stats().held, 1);
    a.port.flush().unwrap();
    assert_eq!(fabric.stats().held, 0);
    a.post(&dest, 4, b"next");
    assert_eq!(fabric.stats().held, 1);
    assert_eq!(b.take_payloads(), [b"held".to_vec(), b"next".to_vec()]);
    // A held packet whose receiver leaves is counted, not stuck.
    a.post(&dest, 4, b"lost");
    drop(b);
    let stats = fabric.stats();
    assert_eq!((stats.held, stats.held_orphaned), (0, 1));
    a.port.flush().unwrap();
}

/// Sends `n` numbered packets from `a` to `b` in bursts of 8, then returns
/// what arrived (packet numbers) and the receiver's counters.
fn run(config: FaultConfig, n: u16) -> (Vec<u16>, verbs_shim::sim::PortStats) {
    let fabric = SimFabric::new(config);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let mut got = Vec::new();
    for burst in (0..n).collect::<Vec<_>>().chunks(8) {
        for &i in burst {
            a.post(&dest, 2, &i.to_be_bytes());
        }
        a.poll();
        got.extend(
            b.take_payloads()
                .iter()
                .map(|p| u16::from_be_bytes([p[0], p[1]])),
        );
    }
    fabric.drain_held();
    got.extend(
        b.take_payloads()
            .iter()
            .map(|p| u16::from_be_bytes([p[0], p[1]])),
    );
    (got, b.port.stats())
}

#[test]
fn faults_at_five_percent_are_about_five_percent() {
    const N: u16 = 4000;
    // Expect 200 of 4000; the bounds are more than five standard deviations.
    let near = |x: u64| (130..=270).contains(&x);

    let (got, s) = run(faults(0.05, 0.0, 0.0, 0.0), N);
    assert!(near(s.fault_loss), "loss {}", s.fault_loss);
    assert_eq!(got.len() as u64, u64::from(N) - s.fault_loss);

    let (got, s) = run(faults(0.0, 0.0, 0.0, 0.05), N);
    assert!(near(s.drop_icrc), "corrupt {}", s.drop_icrc);
    assert_eq!(got.len() as u64, u64::from(N) - s.drop_icrc);

    let (got, s) = run(faults(0.0, 0.05, 0.0, 0.0), N);
    assert!(near(s.fault_dup), "dup {}", s.fault_dup);
    assert_eq!(got.len() as u64, u64::from(N) + s.fault_dup);

    let (got, s) = run(faults(0.0, 0.0, 0.05, 0.0), N);
    assert!(near(s.fault_reorder), "reorder {}", s.fault_reorder);
    assert_eq!(got.len(), usize::from(N));
    let swaps = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(swaps > 0);
}

#[test]
fn reorder_never_loses_or_invents_a_packet() {
    for seed in 0..8 {
        let config = FaultConfig::new(seed, 0.0, 0.0, 0.5, 0.0).unwrap();
        let (mut got, s) = run(config, 500);
        assert!(s.fault_reorder > 100);
        assert_ne!(got, (0..500).collect::<Vec<_>>(), "some packets moved");
        got.sort_unstable();
        assert_eq!(got, (0..500).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn same_seed_same_outcome() {
    let config = FaultConfig::new(99, 0.1, 0.1, 0.1, 0.1).unwrap();
    let first = run(config, 1000);
    let second = run(config, 1000);
    assert_eq!(first, second);
    let other = run(
        FaultConfig {
            seed: 100,
            ..config
        },
        1000,
    );
    assert_ne!(first.0, other.0);
}

#[test]
fn notifier_fires_once_per_arm() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fired);
    b.port.set_notifier(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));

    a.send(&dest, b"unarmed");
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    assert!(b.port.arm_cq().unwrap(), "a completion is already waiting");
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    b.poll();
    assert!(!b.port.arm_cq().unwrap());
    a.send(&dest, b"one");
    a.send(&dest, b"two");
    assert_eq!(fired.load(Ordering::SeqCst), 1, "once, then disarmed");
    b.poll();
    assert!(!b.port.arm_cq().unwrap());
    b.port.resolve(a.gid()).unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 2, "any completion counts");
    b.port.set_notifier(None);
    b.poll();
    assert!(!b.port.arm_cq().unwrap());
    a.send(&dest, b"quiet");
    assert_eq!(fired.load(Ordering::SeqCst), 2);
}

#[test]
fn notifier_may_call_back_into_the_fabric() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let inner = fabric.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    b.port.set_notifier(Some(Arc::new(move || {
        seen2.store(inner.stats().totals.rx_packets as usize, Ordering::SeqCst);
    })));
    b.port.arm_cq().unwrap();
    a.send(&dest, b"x");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn two_threads_send_through_one_fabric() {
    const PER_THREAD: u16 = 200;
    let fabric = SimFabric::new(FaultConfig::NONE);
    let layout = SlotLayout {
        tx_count: 8,
        rx_count: 512,
        slot_size: 256,
    };
    let mut c = Node::new(&fabric, PortConfig::with_layout(3, PKey::DEFAULT, layout));
    let c_gid = c.gid();
    let c_qpn = c.qpn();
    let senders: Vec<_> = (1..=2u16)
        .map(|n| {
            let fabric = fabric.clone();
            std::thread::spawn(move || {
                let mut me = Node::local(&fabric, n);
                let dest = UdDest {
                    handle: me.resolve(c_gid).unwrap(),
                    qpn: c_qpn,
                    qkey: QKey::IPOIB_DEFAULT,
                };
                for i in 0..PER_THREAD {
                    let [hi, lo] = i.to_be_bytes();
                    assert_eq!(me.send(&dest, &[n as u8, hi, lo]), WcStatus::Success);
                }
                me.port.stats().tx_packets
            })
        })
        .collect();
    for s in senders {
        assert_eq!(s.join().unwrap(), u64::from(PER_THREAD));
    }
    let got = c.take_payloads();
    assert_eq!(got.len(), 2 * usize::from(PER_THREAD));
    for n in 1..=2u8 {
        let seq: Vec<u16> = got
            .iter()
            .filter(|p| p[0] == n)
            .map(|p| u16::from_be_bytes([p[1], p[2]]))
            .collect();
        assert_eq!(
            seq,
            (0..PER_THREAD).collect::<Vec<_>>(),
            "sender {n} in order"
        );
    }
    let stats = fabric.stats();
    assert_eq!(stats.ports, 1, "the senders left");
    assert_eq!(stats.totals.tx_packets, 2 * u64::from(PER_THREAD));
}

#[test]
fn close_flushes_posted_receives() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    a.send(&dest, b"before close");
    b.port.close();
    b.port.close();
    assert_eq!(b.port.port_attr().state, verbs_shim::PortState::Down);
    b.poll();
    assert_eq!(b.recvs.len(), 1, "queued completions survive the close");
    assert_eq!(b.flushed, 63, "every other posted receive comes back");
    assert_eq!(b.port.stats().rx_packets, 1);

    // Afterwards posts complete at once with Flushed, control verbs fail.
    let slot = b.tx.pop().unwrap();
    b.port.post_send(slot, 1, &dest).unwrap();
    assert!(b.port.arm_cq().unwrap());
    b.poll();
    assert_eq!(b.sends.pop_back(), Some(WcStatus::Flushed));
    assert_eq!(b.port.resolve(a.gid()), Err(HcaError::Disconnected));
    assert_eq!(b.port.arm_cq(), Err(HcaError::Disconnected));
    assert_eq!(b.port.poll_cq().unwrap().map(|_| ()), None);

    // Nobody can reach it any more.
    assert!(!fabric.has_port(b.gid()));
    assert_eq!(a.resolve(b.gid()), Err(PathError::Unreachable));
    assert_eq!(a.send(&dest, b"after"), WcStatus::Success);
    assert_eq!(a.port.stats().unroutable, 1);
    assert_eq!(fabric.stats().totals.rx_packets, 1, "its counters stay");
}

#[test]
fn dropping_a_port_detaches_it() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let b_gid = b.gid();
    drop(b);
    assert_eq!(fabric.stats().ports, 1);
    a.send(&dest, b"nobody");
    assert_eq!(a.port.stats().unroutable, 1);
    // The GID and LID are free again; the QPN is not reused.
    let c = Node::local(&fabric, 2);
    assert_eq!(c.gid(), b_gid);
    assert_eq!(c.qpn(), Qpn::new(0x4b).unwrap());
}

#[test]
fn add_port_refuses_bad_configs() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let _a = fabric
        .add_port(PortConfig::local(1, PKey::DEFAULT))
        .unwrap();
    let dup_gid = PortConfig {
        lid: Lid(9),
        ..PortConfig::local(1, PKey::DEFAULT)
    };
    let err = fabric.add_port(dup_gid).unwrap_err();
    assert!(matches!(err, SimError::DuplicateGid(_)));
    let dup_lid = PortConfig {
        lid: Lid(1),
        ..PortConfig::local(2, PKey::DEFAULT)
    };
    assert_eq!(
        fabric.add_port(dup_lid).unwrap_err(),
        SimError::DuplicateLid(Lid(1))
    );
    let small = PortConfig {
        region: Window::new_heap(4096),
        ..PortConfig::local(3, PKey::DEFAULT)
    };
    let err = fabric.add_port(small).unwrap_err();
    assert_eq!(
        err,
        SimError::RegionTooSmall {
            needed: 128 * 4096,
            actual: 4096
        }
    );
    assert!(err.to_string().contains("4096"));
    assert_eq!(
        fabric
            .add_port(PortConfig::local(0, PKey::DEFAULT))
            .unwrap_err(),
        SimError::InvalidLid(Lid(0))
    );
    let mcast_gid = PortConfig {
        gid: mgid(0xffff, 1),
        ..PortConfig::local(4, PKey::DEFAULT)
    };
    assert!(matches!(
        fabric.add_port(mcast_gid),
        Err(SimError::InvalidGid(_))
    ));
    assert_eq!(fabric.stats().ports, 1);
}

#[test]
fn buffers_reach_only_the_layout() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut port = fabric
        .add_port(PortConfig::local(1, PKey::DEFAULT))
        .unwrap();
    let (mut tx, mut rx) = port.take_slots().unwrap();
    let (t, r) = (tx.next().unwrap(), rx.next().unwrap());
    let mut bufs = port.buffers();
    assert_eq!(bufs.tx.slot_size(), 4096);
    assert_eq!(bufs.tx.slot_mut(&t).len(), 4096);
    assert_eq!(bufs.rx.slot(&r).len(), 4096);
    assert_eq!(tx.count() + 1, 64);
    assert_eq!(rx.count() + 1, 64);
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<SimFabric>();
    send::<SimPort>();
}

/// Posts `frame` from a slot whose first bytes are `frame`'s, but sends
/// `head` in their place.
fn post_with_head(node: &mut Node, dest: &UdDest, frame: &[u8], head: &[u8]) {
    let slot = node.tx.pop().expect("a free TX slot");
    node.port.buffers().tx.slot_mut(&slot)[..frame.len()].copy_from_slice(frame);
    node.port
        .post_send_with_head(slot, frame.len(), dest, head)
        .unwrap();
}

#[test]
fn a_send_with_a_head_takes_it_from_the_callers_copy() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let frame: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    // A 64-byte head, a short one, an empty one.
    for head_len in [64usize, 5, 0] {
        let head: Vec<u8> = frame[..head_len].iter().map(|b| !b).collect();
        post_with_head(&mut a, &dest, &frame, &head);
        let got = b.take_payloads();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][..head_len], &head[..]);
        assert_eq!(&got[0][head_len..], &frame[head_len..]);
    }
    // A frame that is all head.
    let head = [0xaa; 40];
    post_with_head(&mut a, &dest, &frame[..40], &head);
    assert_eq!(b.take_payloads(), [head.to_vec()]);
    a.poll();
    assert_eq!(a.sends.len(), 4);
    assert!(a.sends.iter().all(|s| *s == WcStatus::Success));
    // A head over 64 bytes, or longer than the frame, is refused unposted.
    let slot = a.tx.pop().unwrap();
    let err = a
        .port
        .post_send_with_head(slot, 100, &dest, &[0; 65])
        .unwrap_err();
    assert_eq!(err.error, HcaError::InvalidArgument);
    let err = a
        .port
        .post_send_with_head(err.slot, 10, &dest, &[0; 11])
        .unwrap_err();
    assert_eq!(err.error, HcaError::InvalidArgument);
}

#[test]
fn a_held_send_with_a_head_keeps_the_head() {
    // The packet is held back (reorder) and copied out at send time: the
    // copy takes the head from the caller too, and a rewrite of the slot
    // before the held packet goes out changes nothing.
    let fabric = SimFabric::new(faults(0.0, 0.0, 1.0, 0.0));
    let config = PortConfig::local(1, PKey::DEFAULT);
    let (region, layout) = (config.region.clone(), config.layout);
    let mut a = Node::new(&fabric, config);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    let frame = [0x11u8; 100];
    let head = [0x22u8; 64];
    let index = a.tx.last().expect("a free TX slot").index();
    post_with_head(&mut a, &dest, &frame, &head);
    assert_eq!(b.port.stats().fault_reorder, 1, "the packet is held");
    let offset = layout.tx_offset(index).unwrap();
    region.write_bytes(offset, &[0x33; 100]).unwrap();
    fabric.drain_held();
    let got = b.take_payloads();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0][..64], &head[..]);
    assert_eq!(&got[0][64..], &frame[64..]);
}

#[test]
fn completions_reaped_in_a_batch_keep_their_order_and_the_arm_check() {
    let fabric = SimFabric::new(FaultConfig::default());
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    for i in 0..5u8 {
        a.post(&dest, 100, &[i]);
    }
    // The first poll takes all five receives off the fabric at once.
    let first = b.port.poll_cq().unwrap().expect("a receive");
    // Four are still waiting on our side: arming must say so.
    assert!(b.port.arm_cq().unwrap());
    let mut fills = Vec::new();
    let mut next = Some(first);
    while let Some(c) = next {
        match c {
            Completion::Recv { slot, status, .. } => {
                assert_eq!(status, WcStatus::Success);
                fills.push(b.port.buffers().rx.slot(&slot)[GRH_LEN]);
            }
            other => panic!("expected a receive, got {other:?}"),
        }
        next = b.port.poll_cq().unwrap();
    }
    assert_eq!(fills, [0, 1, 2, 3, 4]);
    assert!(!b.port.arm_cq().unwrap(), "nothing left: armed");

    // Closing keeps reaped completions ahead of the flushed receives.
    for i in 0..3u8 {
        a.post(&dest, 100, &[i]);
    }
    assert!(matches!(
        b.port.poll_cq().unwrap(),
        Some(Completion::Recv { .. })
    ));
    b.port.close();
    let mut kinds = Vec::new();
    while let Some(Completion::Recv { status, .. }) = b.port.poll_cq().unwrap() {
        kinds.push(status);
    }
    assert_eq!(&kinds[..2], [WcStatus::Success, WcStatus::Success]);
    assert!(kinds[2..].iter().all(|s| *s == WcStatus::Flushed));
}

/// A sender keeps its route to a GID between sends (saving the lookup),
/// but not across the port behind it going away and another taking its
/// GID: the packet then goes to the new port, or nowhere while there is
/// none.
#[test]
fn a_route_follows_its_gid_to_a_new_port() {
    let fabric = SimFabric::new(FaultConfig::NONE);
    let mut a = Node::local(&fabric, 1);
    let mut b = Node::local(&fabric, 2);
    let dest = a.dest_to(&b);
    assert_eq!(a.send(&dest, b"first"), WcStatus::Success);
    assert_eq!(a.send(&dest, b"second"), WcStatus::Success);
    assert_eq!(
        b.take_payloads(),
        vec![b"first".to_vec(), b"second".to_vec()]
    );

    drop(b);
    assert_eq!(a.send(&dest, b"lost"), WcStatus::Success);
    assert_eq!(a.port.stats().unroutable, 1);

    let mut again = Node::local(&fabric, 2);
    // The new port may get another QPN; address it as the old one was.
    let dest = UdDest {
        qpn: again.qpn(),
        ..dest
    };
    assert_eq!(a.send(&dest, b"third"), WcStatus::Success);
    assert_eq!(again.take_payloads(), vec![b"third".to_vec()]);
    assert_eq!(a.port.stats().unroutable, 1);
}
