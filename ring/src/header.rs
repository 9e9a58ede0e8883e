//! The header page (`docs/CHANNEL.md`, "Header page" and "Handshake").
//!
//! Each field has one writer. Words are accessed atomically: a state is
//! published with `Release` and read with `Acquire`, so whatever a side wrote
//! before changing its state (parameters, ring indices, the port block) is
//! visible to the peer that observes the new state. The other words use the
//! same orderings; on x86 they cost nothing extra.
//!
//! The port block is guarded by a seqlock (the port generation word): the back
//! end makes the generation odd, writes the block, then makes it even again;
//! a reader retries while the generation is odd or changed under it.

use crate::sync::Ordering::{Acquire, Relaxed, Release};
use core::fmt;

use crate::layout::{BigParams, LayoutParams};
use crate::shm::{OutOfBounds, Window};
use crate::sync::{fence, Ordering};

/// `"IBGC"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x4942_4743;
/// Channel version this crate speaks.
pub const VERSION: u32 = 1;
/// Size of the header page.
pub const HEADER_SIZE: usize = 4096;

/// The bits of the features words (`docs/CHANNEL.md`, "Header page";
/// `docs/connected-mode.md`, §5).
pub mod features {
    /// Back end: received checksums are checked (`verbs_shim::Offloads`).
    pub const RX_CHECKSUMS: u32 = 1 << 0;
    /// Back end, at InitWait: connected mode offered; at Connected: agreed.
    /// Guest: connected mode asked for, big-slot parameters written.
    pub const CONNECTED_MODE: u32 = 1 << 1;
    /// Every guest-features bit this crate knows.
    pub const GUEST_KNOWN: u32 = CONNECTED_MODE;
}

/// How often [`Header::read_port`] retries a torn read before giving up.
pub const PORT_READ_RETRIES: usize = 64;

/// Byte offsets of the header fields.
mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const BACKEND_STATE: usize = 8;
    pub const EPOCH: usize = 12;
    pub const PORT_GEN: usize = 16;
    pub const BACKEND_FEATURES: usize = 20;
    pub const PORT: usize = 64;
    pub const GUEST_STATE: usize = 128;
    pub const GUEST_EPOCH: usize = 132;
    pub const GUEST_FEATURES: usize = 136;
    /// ctrl order, tx order, rx order, reserved, tx slots (2), rx slots (2),
    /// slot size (4).
    pub const PARAMS: usize = 140;
    pub const PARAMS_LEN: usize = 12;
    /// cm order, 3 reserved, big tx slots (2), big rx slots (2), big slot
    /// size (4): only with guest feature `CONNECTED_MODE`.
    pub const BIG_PARAMS: usize = 152;
    pub const BIG_PARAMS_LEN: usize = 12;
}

/// A side's connection state (as `XenbusState`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// 0, or any value this crate does not know.
    Unknown,
    Initialising,
    InitWait,
    Initialised,
    Connected,
    Closing,
    Closed,
}

impl State {
    /// Decodes a state word; unknown values become [`State::Unknown`].
    pub fn from_u32(v: u32) -> State {
        match v {
            1 => State::Initialising,
            2 => State::InitWait,
            3 => State::Initialised,
            4 => State::Connected,
            5 => State::Closing,
            6 => State::Closed,
            _ => State::Unknown,
        }
    }

    /// The state's wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            State::Unknown => 0,
            State::Initialising => 1,
            State::InitWait => 2,
            State::Initialised => 3,
            State::Connected => 4,
            State::Closing => 5,
            State::Closed => 6,
        }
    }
}

/// The port attributes the back end publishes (offset 64, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, PartialEq, Eq, Debug, Default)]
pub struct PortBlock {
    pub gid: [u8; 16],
    pub lid: u16,
    pub pkey: u16,
    pub qpn: u32,
    pub qkey: u32,
    /// IBA MTU code: 1 = 256 … 5 = 4096.
    pub mtu: u8,
    /// IBA port state: 1 Down … 4 Active.
    pub state: u8,
    pub _reserved: [u8; 2],
}

/// Accessors for the header page of a window.
#[derive(Clone)]
pub struct Header {
    win: Window,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("magic", &self.magic())
            .field("backend_state", &self.backend_state())
            .field("guest_state", &self.guest_state())
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl Header {
    /// The header of `win`: its first 4096 bytes, which must exist and be
    /// 4-byte aligned.
    pub fn new(win: &Window) -> Result<Header, OutOfBounds> {
        let win = win.sub(0, HEADER_SIZE)?;
        // Proves the words are aligned, so later accesses cannot fail.
        win.load_u32(field::MAGIC, Relaxed)?;
        Ok(Header { win })
    }

    /// Loads a header word. `Header::new` checked the page's size and
    /// alignment, so this cannot fail; 0 is returned if it somehow did.
    fn load(&self, offset: usize, order: Ordering) -> u32 {
        self.win.load_u32(offset, order).unwrap_or(0)
    }

    /// Stores a header word (infallible, see `load`).
    fn store(&self, offset: usize, value: u32, order: Ordering) {
        let _ = self.win.store_u32(offset, value, order);
    }

    /// Magic (expect [`MAGIC`]).
    pub fn magic(&self) -> u32 {
        self.load(field::MAGIC, Acquire)
    }

    /// Version (expect [`VERSION`]).
    pub fn version(&self) -> u32 {
        self.load(field::VERSION, Acquire)
    }

    // --- back-end side ---

    /// Handshake step 1: zero the header, write magic, version, `epoch` and
    /// `port`, then publish back-end state `InitWait` with `Release` (so a
    /// guest that sees `InitWait` also sees everything before it).
    pub fn init_backend(&self, epoch: u32, port: &PortBlock) {
        self.init_backend_offering(epoch, port, 0);
    }

    /// [`Header::init_backend`], with the back-end features word set to
    /// `offered` before `InitWait` is published, so a guest that sees
    /// `InitWait` sees what is offered (`features::CONNECTED_MODE`).
    pub fn init_backend_offering(&self, epoch: u32, port: &PortBlock, offered: u32) {
        let _ = self.win.fill(0, HEADER_SIZE, 0);
        self.store(field::MAGIC, MAGIC, Relaxed);
        self.store(field::VERSION, VERSION, Relaxed);
        self.store(field::EPOCH, epoch, Relaxed);
        self.store(field::BACKEND_FEATURES, offered, Relaxed);
        self.write_port(port);
        self.set_backend_state(State::InitWait);
    }

    /// The back end's state (`Acquire`).
    pub fn backend_state(&self) -> State {
        State::from_u32(self.load(field::BACKEND_STATE, Acquire))
    }

    /// Publishes the back end's state (`Release`).
    pub fn set_backend_state(&self, s: State) {
        self.store(field::BACKEND_STATE, s.to_u32(), Release);
    }

    /// The back end's epoch.
    pub fn epoch(&self) -> u32 {
        self.load(field::EPOCH, Acquire)
    }

    /// Sets the back end's epoch.
    pub fn set_epoch(&self, e: u32) {
        self.store(field::EPOCH, e, Release);
    }

    /// Seqlock writer: generation made odd, block written, generation made
    /// even with `Release`. Only the back end writes the port block.
    pub fn write_port(&self, port: &PortBlock) {
        let gen = self.load(field::PORT_GEN, Relaxed);
        let odd = gen.wrapping_add(1) | 1;
        self.store(field::PORT_GEN, odd, Relaxed);
        // Orders the odd generation before the block's bytes: a reader that
        // sees any new byte then also sees the odd (or a later) generation.
        fence(Ordering::Release);
        let _ = self.win.write_pod(field::PORT, port);
        self.store(field::PORT_GEN, odd.wrapping_add(1), Release);
    }

    /// Seqlock reader: a consistent copy of the port block, or `None` if every
    /// one of [`PORT_READ_RETRIES`] attempts was torn by a concurrent write
    /// (or the generation stayed odd).
    pub fn read_port(&self) -> Option<PortBlock> {
        for _ in 0..PORT_READ_RETRIES {
            let before = self.load(field::PORT_GEN, Acquire);
            if before & 1 == 0 {
                let port = self.win.read_pod::<PortBlock>(field::PORT).ok()?;
                // Orders the block's bytes before the second generation read.
                fence(Ordering::Acquire);
                if self.load(field::PORT_GEN, Relaxed) == before {
                    return Some(port);
                }
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Features the back end offers.
    pub fn backend_features(&self) -> u32 {
        self.load(field::BACKEND_FEATURES, Acquire)
    }

    /// Sets the features the back end offers.
    pub fn set_backend_features(&self, f: u32) {
        self.store(field::BACKEND_FEATURES, f, Release);
    }

    // --- guest side ---

    /// The guest's state (`Acquire`).
    pub fn guest_state(&self) -> State {
        State::from_u32(self.load(field::GUEST_STATE, Acquire))
    }

    /// Publishes the guest's state (`Release`).
    pub fn set_guest_state(&self, s: State) {
        self.store(field::GUEST_STATE, s.to_u32(), Release);
    }

    /// The epoch the guest attached to.
    pub fn guest_epoch(&self) -> u32 {
        self.load(field::GUEST_EPOCH, Acquire)
    }

    /// Records the epoch the guest attached to.
    pub fn set_guest_epoch(&self, e: u32) {
        self.store(field::GUEST_EPOCH, e, Release);
    }

    /// Features the guest accepted.
    pub fn guest_features(&self) -> u32 {
        self.load(field::GUEST_FEATURES, Acquire)
    }

    /// Sets the features the guest accepted.
    pub fn set_guest_features(&self, f: u32) {
        self.store(field::GUEST_FEATURES, f, Release);
    }

    /// Writes the layout parameters (guest, before `Initialised`).
    pub fn write_params(&self, p: &LayoutParams) {
        let mut b = [0u8; field::PARAMS_LEN];
        b[0] = p.ctrl_order;
        b[1] = p.tx_order;
        b[2] = p.rx_order;
        b[4..6].copy_from_slice(&p.tx_slots.to_le_bytes());
        b[6..8].copy_from_slice(&p.rx_slots.to_le_bytes());
        b[8..12].copy_from_slice(&p.slot_size.to_le_bytes());
        let _ = self.win.write_bytes(field::PARAMS, &b);
    }

    /// Writes connected mode's parameters (guest, before `Initialised`,
    /// with guest feature `CONNECTED_MODE`).
    pub fn write_big_params(&self, p: &BigParams) {
        let mut b = [0u8; field::BIG_PARAMS_LEN];
        b[0] = p.cm_order;
        b[4..6].copy_from_slice(&p.tx_slots.to_le_bytes());
        b[6..8].copy_from_slice(&p.rx_slots.to_le_bytes());
        b[8..12].copy_from_slice(&p.slot_size.to_le_bytes());
        let _ = self.win.write_bytes(field::BIG_PARAMS, &b);
    }

    /// Reads connected mode's parameters, copied once, and whether the
    /// reserved bytes were 0. Not validated here: pass them to
    /// [`Layout::compute_with`](crate::Layout::compute_with).
    pub fn read_big_params(&self) -> (BigParams, bool) {
        let mut b = [0u8; field::BIG_PARAMS_LEN];
        let _ = self.win.read_bytes(field::BIG_PARAMS, &mut b);
        let params = BigParams {
            cm_order: b[0],
            tx_slots: u16::from_le_bytes([b[4], b[5]]),
            rx_slots: u16::from_le_bytes([b[6], b[7]]),
            slot_size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        };
        (params, b[1..4] == [0; 3])
    }

    /// Reads the layout parameters, copied once. They are not validated
    /// here: pass them to [`Layout::compute`](crate::Layout::compute).
    pub fn read_params(&self) -> LayoutParams {
        let mut b = [0u8; field::PARAMS_LEN];
        let _ = self.win.read_bytes(field::PARAMS, &mut b);
        LayoutParams {
            ctrl_order: b[0],
            tx_order: b[1],
            rx_order: b[2],
            tx_slots: u16::from_le_bytes([b[4], b[5]]),
            rx_slots: u16::from_le_bytes([b[6], b[7]]),
            slot_size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
