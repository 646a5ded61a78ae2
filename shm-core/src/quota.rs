//! Accounting (docs/reference.md §6 and its fair-share rule).
//!
//! Every resource is limited per user (real UID of the opener) and per
//! peer. A peer's usage (`used`) and the fair shares of the users sending
//! to it (`shares`) are derived message state of the peer: they sum the
//! charges of its records and the user references of its handles, and
//! `rebuild` recomputes them.
//!
//! A user's usage is the sum of its peers' usages. So that a message does
//! not write a record shared by every peer of its user, each peer keeps a
//! *reservation* (`resv`, authoritative) of at least its usage, and the
//! user record only sums the reservations (`claimed`, an atomic that moves
//! once per [`STEP`] of usage). `claimed` is raised before a reservation
//! grows and lowered after it shrinks, so it never falls below the true
//! usage; a process killed in between leaves it too high, which only makes
//! the next checks exact instead of quick. The step is small enough that
//! all the reservations of a user's peers together stay within a quarter
//! of its limit, and a peer keeps one step when its usage drops to zero,
//! so that a receiver that keeps up does not move `claimed` at all. A check passes quickly when
//! what is left unclaimed (plus the caller's own slack) settles it; near
//! the limit it sums the usage and shares of the user's peers instead,
//! reading them without their locks, as the module read its atomic
//! counters: exact for one caller, and a concurrent charge is seen before
//! or after, never half.

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::P;
use crate::store::{walk, Store};

/// How far `peer`'s reservation runs ahead of its usage: a 64th of its
/// user's limit, less when the user has many peers (its record counts
/// them), so that their reservations together stay within a quarter of
/// the limit.
fn step<S: Store>(s: &S, peer: P<PeerRec>, res: usize) -> i64 {
    let u = s.rec(s.rec(peer).user.get());
    let max = u.max[res].load_racy();
    let peers = u.refs.load_racy().max(1) as i64;
    (max / 64).min(max / (4 * peers)).max(1)
}

/// What is left of `peer`'s limit.
#[inline]
pub fn remaining<S: Store>(s: &S, peer: P<PeerRec>, res: usize) -> i64 {
    let p = s.rec(peer);
    p.max[res].get() - p.used[res].get()
}

/// The share of sending user `uid` on `peer`, if it has one.
pub fn share_of<S: Store>(s: &S, peer: P<PeerRec>, uid: u32) -> Option<&Share> {
    let key = uid as u64 + 1;
    // Most peers hear from one or two users: their shares are inline, and
    // every message looks its sender's up several times.
    if let Some(sh) = s.rec(peer).shares.iter().find(|sh| sh.uid.get() == key) {
        return Some(sh);
    }
    block_shares(s, peer).find(|sh| sh.uid.get() == key)
}

/// Every share slot of `peer`, used or not: the inline ones, then those of
/// the share blocks.
fn shares<S: Store>(s: &S, peer: P<PeerRec>) -> impl Iterator<Item = &Share> {
    s.rec(peer).shares.iter().chain(block_shares(s, peer))
}

/// The share slots of `peer`'s share blocks.
fn block_shares<S: Store>(s: &S, peer: P<PeerRec>) -> impl Iterator<Item = &Share> {
    walk(s, s.rec(peer).share_blocks.get(), |b| b.next.get()).flat_map(move |b| s.rec(b).shares.iter())
}

/// Whether `peer` has a share slot for `uid` (or a free one).
pub fn share_ready<S: Store>(s: &S, peer: P<PeerRec>, uid: u32) -> bool {
    let fits = |sh: &Share| sh.uid.get() == uid as u64 + 1 || sh.uid.get() == 0;
    s.rec(peer).shares.iter().any(fits) || block_shares(s, peer).any(fits)
}

/// Adds `sign` × `amounts` to the share of `uid` on `peer`, taking a free
/// slot for a new sender and freeing one that drops to nothing. The slot
/// must exist ([`share_ready`]).
pub fn share_add<S: Store>(s: &S, peer: P<PeerRec>, uid: u32, amounts: [i64; NRES], sign: i64) {
    let sh = match share_of(s, peer, uid) {
        Some(sh) => sh,
        None => {
            let sh = shares(s, peer).find(|sh| sh.uid.get() == 0).expect("share slot missing");
            s.set(&sh.uid, uid as u64 + 1);
            sh
        }
    };
    for (i, a) in amounts.iter().enumerate() {
        s.add_i(&sh.used[i], sign * a);
    }
    if sh.used.iter().all(|u| u.get() == 0) {
        s.set(&sh.uid, 0);
    }
}

/// The peers of user `u` in the domain, read without the domain lock
/// (records are never freed; a peer added or removed meanwhile may be
/// missed, as a concurrent one would be).
fn peers_of_user<S: Store>(s: &S, u: P<UserRec>) -> Vec<P<PeerRec>> {
    let hdr: &Header = s.dom().seg.at0();
    let bound = hdr.n_peers.load_racy() + 64;
    let mut v = Vec::new();
    let mut p = hdr.peers.load_racy();
    let mut steps = 0;
    while !p.is_null() && steps < bound {
        let pr = s.rec(p);
        if pr.magic.load_racy() == PEER_MAGIC && pr.user.load_racy() == u {
            v.push(p);
        }
        p = pr.next.load_racy();
        steps += 1;
    }
    v
}

/// The user-wide half of a check: `c` units for `peer`'s user, plainly
/// (what is left must cover them) or, for a message of sending user
/// `fair`, under the fair-share rule (what is left must stay at least the
/// sender's share on all of the user's peers after the charge).
fn user_allows<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64, fair: Option<u32>) -> bool {
    let p = s.rec(peer);
    let ur = s.rec(p.user.get());
    let max = ur.max[res].get();
    let slack = (p.resv[res].get() - p.used[res].get()).max(0);
    // A lower bound of what is left: the unclaimed part plus our slack.
    let left_at_least = max - ur.claimed[res].load() as i64 + slack;
    let quick = match fair {
        None => left_at_least >= c,
        // A sender's share is part of the usage, so what is left covers
        // share + 2c whenever it is at least half the limit plus c.
        Some(_) => 2 * left_at_least >= max + 2 * c,
    };
    if quick {
        return true;
    }
    let mut used = 0;
    let mut share = 0;
    for q in peers_of_user(s, p.user.get()) {
        let qr = s.rec(q);
        if q == peer {
            used += qr.used[res].get();
        } else {
            used += qr.used[res].load_racy();
        }
        if let Some(uid) = fair {
            share += shares(s, q).filter(|sh| sh.uid.load_racy() == uid as u64 + 1).map(|sh| sh.used[res].load_racy()).sum::<i64>();
        }
    }
    let left = max - used;
    match fair {
        None => left >= c,
        Some(_) => left >= share + 2 * c,
    }
}

/// The plain rule (6.2): the user first, then the peer; EDQUOT with
/// nothing changed if either has less than `c` left.
pub fn check_plain<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64) -> Result<()> {
    s.hold(peer);
    if c == 0 {
        return Ok(());
    }
    if !user_allows(s, peer, res, c, None) || remaining(s, peer, res) < c {
        return Err(Errno::EDQUOT);
    }
    Ok(())
}

/// The fair-share rule for a message of sending user `uid`: on both the
/// receiving user and the receiving peer, what is left must stay at least
/// the sender's share after the charge (`R >= s + 2c`).
pub fn check_fair<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64, uid: u32) -> Result<()> {
    s.hold(peer);
    if c == 0 {
        return Ok(());
    }
    let share = share_of(s, peer, uid).map_or(0, |sh| sh.used[res].get());
    if !user_allows(s, peer, res, c, Some(uid)) || remaining(s, peer, res) < share + 2 * c {
        return Err(Errno::EDQUOT);
    }
    Ok(())
}

/// Makes `peer`'s reservation cover a usage of `new_used`: the user's
/// claim grows first, then the reservation (authoritative).
pub fn reserve<S: Store>(s: &S, peer: P<PeerRec>, res: usize, new_used: i64) {
    let p = s.rec(peer);
    let resv = p.resv[res].get();
    if new_used <= resv {
        return;
    }
    let want = new_used + step(s, peer, res);
    s.claim(p.user.get(), res, want - resv);
    s.set(&p.resv[res], want);
}

/// Shrinks a reservation that runs more than two steps ahead of the usage
/// to one step ahead: the reservation first, then the user's claim. (All
/// of it goes back when the peer's record is freed.)
fn unreserve<S: Store>(s: &S, peer: P<PeerRec>, res: usize) {
    let p = s.rec(peer);
    let (resv, used) = (p.resv[res].get(), p.used[res].get().max(0));
    let step = step(s, peer, res);
    let want = used + step;
    if resv - used <= 2 * step {
        return;
    }
    s.set(&p.resv[res], want);
    s.claim(p.user.get(), res, want - resv);
}

/// Counts `c` units used by `peer` (after the checks passed; negative to
/// give them back).
pub fn account<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64) {
    s.hold(peer);
    if c == 0 {
        return;
    }
    let p = s.rec(peer);
    let now = p.used[res].get() + c;
    if c > 0 {
        reserve(s, peer, res, now);
    }
    s.set(&p.used[res], now);
    if c < 0 {
        unreserve(s, peer, res);
    }
}

/// Plain charge: [`check_plain`], then [`account`].
pub fn charge<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64) -> Result<()> {
    check_plain(s, peer, res, c)?;
    account(s, peer, res, c);
    Ok(())
}

/// Gives back `c` units.
pub fn refund<S: Store>(s: &S, peer: P<PeerRec>, res: usize, c: i64) {
    account(s, peer, res, -c);
}

/// Recomputes usage and shares (`rebuild`): `handle_refs` is the number of
/// user references of the peer's handles, `records` its live records.
pub fn rebuild<S: Store>(s: &S, peer: P<PeerRec>, handle_refs: i64, records: &[P<Msg>]) {
    let p = s.rec(peer);
    let mut used = [0i64; NRES];
    used[RES_HANDLES] = handle_refs;
    for sh in shares(s, peer) {
        s.set(&sh.uid, 0);
        sh.used.iter().for_each(|u| s.set(u, 0));
    }
    for &r in records {
        let rr = s.rec(r);
        let st = rr.state.get();
        used[RES_SLICES] += rr.charged[RES_SLICES].get();
        used[RES_HANDLES] += rr.charged[RES_HANDLES].get();
        if st & MS_INFLIGHT != 0 {
            used[RES_BYTES] += rr.charged[RES_BYTES].get();
            used[RES_FDS] += rr.charged[RES_FDS].get();
            share_add(s, peer, rr.sender_uid.get(), crate::message::share_amounts(s, r, st), 1);
        }
    }
    for (res, &u) in used.iter().enumerate() {
        s.set(&p.used[res], u);
        reserve(s, peer, res, u);
    }
}

/// PEER_RESET of one limit (2.3 step 5): what is left moves with the
/// maximum (and may become negative).
pub fn set_peer_max<S: Store>(s: &S, peer: P<PeerRec>, res: usize, new_max: i64) {
    s.hold(peer);
    s.set(&s.rec(peer).max[res], new_max);
}
