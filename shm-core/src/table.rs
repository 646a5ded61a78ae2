//! One hash table for every lookup the bus needs, keyed by
//! (tag, owner offset, 64-bit key): handle IDs per peer, a peer's handle
//! for a node, slices by offset, peers by serial, users by UID, fair-share
//! records and fd carriers by nonce. Open addressing with linear probing;
//! it is rebuilt into a fresh block when it gets full or crowded with
//! tombstones, which keeps every write either logged or fresh (txn rule 3).

use crate::alloc;
use crate::errno::Result;
use crate::shm::Cell;
use crate::txn::Txn;

const EMPTY: u64 = 0;
const TOMB: u64 = 1;
const MIN_CAP: u64 = 1024;
const SLOT: u64 = 3;

fn key1(tag: u64, owner: u64) -> u64 {
    debug_assert!(owner < 1 << 56);
    (tag << 56) | owner
}

pub(crate) fn hash(k1: u64, k2: u64) -> u64 {
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
    for _ in 0..cap {
        let k = s[i * 3].get();
        if k == EMPTY {
            return None;
        }
        if k == k1 && s[i * 3 + 1].get() == k2 {
            return Some(i);
        }
        i = (i + 1) & (cap - 1);
    }
    // Inserts keep at least half of the slots empty.
    panic!("hash table has no empty slot (damaged)");
}

#[inline]
pub fn get(tx: &Txn, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let k1 = key1(tag, owner);
    find(tx, k1, key).map(|i| slots(tx)[i * 3 + 2].get())
}

/// Inserts a key that is not present.
#[inline]
pub fn insert(tx: &Txn, tag: u64, owner: u64, key: u64, val: u64) -> Result<()> {
    let hdr = tx.hdr();
    if (hdr.table_used.get() + hdr.table_tombs.get() + 1) * 2 > hdr.table_cap.get() {
        rebuild(tx)?;
    }
    let k1 = key1(tag, owner);
    assert!(find(tx, k1, key).is_none(), "duplicate table key (tag {tag}, owner {owner:#x}, key {key:#x})");
    let s = slots(tx);
    let cap = (s.len() as u64 / SLOT) as usize;
    let mut i = (hash(k1, key) as usize) & (cap - 1);
    for _ in 0..cap {
        let k = s[i * 3].get();
        if k == EMPTY || k == TOMB {
            if k == TOMB {
                tx.add(&hdr.table_tombs, -1);
            }
            tx.set(&s[i * 3], k1);
            tx.set(&s[i * 3 + 1], key);
            tx.set(&s[i * 3 + 2], val);
            tx.add(&hdr.table_used, 1);
            return Ok(());
        }
        i = (i + 1) & (cap - 1);
    }
    panic!("hash table has no free slot (damaged)");
}

/// Removes a key; returns its value.
#[inline]
pub fn remove(tx: &Txn, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let i = find(tx, key1(tag, owner), key)?;
    let s = slots(tx);
    let v = s[i * 3 + 2].get();
    tx.set(&s[i * 3], TOMB);
    let hdr = tx.hdr();
    tx.add(&hdr.table_used, -1);
    tx.add(&hdr.table_tombs, 1);
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
        if k == EMPTY || k == TOMB {
            continue;
        }
        let mut i = (hash(k, chunk[1].get()) as usize) & (cap as usize - 1);
        let mut probes = 0;
        while fresh[i * 3].get() != EMPTY {
            probes += 1;
            assert!(probes < cap, "more live table entries than counted (damaged)");
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
    tx.set(&hdr.table_tombs, 0);
    if old.1 != 0 {
        alloc::free(tx, old.0, old.1 * SLOT * 8);
    }
    Ok(())
}
