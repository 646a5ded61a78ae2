//! Growing a peer's message state, under the domain lock: more records for
//! its arena, a leaf of its slice directory, storage for more senders'
//! shares, a longer record list for a transaction slot. Sections never
//! allocate: one that finds something missing lets its lock go, asks for
//! it here ([`Need`]) and starts again. Growth only happens when a peer
//! reaches a new high (more records at once, a new part of its pool, a new
//! sending user), never on the steady path.

use crate::alloc;
use crate::arena;
use crate::domain::Domain;
use crate::errno::Result;
use crate::layout::*;
use crate::pool;
use crate::shm::P;
use crate::store::Store;
use crate::txn::Txn;

/// What a section found missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Need {
    /// Free records the arena should have.
    pub records: u64,
    /// A directory leaf for this pool offset.
    pub leaf_for: Option<u64>,
    /// A free share slot for a new sending user.
    pub share: bool,
    /// Room in the transaction slot's list.
    pub slot: Option<(usize, usize)>,
}

/// Grows whatever `need` names for `peer`, in one transaction.
pub fn provide(dom: &Domain, peer: P<PeerRec>, serial: u64, need: Need) -> Result<()> {
    let tx = dom.lock()?;
    let r = (|| {
        if !crate::peer::is_live(&tx, peer, serial) {
            // Gone meanwhile: the retry will find out.
            return Ok(());
        }
        tx.hold(peer);
        while arena::free_count(&tx, peer) < need.records {
            grow_arena(&tx, peer)?;
        }
        if let Some(off) = need.leaf_for {
            dir_leaf(&tx, peer, off)?;
        }
        if need.share {
            share_block(&tx, peer)?;
        }
        if let Some((idx, n)) = need.slot {
            slot_room(&tx, idx, n)?;
        }
        Ok(())
    })();
    tx.finish(r)
}

/// Adds a chunk of free records to `peer`'s arena.
pub fn grow_arena(tx: &Txn, peer: P<PeerRec>) -> Result<()> {
    tx.hold(peer);
    let c = alloc::alloc_chunk(tx)?;
    let p = tx.rec(peer);
    let cr = tx.rec(c);
    // A chunk taken from the free list was another peer's: its records
    // are free, and only their owner changes. Helpers of old transactions
    // may still look at them; they check tags, which do not match.
    Store::init(tx, &cr.peer, peer);
    tx.set(&cr.next, p.chunks.get());
    tx.set(&p.chunks, c);
    tx.add(&p.n_chunks, 1);
    for r in arena::records_of(c).collect::<Vec<_>>().into_iter().rev() {
        let rr = tx.rec(r);
        Store::init(tx, &rr.state, 0);
        Store::init(tx, &rr.peer, peer);
        arena::put_back(tx, peer, r);
    }
    Ok(())
}

/// Gives the chunks of a torn-down peer back (all its records are free).
pub fn drop_arena(tx: &Txn, peer: P<PeerRec>) {
    let p = tx.rec(peer);
    let mut c = p.chunks.get();
    while !c.is_null() {
        let next = tx.rec(c).next.get();
        alloc::free_chunk(tx, c);
        c = next;
    }
    tx.set(&p.chunks, P::NULL);
    tx.set(&p.n_chunks, 0);
    tx.set(&p.free_recs, P::NULL);
    tx.set(&p.n_free_recs, 0);
}

/// The directory's top level for a new peer whose pool is `size` bytes.
pub fn dir_top(tx: &Txn, peer: P<PeerRec>, size: u64) -> Result<()> {
    let top = alloc::alloc(tx, pool::dir_len(size) as u64 * 8)?;
    tx.set(&tx.rec(peer).dir, top);
    Ok(())
}

/// The directory's top level for a pool growing from `old` to `new`
/// bytes (the caller holds the peer's lock): a larger block with the same
/// leaves; the old one is given back at commit.
pub fn dir_grow(tx: &Txn, peer: P<PeerRec>, old: u64, new: u64) -> Result<()> {
    let p = tx.rec(peer);
    let top = p.dir.get();
    let grown = alloc::alloc(tx, pool::dir_len(new) as u64 * 8)?;
    let seg = &tx.domain().seg;
    for (from, to) in seg.cells(top, pool::dir_len(old)).iter().zip(seg.cells(grown, pool::dir_len(old))) {
        tx.init(to, from.get());
    }
    alloc::free(tx, top, pool::dir_len(old) as u64 * 8);
    tx.set(&p.dir, grown);
    Ok(())
}

/// The directory leaf covering pool offset `off`.
pub fn dir_leaf(tx: &Txn, peer: P<PeerRec>, off: u64) -> Result<()> {
    let p = tx.rec(peer);
    let top = p.dir.get();
    let cell = &tx.domain().seg.cells(top + (off / DIR_LEAF_SPAN) * 8, 1)[0];
    if cell.get() != 0 {
        return Ok(());
    }
    let leaf = alloc::alloc(tx, DIR_LEAF as u64 * 8)?;
    tx.set(cell, leaf);
    // Slices already there that start in the leaf's range were not in the
    // directory: enter them.
    let lo = off / DIR_LEAF_SPAN * DIR_LEAF_SPAN;
    let mut r = p.sentinel.get();
    while !r.is_null() {
        let rr = tx.rec(r);
        let o = rr.off.get();
        if rr.kind.get() != ENTRY_SENTINEL && o >= lo && o < lo + DIR_LEAF_SPAN {
            let c = &tx.domain().seg.cells(leaf + ((o - lo) >> 12) * 8, 1)[0];
            if c.get() == 0 {
                tx.set(c, r.off());
            }
        }
        r = rr.a_next.get();
    }
    Ok(())
}

/// Frees the directory of a torn-down peer.
pub fn drop_dir(tx: &Txn, peer: P<PeerRec>) {
    let p = tx.rec(peer);
    let top = p.dir.get();
    if top == 0 {
        return;
    }
    let n = pool::dir_len(p.pool_size.get());
    for l in tx.domain().seg.cells(top, n) {
        if l.get() != 0 {
            alloc::free(tx, l.get(), DIR_LEAF as u64 * 8);
        }
    }
    alloc::free(tx, top, n as u64 * 8);
    tx.set(&p.dir, 0);
}

/// Storage for [`BLOCK_SHARES`] more sending users' shares.
pub fn share_block(tx: &Txn, peer: P<PeerRec>) -> Result<()> {
    let b = P::<ShareBlock>::from_off(alloc::alloc(tx, core::mem::size_of::<ShareBlock>() as u64)?);
    let p = tx.rec(peer);
    tx.init(&tx.rec(b).next, p.share_blocks.get());
    tx.set(&p.share_blocks, b);
    Ok(())
}

/// Frees the share storage of a torn-down peer.
pub fn drop_shares(tx: &Txn, peer: P<PeerRec>) {
    let p = tx.rec(peer);
    let blocks: Vec<P<ShareBlock>> = tx.walk(p.share_blocks.get(), |b| b.next.get()).collect();
    for b in blocks {
        alloc::free(tx, b.off(), core::mem::size_of::<ShareBlock>() as u64);
    }
    tx.set(&p.share_blocks, P::NULL);
}

/// A record list of at least `n` entries for slot `idx` (whose sender
/// holds it). The old overflow block's entries are kept; the block stays
/// with the slot for its next transactions.
pub fn slot_room(tx: &Txn, idx: usize, n: usize) -> Result<()> {
    let ts = crate::slot::slot(tx.domain(), idx);
    let have = ts.extra_cap.get() as usize;
    if SLOT_INLINE + have >= n {
        return Ok(());
    }
    let cap = (n - SLOT_INLINE).next_power_of_two().max(64) as u64;
    let block = alloc::alloc(tx, cap * 8)?;
    let old = ts.extra.get();
    if have > 0 {
        let (from, to) = (tx.domain().seg.cells(old, have), tx.domain().seg.cells(block, have));
        for (a, b) in from.iter().zip(to) {
            b.raw_set(a.get());
        }
        alloc::free(tx, old, have as u64 * 8);
    }
    tx.set(&ts.extra, block);
    tx.set(&ts.extra_cap, cap);
    Ok(())
}
