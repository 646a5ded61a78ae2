//! DATA messages: what a message entry holds and how it lets go of it.
//!
//! A message to peer R holds: a slice in R's pool (referenced until the
//! message is freed), R's handle of the destination node (null for a
//! seed), one attached R-side handle per payload entry (null once an entry
//! was found INVALID at RECV), the nonce of its fd carrier, and the quota
//! it charged on R: slices and handles (docs/reference.md §6.2) plus in-flight
//! bytes and fds and the sender's fair shares (A.3).

use crate::alloc;
use crate::layout::*;
use crate::object;
use crate::pool;
use crate::quota::{self, Shares};
use crate::shm::{Cell, P};
use crate::table;
use crate::txn::Txn;

/// The payload handle slots of a message.
pub fn handle_slots<'a>(tx: &Txn<'a>, e: P<Entry>) -> &'a [Cell<u64>] {
    let r = tx.rec(e);
    let n = r.n_handles.get();
    if n == 0 {
        return &[];
    }
    // Each entry was charged to its receiver's handle quota, which no
    // user can raise: more is a damaged count, not a message to allocate
    // for.
    assert!(n <= DEFAULT_MAX[RES_HANDLES] as u64, "message {e:?} claims {n} handles");
    tx.domain().seg.cells(r.handles.get(), n as usize)
}

/// Allocates the payload slot array of a message.
pub fn alloc_slots(tx: &Txn, e: P<Entry>, n: u64) -> crate::errno::Result<()> {
    // Only called while building a message: the entry is fresh.
    if n > 0 {
        let off = alloc::alloc(tx, n * 8)?;
        tx.init(&tx.rec(e).handles, off);
    }
    tx.init(&tx.rec(e).n_handles, n);
    Ok(())
}

/// The amounts a message counts in its sender's fair shares.
fn share_amounts(tx: &Txn, e: P<Entry>) -> [i64; NRES] {
    let r = tx.rec(e);
    let slice = r.slice.get();
    let bytes = if slice.is_null() { 0 } else { pool::range(tx, slice).1 as i64 };
    [1, r.n_handles.get() as i64, bytes, r.n_fds.get() as i64]
}

/// Dequeue-time accounting (A.3): in-flight bytes and fds go back to the
/// receiver, and the message leaves its sender's shares. Idempotent.
pub fn settle_inflight(tx: &Txn, e: P<Entry>) {
    let r = tx.rec(e);
    let peer = r.peer.get();
    for res in [RES_BYTES, RES_FDS] {
        let c = r.charged[res].get();
        if c != 0 {
            quota::refund(tx, peer, res, c);
            tx.set(&r.charged[res], 0);
        }
    }
    let sh = Shares { user: r.share_user.get(), peer: r.share_peer.get() };
    if !sh.user.is_null() || !sh.peer.is_null() {
        let amounts = share_amounts(tx, e);
        quota::unshare(tx, sh, amounts);
        tx.set(&r.share_user, P::NULL);
        tx.set(&r.share_peer, P::NULL);
    }
}

/// Drops payload entry `j` (found INVALID at RECV): the handle reference
/// and its quota go.
pub fn drop_slot(tx: &Txn, e: P<Entry>, j: usize) {
    let slots = handle_slots(tx, e);
    let h = P::<Handle>::from_off(slots[j].get());
    if h.is_null() {
        return;
    }
    tx.set(&slots[j], 0);
    let r = tx.rec(e);
    tx.add_i(&r.charged[RES_HANDLES], -1);
    quota::refund(tx, r.peer.get(), RES_HANDLES, 1);
    object::inflight_drop(tx, h);
}

/// Frees everything a (no longer queued) DATA entry holds.
pub fn release(tx: &Txn, e: P<Entry>) {
    settle_inflight(tx, e);
    let r = tx.rec(e);
    let peer = r.peer.get();
    let rem = r.charged[RES_HANDLES].get();
    if rem != 0 {
        quota::refund(tx, peer, RES_HANDLES, rem);
        tx.set(&r.charged[RES_HANDLES], 0);
    }
    let slots = handle_slots(tx, e);
    for slot in slots {
        let h = P::<Handle>::from_off(slot.get());
        if !h.is_null() {
            tx.set(slot, 0);
            object::inflight_drop(tx, h);
        }
    }
    if !slots.is_empty() {
        alloc::free(tx, r.handles.get(), r.n_handles.get() * 8);
    }
    let slice = r.slice.get();
    if !slice.is_null() {
        pool::unreference(tx, peer, slice);
    }
    let dest = P::<Handle>::from_off(r.subject.get());
    if !dest.is_null() {
        object::handle_unref(tx, dest);
    }
    if r.n_fds.get() > 0 {
        table::remove(tx, TAG_NONCE, 0, r.nonce.get());
    }
}

/// A fresh nonce for an fd carrier, registered to `e`.
///
/// Nonces must stay unique even when a transaction is rolled back (its
/// carrier may already sit in the vault as an orphan), so they do not come
/// from the segment: they are random 64-bit values.
pub fn assign_nonce(tx: &Txn, e: P<Entry>) -> crate::errno::Result<u64> {
    let n = loop {
        let n = random_u64();
        if n != 0 && table::get(tx, TAG_NONCE, 0, n).is_none() {
            break n;
        }
    };
    tx.set(&tx.rec(e).nonce, n);
    table::insert(tx, TAG_NONCE, 0, n, e.off())?;
    Ok(n)
}

fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        s = crate::sys::getrandom_u64() | 1;
    }
    // Mixing in the pid keeps a forked child's sequence apart from its
    // parent's, which shares the same state.
    s = s.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ ((crate::creds::current().pid as u64) << 17);
    STATE.store(s, Ordering::Relaxed);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
