//! DHCP over IPoIB (RFC 4390 on RFC 2131): a client for `ip=dhcp` and the
//! answering half of a server, `no_std`.
//!
//! - [`wire`]: the message, parsed from untrusted bytes and emitted.
//! - [`client`]: the client's state machine, clock and sockets left out.
//! - [`socket`]: [`DhcpSocket`], the client on a smoltcp UDP socket bound
//!   to port 68; sends from 0.0.0.0 before there is an address.
//! - [`server`]: what a server answers a client's message with, for a
//!   client whose address is already decided (the back end's seats).
//! - [`endpoint`]: [`ServerPort`], that server as an endpoint of its own on
//!   the fabric: an `IpoibDevice` it reads and writes IPv4 on directly, so
//!   that it knows each request's real source port.
//!
//! smoltcp's own DHCP socket is not used: it is written for Ethernet (it
//! fills `chaddr` with a MAC, and its interface hook runs for
//! `Medium::Ethernet` only).

pub mod client;
pub mod endpoint;
mod log_limit;
pub mod server;
pub mod socket;
pub mod wire;

pub use client::{DhcpClient, Event, Lease, State};
pub use endpoint::{ServerPort, ServerStats};
pub use server::SeatLease;
pub use socket::{DhcpSocket, DhcpStats};
pub use wire::{ClientId, DhcpError, DhcpRepr, MessageType};

use ipoib::wire::HwAddr;

/// RFC 4361 type for a node-specific identifier: IAID and DUID follow.
pub const CLIENT_ID_TYPE: u8 = 0xff;
/// DUID-LL (RFC 3315 §9.4): type 3, then the hardware type.
const DUID_LL: u16 = 3;

/// The client identifier (option 61) of the interface with IPoIB address
/// `hw`: RFC 4390 makes it the only way to tell clients apart. It has the
/// RFC 4361 form: type 255, a 4-octet IAID (the GID's last four octets: the
/// low half of the port GUID), then a DUID-LL (type 3) with hardware type
/// 32 and the 20-octet IPoIB hardware address (flags, QPN, GID). 29 octets.
pub fn client_id(hw: &HwAddr) -> ClientId {
    let mut id = ClientId::new();
    let bytes = hw.to_bytes();
    let gid = hw.gid.0;
    // 1 + 4 + 2 + 2 + 20 = 29 octets: fits MAX_CLIENT_ID.
    let _ = id.push(CLIENT_ID_TYPE);
    let _ = id.extend_from_slice(&gid[12..16]);
    let _ = id.extend_from_slice(&DUID_LL.to_be_bytes());
    let _ = id.extend_from_slice(&u16::from(wire::HTYPE_INFINIBAND).to_be_bytes());
    let _ = id.extend_from_slice(&bytes);
    id
}

#[cfg(test)]
mod tests {
    use verbs_shim::{Gid, Qpn};

    use super::*;

    #[test]
    fn client_id_is_rfc4361_with_a_duid_ll_of_the_ipoib_address() {
        let hw = HwAddr::new(
            Qpn::new_truncated(0x48),
            Gid::from_parts(0xfe80 << 48, 0x0002_c903_0001_0203),
        );
        let id = client_id(&hw);
        assert_eq!(id.len(), 29);
        assert_eq!(id[0], 0xff);
        assert_eq!(&id[1..5], &[0x00, 0x01, 0x02, 0x03]);
        assert_eq!(&id[5..9], &[0, 3, 0, 32]);
        assert_eq!(&id[9..], &hw.to_bytes()[..]);
    }
}
