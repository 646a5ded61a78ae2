//! Transaction slots of the data path and the commit of a multicast
//! (rules 1, 6 and 7 of `txn`).
//!
//! A SEND of the data path claims a slot for its whole duration: it holds
//! the slot's robust mutex and lists in the slot every record it prepares
//! (in the receivers' arenas, state *prepared*, tagged with the slot's
//! tag). If the sender dies while still preparing, nothing is visible yet
//! and whoever next try-locks the slot (the watcher, another sender, a
//! sender short of room) gets `EOWNERDEAD` and rolls the records back.
//!
//! Once every record is prepared and its payload copied, a multicast
//! commits in four idempotent steps kept in the slot's phase: *stage*
//! (each record goes into its receiver's queue with an odd stamp past the
//! receiver's clock), *seal* (the commit stamp: the sender's clock ticked
//! past every clock the staging saw, set once with compare-and-swap),
//! *sync* (every receiver's clock raised to it), *commit* (each record
//! re-keyed to the commit stamp). Anyone can run any step — the sender, a
//! RECV that finds a staged head, the recoverer of a dead sender's slot —
//! so a sender that stops between staging and commit delays nobody: the
//! first party that meets one of its staged entries finishes the commit.
//! Every step checks, under the receiver's lock, that a record still
//! belongs to this transaction (its tag), and every phase change checks
//! the slot's generation, so a helper that comes late does nothing.

use crate::domain::Domain;
use crate::doorbell::Ticket;
use core::cell::RefCell;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::queue;
use crate::section::Section;
use crate::shm::{Cell, P};
use crate::small::Small;
use crate::store::Store;

/// The slot at index `idx`.
pub fn slot(dom: &Domain, idx: usize) -> &TxSlot {
    assert!(idx < NSLOTS, "transaction slot {idx} does not exist");
    dom.seg.try_fixed(TX_SLOTS_OFF + (idx * core::mem::size_of::<TxSlot>()) as u64).expect("the slots lie before the log")
}

/// Initialises every slot's robust mutex (a new segment, before anyone
/// else can reach it).
pub fn init_all(dom: &Domain) -> Result<()> {
    for idx in 0..NSLOTS {
        match slot(dom, idx).mutex.init() {
            0 => {}
            r => return Err(Errno(r)),
        }
    }
    Ok(())
}

/// The tag of generation `gen` of slot `idx`: unique per transaction.
pub fn tag_of(gen: u64, idx: usize) -> u64 {
    gen << 16 | idx as u64
}

/// (generation, slot index) of a tag.
pub fn split(tag: u64) -> (u64, usize) {
    (tag >> 16, (tag & 0xffff) as usize)
}

const PHASE: u64 = 0xff;

thread_local! {
    /// The slot this thread claimed last: it is probably free again, and
    /// its cache lines are probably still here.
    static PREFERRED: core::cell::Cell<usize> = const { core::cell::Cell::new(usize::MAX) };
}

/// A claimed slot: its mutex is held for the whole SEND.
pub struct Slot<'d> {
    pub dom: &'d Domain,
    pub idx: usize,
    pub gen: u64,
}

impl<'d> Slot<'d> {
    /// Claims a free slot for a transaction of `origin`, recovering a dead
    /// sender's slot on the way if it meets one.
    pub fn claim(dom: &'d Domain, origin: P<PeerRec>, serial: u64) -> Result<Slot<'d>> {
        let start = PREFERRED.try_with(|p| p.get()).unwrap_or(usize::MAX);
        let start = if start < NSLOTS { start } else { crate::sys::gettid() as usize % NSLOTS };
        for round in 0.. {
            for k in 0..NSLOTS {
                let idx = (start + k) % NSLOTS;
                let ts = slot(dom, idx);
                if !ts.mutex.looks_free() {
                    continue;
                }
                match ts.mutex.try_lock() {
                    0 => {
                        if ts.state.load() & PHASE != TX_IDLE {
                            // Left behind by a thread of this process whose
                            // call unwound; finish or undo it now.
                            recover(dom, idx);
                        }
                    }
                    libc::EOWNERDEAD => {
                        recover(dom, idx);
                        ts.mutex.consistent();
                    }
                    _ => continue,
                }
                let _ = PREFERRED.try_with(|p| p.set(idx));
                dom.hdr().busy_slots[idx / 64].fetch_or(1 << (idx % 64));
                let gen = (ts.state.load() >> 8) + 1;
                ts.origin.raw_set(origin);
                ts.origin_serial.raw_set(serial);
                ts.count.raw_set(0);
                ts.seen.store(0);
                ts.commit.store(unsealed(gen));
                ts.state.store(gen << 8 | TX_PREPARING);
                return Ok(Slot { dom, idx, gen });
            }
            if round > 1000 {
                return Err(Errno::EAGAIN);
            }
            // Every slot is in use: wait for one.
            crate::sys::sleep_ms(1);
        }
        unreachable!()
    }

    pub fn tag(&self) -> u64 {
        tag_of(self.gen, self.idx)
    }

    fn rec(&self) -> &'d TxSlot {
        slot(self.dom, self.idx)
    }

    /// How many records the slot can list now.
    pub fn capacity(&self) -> usize {
        SLOT_INLINE + self.rec().extra_cap.get() as usize
    }

    /// Lists a record (the caller holds its receiver's lock and has not
    /// committed the record yet, and checked [`capacity`](Self::capacity)).
    pub fn push(&self, r: P<Msg>) {
        let ts = self.rec();
        let n = ts.count.get() as usize;
        entry(self.dom, ts, n).raw_set(r.off());
        ts.count.raw_set(n as u64 + 1);
    }

    /// How many records are listed.
    pub fn len(&self) -> usize {
        self.rec().count.get() as usize
    }

    /// The records listed so far.
    pub fn records(&self) -> Vec<P<Msg>> {
        records_of(self.dom, slot(self.dom, self.idx))
    }

    /// Sorts the list by (receiver, destination index), so that the
    /// records of one receiver are staged and committed in one section.
    /// Each key is read once; a list already in order (destinations named
    /// in the order their peers were made) is left as it is.
    pub fn sort(&self, s_index: impl Fn(P<Msg>) -> (u64, u32)) {
        let ts = self.rec();
        let mut v: Vec<((u64, u32), P<Msg>)> = self.records().into_iter().map(|r| (s_index(r), r)).collect();
        if v.is_sorted_by_key(|e| e.0) {
            return;
        }
        // The keys are distinct (one record per destination index).
        v.sort_unstable_by_key(|e| e.0);
        for (i, (_, r)) in v.into_iter().enumerate() {
            entry(self.dom, ts, i).raw_set(r.off());
        }
    }

    /// Moves to `phase` (only the sender, before anyone can help).
    pub fn set_phase(&self, phase: u64) {
        self.rec().state.store(self.gen << 8 | phase);
    }

    /// Frees the slot (its transaction is done or undone).
    fn release(&self) {
        let ts = self.rec();
        ts.state.store(self.gen << 8 | TX_IDLE);
        self.dom.hdr().busy_slots[self.idx / 64].fetch_and(!(1 << (self.idx % 64)));
        ts.mutex.unlock();
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // A transaction the sender abandoned (an error or a panic) is
        // undone if it was still preparing, finished if it was staged.
        match self.rec().state.load() & PHASE {
            TX_PREPARING => roll_back_records(self.dom, self.idx, self.gen),
            TX_STAGING | TX_SEALED | TX_SYNCED => drive(self.dom, self.tag()),
            _ => {}
        }
        self.release();
    }
}

/// Cell `i` of a slot's list.
fn entry<'a>(dom: &'a Domain, ts: &'a TxSlot, i: usize) -> &'a Cell<u64> {
    if i < SLOT_INLINE {
        &ts.inline[i]
    } else {
        assert!(((i - SLOT_INLINE) as u64) < ts.extra_cap.get(), "slot list overflow");
        &dom.seg.cells(ts.extra.get() + (i - SLOT_INLINE) as u64 * 8, 1)[0]
    }
}

fn records_of(dom: &Domain, ts: &TxSlot) -> Vec<P<Msg>> {
    let n = (ts.count.load_racy() as usize).min(SLOT_INLINE + ts.extra_cap.load_racy() as usize);
    (0..n).map(|i| P::from_off(entry(dom, ts, i).load_racy())).collect()
}

/// Whether record `r` (its receiver's lock held) still belongs to
/// transaction `tag` and is in one of the `states`.
fn mine<S: Store>(s: &S, r: P<Msg>, tag: u64, states: u32) -> bool {
    let rr = s.rec(r);
    rr.tx.get() == tag && rr.state.get() & states != 0
}

/// Runs `f` on consecutive runs of `recs` that share a receiver, in one
/// section of that receiver each. A receiver whose lock cannot be had (a
/// quarantined domain) is skipped.
fn for_each_receiver(dom: &Domain, recs: &[P<Msg>], f: impl FnMut(&Section, &[P<Msg>])) {
    each_receiver(dom, recs, None, f)
}

/// [`for_each_receiver`], with the wake-ups the sections owe added to
/// `rings` (see `Section::lock_ringing_later`).
fn each_receiver<'d>(dom: &'d Domain, recs: &[P<Msg>], rings: Option<&'d RefCell<Vec<Ticket>>>, mut f: impl FnMut(&Section, &[P<Msg>])) {
    let mut i = 0;
    while i < recs.len() {
        let peer = dom.seg.rec(recs[i]).peer.load_racy();
        let mut j = i + 1;
        while j < recs.len() && dom.seg.rec(recs[j]).peer.load_racy() == peer {
            j += 1;
        }
        let section = match rings {
            Some(rings) => Section::lock_ringing_later(dom, peer, rings),
            None => Section::lock(dom, peer),
        };
        if let Ok(s) = section {
            // The run was read without the lock: keep only records that
            // are (still) this receiver's.
            let mut run: Small<P<Msg>, 4> = Small::with_capacity(j - i);
            recs[i..j].iter().filter(|&&r| s.rec(r).peer.get() == peer).for_each(|&r| run.push(r));
            f(&s, &run);
        }
        i = j;
    }
}

/// Whether `peer` can still receive (else its entries are dropped).
fn receiving<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    let p = s.rec(peer);
    p.magic.get() == PEER_MAGIC && p.state.get() == PEER_CONNECTED
}

/// Undoes the prepared records of slot `idx`'s transaction `gen`.
fn roll_back_records(dom: &Domain, idx: usize, gen: u64) {
    let tag = tag_of(gen, idx);
    let recs = records_of(dom, slot(dom, idx));
    for_each_receiver(dom, &recs, |s, run| {
        for &r in run {
            if mine(s, r, tag, MS_PREPARED) {
                crate::crash::point("rollback-record");
                message::set_state(s, s.peer(), r, 0);
            }
        }
    });
}

fn roll_back(dom: &Domain, idx: usize, gen: u64) {
    roll_back_records(dom, idx, gen);
    let ts = slot(dom, idx);
    ts.state.store(gen << 8 | TX_DONE);
}

/// Drives transaction `tag` from wherever it is to its end (see the
/// module's comment). Returns at once if it is done, or not this slot's
/// transaction any more.
pub fn drive(dom: &Domain, tag: u64) {
    let (gen, idx) = split(tag);
    if idx >= NSLOTS {
        return;
    }
    let ts = slot(dom, idx);
    let recs = records_of(dom, ts);
    loop {
        let st = ts.state.load();
        if st >> 8 != gen {
            return;
        }
        match st & PHASE {
            TX_STAGING => {
                stage(dom, ts, tag, &recs);
                seal(dom, ts, gen);
            }
            TX_SEALED => {
                let Some(c) = sealed(ts, gen) else { return };
                let mut last = P::NULL;
                for &r in &recs {
                    let peer = dom.seg.rec(r).peer.load_racy();
                    if peer != last {
                        queue::sync(&dom.seg.rec(peer).clock, c);
                        last = peer;
                    }
                }
                ts.state.compare_exchange(st, gen << 8 | TX_SYNCED);
            }
            TX_SYNCED => {
                let Some(c) = sealed(ts, gen) else { return };
                commit(dom, c, tag, &recs);
                ts.state.compare_exchange(st, gen << 8 | TX_DONE);
            }
            _ => return,
        }
    }
}

/// Step 1: every prepared record goes into its receiver's queue, staged.
/// The receivers are rung together once all are staged: one fence for the
/// multicast, and no receiver woken to help a transaction that its sender
/// is still staging.
fn stage(dom: &Domain, ts: &TxSlot, tag: u64, recs: &[P<Msg>]) {
    let mut first = true;
    let rings: RefCell<Vec<Ticket>> = RefCell::new(Vec::with_capacity(recs.len()));
    each_receiver(dom, recs, Some(&rings), |s, run| {
        let peer = s.peer();
        let p = s.rec(peer);
        let mut todo: Small<P<Msg>, 4> = Small::with_capacity(run.len());
        run.iter().filter(|&&r| mine(s, r, tag, MS_PREPARED)).for_each(|&r| todo.push(r));
        if todo.is_empty() {
            return;
        }
        if !receiving(s, peer) {
            todo.iter().for_each(|&r| message::set_state(s, peer, r, 0));
            return;
        }
        queue::sync(&p.clock, ts.seen.load());
        let stamp = p.clock.load() + 1;
        for &r in &todo {
            let rr = s.rec(r);
            s.set(&rr.stamp, stamp);
            s.set(&rr.tag, tag);
            message::set_state(s, peer, r, (rr.state.get() & !MS_PREPARED) | MS_QUEUED);
            if first {
                crate::crash::point("send-append");
                first = false;
            }
        }
        crate::doorbell::after_enqueue(s, peer);
        ts.seen.fetch_max(p.clock.load());
    });
    crate::doorbell::entries_visible(dom, &rings.borrow());
    crate::crash::point("send-staged");
}

/// The value of `TxSlot::commit` while generation `gen` is not sealed:
/// odd, so never a stamp, and different for every generation, so that a
/// helper that comes late (its transaction done and the slot reused) cannot
/// seal the next one with its stale view.
fn unsealed(gen: u64) -> u64 {
    gen << 1 | 1
}

/// Step 2: the commit stamp, once. The origin's record is never freed,
/// so its clock is some peer's clock even if the sender went away; raising
/// a stale one, or a receiver's clock or `seen`, only ever makes later
/// stamps larger, which harms nobody.
fn seal(dom: &Domain, ts: &TxSlot, gen: u64) {
    let origin: &PeerRec = dom.seg.rec(ts.origin.load_racy());
    let c = queue::tick(&origin.clock, ts.seen.load());
    ts.commit.compare_exchange(unsealed(gen), c);
    ts.state.compare_exchange(gen << 8 | TX_STAGING, gen << 8 | TX_SEALED);
    crate::crash::point("send-sealed");
}

/// The commit stamp of generation `gen`, if it is sealed and still the
/// slot's transaction.
fn sealed(ts: &TxSlot, gen: u64) -> Option<u64> {
    let c = ts.commit.load();
    (c & 1 == 0 && ts.state.load() >> 8 == gen).then_some(c)
}

/// Step 4: every staged record is re-keyed to the commit stamp. A
/// receiver that disconnected since its record was staged (its flush
/// left the record, which had not committed) can never take it: it is
/// dropped, as staging drops it, rather than committed into a queue that
/// nobody reads and the peer's teardown does not flush again.
///
/// No ring: staging made the receiver readable (a staged entry counts in
/// `q_len`, and RECV drives it to its commit) and rang it then. A second
/// ring would only cost an atomic pair and a fence per destination and
/// give an edge-triggered waiter a second edge for one message.
fn commit(dom: &Domain, c: u64, tag: u64, recs: &[P<Msg>]) {
    for_each_receiver(dom, recs, |s, run| {
        let peer = s.peer();
        let live = receiving(s, peer);
        for &r in run {
            if mine(s, r, tag, MS_QUEUED) && queue::staged(s, r) {
                if !live {
                    message::set_state(s, peer, r, 0);
                    continue;
                }
                s.set(&s.rec(r).stamp, c);
                queue::reposition(s, peer, r);
            }
        }
        crate::crash::point("commit-op");
    });
}

/// Recovers slot `idx`, whose mutex the caller just got (its sender is
/// gone): a transaction still preparing is undone, a staged one finished.
pub fn recover(dom: &Domain, idx: usize) {
    let ts = slot(dom, idx);
    let st = ts.state.load();
    let gen = st >> 8;
    match st & PHASE {
        TX_PREPARING => roll_back(dom, idx, gen),
        TX_STAGING | TX_SEALED | TX_SYNCED => drive(dom, tag_of(gen, idx)),
        _ => {}
    }
    ts.state.store(gen << 8 | TX_IDLE);
    dom.hdr().busy_slots[idx / 64].fetch_and(!(1 << (idx % 64)));
    dom.hdr().recoveries.fetch_add(1);
}

/// A dead lock holder was met (its lock recovered): its transaction slot
/// may hold prepared records too.
pub fn death_seen(dom: &Domain) {
    dom.hdr().death_seen.store(1);
}

/// Recovers the slots of dead senders if a death was seen since the last
/// look (called with no lock held; one shared load otherwise).
pub fn reap_if_death_seen(dom: &Domain) {
    let hdr = dom.hdr();
    if hdr.death_seen.load() != 0 && hdr.death_seen.compare_exchange(1, 0) {
        reap_dead(dom);
    }
}

/// Recovers every slot whose sender died; returns how many. Run by the
/// watcher, by stats, and by a sender short of quota or pool space (a
/// dead sender's prepared records may be what is missing).
pub fn reap_dead(dom: &Domain) -> usize {
    let mut n = 0;
    let busy: Vec<usize> = (0..NSLOTS / 64)
        .flat_map(|w| {
            let bits = dom.hdr().busy_slots[w].load();
            (0..64).filter(move |b| bits & 1 << b != 0).map(move |b| w * 64 + b)
        })
        .collect();
    for idx in busy {
        let ts = slot(dom, idx);
        if ts.state.load() & PHASE == TX_IDLE || ts.mutex.looks_free() {
            continue;
        }
        match ts.mutex.try_lock() {
            libc::EOWNERDEAD => {
                recover(dom, idx);
                ts.mutex.consistent();
                ts.mutex.unlock();
                n += 1;
            }
            0 => {
                // Released between the two looks, or left behind by a
                // thread of this process whose call unwound.
                if ts.state.load() & PHASE != TX_IDLE {
                    recover(dom, idx);
                }
                ts.mutex.unlock();
            }
            _ => {}
        }
    }
    n
}
