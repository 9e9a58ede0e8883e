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

/// `TxRequest::flags`: an RC send (`docs/connected-mode.md`, §5): `slot`
/// is a big TX slot, `dest` a connection handle, `remote_qpn` and `qkey`
/// are 0. Only with connected mode negotiated.
pub const TX_FLAG_RC: u16 = 1 << 0;
/// `TxResponse::_reserved`: the response is for an RC send.
pub const TX_RSP_FLAG_RC: u32 = 1 << 0;
/// `RxRequest::_reserved0`: post big RX slot `slot` to the shared RC
/// receive pool. Only with connected mode negotiated.
pub const RX_REQ_FLAG_BIG: u16 = 1 << 0;
/// `RxResponse::flags`: an RC message in big RX slot `slot`; `_reserved1`
/// holds the connection handle, `src_qpn` the peer's UD QPN, `byte_len`
/// the message length (no GRH area).
pub const RX_FLAG_RC: u16 = 1 << 2;

/// `CmRequest::op` / `CmResponse::op` values.
pub mod cm_op {
    /// Connect to `gid` whose UD QPN is `qpn`, advertising `mtu`; answered
    /// when established (`conn`, `mtu` = send MTU) or not.
    pub const CONNECT: u16 = 1;
    /// Accept request `conn`, advertising `mtu`; answered when established.
    pub const ACCEPT: u16 = 2;
    /// Reject request `conn`; answered at once.
    pub const REJECT: u16 = 3;
    /// Tear `conn` down; answered when it is closed.
    pub const DISCONNECT: u16 = 4;
    /// A credit for one unsolicited event: answered by `EVENT_REQUEST` or
    /// `EVENT_BROKEN` when one happens.
    pub const EVENT_CREDIT: u16 = 5;
    /// (Response only) a peer asks for connection `conn`: `gid`, `qpn`
    /// (its UD QPN), `mtu` (its receive MTU).
    pub const EVENT_REQUEST: u16 = 16;
    /// (Response only) connection `conn` broke; `reason` says why.
    pub const EVENT_BROKEN: u16 = 17;
}

/// `CmResponse::status` values.
pub mod cm_status {
    pub const OK: u16 = 0;
    /// The peer or the fabric said no; `reason` says why.
    pub const REJECTED: u16 = 1;
    /// A limit of the back end (connections, MTU); the guest stays.
    pub const NO_RESOURCES: u16 = 2;
    /// The call does not fit the connection's state.
    pub const INVALID: u16 = 3;
    /// The connection broke before the call finished; `reason` says why.
    pub const BROKEN: u16 = 4;
    /// The back end is closing; nothing will come.
    pub const FLUSHED: u16 = 5;
}

/// `CmResponse::reason` values (reject and break reasons).
pub mod cm_reason {
    pub const NONE: u32 = 0;
    pub const UNREACHABLE: u32 = 1;
    pub const NO_LISTENER: u32 = 2;
    pub const PARTITION: u32 = 3;
    pub const REFUSED: u32 = 4;
    pub const TIMEOUT: u32 = 5;
    pub const RETRY_EXCEEDED: u32 = 16;
    pub const PEER_GONE: u32 = 17;
    pub const PEER_CLOSED: u32 = 18;
    pub const LINK_DOWN: u32 = 19;
    pub const IDLE: u32 = 20;
}

/// Guest → back end on the CM ring.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct CmRequest {
    pub op: u16,
    pub _reserved0: u16,
    /// Echoed in the response.
    pub cookie: u32,
    /// A connection handle the back end issued to this guest.
    pub conn: u32,
    /// `CONNECT`: the target's UD QPN.
    pub qpn: u32,
    /// `CONNECT`, `ACCEPT`: the receive MTU advertised.
    pub mtu: u32,
    pub _reserved1: u32,
    /// `CONNECT`: the target's GID.
    pub gid: [u8; 16],
    pub _reserved2: [u32; 2],
}

/// Back end → guest on the CM ring. Answers come in any order, matched by
/// cookie; an `EVENT_*` answers an `EVENT_CREDIT`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, PartialEq, Eq, Debug, Default)]
pub struct CmResponse {
    pub op: u16,
    pub status: u16,
    pub cookie: u32,
    pub conn: u32,
    pub qpn: u32,
    pub mtu: u32,
    pub reason: u32,
    pub gid: [u8; 16],
    pub _reserved: [u32; 2],
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
        assert_eq!(size_of::<CmRequest>(), 48);
        assert_eq!(size_of::<CmResponse>(), 48);
    }
}
