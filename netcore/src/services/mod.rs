//! The guest's services on a smoltcp `SocketSet`.
//!
//! | service | port | what it does |
//! |---|---|---|
//! | echo | UDP 7, TCP 7 | sends back what arrives (RFC 862) |
//! | http | TCP 80 | `GET /`: HTML status page; `GET /stats`: `key value` lines |
//! | discard | TCP 9 | reads, counts and SHA-256s everything (RFC 863) |
//! | chargen | TCP 19 | sends the RFC 864 pattern as fast as the socket takes it |
//!
//! Each TCP service starts with [`LISTENERS`] sockets on its port; a
//! socket listens again once its connection is over. When clients come in a
//! burst, the pool grows: it keeps [`SPARE_LISTENERS`] more listening than
//! the SYNs it had to hold back last time, paid for out of the TCP memory
//! budget (`tcp-budget=`, see `NetConfig`). A SYN that finds no listening
//! socket is dropped in silence by the [`SynGate`] instead of being reset,
//! so the client retries and is served; `ServiceStats::syn_deferred`
//! counts them. Sockets added for a burst are given back
//! [`POOL_LINGER`] after the last SYN was held back. A connection whose peer vanishes is dropped after
//! [`SERVER_TIMEOUT`] (keep-alive probes every [`KEEP_ALIVE`] find it); a
//! peer that stays connected and silent keeps its socket.
//!
//! ```no_run
//! # use netcore::{NetConfig, ServiceHost};
//! # use smoltcp::iface::SocketSet;
//! # let device_stats = ();
//! let config = NetConfig::parse("ip=10.77.0.2/24 services=echo,http")?;
//! let mut sockets = SocketSet::new(Vec::new());
//! let mut host = ServiceHost::new(&config, &mut sockets);
//! loop {
//!     // ipoib::poll_interface(&mut iface, now, &mut device, &mut sockets);
//!     host.poll(&mut sockets, &device_stats);
//! #   break;
//! }
//! # Ok::<(), netcore::ConfigError>(())
//! ```

mod chargen;
mod discard;
mod echo;
mod gate;
mod gated;
mod http;
mod pages;
mod pool;
mod stats;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};

use crate::config::NetConfig;
use crate::status::StatusSource;
use chargen::ChargenConn;
use discard::DiscardConn;
use echo::EchoConn;
use http::HttpConn;
use pages::PageContext;
use pool::{Pool, Resizable};

pub use discard::{DiscardMode, DiscardReport};
pub use gate::SynGate;
pub use gated::{Gated, GatedRx};
pub use stats::ServiceStats;

pub const ECHO_PORT: u16 = 7;
pub const DISCARD_PORT: u16 = 9;
pub const CHARGEN_PORT: u16 = 19;
pub const HTTP_PORT: u16 = 80;

/// Listening sockets per TCP service: how many clients each serves at once.
pub const LISTENERS: usize = 4;
/// The busy direction of chargen (send).
pub const BULK_BUFFER: usize = 64 * 1024;
/// Discard's receive buffer: the window it offers (smoltcp scales the
/// window past 64 KiB by itself). Sized for the bandwidth-delay product of
/// the hosted fabric, where a receiver may be off the CPU for a while: a
/// larger window means larger batches per wake-up (64 KiB → 256 KiB about
/// doubled hosted TCP throughput). Bounded by the receive slots: what is
/// in flight must fit the slots the receiver has posted, or the fabric
/// drops segments and smoltcp recovers slowly (512 KiB against 256 slots
/// stalled). 192 KiB is 96 segments of IPoIB's 2004-byte MSS, under the
/// 128 slots of the in-process harness and the 256 of the hosted and
/// unikernel guests.
pub const DISCARD_RX_BUFFER: usize = 192 * 1024;
/// The largest TCP window [`tcp_window`] gives.
pub const MAX_TCP_WINDOW: usize = 4 << 20;

/// The TCP window (discard's receive buffer, a sender's send buffer) for a
/// device with `rx_slots` receive slots: three quarters of them, a segment
/// of at most 2 KiB each (IPoIB's MTU is 2044 at IB MTU 2048), so what is
/// in flight always finds a posted slot (a window past the slots stalled:
/// 512 KiB against 256). 128 slots (the in-process harness) give
/// [`DISCARD_RX_BUFFER`]; the hosted guest's 1024 give 1.5 MiB, which
/// about doubled hosted TCP (three processes on two CPUs: the larger
/// window lets the sender go on while the receiver is off the CPU).
pub fn tcp_window(rx_slots: usize) -> usize {
    (rx_slots * 3 / 4 * 2048).clamp(64 * 1024, MAX_TCP_WINDOW)
}
/// The idle direction of discard and chargen.
pub const IDLE_BUFFER: usize = 1024;
/// Each direction of a TCP echo connection.
pub const ECHO_BUFFER: usize = 8 * 1024;
/// Request heads are at most [`crate::http::MAX_HEAD`] bytes.
pub const HTTP_RX_BUFFER: usize = 4 * 1024;
/// Responses are queued in pieces, so this only bounds each piece.
pub const HTTP_TX_BUFFER: usize = 16 * 1024;
/// UDP echo: datagrams queued each way, and their total payload (room for
/// four of the largest).
pub const UDP_ECHO_PACKETS: usize = 16;
pub const UDP_ECHO_BUFFER: usize = 64 * 1024;
/// Largest datagram UDP echo answers: the largest IPv4 datagram the stack
/// reassembles and fragments, less the IPv4 and UDP headers.
pub const UDP_ECHO_MAX: usize = crate::MAX_IPV4_DATAGRAM - 20 - 8;
/// Listening sockets a TCP service keeps beyond the SYNs it last had to
/// hold back, while its budget lasts.
pub const SPARE_LISTENERS: usize = 4;
/// How long sockets added for a burst are kept after the last SYN that
/// found none free.
pub const POOL_LINGER: Duration = Duration::from_secs(30);
/// A connected peer that stops answering is given up on after this.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(120);
/// Keep-alive probes on idle server connections.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Finished discard connections remembered for [`ServiceHost::pop_discard_report`].
pub const DISCARD_REPORTS: usize = 16;

/// The enabled services' sockets and state. Its sockets must stay in the
/// `SocketSet` it was created with; [`ServiceHost::remove`] takes them out.
pub struct ServiceHost {
    config: NetConfig,
    udp_echo: Option<SocketHandle>,
    tcp_echo: Option<Pool<EchoConn>>,
    http: Option<Pool<HttpConn>>,
    discard: Option<Pool<DiscardConn>>,
    chargen: Option<Pool<ChargenConn>>,
    stats: ServiceStats,
    discard_reports: VecDeque<DiscardReport>,
    discard_mode: DiscardMode,
    /// Echo copies through here.
    scratch: Vec<u8>,
    /// Holds back SYNs to ports with no listening socket.
    gate: SynGate,
    /// Socket buffer bytes the pools may still add.
    budget_left: usize,
    /// The last time a SYN was held back (pools linger after it).
    last_deferral: Option<Instant>,
}

impl ServiceHost {
    /// Adds the sockets of `config.services` to `sockets`, listening, with
    /// discard's window [`DISCARD_RX_BUFFER`].
    pub fn new(config: &NetConfig, sockets: &mut SocketSet<'static>) -> ServiceHost {
        ServiceHost::with_window(config, sockets, DISCARD_RX_BUFFER)
    }

    /// [`new`](ServiceHost::new) with discard offering `window` bytes (see
    /// [`tcp_window`]).
    pub fn with_window(
        config: &NetConfig,
        sockets: &mut SocketSet<'static>,
        window: usize,
    ) -> ServiceHost {
        let s = config.services;
        ServiceHost {
            config: config.clone(),
            udp_echo: s.echo.then(|| echo::udp_socket(sockets)),
            tcp_echo: s
                .echo
                .then(|| Pool::new(sockets, LISTENERS, ECHO_PORT, ECHO_BUFFER, ECHO_BUFFER)),
            http: s.http.then(|| {
                Pool::new(
                    sockets,
                    LISTENERS,
                    HTTP_PORT,
                    HTTP_RX_BUFFER,
                    HTTP_TX_BUFFER,
                )
            }),
            // The base sockets offer the bulk window; a burst's get the
            // small one, so the budget pays for many more of them.
            discard: s.discard.then(|| {
                Pool::new(sockets, LISTENERS, DISCARD_PORT, window, IDLE_BUFFER)
                    .with_burst_rx(DISCARD_RX_BUFFER)
            }),
            chargen: s
                .chargen
                .then(|| Pool::new(sockets, LISTENERS, CHARGEN_PORT, IDLE_BUFFER, BULK_BUFFER)),
            stats: ServiceStats::default(),
            discard_reports: VecDeque::new(),
            discard_mode: DiscardMode::default(),
            scratch: vec![0; UDP_ECHO_MAX],
            gate: SynGate::new(),
            budget_left: config.tcp_budget,
            last_deferral: None,
        }
    }

    /// Opens the gate for as many SYNs per service as it has listening
    /// sockets; call before each `Interface::poll` and hand the gate to the
    /// device (`SynGate::admit` on every received packet).
    pub fn gate(&mut self, sockets: &SocketSet<'_>) -> &mut SynGate {
        let pools: [Option<&dyn Resizable>; 4] = [
            self.tcp_echo.as_ref().map(|p| p as &dyn Resizable),
            self.http.as_ref().map(|p| p as &dyn Resizable),
            self.discard.as_ref().map(|p| p as &dyn Resizable),
            self.chargen.as_ref().map(|p| p as &dyn Resizable),
        ];
        for pool in pools.iter().flatten() {
            self.gate.set(pool.port(), pool.listening(sockets));
        }
        let peers = self.gate.clear_peers();
        for pool in pools.into_iter().flatten() {
            pool.add_peers(sockets, peers);
        }
        &mut self.gate
    }

    /// Grows each pool to meet the SYNs it held back, and gives back what a
    /// burst added once [`POOL_LINGER`] has passed without one. Call after
    /// [`ServiceHost::poll`].
    pub fn resize(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let linger_over = self.last_deferral.is_none_or(|t| now >= t + POOL_LINGER);
        let mut deferred_any = false;
        let pools: [Option<&mut dyn Resizable>; 4] = [
            self.tcp_echo.as_mut().map(|p| p as &mut dyn Resizable),
            self.http.as_mut().map(|p| p as &mut dyn Resizable),
            self.discard.as_mut().map(|p| p as &mut dyn Resizable),
            self.chargen.as_mut().map(|p| p as &mut dyn Resizable),
        ];
        let mut pools: [(Option<&mut dyn Resizable>, usize); 4] = pools.map(|p| (p, 0));
        for (pool, demand) in pools.iter_mut() {
            if let Some(pool) = pool {
                *demand = self.gate.take_deferred(pool.port());
                deferred_any |= *demand > 0;
            }
        }
        // Idle sockets a burst added linger, in case it comes back, unless
        // another service's clients are waiting for the budget they hold:
        // then they are given back first, so one service's burst cannot
        // starve the next one's.
        for (pool, demand) in pools.iter_mut() {
            if let Some(pool) = pool {
                if *demand == 0 && (linger_over || deferred_any) {
                    pool.shrink(sockets, SPARE_LISTENERS, &mut self.budget_left);
                }
            }
        }
        for (pool, demand) in pools.iter_mut() {
            if let Some(pool) = pool {
                let want = SPARE_LISTENERS + *demand;
                let listening = pool.listening(sockets);
                if listening < want {
                    pool.grow(sockets, want - listening, &mut self.budget_left);
                }
            }
        }
        if deferred_any {
            self.last_deferral = Some(now);
        }
        self.stats.syn_deferred = self.gate.deferred;
        self.stats.syn_duplicates = self.gate.duplicates;
    }

    /// Socket buffer bytes the pools may still add (`tcp-budget=` less what
    /// bursts have added and not given back).
    pub fn budget_left(&self) -> usize {
        self.budget_left
    }

    /// Sockets per TCP service, in the order echo, http, discard, chargen
    /// (0 for a service that is off).
    pub fn pool_sizes(&self) -> [usize; 4] {
        [
            self.tcp_echo.as_ref().map_or(0, |p| p.len()),
            self.http.as_ref().map_or(0, |p| p.len()),
            self.discard.as_ref().map_or(0, |p| p.len()),
            self.chargen.as_ref().map_or(0, |p| p.len()),
        ]
    }

    /// Serves whatever is waiting on every service's sockets; call it after
    /// each `Interface::poll`. `status` supplies the device counters the
    /// status pages show. Returns true if it did anything (so the caller
    /// should poll the interface again before sleeping).
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, status: &dyn StatusSource) -> bool {
        let mut progress = false;
        let stats = &mut self.stats;
        let scratch = &mut self.scratch[..];
        if let Some(handle) = self.udp_echo {
            let socket = sockets.get_mut::<udp::Socket>(handle);
            progress |= echo::poll_udp(socket, scratch, self.config.ip.broadcast(), stats);
        }
        if let Some(pool) = &mut self.tcp_echo {
            let a = pool.poll(sockets, |s, _| echo::serve_tcp(s, scratch, stats));
            stats.tcp_echo_connections += a.accepted;
            progress |= a.progress;
        }
        if let Some(pool) = &mut self.http {
            let page = PageContext {
                config: &self.config,
                status,
            };
            let a = pool.poll(sockets, |s, c| http::serve(s, c, &page, stats));
            stats.http_connections += a.accepted;
            progress |= a.progress;
        }
        if let Some(pool) = &mut self.discard {
            let (reports, mode) = (&mut self.discard_reports, self.discard_mode);
            let a = pool.poll(sockets, |s, c| discard::serve(s, c, mode, stats, reports));
            stats.discard_connections += a.accepted;
            progress |= a.progress;
        }
        if let Some(pool) = &mut self.chargen {
            let a = pool.poll(sockets, |s, c| chargen::serve(s, c, stats));
            stats.chargen_connections += a.accepted;
            progress |= a.progress;
        }
        progress
    }

    /// What discard does with the data of the connections it serves from
    /// now on ([`DiscardMode::Sha256`] unless set). A benchmark's raw sink
    /// sets [`DiscardMode::Count`].
    pub fn set_discard_mode(&mut self, mode: DiscardMode) {
        self.discard_mode = mode;
    }

    /// Counters since [`ServiceHost::new`].
    pub fn stats(&self) -> ServiceStats {
        self.stats
    }

    /// A new address and gateway (a DHCP lease, or none when it ends): the
    /// status page and the echo service's subnet broadcast follow it.
    pub fn set_address(
        &mut self,
        ip: smoltcp::wire::Ipv4Cidr,
        gateway: Option<smoltcp::wire::Ipv4Address>,
    ) {
        self.config.ip = ip;
        self.config.gateway = gateway;
    }

    /// The configuration the host was made with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The oldest discard connection that finished and was not yet taken
    /// (at most [`DISCARD_REPORTS`] are kept).
    pub fn pop_discard_report(&mut self) -> Option<DiscardReport> {
        self.discard_reports.pop_front()
    }

    /// Every socket the host added.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        let pools = [
            self.tcp_echo
                .as_ref()
                .map(|p| p.handles().collect::<Vec<_>>()),
            self.http.as_ref().map(|p| p.handles().collect()),
            self.discard.as_ref().map(|p| p.handles().collect()),
            self.chargen.as_ref().map(|p| p.handles().collect()),
        ];
        self.udp_echo
            .into_iter()
            .chain(pools.into_iter().flatten().flatten())
    }

    /// Takes the host's sockets out of `sockets` (dropping any connections
    /// without a word to the peers).
    pub fn remove(self, sockets: &mut SocketSet<'_>) {
        for handle in self.handles() {
            sockets.remove(handle);
        }
    }
}

#[cfg(test)]
mod burst_tests;
