//! A peer's record arena: the [`Msg`] records of its messages,
//! notifications and slices, in chunks that only the domain lock adds
//! (`capacity`). Taking and giving back records is message state of the
//! peer: a record is in use exactly while its `state` is non-zero
//! (authoritative); the free list is derived (`rebuild` recomputes it).
//!
//! A section takes a record in three steps: it looks at the free list's
//! head, initialises the record and commits it by writing its state, and
//! only then pops it; killed in between, the record is still free.

use crate::layout::*;
use crate::shm::P;
use crate::store::{walk, Store};

/// Size of a record.
pub const REC: u64 = core::mem::size_of::<Msg>() as u64;
/// Size of a chunk (its header plus [`CHUNK_RECS`] records).
pub const CHUNK_BYTES: u64 = REC * (CHUNK_RECS + 1);

/// The record a new entry of `peer` would get, if the arena has one.
#[inline]
pub fn peek<S: Store>(s: &S, peer: P<PeerRec>) -> Option<P<Msg>> {
    let r = s.rec(peer).free_recs.get();
    (!r.is_null()).then_some(r)
}

/// How many free records `peer` has.
#[inline]
pub fn free_count<S: Store>(s: &S, peer: P<PeerRec>) -> u64 {
    s.rec(peer).n_free_recs.get()
}

/// Pops `r`, the head of the free list, once its state was written.
#[inline]
pub fn taken<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    debug_assert_eq!(p.free_recs.get(), r);
    s.set(&p.free_recs, s.rec(r).free_next.get());
    s.add(&p.n_free_recs, -1);
}

/// Pushes a record whose state was set to free.
#[inline]
pub fn put_back<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    debug_assert_eq!(s.rec(r).state.get(), 0);
    s.set(&s.rec(r).free_next, p.free_recs.get());
    s.set(&p.free_recs, r);
    s.add(&p.n_free_recs, 1);
}

/// The records of chunk `c`.
pub fn records_of(c: P<Chunk>) -> impl Iterator<Item = P<Msg>> {
    (1..=CHUNK_RECS).map(move |i| P::from_off(c.off() + i * REC))
}

/// Every record of `peer`'s arena, in use or not.
pub fn all<S: Store>(s: &S, peer: P<PeerRec>) -> Vec<P<Msg>> {
    walk(s, s.rec(peer).chunks.get(), |c| c.next.get()).flat_map(records_of).collect()
}
