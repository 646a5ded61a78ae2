//! Pools and slices (docs/reference.md §5).
//!
//! Each peer owns a sparse pool file of 512 MiB, or 4 GiB for a peer that
//! speaks the final ABI (`abi`; a pool grows once from the first to the
//! second, never back, see [`grow`]). The allocator state lives in
//! the segment as a list of regions in address order (slices and free
//! ranges alike) plus a list of the free ones; allocation is best fit with
//! ties broken by the lowest offset, and freeing merges with free
//! neighbours. A slice is freed when it is neither referenced by a queued
//! message nor published to userspace (5.3); freeing refunds the slice
//! quota. Senders write payload into the receiver's pool through this
//! process's read-write mapping (`Domain::pool`).
//!
//! Pages are given back to the system (punched out of the pool file) once
//! no slice uses them. On the message path this is batched so that it
//! costs no system call per message, and it spares the pool's first MiB,
//! which a receiver that keeps up reuses all the time: a free tail is
//! punched once it reaches 256 KiB, and every 256 KiB of slices freed
//! beyond the first MiB trigger a *sweep* that punches the whole pages of
//! every free region not yet punched (`Region::clean`). The rest — the
//! first MiB, a small tail, what was freed since the last sweep — is
//! given back by the domain's periodic scan (`sweep_idle`), so that a
//! pool that stays as it is holds pages only where live slices are.

use crate::alloc;
use crate::doorbell::Op;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::quota;
use crate::shm::{PoolMap, P};
use crate::table;
use crate::txn::Txn;

const REGION: u64 = core::mem::size_of::<Region>() as u64;
const PAGE: u64 = 4096;
/// A free tail of at least this many resident bytes is returned to the
/// system. Smaller tails stay: punching them on every release would cost a
/// system call per message.
const TRIM_MIN: u64 = 256 << 10;
/// The start of every pool stays resident once touched: a receiver that
/// keeps up reuses it all the time, and punching it out would only make
/// the next sends fault the pages back in.
const TRIM_KEEP: u64 = 1 << 20;
/// Bytes of slices freed beyond [`TRIM_KEEP`] after which the free regions
/// are swept.
const SWEEP_AFTER: u32 = 256 << 10;

/// `Region::clean` of a free region that may have resident pages.
const DIRTY: u32 = 0;
/// `Region::clean`: its whole pages beyond [`TRIM_KEEP`] are punched.
const CLEAN_BEYOND_KEEP: u32 = 1;
/// `Region::clean`: all its whole pages are punched.
const CLEAN_ALL: u32 = 2;

/// Sets up an empty pool of `size` bytes (its file is that long): one free
/// range covering all of it but the last byte, which is never handed out.
pub fn init(tx: &Txn, peer: P<PeerRec>, size: u64) -> Result<()> {
    let r = P::<Region>::from_off(alloc::alloc(tx, REGION)?);
    let rr = tx.rec(r);
    tx.set(&rr.off, 0);
    tx.set(&rr.size, size - 1);
    tx.set(&rr.free, 1);
    let p = tx.rec(peer);
    tx.set(&p.pool_size, size);
    tx.set(&p.pool_regions, r);
    tx.set(&p.pool_free, r);
    Ok(())
}

/// Grows the pool to `size` bytes: its file first (so that no slice can
/// lie beyond it), then its free tail. Slices, and every mapping of the
/// pool, stay where they are. A pool never shrinks.
pub fn grow(tx: &Txn, peer: P<PeerRec>, size: u64) -> Result<()> {
    let p = tx.rec(peer);
    let old = p.pool_size.get();
    if size <= old {
        return Ok(());
    }
    let tail = tx.walk(p.pool_regions.get(), |r| r.next.get()).last().unwrap_or(P::NULL);
    // The range ends 7 bytes after a multiple of 8, which no slice can
    // fill, so the last region is always free.
    if tail.is_null() || tx.rec(tail).free.get() != 1 {
        return Err(Errno::ENOTRECOVERABLE);
    }
    tx.domain().grow_pool_file(p.serial.get(), size)?;
    let tr = tx.rec(tail);
    // The new part has never been written: whatever the region's `clean`
    // mark says about resident pages stays true.
    tx.set(&tr.size, tr.size.get() + (size - old));
    tx.set(&p.pool_size, size);
    Ok(())
}

fn free_list_remove(tx: &Txn, peer: P<PeerRec>, r: P<Region>) {
    let rr = tx.rec(r);
    let (n, p) = (rr.fnext.get(), rr.fprev.get());
    if p.is_null() {
        tx.set(&tx.rec(peer).pool_free, n);
    } else {
        tx.set(&tx.rec(p).fnext, n);
    }
    if !n.is_null() {
        tx.set(&tx.rec(n).fprev, p);
    }
    tx.set(&rr.fnext, P::NULL);
    tx.set(&rr.fprev, P::NULL);
}

fn free_list_push(tx: &Txn, peer: P<PeerRec>, r: P<Region>) {
    let p = tx.rec(peer);
    let head = p.pool_free.get();
    tx.set(&tx.rec(r).fnext, head);
    tx.set(&tx.rec(r).fprev, P::NULL);
    if !head.is_null() {
        tx.set(&tx.rec(head).fprev, r);
    }
    tx.set(&p.pool_free, r);
}

fn region_unlink(tx: &Txn, peer: P<PeerRec>, r: P<Region>) {
    let rr = tx.rec(r);
    let (n, p) = (rr.next.get(), rr.prev.get());
    if p.is_null() {
        tx.set(&tx.rec(peer).pool_regions, n);
    } else {
        tx.set(&tx.rec(p).next, n);
    }
    if !n.is_null() {
        tx.set(&tx.rec(n).prev, p);
    }
    alloc::free(tx, r.off(), REGION);
}

/// Size of the slice for a message (4.1).
pub fn slice_size(n_bytes: u64, n_handles: u64, n_fds: u64) -> u64 {
    let a = |x: u64| x.div_ceil(8) * 8;
    (a(n_bytes) + 8 * n_handles + a(4 * n_fds)).max(8)
}

/// Allocates a slice of `size` bytes (5.2). The slice starts referenced.
pub fn alloc_slice(tx: &Txn, peer: P<PeerRec>, size: u64) -> Result<P<Region>> {
    let size = size.div_ceil(8) * 8;
    if size == 0 || size > tx.rec(peer).pool_size.get() - 1 {
        return Err(Errno::EMSGSIZE);
    }
    let mut best = P::<Region>::NULL;
    let (mut best_size, mut best_off) = (u64::MAX, u64::MAX);
    for r in tx.walk(tx.rec(peer).pool_free.get(), |r| r.fnext.get()) {
        let rr = tx.rec(r);
        let (s, o) = (rr.size.get(), rr.off.get());
        if s >= size && (s < best_size || (s == best_size && o < best_off)) {
            best = r;
            best_size = s;
            best_off = o;
        }
    }
    if best.is_null() {
        return Err(Errno::EXFULL);
    }
    let slice = if best_size == size {
        free_list_remove(tx, peer, best);
        best
    } else {
        let s = P::<Region>::from_off(alloc::alloc(tx, REGION)?);
        let (sr, br) = (tx.rec(s), tx.rec(best));
        tx.init(&sr.off, best_off);
        tx.init(&sr.size, size);
        let prev = br.prev.get();
        tx.init(&sr.prev, prev);
        tx.init(&sr.next, best);
        if prev.is_null() {
            tx.set(&tx.rec(peer).pool_regions, s);
        } else {
            tx.set(&tx.rec(prev).next, s);
        }
        tx.set(&br.prev, s);
        tx.set(&br.off, best_off + size);
        tx.set(&br.size, best_size - size);
        s
    };
    let sr = tx.rec(slice);
    tx.set(&sr.free, 0);
    tx.set(&sr.referenced, 1);
    tx.set(&sr.published, 0);
    table::insert(tx, TAG_SLICE, peer.off(), best_off, slice.off())?;
    let p = tx.rec(peer);
    tx.add(&p.pool_slices, 1);
    // Even if this transaction is rolled back, the sender may have copied
    // payload into these pages: they must be swept like any others.
    tx.raise_unlogged(&p.pool_dirty_end, best_off + size);
    Ok(slice)
}

/// Frees a slice that is neither referenced nor published, merging it
/// with free neighbours, and refunds its slice quota.
fn free_slice(tx: &Txn, peer: P<PeerRec>, s: P<Region>) {
    let sr = tx.rec(s);
    table::remove(tx, TAG_SLICE, peer.off(), sr.off.get());
    tx.add(&tx.rec(peer).pool_slices, -1);
    quota::refund(tx, peer, RES_SLICES, 1);
    count_freed(tx, peer, sr.off.get(), sr.size.get());
    tx.set(&sr.free, 1);
    let mut cur = s;
    let prev = sr.prev.get();
    if !prev.is_null() && tx.rec(prev).free.get() == 1 {
        let pr = tx.rec(prev);
        tx.set(&pr.size, pr.size.get() + sr.size.get());
        tx.set(&pr.clean, DIRTY);
        region_unlink(tx, peer, s);
        cur = prev;
    } else {
        tx.set(&sr.clean, DIRTY);
        free_list_push(tx, peer, s);
    }
    let cr = tx.rec(cur);
    let next = cr.next.get();
    if !next.is_null() && tx.rec(next).free.get() == 1 {
        tx.set(&cr.size, cr.size.get() + tx.rec(next).size.get());
        free_list_remove(tx, peer, next);
        region_unlink(tx, peer, next);
    }
    if cr.next.get().is_null() {
        trim_tail(tx, peer, cr.off.get());
    }
}

/// Counts a freed slice towards the next sweep, and asks for the sweep
/// (once per transaction) when enough has been freed.
fn count_freed(tx: &Txn, peer: P<PeerRec>, off: u64, size: u64) {
    if off + size <= TRIM_KEEP {
        return;
    }
    let p = tx.rec(peer);
    let freed = (p.pool_freed.get() as u64 + size).min(u32::MAX as u64) as u32;
    if freed < SWEEP_AFTER {
        tx.set(&p.pool_freed, freed);
        return;
    }
    tx.set(&p.pool_freed, 0);
    if !tx.has_post(|op| matches!(op, Op::SweepPool { peer: q, .. } if *q == peer)) {
        tx.push_post(Op::SweepPool { peer, serial: p.serial.get() });
    }
}

/// Runs a sweep after commit, with the domain still locked: punches the
/// whole pages (beyond the kept start and below the dirty end) of every
/// free region not marked clean, and marks it. The marks are written
/// through the log like any field (rule 4 of `txn`); losing them only
/// costs a redundant punch later.
pub(crate) fn execute_sweep(tx: &Txn, peer: P<PeerRec>, serial: u64) {
    let Some(pool) = live_pool(tx, peer, serial) else { return };
    let p = tx.rec(peer);
    let dirty_end = p.pool_dirty_end.get().div_ceil(PAGE) * PAGE;
    for rr in free_regions(tx, peer).filter(|rr| rr.clean.get() == DIRTY) {
        if let Some((start, len)) = whole_pages(rr, TRIM_KEEP, dirty_end) {
            // A free region of the committed state; the domain lock keeps
            // anyone from allocating there meanwhile.
            let _ = pool.punch(start, len);
        }
        tx.set(&rr.clean, CLEAN_BEYOND_KEEP);
        crate::crash::point("sweep-marked");
    }
}

/// The free regions of `peer`'s pool, in free-list order.
fn free_regions<'t, 'd>(tx: &'t Txn<'d>, peer: P<PeerRec>) -> impl Iterator<Item = &'d Region> + 't {
    tx.walk(tx.rec(peer).pool_free.get(), |r| r.fnext.get()).map(|r| tx.rec(r))
}

/// The whole pages of free region `rr` from `from` on and below
/// `dirty_end` (page-aligned), as (offset, length): what a punch of the
/// region may give back.
fn whole_pages(rr: &Region, from: u64, dirty_end: u64) -> Option<(u64, u64)> {
    let (off, size) = (rr.off.get(), rr.size.get());
    let start = (off.div_ceil(PAGE) * PAGE).max(from);
    let end = ((off + size) / PAGE * PAGE).min(dirty_end);
    (end > start).then(|| (start, end - start))
}

/// Whether `peer`'s pool has a free region that [`sweep_idle`] has not
/// swept since it last grew.
pub(crate) fn has_unswept(tx: &Txn, peer: P<PeerRec>) -> bool {
    free_regions(tx, peer).any(|rr| rr.clean.get() != CLEAN_ALL)
}

/// Gives back every page of `peer`'s pool that no live slice uses, the
/// first MiB and a small free tail included: the periodic scan's part of
/// the pool's memory rule, for pools the message path left pages in.
/// Runs inside the caller's transaction, which holds the domain lock, so
/// nobody allocates in a free region meanwhile; the holes are punched
/// through this process's mapping of the pool if it has one, else through
/// the pool file (the scanning process need not map every pool).
/// Returns the number of bytes punched.
pub(crate) fn sweep_idle(tx: &Txn, peer: P<PeerRec>) -> u64 {
    let p = tx.rec(peer);
    let dirty_end = p.pool_dirty_end.get().div_ceil(PAGE) * PAGE;
    let mut holes = Vec::new();
    for rr in free_regions(tx, peer).filter(|rr| rr.clean.get() != CLEAN_ALL) {
        if let Some((start, len)) = whole_pages(rr, 0, dirty_end) {
            holes.push((start, len));
            if rr.next.get().is_null() {
                // The free tail: nothing beyond `start` is resident now.
                tx.set(&p.pool_dirty_end, start);
            }
        }
        tx.set(&rr.clean, CLEAN_ALL);
    }
    if holes.is_empty() {
        return 0;
    }
    let punched_by = |punch: &dyn Fn(u64, u64) -> bool| holes.iter().filter(|&&(off, len)| punch(off, len)).map(|&(_, len)| len).sum();
    // Through this process's mapping when it has one: a descriptor opened
    // for the occasion could take the last free number from an application
    // working at its limit.
    // Each hole is in a free region of the committed state; the domain lock
    // keeps anyone from allocating there meanwhile.
    if let Some(pool) = tx.domain().mapped_pool(p.serial.get()) {
        return punched_by(&|off, len| pool.punch(off, len).is_ok());
    }
    let Ok(fd) = tx.domain().open_file(&crate::domain::Domain::pool_name(p.serial.get()), libc::O_RDWR) else { return 0 };
    let punched = punched_by(&|off, len| {
        crate::sys::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len).is_ok()
    });
    crate::sys::close(fd);
    punched
}

/// The pool is free from `free_from` to its end: if that holds many
/// resident pages beyond the kept start, punch them out after commit, so a
/// burst does not pin memory once its slices are gone.
fn trim_tail(tx: &Txn, peer: P<PeerRec>, free_from: u64) {
    let p = tx.rec(peer);
    let start = (free_from.div_ceil(PAGE) * PAGE).max(TRIM_KEEP);
    let end = p.pool_dirty_end.get().div_ceil(PAGE) * PAGE;
    if end <= start || end - start < TRIM_MIN {
        return;
    }
    tx.set(&p.pool_dirty_end, start);
    tx.push_post(Op::TrimPool { peer, serial: p.serial.get(), off: start, len: end - start });
}

/// Runs a trim after commit, with the domain still locked: only if the
/// range is still inside the pool's free tail (a rolled-back part of the
/// transaction may have undone the free).
pub(crate) fn execute_trim(tx: &Txn, peer: P<PeerRec>, serial: u64, off: u64, len: u64) {
    let Some(pool) = live_pool(tx, peer, serial) else { return };
    let tail = tx.walk(tx.rec(peer).pool_regions.get(), |r| r.next.get()).last().unwrap_or(P::NULL);
    if tail.is_null() || tx.rec(tail).free.get() != 1 || tx.rec(tail).off.get() > off {
        return;
    }
    // The free tail; the domain lock keeps anyone from allocating there
    // meanwhile.
    let _ = pool.punch(off, len);
}

/// The pool mapping of `peer` for an after-commit punch, if the record is
/// still the live peer `serial` (the transaction may have freed it).
fn live_pool(tx: &Txn, peer: P<PeerRec>, serial: u64) -> Option<PoolMap> {
    let p = tx.rec(peer);
    if p.magic.get() != PEER_MAGIC || p.serial.get() != serial {
        return None;
    }
    tx.domain().pool(serial).ok()
}

/// Marks a slice as handed to userspace by RECV/PEEK.
pub fn publish(tx: &Txn, s: P<Region>) {
    tx.set(&tx.rec(s).published, 1);
}

/// The message that referenced the slice is gone.
pub fn unreference(tx: &Txn, peer: P<PeerRec>, s: P<Region>) {
    let sr = tx.rec(s);
    tx.set(&sr.referenced, 0);
    if sr.published.get() == 0 {
        free_slice(tx, peer, s);
    }
}

/// SLICE_RELEASE (2.7): the slice must start exactly at `off` and be
/// published.
pub fn release(tx: &Txn, peer: P<PeerRec>, off: u64) -> Result<()> {
    let s = table::get(tx, TAG_SLICE, peer.off(), off).map(P::<Region>::from_off).ok_or(Errno::ENXIO)?;
    let sr = tx.rec(s);
    if sr.published.get() == 0 {
        return Err(Errno::ENXIO);
    }
    tx.set(&sr.published, 0);
    if sr.referenced.get() == 0 {
        free_slice(tx, peer, s);
    }
    Ok(())
}

/// Unpublishes every published slice (flush, 2.3 step 6.4).
pub fn unpublish_all(tx: &Txn, peer: P<PeerRec>) {
    let published: Vec<P<Region>> = tx
        .walk(tx.rec(peer).pool_regions.get(), |r| r.next.get())
        .filter(|&r| tx.rec(r).free.get() == 0 && tx.rec(r).published.get() == 1)
        .collect();
    for s in published {
        let off = tx.rec(s).off.get();
        let _ = release(tx, peer, off);
    }
}

/// Frees the region records of a pool whose slices are all gone.
pub fn destroy(tx: &Txn, peer: P<PeerRec>) {
    for r in tx.walk(tx.rec(peer).pool_regions.get(), |r| r.next.get()) {
        assert_eq!(tx.rec(r).free.get(), 1, "slice left at pool destruction");
        alloc::free(tx, r.off(), REGION);
    }
    let p = tx.rec(peer);
    tx.set(&p.pool_regions, P::NULL);
    tx.set(&p.pool_free, P::NULL);
}

/// Offset and size of a slice.
pub fn range(tx: &Txn, s: P<Region>) -> (u64, u64) {
    let sr = tx.rec(s);
    (sr.off.get(), sr.size.get())
}

#[cfg(test)]
mod tests {
    use super::slice_size;

    #[test]
    fn slice_size_follows_the_layout_of_4_1() {
        // Empty messages still take 8 bytes.
        assert_eq!(slice_size(0, 0, 0), 8);
        // Payload rounded up to 8, then 8 bytes per handle, then 4 per fd
        // rounded up to 8.
        assert_eq!(slice_size(1, 0, 0), 8);
        assert_eq!(slice_size(9, 0, 0), 16);
        assert_eq!(slice_size(5, 2, 0), 8 + 16);
        assert_eq!(slice_size(0, 0, 1), 8);
        assert_eq!(slice_size(0, 0, 3), 16);
        assert_eq!(slice_size(1024, 1, 3), 1024 + 8 + 16);
    }
}
