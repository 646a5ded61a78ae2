//! Per-peer queues of entries (messages and notifications) and their
//! clocks: the module's ordering protocol (docs/reference.md §7), part of a peer's message state.
//!
//! A queue's clock is even and only ever increased, with atomic max, so
//! that a multicast can sync it without the peer lock. Entries are sorted
//! by (stamp, tag, index): the stamp is odd while an entry is *staged* and
//! even once it is *committed*, the tag names its transaction (the same on
//! every queue), the index keeps a transaction's entries for one queue in
//! destination order. The queue is readable while its head is committed.
//! Membership is authoritative ([`MS_QUEUED`] in the record's state); the
//! links, the length and the tail are derived.

use crate::layout::*;
use crate::shm::{Atomic64, P};
use crate::store::Store;

/// The order key of an entry.
#[inline]
pub fn key<S: Store>(s: &S, r: P<Msg>) -> (u64, u64, u32) {
    let rr = s.rec(r);
    (rr.stamp.get(), rr.tag.get(), rr.index.get())
}

/// Whether an entry is staged (its transaction has not committed yet).
#[inline]
pub fn staged<S: Store>(s: &S, r: P<Msg>) -> bool {
    s.rec(r).stamp.get() % 2 == 1
}

/// Raises a clock to at least `t` (t even).
#[inline]
pub fn sync(clock: &Atomic64, t: u64) {
    clock.fetch_max(t);
}

/// Advances a clock past `at_least` and its current value; returns the new
/// (even) value, which nobody else gets from this clock.
#[inline]
pub fn tick(clock: &Atomic64, at_least: u64) -> u64 {
    loop {
        let cur = clock.load();
        let next = cur.max(at_least) + 2;
        if clock.compare_exchange(cur, next) {
            return next;
        }
    }
}

/// Links a record whose membership was just committed, at its place.
/// New entries belong at or near the tail, so the search starts there.
pub fn insert<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    s.hold(peer);
    let p = s.rec(peer);
    let k = key(s, r);
    let mut after = p.q_tail.get();
    while !after.is_null() && key(s, after) > k {
        after = s.rec(after).q_prev.get();
    }
    link_after(s, peer, after, r);
    s.add(&p.q_len, 1);
    if has_fds(s, r) {
        s.add(&p.q_fd_msgs, 1);
    }
}

fn has_fds<S: Store>(s: &S, r: P<Msg>) -> bool {
    let rr = s.rec(r);
    rr.kind.get() == ENTRY_DATA && rr.n_fds.get() > 0
}

/// Links `r` right after `after` (null: at the head).
fn link_after<S: Store>(s: &S, peer: P<PeerRec>, after: P<Msg>, r: P<Msg>) {
    let p = s.rec(peer);
    let rr = s.rec(r);
    let next = if after.is_null() { p.q_head.get() } else { s.rec(after).q_next.get() };
    s.set(&rr.q_prev, after);
    s.set(&rr.q_next, next);
    if after.is_null() {
        s.set(&p.q_head, r);
    } else {
        s.set(&s.rec(after).q_next, r);
    }
    if next.is_null() {
        s.set(&p.q_tail, r);
    } else {
        s.set(&s.rec(next).q_prev, r);
    }
}

/// Unlinks a record whose membership was just withdrawn.
pub fn unlink<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    s.hold(peer);
    detach(s, peer, r);
    let p = s.rec(peer);
    s.add(&p.q_len, -1);
    if has_fds(s, r) {
        s.add(&p.q_fd_msgs, -1);
    }
}

fn detach<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    let p = s.rec(peer);
    let rr = s.rec(r);
    let (n, pr) = (rr.q_next.get(), rr.q_prev.get());
    if pr.is_null() {
        s.set(&p.q_head, n);
    } else {
        s.set(&s.rec(pr).q_next, n);
    }
    if n.is_null() {
        s.set(&p.q_tail, pr);
    } else {
        s.set(&s.rec(n).q_prev, pr);
    }
}

/// Moves a queued record to its place after its key grew (a commit).
pub fn reposition<S: Store>(s: &S, peer: P<PeerRec>, r: P<Msg>) {
    s.hold(peer);
    let k = key(s, r);
    let mut after = s.rec(r).q_prev.get();
    let mut next = s.rec(r).q_next.get();
    if next.is_null() || key(s, next) > k {
        return;
    }
    detach(s, peer, r);
    while !next.is_null() && key(s, next) < k {
        after = next;
        next = s.rec(next).q_next.get();
    }
    link_after(s, peer, after, r);
}

/// The head entry.
#[inline]
pub fn head<S: Store>(s: &S, peer: P<PeerRec>) -> P<Msg> {
    s.hold(peer);
    s.rec(peer).q_head.get()
}

/// The entries of a queue, head first.
pub fn entries<S: Store>(s: &S, peer: P<PeerRec>) -> Vec<P<Msg>> {
    s.hold(peer);
    crate::store::walk(s, s.rec(peer).q_head.get(), |e| e.q_next.get()).collect()
}

/// Recomputes the queue from its members (`rebuild`).
pub fn rebuild<S: Store>(s: &S, peer: P<PeerRec>, mut members: Vec<P<Msg>>) {
    let p = s.rec(peer);
    members.sort_by_key(|&r| key(s, r));
    s.set(&p.q_head, P::NULL);
    s.set(&p.q_tail, P::NULL);
    let mut after = P::NULL;
    for &r in &members {
        link_after(s, peer, after, r);
        after = r;
    }
    s.set(&p.q_len, members.len() as u64);
    s.set(&p.q_fd_msgs, members.iter().filter(|&&r| has_fds(s, r)).count() as u64);
}
