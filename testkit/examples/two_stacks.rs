//! Two IPoIB stacks on the sim fabric, each through its own shared-memory
//! channel: ARP, ping, UDP and a TCP transfer, captured to a pcap file that
//! Wireshark and tshark decode.
//!
//!     cargo run --release -p ibguest-testkit --example two_stacks -- out.pcap
//!     tshark -r out.pcap

use std::path::PathBuf;
use std::process::ExitCode;

use ibguest_testkit::apps::{ping, tcp_transfer};
use ibguest_testkit::{BoxError, GuestSpec, Net, SharedCapture};
use ipoib::LinkState;
use smoltcp::time::Duration;
use verbs_shim::sim::FaultConfig;

fn run(path: PathBuf) -> Result<(), BoxError> {
    let capture = SharedCapture::create(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut net = Net::new(FaultConfig::NONE);
    // Guest 1's view of the fabric goes to the file.
    net.add_captured(GuestSpec::new(1), capture.clone())?;
    net.add(GuestSpec::new(2))?;
    net.run_until(Duration::from_secs(1), |n| {
        n.guests.iter().all(|g| g.device.link() == LinkState::Up)
    })?;
    for g in &net.guests {
        println!(
            "guest {}: {} hw {}",
            g.spec.port,
            g.spec.ip,
            g.device.hw_addr()
        );
    }
    let peer = net.guests[1].spec.ipv4();
    for seq in 1..=3 {
        let rtt = ping(&mut net, 0, peer, seq, Duration::from_secs(5))?;
        println!("ping {peer} seq {seq}: reply after {rtt} (virtual time)");
    }
    let report = tcp_transfer(&mut net, 0, 1, 256 * 1024, 1, Duration::from_secs(30))?;
    let ok = report.sent_sha256 == report.received_sha256;
    println!(
        "tcp: {} bytes, sha256 {} ({})",
        report.bytes,
        report
            .received_sha256
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        if ok { "matches" } else { "MISMATCH" }
    );
    capture.flush()?;
    let stats = net.guests[0].device.stats();
    println!("guest 1 counters: {stats:?}");
    println!(
        "capture written to {}; open it with: tshark -r {}",
        path.display(),
        path.display()
    );
    if ok {
        Ok(())
    } else {
        Err("TCP data did not arrive intact".into())
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let path = match (args.next(), args.next()) {
        (Some(p), None) => PathBuf::from(p),
        _ => {
            eprintln!("usage: two_stacks <capture.pcap>");
            return ExitCode::from(2);
        }
    };
    match run(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("two_stacks: {e}");
            ExitCode::FAILURE
        }
    }
}
