//! The pure part of a send whose head comes from the back end's own memory
//! ([`crate::Verbs::post_send_with_head`]): where each TX slot's cell in the
//! header arena is, and the gather list of the work request.
//!
//! The header arena is one [`HEAD_CELL`]-byte cell per TX slot, in memory
//! the back end allocates and registers itself (the guest cannot reach it).
//! A send of slot `i` with a head of `h` bytes copies the head into cell
//! `i` and posts two scatter/gather entries: the cell's `h` bytes, then the
//! slot's bytes `h..len`. Cell `i` is written only while the caller holds
//! slot `i`'s token, and the token stays with the provider until the send
//! completes, so a cell is never rewritten while the HCA may read it.

use crate::hca::MAX_SEND_HEAD;

/// Bytes of one arena cell: the longest head a send may carry.
pub(super) const HEAD_CELL: usize = MAX_SEND_HEAD;

/// Scatter/gather entries a send with a head needs at most (the QP is
/// created with room for them).
pub(super) const HEAD_SEND_SGES: u32 = 2;

/// One scatter/gather entry, before it becomes an `ibv_sge`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// A registered area: where it is, how long, and its local key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Registered {
    pub base: u64,
    pub len: usize,
    pub lkey: u32,
}

impl Registered {
    /// The entry for `len` bytes at `offset`, or `None` if that is not
    /// inside the area.
    pub(super) fn sge(&self, offset: usize, len: usize) -> Option<Sge> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(Sge {
            addr: self.base.checked_add(u64::try_from(offset).ok()?)?,
            length: u32::try_from(len).ok()?,
            lkey: self.lkey,
        })
    }
}

/// Bytes of the arena for `tx_count` TX slots.
pub(super) const fn arena_len(tx_count: usize) -> usize {
    tx_count.saturating_mul(HEAD_CELL)
}

/// Where slot `index`'s cell starts in an arena for `tx_count` slots.
pub(super) fn cell_offset(index: u16, tx_count: usize) -> Option<usize> {
    let index = usize::from(index);
    (index < tx_count).then(|| index * HEAD_CELL)
}

/// The gather list of a send of `len` bytes whose first `head_len` are in
/// cell `index` of `arena` and the rest in `region` at `slot_offset +
/// head_len`: one entry when the head is empty or the whole frame, two
/// otherwise. `None` if anything falls outside its area or the head is
/// longer than a cell or than the frame.
pub(super) fn head_send_sges(
    region: &Registered,
    slot_offset: usize,
    arena: &Registered,
    index: u16,
    len: usize,
    head_len: usize,
) -> Option<([Sge; 2], usize)> {
    if head_len > HEAD_CELL || head_len > len {
        return None;
    }
    let tail_len = len - head_len;
    let tail = region.sge(slot_offset.checked_add(head_len)?, tail_len)?;
    if head_len == 0 {
        return Some(([tail, tail], 1));
    }
    let cell = cell_offset(index, arena.len / HEAD_CELL)?;
    let head = arena.sge(cell, head_len)?;
    if tail_len == 0 {
        return Some(([head, head], 1));
    }
    Some(([head, tail], 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: Registered = Registered {
        base: 0x7f00_0000_0000,
        len: 32 * 4096,
        lkey: 0x1111,
    };
    const ARENA: Registered = Registered {
        base: 0x5500_0000_0000,
        len: arena_len(32),
        lkey: 0x2222,
    };

    #[test]
    fn cells_are_one_per_slot() {
        assert_eq!(arena_len(32), 32 * 64);
        assert_eq!(cell_offset(0, 32), Some(0));
        assert_eq!(cell_offset(5, 32), Some(5 * 64));
        assert_eq!(cell_offset(31, 32), Some(31 * 64));
        assert_eq!(cell_offset(32, 32), None);
        assert_eq!(cell_offset(u16::MAX, 32), None);
    }

    #[test]
    fn a_head_and_a_tail_make_two_entries() {
        // Slot 3 at 3 * 4096, a 1000-byte frame, a 64-byte head.
        let (sges, n) = head_send_sges(&REGION, 3 * 4096, &ARENA, 3, 1000, 64).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            sges[0],
            Sge {
                addr: 0x5500_0000_0000 + 3 * 64,
                length: 64,
                lkey: 0x2222,
            }
        );
        assert_eq!(
            sges[1],
            Sge {
                addr: 0x7f00_0000_0000 + 3 * 4096 + 64,
                length: 936,
                lkey: 0x1111,
            }
        );
        assert_eq!(sges[0].length + sges[1].length, 1000);
    }

    #[test]
    fn a_short_frame_is_all_head() {
        let (sges, n) = head_send_sges(&REGION, 4096, &ARENA, 1, 42, 42).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            sges[0],
            Sge {
                addr: 0x5500_0000_0000 + 64,
                length: 42,
                lkey: 0x2222,
            }
        );
    }

    #[test]
    fn an_empty_head_is_the_plain_send() {
        let (sges, n) = head_send_sges(&REGION, 4096, &ARENA, 1, 300, 0).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            sges[0],
            Sge {
                addr: 0x7f00_0000_0000 + 4096,
                length: 300,
                lkey: 0x1111,
            }
        );
    }

    #[test]
    fn out_of_range_sends_are_refused() {
        // Head longer than a cell or than the frame.
        assert_eq!(head_send_sges(&REGION, 0, &ARENA, 0, 1000, 65), None);
        assert_eq!(head_send_sges(&REGION, 0, &ARENA, 0, 10, 20), None);
        // A slot index past the arena.
        assert_eq!(head_send_sges(&REGION, 0, &ARENA, 32, 1000, 64), None);
        // A tail past the region.
        let last = 31 * 4096;
        assert!(head_send_sges(&REGION, last, &ARENA, 31, 4096, 64).is_some());
        assert_eq!(head_send_sges(&REGION, last, &ARENA, 31, 4097, 64), None);
        assert_eq!(
            head_send_sges(&REGION, usize::MAX, &ARENA, 0, 100, 64),
            None
        );
    }
}
