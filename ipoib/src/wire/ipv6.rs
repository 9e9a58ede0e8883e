//! IPv6 addressing over IPoIB (RFC 4391 section 8): the interface
//! identifier from the port GUID, the link-local address, and the
//! solicited-node group of an address (RFC 4291 section 2.7.1).
//!
//! The port GUID is the low 64 bits of the port GID. The interface
//! identifier is that GUID as a modified EUI-64: the universal/local bit
//! (0x02 of the first byte) inverted (RFC 4291 appendix A). Linux
//! (`addrconf_ifid_infiniband`) sets the bit instead of inverting it; the
//! two agree for every globally administered GUID (the bit clear), which is
//! what HCAs ship with and what the sim fabric hands out.

use smoltcp::wire::Ipv6Address;
use verbs_shim::Gid;

/// The universal/local bit of the first byte of an EUI-64.
const UNIVERSAL_LOCAL: u8 = 0x02;

/// The interface identifier of a port: its GUID (GID bytes 8..16) with the
/// universal/local bit inverted.
pub fn interface_id(port_gid: &Gid) -> [u8; 8] {
    let mut iid = [0u8; 8];
    iid.copy_from_slice(&port_gid.0[8..]);
    iid[0] ^= UNIVERSAL_LOCAL;
    iid
}

/// The port's link-local address: `fe80::/64` and the interface identifier.
pub fn link_local(port_gid: &Gid) -> Ipv6Address {
    let mut bytes = [0u8; 16];
    bytes[0] = 0xfe;
    bytes[1] = 0x80;
    bytes[8..].copy_from_slice(&interface_id(port_gid));
    Ipv6Address::from(bytes)
}

/// `prefix`'s first 64 bits and the port's interface identifier.
pub fn with_interface_id(prefix: Ipv6Address, port_gid: &Gid) -> Ipv6Address {
    let mut bytes = prefix.octets();
    bytes[8..].copy_from_slice(&interface_id(port_gid));
    Ipv6Address::from(bytes)
}

/// The solicited-node multicast group of `addr`: `ff02::1:ff00:0/104` and
/// the low 24 bits of `addr`.
pub fn solicited_node(addr: Ipv6Address) -> Ipv6Address {
    let a = addr.octets();
    Ipv6Address::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, a[13], a[14], a[15],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_port_gids() {
        // The sim fabric's port 2: fe80::2.
        let gid = Gid::from_parts(0xfe80 << 48, 2);
        assert_eq!(interface_id(&gid), [0x02, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(
            link_local(&gid),
            Ipv6Address::new(0xfe80, 0, 0, 0, 0x0200, 0, 0, 2)
        );
    }

    #[test]
    fn mellanox_guid() {
        // A ConnectX port GUID 0002:c903:0011:2233 (universal: bit clear).
        let gid = Gid::from_parts(0xfe80 << 48, 0x0002_c903_0011_2233);
        assert_eq!(
            interface_id(&gid),
            [0x02, 0x02, 0xc9, 0x03, 0x00, 0x11, 0x22, 0x33]
        );
        assert_eq!(
            link_local(&gid),
            Ipv6Address::new(0xfe80, 0, 0, 0, 0x0202, 0xc903, 0x0011, 0x2233)
        );
        // A locally administered GUID has the bit cleared by the inversion.
        let local = Gid::from_parts(0xfe80 << 48, 0x0200_0000_0000_0001);
        assert_eq!(interface_id(&local), [0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn global_from_prefix() {
        let gid = Gid::from_parts(0xfe80 << 48, 7);
        assert_eq!(
            with_interface_id(Ipv6Address::new(0xfd77, 0, 0, 0, 0xffff, 0, 0, 1), &gid),
            Ipv6Address::new(0xfd77, 0, 0, 0, 0x0200, 0, 0, 7)
        );
    }

    #[test]
    fn solicited_node_groups() {
        assert_eq!(
            solicited_node(Ipv6Address::new(0xfd77, 0, 0, 0, 0, 0, 0x12, 0x3456)),
            Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff12, 0x3456)
        );
    }
}
