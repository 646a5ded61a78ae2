//! Hash tables keyed by (tag, owner offset, 64-bit key): the domain's
//! table (a peer's handle for a node, peers by serial, users by UID, fd
//! carriers by nonce; object state) and each peer's ID table (handle ID →
//! handle; object state of the peer, read by the data path under the
//! peer's lock). Open addressing with linear probing and backward-shift
//! deletion: a removal moves the entries behind it back, so no tombstones
//! accumulate and a table is rebuilt only when it grows. Only transactions
//! write them (every write logged, or into a fresh block).

use crate::alloc;
use crate::errno::Result;
use crate::layout::*;
use crate::shm::{Cell, P};
use crate::store::Store;
use crate::txn::Txn;

const EMPTY: u64 = 0;
const SLOT: u64 = 3;
/// Tag of the entries of an ID table.
const TAG_ID: u64 = 2;

/// Where a table lives: its block, capacity and count.
#[derive(Clone, Copy)]
pub struct Root<'a> {
    base: &'a Cell<u64>,
    cap: &'a Cell<u64>,
    used: &'a Cell<u64>,
    min_cap: u64,
}

impl<'a> Root<'a> {
    /// The domain's table.
    pub fn global(hdr: &'a Header) -> Root<'a> {
        Root { base: &hdr.table, cap: &hdr.table_cap, used: &hdr.table_used, min_cap: 1024 }
    }

    /// The ID table of a peer.
    pub fn ids(p: &'a PeerRec) -> Root<'a> {
        Root { base: &p.ids, cap: &p.ids_cap, used: &p.ids_used, min_cap: 16 }
    }
}

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

fn slots<'a, S: Store>(s: &'a S, root: Root) -> &'a [Cell<u64>] {
    let cap = root.cap.get();
    if cap == 0 {
        return &[];
    }
    s.dom().seg.cells(root.base.get(), (cap * SLOT) as usize)
}

/// Index of the slot holding the key, if present.
fn find<S: Store>(s: &S, root: Root, k1: u64, k2: u64) -> Option<usize> {
    let sl = slots(s, root);
    let cap = (sl.len() as u64 / SLOT) as usize;
    if cap == 0 {
        return None;
    }
    let mut i = (hash(k1, k2) as usize) & (cap - 1);
    for _ in 0..cap {
        let k = sl[i * 3].get();
        if k == EMPTY {
            return None;
        }
        if k == k1 && sl[i * 3 + 1].get() == k2 {
            return Some(i);
        }
        i = (i + 1) & (cap - 1);
    }
    // Inserts keep at least half of the slots empty.
    panic!("hash table has no empty slot (damaged)");
}

/// The value of a key of the domain's table.
#[inline]
pub fn get<S: Store>(s: &S, tag: u64, owner: u64, key: u64) -> Option<u64> {
    get_in(s, Root::global(s.dom().hdr()), tag, owner, key)
}

fn get_in<S: Store>(s: &S, root: Root, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let k1 = key1(tag, owner);
    find(s, root, k1, key).map(|i| slots(s, root)[i * 3 + 2].get())
}

/// Inserts a key that is not present into the domain's table.
pub fn insert(tx: &Txn, tag: u64, owner: u64, key: u64, val: u64) -> Result<()> {
    insert_in(tx, Root::global(tx.hdr()), tag, owner, key, val)
}

/// Removes a key of the domain's table; returns its value.
pub fn remove(tx: &Txn, tag: u64, owner: u64, key: u64) -> Option<u64> {
    remove_in(tx, Root::global(tx.hdr()), tag, owner, key)
}

/// The handle with `id` in `peer`'s ID table.
pub fn id_get<S: Store>(s: &S, peer: P<PeerRec>, id: u64) -> Option<P<Handle>> {
    get_in(s, Root::ids(s.rec(peer)), TAG_ID, 0, id).map(P::from_off)
}

/// Enters `h` under `id` in `peer`'s ID table.
pub fn id_insert(tx: &Txn, peer: P<PeerRec>, id: u64, h: P<Handle>) -> Result<()> {
    tx.hold(peer);
    insert_in(tx, Root::ids(tx.rec(peer)), TAG_ID, 0, id, h.off())
}

/// Removes `id` from `peer`'s ID table.
pub fn id_remove(tx: &Txn, peer: P<PeerRec>, id: u64) {
    tx.hold(peer);
    tx.rec(peer).id_removals.fetch_add(1);
    remove_in(tx, Root::ids(tx.rec(peer)), TAG_ID, 0, id);
}

/// Checks every peer's ID table (a debugging aid).
pub fn check_ids(tx: &Txn) -> core::result::Result<(), String> {
    for p in crate::peer::all(tx) {
        let root = Root::ids(tx.rec(p));
        for chunk in slots(tx, root).chunks(3) {
            if chunk[0].get() == EMPTY {
                continue;
            }
            let (id, h) = (chunk[1].get(), P::<Handle>::from_off(chunk[2].get()));
            let hr = tx.rec(h);
            if hr.holder.get() != p || hr.has_id.get() != 1 || hr.id.get() != id || hr.user_refs.get() == 0 {
                let nr = tx.rec(hr.node.get());
                return Err(format!(
                    "peer {p:?}: id {id:#x} -> {h:?} holder {:?} has_id {} id {:#x} user_refs {} refs {} inflight {} owner {} destroyed {} released {} strong {}",
                    hr.holder.get(), hr.has_id.get(), hr.id.get(), hr.user_refs.get(), hr.refs.get(), hr.inflight.get(),
                    nr.owner_handle.get() == h, nr.destroyed.get(), nr.released.get(), nr.strong.get()
                ));
            }
        }
    }
    Ok(())
}

/// Frees `peer`'s ID table (the peer is going away; it must be empty).
pub fn ids_free(tx: &Txn, peer: P<PeerRec>) {
    tx.rec(peer).id_removals.fetch_add(1);
    let root = Root::ids(tx.rec(peer));
    if root.cap.get() != 0 {
        alloc::free(tx, root.base.get(), root.cap.get() * SLOT * 8);
    }
    tx.set(root.base, 0);
    tx.set(root.cap, 0);
    tx.set(root.used, 0);
}

fn insert_in(tx: &Txn, root: Root, tag: u64, owner: u64, key: u64, val: u64) -> Result<()> {
    if (root.used.get() + 1) * 2 > root.cap.get() {
        rebuild(tx, root)?;
    }
    let k1 = key1(tag, owner);
    assert!(find(tx, root, k1, key).is_none(), "duplicate table key (tag {tag}, owner {owner:#x}, key {key:#x})");
    let sl = slots(tx, root);
    let cap = (sl.len() as u64 / SLOT) as usize;
    let mut i = (hash(k1, key) as usize) & (cap - 1);
    let mut probes = 0;
    while sl[i * 3].get() != EMPTY {
        probes += 1;
        assert!(probes < cap, "hash table has no free slot (damaged)");
        i = (i + 1) & (cap - 1);
    }
    tx.set(&sl[i * 3 + 1], key);
    tx.set(&sl[i * 3 + 2], val);
    tx.set(&sl[i * 3], k1);
    tx.add(root.used, 1);
    Ok(())
}

/// Removes a key; returns its value. The entries of the probe run behind
/// it that would no longer be found move back into the hole.
fn remove_in(tx: &Txn, root: Root, tag: u64, owner: u64, key: u64) -> Option<u64> {
    let mut hole = find(tx, root, key1(tag, owner), key)?;
    let sl = slots(tx, root);
    let mask = (sl.len() / SLOT as usize) - 1;
    let v = sl[hole * 3 + 2].get();
    let mut j = hole;
    loop {
        j = (j + 1) & mask;
        let k = sl[j * 3].get();
        if k == EMPTY {
            break;
        }
        let home = (hash(k, sl[j * 3 + 1].get()) as usize) & mask;
        // Entry j may fill the hole unless its home lies cyclically in
        // (hole, j]: then it would be found before reaching the hole.
        let stays = if hole < j { home > hole && home <= j } else { home > hole || home <= j };
        if stays {
            continue;
        }
        for w in 0..3 {
            tx.set(&sl[hole * 3 + w], sl[j * 3 + w].get());
        }
        hole = j;
    }
    tx.set(&sl[hole * 3], EMPTY);
    tx.add(root.used, -1);
    Some(v)
}

/// Moves every live entry into a fresh block of a suitable size.
fn rebuild(tx: &Txn, root: Root) -> Result<()> {
    let used = root.used.get();
    let cap = ((used + 1) * 4).next_power_of_two().max(root.min_cap);
    let off = alloc::alloc(tx, cap * SLOT * 8)?;
    let fresh = tx.domain().seg.cells(off, (cap * SLOT) as usize);
    for chunk in slots(tx, root).chunks(3) {
        let k = chunk[0].get();
        if k == EMPTY {
            continue;
        }
        let mut i = (hash(k, chunk[1].get()) as usize) & (cap as usize - 1);
        let mut probes = 0;
        while fresh[i * 3].get() != EMPTY {
            probes += 1;
            assert!(probes < cap, "more live table entries than counted (damaged)");
            i = (i + 1) & (cap as usize - 1);
        }
        // Fresh block: unlogged initialisation (txn rule 4).
        fresh[i * 3].raw_set(k);
        fresh[i * 3 + 1].raw_set(chunk[1].get());
        fresh[i * 3 + 2].raw_set(chunk[2].get());
    }
    let old = (root.base.get(), root.cap.get());
    tx.set(root.base, off);
    tx.set(root.cap, cap);
    if old.1 != 0 {
        alloc::free(tx, old.0, old.1 * SLOT * 8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;
    const TAG_SLICE: u64 = 4;
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
