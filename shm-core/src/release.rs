//! SLICE_RELEASE without the peer lock: the release ring.
//!
//! The peer lock is the one every sender to the peer takes, so a release
//! under it makes a stream's three sections per message (the sender's,
//! RECV's, SLICE_RELEASE's) take turns on one lock. Instead, a release
//! that needs nothing else (no token owed to the peer's socket, and no
//! pool pages to give back: see below) is validated without that lock and
//! *appended* to the peer's release ring; every holder of the peer lock
//! applies the ring's entries when it takes the lock, before it looks at
//! anything else (rule 11 of `txn`). Nobody can therefore see pool space,
//! quota or a slice's state that a returned release has not yet changed.
//!
//! * Page work: while the queue holds messages, a release gives no pages
//!   back (the next sends take the room again, `pool`), so any release may
//!   use the ring then. With the queue empty, only a release that cannot
//!   owe any does — its slice lies in the pool's first MiB, which is never
//!   punched on the message path, and no page beyond it is resident — so
//!   that a release that gives pages back has done so when it returns. A
//!   receiver that keeps up with its senders (its queue empty at most
//!   releases) thus releases through the ring too.
//!
//! * Releasers are serialised by the peer's own robust `rel_lock`, which
//!   nobody holding a peer lock ever takes. A releaser stopped while
//!   holding it delays only other releases of the same peer.
//! * An entry names a record and its incarnation (`Msg::gen`, which moves
//!   on whenever the record is initialised for a new message). A releaser
//!   reads the incarnation, the record's state and the incarnation again:
//!   the entry is appended only if the record was, at one instant, the
//!   published slice at the offset the caller gave. Applying it later
//!   takes the published bit from that incarnation, if it still has it;
//!   a flush or disconnect that freed the slice meanwhile leaves the
//!   entry with nothing to do, and a later message in the same record is
//!   never touched.
//! * A release of a slice whose release is still in the ring is ENXIO,
//!   as it would be once applied. The appliers clear a slice's state
//!   before they move the ring's head, and a releaser reads the head
//!   before the state, so a release that leaves the ring between the two
//!   looks is still seen (gone from the state).
//! * Crash safety: the tail's store is the release's commit point; a
//!   releaser killed before it has changed nothing, after it has
//!   released. An applier killed part-way leaves the head where it was:
//!   the next holder applies the entries again, and those already applied
//!   find their state changed and do nothing.
//!
//! Everything that can fail or that a release would have to do beyond its
//! own slice sends the call the locked way. The two ways must not both
//! release one slice: the locked way raises `rel_locked_busy` under the
//! peer lock and then looks at `rel_ring_busy`; a ring release raises
//! `rel_ring_busy` under `rel_lock` and then looks at `rel_locked_busy`
//! (sequentially consistent, so at least one sees the other). Whoever
//! sees the other's count backs off: the ring release to the locked way,
//! and the locked way to taking `rel_lock` first, which excludes ring
//! releases outright. A count left raised by a killed process only sends
//! calls the slower way, until the recoverer of the lock it was raised
//! under resets it (nobody else can be counted then).

use core::sync::atomic::{fence, Ordering};

use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::section::Section;
use crate::shm::P;
use crate::store::Store;

/// The peer's `rel_lock`, held.
pub struct ReleaseLock<'d> {
    rec: &'d PeerRec,
}

impl<'d> ReleaseLock<'d> {
    /// Takes `peer`'s release lock. EDEADLK if this thread holds it already
    /// (a signal handler's call interrupted the thread's ring release);
    /// ENOTRECOVERABLE if it cannot be had at all. A holder that died left
    /// nothing half done: the tail's store is the only thing it commits.
    pub fn take(dom: &'d Domain, peer: P<PeerRec>) -> Result<ReleaseLock<'d>> {
        let rec: &PeerRec = dom.seg.try_rec(peer).ok_or(Errno::ESHUTDOWN)?;
        match rec.rel_lock.acquire() {
            0 => {}
            libc::EOWNERDEAD => {
                // Only a holder of the lock counts itself in.
                rec.rel_ring_busy.store(0);
                rec.rel_lock.consistent();
            }
            libc::EDEADLK => return Err(Errno::EDEADLK),
            _ => return Err(Errno::ENOTRECOVERABLE),
        }
        Ok(ReleaseLock { rec })
    }
}

impl Drop for ReleaseLock<'_> {
    fn drop(&mut self) {
        self.rec.rel_lock.unlock();
    }
}

/// SLICE_RELEASE of `off` by `peer` (serial `serial`) through the ring:
/// `None` if the call must go the locked way (the peer is not plainly
/// connected, its socket may owe a drain, the ring is full, the slice was
/// not found published, or anything changed under the look), which then
/// gives the errors in their order.
pub fn defer(dom: &Domain, peer: P<PeerRec>, serial: u64, off: u64) -> Option<Result<()>> {
    let p: &PeerRec = dom.seg.try_rec(peer)?;
    if p.magic.load_racy() != PEER_MAGIC || p.serial.load_racy() != serial || p.state.load_racy() != PEER_CONNECTED {
        return None;
    }
    if !crate::doorbell::settled_racy(dom, peer) {
        return None;
    }
    let backlog = p.q_len.load_racy() != 0;
    let _held = ReleaseLock::take(dom, peer).ok()?;
    p.rel_ring_busy.fetch_add(1);
    let r = if p.rel_locked_busy.load_seqcst() == 0 { through_ring(dom, p, peer, off, backlog) } else { None };
    p.rel_ring_busy.fetch_add(u64::MAX);
    r
}

/// The ring release proper (`rel_lock` held, counted in `rel_ring_busy`).
/// Without a `backlog` in the queue, a release that may owe the pool page
/// work goes the locked way, which does that work before it returns.
fn through_ring(dom: &Domain, p: &PeerRec, peer: P<PeerRec>, off: u64, backlog: bool) -> Option<Result<()>> {
    let r = crate::pool::lookup_racy(dom, peer, off)?;
    let rr: &Msg = dom.seg.try_rec(r)?;
    if !backlog && crate::pool::release_may_give_back_racy(p, off, rr.size.load_racy()) {
        return None;
    }
    let gen = rr.gen.load_racy();
    fence(Ordering::SeqCst);
    let head = p.rel_head.load_racy();
    let tail = p.rel_tail.load();
    if tail.wrapping_sub(head) >= RELEASE_RING as u64 {
        return None;
    }
    if (head..tail).any(|i| entry(p, i)[0].load() == r.off() && entry(p, i)[1].load() == gen) {
        // Released already, not yet applied.
        return Some(Err(Errno::ENXIO));
    }
    fence(Ordering::SeqCst);
    let published = rr.peer.load_racy() == peer && rr.off.load_racy() == off && rr.state.load_racy() & MS_PUBLISHED != 0;
    fence(Ordering::SeqCst);
    if !published || rr.gen.load_racy() != gen {
        return None;
    }
    let e = entry(p, tail);
    e[0].store(r.off());
    e[1].store(gen);
    p.rel_tail.store(tail.wrapping_add(1));
    crate::crash::point("release-committed");
    Some(Ok(()))
}

/// Runs `release` (a locked SLICE_RELEASE of `peer`, given its section)
/// excluded from ring releases: counted in `rel_locked_busy` while none is
/// in progress, or else under `rel_lock`.
pub fn locked(dom: &Domain, peer: P<PeerRec>, release: impl Fn(&Section) -> Result<()>) -> Result<()> {
    let p: &PeerRec = dom.seg.try_rec(peer).ok_or(Errno::ESHUTDOWN)?;
    {
        let s = Section::lock(dom, peer)?;
        p.rel_locked_busy.fetch_add(1);
        if p.rel_ring_busy.load_seqcst() == 0 {
            let r = release(&s);
            p.rel_locked_busy.fetch_add(u64::MAX);
            return r;
        }
        p.rel_locked_busy.fetch_add(u64::MAX);
    }
    // A ring release is under way. If it is this thread's own (a signal
    // handler's call interrupted it), it may be past its look at the
    // slice: releasing now could make both calls succeed. Nothing has
    // changed yet, so the call fails. A lock that cannot be had at all
    // leaves the call to the section alone, as before.
    let _held = match ReleaseLock::take(dom, peer) {
        Err(Errno::EDEADLK) => return Err(Errno::EDEADLK),
        held => held.ok(),
    };
    release(&Section::lock(dom, peer)?)
}

/// Entry `i` (a running count) of the ring.
fn entry(p: &PeerRec, i: u64) -> &[crate::shm::Atomic64; 2] {
    &p.rel_entries[(i % RELEASE_RING as u64) as usize]
}

/// Applies the releases waiting in `peer`'s ring (its lock just taken by
/// `s`): each takes the published bit from its incarnation of the record,
/// as the locked SLICE_RELEASE does, if it still has it.
pub fn apply<S: Store>(s: &S, peer: P<PeerRec>) {
    let p = s.rec(peer);
    let head = p.rel_head.get();
    let tail = p.rel_tail.load();
    if head == tail {
        return;
    }
    let pending = tail.wrapping_sub(head);
    assert!(pending <= RELEASE_RING as u64, "the release ring of peer {peer:?} holds {pending} entries");
    for i in 0..pending {
        let e = entry(p, head.wrapping_add(i));
        let (r, gen) = (P::<Msg>::from_off(e[0].load()), e[1].load());
        // A stale entry (its record reused since, by this peer or another)
        // names another incarnation.
        let Some(rr) = s.dom().seg.try_rec(r) else { continue };
        if rr.peer.get() != peer || rr.gen.get() != gen {
            continue;
        }
        let st = rr.state.get();
        if st & MS_PUBLISHED != 0 {
            crate::message::set_state(s, peer, r, crate::entry::without(st, MS_PUBLISHED));
            crate::crash::point("release-applied");
        }
    }
    // The states before the head: a releaser that sees the new head sees
    // them too.
    fence(Ordering::SeqCst);
    s.set(&p.rel_head, tail);
}
