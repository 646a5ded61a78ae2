//! Recovery of a peer lock whose holder died inside a section (rule 7 of
//! `txn`): every derived field of the peer's message state is recomputed
//! from the authoritative ones. Sections keep the authoritative state whole
//! at every store, so whatever was half done in the derived state is simply
//! redone from it.

use crate::arena;
use crate::layout::*;
use crate::message;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::store::Store;

/// Recomputes the derived message state of `peer`, whose lock the caller
/// holds: the arena's free list, the pool, the queue, usage and shares,
/// handle reference counts and pending releases. The readiness mirror is
/// marked dirty (the peer resyncs its socket on its next call) and the
/// peer is marked for collection.
pub fn rebuild<S: Store>(s: &S, peer: P<PeerRec>) {
    s.hold(peer);
    let p = s.rec(peer);
    // A locked SLICE_RELEASE counts itself only while it holds this lock,
    // so the dead holder's count is the only one there (`release`).
    p.rel_locked_busy.store(0);
    let all = arena::all(s, peer);
    let live: Vec<P<Msg>> = all.iter().copied().filter(|&r| s.rec(r).state.get() != 0).collect();
    // the arena
    s.set(&p.free_recs, P::NULL);
    s.set(&p.n_free_recs, 0);
    for &r in all.iter().rev() {
        if s.rec(r).state.get() == 0 {
            arena::put_back(s, peer, r);
        }
    }
    // the pool
    let slices = live.iter().copied().filter(|&r| s.rec(r).state.get() & MS_SLICE != 0).collect();
    pool::rebuild(s, peer, slices);
    // the queue
    let members = live.iter().copied().filter(|&r| s.rec(r).state.get() & MS_QUEUED != 0).collect();
    queue::rebuild(s, peer, members);
    // handles: one reference per record that points at them
    let mut user_refs = 0i64;
    let mut h = p.handles.get();
    while !h.is_null() {
        let hr = s.rec(h);
        user_refs += hr.user_refs.get() as i64;
        s.set(&hr.refs, 0);
        h = hr.holder_next.get();
    }
    // A handle the peer no longer holds (an orphan of its teardown, kept
    // for records a dead sender left) was not zeroed above; only this
    // peer's records point at it, so their count is its whole count.
    for (h, n) in message::count_handle_refs(s, &live) {
        let hr = s.rec(h);
        if hr.holder.get() == peer {
            s.add(&hr.refs, n as i64);
        } else {
            s.set(&hr.refs, n);
        }
    }
    // pending releases of the peer's nodes
    let mut n = p.nodes.get();
    while !n.is_null() {
        s.set(&s.rec(n).release_entry, P::NULL);
        n = s.rec(n).owner_next.get();
    }
    for &r in &live {
        let rr = s.rec(r);
        if rr.kind.get() == ENTRY_RELEASE && rr.state.get() & MS_REFS != 0 {
            s.set(&s.rec(P::<Node>::from_off(rr.subject.get())).release_entry, r);
        }
    }
    quota::rebuild(s, peer, user_refs, &live);
    s.set(&p.n_prepared, live.iter().filter(|&&r| s.rec(r).state.get() & MS_PREPARED != 0).count() as u64);
    s.set(&p.bell_dirty, 1);
    s.set(&p.gc_pending, 1);
}
