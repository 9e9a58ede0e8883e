//! The services of a `ServiceHost` on guest 1, exercised from guest 0 with
//! plain smoltcp sockets.

mod common;

use common::{Setup, CLIENT, LIMIT, SERVER};
use ibguest_testkit::apps::udp_socket;
use ibguest_testkit::BoxError;
use netcore::http::{parse_response, parse_response_to, ResponseError};
use netcore::pattern::Chargen;
use netcore::services::{CHARGEN_PORT, ECHO_PORT, HTTP_PORT, LISTENERS};
use netcore::ServiceStats;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Duration;

#[test]
fn udp_echo_answers_and_refuses_well_known_ports() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let server = s.server_endpoint(ECHO_PORT);
    let handle = udp_socket(&mut s.net, CLIENT, 40000)?;
    let payloads: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i; 100 + usize::from(i) * 300])
        .collect();
    {
        let socket = s.net.guests[CLIENT].sockets.get_mut::<udp::Socket>(handle);
        for p in &payloads {
            socket.send_slice(p, server)?;
        }
    }
    let mut got = Vec::new();
    s.run_until(LIMIT, |net| {
        let socket = net.guests[CLIENT].sockets.get_mut::<udp::Socket>(handle);
        while let Ok((data, meta)) = socket.recv() {
            assert_eq!(meta.endpoint, server);
            got.push(data.to_vec());
        }
        got.len() == payloads.len()
    })?;
    assert_eq!(got, payloads);
    let stats = s.host.stats();
    assert_eq!(stats.udp_echo_datagrams, 5);
    assert_eq!(
        stats.udp_echo_bytes,
        payloads.iter().map(|p| p.len() as u64).sum::<u64>()
    );

    // From port 19 (chargen), an answer could start an endless loop: dropped.
    let loop_handle = udp_socket(&mut s.net, CLIENT, 19)?;
    s.net.guests[CLIENT]
        .sockets
        .get_mut::<udp::Socket>(loop_handle)
        .send_slice(b"loop?", server)?;
    s.run_for(Duration::from_millis(200))?;
    assert_eq!(s.host.stats().udp_echo_dropped, 1);
    assert_eq!(s.host.stats().udp_echo_datagrams, 5);
    Ok(())
}

#[test]
fn tcp_echo_returns_every_byte() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let echoed = s.exchange_half_close(ECHO_PORT, 50000, &data)?;
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed data differs");
    let stats = s.host.stats();
    assert_eq!(stats.tcp_echo_bytes, data.len() as u64);
    assert_eq!(stats.tcp_echo_connections, 1);
    Ok(())
}

fn get(s: &mut Setup, local_port: u16, request: &str) -> Result<netcore::http::Response, BoxError> {
    let raw = s.exchange(HTTP_PORT, local_port, request.as_bytes())?;
    Ok(parse_response(&raw)?)
}

fn assert_close_and_length(r: &netcore::http::Response) {
    assert_eq!(r.header("connection"), Some("close"));
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
}

/// A HEAD is answered with the headers a GET would get and no body (the
/// case the random requests below once found: `HEAD /x` ending in a bare LF).
#[test]
fn http_head_has_headers_and_no_body() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let raw = s.exchange_half_close(HTTP_PORT, 54200, b"HEAD /x HTTP/1.1\r\n\n")?;
    assert!(matches!(
        parse_response(&raw),
        Err(ResponseError::LengthMismatch { received: 0, .. })
    ));
    let r = parse_response_to(&raw, true)?;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    let declared: usize = r.header("content-length").ok_or("no length")?.parse()?;
    assert!(declared > 0);
    Ok(())
}

#[test]
fn http_status_page_and_stats() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let r = get(&mut s, 50001, "GET / HTTP/1.1\r\nHost: 10.77.0.2\r\n\r\n")?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_close_and_length(&r);
    let html = r.text().unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<title>server-1 status</title>"), "{html}");
    assert!(html.contains("<tr><td>rx_packets</td><td>"), "{html}");
    assert!(
        html.contains("<tr><td>http_requests</td><td>1</td></tr>"),
        "{html}"
    );

    let r = get(
        &mut s,
        50002,
        "GET /stats HTTP/1.1\r\nHost: 10.77.0.2\r\n\r\n",
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_close_and_length(&r);
    let text = r.text().unwrap();
    let mut pairs = std::collections::HashMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once(' ').expect("key value");
        assert!(pairs.insert(key, value).is_none(), "{key} twice");
    }
    assert_eq!(pairs["name"], "server-1");
    assert_eq!(pairs["ip"], "10.77.0.2/24");
    assert_eq!(pairs["gateway"], "none");
    assert_eq!(pairs["services"], "echo,http,discard,chargen");
    assert_eq!(pairs["http_requests"], "2");
    assert_eq!(pairs["http_ok"], "2");
    assert_eq!(pairs["http_connections"], "2");
    let rx: u64 = pairs["rx_packets"].parse()?;
    assert!(rx >= 4, "{text}");
    for key in [
        "tx_bytes",
        "arp_learned",
        "tx_drop_no_route",
        "discard_bytes",
        "chargen_bytes",
    ] {
        pairs[key].parse::<u64>()?;
    }
    Ok(())
}

#[test]
fn http_errors() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    let r = get(&mut s, 50010, "GET /nope HTTP/1.1\r\n\r\n")?;
    assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
    assert_close_and_length(&r);
    assert_eq!(r.text(), Some("no page at /nope; try / or /stats\n"));

    let r = get(&mut s, 50011, "garbage\r\n\r\n")?;
    assert_eq!(r.status, 400);
    assert_close_and_length(&r);

    let r = get(
        &mut s,
        50012,
        "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    )?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    let r = get(&mut s, 50013, "GET / HTTP/3.0\r\n\r\n")?;
    assert_eq!(r.status, 505);

    // A head that never ends.
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(5000));
    let r = get(&mut s, 50014, &long)?;
    assert_eq!(r.status, 431);

    // Closing before the head is complete still gets an answer.
    let raw = s.exchange_half_close(HTTP_PORT, 50015, b"GET / HTTP/1.1\r\n")?;
    assert_eq!(parse_response(&raw)?.status, 400);

    // HEAD: the length of the body that GET would send, and no body.
    let raw = s.exchange(HTTP_PORT, 50016, b"HEAD /stats HTTP/1.0\r\n\r\n")?;
    let text = String::from_utf8(raw)?;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "{text}");
    assert!(text.contains("Content-Length: "), "{text}");

    let stats = s.host.stats();
    assert_eq!(stats.http_requests, 7, "{stats:?}");
    assert_eq!(stats.http_not_found, 1);
    assert_eq!(stats.http_ok, 1);
    assert_eq!(stats.http_errors, 5);
    Ok(())
}

#[test]
fn chargen_sends_the_rfc_864_pattern() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    const WANT: usize = 100 * 1024;
    let handle = s.connect(CHARGEN_PORT, 50020)?;
    let mut check = Chargen::new();
    let mut received = 0usize;
    let mut bad = None;
    s.run_until(LIMIT, |net| {
        let socket = net.guests[CLIENT].sockets.get_mut::<tcp::Socket>(handle);
        while socket.can_recv() && received < WANT {
            let _ = socket.recv(|d| {
                if bad.is_none() {
                    bad = check.check(d).err();
                }
                received += d.len();
                (d.len(), ())
            });
        }
        if received >= WANT {
            socket.close();
        }
        received >= WANT
    })?;
    assert_eq!(bad, None, "wrong byte at offset {bad:?}");
    // The server closes when we do, and listens again.
    s.run_until(LIMIT, |net| {
        let socket = net.guests[CLIENT].sockets.get_mut::<tcp::Socket>(handle);
        while socket.can_recv() {
            let _ = socket.recv(|d| (d.len(), ()));
        }
        !socket.is_open()
    })?;
    let stats = s.host.stats();
    assert_eq!(stats.chargen_connections, 1);
    assert!(stats.chargen_bytes >= WANT as u64, "{stats:?}");
    assert_listening(&mut s, CHARGEN_PORT);
    Ok(())
}

/// Every listener of `port` on guest 1 is back to listening.
fn assert_listening(s: &mut Setup, port: u16) {
    s.run_until(LIMIT, |net| {
        let listening = net.guests[SERVER]
            .sockets
            .iter()
            .filter_map(|(_, socket)| match socket {
                smoltcp::socket::Socket::Tcp(t) => Some(t),
                _ => None,
            })
            .filter(|t| t.is_listening() && t.listen_endpoint().port == port)
            .count();
        listening == LISTENERS
    })
    .expect("every socket listens again");
}

#[test]
fn services_none_adds_no_sockets() -> Result<(), BoxError> {
    let s = Setup::with_config("ip=10.77.0.2/24 services=none")?;
    assert_eq!(s.host.handles().count(), 0);
    assert_eq!(s.net.guests[SERVER].sockets.iter().count(), 0);
    let s = Setup::with_config("ip=10.77.0.2/24 services=http,echo")?;
    // UDP echo, and LISTENERS each for TCP echo and HTTP.
    assert_eq!(s.host.handles().count(), 1 + 2 * LISTENERS);
    assert_eq!(s.host.stats(), ServiceStats::default());
    Ok(())
}

#[test]
fn remove_takes_every_socket_out() -> Result<(), BoxError> {
    let mut s = Setup::new()?;
    assert_eq!(
        s.net.guests[SERVER].sockets.iter().count(),
        1 + 4 * LISTENERS
    );
    let host = std::mem::replace(
        &mut s.host,
        netcore::ServiceHost::new(
            &netcore::NetConfig::parse("ip=10.77.0.2/24 services=none")?,
            &mut s.net.guests[SERVER].sockets,
        ),
    );
    host.remove(&mut s.net.guests[SERVER].sockets);
    assert_eq!(s.net.guests[SERVER].sockets.iter().count(), 0);
    Ok(())
}

mod random_requests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..3000),
            (
                prop::sample::select(vec![
                    "GET / HTTP/1.1\r\n",
                    "GET /stats HTTP/1.0\n",
                    "HEAD /x HTTP/1.1\r\n",
                    "PUT / HTTP/1.1\r\n"
                ]),
                prop::collection::vec(any::<u8>(), 0..200),
                any::<bool>(),
            )
                .prop_map(|(line, junk, end)| {
                    let mut r = line.as_bytes().to_vec();
                    r.extend_from_slice(&junk);
                    if end {
                        r.extend_from_slice(b"\r\n\r\n");
                    }
                    r
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever arrives, the server answers with a well-formed response
        /// (or closes, if nothing arrived) and keeps serving.
        #[test]
        fn the_server_answers_anything(requests in prop::collection::vec(request(), 1..4)) {
            let mut s = Setup::new().unwrap();
            for (i, req) in requests.iter().enumerate() {
                let raw = s.exchange_half_close(HTTP_PORT, 54000 + i as u16, req).unwrap();
                if raw.is_empty() {
                    prop_assert!(req.iter().all(|b| *b == b'\r' || *b == b'\n'), "no answer to {req:?}");
                    continue;
                }
                // A HEAD the server understood is answered without a body; one
                // it could not parse gets an error page with one.
                let r = match parse_response(&raw) {
                    Err(ResponseError::LengthMismatch { received: 0, .. }) if req.starts_with(b"HEAD ") => {
                        parse_response_to(&raw, true).unwrap()
                    }
                    other => other.unwrap(),
                };
                prop_assert!([200, 400, 404, 405, 431, 505].contains(&r.status), "{}", r.status);
                prop_assert_eq!(r.header("connection"), Some("close"));
            }
            let r = get(&mut s, 54100, "GET /stats HTTP/1.1\r\n\r\n").unwrap();
            prop_assert_eq!(r.status, 200);
        }
    }
}
