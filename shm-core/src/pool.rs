//! Pools and slices (docs/reference.md §5): a peer's pool
//! allocator, part of its message state.
//!
//! Each peer owns a sparse pool file of 512 MiB, or 4 GiB for a peer that
//! speaks the final ABI (`abi`; a pool grows once from the first to the
//! second, never back, see [`grow`]). Its slices are the records
//! that hold one ([`MS_SLICE`]); they are linked in address order, starting
//! with the pool's sentinel (a slice of size 0 at offset 0), and each
//! carries the free space that follows it, its *gap*. Gaps sit in bins by
//! power-of-two size. Allocation is best fit with ties broken by the lowest
//! offset and takes the start of the gap; freeing a slice gives its bytes
//! and its gap to the slice before it. A *directory* (a top block of one
//! leaf per 2 MiB of pool, each naming the first slice that starts
//! in each page) finds a slice by offset for SLICE_RELEASE without a hash
//! table that would need rehashing. All of it is derived from the records'
//! slice ranges and recomputed by `rebuild`; only directory leaves are
//! allocated, under the domain lock (`capacity`).
//!
//! Senders write payload into the receiver's pool through this process's
//! read-write mapping (`Domain::pool`).
//!
//! Pages are given back to the system (punched out of the pool file) once
//! no slice uses them. On the message path this is batched so that it
//! costs no system call per message, and it spares the pool's first MiB,
//! which a receiver that keeps up reuses all the time: a free tail is
//! punched once it reaches 256 KiB, and every 256 KiB of slices freed
//! beyond the first MiB trigger a *sweep* that punches the whole pages of
//! every gap not yet punched (`Msg::gap_clean`). Neither happens while
//! the queue still holds messages: room freed in a backlog is what the
//! next sends take (punching it would make them fault the pages back in,
//! under the receiver's lock), so it waits for the first release after
//! the queue empties. The rest — the first MiB, a small tail, what was
//! freed since the last sweep — is given back by the domain's periodic
//! scan (`sweep_idle`) once no message came to the pool for a whole scan
//! period, so that a pool that stays as it is holds pages only where live
//! slices are.

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::{Cell, P};
use crate::store::{Later, Store};

const PAGE: u64 = 4096;
/// A free tail of at least this many resident bytes is returned to the
/// system. Smaller tails stay: punching them on every release would cost a
/// system call per message.
const TRIM_MIN: u64 = 256 << 10;
/// The start of every pool stays resident once touched: a receiver that
/// keeps up reuses it all the time, and punching it out would only make
/// the next sends fault the pages back in.
const TRIM_KEEP: u64 = 1 << 20;
/// Bytes of slices freed beyond [`TRIM_KEEP`] after which the free space
/// is swept.
const SWEEP_AFTER: u32 = 256 << 10;

/// `Msg::gap_clean` of a gap that may have resident pages.
const DIRTY: u32 = 0;
/// `Msg::gap_clean`: its whole pages beyond [`TRIM_KEEP`] are punched.
const CLEAN_BEYOND_KEEP: u32 = 1;
/// `Msg::gap_clean`: all its whole pages are punched.
const CLEAN_ALL: u32 = 2;


/// Size of the slice for a message (4.1).
pub fn slice_size(n_bytes: u64, n_handles: u64, n_fds: u64) -> u64 {
    let a = |x: u64| x.div_ceil(8) * 8;
    (a(n_bytes) + 8 * n_handles + a(4 * n_fds)).max(8)
}

/// The byte after slice `r` (where its gap starts).
#[inline]
fn end_of<S: Store>(s: &S, r: P<Msg>) -> u64 {
    let rr = s.rec(r);
    rr.off.get() + rr.size.get()
}

fn bin_of(gap: u64) -> usize {
    debug_assert!(gap > 0);
    ((63 - gap.leading_zeros()) as usize).min(NBINS - 1)
}

fn bin_insert<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    let b = bin_of(s.rec(r).gap.get());
    let head = p.bins[b].get();
    s.set(&s.rec(r).g_next, head);
    s.set(&s.rec(r).g_prev, P::NULL);
    if !head.is_null() {
        s.set(&s.rec(head).g_prev, r);
    }
    s.set(&p.bins[b], r);
    s.set(&p.bin_mask, p.bin_mask.get() | 1 << b);
}

fn bin_remove<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    let rr = s.rec(r);
    let b = bin_of(rr.gap.get());
    let (n, pr) = (rr.g_next.get(), rr.g_prev.get());
    if pr.is_null() {
        s.set(&p.bins[b], n);
        if n.is_null() {
            s.set(&p.bin_mask, p.bin_mask.get() & !(1 << b));
        }
    } else {
        s.set(&s.rec(pr).g_next, n);
    }
    if !n.is_null() {
        s.set(&s.rec(n).g_prev, pr);
    }
}

/// Sets the gap of `r` (moving it between bins).
fn set_gap<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>, gap: u64) {
    if s.rec(r).gap.get() > 0 {
        bin_remove(s, peer, r);
    }
    s.set(&s.rec(r).gap, gap);
    if gap > 0 {
        bin_insert(s, peer, r);
    }
}

/// The end of the part of `peer`'s pool that can be handed out: all of it
/// but the last byte (so the end is 7 bytes after a multiple of 8, which
/// no slice can fill).
#[inline]
fn pool_end<S: Store>(s: &S, peer: P<PeerRec>) -> u64 {
    s.rec(peer).pool_size.get() - 1
}

/// Rounds a slice size and checks it can exist at all in `peer`'s pool
/// (5.2: EMSGSIZE).
pub fn rounded<S: Store>(s: &S, peer: P<PeerRec>, size: u64) -> Result<u64> {
    let size = size.div_ceil(8) * 8;
    if size == 0 || size > pool_end(s, peer) {
        return Err(Errno::EMSGSIZE);
    }
    Ok(size)
}

/// Best fit (5.2): the slice whose gap gets a new slice of `size`
/// (rounded): the smallest gap that fits, the lowest offset among equal
/// ones. EXFULL if none fits.
pub fn find_gap<S: Store>(s: &S, peer: P<PeerRec>, size: u64) -> Result<P<Msg>> {
    s.hold(peer);
    let p = s.rec(peer);
    let mut mask = p.bin_mask.get() & !((1u64 << bin_of(size)) - 1);
    while mask != 0 {
        let b = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        let (mut best, mut best_gap, mut best_off) = (P::<Msg>::NULL, u64::MAX, u64::MAX);
        let mut r = p.bins[b].get();
        while !r.is_null() {
            let rr = s.rec(r);
            let (g, o) = (rr.gap.get(), rr.off.get() + rr.size.get());
            if g >= size && (g < best_gap || (g == best_gap && o < best_off)) {
                (best, best_gap, best_off) = (r, g, o);
            }
            r = rr.g_next.get();
        }
        // Every gap of a higher bin is larger than any gap of this one.
        if !best.is_null() {
            return Ok(best);
        }
    }
    Err(Errno::EXFULL)
}

/// The offset a slice placed in `left`'s gap starts at.
#[inline]
pub fn gap_start<S: Store>(s: &S, left: P<Msg>) -> u64 {
    end_of(s, left)
}

/// Leaves of the directory of a pool of `size` bytes.
pub fn dir_len(size: u64) -> usize {
    (size / DIR_LEAF_SPAN) as usize
}

/// The directory cell of the page holding `off`, if its leaf exists.
fn dir_cell<S: Store>(s: &S, peer: P<PeerRec>, off: u64) -> Option<&Cell<u64>> {
    let top = s.rec(peer).dir.get();
    if top == 0 {
        return None;
    }
    let page = (off / PAGE) as usize;
    let leaf = s.dom().seg.cells(top + (page / DIR_LEAF) as u64 * 8, 1)[0].get();
    (leaf != 0).then(|| &s.dom().seg.cells(leaf + (page % DIR_LEAF) as u64 * 8, 1)[0])
}

/// Whether the directory can take a slice starting at `off` (its leaf
/// exists; else `capacity` must add it first).
pub fn dir_ready<S: Store>(s: &S, peer: P<PeerRec>, off: u64) -> bool {
    dir_cell(s, peer, off).is_some()
}

fn dir_add<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let off = s.rec(r).off.get();
    let cell = dir_cell(s, peer, off).expect("directory leaf missing");
    let cur = P::<Msg>::from_off(cell.get());
    if cur.is_null() || s.rec(cur).off.get() > off {
        s.set(cell, r.off());
    }
}

fn dir_remove<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let off = s.rec(r).off.get();
    let Some(cell) = dir_cell(s, peer, off) else { return };
    if cell.get() != r.off() {
        return;
    }
    let next = s.rec(r).a_next.get();
    let same_page = !next.is_null() && s.rec(next).off.get() / PAGE == off / PAGE;
    s.set(cell, if same_page { next.off() } else { 0 });
}

/// The slice of `peer` that starts exactly at `off`, if any.
pub fn lookup<S: Store>(s: &S, peer: P<PeerRec>, off: u64) -> Option<P<Msg>> {
    s.hold(peer);
    if off >= s.rec(peer).pool_size.get() {
        return None;
    }
    let page = off / PAGE;
    let mut r = P::<Msg>::from_off(dir_cell(s, peer, off)?.get());
    while !r.is_null() {
        let rr = s.rec(r);
        let o = rr.off.get();
        if o == off {
            return (rr.kind.get() != ENTRY_SENTINEL).then_some(r);
        }
        if o > off || o / PAGE != page {
            return None;
        }
        r = rr.a_next.get();
    }
    None
}

/// [`lookup`] without the peer's lock, for a release that does not take it
/// (`release`): every step is bounds-checked and gives up (None) on
/// anything a change made under the walk could show, and what it finds is
/// only a candidate its caller validates.
pub fn lookup_racy(dom: &crate::domain::Domain, peer: P<PeerRec>, off: u64) -> Option<P<Msg>> {
    let seg = &dom.seg;
    let p: &PeerRec = seg.try_rec(peer)?;
    if off >= p.pool_size.load_racy() {
        return None;
    }
    let top = p.dir.load_racy();
    if top == 0 {
        return None;
    }
    let page = off / PAGE;
    let leaf = seg.try_cells(top + (page / DIR_LEAF as u64) * 8, 1)?[0].load_racy();
    if leaf == 0 {
        return None;
    }
    let mut r = P::<Msg>::from_off(seg.try_cells(leaf + (page % DIR_LEAF as u64) * 8, 1)?[0].load_racy());
    // A page holds at most PAGE / 8 slices (the smallest is 8 bytes); a
    // longer walk is a list being changed under it.
    for _ in 0..PAGE / 8 {
        let rr: &Msg = seg.try_rec(r)?;
        let o = rr.off.load_racy();
        if o == off {
            return (rr.kind.load_racy() != ENTRY_SENTINEL).then_some(r);
        }
        if o > off || o / PAGE != page {
            return None;
        }
        r = rr.a_next.load_racy();
    }
    None
}

/// Links a slice record whose range was just committed into `left`'s gap
/// (derived state only: address order, gaps, bins, directory, counts).
pub fn link_slice<S: Store>(s: &S, peer: P<PeerRec>, left: P<Msg>, r: P<Msg>) {
    let p = s.rec(peer);
    let (lr, rr) = (s.rec(left), s.rec(r));
    debug_assert_eq!(end_of(s, left), rr.off.get());
    let gap = lr.gap.get() - rr.size.get();
    let next = lr.a_next.get();
    s.set(&rr.a_prev, left);
    s.set(&rr.a_next, next);
    if next.is_null() {
        s.set(&p.pool_last, r);
    } else {
        s.set(&s.rec(next).a_prev, r);
    }
    s.set(&lr.a_next, r);
    // The rest of the gap keeps its punch mark: its pages did not change.
    s.set(&rr.gap_clean, lr.gap_clean.get());
    set_gap(s, peer, left, 0);
    s.set(&rr.gap, 0);
    set_gap(s, peer, r, gap);
    dir_add(s, peer, r);
    s.add(&p.pool_slices, 1);
    // Raised without the undo log: even if a transaction placing the
    // slice is rolled back, its sender may have copied payload into these
    // pages, and they must be swept like any others (a value too high
    // only costs a redundant punch).
    let end = end_of(s, r);
    if end > p.pool_dirty_end.get() {
        p.pool_dirty_end.raw_set(end);
    }
}

/// Unlinks a slice record that no longer holds its slice (its state was
/// committed without [`MS_SLICE`]): its bytes and gap go to the slice
/// before it.
pub fn unlink_slice<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    let rr = s.rec(r);
    let (left, next) = (rr.a_prev.get(), rr.a_next.get());
    let (off, size) = (rr.off.get(), rr.size.get());
    dir_remove(s, peer, r);
    let merged = s.rec(left).gap.get() + size + rr.gap.get();
    set_gap(s, peer, r, 0);
    s.set(&s.rec(left).a_next, next);
    if next.is_null() {
        s.set(&p.pool_last, left);
    } else {
        s.set(&s.rec(next).a_prev, left);
    }
    s.set(&rr.a_next, P::NULL);
    s.set(&rr.a_prev, P::NULL);
    s.set(&s.rec(left).gap_clean, DIRTY);
    set_gap(s, peer, left, merged);
    s.add(&p.pool_slices, -1);
    count_freed(s, peer, off, size);
    if next.is_null() {
        trim_tail(s, peer, end_of(s, left));
    }
}

/// Whether `peer`'s queue still holds messages: its receiver is working
/// through a backlog whose freed room the next sends will take again, so
/// punching it now would only make them fault the pages back in (and a
/// punch under the peer lock stalls those senders).
fn backlog<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    s.rec(peer).q_len.get() > 0
}

/// Whether releasing the slice at `off` (of `size` bytes) of the peer
/// `p` may give pages back (a trim of the free tail or a sweep), judged
/// without the lock: not if the slice lies in the first MiB, which is
/// never punched on the message path, and no page beyond it is resident.
pub(crate) fn release_may_give_back_racy(p: &PeerRec, off: u64, size: u64) -> bool {
    ends_beyond_kept_start(off, size) || p.pool_dirty_end.load_racy() > TRIM_KEEP
}

/// Whether the slice at `off` (of `size` bytes) reaches beyond the pool's
/// kept first MiB: only such slices count towards a sweep.
fn ends_beyond_kept_start(off: u64, size: u64) -> bool {
    off.saturating_add(size) > TRIM_KEEP
}

/// Counts a freed slice towards the next sweep, and asks for the sweep
/// (once per transaction) when enough has been freed and the queue is
/// empty.
fn count_freed<S: Store>(s: &S, peer: P<PeerRec>, off: u64, size: u64) {
    let p = s.rec(peer);
    let counted = if ends_beyond_kept_start(off, size) { size } else { 0 };
    let freed = (p.pool_freed.get() as u64 + counted).min(u32::MAX as u64) as u32;
    if freed < SWEEP_AFTER || backlog(s, peer) {
        if freed != p.pool_freed.get() {
            s.set(&p.pool_freed, freed);
        }
        return;
    }
    s.set(&p.pool_freed, 0);
    let what = Later::Sweep { peer, serial: p.serial.get() };
    if !s.has_later(&what) {
        s.later(what);
    }
}

/// The pool is free from `free_from` to its end: if that holds many
/// resident pages beyond the kept start, punch them out once the change
/// is final, so a burst does not pin memory once its slices are gone.
fn trim_tail<S: Store>(s: &S, peer: P<PeerRec>, free_from: u64) {
    if backlog(s, peer) {
        // Counted by `count_freed`: the sweep once the queue is empty
        // covers the tail too.
        return;
    }
    let p = s.rec(peer);
    let start = (free_from.div_ceil(PAGE) * PAGE).max(TRIM_KEEP);
    let end = p.pool_dirty_end.get().div_ceil(PAGE) * PAGE;
    if end <= start || end - start < TRIM_MIN {
        return;
    }
    s.set(&p.pool_dirty_end, start);
    s.later(Later::Trim { peer, serial: p.serial.get(), off: start, len: end - start });
}

/// Runs work queued with [`Store::later`], with the peer's lock still
/// held. A trim happens only if the range is still inside the free tail
/// (a rolled-back part of a transaction may have undone the free).
pub fn run_later<S: Store>(s: &S, what: Later) {
    match what {
        Later::Trim { peer, serial, off, len } => {
            let Some(pool) = live_pool(s, peer, serial, off + len) else { return };
            let last = s.rec(peer).pool_last.get();
            if last.is_null() || end_of(s, last) > off {
                return;
            }
            // The free tail; the peer lock keeps anyone from allocating
            // there meanwhile.
            let _ = pool.punch(off, len);
        }
        Later::Sweep { peer, serial } => {
            let dirty_end = s.rec(peer).pool_dirty_end.get().div_ceil(PAGE) * PAGE;
            let Some(pool) = live_pool(s, peer, serial, dirty_end) else { return };
            for r in gaps(s, peer).into_iter().filter(|&r| s.rec(r).gap_clean.get() == DIRTY) {
                if let Some((start, len)) = whole_pages(s, r, TRIM_KEEP, dirty_end) {
                    // Free space; the peer lock keeps anyone from
                    // allocating there meanwhile.
                    let _ = pool.punch(start, len);
                }
                s.set(&s.rec(r).gap_clean, CLEAN_BEYOND_KEEP);
                crate::crash::point("sweep-marked");
            }
        }
    }
}

/// The slices of `peer` that have a gap, in bin order.
fn gaps<S: Store>(s: &S, peer: P<PeerRec>) -> Vec<P<Msg>> {
    let p = s.rec(peer);
    let mut v = Vec::new();
    for b in 0..NBINS {
        let mut r = p.bins[b].get();
        while !r.is_null() {
            v.push(r);
            r = s.rec(r).g_next.get();
        }
    }
    v
}

/// The whole pages of the gap after `r` from `from` on and below
/// `dirty_end` (page-aligned), as (offset, length): what a punch of the
/// gap may give back.
fn whole_pages<S: Store>(s: &S, r: P<Msg>, from: u64, dirty_end: u64) -> Option<(u64, u64)> {
    let off = end_of(s, r);
    let gap = s.rec(r).gap.get();
    let start = (off.div_ceil(PAGE) * PAGE).max(from);
    let end = ((off + gap) / PAGE * PAGE).min(dirty_end);
    (end > start).then(|| (start, end - start))
}

/// Whether `peer`'s pool has a gap that [`sweep_idle`] has not swept
/// since it last grew.
pub(crate) fn has_unswept<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    gaps(s, peer).into_iter().any(|r| s.rec(r).gap_clean.get() != CLEAN_ALL)
}

/// Whether messages came to `peer` since the last call (by the periodic
/// scan, under the peer's lock): such a pool is in use, and its free
/// pages are about to be taken again.
pub(crate) fn busy_since_last_look<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    let p = s.rec(peer);
    let now = p.clock.load() as u32;
    let busy = p.swept_at.get() != now;
    if busy {
        s.set(&p.swept_at, now);
    }
    busy
}

/// Gives back every page of `peer`'s pool that no live slice uses, the
/// first MiB and a small free tail included: the periodic scan's part of
/// the pool's memory rule, for pools the message path left pages in. The
/// caller holds the peer's lock, so nobody allocates in a gap meanwhile;
/// the holes are punched through this process's mapping of the pool if it
/// has one, else through the pool file (the scanning process need not map
/// every pool). Returns the number of bytes punched.
pub(crate) fn sweep_idle<S: Store>(s: &S, peer: P<PeerRec>) -> u64 {
    s.hold(peer);
    let p = s.rec(peer);
    let dirty_end = p.pool_dirty_end.get().div_ceil(PAGE) * PAGE;
    let mut holes = Vec::new();
    for r in gaps(s, peer).into_iter().filter(|&r| s.rec(r).gap_clean.get() != CLEAN_ALL) {
        if let Some((start, len)) = whole_pages(s, r, 0, dirty_end) {
            holes.push((start, len));
            if s.rec(r).a_next.get().is_null() {
                // The free tail: nothing beyond `start` is resident now.
                s.set(&p.pool_dirty_end, start);
            }
        }
        s.set(&s.rec(r).gap_clean, CLEAN_ALL);
    }
    if holes.is_empty() {
        return 0;
    }
    let punched_by = |punch: &dyn Fn(u64, u64) -> bool| holes.iter().filter(|&&(off, len)| punch(off, len)).map(|&(_, len)| len).sum();
    // Through this process's mapping when it has one: a descriptor opened
    // for the occasion could take the last free number from an application
    // working at its limit.
    if let Some(pool) = s.dom().mapped_pool(p.serial.get()).filter(|m| holes.iter().all(|&(off, len)| m.covers(off, len))) {
        return punched_by(&|off, len| pool.punch(off, len).is_ok());
    }
    let Ok(fd) = s.dom().open_file(&crate::domain::Domain::pool_name(p.serial.get()), libc::O_RDWR) else { return 0 };
    let punched = punched_by(&|off, len| {
        crate::sys::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len).is_ok()
    });
    crate::sys::close(fd);
    punched
}

/// The pool mapping of `peer` for a punch below `end`, if the record is
/// still the live peer `serial`.
fn live_pool<S: Store>(s: &S, peer: P<PeerRec>, serial: u64, end: u64) -> Option<std::sync::Arc<crate::shm::PoolMapping>> {
    let p = s.rec(peer);
    if p.magic.get() != PEER_MAGIC || p.serial.get() != serial {
        return None;
    }
    s.dom().pool_for(serial, end).ok()
}

/// Puts the pool's sentinel `r` (a free record of `peer`) in place: an
/// empty pool of `size` bytes (its file is that long), one gap covering it
/// all.
pub fn init<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>, size: u64) {
    let p = s.rec(peer);
    s.set(&p.pool_size, size);
    let rr = s.rec(r);
    s.set(&rr.kind, ENTRY_SENTINEL);
    s.set(&rr.peer, peer);
    s.set(&rr.off, 0);
    s.set(&rr.size, 0);
    // A record of a reused arena chunk keeps the charges of its last
    // message; the sentinel charges nothing (usage and `rebuild` sum the
    // charges of every live record).
    for c in &rr.charged {
        s.set(c, 0);
    }
    s.set(&rr.state, MS_LIVE | MS_SLICE);
    crate::arena::taken(s, peer, r);
    s.set(&p.sentinel, r);
    s.set(&p.pool_last, r);
    s.set(&rr.gap, 0);
    set_gap(s, peer, r, pool_end(s, peer));
}

/// Grows the pool to `size` bytes (a transaction holding the peer's
/// lock): its file first (so that no slice can lie beyond it), then its
/// directory's top level and its free tail. Slices, and every mapping of
/// the pool, stay where they are. A pool never shrinks.
pub fn grow(tx: &crate::txn::Txn, peer: P<PeerRec>, size: u64) -> Result<()> {
    tx.hold(peer);
    let p = tx.rec(peer);
    let old = p.pool_size.get();
    if size <= old {
        return Ok(());
    }
    tx.domain().grow_pool_file(p.serial.get(), size)?;
    crate::capacity::dir_grow(tx, peer, old, size)?;
    let last = p.pool_last.get();
    // The new part has never been written: whatever the tail's punch mark
    // says about resident pages stays true.
    set_gap(tx, peer, last, tx.rec(last).gap.get() + (size - old));
    tx.set(&p.pool_size, size);
    Ok(())
}

/// Offset and size of a slice.
pub fn range<S: Store>(s: &S, r: P<Msg>) -> (u64, u64) {
    let rr = s.rec(r);
    (rr.off.get(), rr.size.get())
}

/// Recomputes every derived field of the pool from the slices in
/// `slices` (live records holding a slice, the sentinel included), for
/// `rebuild`. Directory leaves that exist are cleared and refilled.
pub fn rebuild<S: Store>(s: &S, peer: P<PeerRec>, mut slices: Vec<P<Msg>>) {
    let p = s.rec(peer);
    slices.sort_by_key(|&r| (s.rec(r).off.get(), s.rec(r).kind.get() != ENTRY_SENTINEL));
    for b in 0..NBINS {
        s.set(&p.bins[b], P::NULL);
    }
    s.set(&p.bin_mask, 0);
    let top = p.dir.get();
    if top != 0 {
        for l in s.dom().seg.cells(top, dir_len(p.pool_size.get())) {
            if l.get() != 0 {
                s.dom().seg.cells(l.get(), DIR_LEAF).iter().for_each(|c| s.set(c, 0));
            }
        }
    }
    let mut prev = P::<Msg>::NULL;
    for (i, &r) in slices.iter().enumerate() {
        let rr = s.rec(r);
        let next = slices.get(i + 1).copied().unwrap_or(P::NULL);
        s.set(&rr.a_prev, prev);
        s.set(&rr.a_next, next);
        let end = rr.off.get() + rr.size.get();
        let gap = if next.is_null() { pool_end(s, peer) - end } else { s.rec(next).off.get() - end };
        s.set(&rr.gap, 0);
        s.set(&rr.gap_clean, DIRTY);
        set_gap(s, peer, r, gap);
        if rr.kind.get() != ENTRY_SENTINEL && dir_ready(s, peer, rr.off.get()) {
            dir_add(s, peer, r);
        }
        prev = r;
    }
    s.set(&p.pool_last, prev);
    s.set(&p.pool_slices, slices.len().saturating_sub(1) as u64);
    let end = if prev.is_null() { 0 } else { end_of(s, prev) };
    if end > p.pool_dirty_end.get() {
        s.set(&p.pool_dirty_end, end);
    }
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
