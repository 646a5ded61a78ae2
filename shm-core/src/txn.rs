//! The domain lock, transactions and crash recovery.
//!
//! # Locking and crash-recovery rules
//!
//! These rules are the whole concurrency story of the bus; every module
//! follows them, and the types make most of them impossible to break.
//!
//! 1. **One lock.** Each domain has exactly one cross-process lock: a
//!    process-shared, robust `pthread_mutex_t` in the segment header. Every
//!    read or write of shared records happens while it is held, through a
//!    [`Txn`], which is the only way to obtain a record reference
//!    ([`Txn::rec`]) or to write a field ([`Txn::set`]). This is the
//!    single-lock design of docs/reference.md §7.9: the global order is the order
//!    of transactions, and every transaction is atomic. The only lock-free
//!    accesses are the atomics named as such in `layout` (the leases of
//!    the periodic scans, the wake-up records of rule 9), and racy reads of
//!    a peer's state and queue length: to answer ESHUTDOWN early
//!    (re-checked under the lock) and to compute readiness for waiters
//!    (`readiness`).
//! 2. **Undo log.** Before a field is written, its old value is appended to
//!    the undo log in the segment, then the log length is published, then
//!    the field is written. A transaction is committed by setting the log
//!    length to zero; until then it can be undone exactly, in reverse order.
//!    Failing operations use that: any error aborts the transaction
//!    ([`Txn::abort`]), so a failed ioctl never changes anything.
//! 3. **Fresh memory.** Blocks allocated by the running transaction are not
//!    reachable from committed state, so zeroing them and copying payload
//!    into them needs no log entries — except the free-list link word of a
//!    block taken from a free list, which is committed state and is logged
//!    before the block is zeroed. Blocks freed by a transaction are only
//!    returned to the allocator when it commits, so they are never reused
//!    (and overwritten without logging) before the free is final. The
//!    one other unlogged write is a hint that only grows and must outlive
//!    a rollback: how far a pool's pages may be resident
//!    ([`Txn::raise_unlogged`]).
//! 4. **Kernel side effects.** Socket operations (fd carriers, vault
//!    datagrams, draining the caller's own socket) cannot be undone. They
//!    run at the end of a transaction, each preceded by an *intent* entry in
//!    the undo log naming the peer. Whoever rolls a transaction back (abort
//!    or recovery) marks every peer named by an intent as *dirty* and
//!    re-rings it if its queue is not empty; a dirty peer rebuilds its
//!    socket contents on its next operation (see `doorbell`). Wake-ups are
//!    not among them: they follow rule 9. Operations whose effect is only "remove
//!    something that is no longer referenced" run after the commit point,
//!    still under the lock; if they never happen, what they would have
//!    removed is recognised as an orphan later. The fields they write (only
//!    hints whose either value is safe, such as a pool region's `clean`
//!    mark) go through the undo log as well and are committed together
//!    just before the lock is released.
//! 5. **Death of a holder.** If a process dies while holding the lock, the
//!    next locker gets `EOWNERDEAD`, replays the dead transaction's undo
//!    log backwards (rolling it back to the last committed state), handles
//!    its intents as in rule 4, marks the mutex consistent and proceeds.
//!    A transaction is therefore either fully applied or not at all, even
//!    across `kill -9`.
//! 6. **Nothing blocks under the lock.** Socket calls made while holding it
//!    use `MSG_DONTWAIT`/non-blocking sockets; no code path waits for
//!    another process while holding the lock.
//! 7. **Process-local state** (pool mappings, internal sockets) is guarded
//!    by `sync::LocalMutex`, always taken *after* the domain lock if both
//!    are needed, and handled by the fork handlers.
//! 8. **No sleep on the lock without a deadline.** An unlock wakes one
//!    sleeping waiter, and a waiter that is killed after that wake-up but
//!    before it took the lock (SIGKILL, or `exit` of another thread of its
//!    process) takes the wake-up with it; if a newcomer took the lock in
//!    between without marking it contended, the remaining sleepers are
//!    never woken although the lock is free. Waiters therefore sleep at most
//!    `WAIT_SLICE_MS` at a time and then look again, so such a loss costs a
//!    short delay instead of wedging the bus.
//! 9. **Wake-ups happen after the lock is released, and only for
//!    sleepers.** A transaction that makes entries visible in a queue (or
//!    disconnects a peer) notes the peer (`Txn::note_visible`); at commit,
//!    still under the lock, each note becomes a ticket counted in the peer
//!    bell's `owed` counter; once the lock is released, the ticket is rung
//!    (`doorbell::entries_visible`): the bell's `seq` is bumped, and every
//!    thread armed on the bell is woken. No kernel call made for another
//!    peer (futex wake, token) happens under the lock. Waiters and wakers
//!    follow a Dekker handshake on the bell (`waiters`): a waiter publishes
//!    its slot in the bell's sleeper map, then re-reads the peer's state; a
//!    waker publishes the change, then reads the sleeper map; both with
//!    sequentially consistent operations and fences, so one of them always
//!    sees the other. A process that dies or stops between commit and ring
//!    leaves `rung < owed`, which the wake-up tick of any process notices
//!    and makes good a tick later.
//! 10. **A panic quarantines.** An inconsistency the engine finds is a
//!    panic (see `fault`). A transaction it unwinds through rolls back
//!    what its log allows, marks the domain damaged and releases the lock;
//!    every later lock of that domain is refused, without recovery.

use crate::doorbell::{self, Op, Ticket, Visible};
use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::{Cell, Pod, P};
use crate::sync::RobustMutex;
use crate::sys;
use core::cell::RefCell;

const KIND_WRITE: u64 = 0;
const KIND_INTENT: u64 = 1;

/// `BUS1_DEBUG_HEAP=1`: check the heap's free lists at every commit and
/// abort (slow; a debugging aid for the allocator's undo rules).
fn heap_debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BUS1_DEBUG_HEAP").is_some())
}

/// Pauses spent watching a held lock before sleeping on it.
const SPIN_ROUNDS: u32 = 200;
/// Longest single sleep on the lock before trying again (rule 8).
const WAIT_SLICE_MS: u64 = 20;
/// Undo log entries kept in reserve: a transaction whose log could not
/// grow writes these until it reaches an allocation or its commit.
pub(crate) const LOG_SPARE: u64 = crate::domain::LOG_CHUNK / LOG_ENTRY;

/// Socket side effects of a transaction, named in intent entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Intent {
    /// A datagram may have been added to a peer socket.
    Added = 1,
    /// A datagram may have been removed from a peer socket.
    Removed = 2,
}

/// Whether an undo entry may write at `off`: a field of the header or the
/// heap, never the lock or the log itself (only a damaged entry names
/// those).
fn undoable(off: u64) -> bool {
    let lock = core::mem::offset_of!(Header, mutex) as u64;
    let lock_end = lock + core::mem::size_of::<RobustMutex>() as u64;
    !(lock.saturating_sub(7)..lock_end).contains(&off) && !(LOG_OFF..WAKE_OFF).contains(&off)
}

/// A walk along a shared list (see [`Txn::walk`]).
pub(crate) struct Walk<'t, 'd, T, F> {
    tx: &'t Txn<'d>,
    cur: P<T>,
    next: F,
    steps: u64,
    bound: u64,
}

impl<'d, T: 'd, F: Fn(&'d T) -> P<T>> Iterator for Walk<'_, 'd, T, F> {
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
        self.cur = (self.next)(self.tx.rec(p));
        Some(p)
    }
}

/// A position inside a transaction (see [`Txn::savepoint`]).
#[derive(Clone, Copy, Debug)]
pub struct Savepoint {
    log_len: u64,
    frees: usize,
    ops: usize,
    post: usize,
    visible: usize,
}

/// An open transaction: the domain lock is held for its lifetime.
pub struct Txn<'d> {
    pub(crate) dom: &'d Domain,
    frees: RefCell<Vec<(u64, u64)>>,
    ops: RefCell<Vec<Op>>,
    post: RefCell<Vec<Op>>,
    /// Peers owed a wake-up once the transaction is over (rule 9).
    visible: RefCell<Vec<(P<PeerRec>, Visible)>>,
    tickets: Vec<Ticket>,
    finished: bool,
    /// Opened to look at the segment (`lock_to_inspect`), after any
    /// recovery: ends without rolling anything back, and a panic while
    /// looking (the checker's own) damages nothing.
    inspect_only: bool,
    /// This transaction's copy of the header's `log_len` (it is the only
    /// writer while it holds the lock), so that logging a write reads no
    /// shared memory.
    log_len: core::cell::Cell<u64>,
    /// Set by SEND: a receiver whose socket is gone fails the commit with
    /// [`Errno::PEER_GONE`] instead of being rung silently.
    live_receivers: core::cell::Cell<bool>,
    /// The undo log could not grow: the transaction cannot commit.
    log_failed: core::cell::Cell<bool>,
    #[cfg(debug_assertions)]
    fresh: RefCell<Vec<(u64, u64)>>,
}

/// The work lists of a transaction, kept per thread between transactions
/// so that the hot path does not allocate.
#[derive(Default)]
struct Lists {
    frees: Vec<(u64, u64)>,
    ops: Vec<Op>,
    post: Vec<Op>,
    visible: Vec<(P<PeerRec>, Visible)>,
    tickets: Vec<Ticket>,
}

thread_local! {
    static LISTS: core::cell::Cell<Option<Lists>> = const { core::cell::Cell::new(None) };
}

// The thread's lists are gone once its thread-local destructors have run
// (for the main thread: at exit, before atexit handlers and destructors,
// which may still make bus1 calls); transactions then use fresh lists.
fn take_lists() -> Lists {
    LISTS.try_with(|l| l.take()).ok().flatten().unwrap_or_default()
}

fn return_lists(mut l: Lists) {
    l.frees.clear();
    l.ops.clear();
    l.post.clear();
    l.visible.clear();
    l.tickets.clear();
    let _ = LISTS.try_with(|c| c.set(Some(l)));
}

impl Domain {
    fn mutex(&self) -> &RobustMutex {
        &self.seg.at0::<Header>().mutex
    }

    /// Initialises the robust lock of a new segment (nobody else can use it
    /// before the segment magic is published).
    pub(crate) fn init_lock(&self) -> Result<()> {
        match self.mutex().init() {
            0 => Ok(()),
            r => Err(Errno(r)),
        }
    }

    /// Takes the domain lock and opens a transaction, first rolling back
    /// the transaction of a holder that died (rule 5). A domain marked
    /// damaged is refused with ENOTRECOVERABLE (see `fault`).
    pub fn lock(&self) -> Result<Txn<'_>> {
        self.lock_as(false)
    }

    /// Takes the domain lock to look at the segment without changing it,
    /// even when it is marked damaged: then nothing is rolled back either,
    /// and the transaction only releases the lock when it ends.
    pub(crate) fn lock_to_inspect(&self) -> Result<Txn<'_>> {
        self.lock_as(true)
    }

    fn lock_as(&self, inspect: bool) -> Result<Txn<'_>> {
        let r = self.acquire();
        self.open_txn(r, inspect)
    }

    /// Opens the transaction of a lock attempt that returned `r` (for
    /// `inspect`, see [`lock_to_inspect`](Self::lock_to_inspect)).
    fn open_txn(&self, r: libc::c_int, inspect: bool) -> Result<Txn<'_>> {
        if r != 0 && r != libc::EOWNERDEAD {
            return Err(Errno(if r == libc::EDEADLK { libc::ENOTRECOVERABLE } else { r }));
        }
        let damaged = self.is_damaged();
        if damaged && !inspect {
            // A poisoned log is not replayed, and the segment not touched.
            if r == libc::EOWNERDEAD {
                self.mutex().consistent();
            }
            self.unlock();
            self.report_damage(false);
            return Err(Errno::ENOTRECOVERABLE);
        }
        let l = take_lists();
        let mut tx = Txn {
            dom: self,
            frees: RefCell::new(l.frees),
            ops: RefCell::new(l.ops),
            post: RefCell::new(l.post),
            visible: RefCell::new(l.visible),
            tickets: l.tickets,
            finished: false,
            inspect_only: damaged,
            log_len: core::cell::Cell::new(self.seg.at0::<Header>().log_len.load()),
            live_receivers: core::cell::Cell::new(false),
            log_failed: core::cell::Cell::new(false),
            #[cfg(debug_assertions)]
            fresh: RefCell::default(),
        };
        if r == libc::EOWNERDEAD {
            // EOWNERDEAD transferred ownership to us.
            if !damaged {
                tx.recover();
            }
            self.mutex().consistent();
        } else if tx.log_len.get() != 0 && !damaged {
            // A previous holder in this process left its log behind
            // without a quarantine (cannot happen unless a panic unwound
            // through a transaction): treat it like a dead holder.
            tx.recover();
        }
        tx.inspect_only = inspect;
        Ok(tx)
    }

    /// If a transaction is open and its holder died, rolls it back now
    /// (without waiting for a live holder): lock-free readers of the
    /// segment then no longer see what it had half done.
    pub(crate) fn settle_interrupted(&self) {
        if self.seg.at0::<Header>().log_len.load() == 0 || self.mutex().held_by_live_owner() {
            return;
        }
        let r = self.mutex().try_lock();
        if r == libc::EBUSY {
            return;
        }
        if let Ok(tx) = self.open_txn(r, false) {
            tx.abort();
        }
    }

    /// Takes the mutex, spinning briefly first: critical sections last about
    /// a microsecond, while sleeping on the futex and being woken costs
    /// several (and two system calls). The spin is bounded and only watches
    /// the lock word, so a holder that is descheduled or dead costs at most
    /// [`SPIN_ROUNDS`] pauses before the blocking (and robust) path.
    fn acquire(&self) -> libc::c_int {
        let m = self.mutex();
        for _ in 0..SPIN_ROUNDS {
            if m.looks_free() {
                let r = m.try_lock();
                if r != libc::EBUSY {
                    return r;
                }
            }
            core::hint::spin_loop();
        }
        // Rule 8: sleep with a deadline, and retry after it.
        loop {
            let r = m.lock_until(&sys::realtime_after_ms(WAIT_SLICE_MS));
            if r != libc::ETIMEDOUT {
                return r;
            }
        }
    }

    /// Called exactly once per successful `lock`, by the owner.
    fn unlock(&self) {
        self.mutex().unlock();
    }
}

impl<'d> Txn<'d> {
    #[inline]
    pub fn hdr(&self) -> &'d Header {
        self.dom.seg.at0()
    }

    /// The record at `p`.
    #[inline]
    #[track_caller]
    pub fn rec<T>(&self, p: P<T>) -> &'d T {
        self.dom.seg.rec(p)
    }

    /// How many records of type `T` the heap can hold as it stands: more
    /// than that many steps through a list of them means the list has a
    /// cycle.
    pub(crate) fn list_bound<T>(&self) -> u64 {
        let span = self.hdr().heap_top.get().saturating_sub(HEAP_OFF);
        span / (core::mem::size_of::<T>() as u64).max(16) + 1
    }

    /// The records of a shared list, from `first` on through `next`. A
    /// damaged list (a cycle) ends the walk with a panic, which quarantines
    /// the domain (see `fault`), instead of running forever.
    pub(crate) fn walk<'t, T: 'd, F: Fn(&'d T) -> P<T>>(&'t self, first: P<T>, next: F) -> Walk<'t, 'd, T, F> {
        Walk { tx: self, cur: first, next, steps: 0, bound: self.list_bound::<T>() }
    }

    /// Asks the commit to check that every rung receiver still exists.
    pub(crate) fn require_live_receivers(&self) {
        self.live_receivers.set(true);
    }

    pub(crate) fn requires_live_receivers(&self) -> bool {
        self.live_receivers.get()
    }

    /// The domain this transaction runs in.
    pub fn domain(&self) -> &'d Domain {
        self.dom
    }

    /// Publishes the number of valid undo entries.
    #[inline]
    fn set_log_len(&self, n: u64) {
        self.log_len.set(n);
        self.hdr().log_len.store(n);
    }

    #[inline(always)]
    fn log_entry(&self, off: u64, old: u64, meta: u64) -> Result<()> {
        let n = self.log_len.get();
        // The log's memory is reserved ahead of use, with a spare: no
        // entry is written where a fault could take the process, and no
        // field changes without its entry.
        if n + LOG_SPARE >= self.dom.log_backed() {
            self.log_nearly_full(n);
        }
        self.dom.seg.write_log_entry(LOG_OFF, n, [off, old, meta]);
        self.set_log_len(n + 1);
        Ok(())
    }

    /// The log's reserved memory runs out at entry `n`: reserve more. When
    /// that is impossible (a full file system, or the log's capacity), the
    /// transaction cannot commit: its next allocation and its commit report
    /// ENOMEM and everything is undone, while the spare takes the entries
    /// it writes until then. A transaction that writes a whole spare's
    /// worth more before reaching either stops rather than change a field
    /// it could not undo: it unwinds (see `fault::OutOfLog`), is rolled back
    /// exactly, and its call fails with ENOMEM.
    #[cold]
    #[inline(never)]
    fn log_nearly_full(&self, n: u64) {
        if self.dom.back_log(n + LOG_SPARE).is_err() && !self.log_failed.replace(true) {
            self.ops.borrow_mut().push(Op::Fail(Errno::ENOMEM));
        }
        if n >= self.dom.log_backed() {
            std::panic::panic_any(crate::fault::OutOfLog);
        }
    }

    /// ENOMEM once the undo log could not grow (the transaction cannot
    /// commit): for steps that would only make it longer.
    pub(crate) fn log_ok(&self) -> Result<()> {
        if self.log_failed.get() {
            Err(Errno::ENOMEM)
        } else {
            Ok(())
        }
    }

    /// Writes a field, logging its old value first (rule 2).
    #[inline]
    pub fn set<T: Pod>(&self, cell: &Cell<T>, v: T) {
        let old = cell.get();
        if old.to_bits() == v.to_bits() {
            return;
        }
        self.log_write(cell.addr(), old.to_bits(), core::mem::size_of::<T>() as u64);
        cell.raw_set(v);
    }

    /// Logs the old value of the `size`-byte field at `addr` before it is
    /// written. If the log cannot grow (a single transaction of millions
    /// of writes, or a full file system), the transaction is made
    /// impossible to commit (`log_nearly_full`).
    #[inline(always)]
    fn log_write(&self, addr: usize, old: u64, size: u64) {
        let off = self.dom.seg.off_of(addr);
        let _ = self.log_entry(off, old, KIND_WRITE | (size << 8));
    }

    /// Logs the current value of a word that unlogged writes are about to
    /// overwrite (the free-list link of a block being allocated), so that
    /// an undo restores it whatever happens to it meanwhile.
    pub(crate) fn preserve(&self, cell: &Cell<u64>) {
        self.log_write(cell.addr(), cell.get(), 8);
    }

    /// Initialises a field of a block allocated by this transaction, without
    /// logging (rule 3): until the transaction commits, nothing committed
    /// points at the block, so its old contents do not matter.
    #[inline]
    pub fn init<T: Pod>(&self, cell: &Cell<T>, v: T) {
        #[cfg(debug_assertions)]
        {
            let off = self.dom.seg.off_of(cell.addr());
            assert!(
                self.fresh.borrow().iter().any(|&(o, s)| off >= o && off < o + s),
                "init of a field outside this transaction's fresh blocks"
            );
        }
        cell.raw_set(v);
    }

    /// Records a block allocated by this transaction (debug checks of
    /// [`init`](Self::init)).
    #[inline]
    pub(crate) fn note_fresh(&self, _off: u64, _size: u64) {
        #[cfg(debug_assertions)]
        self.fresh.borrow_mut().push((_off, _size));
    }

    /// Raises `cell` to `v` without logging it (rule 3): for the one hint
    /// that says how far a pool's pages may be resident. Pages a rolled
    /// back transaction copied into stay resident, so the hint must not be
    /// rolled back with it; a value too high only costs a redundant punch.
    pub(crate) fn raise_unlogged(&self, cell: &Cell<u64>, v: u64) {
        if cell.get() < v {
            cell.raw_set(v);
        }
    }

    /// Adds to a counter field.
    #[inline]
    pub fn add(&self, cell: &Cell<u64>, d: i64) {
        self.set(cell, cell.get().wrapping_add(d as u64));
    }

    /// Adds to a signed counter field.
    #[inline]
    pub fn add_i(&self, cell: &Cell<i64>, d: i64) {
        self.set(cell, cell.get().wrapping_add(d));
    }

    /// Records that a socket side effect on `peer` is about to happen.
    pub(crate) fn intent(&self, peer: P<PeerRec>, what: Intent) -> Result<()> {
        let serial = self.rec(peer).serial.get();
        self.log_entry(peer.off(), serial, KIND_INTENT | ((what as u64) << 16))
    }

    /// Frees a block when the transaction commits (rule 3).
    pub(crate) fn defer_free(&self, off: u64, size: u64) {
        self.frees.borrow_mut().push((off, size));
    }

    /// Queues a socket side effect to run at commit (rule 4).
    pub(crate) fn push_op(&self, op: Op) {
        self.ops.borrow_mut().push(op);
    }

    /// Queues a best-effort removal to run after the commit point.
    pub(crate) fn push_post(&self, op: Op) {
        self.post.borrow_mut().push(op);
    }

    /// Records that `peer` is owed `what` once the transaction is over
    /// (rule 9): the wake-up of its waiters, a kernel token.
    pub(crate) fn note_visible(&self, peer: P<PeerRec>, what: Visible) {
        let mut v = self.visible.borrow_mut();
        // Entries for one peer come in a row (a multicast appends to each
        // destination in turn); a repeat elsewhere only costs a second
        // wake-up, while a search would make a multicast quadratic.
        match v.last_mut() {
            Some((p, w)) if *p == peer => {
                w.wake |= what.wake;
                w.token |= what.token;
            }
            _ => v.push((peer, what)),
        }
    }

    /// Whether an after-commit operation matching `f` is already queued.
    pub(crate) fn has_post(&self, f: impl Fn(&Op) -> bool) -> bool {
        self.post.borrow().iter().any(f)
    }

    /// A position to roll back to with [`rollback_to`](Self::rollback_to).
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            log_len: self.log_len.get(),
            frees: self.frees.borrow().len(),
            ops: self.ops.borrow().len(),
            post: self.post.borrow().len(),
            visible: self.visible.borrow().len(),
        }
    }

    /// Undoes everything done since `sp` (per-destination failures of
    /// SEND_FLAG_CONTINUE, a RECV that fails after its search): logged
    /// writes, deferred frees, and side effects queued for the commit or
    /// after it. A socket operation already made since `sp` (a RECV taking
    /// fds out of the vault) cannot be undone: its intent is logged again,
    /// so that a later abort or recovery still sees it, and its peer
    /// becomes dirty, as after an abort (rule 4).
    pub fn rollback_to(&self, sp: Savepoint) {
        let intents = self.undo_to(sp.log_len);
        self.frees.borrow_mut().truncate(sp.frees);
        self.ops.borrow_mut().truncate(sp.ops);
        self.post.borrow_mut().truncate(sp.post);
        self.visible.borrow_mut().truncate(sp.visible);
        for &(peer, _) in &intents {
            let _ = self.intent(peer, Intent::Added);
        }
        self.handle_intents(&intents);
    }

    /// Replays undo entries back to `target` and returns the intents met.
    /// A damaged entry is a panic (a damaged domain, see `fault`).
    fn undo_to(&self, target: u64) -> Vec<(P<PeerRec>, u64)> {
        let mut intents = Vec::new();
        if let Err(n) = self.undo_entries(target, &mut |peer, serial| intents.push((peer, serial))) {
            panic!("undo log entry {n} is damaged");
        }
        intents
    }

    /// Replays undo entries back to `target`, handing intents to `intent`;
    /// stops at the first damaged entry and returns its position.
    fn undo_entries(&self, target: u64, intent: &mut dyn FnMut(P<PeerRec>, u64)) -> core::result::Result<(), u64> {
        let mut n = self.log_len.get();
        if n > LOG_CAP {
            return Err(n);
        }
        while n > target {
            n -= 1;
            let e = self.dom.seg.log_cells(n);
            let (off, old, meta) = (e[0].get(), e[1].get(), e[2].get());
            match meta & 0xff {
                KIND_INTENT => intent(P::from_off(off), old),
                KIND_WRITE if undoable(off) && self.dom.seg.write_bits(off, ((meta >> 8) & 0xff) as u32, old) => {}
                _ => return Err(n),
            }
            self.set_log_len(n);
        }
        Ok(())
    }

    /// The undo log ran out of memory (`log_nearly_full`): nothing is
    /// damaged, and every change is in the log. Rolls back without writing
    /// anything the log would have to take: peers named by intents are
    /// marked dirty directly (a value that is always safe, rule 4).
    fn roll_back_out_of_log(&mut self) {
        let mut dirty = Vec::new();
        let _ = self.undo_entries(0, &mut |peer, serial| dirty.push((peer, serial)));
        for (peer, serial) in dirty {
            if let Some(p) = self.dom.seg.try_rec(peer) {
                if p.magic.get() == PEER_MAGIC && p.serial.get() == serial {
                    p.bell_dirty.raw_set(1);
                }
            }
        }
        self.finished = true;
        self.dom.unlock();
    }

    /// A panic is unwinding through this transaction (see `fault`): rolls
    /// back what the log allows without trusting anything else, marks the
    /// domain damaged and releases the lock. Never panics itself.
    fn quarantine(&mut self) {
        let note = crate::fault::take_note().unwrap_or_else(|| "an inconsistency".into());
        let _ = self.undo_entries(0, &mut |_, _| {});
        self.dom.mark_damaged(&note);
        // Said before the lock goes, so that another thread's refusal does
        // not speak first.
        self.dom.report_damage(true);
        self.finished = true;
        // Harmless unless the lock came with EOWNERDEAD and the recovery
        // panicked; then it keeps the mutex usable for the refusals.
        self.dom.mutex().consistent();
        self.dom.unlock();
    }

    /// Rolls back a transaction left behind by a dead holder (rule 5).
    fn recover(&self) {
        let intents = self.undo_to(0);
        self.set(&self.hdr().recoveries, self.hdr().recoveries.get() + 1);
        self.handle_intents(&intents);
        self.run_ops_best_effort();
        self.set_log_len(0);
    }

    /// Rule 4: peers named by intents become dirty and are re-rung.
    fn handle_intents(&self, intents: &[(P<PeerRec>, u64)]) {
        for &(peer, serial) in intents {
            if crate::peer::lookup_serial(self, serial) == Some(peer) {
                doorbell::mark_dirty(self, peer);
            }
        }
    }

    fn run_ops_best_effort(&self) {
        let mut ops = core::mem::take(&mut *self.ops.borrow_mut());
        for op in ops.drain(..) {
            let _ = doorbell::execute(self, op);
        }
        *self.ops.borrow_mut() = ops;
    }

    /// Commits: runs the queued side effects (which may still fail and
    /// abort everything), applies deferred frees, publishes the commit,
    /// runs post-commit removals and releases the lock.
    pub fn commit(mut self) -> Result<()> {
        let mut ops = core::mem::take(&mut *self.ops.borrow_mut());
        let mut failed = None;
        for op in ops.drain(..) {
            if failed.is_none() {
                if let Err(e) = doorbell::execute(&self, op) {
                    failed = Some(e);
                }
                crate::crash::point("commit-op");
            }
        }
        *self.ops.borrow_mut() = ops;
        if let Some(e) = failed {
            self.abort_inner();
            return Err(e);
        }
        let mut frees = core::mem::take(&mut *self.frees.borrow_mut());
        for (off, size) in frees.drain(..) {
            crate::alloc::free_now(&self, off, size);
        }
        *self.frees.borrow_mut() = frees;
        if self.ops.borrow().iter().any(|o| matches!(o, Op::Fail(_))) {
            self.abort_inner();
            return Err(Errno::ENOMEM);
        }
        self.check_heap_if_debugging("a commit");
        // The rings the commit owes are counted before it becomes final
        // (rule 9): a death from here on leaves them owed, not lost.
        self.seal_visible();
        crate::crash::point("commit-before");
        self.set_log_len(0);
        crate::crash::point("commit-after");
        let mut post = core::mem::take(&mut *self.post.borrow_mut());
        for op in post.drain(..) {
            let _ = doorbell::execute(&self, op);
        }
        *self.post.borrow_mut() = post;
        // Fields written by after-commit operations (rule 4) form a second,
        // smaller transaction: committed here, rolled back if we die first.
        self.set_log_len(0);
        self.finish_lock();
        Ok(())
    }

    /// Turns the wake-ups noted so far into tickets (rule 9).
    fn seal_visible(&mut self) {
        let mut visible = core::mem::take(self.visible.get_mut());
        if !visible.is_empty() {
            let mut tickets = core::mem::take(&mut self.tickets);
            doorbell::seal(self, &visible, &mut tickets);
            self.tickets = tickets;
        }
        visible.clear();
        *self.visible.get_mut() = visible;
    }

    /// Releases the lock, then makes the wake-ups the transaction owes
    /// (rule 9), and hands the work lists back for reuse.
    fn finish_lock(&mut self) {
        self.seal_visible();
        let tickets = core::mem::take(&mut self.tickets);
        self.finished = true;
        self.dom.unlock();
        if !tickets.is_empty() {
            doorbell::entries_visible(self.dom, &tickets);
        }
        return_lists(Lists {
            frees: core::mem::take(self.frees.get_mut()),
            ops: core::mem::take(self.ops.get_mut()),
            post: core::mem::take(self.post.get_mut()),
            visible: core::mem::take(self.visible.get_mut()),
            tickets,
        });
    }

    /// Undoes the whole transaction and releases the lock.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if self.inspect_only {
            self.finish_lock();
            return;
        }
        let intents = self.undo_to(0);
        self.check_heap_if_debugging("an abort");
        self.frees.borrow_mut().clear();
        self.ops.borrow_mut().clear();
        self.post.borrow_mut().clear();
        self.visible.borrow_mut().clear();
        if !intents.is_empty() {
            self.handle_intents(&intents);
            self.run_ops_best_effort();
            self.frees.borrow_mut().clear();
            self.set_log_len(0);
        }
        self.finish_lock();
    }

    /// `BUS1_DEBUG_HEAP`: stops at once if `stage` damaged the heap.
    fn check_heap_if_debugging(&self, stage: &str) {
        if heap_debug() {
            if let Err(e) = crate::alloc::check_free_lists(self) {
                panic!("heap damaged by {stage}: {e}");
            }
        }
    }

    /// Finishes with `r`: commit on success, abort on error.
    pub fn finish<T>(self, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => self.commit().map(|_| v),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.finished {
        } else if std::thread::panicking() {
            if self.inspect_only {
                self.finished = true;
                self.dom.unlock();
            } else if crate::fault::take_out_of_log() {
                self.roll_back_out_of_log();
            } else {
                self.quarantine();
            }
        } else {
            self.abort_inner();
        }
    }
}
