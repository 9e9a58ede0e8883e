//! The channel's fixed-size descriptors. Every one is `Pod`: any bit pattern
//! is a valid value, so a copy out of shared memory can always be made and
//! then validated field by field.
//!
//! All integers are little-endian on the wire; both ends are x86_64, and the
//! types are `#[repr(C)]` with explicit padding so the layout is fixed.

use bytemuck::{Pod, Zeroable};

/// Guest → back end on the TX ring: send `len` bytes from TX slot `slot`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct TxRequest {
    pub slot: u16,
    pub flags: u16,
    pub len: u32,
    /// A destination handle the back end issued to this guest.
    pub dest: u32,
    pub remote_qpn: u32,
    pub qkey: u32,
    pub _reserved: u32,
}

/// Back end → guest on the TX ring: TX slot `slot` is free again.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct TxResponse {
    pub slot: u16,
    /// `WcStatus` code.
    pub status: u16,
    pub _reserved: u32,
}

/// Guest → back end on the RX ring: RX slot `slot` may be filled.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct RxRequest {
    pub slot: u16,
    pub _reserved0: u16,
    pub _reserved1: u32,
}

/// `RxResponse::flags`: the first 40 bytes of the slot hold a real GRH.
pub const RX_FLAG_GRH: u16 = 1 << 0;
/// `RxResponse::flags`: the packet was sent to a multicast group.
pub const RX_FLAG_MULTICAST: u16 = 1 << 1;

/// Back end → guest on the RX ring: RX slot `slot` holds a packet.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct RxResponse {
    pub slot: u16,
    /// `WcStatus` code.
    pub status: u16,
    /// Bytes written, including the 40-byte GRH area.
    pub byte_len: u32,
    pub src_qpn: u32,
    pub src_lid: u16,
    pub flags: u16,
    pub pkey: u16,
    pub _reserved0: u16,
    pub _reserved1: u32,
}

/// `CtrlRequest::op` / `CtrlResponse::op` values.
pub mod ctrl_op {
    /// Resolve `gid` to a destination handle.
    pub const RESOLVE: u16 = 1;
    /// Release destination handle `arg`.
    pub const RELEASE_DEST: u16 = 2;
    /// Attach the QP to multicast group `gid`.
    pub const MCAST_ATTACH: u16 = 3;
    /// Detach the QP from multicast group `gid`.
    pub const MCAST_DETACH: u16 = 4;
    /// Unsolicited (response only): the port attributes changed.
    pub const PORT_CHANGED: u16 = 5;
}

/// `CtrlResponse::status` values.
pub mod ctrl_status {
    pub const OK: u16 = 0;
    pub const UNREACHABLE: u16 = 1;
    pub const NO_RESOURCES: u16 = 2;
    pub const NOT_MULTICAST: u16 = 3;
    pub const PARTITION_MISMATCH: u16 = 4;
    pub const NOT_ATTACHED: u16 = 5;
    pub const INVALID: u16 = 6;
}

/// Guest → back end on the control ring.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct CtrlRequest {
    pub op: u16,
    pub _reserved0: u16,
    /// Echoed in the response.
    pub cookie: u32,
    pub gid: [u8; 16],
    pub arg: u32,
    pub _reserved1: u32,
}

/// Back end → guest on the control ring.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct CtrlResponse {
    pub op: u16,
    pub status: u16,
    pub cookie: u32,
    pub gid: [u8; 16],
    /// For `RESOLVE`: the destination handle.
    pub handle: u32,
    pub _reserved: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn descriptor_sizes_are_fixed() {
        assert_eq!(size_of::<TxRequest>(), 24);
        assert_eq!(size_of::<TxResponse>(), 8);
        assert_eq!(size_of::<RxRequest>(), 8);
        assert_eq!(size_of::<RxResponse>(), 24);
        assert_eq!(size_of::<CtrlRequest>(), 32);
        assert_eq!(size_of::<CtrlResponse>(), 32);
    }
}
