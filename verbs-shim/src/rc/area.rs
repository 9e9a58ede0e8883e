//! CPU access to big slots: by copy through the region's [`Window`], or,
//! for a big TX slot whose token the caller lends mutably, as a slice
//! ([`BigArea::tx_slot_mut`], made in `mem`) so a frame is written in place.

use ring::Window;

use super::slot::{BigLayout, BigRxSlot, BigTxSlot};

/// Reads and writes big slots whose tokens the caller holds.
pub struct BigArea<'a> {
    region: &'a Window,
    layout: BigLayout,
}

impl<'a> BigArea<'a> {
    /// Access to `region`, laid out as `layout`. Offsets are checked on
    /// every access, so a region smaller than the layout only refuses the
    /// slots it does not hold.
    pub fn new(region: &'a Window, layout: BigLayout) -> BigArea<'a> {
        BigArea { region, layout }
    }

    /// The region the slots are in (a clone keeps it alive).
    pub fn region(&self) -> &'a Window {
        self.region
    }

    /// The shape of the slots.
    pub fn layout(&self) -> BigLayout {
        self.layout
    }

    /// Big TX slot `slot` as a slice, to write a frame in place; its token
    /// is lent for as long as the slice lives. `None` for a slot the layout
    /// or the region does not hold.
    pub fn tx_slot_mut<'s>(&self, slot: &'s mut BigTxSlot) -> Option<&'s mut [u8]>
    where
        'a: 's,
    {
        let base = self.layout.tx_offset(slot.index())?;
        crate::mem::big_tx_slice(self.region, base, self.layout.slot_size as usize, slot)
    }

    /// The size of every big slot.
    pub fn slot_size(&self) -> usize {
        self.layout.slot_size as usize
    }

    /// Writes `src` into `slot` at `offset`; false (nothing written) if it
    /// does not fit in the slot.
    pub fn write(&mut self, slot: &BigTxSlot, offset: usize, src: &[u8]) -> bool {
        let Some(base) = self.layout.tx_offset(slot.index()) else {
            return false;
        };
        self.fits(offset, src.len()) && self.region.write_bytes(base + offset, src).is_ok()
    }

    /// Copies `dst.len()` bytes of `slot` from `offset` out, once each;
    /// false (nothing copied) if the range leaves the slot.
    pub fn read(&self, slot: &BigRxSlot, offset: usize, dst: &mut [u8]) -> bool {
        let Some(base) = self.layout.rx_offset(slot.index()) else {
            return false;
        };
        self.fits(offset, dst.len()) && self.region.read_bytes(base + offset, dst).is_ok()
    }

    fn fits(&self, offset: usize, len: usize) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.layout.slot_size as usize)
    }
}
