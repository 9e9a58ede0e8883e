//! Where everything sits in the window, computed the same way on both sides
//! from the four guest-chosen parameters (`docs/CHANNEL.md`, "Window layout").
//! No offset is ever read from the window; every sum is checked.

use core::fmt;
use core::mem::size_of;
use core::ops::Range;

use crate::desc::{
    CmRequest, CmResponse, CtrlRequest, CtrlResponse, RxRequest, RxResponse, TxRequest, TxResponse,
};
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

/// Smallest CM ring order.
pub const MIN_CM_ORDER: u8 = 1;
/// Largest CM ring order.
pub const MAX_CM_ORDER: u8 = 8;
/// Largest number of big TX (or RX) slots.
pub const MAX_BIG_SLOTS: u16 = 256;
/// Smallest big slot size in bytes.
pub const MIN_BIG_SLOT_SIZE: u32 = 8192;
/// Largest big slot size in bytes (the connected MTU 65520 plus the 4-byte
/// IPoIB header, rounded up).
pub const MAX_BIG_SLOT_SIZE: u32 = 65536;
/// Big slot sizes are multiples of this.
pub const BIG_SLOT_ALIGN: u32 = 4096;

/// The guest-chosen parameters of connected mode (`docs/connected-mode.md`,
/// §5), written in the header only by a guest that asks for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BigParams {
    /// CM ring order (`1..=8`).
    pub cm_order: u8,
    /// Big TX slots (`1..=256`).
    pub tx_slots: u16,
    /// Big RX slots (`1..=256`).
    pub rx_slots: u16,
    /// Bytes per big slot (a multiple of 4096 in `8192..=65536`).
    pub slot_size: u32,
}

impl BigParams {
    /// 16 CM entries, 16 big TX and 32 big RX slots of 64 KiB (3 MiB).
    pub const DEFAULT: BigParams = BigParams {
        cm_order: 4,
        tx_slots: 16,
        rx_slots: 32,
        slot_size: MAX_BIG_SLOT_SIZE,
    };
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
    /// A [`BigParams`] field (`"cm_order"`, `"big_tx_slots"`,
    /// `"big_rx_slots"`, `"big_slot_size"`) is out of range.
    BadBigParam { field: &'static str, value: u32 },
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
            LayoutError::BadBigParam { field, value } => {
                write!(f, "{field} = {value} is out of range")
            }
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
    /// Connected mode's part, when the guest asked for it.
    pub big: Option<BigLayoutRanges>,
}

/// Where connected mode's parts sit: the CM ring right after the RX ring
/// (the buffer area moves up behind it), and the big-slot area after the
/// buffer area.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BigLayoutRanges {
    /// The parameters (validated).
    pub params: BigParams,
    /// CM ring (`CmRequest` / `CmResponse`), 64-aligned.
    pub cm: Range<usize>,
    /// Big TX slots then big RX slots, 4096-aligned.
    pub area: Range<usize>,
}

impl BigLayoutRanges {
    /// The bytes of big TX slot `slot` within the window, if it exists.
    pub fn tx_slot(&self, slot: u16) -> Option<Range<usize>> {
        (slot < self.params.tx_slots).then(|| self.slot_at(usize::from(slot)))
    }

    /// The bytes of big RX slot `slot` within the window, if it exists.
    pub fn rx_slot(&self, slot: u16) -> Option<Range<usize>> {
        (slot < self.params.rx_slots)
            .then(|| self.slot_at(usize::from(self.params.tx_slots) + usize::from(slot)))
    }

    fn slot_at(&self, index: usize) -> Range<usize> {
        let size = self.params.slot_size as usize;
        let start = self.area.start.saturating_add(index.saturating_mul(size));
        start..start.saturating_add(size)
    }
}

fn check_big(big: &BigParams) -> Result<(), LayoutError> {
    let bad = |field, value| Err(LayoutError::BadBigParam { field, value });
    if !(MIN_CM_ORDER..=MAX_CM_ORDER).contains(&big.cm_order) {
        return bad("cm_order", u32::from(big.cm_order));
    }
    if !(1..=MAX_BIG_SLOTS).contains(&big.tx_slots) {
        return bad("big_tx_slots", u32::from(big.tx_slots));
    }
    if !(1..=MAX_BIG_SLOTS).contains(&big.rx_slots) {
        return bad("big_rx_slots", u32::from(big.rx_slots));
    }
    let size = big.slot_size;
    if !(MIN_BIG_SLOT_SIZE..=MAX_BIG_SLOT_SIZE).contains(&size)
        || !size.is_multiple_of(BIG_SLOT_ALIGN)
    {
        return bad("big_slot_size", size);
    }
    Ok(())
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
        Self::compute_with(params, None, window_len)
    }

    /// Like [`Layout::compute`], with connected mode's parts when `big` is
    /// given (`docs/connected-mode.md`, §5). Without it the layout is
    /// exactly [`Layout::compute`]'s.
    pub fn compute_with(
        params: LayoutParams,
        big: Option<BigParams>,
        window_len: usize,
    ) -> Result<Layout, LayoutError> {
        let layout = Self::place(params, big)?;
        let end = layout.end();
        if end > window_len {
            return Err(LayoutError::DoesNotFit {
                needed: end,
                window_len,
            });
        }
        Ok(layout)
    }

    /// The smallest window that fits `params`.
    pub fn window_len_for(params: LayoutParams) -> Result<usize, LayoutError> {
        Self::window_len_with(params, None)
    }

    /// The smallest window that fits `params` and `big`.
    pub fn window_len_with(
        params: LayoutParams,
        big: Option<BigParams>,
    ) -> Result<usize, LayoutError> {
        Ok(Self::place(params, big)?.end())
    }

    /// The end of the last part.
    fn end(&self) -> usize {
        match &self.big {
            Some(big) => big.area.end,
            None => self.buffers.end,
        }
    }

    /// Validates `params` (and `big`) and places everything, without a
    /// window size.
    fn place(params: LayoutParams, big: Option<BigParams>) -> Result<Layout, LayoutError> {
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
        let (buffers, big) = match big {
            None => (
                place(rx.end, BUFFER_ALIGN, buffer_len).ok_or(overflow)?,
                None,
            ),
            Some(bp) => {
                check_big(&bp)?;
                let cm = place(
                    rx.end,
                    RING_ALIGN,
                    ring_bytes::<CmRequest, CmResponse>(bp.cm_order),
                )
                .ok_or(overflow)?;
                let buffers = place(cm.end, BUFFER_ALIGN, buffer_len).ok_or(overflow)?;
                let big_slots = usize::from(bp.tx_slots) + usize::from(bp.rx_slots);
                let big_len = big_slots
                    .checked_mul(bp.slot_size as usize)
                    .ok_or(overflow)?;
                let area = place(buffers.end, BUFFER_ALIGN, big_len).ok_or(overflow)?;
                (
                    buffers,
                    Some(BigLayoutRanges {
                        params: bp,
                        cm,
                        area,
                    }),
                )
            }
        };
        Ok(Layout {
            params,
            ctrl,
            tx,
            rx,
            buffers,
            big,
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
