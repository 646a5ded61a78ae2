//! The segment heap: power-of-two size classes with free lists, carved from
//! a bump pointer. Every change to the free lists and the bump pointer goes
//! through the transaction, so an aborted or crashed transaction leaks
//! nothing. Freed blocks return to their list only at commit (txn rule 3).

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::P;
use crate::txn::{Free, Txn};

const MIN_SHIFT: u32 = 4;

/// Size class and block size of a request.
fn class_of(size: u64) -> (usize, u64) {
    let size = size.max(1 << MIN_SHIFT);
    let shift = 64 - (size - 1).leading_zeros();
    ((shift - MIN_SHIFT) as usize, 1u64 << shift)
}

/// The size of the block that holds `size` bytes (u64::MAX for a size no
/// block can hold: a count read from a damaged segment).
pub(crate) fn block_size(size: u64) -> u64 {
    if size > SEG_SIZE {
        return u64::MAX;
    }
    class_of(size).1
}

/// Size of the blocks on free list `class`.
pub(crate) fn class_size(class: usize) -> u64 {
    1u64 << (class as u32 + MIN_SHIFT)
}

/// Allocates a zeroed block of at least `size` bytes.
#[inline]
pub fn alloc(tx: &Txn, size: u64) -> Result<u64> {
    tx.log_ok()?;
    let (class, bsize) = class_of(size);
    if class >= NCLASSES {
        return Err(Errno::ENOMEM);
    }
    let hdr = tx.hdr();
    let seg = &tx.dom.seg;
    let head = hdr.free_heads[class].get();
    let off = if head != 0 {
        let link = &seg.cells(head, 1)[0];
        let next = link.get();
        tx.set(&hdr.free_heads[class], next);
        // The link word belongs to committed state (the free list): log it
        // before the block is zeroed and initialised without logging, so
        // that an abort puts it back (even when it is 0, the list's end).
        tx.preserve(link);
        head
    } else {
        let align = bsize.min(4096);
        let off = hdr.heap_top.get().div_ceil(align) * align;
        let end = off.checked_add(bsize).ok_or(Errno::ENOMEM)?;
        if end > SEG_SIZE {
            return Err(Errno::ENOMEM);
        }
        reserve(tx, end)?;
        tx.set(&hdr.heap_top, end);
        off
    };
    // Apart from its (logged) link word, a block taken from a free list
    // holds nothing committed, and one from the bump pointer was never
    // used: both are fresh memory.
    seg.zero(off, bsize as usize);
    tx.note_fresh(off, bsize);
    tx.add(&hdr.live_blocks, 1);
    tx.add(&hdr.live_bytes, bsize as i64);
    Ok(off)
}

/// Frees a block at commit.
pub fn free(tx: &Txn, off: u64, size: u64) {
    tx.defer_free(Free::Block(off, size));
}

/// Returns a block to its free list (called by the commit).
#[inline]
pub(crate) fn free_now(tx: &Txn, off: u64, size: u64) {
    let (class, bsize) = class_of(size);
    let hdr = tx.hdr();
    let link = &tx.dom.seg.cells(off, 1)[0];
    tx.set(link, hdr.free_heads[class].get());
    tx.set(&hdr.free_heads[class], off);
    tx.add(&hdr.live_blocks, -1);
    tx.add(&hdr.live_bytes, -(bsize as i64));
}

const HANDLE: u64 = core::mem::size_of::<Handle>() as u64;
const PEER: u64 = core::mem::size_of::<PeerRec>() as u64;

/// A block of `size` bytes goes to (`d` = 1) or leaves (-1) a record free
/// list: it stays allocated but counts as not live.
fn pooled(tx: &Txn, size: u64, d: i64) {
    let hdr = tx.hdr();
    tx.add(&hdr.pooled_blocks, d);
    tx.add(&hdr.pooled_bytes, d * class_of(size).1 as i64);
}

/// A handle record: a freed one if there is one (handle memory stays
/// handle memory, see `Header::free_handles`), else a new block. Its
/// fields are zero except `gen`, which counts its lives.
pub fn alloc_handle(tx: &Txn) -> Result<P<Handle>> {
    let hdr = tx.hdr();
    let h = hdr.free_handles.get();
    if h.is_null() {
        return Ok(P::from_off(alloc(tx, HANDLE)?));
    }
    let hr = tx.rec(h);
    pooled(tx, HANDLE, -1);
    tx.set(&hdr.free_handles, hr.holder_next.get());
    // The link is committed state: logged (even when it is null, the
    // list's end) before the record is reused without logging. The rest
    // of a free handle record is not reachable; only the data path looks
    // at it, and it checks `gen`, which keeps its value.
    tx.preserve(&hr.holder_next);
    tx.note_fresh(h.off(), HANDLE);
    let gen = hr.gen.get();
    tx.dom.seg.zero(h.off(), HANDLE as usize);
    hr.gen.raw_set(gen);
    Ok(h)
}

/// Frees a handle record: dead at once (`live`), back on the free list
/// with a new life (`gen`) when the transaction commits.
pub fn free_handle(tx: &Txn, h: P<Handle>) {
    tx.set(&tx.rec(h).live, 0);
    tx.defer_free(Free::Handle(h));
}

/// The commit's half of [`free_handle`].
pub(crate) fn push_free_handle(tx: &Txn, h: P<Handle>) {
    let hdr = tx.hdr();
    let hr = tx.rec(h);
    tx.set(&hr.gen, hr.gen.get() + 1);
    tx.set(&hr.holder_next, hdr.free_handles.get());
    tx.set(&hdr.free_handles, h);
    pooled(tx, HANDLE, 1);
}

/// A peer record, zeroed except its lock: a freed one if there is one
/// (see `Header::free_peers`), else a new block, whose lock the caller
/// must initialise (the flag says so).
pub fn alloc_peer(tx: &Txn) -> Result<(P<PeerRec>, bool)> {
    let hdr = tx.hdr();
    let p = hdr.free_peers.get();
    if p.is_null() {
        return Ok((P::from_off(alloc(tx, PEER)?), true));
    }
    let pr = tx.rec(p);
    pooled(tx, PEER, -1);
    tx.set(&hdr.free_peers, pr.free_next.get());
    tx.preserve(&pr.free_next);
    pr.free_next.raw_set(P::NULL);
    // A free peer record is not reachable from committed state. Its two
    // locks stay as they are (initialised robust mutexes, which zeroing
    // would turn into plain ones that a dead holder wedges): a process
    // holding a stale offset may take them (and then finds the record is
    // not its peer); everything else is zeroed.
    tx.note_fresh(p.off(), PEER);
    let mutex = core::mem::size_of::<crate::sync::RobustMutex>() as u64;
    let lock = core::mem::offset_of!(PeerRec, lock) as u64;
    let rel_lock = core::mem::offset_of!(PeerRec, rel_lock) as u64;
    let free_next = core::mem::offset_of!(PeerRec, free_next) as u64;
    let mut kept = [(free_next, 8), (lock, mutex), (rel_lock, mutex)];
    kept.sort_unstable();
    debug_assert!(kept.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0), "kept fields overlap");
    let seg = &tx.dom.seg;
    let mut at = 0;
    for (start, len) in kept {
        seg.zero(p.off() + at, (start - at) as usize);
        at = start + len;
    }
    seg.zero(p.off() + at, (PEER - at) as usize);
    Ok((p, false))
}

/// Frees a peer record whose arena is empty (at commit).
pub fn free_peer(tx: &Txn, p: P<PeerRec>) {
    tx.defer_free(Free::Peer(p));
}

pub(crate) fn push_free_peer(tx: &Txn, p: P<PeerRec>) {
    let hdr = tx.hdr();
    tx.set(&tx.rec(p).free_next, hdr.free_peers.get());
    tx.set(&hdr.free_peers, p);
    pooled(tx, PEER, 1);
}

/// An arena chunk for `peer`: a freed one if there is one (see
/// `Header::free_chunks`), else a new block.
pub fn alloc_chunk(tx: &Txn) -> Result<P<Chunk>> {
    let hdr = tx.hdr();
    let c = hdr.free_chunks.get();
    if c.is_null() {
        return Ok(P::from_off(alloc(tx, crate::arena::CHUNK_BYTES)?));
    }
    pooled(tx, crate::arena::CHUNK_BYTES, -1);
    tx.set(&hdr.free_chunks, tx.rec(c).next.get());
    Ok(c)
}

/// Gives a chunk back (its records are all free), at commit.
pub fn free_chunk(tx: &Txn, c: P<Chunk>) {
    tx.defer_free(Free::Chunk(c));
}

pub(crate) fn push_free_chunk(tx: &Txn, c: P<Chunk>) {
    let hdr = tx.hdr();
    tx.set(&tx.rec(c).next, hdr.free_chunks.get());
    tx.set(&hdr.free_chunks, c);
    pooled(tx, crate::arena::CHUNK_BYTES, 1);
}

/// Checks every free list (alignment, bounds, no cycles); describes the
/// first damage found.
pub fn check_free_lists(tx: &Txn) -> core::result::Result<(), String> {
    let hdr = tx.hdr();
    let top = hdr.heap_top.get();
    for class in 0..NCLASSES {
        let bsize = class_size(class);
        let mut b = hdr.free_heads[class].get();
        let mut n = 0u64;
        while b != 0 {
            if b % bsize.min(4096) != 0 || b < HEAP_OFF || b + bsize > top {
                return Err(format!("bad free block {b:#x} in class {class} at position {n}"));
            }
            b = tx.dom.seg.cells(b, 1)[0].get();
            n += 1;
            if n > top / bsize {
                return Err(format!("cycle in free list of class {class}"));
            }
        }
    }
    Ok(())
}

/// Makes sure the heap up to `end` is backed by allocated file space, so
/// that later writes cannot fault on a full filesystem.
fn reserve(tx: &Txn, end: u64) -> Result<()> {
    let hdr = tx.hdr();
    let have = hdr.heap_reserved.get().max(HEAP_OFF);
    if end <= have {
        return Ok(());
    }
    let want = end.div_ceil(HEAP_CHUNK) * HEAP_CHUNK;
    tx.dom.reserve(have, want - have)?;
    tx.set(&hdr.heap_reserved, want);
    Ok(())
}

/// Makes sure the record at `off` of the wake-up tables (which are not
/// part of the heap) is backed by file space, as `reserve` does for the
/// heap.
pub(crate) fn reserve_table(tx: &Txn, off: u64) -> Result<()> {
    debug_assert!((WAKE_OFF..HEAP_OFF).contains(&off));
    let chunk = (off - WAKE_OFF) / WAKE_CHUNK;
    let word = &tx.hdr().wake_reserved[(chunk / 64) as usize];
    if word.get() & 1 << (chunk % 64) != 0 {
        return Ok(());
    }
    tx.dom.reserve(WAKE_OFF + chunk * WAKE_CHUNK, WAKE_CHUNK)?;
    tx.set(word, word.get() | 1 << (chunk % 64));
    Ok(())
}


#[cfg(test)]
mod tests {
    use super::class_of;

    #[test]
    fn classes_are_powers_of_two() {
        assert_eq!(class_of(1), (0, 16));
        assert_eq!(class_of(16), (0, 16));
        assert_eq!(class_of(17), (1, 32));
        assert_eq!(class_of(4096), (8, 4096));
        assert_eq!(class_of(4097), (9, 8192));
    }
}
