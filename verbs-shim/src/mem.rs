//! CPU access to slot buffers. This is the one module of the core that holds
//! `unsafe`: it turns a slot whose token the caller owns into a slice.
//!
//! The region is a [`ring::Window`]: heap memory for a local provider, or the
//! shared window for the guest-side `front` provider. A slice is only ever
//! made for a slot whose token is borrowed for the slice's lifetime, so while
//! it lives the device does not own that slot and, by protocol, does not
//! touch it. (A hostile back end could still write a slot it does not own,
//! even while the guest reads it. `ipoib` reads the GRH area and its own
//! headers field by field with bounds checks, and hands smoltcp a private
//! copy made with [`RxArea::copy_out`]: smoltcp reads some fields twice.
//! CHANNEL.md, "Trust model", records this decision and how it is tested.)

use core::marker::PhantomData;

use ring::Window;

use crate::slot::{RxSlot, SlotLayout, TxSlot};

/// Access to the buffers of one provider, split into TX and RX halves.
pub struct SlotBuffers<'a> {
    pub tx: TxArea<'a>,
    pub rx: RxArea<'a>,
}

/// Write access to TX slots the caller owns.
pub struct TxArea<'a> {
    base: *mut u8,
    layout: SlotLayout,
    _region: PhantomData<&'a mut [u8]>,
}

/// Read access to RX slots the caller owns.
#[derive(Clone, Copy)]
pub struct RxArea<'a> {
    base: *const u8,
    /// The same memory as `base`, for copies out with volatile reads.
    region: &'a Window,
    layout: SlotLayout,
    _region: PhantomData<&'a [u8]>,
}

impl<'a> SlotBuffers<'a> {
    /// Builds the accessors for `region`, which must hold `layout`.
    ///
    /// Returns `None` if the region is too small for the layout. The caller
    /// (a provider) must hold `&mut self` for `'a`, so that only one
    /// `SlotBuffers` exists for a region at a time.
    pub(crate) fn new(region: &'a Window, layout: SlotLayout) -> Option<SlotBuffers<'a>> {
        if region.len() < layout.region_len() {
            return None;
        }
        let base = region.as_ptr();
        Some(SlotBuffers {
            tx: TxArea {
                base,
                layout,
                _region: PhantomData,
            },
            rx: RxArea {
                base,
                region,
                layout,
                _region: PhantomData,
            },
        })
    }
}

impl<'a> SlotBuffers<'a> {
    /// Accessors that reach no slot at all.
    pub(crate) fn empty(region: &'a Window) -> SlotBuffers<'a> {
        let layout = SlotLayout {
            tx_count: 0,
            rx_count: 0,
            slot_size: 0,
        };
        let base = region.as_ptr();
        SlotBuffers {
            tx: TxArea {
                base,
                layout,
                _region: PhantomData,
            },
            rx: RxArea {
                base,
                region,
                layout,
                _region: PhantomData,
            },
        }
    }
}

impl TxArea<'_> {
    /// The whole TX slot, `slot_size` bytes.
    pub fn slot_mut(&mut self, slot: &TxSlot) -> &mut [u8] {
        match self.layout.tx_offset(slot.index()) {
            // SAFETY: `tx_offset` checked the index against the layout and
            // `SlotBuffers::new` checked the region holds the layout, so the
            // range is inside the window, which lives for 'a. The caller
            // holds the slot's token and `&mut self`, so no other reference
            // to this slot exists; TX and RX ranges are disjoint.
            Some(offset) => unsafe {
                core::slice::from_raw_parts_mut(
                    self.base.add(offset),
                    self.layout.slot_size as usize,
                )
            },
            None => &mut [],
        }
    }

    pub fn slot_size(&self) -> usize {
        self.layout.slot_size as usize
    }
}

impl<'a> RxArea<'a> {
    /// The whole RX slot, `slot_size` bytes (GRH area first).
    pub fn slot(&self, slot: &RxSlot) -> &'a [u8] {
        match self.layout.rx_offset(slot.index()) {
            // SAFETY: the range is inside the window (see `TxArea::slot_mut`)
            // and the window lives for 'a. The caller owns the slot, so the
            // device does not write it while the slice lives; RX slots are
            // only ever read through this type.
            Some(offset) => unsafe {
                core::slice::from_raw_parts(self.base.add(offset), self.layout.slot_size as usize)
            },
            None => &[],
        }
    }

    pub fn slot_size(&self) -> usize {
        self.layout.slot_size as usize
    }

    /// Copies `dst.len()` bytes of the slot, starting `offset` bytes into
    /// it, into private memory (volatile reads, once each), so that what the
    /// caller then parses cannot change under it, whoever else can write
    /// the memory. Returns false, copying nothing, if the range leaves the
    /// slot.
    ///
    /// This is how packets are handed to a parser that reads a field more
    /// than once (smoltcp checks a length and then slices by it): over the
    /// guest channel a hostile back end could change the field in between.
    #[inline]
    pub fn copy_out(&self, slot: &RxSlot, offset: usize, dst: &mut [u8]) -> bool {
        let Some(start) = self.layout.rx_offset(slot.index()) else {
            return false;
        };
        let fits = offset
            .checked_add(dst.len())
            .is_some_and(|end| end <= self.layout.slot_size as usize);
        fits && self.region.read_bytes(start + offset, dst).is_ok()
    }
}

/// The big TX slot at `offset` of `region` (`len` bytes) as a slice, for
/// [`crate::rc::BigArea::tx_slot_mut`]: the caller lends the slot's token
/// mutably for the slice's lifetime, so no second slice of that slot (and
/// no post of it) exists meanwhile. `None` if the range leaves the region.
pub(crate) fn big_tx_slice<'s>(
    region: &'s Window,
    offset: usize,
    len: usize,
    _token: &'s mut crate::rc::BigTxSlot,
) -> Option<&'s mut [u8]> {
    let end = offset.checked_add(len)?;
    if end > region.len() {
        return None;
    }
    // SAFETY: `offset..end` was just checked to lie inside the window,
    // which lives for 's. The token of the slot, borrowed mutably for 's,
    // is the only way to name the slot: while the slice lives the device
    // does not own the slot (it is not posted) and no other slice of it can
    // be made. The peer-write caveat of this module's documentation holds
    // as for TX slots.
    Some(unsafe { core::slice::from_raw_parts_mut(region.as_ptr().add(offset), len) })
}
