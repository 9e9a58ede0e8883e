//! The IP side of RoCE multicast.
//!
//! On RoCEv2 a multicast GID is an IPv6 multicast address carried in UDP.
//! `ibv_attach_mcast` steers the group's frames to the QP, but the IP
//! stack also has to be a member of the group on the GID's network device:
//! - soft-RoCE (`rxe`) receives through a kernel UDP socket, and the IP
//!   stack drops multicast for groups it has not joined; it also loops a
//!   local sender's group packets back only to joined groups, so without the
//!   join two QPs on one device never hear each other;
//! - switches forward a group only to ports that answered MLD for it.
//!
//! `rdma_cm` does the same join in the kernel (`cma_igmp_send`). Here a UDP
//! socket per attached group holds the membership; dropping it leaves.

use alloc::format;
use alloc::string::String;
use std::io;
use std::net::{Ipv6Addr, UdpSocket};

use crate::types::Gid;

/// The network device behind a RoCE GID: its name and interface index,
/// from sysfs (`/sys/class/infiniband/DEV/ports/N/gid_attrs/ndevs/I`).
pub(super) fn netdev_of(device: &str, port: u8, gid_index: u8) -> Option<(String, u32)> {
    let path = format!("/sys/class/infiniband/{device}/ports/{port}/gid_attrs/ndevs/{gid_index}");
    let name = std::fs::read_to_string(path).ok()?.trim().to_owned();
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()?;
    let index = index.trim().parse().ok()?;
    Some((name, index))
}

/// Joins the IPv6 group `mgid` on interface `ifindex`; the membership lasts
/// as long as the socket.
pub(super) fn join(mgid: Gid, ifindex: u32) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
    socket.join_multicast_v6(&Ipv6Addr::from(mgid.0), ifindex)?;
    Ok(socket)
}
