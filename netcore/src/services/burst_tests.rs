//! The pools grow for a burst of SYNs within the budget, hold back what the
//! budget cannot pay for, and give the sockets back after the linger.

use alloc::vec::Vec;

use smoltcp::iface::SocketSet;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::TcpControl;

use super::gate::segment_from;
use super::*;

const HTTP_SOCKET: usize = HTTP_RX_BUFFER + HTTP_TX_BUFFER;

fn host(config: &str) -> (ServiceHost, SocketSet<'static>) {
    let config = NetConfig::parse(config).unwrap();
    let mut sockets = SocketSet::new(Vec::new());
    let host = ServiceHost::new(&config, &mut sockets);
    (host, sockets)
}

/// Offers `n` SYNs to port 80 through the gate; how many it let pass.
fn burst(host: &mut ServiceHost, sockets: &SocketSet<'static>, n: usize) -> usize {
    burst_to(host, sockets, HTTP_PORT, n)
}

/// Offers `n` SYNs to `port`, from `n` clients; how many the gate let pass.
fn burst_to(host: &mut ServiceHost, sockets: &SocketSet<'static>, port: u16, n: usize) -> usize {
    let gate = host.gate(sockets);
    (0..n)
        .filter(|&i| {
            gate.admit(&segment_from(
                30_000 + i as u16,
                port,
                TcpControl::Syn,
                false,
            ))
        })
        .count()
}

#[test]
fn a_burst_grows_the_pool_and_the_linger_shrinks_it() {
    let (mut host, mut sockets) = host("ip=10.77.0.2/24 services=http");
    let budget = host.budget_left();
    assert_eq!(host.pool_sizes()[1], LISTENERS);
    let t0 = Instant::from_secs(100);
    // 4 listening sockets: 4 SYNs pass, 96 are held back.
    assert_eq!(burst(&mut host, &sockets, 100), LISTENERS);
    host.resize(&mut sockets, t0);
    assert_eq!(host.stats().syn_deferred, 96);
    // Room for the 96 and the spare ones.
    assert_eq!(host.pool_sizes()[1], 96 + SPARE_LISTENERS);
    assert_eq!(host.budget_left(), budget - 96 * HTTP_SOCKET);
    // The retries pass.
    assert_eq!(burst(&mut host, &sockets, 96), 96);
    host.resize(&mut sockets, t0 + Duration::from_secs(1));
    assert_eq!(host.stats().syn_deferred, 96);
    // Kept through the linger, given back after it.
    host.resize(&mut sockets, t0 + POOL_LINGER - Duration::from_millis(1));
    assert_eq!(host.pool_sizes()[1], 96 + SPARE_LISTENERS);
    host.resize(&mut sockets, t0 + POOL_LINGER);
    assert_eq!(host.pool_sizes()[1], LISTENERS);
    assert_eq!(host.budget_left(), budget);
    // Every socket the host has is in the set, and only those.
    assert_eq!(host.handles().count(), sockets.iter().count());
}

#[test]
fn the_budget_bounds_the_growth_and_the_rest_waits() {
    // Room for 5 more HTTP sockets.
    let kib = 5 * HTTP_SOCKET / 1024;
    let (mut host, mut sockets) = host(&alloc::format!(
        "ip=10.77.0.2/24 services=http tcp-budget={kib}"
    ));
    assert_eq!(burst(&mut host, &sockets, 50), LISTENERS);
    host.resize(&mut sockets, Instant::from_secs(1));
    assert_eq!(host.pool_sizes()[1], LISTENERS + 5);
    assert_eq!(host.budget_left(), 0);
    assert_eq!(burst(&mut host, &sockets, 46), LISTENERS + 5);
    host.resize(&mut sockets, Instant::from_secs(2));
    assert_eq!(host.stats().syn_deferred, 46 + 46 - 9);
    assert_eq!(host.pool_sizes()[1], LISTENERS + 5);
}

#[test]
fn no_budget_keeps_the_four_listeners() {
    let (mut host, mut sockets) = host("ip=10.77.0.2/24 services=http,echo tcp-budget=0");
    assert_eq!(burst(&mut host, &sockets, 10), LISTENERS);
    host.resize(&mut sockets, Instant::from_secs(1));
    assert_eq!(host.pool_sizes(), [LISTENERS, LISTENERS, 0, 0]);
    assert_eq!(host.stats().syn_deferred, 6);
}

/// One service's idle burst sockets do not starve the next service's burst:
/// while echo's clients wait for budget, HTTP's lingering sockets are given
/// back at once.
#[test]
fn a_second_service_takes_back_what_an_idle_burst_holds() {
    let echo_socket = 2 * ECHO_BUFFER;
    let kib = 40 * HTTP_SOCKET / 1024;
    let (mut host, mut sockets) = host(&alloc::format!(
        "ip=10.77.0.2/24 services=http,echo tcp-budget={kib}"
    ));
    let budget = host.budget_left();
    let t0 = Instant::from_secs(100);
    assert_eq!(burst(&mut host, &sockets, 200), LISTENERS);
    host.resize(&mut sockets, t0);
    // HTTP took the whole budget it could.
    let http_grown = host.pool_sizes()[1] - LISTENERS;
    assert!(http_grown > 0 && host.budget_left() < HTTP_SOCKET);
    // Long before HTTP's linger is over, echo's clients arrive.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(burst_to(&mut host, &sockets, ECHO_PORT, 20), LISTENERS);
    host.resize(&mut sockets, t1);
    // HTTP is back to its spares and echo grew for its 16 waiting clients.
    assert_eq!(host.pool_sizes()[1], SPARE_LISTENERS);
    assert_eq!(host.pool_sizes()[0], 16 + SPARE_LISTENERS);
    assert_eq!(
        host.budget_left(),
        budget - (16 + SPARE_LISTENERS - LISTENERS) * echo_socket
    );
    assert_eq!(burst_to(&mut host, &sockets, ECHO_PORT, 16), 16);
}
