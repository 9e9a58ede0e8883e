//! Pre-registered packet buffers and the typed tokens that own them.
//!
//! A provider owns one buffer region, registered once: `tx_count` TX slots
//! followed by `rx_count` RX slots, each `slot_size` bytes. Slot `i` of the
//! TX range starts at `i * slot_size`; RX slot `j` at
//! `(tx_count + j) * slot_size`.
//!
//! A [`TxSlot`] or [`RxSlot`] is the right to touch one slot. Tokens are not
//! `Clone`: a provider hands each one out once ([`crate::Verbs::take_slots`]),
//! posting a slot moves the token into the provider, and the completion hands
//! it back. A slot can therefore never be posted twice, nor written while the
//! device owns it.

use core::fmt;

/// The shape of a provider's buffer region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SlotLayout {
    pub tx_count: u16,
    pub rx_count: u16,
    pub slot_size: u32,
}

impl SlotLayout {
    /// Byte offset of TX slot `index` within the region, if it exists.
    pub fn tx_offset(&self, index: u16) -> Option<usize> {
        (index < self.tx_count).then(|| index as usize * self.slot_size as usize)
    }

    /// Byte offset of RX slot `index` within the region, if it exists.
    pub fn rx_offset(&self, index: u16) -> Option<usize> {
        (index < self.rx_count)
            .then(|| (self.tx_count as usize + index as usize) * self.slot_size as usize)
    }

    /// Total bytes the region needs.
    pub fn region_len(&self) -> usize {
        (self.tx_count as usize + self.rx_count as usize) * self.slot_size as usize
    }
}

/// Ownership of one TX slot.
#[derive(PartialEq, Eq)]
pub struct TxSlot {
    index: u16,
}

/// Ownership of one RX slot.
#[derive(PartialEq, Eq)]
pub struct RxSlot {
    index: u16,
}

impl TxSlot {
    /// Only providers mint tokens, once per slot.
    pub(crate) const fn mint(index: u16) -> TxSlot {
        TxSlot { index }
    }
    pub const fn index(&self) -> u16 {
        self.index
    }
}

impl RxSlot {
    /// Only providers mint tokens, once per slot.
    pub(crate) const fn mint(index: u16) -> RxSlot {
        RxSlot { index }
    }
    pub const fn index(&self) -> u16 {
        self.index
    }
}

impl fmt::Debug for TxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxSlot({})", self.index)
    }
}

impl fmt::Debug for RxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RxSlot({})", self.index)
    }
}

/// Hands out every TX token of a layout, once.
#[derive(Debug)]
pub struct TxSlots {
    next: u16,
    end: u16,
}

/// Hands out every RX token of a layout, once.
#[derive(Debug)]
pub struct RxSlots {
    next: u16,
    end: u16,
}

impl TxSlots {
    pub(crate) fn all(layout: &SlotLayout) -> TxSlots {
        TxSlots {
            next: 0,
            end: layout.tx_count,
        }
    }
}

impl RxSlots {
    pub(crate) fn all(layout: &SlotLayout) -> RxSlots {
        RxSlots {
            next: 0,
            end: layout.rx_count,
        }
    }
}

impl Iterator for TxSlots {
    type Item = TxSlot;
    fn next(&mut self) -> Option<TxSlot> {
        (self.next < self.end).then(|| {
            self.next += 1;
            TxSlot::mint(self.next - 1)
        })
    }
}

impl Iterator for RxSlots {
    type Item = RxSlot;
    fn next(&mut self) -> Option<RxSlot> {
        (self.next < self.end).then(|| {
            self.next += 1;
            RxSlot::mint(self.next - 1)
        })
    }
}
