//! The life of a record (message or notification) in its receiver's
//! message state.
//!
//! A DATA message to peer R holds: a slice in R's pool, R's handle of the
//! destination node (null for a seed), one attached R-side handle per
//! payload entry (null once an entry was found INVALID at RECV; handled
//! under the domain lock), the nonce of its fd carrier, and the quota it
//! charged on R: slices and handles plus in-flight bytes and fds and the
//! sender's fair share.
//!
//! Every change of a record's life is one store of its state word (the
//! commit point); [`set_state`] makes that store and then brings the
//! derived state in line with it: queue membership, usage and shares,
//! the subject's reference count, the pool and the arena.

use crate::layout::*;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::shm::{Cell, P};
use crate::store::Store;

/// The payload handle slots of a message.
pub fn handle_slots<S: Store>(s: &S, e: P<Msg>) -> &[Cell<u64>] {
    let r = s.rec(e);
    let n = r.n_handles.get();
    if n == 0 {
        return &[];
    }
    // Each entry was charged to its receiver's handle quota, which no
    // user can raise: more is a damaged count, not a message to allocate
    // for.
    assert!(n <= DEFAULT_MAX[RES_HANDLES] as u64, "message {e:?} claims {n} handles");
    s.dom().seg.cells(r.handles.get(), n as usize)
}

/// The amounts a message counts in its sender's fair share.
pub fn share_amounts<S: Store>(s: &S, e: P<Msg>, state: u32) -> [i64; NRES] {
    let r = s.rec(e);
    let bytes = if state & MS_SLICE != 0 { r.size.get() as i64 } else { 0 };
    [1, r.n_handles.get() as i64, bytes, r.n_fds.get() as i64]
}

/// The handle a record points at (DATA destination, NODE_DESTROY subject).
pub fn subject_handle<S: Store>(s: &S, e: P<Msg>) -> P<Handle> {
    let r = s.rec(e);
    match r.kind.get() {
        ENTRY_DATA | ENTRY_DESTROY => P::from_off(r.subject.get()),
        _ => P::NULL,
    }
}

/// Initialises the fields of a free record `r` (not yet committed, so
/// without logging) for an entry of `kind`; everything else is zero, and
/// its incarnation `gen` moves on.
pub fn clear<S: Store>(s: &S, r: P<Msg>, kind: u32) {
    let rr = s.rec(r);
    for c in [&rr.stamp, &rr.tag, &rr.off, &rr.size, &rr.subject, &rr.n_bytes, &rr.n_handles, &rr.handles, &rr.nonce, &rr.tx] {
        s.init(c, 0);
    }
    for c in &rr.charged {
        s.init(c, 0);
    }
    for c in [&rr.index, &rr.sender_uid, &rr.uid, &rr.gid, &rr.pid, &rr.tid, &rr.n_fds, &rr.gap_clean] {
        s.init(c, 0);
    }
    s.init(&rr.kind, kind);
    // A new incarnation, before anything commits it: a release still
    // waiting for the old one finds it changed (`release`).
    s.init(&rr.gen, rr.gen.get().wrapping_add(1));
}

/// Commits `new` as the state of `e` (a record of `peer`) and updates
/// the derived state for every bit that went away or came (a slice that
/// comes is linked by the caller, which knows where it goes). A record
/// whose state becomes 0 goes back to the arena.
pub fn set_state<S: Store>(s: &S, peer: P<PeerRec>, e: P<Msg>, new: u32) {
    s.hold(peer);
    let r = s.rec(e);
    let old = r.state.get();
    // The state word is a section's commit point: what it publishes (the
    // record's fields, written with plain stores) must be in memory
    // before it, in the order the program gives, should the process die
    // right after; the compiler may not sink those stores past it.
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    s.set(&r.state, new);
    let gone = old & !new;
    let came = new & !old;
    if came & MS_QUEUED != 0 {
        queue::insert(s, peer, e);
    }
    if gone & MS_QUEUED != 0 {
        queue::unlink(s, peer, e);
    }
    if came & MS_PREPARED != 0 {
        s.add(&s.rec(peer).n_prepared, 1);
    }
    if gone & MS_PREPARED != 0 {
        s.add(&s.rec(peer).n_prepared, -1);
    }
    if came & MS_INFLIGHT != 0 {
        inflight(s, peer, e, new, 1);
    }
    if gone & MS_INFLIGHT != 0 {
        inflight(s, peer, e, old, -1);
    }
    let (had_refs, has_refs) = (old & MS_REFS != 0, new & MS_REFS != 0);
    if has_refs && !had_refs {
        subject_ref(s, peer, e, 1);
    }
    if had_refs && !has_refs {
        subject_ref(s, peer, e, -1);
    }
    if came & MS_LIVE != 0 {
        quota::account(s, peer, RES_SLICES, r.charged[RES_SLICES].get());
        quota::account(s, peer, RES_HANDLES, r.charged[RES_HANDLES].get());
    }
    if gone & MS_SLICE != 0 {
        pool::unlink_slice(s, peer, e);
    }
    if gone & MS_LIVE != 0 {
        quota::refund(s, peer, RES_SLICES, r.charged[RES_SLICES].get());
        quota::refund(s, peer, RES_HANDLES, r.charged[RES_HANDLES].get());
        s.free_record(peer, e);
    }
}

/// In-flight bytes and fds and the sender's share come (`sign` 1, `state`
/// the new one) or go (`sign` -1, `state` the old one: a message can
/// leave flight and lose its slice in one change).
fn inflight<S: Store>(s: &S, peer: P<PeerRec>, e: P<Msg>, state: u32, sign: i64) {
    let r = s.rec(e);
    quota::account(s, peer, RES_BYTES, sign * r.charged[RES_BYTES].get());
    quota::account(s, peer, RES_FDS, sign * r.charged[RES_FDS].get());
    quota::share_add(s, peer, r.sender_uid.get(), share_amounts(s, e, state), sign);
}

/// The record starts (1) or stops (-1) pointing at its subject.
fn subject_ref<S: Store>(s: &S, peer: P<PeerRec>, e: P<Msg>, d: i64) {
    let r = s.rec(e);
    if r.kind.get() == ENTRY_RELEASE {
        let node = s.rec(P::<Node>::from_off(r.subject.get()));
        if d > 0 {
            s.set(&node.release_entry, e);
        } else if node.release_entry.get() == e {
            s.set(&node.release_entry, P::NULL);
        }
        return;
    }
    let h = subject_handle(s, e);
    if !h.is_null() {
        handle_ref(s, peer, h, d);
    }
}

/// Changes the record count of one of `peer`'s handles. A handle nothing
/// refers to any more is left for the next transaction on the peer to
/// free (`gc_pending`): freeing it changes the object graph.
pub fn handle_ref<S: Store>(s: &S, peer: P<PeerRec>, h: P<Handle>, d: i64) {
    let hr = s.rec(h);
    if d < 0 && hr.holder.get().is_null() {
        crate::crash::point("orphan-unref");
    }
    s.add(&hr.refs, d);
    // Stored only when it changes: the mark shares a cache line with what
    // a SEND to the peer reads, and a message's release often takes its
    // handle's count to 0.
    if hr.refs.get() == 0 && s.rec(peer).gc_pending.get() == 0 {
        s.set(&s.rec(peer).gc_pending, 1);
    }
}

/// The live records of `peer` with their payload handles, for `rebuild`:
/// each handle's count of the records that point at it.
pub fn count_handle_refs<S: Store>(s: &S, records: &[P<Msg>]) -> Vec<(P<Handle>, u64)> {
    let mut counts: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for &e in records {
        if s.rec(e).state.get() & MS_REFS == 0 {
            continue;
        }
        let h = subject_handle(s, e);
        if !h.is_null() {
            *counts.entry(h.off()).or_default() += 1;
        }
        for slot in handle_slots(s, e) {
            if slot.get() != 0 {
                *counts.entry(slot.get()).or_default() += 1;
            }
        }
    }
    counts.into_iter().map(|(h, n)| (P::from_off(h), n)).collect()
}
