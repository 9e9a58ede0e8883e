//! Where everything sits in the window, computed the same way on both sides
//! from the four guest-chosen parameters (`docs/CHANNEL.md`, "Window layout").
//! No offset is ever read from the window; every sum is checked.

use core::fmt;
use core::mem::size_of;
use core::ops::Range;

use crate::desc::{CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse};
use crate::header::HEADER_SIZE;

/// Smallest ring order (entries = `1 << order`).
pub const MIN_RING_ORDER: u8 = 1;
/// Largest ring order.
pub const MAX_RING_ORDER: u8 = 12;
/// Largest number of TX (or RX) slots.
pub const MAX_SLOTS: u16 = 4096;
/// Smallest slot size in bytes.
pub const MIN_SLOT_SIZE: u32 = 256;
/// Largest slot size in bytes.
pub const MAX_SLOT_SIZE: u32 = 65536;
/// Slot sizes are multiples of this.
pub const SLOT_ALIGN: u32 = 64;
/// Offset of the ring indices block from the start of a ring; the entries
/// follow it.
pub const RING_INDEX_BYTES: usize = 256;

/// Alignment of the TX and RX rings.
const RING_ALIGN: usize = 64;
/// Alignment of the buffer area.
const BUFFER_ALIGN: usize = 4096;

/// Bytes taken by a ring of `1 << order` entries of `Req` and `Rsp`:
/// `256 + entries * (size_of::<Req>() + size_of::<Rsp>())`.
///
/// Saturates at `usize::MAX` for absurd orders instead of overflowing.
pub fn ring_bytes<Req, Rsp>(order: u8) -> usize {
    let entries = match 1usize.checked_shl(u32::from(order)) {
        Some(e) => e,
        None => return usize::MAX,
    };
    (size_of::<Req>() + size_of::<Rsp>())
        .checked_mul(entries)
        .and_then(|b| b.checked_add(RING_INDEX_BYTES))
        .unwrap_or(usize::MAX)
}

/// The guest-chosen channel parameters, as written in the header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LayoutParams {
    /// Control ring order (`1..=12`).
    pub ctrl_order: u8,
    /// TX ring order (`1..=12`).
    pub tx_order: u8,
    /// RX ring order (`1..=12`).
    pub rx_order: u8,
    /// Number of TX slots (`1..=4096`).
    pub tx_slots: u16,
    /// Number of RX slots (`1..=4096`).
    pub rx_slots: u16,
    /// Bytes per slot (a multiple of 64 in `256..=65536`).
    pub slot_size: u32,
}

impl LayoutParams {
    /// 16 control entries, 256 TX and RX entries and slots of 4096 bytes.
    pub const DEFAULT: LayoutParams = LayoutParams {
        ctrl_order: 4,
        tx_order: 8,
        rx_order: 8,
        tx_slots: 256,
        rx_slots: 256,
        slot_size: 4096,
    };
}

impl Default for LayoutParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a set of [`LayoutParams`] was refused. Each variant names the field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LayoutError {
    /// `ring` (`"ctrl_order"`, `"tx_order"` or `"rx_order"`) is outside
    /// `1..=12`.
    BadRingOrder { ring: &'static str, order: u8 },
    /// `which` (`"tx_slots"` or `"rx_slots"`) is outside `1..=4096`.
    BadSlotCount { which: &'static str, count: u16 },
    /// `slot_size` is not a multiple of 64 in `256..=65536`.
    BadSlotSize(u32),
    /// The layout needs `needed` bytes but the window has `window_len`.
    DoesNotFit { needed: usize, window_len: usize },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::BadRingOrder { ring, order } => write!(
                f,
                "{ring} = {order} is out of range {MIN_RING_ORDER}..={MAX_RING_ORDER}"
            ),
            LayoutError::BadSlotCount { which, count } => {
                write!(f, "{which} = {count} is out of range 1..={MAX_SLOTS}")
            }
            LayoutError::BadSlotSize(size) => write!(
                f,
                "slot_size = {size} is not a multiple of {SLOT_ALIGN} in {MIN_SLOT_SIZE}..={MAX_SLOT_SIZE}"
            ),
            LayoutError::DoesNotFit { needed, window_len } => write!(
                f,
                "window_len = {window_len} is too small: the layout needs {needed} bytes"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

/// Byte ranges of each part of the window, all within `0..window_len`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Layout {
    /// The parameters this layout was computed from (validated).
    pub params: LayoutParams,
    /// Control ring (`CtrlRequest` / `CtrlResponse`), at 4096.
    pub ctrl: Range<usize>,
    /// TX ring (`TxRequest` / `TxResponse`), 64-aligned.
    pub tx: Range<usize>,
    /// RX ring (`RxRequest` / `RxResponse`), 64-aligned.
    pub rx: Range<usize>,
    /// Buffer area: TX slots then RX slots, 4096-aligned.
    pub buffers: Range<usize>,
}

fn check_order(ring: &'static str, order: u8) -> Result<(), LayoutError> {
    if (MIN_RING_ORDER..=MAX_RING_ORDER).contains(&order) {
        Ok(())
    } else {
        Err(LayoutError::BadRingOrder { ring, order })
    }
}

fn check_slots(which: &'static str, count: u16) -> Result<(), LayoutError> {
    if (1..=MAX_SLOTS).contains(&count) {
        Ok(())
    } else {
        Err(LayoutError::BadSlotCount { which, count })
    }
}

/// Range of `len` bytes starting at `start` rounded up to `align` (a power of
/// two); `None` on overflow.
fn place(start: usize, align: usize, len: usize) -> Option<Range<usize>> {
    let start = start.checked_add(align - 1)? & !(align - 1);
    Some(start..start.checked_add(len)?)
}

impl Layout {
    /// Validates `params` and places every part of a window of `window_len`
    /// bytes, exactly as `docs/CHANNEL.md` says.
    pub fn compute(params: LayoutParams, window_len: usize) -> Result<Layout, LayoutError> {
        let layout = Self::place(params)?;
        if layout.buffers.end > window_len {
            return Err(LayoutError::DoesNotFit {
                needed: layout.buffers.end,
                window_len,
            });
        }
        Ok(layout)
    }

    /// The smallest window that fits `params`.
    pub fn window_len_for(params: LayoutParams) -> Result<usize, LayoutError> {
        Ok(Self::place(params)?.buffers.end)
    }

    /// Validates `params` and places everything, without a window size.
    fn place(params: LayoutParams) -> Result<Layout, LayoutError> {
        check_order("ctrl_order", params.ctrl_order)?;
        check_order("tx_order", params.tx_order)?;
        check_order("rx_order", params.rx_order)?;
        check_slots("tx_slots", params.tx_slots)?;
        check_slots("rx_slots", params.rx_slots)?;
        let size = params.slot_size;
        if !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&size) || size & (SLOT_ALIGN - 1) != 0 {
            return Err(LayoutError::BadSlotSize(size));
        }
        let overflow = LayoutError::DoesNotFit {
            needed: usize::MAX,
            window_len: usize::MAX,
        };
        let slots = usize::from(params.tx_slots) + usize::from(params.rx_slots);
        let buffer_len = slots.checked_mul(size as usize).ok_or(overflow)?;
        let ctrl = place(
            HEADER_SIZE,
            BUFFER_ALIGN,
            ring_bytes::<CtrlRequest, CtrlResponse>(params.ctrl_order),
        );
        let ctrl = ctrl.ok_or(overflow)?;
        let tx = place(
            ctrl.end,
            RING_ALIGN,
            ring_bytes::<TxRequest, TxResponse>(params.tx_order),
        );
        let tx = tx.ok_or(overflow)?;
        let rx = place(
            tx.end,
            RING_ALIGN,
            ring_bytes::<RxRequest, RxResponse>(params.rx_order),
        );
        let rx = rx.ok_or(overflow)?;
        let buffers = place(rx.end, BUFFER_ALIGN, buffer_len).ok_or(overflow)?;
        Ok(Layout {
            params,
            ctrl,
            tx,
            rx,
            buffers,
        })
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.params.slot_size as usize
    }

    /// The TX part of the buffer area.
    pub fn tx_buffers(&self) -> Range<usize> {
        let start = self.buffers.start;
        let len = usize::from(self.params.tx_slots).saturating_mul(self.slot_size());
        start..start.saturating_add(len)
    }

    /// The RX part of the buffer area.
    pub fn rx_buffers(&self) -> Range<usize> {
        self.tx_buffers().end..self.buffers.end
    }

    /// The bytes of TX slot `slot`, or `None` if there is no such slot (use it
    /// to validate a slot number taken from a descriptor).
    pub fn tx_slot(&self, slot: u16) -> Option<Range<usize>> {
        (slot < self.params.tx_slots).then(|| self.slot_at(self.tx_buffers().start, slot))
    }

    /// The bytes of RX slot `slot`, or `None` if there is no such slot.
    pub fn rx_slot(&self, slot: u16) -> Option<Range<usize>> {
        (slot < self.params.rx_slots).then(|| self.slot_at(self.rx_buffers().start, slot))
    }

    fn slot_at(&self, base: usize, slot: u16) -> Range<usize> {
        let start = base.saturating_add(usize::from(slot).saturating_mul(self.slot_size()));
        start..start.saturating_add(self.slot_size())
    }
}

#[cfg(test)]
mod tests;
