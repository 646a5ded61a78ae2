//! Per-peer queues of entries (messages and notifications), ordered by the
//! global transaction stamp (docs/reference.md §7.9: one domain-wide counter,
//! incremented once per transaction; queues are FIFO in stamp order, and
//! the entries of one transaction in one queue are adjacent).

use crate::alloc;
use crate::doorbell;
use crate::errno::Result;
use crate::layout::*;
use crate::message;
use crate::object;
use crate::shm::P;
use crate::txn::Txn;

pub const ENTRY_SIZE: u64 = core::mem::size_of::<Entry>() as u64;

/// Starts a new transaction: returns its stamp.
pub fn next_stamp(tx: &Txn) -> u64 {
    let c = tx.hdr().clock.get() + 1;
    tx.set(&tx.hdr().clock, c);
    c
}

/// A new, unqueued entry of `kind` for `peer`'s queue.
pub fn new_entry(tx: &Txn, kind: u32, peer: P<PeerRec>) -> Result<P<Entry>> {
    let e = P::<Entry>::from_off(alloc::alloc(tx, ENTRY_SIZE)?);
    let r = tx.rec(e);
    tx.init(&r.kind, kind);
    tx.init(&r.peer, peer);
    Ok(e)
}

/// Appends `e` with `stamp` to its peer's queue and rings the peer.
#[inline]
pub fn append(tx: &Txn, e: P<Entry>, stamp: u64) {
    let r = tx.rec(e);
    let peer = r.peer.get();
    let p = tx.rec(peer);
    tx.set(&r.stamp, stamp);
    tx.set(&r.queued, 1);
    let tail = p.q_tail.get();
    tx.set(&r.prev, tail);
    tx.set(&r.next, P::NULL);
    if tail.is_null() {
        tx.set(&p.q_head, e);
    } else {
        debug_assert!(tx.rec(tail).stamp.get() <= stamp, "queue out of stamp order");
        tx.set(&tx.rec(tail).next, e);
    }
    tx.set(&p.q_tail, e);
    tx.add(&p.q_len, 1);
    if r.kind.get() == ENTRY_DATA && r.n_fds.get() > 0 {
        tx.add(&p.q_fd_msgs, 1);
    }
    doorbell::after_enqueue(tx, peer);
}

/// Removes `e` from its queue (it stays allocated).
#[inline]
pub fn unlink(tx: &Txn, e: P<Entry>) {
    let r = tx.rec(e);
    debug_assert_eq!(r.queued.get(), 1);
    let p = tx.rec(r.peer.get());
    let (n, pr) = (r.next.get(), r.prev.get());
    if pr.is_null() {
        tx.set(&p.q_head, n);
    } else {
        tx.set(&tx.rec(pr).next, n);
    }
    if n.is_null() {
        tx.set(&p.q_tail, pr);
    } else {
        tx.set(&tx.rec(n).prev, pr);
    }
    tx.set(&r.queued, 0);
    tx.add(&p.q_len, -1);
    if r.kind.get() == ENTRY_DATA && r.n_fds.get() > 0 {
        tx.add(&p.q_fd_msgs, -1);
    }
}

/// Frees an unqueued entry and everything it holds.
#[inline]
pub fn free(tx: &Txn, e: P<Entry>) {
    let r = tx.rec(e);
    debug_assert_eq!(r.queued.get(), 0);
    match r.kind.get() {
        ENTRY_DATA => message::release(tx, e),
        ENTRY_DESTROY => object::handle_unref(tx, P::from_off(r.subject.get())),
        ENTRY_RELEASE => object::release_entry_gone(tx, P::from_off(r.subject.get()), e),
        _ => unreachable!("bad entry kind"),
    }
    alloc::free(tx, e.off(), ENTRY_SIZE);
}

/// Unlinks and frees (discarding a queued entry).
pub fn discard(tx: &Txn, e: P<Entry>) {
    unlink(tx, e);
    free(tx, e);
}

/// The entries of a queue, head first.
pub fn entries(tx: &Txn, peer: P<PeerRec>) -> Vec<P<Entry>> {
    tx.walk(tx.rec(peer).q_head.get(), |e| e.next.get()).collect()
}
