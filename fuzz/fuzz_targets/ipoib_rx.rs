//! The `ipoib` device's receive path, end to end: a datagram with a fuzzed
//! GRH, IPoIB header and payload, fuzzed completion fields (length, source
//! QPN, GRH flag), through a real `FrontHca` into the device (validation,
//! ARP handling and neighbour learning, answering) and on into a smoltcp
//! interface with UDP and TCP sockets, which parses every IPv4 and IPv6
//! packet (the device has fd77::1/64 and its link-local address too, so
//! neighbour discovery, IPv6 reassembly and fragmenting run as well).
//!
//! The back end is the harness's (`common/scripted_backend.rs`): it answers
//! control requests honestly, so the link comes up, then delivers the
//! input's datagrams into the slots the guest posted.
//!
//! Checked on every input:
//! - nothing panics;
//! - a neighbour is learnt only from an ARP whose sender hardware address
//!   is the datagram's real source (QPN of the completion and, with a GRH,
//!   its source GID, or the IPv4-mapped source of a RoCEv2 IPv4 header): whenever `arp.learned` goes up, the datagram just
//!   delivered is such an ARP; whenever it is an ARP that disagrees,
//!   `rx_drops.arp_spoofed` goes up instead.
//!
//! Input: datagrams until the input runs out:
//! `sel u8, src_qpn u32, len u16, [grh 40 bytes if sel & 1], payload`
//! - sel bit 0: the GRH comes from the input (else a plausible one);
//!   bit 1: the GRH flag is set in the completion; bit 2: the source QPN
//!   is the one claimed by the ARP sender in the payload (if it is an ARP);
//!   bits 3-4: byte_len is exact, +1..+64 longer, shorter, or 0..40.

#![no_main]

#[path = "common/scripted_backend.rs"]
mod scripted_backend;

use ipoib::wire::{grh, ArpPacket, ArpRepr, EncapPacket, EtherType};
use ipoib::{IpoibConfig, IpoibDevice};
use libfuzzer_sys::fuzz_target;
use ring::desc::RX_FLAG_GRH;
use scripted_backend::{Input, ScriptedBackend, GRH_LEN, OWN_GID};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use verbs_shim::front::FrontHca;
use verbs_shim::notify::NoNotify;

type Device = IpoibDevice<FrontHca<NoNotify>>;

/// The ARP in `payload` (IPoIB header first), if it is one that parses.
fn arp_in(payload: &[u8]) -> Option<ArpRepr> {
    let encap = EncapPacket::new_checked(payload).ok()?;
    if encap.ethertype() != EtherType::Arp {
        return None;
    }
    ArpPacket::new_checked(encap.payload())
        .and_then(|p| ArpRepr::parse(&p))
        .ok()
}

/// One round of guest and back end; false once the channel is gone.
fn step(
    device: &mut Device,
    back: &mut ScriptedBackend,
    iface: &mut Interface,
    sockets: &mut SocketSet<'_>,
    now: Instant,
) -> bool {
    let alive = device.service(now).is_ok();
    iface.poll(now, device, sockets);
    let alive = alive && device.service(now).is_ok();
    back.take_requests();
    back.answer_ctrl();
    while !back.posted_tx.is_empty() {
        back.complete_tx(0);
    }
    back.publish();
    alive
}

fuzz_target!(|data: &[u8]| {
    let Some((mut back, front)) = ScriptedBackend::connect() else {
        panic!("the honest handshake failed");
    };
    let cidr = Ipv4Cidr::new(Ipv4Address::new(10, 77, 0, 1), 24);
    // IPv6 too: neighbour discovery, reassembly and (for what smoltcp
    // answers) fragmenting run on the fuzzed datagrams.
    let cidr6 = Ipv6Cidr::new(Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0, 1), 64);
    let config = IpoibConfig::new(cidr).with_ipv6(cidr6);
    let Ok(mut device) = IpoibDevice::new(front, config) else {
        panic!("the device did not start");
    };
    let mut now = Instant::from_millis(1);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, now);
    let link_local = device.ipv6_link_local();
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::Ipv4(cidr));
        let _ = a.push(IpCidr::Ipv6(Ipv6Cidr::new(link_local, 64)));
        let _ = a.push(IpCidr::Ipv6(cidr6));
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut udp_socket = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
    );
    let _ = udp_socket.bind(7);
    sockets.add(udp_socket);
    let mut tcp_socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    let _ = tcp_socket.listen(80);
    sockets.add(tcp_socket);
    for _ in 0..8 {
        step(&mut device, &mut back, &mut iface, &mut sockets, now);
    }
    assert_eq!(
        device.link(),
        ipoib::LinkState::Up,
        "the link did not come up"
    );

    let mut input = Input::new(data);
    while !input.is_empty() {
        let sel = input.u8();
        // 24 bits: a wider one is the front's business (front_hca target).
        let mut src_qpn = input.u32() & 0x00ff_ffff;
        let len = usize::from(input.u16()) % 4200;
        let mut grh = [0u8; GRH_LEN];
        if sel & 1 != 0 {
            grh.copy_from_slice(&{
                let b = input.bytes(GRH_LEN);
                let mut g = [0u8; GRH_LEN];
                g[..b.len()].copy_from_slice(b);
                g
            });
        } else {
            grh[0] = 0x60;
            grh[8..24].copy_from_slice(&OWN_GID);
            grh[23] = 2;
            grh[24..40].copy_from_slice(&OWN_GID);
        }
        let payload = input.bytes(len.min(4096 - GRH_LEN)).to_vec();
        let arp = arp_in(&payload);
        if sel & 4 != 0 {
            if let Some(a) = &arp {
                src_qpn = a.source_hw.qpn.get();
            }
        }
        let grh_flag = sel & 2 != 0;
        // What the device may take as the source GID (an IBA GRH or a
        // RoCEv2 IPv4 header), with the GRH flag only.
        let source_gid = if grh_flag {
            grh::source_gid(&grh)
        } else {
            None
        };
        let flags = if grh_flag { RX_FLAG_GRH } else { 0 };
        if back.posted_rx.is_empty() {
            step(&mut device, &mut back, &mut iface, &mut sockets, now);
        }
        // Misreport the length now and then (the slot bytes stay as written).
        let exact = (GRH_LEN + payload.len()) as u32;
        let byte_len = match (sel >> 3) & 3 {
            0 => exact,
            1 => exact + 1 + u32::from(sel >> 5) * 8,
            2 => exact.saturating_sub(1 + u32::from(sel >> 5)),
            _ => u32::from(sel >> 2) % 41,
        };
        let before = device.stats();
        if back
            .deliver(&grh, &payload, src_qpn, flags, Some(byte_len))
            .is_none()
        {
            break;
        }
        back.publish();
        now += smoltcp::time::Duration::from_millis(1);
        let alive = step(&mut device, &mut back, &mut iface, &mut sockets, now);
        let after = device.stats();
        let from_self = src_qpn == scripted_backend::OWN_QPN;
        if let (true, Some(a), true, false) = (alive, &arp, byte_len == exact, from_self) {
            let agrees =
                a.source_hw.qpn.get() == src_qpn && source_gid.is_none_or(|g| g == a.source_hw.gid);
            if !agrees {
                assert_eq!(
                    after.rx_drops.arp_spoofed,
                    before.rx_drops.arp_spoofed + 1,
                    "a disagreeing ARP was not counted"
                );
            }
        }
        if after.arp.learned > before.arp.learned {
            let arp = arp.expect("learnt from a datagram that is not an ARP");
            assert_eq!(arp.source_hw.qpn.get(), src_qpn & 0x00ff_ffff);
            if let Some(gid) = source_gid {
                assert_eq!(arp.source_hw.gid, gid);
            }
        }
    }
});
