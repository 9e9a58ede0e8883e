//! Must-show 5: the example's capture decodes in tshark: ARP with InfiniBand
//! 20-byte addresses, ICMP and TCP.

use std::path::PathBuf;
use std::process::Command;

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark is not installed: run `make deps` (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn example_capture_decodes_in_tshark() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let pcap = dir.join("two_stacks.pcap");
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "ibguest-testkit",
            "--example",
            "two_stacks",
            "--",
        ])
        .arg(&pcap)
        .status()
        .expect("cargo run");
    assert!(status.success(), "example failed");
    let summary = tshark(&["-r", pcap.to_str().unwrap()]);
    assert!(summary.contains("ARP"), "{summary}");
    assert!(summary.contains("ICMP"), "{summary}");
    assert!(summary.contains("TCP"), "{summary}");
    assert!(!summary.contains("Malformed"), "{summary}");
    let arp = tshark(&["-r", pcap.to_str().unwrap(), "-Y", "arp", "-V"]);
    assert!(arp.contains("Hardware type: InfiniBand (32)"), "{arp}");
    assert!(arp.contains("Hardware size: 20"), "{arp}");
    let fields = tshark(&[
        "-r",
        pcap.to_str().unwrap(),
        "-Y",
        "icmp",
        "-T",
        "fields",
        "-e",
        "icmp.type",
    ]);
    let types: Vec<&str> = fields.lines().collect();
    assert!(
        types.contains(&"8") && types.contains(&"0"),
        "echo request and reply: {types:?}"
    );
}
