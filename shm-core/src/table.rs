//! One hash table for every lookup the bus needs, keyed by
//! (tag, owner offset, 64-bit key): handle IDs per peer, a peer's handle
//! for a node, slices by offset, peers by serial, users by UID, fair-share
//! records and fd carriers by nonce. Open addressing with linear probing
//! and backward-shift deletion: a removal moves the entries behind it
//! back, so no tombstones accumulate and the table is rebuilt only when it
//! grows. Every write is logged (txn rule 2) or into a fresh block (rule 3).

use crate::alloc;
use crate::errno::Result;
use crate::shm::Cell;
use crate::txn::Txn;

const EMPTY: u64 = 0;
const MIN_CAP: u64 = 1024;
const SLOT: u64 = 3;

fn key1(tag: u64, owner: u64) -> u64 {
    debug_assert!(owner < 1 << 56);
    (tag << 56) | owner
}

fn hash(k1: u64, k2: u64) -> u64 {
    let mut h = k1.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k2;
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 29;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 32)
}

fn slots<'a>(tx: &Txn<'a>) -> &'a [Cell<u64>] {
    let hdr = tx.hdr();
    let cap = hdr.table_cap.get();
    if cap == 0 {
        return &[];
    }
    tx.domain().seg.cells(hdr.table.get(), (cap * SLOT) as usize)
}

/// Index of the slot holding the key, if present.
fn find(tx: &Txn, k1: u64, k2: u64) -> Option<usize> {
    let s = slots(tx);
    let cap = (s.len() as u64 / SLOT) as usize;
    if cap == 0 {
        return None;
    }
    let mut i = (hash(k1, k2) as usize) & (cap - 1);
    loop {
        let k = s[i * 3].get();
        if k == EMPTY {
            return None;
        }
        if k == k1 && s[i * 3 + 1].get() == k2 {
            return Some(i);
        }
        i = (i + 1) & (cap - 1);
    }
}

pub fn get(tx: &Txn, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let k1 = key1(tag, owner);
    find(tx, k1, key).map(|i| slots(tx)[i * 3 + 2].get())
}

/// Inserts a key that is not present.
pub fn insert(tx: &Txn, tag: u64, owner: u64, key: u64, val: u64) -> Result<()> {
    let hdr = tx.hdr();
    if (hdr.table_used.get() + 1) * 2 > hdr.table_cap.get() {
        rebuild(tx)?;
    }
    let k1 = key1(tag, owner);
    debug_assert!(find(tx, k1, key).is_none(), "duplicate table key");
    let s = slots(tx);
    let cap = (s.len() as u64 / SLOT) as usize;
    let mut i = (hash(k1, key) as usize) & (cap - 1);
    while s[i * 3].get() != EMPTY {
        i = (i + 1) & (cap - 1);
    }
    tx.set(&s[i * 3 + 1], key);
    tx.set(&s[i * 3 + 2], val);
    tx.set(&s[i * 3], k1);
    tx.add(&hdr.table_used, 1);
    Ok(())
}

/// Removes a key; returns its value. The entries of the probe run behind
/// it that would no longer be found move back into the hole.
pub fn remove(tx: &Txn, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let mut hole = find(tx, key1(tag, owner), key)?;
    let s = slots(tx);
    let mask = (s.len() / SLOT as usize) - 1;
    let v = s[hole * 3 + 2].get();
    let mut j = hole;
    loop {
        j = (j + 1) & mask;
        let k = s[j * 3].get();
        if k == EMPTY {
            break;
        }
        let home = (hash(k, s[j * 3 + 1].get()) as usize) & mask;
        // Entry j may fill the hole unless its home lies cyclically in
        // (hole, j]: then it would be found before reaching the hole.
        let stays = if hole < j { home > hole && home <= j } else { home > hole || home <= j };
        if stays {
            continue;
        }
        for w in 0..3 {
            tx.set(&s[hole * 3 + w], s[j * 3 + w].get());
        }
        hole = j;
    }
    tx.set(&s[hole * 3], EMPTY);
    tx.add(&tx.hdr().table_used, -1);
    Some(v)
}

/// Moves every live entry into a fresh block of a suitable size.
fn rebuild(tx: &Txn) -> Result<()> {
    let hdr = tx.hdr();
    let used = hdr.table_used.get();
    let cap = ((used + 1) * 4).next_power_of_two().max(MIN_CAP);
    let off = alloc::alloc(tx, cap * SLOT * 8)?;
    let fresh = tx.domain().seg.cells(off, (cap * SLOT) as usize);
    for chunk in slots(tx).chunks(3) {
        let k = chunk[0].get();
        if k == EMPTY {
            continue;
        }
        let mut i = (hash(k, chunk[1].get()) as usize) & (cap as usize - 1);
        while fresh[i * 3].get() != EMPTY {
            i = (i + 1) & (cap as usize - 1);
        }
        // Fresh block: unlogged initialisation (txn rule 3).
        fresh[i * 3].raw_set(k);
        fresh[i * 3 + 1].raw_set(chunk[1].get());
        fresh[i * 3 + 2].raw_set(chunk[2].get());
    }
    let old = (hdr.table.get(), hdr.table_cap.get());
    tx.set(&hdr.table, off);
    tx.set(&hdr.table_cap, cap);
    if old.1 != 0 {
        alloc::free(tx, old.0, old.1 * SLOT * 8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;
    use crate::layout::TAG_SLICE;
    use std::collections::hash_map::Entry;
    use std::collections::HashMap;

    /// Random inserts and removals agree with a map at every step, and the
    /// table only grows: a steady churn never rebuilds it.
    #[test]
    fn churn_keeps_every_key_findable_without_rebuilds() {
        let dir = std::env::temp_dir().join(format!("bus1-table-{}", std::process::id()));
        let dom = Domain::attach(&dir).unwrap();
        let mut model = HashMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut caps = Vec::new();
        for round in 0..40 {
            let tx = dom.lock().unwrap();
            for _ in 0..500 {
                // few owners and small keys: long probe runs and wraps
                let (owner, key) = (8 + (next() % 3) * 8, next() % 300);
                let v = next() | 1;
                match model.entry((owner, key)) {
                    Entry::Occupied(e) => assert_eq!(remove(&tx, TAG_SLICE, owner, key), Some(e.remove())),
                    Entry::Vacant(e) => {
                        insert(&tx, TAG_SLICE, owner, key, v).unwrap();
                        e.insert(v);
                    }
                }
            }
            for (&(o, k), &v) in &model {
                assert_eq!(get(&tx, TAG_SLICE, o, k), Some(v), "round {round}");
            }
            for k in 300..320 {
                assert_eq!(get(&tx, TAG_SLICE, 8, k), None);
            }
            assert_eq!(tx.hdr().table_used.get(), model.len() as u64);
            caps.push(tx.hdr().table.get());
            tx.commit().unwrap();
        }
        // one table once the live set stopped growing
        assert!(caps[10..].windows(2).all(|w| w[0] == w[1]), "table rebuilt under churn");
        drop(dom);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
