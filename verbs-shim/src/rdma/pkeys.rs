//! Finding a guest's P_Key in the port's P_Key table.
//!
//! A UD QP names its partition by an index into the port's P_Key table, so
//! each guest's QP must get the index of the guest's own P_Key, never the
//! context's default (that would let a guest out of its partition).
//!
//! The rule, next to Linux IPoIB's (`ib_find_pkey`), which matches on the
//! low 15 bits and prefers a full-member entry:
//! - entries match when their partitions (low 15 bits) are equal and not
//!   zero;
//! - a guest configured as a **full** member (bit 15 set) gets a full-member
//!   entry if the table has one, else a limited-member entry of the same
//!   partition (it then is a limited member; the caller logs it);
//! - a guest configured as a **limited** member gets a limited-member entry
//!   only: a full-member entry would grant it more than its configuration
//!   says (talking to other limited members), so without one it is refused;
//! - no matching entry: refused ([`RdmaError::PkeyNotInTable`]). There is
//!   no fallback to index 0.

use alloc::vec::Vec;

use super::error::RdmaError;
use super::ffi::Device;
use crate::types::PKey;

/// Where a wanted P_Key sits in the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct PkeySlot {
    /// The index for the QP's `pkey_index`.
    pub index: u16,
    /// The table's entry at `index` (its membership bit may differ from the
    /// wanted key's: see the module rule).
    pub pkey: PKey,
}

/// Applies the module rule to `table` (entries in index order).
pub(super) fn find_pkey(table: &[u16], wanted: PKey) -> Option<PkeySlot> {
    if wanted.partition() == 0 {
        return None;
    }
    let mut limited = None;
    for (i, &entry) in table.iter().enumerate() {
        let entry = PKey(entry);
        if entry.partition() != wanted.partition() {
            continue;
        }
        let Ok(index) = u16::try_from(i) else {
            break;
        };
        let slot = PkeySlot { index, pkey: entry };
        match (wanted.is_full_member(), entry.is_full_member()) {
            (true, true) => return Some(slot),
            (_, false) => {
                if limited.is_none() {
                    limited = Some(slot);
                }
            }
            // A limited member never gets a full-member entry.
            (false, true) => {}
        }
    }
    limited
}

/// Reads the port's P_Key table (`ibv_query_pkey` for each index). Entries
/// that cannot be read count as empty.
pub(super) fn read_table(dev: &Device, port: u8, len: u16) -> Vec<u16> {
    (0..len)
        .map(|i| dev.query_pkey(port, i).unwrap_or(0))
        .collect()
}

/// Finds `wanted` in the table of `device` port `port`, or says why not.
pub(super) fn lookup(
    table: &[u16],
    wanted: PKey,
    device: &str,
    port: u8,
) -> Result<PkeySlot, RdmaError> {
    let slot = find_pkey(table, wanted).ok_or_else(|| RdmaError::PkeyNotInTable {
        device: device.into(),
        port,
        pkey: wanted.0,
        table: table.iter().copied().filter(|k| k & 0x7fff != 0).collect(),
    })?;
    if slot.pkey != wanted {
        log::warn!(
            "rdma: {device} port {port}: P_Key {:#06x} is only in the table as {:#06x} \
             (index {}): the guest is a limited member of that partition",
            wanted.0,
            slot.pkey.0,
            slot.index
        );
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u16, pkey: u16) -> Option<PkeySlot> {
        Some(PkeySlot {
            index,
            pkey: PKey(pkey),
        })
    }

    #[test]
    fn soft_roce_table_has_only_the_default_partition() {
        let table = [0xffff, 0, 0];
        assert_eq!(find_pkey(&table, PKey(0xffff)), slot(0, 0xffff));
        assert_eq!(find_pkey(&table, PKey(0x8001)), None);
        // A limited member of the default partition is not given 0xffff.
        assert_eq!(find_pkey(&table, PKey(0x7fff)), None);
    }

    #[test]
    fn each_key_gets_its_own_index() {
        let table = [0xffff, 0x8001, 0x8002, 0x0003];
        assert_eq!(find_pkey(&table, PKey(0x8001)), slot(1, 0x8001));
        assert_eq!(find_pkey(&table, PKey(0x8002)), slot(2, 0x8002));
        assert_eq!(find_pkey(&table, PKey(0x0003)), slot(3, 0x0003));
        assert_eq!(find_pkey(&table, PKey(0x8004)), None);
    }

    #[test]
    fn a_full_member_prefers_a_full_entry_and_falls_back_to_limited() {
        assert_eq!(find_pkey(&[0x0005, 0x8005], PKey(0x8005)), slot(1, 0x8005));
        assert_eq!(find_pkey(&[0x0005, 0xffff], PKey(0x8005)), slot(0, 0x0005));
    }

    #[test]
    fn a_limited_member_gets_only_a_limited_entry() {
        assert_eq!(find_pkey(&[0x8005, 0x0005], PKey(0x0005)), slot(1, 0x0005));
        assert_eq!(find_pkey(&[0x8005], PKey(0x0005)), None);
    }

    #[test]
    fn empty_entries_and_the_invalid_partition_never_match() {
        assert_eq!(find_pkey(&[0, 0x8000], PKey(0x8000)), None);
        assert_eq!(find_pkey(&[0, 0x8000], PKey(0)), None);
    }

    #[test]
    fn the_refusal_names_the_key_and_the_port() {
        let err = lookup(&[0xffff, 0], PKey(0x8001), "rxe0", 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("0x8001"), "{text}");
        assert!(text.contains("rxe0 port 1"), "{text}");
        assert!(text.contains("0xffff"), "{text}");
    }
}
