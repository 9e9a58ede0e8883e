//! Two in-process guests: 0 (10.77.0.1) runs the clients, 1 (10.77.0.2)
//! runs a `ServiceHost` polled every round.

#![allow(dead_code)]

use std::task::Poll;

use ibguest_testkit::apps::tcp_socket;
use ibguest_testkit::{BoxError, Net};
use ipoib::LinkState;
use netcore::{NetConfig, ServiceHost};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpEndpoint};
use verbs_shim::sim::FaultConfig;

pub const CLIENT: usize = 0;
pub const SERVER: usize = 1;
pub const LIMIT: Duration = Duration::from_secs(30);

pub struct Setup {
    pub net: Net,
    pub host: ServiceHost,
}

impl Setup {
    /// Both links up, a host with all services on guest 1.
    pub fn new() -> Result<Setup, BoxError> {
        Setup::with_config("ip=10.77.0.2/24 name=server-1")
    }

    pub fn with_config(config: &str) -> Result<Setup, BoxError> {
        let mut net = Net::with_guests(2, FaultConfig::NONE)?;
        net.run_until(Duration::from_secs(1), |n| {
            n.guests.iter().all(|g| g.device.link() == LinkState::Up)
        })?;
        let config = NetConfig::parse(config)?;
        assert_eq!(config.ip, net.guests[SERVER].spec.ip);
        let host = ServiceHost::new(&config, &mut net.guests[SERVER].sockets);
        Ok(Setup { net, host })
    }

    pub fn server_endpoint(&self, port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(self.net.guests[SERVER].spec.ipv4()), port)
    }

    /// Runs rounds, polling the host before each, until `done` holds.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Net) -> bool,
    ) -> Result<(), BoxError> {
        let host = &mut self.host;
        self.net.run_until(limit, |net| {
            let g = &mut net.guests[SERVER];
            let stats = g.device.stats();
            host.poll(&mut g.sockets, &stats);
            done(net)
        })
    }

    /// Runs until `client` (polled with guest 0's sockets) is ready.
    pub fn run_client<T>(
        &mut self,
        limit: Duration,
        mut client: impl FnMut(&mut Net) -> Poll<T>,
    ) -> Result<T, BoxError> {
        let mut out = None;
        self.run_until(limit, |net| {
            if let Poll::Ready(v) = client(net) {
                out = Some(v);
            }
            out.is_some()
        })?;
        out.ok_or_else(|| "client did not finish".into())
    }

    /// Connects a plain TCP socket from guest 0 to guest 1's `port`.
    pub fn connect(&mut self, port: u16, local_port: u16) -> Result<SocketHandle, BoxError> {
        let remote = self.server_endpoint(port);
        let g = &mut self.net.guests[CLIENT];
        let mut socket = tcp_socket(64 * 1024);
        socket.connect(g.iface.context(), remote, local_port)?;
        Ok(g.sockets.add(socket))
    }

    /// Sends `request` on a fresh connection to `port`, then reads until the
    /// server closes. Returns everything received.
    pub fn exchange(
        &mut self,
        port: u16,
        local_port: u16,
        request: &[u8],
    ) -> Result<Vec<u8>, BoxError> {
        self.exchange_inner(port, local_port, request, false)
    }

    /// Like [`Setup::exchange`], closing our half once `request` is queued.
    pub fn exchange_half_close(
        &mut self,
        port: u16,
        local_port: u16,
        request: &[u8],
    ) -> Result<Vec<u8>, BoxError> {
        self.exchange_inner(port, local_port, request, true)
    }

    fn exchange_inner(
        &mut self,
        port: u16,
        local_port: u16,
        request: &[u8],
        half_close: bool,
    ) -> Result<Vec<u8>, BoxError> {
        let handle = self.connect(port, local_port)?;
        let mut written = 0;
        let mut received = Vec::new();
        self.run_until(LIMIT, |net| {
            let s = net.guests[CLIENT].sockets.get_mut::<tcp::Socket>(handle);
            while written < request.len() && s.can_send() {
                match s.send_slice(&request[written..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => written += n,
                }
            }
            while s.can_recv() {
                let _ = s.recv(|d| {
                    received.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            let peer_closed = s.state() == tcp::State::CloseWait && !s.can_recv();
            let sent_all = written == request.len() && s.may_send();
            if peer_closed || (half_close && sent_all) {
                s.close();
            }
            written == request.len() && !s.is_active() && !s.is_listening()
        })?;
        self.net.guests[CLIENT].sockets.remove(handle);
        Ok(received)
    }

    /// Runs for `span` of virtual time, polling the host.
    pub fn run_for(&mut self, span: Duration) -> Result<(), BoxError> {
        let end = self.net.now + span;
        self.run_until(span + Duration::from_secs(1), |net| net.now >= end)
    }
}
