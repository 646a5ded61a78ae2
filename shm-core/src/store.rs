//! The two ways of changing shared records (see the rules at the top of
//! `txn`): a transaction under the domain lock logs the old value of every
//! field it writes, a section under one peer lock writes in place and
//! relies on the order of its stores. The code of a peer's message state
//! (queue, pool, arena, quota) is written once, generic over [`Store`], and
//! runs in both.

use crate::domain::Domain;
use crate::layout::*;
use crate::shm::{Cell, Pod, P};

/// How many records of type `T` the heap of `dom` can hold as it stands:
/// more than that many steps through a list of them means the list has a
/// cycle (a damaged domain), which a walk reports with a panic that `fault`
/// turns into EIO, instead of running forever.
pub(crate) fn list_bound<T>(dom: &Domain) -> u64 {
    let span = dom.hdr().heap_top.load_racy().saturating_sub(HEAP_OFF);
    span / (core::mem::size_of::<T>() as u64).max(16) + 1
}

/// The records of a shared list, from `first` on through `next`, read
/// through any store. A damaged list (a cycle) ends the walk with a panic,
/// which `fault` turns into EIO and a quarantine, instead of running
/// forever.
pub(crate) fn walk<S: Store, T, F: Fn(&T) -> P<T>>(s: &S, first: P<T>, next: F) -> Walk<'_, S, T, F> {
    Walk { s, cur: first, next, steps: 0, bound: list_bound::<T>(s.dom()) }
}

/// A walk along a shared list (see [`walk`]).
pub(crate) struct Walk<'s, S, T, F> {
    s: &'s S,
    cur: P<T>,
    next: F,
    steps: u64,
    bound: u64,
}

impl<S: Store, T, F: Fn(&T) -> P<T>> Iterator for Walk<'_, S, T, F> {
    type Item = P<T>;

    fn next(&mut self) -> Option<P<T>> {
        if self.cur.is_null() {
            return None;
        }
        self.steps += 1;
        if self.steps > self.bound {
            let kind = core::any::type_name::<T>().rsplit("::").next().unwrap_or("records");
            panic!("a list of {kind} records is longer than the segment can hold (a cycle)");
        }
        let p = self.cur;
        self.cur = (self.next)(self.s.rec(p));
        Some(p)
    }
}

/// Work a store does after its changes are final: punching pool pages
/// that no slice uses any more. A transaction runs it after its commit
/// point (an abort may bring the slices back); a section before it lets
/// its lock go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Later {
    /// Punch `off..off+len` if it is still inside the pool's free tail.
    Trim { peer: P<PeerRec>, serial: u64, off: u64, len: u64 },
    /// Punch the pages of the pool's free space not yet punched.
    Sweep { peer: P<PeerRec>, serial: u64 },
}

pub trait Store {
    /// The domain the records live in.
    fn dom(&self) -> &Domain;

    /// The record at `p`.
    #[inline]
    fn rec<T>(&self, p: P<T>) -> &T {
        self.dom().seg.rec(p)
    }

    /// Writes a field of committed state.
    fn set<T: Pod>(&self, cell: &Cell<T>, v: T);

    /// Initialises a field of a record nobody else can reach yet (taken
    /// from a free list by the running transaction or section): no log.
    fn init<T: Pod>(&self, cell: &Cell<T>, v: T);

    /// Adds to a counter field.
    #[inline]
    fn add(&self, cell: &Cell<u64>, d: i64) {
        self.set(cell, cell.get().wrapping_add(d as u64));
    }

    /// Adds to a signed counter field.
    #[inline]
    fn add_i(&self, cell: &Cell<i64>, d: i64) {
        self.set(cell, cell.get().wrapping_add(d));
    }

    /// Makes sure the lock of `peer` is held before its message state is
    /// read or written: a transaction takes it (and keeps it to the end),
    /// a section checks that it is its own.
    fn hold(&self, peer: P<PeerRec>);

    /// Adds `delta` to a user's claimed quota (an atomic shared with the
    /// data path). A transaction logs how to take it back.
    fn claim(&self, user: P<UserRec>, res: usize, delta: i64);

    /// Records that `peer` is owed a wake-up (or a token) once the changes
    /// are final and the locks released (rule 8 of `txn`). `Raw` drops
    /// it: its callers note what they owe on the store they run under.
    fn note_visible(&self, peer: P<PeerRec>, what: crate::doorbell::Visible);

    /// Queues work for after the changes are final.
    fn later(&self, what: Later);

    /// Whether work of this kind is already queued.
    fn has_later(&self, what: &Later) -> bool;

    /// Records that a socket side effect on `peer` is about to happen, so
    /// that an undo marks the peer dirty (a transaction logs it; a section
    /// needs nothing: its recovery marks the peer dirty anyway).
    fn intent(&self, _peer: P<PeerRec>, _what: Intent) -> crate::errno::Result<()> {
        Ok(())
    }

    /// Gives a record whose state was set to free back to `peer`'s arena
    /// (a transaction does it at commit: until then an undo may bring the
    /// record back, so it must not be reused meanwhile).
    fn free_record(&self, peer: P<PeerRec>, r: P<Msg>)
    where
        Self: Sized,
    {
        crate::arena::put_back(self, peer, r);
    }
}

/// Socket side effects of a transaction, named in intent entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Intent {
    /// A datagram may have been added to a peer socket.
    Added = 1,
    /// A datagram may have been removed from a peer socket.
    Removed = 2,
}
