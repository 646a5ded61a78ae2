//! Sections: one peer lock held by a thread without the domain lock — the
//! data path (rules 4 and 7 of `txn`). A section writes in place; its
//! commit point is a single store of authoritative state, and a peer lock
//! found with a dead section holder is recovered by `rebuild`.

use crate::doorbell::{Ticket, Visible};
use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::{Cell, Pod, P};
use crate::store::{Later, Store};
use core::cell::RefCell;

/// Writes in place with no lock bookkeeping: the store of a section, and
/// of recovery work that must not be undone with the transaction that
/// happens to run it.
pub struct Raw<'d> {
    pub dom: &'d Domain,
}

impl Store for Raw<'_> {
    fn dom(&self) -> &Domain {
        self.dom
    }

    #[inline]
    fn set<T: Pod>(&self, cell: &Cell<T>, v: T) {
        cell.raw_set(v)
    }

    #[inline]
    fn init<T: Pod>(&self, cell: &Cell<T>, v: T) {
        cell.raw_set(v)
    }

    #[inline]
    fn hold(&self, _peer: P<PeerRec>) {}

    fn claim(&self, user: P<UserRec>, res: usize, delta: i64) {
        if delta != 0 {
            self.dom.seg.rec(user).claimed[res].fetch_add(delta as u64);
        }
    }

    fn note_visible(&self, _peer: P<PeerRec>, _what: Visible) {}

    fn later(&self, _what: Later) {}

    fn has_later(&self, _what: &Later) -> bool {
        true
    }
}

/// A held peer lock of the data path.
pub struct Section<'d> {
    raw: Raw<'d>,
    peer: P<PeerRec>,
    later: RefCell<Vec<Later>>,
    /// What the peer is owed once the lock is released (rule 8).
    owed: core::cell::Cell<Option<Visible>>,
    /// Where the ticket goes instead of being rung at once: a caller that
    /// takes many peers' locks in turn rings them all after one fence.
    rings: Option<&'d RefCell<Vec<Ticket>>>,
}

impl<'d> Section<'d> {
    /// Takes the lock of `peer` (a record offset this process remembers;
    /// the caller checks that it is still the peer it means). Recovers
    /// the lock if its holder died (rule 7): a section by rebuilding, a
    /// transaction by letting the domain lock's recovery undo it first.
    pub fn lock(dom: &'d Domain, peer: P<PeerRec>) -> Result<Section<'d>> {
        let p: &PeerRec = dom.seg.rec(peer);
        let mut rebuilt = false;
        loop {
            if dom.is_damaged() {
                dom.report_damage(false);
                return Err(Errno::ENOTRECOVERABLE);
            }
            match p.lock.acquire() {
                0 => {}
                libc::EOWNERDEAD if p.holder.get() == HELD_TXN => {
                    p.await_txn.raw_set(1);
                    p.lock.consistent();
                    p.lock.unlock();
                    settle_txn_recovery(dom, peer)?;
                    continue;
                }
                libc::EOWNERDEAD => {
                    let raw = Raw { dom };
                    let set = |n: u64| p.rebuilding.raw_set(n as u32);
                    let attempts = (p.rebuilding.get() as u64, &set as &dyn Fn(u64));
                    let r = crate::txn::guarded_recovery(dom, "rebuilding a peer's message state", attempts, || {
                        crate::rebuild::rebuild(&raw, peer)
                    });
                    p.lock.consistent();
                    if let Err(e) = r {
                        p.lock.unlock();
                        return Err(e);
                    }
                    rebuilt = true;
                }
                // This thread holds it: a call from a signal handler that
                // interrupted the thread's own section (see
                // `fault::HeldByThisThread`). Nothing was touched.
                libc::EDEADLK => return Err(Errno::EDEADLK),
                _ => {
                    dom.quarantine("a peer lock became unrecoverable");
                    return Err(Errno::ENOTRECOVERABLE);
                }
            }
            if p.await_txn.get() != 0 {
                p.lock.unlock();
                settle_txn_recovery(dom, peer)?;
                continue;
            }
            p.holder.raw_set(HELD_SECTION);
            let s = Section { raw: Raw { dom }, peer, later: RefCell::new(Vec::new()), owed: core::cell::Cell::new(None), rings: None };
            if rebuilt {
                // Whatever the dead holder owed the peer is owed still.
                crate::doorbell::mark_dirty(&s, peer);
            }
            // Rule 11: releases made without the lock come first.
            crate::release::apply(&s, peer);
            return Ok(s);
        }
    }

    /// [`lock`](Self::lock), with the wake-up the section owes the peer
    /// added to `rings` when it ends rather than rung then; the caller
    /// passes `rings` to `doorbell::entries_visible` once it holds no lock.
    /// A caller killed before that leaves the wake-ups counted as owed in
    /// the bells, where the wake-up tick makes them good (txn rule 8).
    pub fn lock_ringing_later(dom: &'d Domain, peer: P<PeerRec>, rings: &'d RefCell<Vec<Ticket>>) -> Result<Section<'d>> {
        let mut s = Self::lock(dom, peer)?;
        s.rings = Some(rings);
        Ok(s)
    }

    /// The peer whose lock this is.
    pub fn peer(&self) -> P<PeerRec> {
        self.peer
    }
}

/// A transaction died holding `peer`'s lock: take the domain lock (whose
/// recovery undoes it) and the peer lock under it, which clears the mark.
fn settle_txn_recovery(dom: &Domain, peer: P<PeerRec>) -> Result<()> {
    let tx = dom.lock()?;
    tx.hold(peer);
    tx.commit()
}

impl Store for Section<'_> {
    fn dom(&self) -> &Domain {
        self.raw.dom
    }

    #[inline]
    fn set<T: Pod>(&self, cell: &Cell<T>, v: T) {
        cell.raw_set(v)
    }

    #[inline]
    fn init<T: Pod>(&self, cell: &Cell<T>, v: T) {
        cell.raw_set(v)
    }

    #[inline]
    fn hold(&self, peer: P<PeerRec>) {
        debug_assert_eq!(peer, self.peer, "a section touched another peer's message state");
    }

    fn claim(&self, user: P<UserRec>, res: usize, delta: i64) {
        self.raw.claim(user, res, delta)
    }

    fn note_visible(&self, peer: P<PeerRec>, what: Visible) {
        debug_assert_eq!(peer, self.peer);
        let v = self.owed.get().unwrap_or_default();
        self.owed.set(Some(Visible { wake: v.wake | what.wake, token: v.token | what.token }));
    }

    fn later(&self, what: Later) {
        self.later.borrow_mut().push(what);
    }

    fn has_later(&self, what: &Later) -> bool {
        self.later.borrow().contains(what)
    }
}

impl Drop for Section<'_> {
    /// Runs the queued work, counts the wake-up the peer is owed (still
    /// under the lock), releases the lock, then rings (rule 8).
    fn drop(&mut self) {
        let dom = self.raw.dom;
        if std::thread::panicking() {
            // An inconsistency was found (txn rule 9): the peer's state
            // cannot be trusted, and nothing more is done with it.
            let note = crate::fault::take_note().unwrap_or_else(|| "an inconsistency".into());
            dom.mark_damaged(&note);
            dom.report_damage(true);
            dom.seg.rec(self.peer).lock.unlock();
            return;
        }
        let later = core::mem::take(&mut *self.later.borrow_mut());
        for &what in later.iter() {
            crate::pool::run_later(self, what);
        }
        // One peer, so at most one ticket: no list on the heap.
        let ticket = self.owed.take().and_then(|v| crate::doorbell::ticket(self, self.peer, v));
        self.raw.dom.seg.rec(self.peer).lock.unlock();
        match (ticket, self.rings) {
            (Some(t), Some(rings)) => rings.borrow_mut().push(t),
            (Some(t), None) => crate::doorbell::entries_visible(self.raw.dom, core::slice::from_ref(&t)),
            (None, _) => {}
        }
    }
}
