//! DHCP over IPoIB (RFC 4390) in process, on the sim fabric through real
//! front/back channels: a `NetStack` with `ip=dhcp` gets its seat's address
//! from netcore's `ServerPort` (the server the back end runs), then pings a
//! neighbour; the lease is renewed; a client at a port with no lease gets
//! nothing; and tshark decodes the captured exchange with hardware type 32.

use std::collections::HashMap;
use std::task::Poll;

use ibguest_testkit::tshark;
use ibguest_testkit::{connect_channel, BoxError, GuestSpec, SharedCapture, SimBack, SimFront};
use ipoib::{IpoibConfig, IpoibDevice, LinkState};
use netcore::clients::PingConfig;
use netcore::dhcp::{SeatLease, ServerPort, State};
use netcore::{NetConfig, NetStack, Pinger};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use verbs_shim::sim::{FaultConfig, SimFabric};
use verbs_shim::Qpn;

const SERVER: Ipv4Address = Ipv4Address::new(10, 77, 0, 254);
const ROUTER: Ipv4Address = Ipv4Address::new(10, 77, 0, 1);
const LEASE_SECS: u32 = 20;

struct Stack {
    stack: NetStack<SimFront>,
    back: SimBack,
}

/// A server, DHCP clients and static neighbours on one fabric, on a
/// virtual clock.
struct World {
    fabric: SimFabric,
    now: Instant,
    server: Box<ServerPort<SimFront, SharedCapture>>,
    server_back: SimBack,
    stacks: Vec<Box<Stack>>,
    /// The lease of each client port, as the back end's seat table.
    leases: HashMap<Qpn, SeatLease>,
}

impl World {
    fn new(faults: FaultConfig, capture: SharedCapture) -> Result<World, BoxError> {
        let fabric = SimFabric::new(faults);
        let (_, server_back, front) = connect_channel(&fabric, &GuestSpec::new(254))?;
        let device =
            IpoibDevice::with_capture(front, IpoibConfig::new(Ipv4Cidr::new(SERVER, 24)), capture)?;
        Ok(World {
            fabric,
            now: Instant::from_millis(1),
            server: Box::new(ServerPort::with_device(device)),
            server_back,
            stacks: Vec::new(),
            leases: HashMap::new(),
        })
    }

    /// Adds a stack at fabric port `port` with `config`; returns its index.
    fn add(&mut self, port: u8, config: &str) -> Result<usize, BoxError> {
        let (_, back, front) = connect_channel(&self.fabric, &GuestSpec::new(port))?;
        let config = NetConfig::parse(config)?;
        let stack = NetStack::new(front, &config, self.now, u64::from(port))?;
        self.stacks.push(Box::new(Stack { stack, back }));
        Ok(self.stacks.len() - 1)
    }

    /// The seat behind stack `i`'s port gets `address`.
    fn lease(&mut self, i: usize, name: &str, address: Ipv4Cidr) {
        let qpn = self.stacks[i].stack.device.hw_addr().qpn;
        let lease = SeatLease {
            name: name.into(),
            address,
            router: Some(ROUTER),
            lease_secs: LEASE_SECS,
        };
        self.leases.insert(qpn, lease);
    }

    fn round(&mut self) -> Result<bool, BoxError> {
        let mut busy = false;
        for s in &mut self.stacks {
            busy |= s.stack.poll(self.now)?;
            busy |= s.back.service()? > 0;
        }
        let leases = &self.leases;
        let mut lookup = |src: &ipoib::DatagramSource| leases.get(&src.qpn).cloned();
        busy |= self.server.poll(self.now, &mut lookup)?;
        busy |= self.server_back.service()? > 0;
        self.fabric.drain_held();
        Ok(busy)
    }

    fn advance(&mut self, busy: bool) {
        let now = self.now;
        let step = Duration::from_micros(20);
        if busy {
            self.now += step;
            return;
        }
        let next = self
            .stacks
            .iter_mut()
            .filter_map(|s| s.stack.next_deadline(now))
            .chain(self.server.device.poll_at())
            .min();
        self.now = match next {
            Some(t) if t > now => t.min(now + Duration::from_millis(100)),
            _ => now + step,
        };
    }

    fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut World) -> bool,
    ) -> Result<(), BoxError> {
        let deadline = self.now + limit;
        while !done(self) {
            if self.now > deadline {
                return Err(format!("not done within {limit} of virtual time").into());
            }
            let busy = self.round()?;
            self.advance(busy);
        }
        Ok(())
    }

    fn ping(&mut self, from: usize, target: Ipv4Address) -> Result<usize, BoxError> {
        let mut config = PingConfig::new(target);
        config.count = 3;
        config.interval = Duration::from_millis(100);
        let mut pinger = Pinger::new(&mut self.stacks[from].stack.sockets, config)?;
        let mut answered = None;
        self.run_until(Duration::from_secs(10), |w| {
            let now = w.now;
            if let Poll::Ready(r) = pinger.poll(&mut w.stacks[from].stack.sockets, now) {
                answered = Some(r.map(|r| r.received()));
            }
            answered.is_some()
        })?;
        Ok(answered.ok_or("no report")??)
    }
}

fn cidr(last: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, last), 24)
}

/// A world with the DHCP client (stack 0, lease 10.77.0.2/24) and a static
/// neighbour (stack 1, 10.77.0.3), links up.
fn world(faults: FaultConfig, capture: SharedCapture) -> Result<World, BoxError> {
    let mut w = World::new(faults, capture)?;
    w.add(2, "ip=dhcp services=none name=dhcp-client")?;
    w.add(3, "ip=10.77.0.3/24 name=neighbour")?;
    w.lease(0, "g2", cidr(2));
    w.run_until(Duration::from_secs(1), |w| {
        w.stacks
            .iter()
            .all(|s| s.stack.device.link() == LinkState::Up)
            && w.server.device.link() == LinkState::Up
    })?;
    Ok(w)
}

fn bound(w: &World, i: usize) -> bool {
    w.stacks[i]
        .stack
        .dhcp
        .as_ref()
        .is_some_and(|d| d.state() == State::Bound)
}

#[test]
fn a_dhcp_guest_gets_its_seat_address_then_pings() -> Result<(), BoxError> {
    let mut w = world(FaultConfig::NONE, SharedCapture::none())?;
    assert!(!w.stacks[0].stack.has_address());
    // Without an address the link came up silently: no announcement of
    // 0.0.0.0.
    assert_eq!(w.stacks[0].stack.device.stats().arp.gratuitous_sent, 0);
    w.run_until(Duration::from_secs(2), |w| bound(w, 0))?;
    let s = &w.stacks[0].stack;
    // The leased address is announced once.
    assert_eq!(s.device.stats().arp.gratuitous_sent, 1);
    assert_eq!(s.config().ip, cidr(2));
    assert_eq!(s.config().gateway, Some(ROUTER));
    assert_eq!(s.device.ipv4_cidr(), cidr(2));
    assert_eq!(s.iface.ipv4_addr(), Some(Ipv4Address::new(10, 77, 0, 2)));
    let stats = w.server.stats();
    assert_eq!((stats.offers, stats.acks, stats.naks), (1, 1, 0));
    let client = s.dhcp.as_ref().map(|d| d.stats()).unwrap_or_default();
    assert_eq!((client.sent, client.leases, client.malformed), (2, 1, 0));
    // The leased address works both ways: the neighbour answers, which
    // needs ARP for 10.77.0.2 answered by the DHCP guest.
    assert_eq!(w.ping(0, Ipv4Address::new(10, 77, 0, 3))?, 3);
    assert_eq!(w.ping(1, Ipv4Address::new(10, 77, 0, 2))?, 3);
    Ok(())
}

#[test]
fn the_lease_is_renewed_by_unicast_before_it_runs_out() -> Result<(), BoxError> {
    let mut w = world(FaultConfig::NONE, SharedCapture::none())?;
    w.run_until(Duration::from_secs(2), |w| bound(w, 0))?;
    // Three lease times: renewed at each T1 (10 s), never lost.
    let end = w.now + Duration::from_secs(3 * u64::from(LEASE_SECS));
    w.run_until(Duration::from_secs(70), |w| {
        assert!(w.stacks[0].stack.has_address(), "the address was lost");
        w.now >= end
    })?;
    let stats = w.server.stats();
    assert!(stats.acks >= 6, "{stats:?}");
    assert_eq!(stats.naks, 0);
    // Renewals were unicast: the server's device learned the client by ARP.
    assert_eq!(w.stacks[0].stack.config().ip, cidr(2));
    assert_eq!(w.ping(0, Ipv4Address::new(10, 77, 0, 3))?, 3);
    Ok(())
}

#[test]
fn the_lease_is_lost_when_the_server_forgets_the_seat() -> Result<(), BoxError> {
    let mut w = world(FaultConfig::NONE, SharedCapture::none())?;
    w.run_until(Duration::from_secs(2), |w| bound(w, 0))?;
    // The seat loses its address (the back end no longer has it): renewals
    // and rebinding go unanswered, and at expiry the address goes.
    w.leases.clear();
    w.run_until(Duration::from_secs(u64::from(LEASE_SECS) + 1), |w| {
        !w.stacks[0].stack.has_address()
    })?;
    assert!(w.stacks[0].stack.iface.ipv4_addr().is_none());
    assert!(w.stacks[0]
        .stack
        .device
        .ipv4_cidr()
        .address()
        .is_unspecified());
    assert!(w.server.stats().no_lease >= 2);
    // And it is discovering again; a seat that gets its address back is
    // bound again.
    w.lease(0, "g2", cidr(7));
    w.run_until(Duration::from_secs(70), |w| bound(w, 0))?;
    assert_eq!(w.stacks[0].stack.config().ip, cidr(7));
    Ok(())
}

#[test]
fn a_port_without_a_lease_gets_no_offer() -> Result<(), BoxError> {
    let mut w = world(FaultConfig::NONE, SharedCapture::none())?;
    w.add(4, "ip=dhcp services=none name=stranger")?;
    w.run_until(Duration::from_secs(1), |w| {
        w.stacks[2].stack.device.link() == LinkState::Up
    })?;
    w.run_until(Duration::from_secs(20), |w| {
        bound(w, 0) && w.now.secs() > 15
    })?;
    assert!(!w.stacks[2].stack.has_address());
    let stranger = w.stacks[2]
        .stack
        .dhcp
        .as_ref()
        .map(|d| d.stats())
        .unwrap_or_default();
    // DISCOVERs at about 0, 4 and 12 s; the OFFERs to the other client
    // (broadcast) reached it and were ignored as not its own.
    assert!(stranger.sent >= 3, "{stranger:?}");
    assert_eq!(stranger.leases, 0);
    assert!(w.server.stats().no_lease >= 3);
    Ok(())
}

#[test]
fn lost_offers_and_acks_are_retransmitted() -> Result<(), BoxError> {
    let faults = FaultConfig {
        seed: 11,
        loss: 0.4,
        ..FaultConfig::NONE
    };
    let mut w = world(faults, SharedCapture::none())?;
    w.run_until(Duration::from_secs(300), |w| bound(w, 0))?;
    let client = w.stacks[0]
        .stack
        .dhcp
        .as_ref()
        .map(|d| d.stats())
        .unwrap_or_default();
    assert!(
        client.sent > 2,
        "no retransmission under 40% loss: {client:?}"
    );
    assert_eq!(w.stacks[0].stack.config().ip, cidr(2));
    Ok(())
}

/// Wireshark decodes the exchange as DHCP over IPoIB: hardware type 32,
/// length 0, the BROADCAST flag and the client identifier.
#[test]
fn tshark_decodes_dhcp_with_hardware_type_32() -> Result<(), BoxError> {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dhcp.pcap");
    let capture = SharedCapture::create(&path)?;
    let mut w = world(FaultConfig::NONE, capture.clone())?;
    w.run_until(Duration::from_secs(2), |w| bound(w, 0))?;
    capture.flush()?;
    let hw: String = w.stacks[0]
        .stack
        .device
        .hw_addr()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Wireshark 4 names the BOOTP fields dhcp.* (bootp.* before 3.0).
    let text = tshark::fields(
        &path,
        "dhcp.hw.type == 32",
        &[
            "dhcp.hw.type",
            "dhcp.hw.len",
            "dhcp.flags.bc",
            "dhcp.option.dhcp",
            "dhcp.ip.your",
            "dhcp.client_id.duid_type",
            "dhcp.client_id.duid_ll_hw_type",
            "dhcp.client_id.link_layer_address",
        ],
    )?;
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    // DISCOVER, OFFER, REQUEST, ACK.
    let kinds: Vec<&str> = lines.iter().map(|f| f[3]).collect();
    assert_eq!(kinds, ["1", "2", "3", "5"], "{text}");
    for f in &lines {
        assert_eq!(f[0], "0x20", "hardware type: {text}");
        assert_eq!(f[1], "0", "hardware length: {text}");
        assert_eq!(f[2], "1", "broadcast flag: {text}");
        // Option 61 in every message, a DUID-LL of the client's 20-byte
        // IPoIB address (the server echoes it).
        assert_eq!(&f[5..8], &["3", "32", hw.as_str()], "client id: {text}");
    }
    assert_eq!(lines[3][4], "10.77.0.2", "{text}");
    Ok(())
}

/// Garbage to port 67 is dropped and counted by the server, which goes on
/// serving.
#[test]
fn malformed_dhcp_is_dropped_and_counted() -> Result<(), BoxError> {
    use smoltcp::socket::udp;
    use smoltcp::wire::IpEndpoint;
    let mut w = world(FaultConfig::NONE, SharedCapture::none())?;
    let buffer =
        || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0u8; 8 * 2048]);
    let mut socket = udp::Socket::new(buffer(), buffer());
    socket.bind(68)?;
    let handle = w.stacks[1].stack.sockets.add(socket);
    let mut good = vec![0u8; 240];
    good[0] = 1;
    good[1] = 32;
    good[236..240].copy_from_slice(&[99, 130, 83, 99]);
    let bad_magic = {
        let mut b = good.clone();
        b[236] = 0;
        b
    };
    let cut_option = {
        let mut b = good.clone();
        b.extend_from_slice(&[53, 1, 1, 61, 40, 0xff]);
        b
    };
    let no_type = {
        let mut b = good.clone();
        b.push(255);
        b
    };
    let junk: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
    let payloads = [
        vec![],
        good[..239].to_vec(),
        bad_magic,
        cut_option,
        no_type,
        junk,
    ];
    let to = IpEndpoint::new(smoltcp::wire::IpAddress::Ipv4(SERVER), 67);
    for p in &payloads {
        w.stacks[1]
            .stack
            .sockets
            .get_mut::<udp::Socket>(handle)
            .send_slice(p, to)?;
    }
    w.run_until(Duration::from_secs(5), |w| {
        w.server.stats().malformed == payloads.len() as u64 && bound(w, 0)
    })?;
    assert_eq!(w.server.stats().acks, 1);
    Ok(())
}
