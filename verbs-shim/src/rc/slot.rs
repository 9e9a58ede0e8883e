//! The big-slot pool of connected mode: its shape and the tokens that own
//! its slots.
//!
//! A provider that serves RC owns a second buffer region beside the UD one:
//! `tx_count` big TX slots followed by `rx_count` big RX slots, each
//! `slot_size` bytes (up to 64 KiB, one RC message each). Tokens work as
//! for the UD slots ([`crate::TxSlot`]): handed out once, moved into the
//! provider by a post, handed back by the completion.

use core::fmt;

/// The shape of a big-slot region.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BigLayout {
    pub tx_count: u16,
    pub rx_count: u16,
    pub slot_size: u32,
}

impl BigLayout {
    /// No big slots at all.
    pub const NONE: BigLayout = BigLayout {
        tx_count: 0,
        rx_count: 0,
        slot_size: 0,
    };

    /// Byte offset of big TX slot `index` within the region, if it exists.
    pub fn tx_offset(&self, index: u16) -> Option<usize> {
        (index < self.tx_count).then(|| usize::from(index) * self.slot_size as usize)
    }

    /// Byte offset of big RX slot `index` within the region, if it exists.
    pub fn rx_offset(&self, index: u16) -> Option<usize> {
        (index < self.rx_count)
            .then(|| (usize::from(self.tx_count) + usize::from(index)) * self.slot_size as usize)
    }

    /// Total bytes the region needs.
    pub fn region_len(&self) -> usize {
        (usize::from(self.tx_count) + usize::from(self.rx_count)) * self.slot_size as usize
    }
}

/// Ownership of one big TX slot.
#[derive(PartialEq, Eq)]
pub struct BigTxSlot {
    index: u16,
}

/// Ownership of one big RX slot.
#[derive(PartialEq, Eq)]
pub struct BigRxSlot {
    index: u16,
}

impl BigTxSlot {
    /// Only providers mint tokens, once per slot.
    pub(crate) const fn mint(index: u16) -> BigTxSlot {
        BigTxSlot { index }
    }
    pub const fn index(&self) -> u16 {
        self.index
    }
}

impl BigRxSlot {
    /// Only providers mint tokens, once per slot.
    pub(crate) const fn mint(index: u16) -> BigRxSlot {
        BigRxSlot { index }
    }
    pub const fn index(&self) -> u16 {
        self.index
    }
}

impl fmt::Debug for BigTxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BigTxSlot({})", self.index)
    }
}

impl fmt::Debug for BigRxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BigRxSlot({})", self.index)
    }
}

/// Hands out every big TX token of a layout, once.
#[derive(Debug)]
pub struct BigTxSlots {
    next: u16,
    end: u16,
}

/// Hands out every big RX token of a layout, once.
#[derive(Debug)]
pub struct BigRxSlots {
    next: u16,
    end: u16,
}

impl BigTxSlots {
    pub(crate) fn all(layout: &BigLayout) -> BigTxSlots {
        BigTxSlots {
            next: 0,
            end: layout.tx_count,
        }
    }
}

impl BigRxSlots {
    pub(crate) fn all(layout: &BigLayout) -> BigRxSlots {
        BigRxSlots {
            next: 0,
            end: layout.rx_count,
        }
    }
}

impl Iterator for BigTxSlots {
    type Item = BigTxSlot;
    fn next(&mut self) -> Option<BigTxSlot> {
        (self.next < self.end).then(|| {
            self.next += 1;
            BigTxSlot::mint(self.next - 1)
        })
    }
}

impl Iterator for BigRxSlots {
    type Item = BigRxSlot;
    fn next(&mut self) -> Option<BigRxSlot> {
        (self.next < self.end).then(|| {
            self.next += 1;
            BigRxSlot::mint(self.next - 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_layout() {
        let l = BigLayout {
            tx_count: 2,
            rx_count: 3,
            slot_size: 65536,
        };
        assert_eq!(l.tx_offset(1), Some(65536));
        assert_eq!(l.tx_offset(2), None);
        assert_eq!(l.rx_offset(0), Some(2 * 65536));
        assert_eq!(l.rx_offset(2), Some(4 * 65536));
        assert_eq!(l.rx_offset(3), None);
        assert_eq!(l.region_len(), 5 * 65536);
        assert_eq!(BigTxSlots::all(&l).count(), 2);
        assert_eq!(BigRxSlots::all(&l).count(), 3);
        assert_eq!(BigLayout::NONE.region_len(), 0);
    }
}
