//! Accounting (docs/reference.md §6).
//!
//! Every resource is tracked twice: per user (real UID of the opener) and
//! per peer, each with a maximum and a *remaining* counter. The plain rule
//! (6.2) charges both counters or fails with EDQUOT. Message transactions
//! use the fair-share rule of A.3 on top, which also tracks how much each
//! sending user has charged on each receiving user and peer, so that one
//! flooding sender leaves room for the others.

use crate::alloc;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::P;
use crate::table;
use crate::txn::Txn;

/// The user record of `uid`, created on first use; takes a reference.
pub fn user_get(tx: &Txn, uid: u32) -> Result<P<UserRec>> {
    if let Some(u) = table::get(tx, TAG_USER, 0, uid as u64) {
        let u = P::<UserRec>::from_off(u);
        tx.add(&tx.rec(u).refs, 1);
        return Ok(u);
    }
    let u = P::<UserRec>::from_off(alloc::alloc(tx, core::mem::size_of::<UserRec>() as u64)?);
    let r = tx.rec(u);
    tx.set(&r.uid, uid as u64);
    tx.set(&r.refs, 1);
    for (i, &max) in DEFAULT_MAX.iter().enumerate() {
        tx.set(&r.max[i], max);
        tx.set(&r.rem[i], max);
    }
    table::insert(tx, TAG_USER, 0, uid as u64, u.off())?;
    Ok(u)
}

/// Drops a reference; the record (and its counters) go with the last one.
pub fn user_put(tx: &Txn, u: P<UserRec>) {
    let r = tx.rec(u);
    tx.add(&r.refs, -1);
    if r.refs.get() == 0 {
        free_shares(tx, &r.shares);
        table::remove(tx, TAG_USER, 0, r.uid.get());
        alloc::free(tx, u.off(), core::mem::size_of::<UserRec>() as u64);
    }
}

/// Frees every share record of a list (its receiver is going away).
pub fn free_shares(tx: &Txn, head: &crate::shm::Cell<P<ShareRec>>) {
    for s in tx.walk(head.get(), |r| r.next.get()) {
        let r = tx.rec(s);
        let k1 = r.key1.get();
        table::remove(tx, k1 >> 56, k1 & ((1 << 56) - 1), r.key2.get());
        alloc::free(tx, s.off(), core::mem::size_of::<ShareRec>() as u64);
    }
    tx.set(head, P::NULL);
}

/// Plain charge of `c` units (6.2): user counter first, then the peer's.
pub fn charge(tx: &Txn, peer: P<PeerRec>, res: usize, c: i64) -> Result<()> {
    if c == 0 {
        return Ok(());
    }
    let p = tx.rec(peer);
    let u = tx.rec(p.user.get());
    if u.rem[res].get() < c || p.rem[res].get() < c {
        return Err(Errno::EDQUOT);
    }
    tx.add_i(&u.rem[res], -c);
    tx.add_i(&p.rem[res], -c);
    Ok(())
}

/// Gives back `c` units charged with [`charge`] or [`charge_fair`].
pub fn refund(tx: &Txn, peer: P<PeerRec>, res: usize, c: i64) {
    if c == 0 {
        return;
    }
    let p = tx.rec(peer);
    tx.add_i(&tx.rec(p.user.get()).rem[res], c);
    tx.add_i(&p.rem[res], c);
}

/// The share record of `sender_uid` on a receiving user or peer, kept on
/// the receiver's list `head`.
fn share(tx: &Txn, tag: u64, owner: u64, sender_uid: u32, head: &crate::shm::Cell<P<ShareRec>>) -> Result<P<ShareRec>> {
    if let Some(s) = table::get(tx, tag, owner, sender_uid as u64) {
        return Ok(P::from_off(s));
    }
    let s = P::<ShareRec>::from_off(alloc::alloc(tx, core::mem::size_of::<ShareRec>() as u64)?);
    let r = tx.rec(s);
    tx.set(&r.key1, tag << 56 | owner);
    tx.set(&r.key2, sender_uid as u64);
    tx.set(&r.next, head.get());
    tx.set(head, s);
    table::insert(tx, tag, owner, sender_uid as u64, s.off())?;
    Ok(s)
}

/// The pair of share records one message charges.
#[derive(Clone, Copy)]
pub struct Shares {
    pub user: P<ShareRec>,
    pub peer: P<ShareRec>,
}

/// Finds or creates the share records of `sender_uid` on `receiver`.
pub fn shares(tx: &Txn, receiver: P<PeerRec>, sender_uid: u32) -> Result<Shares> {
    let user = tx.rec(receiver).user.get();
    Ok(Shares {
        user: share(tx, TAG_SHARE_USER, user.off(), sender_uid, &tx.rec(user).shares)?,
        peer: share(tx, TAG_SHARE_PEER, receiver.off(), sender_uid, &tx.rec(receiver).shares)?,
    })
}

/// Fair-share charge (A.3): allowed iff, on both the receiving user and
/// the receiving peer, the remainder stays at least the sender's total
/// share after the charge (`R >= s + 2c`).
pub fn charge_fair(tx: &Txn, receiver: P<PeerRec>, res: usize, c: i64, sh: Shares) -> Result<()> {
    if c == 0 {
        return Ok(());
    }
    let p = tx.rec(receiver);
    let u = tx.rec(p.user.get());
    let (su, sp) = (tx.rec(sh.user), tx.rec(sh.peer));
    if u.rem[res].get() < su.used[res].get() + 2 * c || p.rem[res].get() < sp.used[res].get() + 2 * c {
        return Err(Errno::EDQUOT);
    }
    tx.add_i(&u.rem[res], -c);
    tx.add_i(&p.rem[res], -c);
    tx.add_i(&su.used[res], c);
    tx.add_i(&sp.used[res], c);
    Ok(())
}

/// Removes a dequeued message's amounts from the sender's shares.
pub fn unshare(tx: &Txn, sh: Shares, amounts: [i64; NRES]) {
    for s in [sh.user, sh.peer] {
        if s.is_null() {
            continue;
        }
        let r = tx.rec(s);
        for (i, a) in amounts.iter().enumerate() {
            tx.add_i(&r.used[i], -a);
        }
    }
}

/// PEER_RESET of one limit (2.3 step 5): the remaining counter moves by
/// the change of the maximum (and may become negative).
pub fn set_peer_max(tx: &Txn, peer: P<PeerRec>, res: usize, new_max: i64) {
    let p = tx.rec(peer);
    let old = p.max[res].get();
    tx.set(&p.max[res], new_max);
    tx.add_i(&p.rem[res], new_max - old);
}
