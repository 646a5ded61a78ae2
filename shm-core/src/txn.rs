//! Locks, transactions and crash recovery.
//!
//! # Locking and crash-recovery rules
//!
//! These rules are the whole concurrency story of the bus; every module
//! follows them. A process can die (SIGKILL) or stop (SIGSTOP, a debugger,
//! a page fault on slow memory) at any instruction while it holds any lock.
//! A dead holder's work is finished or undone by the next party that meets
//! it; a stopped one holds up only the conversations it takes part in.
//!
//! ## 1. The locks
//!
//! Every lock shared between processes is a process-shared robust
//! `pthread_mutex_t` in the segment ([`RobustMutex`]); a plain spinlock is
//! never used across processes.
//!
//! * **The domain lock `D`** (in the header) guards the *object graph*:
//!   nodes and handles with their lists, counts and destruction state, the
//!   ID tables, the peer list and the serial table, user records, seeds,
//!   fd vaults, the segment heap and the global hash table. Every ioctl
//!   other than the three of the *data path* takes it, and so do the rare
//!   cases of the data path that change the object graph (see 5).
//! * **A peer lock `P`** (one per peer, in its record) guards that peer's
//!   *message state*: its queue and clock, its pool allocator and slice
//!   directory, its record arena, its quota usage and fair shares, its
//!   readiness mirror, and the reference counts of its handles. Object
//!   state that the data path reads — a peer's state, limits and ID table,
//!   a handle's user references and ID, a node's owner, release and
//!   destruction state — is written only by a `D` holder that also holds
//!   the lock of the peer it belongs to, so either lock suffices to read it.
//! * **A transaction slot `T`** (an array in the header) belongs to one
//!   SEND of the data path while it runs. The sender holds the slot's
//!   mutex for the whole SEND, so `EOWNERDEAD` on it tells whoever meets
//!   the transaction later that its sender died.
//! * **A release lock `R`** (one per peer, in its record) serialises that
//!   peer's SLICE_RELEASE calls and guards the *producer* end of its
//!   release ring (11); it guards nothing a sender or RECV reads.
//! * Process-local state (pool mappings, internal sockets) is guarded by
//!   `sync::LocalMutex`, taken after any shared lock and handled by the
//!   fork handlers.
//!
//! ## 2. Lock order
//!
//! ```text
//!        D ───────────> P, P', P'' ...   (any number, in any order)
//!        │                  ▲   ▲
//!        │                  │   │  one at a time
//!        ▼                  │   │
//!   LocalMutex <──── T ─────┘   R   (the peer's own, before its P)
//! ```
//!
//! A thread holding `D` may take any peer locks, in any order, and keeps
//! every one it took until its transaction commits or aborts (two-phase
//! locking). A thread without `D` holds at most one peer lock at a time
//! and, while it does, waits for no other shared lock (it may only *try*
//! one). No cycle can form: the only thread that waits while holding a peer
//! lock is a `D` holder, and `D` holders are serialised by `D`. A
//! transaction slot is owned by its sender alone; others only try-lock it.
//! `R` is taken only by SLICE_RELEASE, with no other lock held, and before
//! the same peer's `P` when the release goes the locked way; nobody holding
//! a `P` or `D` waits for an `R`.
//! A `D` holder waiting for `P` waits for whoever is inside `P`'s section,
//! who may be a stopped process: work nobody is waiting for (the watcher's
//! tidying, the wake-up tick) therefore only tries peer locks
//! (`Txn::never_wait`, `Txn::try_hold`) and leaves a busy peer for a later
//! round, so that a stopped process never stops the domain's transactions
//! through it.
//!
//! ## 3. What may happen under a lock
//!
//! Nothing under a shared lock copies from or to the caller's memory (the
//! payload is copied into a slice that is not yet visible, with no lock
//! held, or first into the process's own memory), waits for another
//! process, or makes a system call that can block: socket calls use
//! non-blocking sockets. No kernel call made for
//! another peer (a futex wake, a token) happens under a lock (8). Waiters
//! never sleep on a lock without a deadline: an unlock wakes one sleeper,
//! and a sleeper killed between that wake-up and taking the lock would
//! otherwise take it along and strand the others on a free lock; so
//! waiters sleep at most `WAIT_SLICE_MS` at a time (on CLOCK_MONOTONIC)
//! and look again. Between two slices, a waiter that holds no lock at all
//! (no robust mutex on its thread's robust list, no `LocalMutex` guard)
//! runs the host's long-wait hook: the preload library runs the signal
//! handlers it held back meanwhile there. A lock the taking thread holds
//! already (EDEADLK: a call from a signal handler that interrupted one of
//! the thread's own, which the preload library only lets happen past four
//! signals in one call) is no damage: a section gives up before touching
//! anything, a transaction rolls back exactly (`fault::HeldByThisThread`),
//! and the call fails with EDEADLK — at once: a lock is tried once before
//! any spin, and that try reports it.
//!
//! ## 4. Two kinds of critical section
//!
//! **Transactions (`Txn`, under `D`).** Before a field is written its old
//! value goes to the undo log in the segment, then the log length is
//! published (followed by a compiler fence), then the field is written. A
//! transaction commits by setting the length to zero; until then it can be
//! undone exactly, backwards. Because every peer lock a transaction took is
//! held until then, nobody else wrote what the log covers, so undoing it is
//! always valid — for object state and message state alike. Memory the
//! transaction allocated is not reachable from committed state, so it is
//! initialised without logging, and memory it frees is reused only after
//! it commits. Every peer lock it takes is named in the log first, so that
//! a recoverer knows which ones to take. The one other unlogged write is a
//! hint that only grows and must outlive a rollback: how far a pool's
//! pages may be resident (`pool`).
//!
//! **Sections (`Section`, one peer lock, no `D`).** The data path writes
//! no undo log. A peer's message state is split into *authoritative*
//! fields — per record its state word, stamp, slice range and charges; per
//! peer its clock, flush mark and quota reservation — and *derived* fields:
//! queue links, the slice directory and free space, the arena's free list,
//! usage counters and shares, handle reference counts, the readiness
//! mirror. A section changes the authoritative state with a single store
//! (its commit point) made after everything that store publishes is
//! written (a record's state word, with a compiler fence before it, since
//! the fields are plain stores), and then updates the derived fields. Any
//! crash therefore leaves authoritative state that is whole, and derived
//! state that `rebuild` recomputes from it.
//!
//! ## 5. The data path and the rest
//!
//! SEND of a message without handles or fds to existing handles, RECV of a
//! message without handles or fds or of a notification, and SLICE_RELEASE
//! run in sections only. A SEND resolves its destinations under the
//! caller's peer lock, then per destination takes the receiver's lock to
//! charge quota and allocate a slice and a record (state *prepared*, owned
//! by its transaction slot), copies the payload with no lock held, and
//! commits (6). A *direct unicast* (one destination, at most a page of
//! payload) reads the payload into the process's own memory first and
//! then does all of that in one section of the receiver, without a slot:
//! a crash inside leaves only what `rebuild` recomputes. A thread keeps
//! the destinations it resolved for unicasts: while the caller's
//! `id_removals` (bumped by every removal from its ID table, before that
//! transaction commits) stays the same, the next unicast to the same ID
//! reads the caller's state without its lock and skips that section (an
//! ID names one handle for life; the node is checked under the
//! receiver's lock). RECV takes the caller's own lock once;
//! SLICE_RELEASE takes only the caller's `R` and appends to its release
//! ring (11), or, when it must, takes `R` and then the caller's own lock
//! once.
//! Everything else — handle bookkeeping, transfers, destruction, resets,
//! teardown, messages carrying handles or fds, seeds, and whatever a data
//! path call finds that needs the object graph — runs as a transaction.
//! A transaction that sends copies the payload into process memory first
//! and holds no lock while reading the caller's memory. Handles and nodes
//! that a section leaves unreferenced are freed later by the next
//! transaction on that peer or the watcher (`object::collect`), never by
//! the section.
//!
//! ## 6. Global order without a global lock
//!
//! Each queue has a clock (even, only ever increased, updated with atomic
//! max) and keeps its entries sorted by (stamp, transaction tag, index);
//! a stamp is odd while the entry is *staged* and even once *committed*,
//! and a queue is readable only while its head is committed. This is the
//! module's protocol (the specification's section on global ordering):
//!
//! * **Unicast** commits in one section of the receiver: its clock is
//!   synced to the sender's, ticked, and the entry goes in committed at the
//!   new stamp, behind everything; then the sender's clock is synced to it.
//! * **Multicast** goes in four steps, recorded in the transaction slot:
//!   *stage* every entry (one receiver lock at a time: sync the receiver's
//!   clock with what the transaction has seen, insert at clock + 1);
//!   *seal* (the commit stamp is the sender's clock ticked past everything
//!   the staging saw; set once, with compare-and-swap); *sync* every
//!   receiver's clock to it; *commit* every entry (re-key it to the commit
//!   stamp, move it to its place). Every step is idempotent, so anyone can
//!   run it: a RECV that finds a staged head, or anyone that meets a slot
//!   whose sender died, drives the transaction to its end (*helping*); a
//!   sender stopped between staging and commit therefore delays nobody.
//! * **Transactions under `D`** (notifications, destruction, resets,
//!   SENDs with handles) hold every receiver lock they touch, so they pick
//!   the stamp past every clock involved, sync them all and insert
//!   committed entries at once.
//!
//! ## 7. Death of a holder
//!
//! * `D`: the next locker gets `EOWNERDEAD`, takes the peer locks the log
//!   names, replays the log backwards, marks each lock consistent and
//!   proceeds. Socket operations that cannot be undone (fd carriers, vault
//!   datagrams, draining the caller's own socket) run at the end of a
//!   transaction, each preceded by an *intent* entry in the log naming the
//!   peer: whoever rolls a transaction back marks those peers *dirty*, and
//!   a dirty peer rebuilds its socket contents on its next operation
//!   (`doorbell`). Operations that only remove what nothing refers to any
//!   more (files, carriers) run after the commit point; if they never
//!   happen, what they would have removed is found as an orphan later.
//! * `P`: the lock's holder mark says what died. A section: the next locker
//!   rebuilds the peer's derived state and proceeds. A transaction: its
//!   writes are in the `D` log, so the locker marks the peer *awaiting
//!   recovery*, lets the lock go and takes `D` (whose recovery takes the
//!   peer lock and undoes them); anyone who finds the mark does the same.
//! * `T`: a staged transaction is rolled forward by whoever meets it; one
//!   that was still preparing (nothing visible yet) is rolled back by the
//!   first party that try-locks its slot: the watcher scans the slots in
//!   use, and so does the next data-path call after any lock was recovered
//!   (a death was seen), a sender short of quota or pool space, and a RECV
//!   that finds nothing but records still being prepared for it.
//!
//! ## 8. Wake-ups
//!
//! Wake-ups happen after the locks are released, and only for sleepers.
//! A transaction or section that makes entries visible in a queue (or
//! disconnects a peer) notes the peer (`Store::note_visible`); at its end,
//! still holding its locks, each note becomes a ticket counted in the peer
//! bell's `owed` counter (`doorbell::seal`); once the locks are released,
//! the tickets are rung (`doorbell::entries_visible`): the bell's `seq` is
//! bumped and every thread armed on the bell is woken. Waiters and wakers
//! follow a Dekker handshake on the bell (`waiters`): a waiter publishes
//! its slot in the bell's sleeper map, then re-reads the peer's state; a
//! waker publishes the change, then reads the sleeper map; both with
//! sequentially consistent operations and fences, so one of them always
//! sees the other. A process that dies or stops between its commit and its
//! ring leaves `rung < owed`, which the wake-up tick of any process
//! notices and makes good a tick later; one that dies inside a section
//! leaves its peer to be rebuilt, which marks the peer dirty and rings it.
//! Readiness is read without any lock (`readiness`): a queue being changed
//! may be seen half-way, which at worst reports POLLIN for an entry that
//! RECV then does not deliver, never the reverse.
//!
//! ## 9. Failed recoveries and damage
//!
//! A recoverer raises a counter before it starts and lowers it when done;
//! one that dies or panics leaves it raised, and after `RECOVERY_ATTEMPTS`
//! failures the domain is marked damaged. An inconsistency the engine
//! finds as it goes (an offset outside the segment, a list that does not
//! end, a duplicate key, a count no quota allows) is a panic (`fault`): a
//! transaction it unwinds through rolls back what its log allows, a
//! section releases its peer lock, and either marks the domain damaged
//! (a mark in the header that nothing undoes). The call fails with EIO;
//! every later lock of the domain, in any process, is refused with
//! ENOTRECOVERABLE without touching the segment, and each process says so
//! once on stderr.
//!
//! ## 10. Failed calls
//!
//! A call that fails changes nothing: a transaction's error aborts it
//! (undoing every write), a section's error path puts back what it took
//! before its commit point, and a step that cannot be undone (installing
//! fds, writing the result to the caller) comes after everything that can
//! still fail. Memory and descriptors are checked for before the first
//! change, not after.
//!
//! ## 11. Releases without the peer lock
//!
//! A SLICE_RELEASE that owes the peer's socket nothing, and the pool no
//! pages to give back, validates the slice without `P` and appends (record, incarnation) to the peer's release
//! ring under `R`; the store of the ring's tail is its commit point (see
//! `release`). **Every holder of a peer lock, section or transaction,
//! applies that peer's ring as soon as it has the lock**, before it reads
//! anything else of the peer's message state, so no holder ever sees pool
//! space, quota or slice state that a completed release has not changed.
//! Applying is message state like any other: a section's crash leaves it
//! to `rebuild` and the next holder, who applies the same entries again
//! (each one checks that its incarnation still has the published bit); a
//! transaction logs it and the next holder applies again what an abort
//! undid. A releaser stopped under `R` holds up only releases of its own
//! peer.

use crate::doorbell::{self, Op, Ticket, Visible};
use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::section::Raw;
use crate::shm::{Cell, Pod, P};
use crate::store::{Intent, Later, Store};
use crate::sync::RobustMutex;
use core::cell::RefCell;

/// Undo entry kinds (the low byte of an entry's third word).
const KIND_WRITE: u64 = 0;
/// A socket side effect on a peer may have happened.
const KIND_INTENT: u64 = 1;
/// A peer lock is held by the transaction.
const KIND_LOCK: u64 = 2;
/// A user's claimed quota was raised (the old-value word holds the delta).
const KIND_CLAIM: u64 = 3;

/// `BUS1_DEBUG_HEAP=1`: check the heap's free lists at every commit and
/// abort (slow; a debugging aid for the allocator's undo rules).
fn heap_debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BUS1_DEBUG_HEAP").is_some())
}

/// Undo log entries kept in reserve: a transaction whose log could not
/// grow writes these until it reaches an allocation or its commit.
pub(crate) const LOG_SPARE: u64 = crate::domain::LOG_CHUNK / LOG_ENTRY;

/// Memory a transaction frees, returned to its free list only at commit
/// (rule 4): until then it may still be needed by an undo, so it must not
/// be reused and overwritten without logging.
#[derive(Clone, Copy)]
pub(crate) enum Free {
    /// A heap block (offset, size).
    Block(u64, u64),
    Handle(P<Handle>),
    Peer(P<PeerRec>),
    Chunk(P<Chunk>),
    /// A record of a peer's arena.
    Record(P<PeerRec>, P<Msg>),
}

/// Whether an undo entry may write at `off`: a field of the header or the
/// heap, never the lock or the log itself (only a damaged entry names
/// those).
fn undoable(off: u64) -> bool {
    let lock = core::mem::offset_of!(Header, mutex) as u64;
    let lock_end = lock + core::mem::size_of::<RobustMutex>() as u64;
    !(lock.saturating_sub(7)..lock_end).contains(&off) && !(LOG_OFF..WAKE_OFF).contains(&off)
}

/// A position in a transaction to roll back to ([`Txn::rollback_to`]).
#[derive(Clone, Copy, Debug)]
pub struct Savepoint {
    log_len: u64,
    frees: usize,
    ops: usize,
    post: usize,
    later: usize,
    visible: usize,
}

/// An open transaction: the domain lock is held for its lifetime, and
/// every peer lock it took (rule 2).
pub struct Txn<'d> {
    pub(crate) dom: &'d Domain,
    frees: RefCell<Vec<Free>>,
    ops: RefCell<Vec<Op>>,
    post: RefCell<Vec<Op>>,
    later: RefCell<Vec<Later>>,
    held: RefCell<Vec<P<PeerRec>>>,
    /// Peers owed a wake-up once the transaction is over (rule 8).
    visible: RefCell<Vec<(P<PeerRec>, Visible)>>,
    tickets: RefCell<Vec<Ticket>>,
    finished: bool,
    /// Opened to look at the segment (`lock_to_inspect`), after any
    /// recovery: ends without rolling anything back, and a panic while
    /// looking (the checker's own) damages nothing. It writes no field,
    /// only the log entries naming the peer locks it takes, which it takes
    /// back when it ends ...
    inspect_only: bool,
    /// ... down to the log length it found.
    inspect_base: u64,
    /// This transaction's copy of the header's `log_len` (it is the only
    /// writer while it holds the lock), so that logging a write reads no
    /// shared memory.
    log_len: core::cell::Cell<u64>,
    /// Set by SEND: a receiver whose socket is gone fails the commit with
    /// [`Errno::PEER_GONE`] instead of being rung silently.
    live_receivers: core::cell::Cell<bool>,
    /// Background work (see [`Txn::never_wait`]): a peer lock another holder
    /// has ends the transaction instead of being waited for.
    never_wait: core::cell::Cell<bool>,
    /// The undo log could not grow: the transaction cannot commit.
    log_failed: core::cell::Cell<bool>,
    #[cfg(debug_assertions)]
    fresh: RefCell<Vec<(u64, u64)>>,
}

/// The work lists of a transaction, kept per thread between transactions
/// so that they are not allocated every time.
#[derive(Default)]
struct Lists {
    frees: Vec<Free>,
    ops: Vec<Op>,
    post: Vec<Op>,
    later: Vec<Later>,
    held: Vec<P<PeerRec>>,
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
    l.later.clear();
    l.held.clear();
    l.visible.clear();
    l.tickets.clear();
    let _ = LISTS.try_with(|c| c.set(Some(l)));
}

/// Runs a recovery `f` under the attempt counter `attempts` (rule 7's
/// last paragraph): a recovery that failed too often, or that panics, is
/// not run (again); the domain is quarantined instead.
pub(crate) fn guarded_recovery(dom: &Domain, what: &str, attempts: (u64, &dyn Fn(u64)), f: impl FnOnce()) -> Result<()> {
    let (n, set) = attempts;
    if n >= RECOVERY_ATTEMPTS {
        dom.quarantine(&format!("{what} failed {n} times"));
        return Err(Errno::ENOTRECOVERABLE);
    }
    set(n + 1);
    crate::crash::point("recovering");
    if let Err(p) = std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)) {
        // The recovery found the domain damaged (rule 9): this call fails
        // with EIO, every later one is refused.
        let why = crate::fault::take_note()
            .or_else(|| p.downcast_ref::<String>().cloned())
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
        dom.quarantine(&format!("{what} panicked: {}", why.unwrap_or_default()));
        return Err(Errno::EIO);
    }
    set(0);
    dom.hdr().recoveries.fetch_add(1);
    crate::slot::death_seen(dom);
    Ok(())
}

impl Domain {
    fn mutex(&self) -> &RobustMutex {
        &self.hdr().mutex
    }

    /// The segment header.
    #[inline]
    pub(crate) fn hdr(&self) -> &Header {
        self.seg.at0()
    }

    /// Initialises the robust lock of a new segment (nobody else can use it
    /// before the segment magic is published).
    pub(crate) fn init_lock(&self) -> Result<()> {
        match self.mutex().init() {
            0 => Ok(()),
            r => Err(Errno(r)),
        }
    }

    /// Takes the domain lock and opens a transaction, first undoing the
    /// transaction of a holder that died (rule 7). A domain marked damaged
    /// is refused with ENOTRECOVERABLE (rule 9, `fault`).
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
        let r = self.mutex().acquire();
        self.open_txn(r, inspect)
    }

    /// Opens the transaction of a lock attempt that returned `r` (for
    /// `inspect`, see [`lock_to_inspect`](Self::lock_to_inspect)).
    fn open_txn(&self, r: libc::c_int, inspect: bool) -> Result<Txn<'_>> {
        if r != 0 && r != libc::EOWNERDEAD {
            // EDEADLK: this thread holds the domain lock, in a call a
            // signal handler interrupted (see `fault::HeldByThisThread`).
            return Err(Errno(r));
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
            later: RefCell::new(l.later),
            held: RefCell::new(l.held),
            visible: RefCell::new(l.visible),
            tickets: RefCell::new(l.tickets),
            finished: false,
            inspect_only: damaged,
            inspect_base: 0,
            log_len: core::cell::Cell::new(self.hdr().log_len.load()),
            live_receivers: core::cell::Cell::new(false),
            never_wait: core::cell::Cell::new(false),
            log_failed: core::cell::Cell::new(false),
            #[cfg(debug_assertions)]
            fresh: RefCell::default(),
        };
        if !damaged && (r == libc::EOWNERDEAD || tx.log_len.get() != 0) {
            // A log left by a holder in this process can only come from a
            // panic that unwound through a transaction without quarantining
            // it; treat it like a dead holder's.
            let hdr = self.hdr();
            let set = |n: u64| hdr.recovering.store(n);
            let attempts = (hdr.recovering.load(), &set as &dyn Fn(u64));
            if let Err(e) = guarded_recovery(self, "undoing a dead lock holder's transaction", attempts, || tx.recover()) {
                tx.finished = true;
                if r == libc::EOWNERDEAD {
                    self.mutex().consistent();
                }
                self.unlock();
                return Err(e);
            }
        }
        if r == libc::EOWNERDEAD {
            // EOWNERDEAD transferred ownership to us.
            self.mutex().consistent();
        }
        if !damaged {
            tx.check_heap_if_debugging("something outside a transaction");
        }
        tx.inspect_only = inspect;
        tx.inspect_base = tx.log_len.get();
        Ok(tx)
    }

    /// If a transaction is open and its holder died, rolls it back now
    /// (without waiting for a live holder): lock-free readers of the
    /// segment then no longer see what it had half done.
    pub(crate) fn settle_interrupted(&self) {
        if self.hdr().log_len.load() == 0 || self.is_damaged() || self.mutex().held_by_live_owner() {
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
        crate::store::list_bound::<T>(self.dom)
    }

    /// The records of a shared list, from `first` on through `next`. A
    /// damaged list (a cycle) ends the walk with a panic, which quarantines
    /// the domain (see `fault`), instead of running forever.
    pub(crate) fn walk<T, F: Fn(&T) -> P<T>>(&self, first: P<T>, next: F) -> crate::store::Walk<'_, Self, T, F> {
        crate::store::walk(self, first, next)
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
        // The length store is a release: it keeps the entry before it,
        // but not the caller's plain write after it. Without this fence
        // the compiler may move that write ahead of the length, and a
        // holder killed between the two would leave a change no entry
        // covers.
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
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

    /// Writes a field, logging its old value first (rule 4).
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
    pub(crate) fn preserve<T: Pod>(&self, cell: &Cell<T>) {
        self.log_write(cell.addr(), cell.get().to_bits(), core::mem::size_of::<T>() as u64);
    }

    /// Initialises a field of memory allocated by this transaction, without
    /// logging (rule 4): until the transaction commits, nothing committed
    /// points at it, so its old contents do not matter.
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

    /// Records memory allocated by this transaction (debug checks of
    /// [`init`](Self::init)).
    #[inline]
    pub(crate) fn note_fresh(&self, _off: u64, _size: u64) {
        #[cfg(debug_assertions)]
        self.fresh.borrow_mut().push((_off, _size));
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

    /// Takes `peer`'s lock for the rest of the transaction (rule 2), unless
    /// it already holds it. The lock is named in the log before it is
    /// taken, so that a recoverer takes it too. A section that died
    /// holding it is recovered here by rebuilding (rule 7); a transaction
    /// that died holding it was undone when this one took the domain lock.
    pub fn hold(&self, peer: P<PeerRec>) {
        if self.held.borrow().contains(&peer) {
            return;
        }
        if self.never_wait.get() {
            if !self.try_hold(peer) {
                // Rolled back exactly, like a transaction out of log
                // memory; the work is left for a later round.
                std::panic::panic_any(crate::fault::PeerBusy);
            }
            return;
        }
        let _ = self.log_entry(peer.off(), 0, KIND_LOCK);
        let r = self.rec(peer).lock.acquire();
        self.held_lock(peer, r);
    }

    /// `peer`'s lock was just taken with result `r` (named in the log
    /// before): recovers it if its holder died, and keeps it.
    fn held_lock(&self, peer: P<PeerRec>, r: libc::c_int) {
        let p = self.rec(peer);
        let mut rebuilt = false;
        if r == libc::EOWNERDEAD {
            if p.holder.get() != HELD_TXN {
                let raw = Raw { dom: self.dom };
                let set = |n: u64| p.rebuilding.raw_set(n as u32);
                let attempts = (p.rebuilding.get() as u64, &set as &dyn Fn(u64));
                if let Err(e) = guarded_recovery(self.dom, "rebuilding a peer's message state", attempts, || {
                    crate::rebuild::rebuild(&raw, peer)
                }) {
                    self.ops.borrow_mut().push(Op::Fail(e));
                }
                rebuilt = true;
            }
            p.lock.consistent();
        } else if r == libc::EDEADLK {
            // This thread holds it, in a call a signal handler interrupted
            // (see `fault::HeldByThisThread`).
            std::panic::panic_any(crate::fault::HeldByThisThread);
        } else if r != 0 {
            // The lock is unusable (ENOTRECOVERABLE): so is the domain.
            self.dom.quarantine("a peer lock became unrecoverable");
            self.ops.borrow_mut().push(Op::Fail(Errno::ENOTRECOVERABLE));
            return;
        }
        p.await_txn.raw_set(0);
        p.holder.raw_set(HELD_TXN);
        self.held.borrow_mut().push(peer);
        if rebuilt {
            // Whatever the dead section owed the peer is owed still, even
            // if this transaction aborts.
            let owed = [(peer, doorbell::dirty(&Raw { dom: self.dom }, peer))];
            doorbell::seal(self, &owed, &mut self.tickets.borrow_mut());
        }
        // Rule 11: releases made without the lock come first (logged like
        // any change: undone with the transaction, and applied again by
        // the next holder). An inspection writes nothing and sees them
        // waiting.
        if !self.inspect_only {
            crate::release::apply(self, peer);
        }
    }

    /// Raises (or lowers) a user's claimed quota, logging how to undo it.
    pub(crate) fn claim(&self, user: P<UserRec>, res: usize, delta: i64) {
        if delta == 0 {
            return;
        }
        let _ = self.log_entry(user.off(), delta as u64, KIND_CLAIM | ((res as u64) << 16));
        self.rec(user).claimed[res].fetch_add(delta as u64);
    }

    /// Frees a block when the transaction commits (rule 4).
    pub(crate) fn defer_free(&self, what: Free) {
        self.frees.borrow_mut().push(what);
    }

    /// Queues a socket side effect to run at commit.
    pub(crate) fn push_op(&self, op: Op) {
        self.ops.borrow_mut().push(op);
    }

    /// Queues a best-effort removal to run after the commit point.
    pub(crate) fn push_post(&self, op: Op) {
        self.post.borrow_mut().push(op);
    }

    /// Records that `peer` is owed `what` once the transaction is over
    /// (rule 8): the wake-up of its waiters, a kernel token.
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

    /// A position to roll back to with [`rollback_to`](Self::rollback_to).
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            log_len: self.log_len.get(),
            frees: self.frees.borrow().len(),
            ops: self.ops.borrow().len(),
            post: self.post.borrow().len(),
            later: self.later.borrow().len(),
            visible: self.visible.borrow().len(),
        }
    }

    /// Undoes everything done since `sp` (per-destination failures of
    /// SEND_FLAG_CONTINUE, a RECV that fails after its search): logged
    /// writes, deferred frees, and side effects queued for the commit or
    /// after it. A socket operation already made since `sp` (a RECV taking
    /// fds out of the vault) cannot be undone: its intent is logged again,
    /// so that a later abort or recovery still sees it, and its peer
    /// becomes dirty, as after an abort (rule 7). Peer locks taken since
    /// stay held, and stay named in the log.
    pub fn rollback_to(&self, sp: Savepoint) {
        let intents = self.undo_to(sp.log_len);
        self.frees.borrow_mut().truncate(sp.frees);
        self.ops.borrow_mut().truncate(sp.ops);
        self.post.borrow_mut().truncate(sp.post);
        self.later.borrow_mut().truncate(sp.later);
        self.visible.borrow_mut().truncate(sp.visible);
        for &peer in self.held.borrow().iter() {
            if !self.log_names_lock(peer) {
                let _ = self.log_entry(peer.off(), 0, KIND_LOCK);
            }
        }
        for &(peer, _) in &intents {
            let _ = self.intent(peer, Intent::Added);
        }
        self.handle_intents(&intents);
    }

    fn entry(&self, i: u64) -> (u64, u64, u64) {
        let e = self.dom.seg.log_cells(i);
        (e[0].get(), e[1].get(), e[2].get())
    }

    fn log_names_lock(&self, peer: P<PeerRec>) -> bool {
        (0..self.log_len.get()).any(|i| {
            let (off, _, meta) = self.entry(i);
            meta & 0xff == KIND_LOCK && off == peer.off()
        })
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
            let (off, old, meta) = self.entry(n);
            match meta & 0xff {
                KIND_INTENT => intent(P::from_off(off), old),
                KIND_WRITE if undoable(off) && self.dom.seg.write_bits(off, ((meta >> 8) & 0xff) as u32, old) => {}
                KIND_LOCK => {}
                KIND_CLAIM => match self.dom.seg.try_rec(P::<UserRec>::from_off(off)) {
                    Some(user) => {
                        user.claimed[(meta >> 16) as usize & 3].fetch_add((old as i64).wrapping_neg() as u64);
                    }
                    None => return Err(n),
                },
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
        self.release_held();
        self.dom.unlock();
    }

    /// Releases the peer locks the transaction took (on the way out of a
    /// panic, with nothing else done).
    fn release_held(&mut self) {
        for &peer in self.held.get_mut().iter().rev() {
            if let Some(p) = self.dom.seg.try_rec(peer) {
                p.lock.unlock();
            }
        }
        self.held.get_mut().clear();
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
        self.release_held();
        self.dom.unlock();
    }

    /// Marks a transaction of background work (the watcher's tidying): it
    /// holds the domain lock, so waiting there for a peer lock whose holder
    /// is stopped (SIGSTOP, a debugger) would stop every transaction of the
    /// domain. Instead, meeting such a lock rolls the transaction back
    /// (`fault::PeerBusy`) and its work waits for a later round.
    pub(crate) fn never_wait(&self) {
        self.never_wait.set(true);
    }

    /// Takes `peer`'s lock like [`hold`](Self::hold) if it is free now;
    /// false (and nothing taken) if another holder has it. For work that
    /// may wait for a later turn rather than for a holder that may be
    /// stopped (the wake-up tick).
    pub(crate) fn try_hold(&self, peer: P<PeerRec>) -> bool {
        if self.held.borrow().contains(&peer) {
            return true;
        }
        let p = self.rec(peer);
        if !p.lock.looks_free() {
            return false;
        }
        let before = self.log_len.get();
        let _ = self.log_entry(peer.off(), 0, KIND_LOCK);
        match p.lock.try_lock() {
            libc::EBUSY => {
                // Nobody else writes the log: take the entry back.
                self.set_log_len(before);
                false
            }
            r => {
                self.held_lock(peer, r);
                true
            }
        }
    }

    /// Undoes a transaction left behind by a dead holder (rule 7): takes
    /// the peer locks it named, replays its log, handles its intents.
    fn recover(&self) {
        let mut peers: Vec<P<PeerRec>> = Vec::new();
        for i in 0..self.log_len.get() {
            let (off, _, meta) = self.entry(i);
            if meta & 0xff == KIND_LOCK && !peers.iter().any(|p| p.off() == off) {
                peers.push(P::from_off(off));
            }
        }
        let mut taken = TakenLocks(self.dom, Vec::new());
        let raw = Raw { dom: self.dom };
        for &peer in &peers {
            let p = self.rec(peer);
            let r = p.lock.acquire();
            taken.1.push((peer, r));
            if r == libc::EOWNERDEAD && p.holder.get() == HELD_SECTION {
                // The transaction died before it took this lock, and a
                // section died holding it meanwhile.
                crate::rebuild::rebuild(&raw, peer);
            }
        }
        let intents = self.undo_to(0);
        // The dirty marks are not this transaction's to undo: written in
        // place, and the wake-ups they owe counted now (a later abort of
        // this transaction must not lose them).
        let mut owed = Vec::new();
        for &(peer, serial) in &intents {
            if crate::peer::lookup_serial(self, serial) == Some(peer) {
                owed.push((peer, doorbell::dirty(&raw, peer)));
            }
        }
        doorbell::seal(self, &owed, &mut self.tickets.borrow_mut());
        for (peer, r) in core::mem::take(&mut taken.1) {
            let p = self.rec(peer);
            if r == 0 || r == libc::EOWNERDEAD {
                p.holder.raw_set(HELD_NONE);
                p.await_txn.raw_set(0);
                if r == libc::EOWNERDEAD {
                    p.lock.consistent();
                }
                p.lock.unlock();
            }
        }
        self.set_log_len(0);
    }

    /// Rule 7: peers named by intents become dirty and are rung.
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
    /// runs post-commit removals and punches, and releases the locks.
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
        // Records first: the chunks they live in may be given back too.
        frees.sort_by_key(|f| !matches!(f, Free::Record(..)));
        for f in frees.drain(..) {
            match f {
                Free::Block(off, size) => crate::alloc::free_now(&self, off, size),
                Free::Handle(h) => crate::alloc::push_free_handle(&self, h),
                Free::Peer(p) => crate::alloc::push_free_peer(&self, p),
                Free::Chunk(c) => crate::alloc::push_free_chunk(&self, c),
                Free::Record(peer, r) => crate::arena::put_back(&self, peer, r),
            }
        }
        *self.frees.borrow_mut() = frees;
        let fail = self.ops.borrow().iter().find_map(|o| if let Op::Fail(e) = o { Some(*e) } else { None });
        if let Some(e) = fail {
            self.abort_inner();
            return Err(e);
        }
        self.check_heap_if_debugging("a commit");
        // The rings the commit owes are counted before it becomes final
        // (rule 8): a death from here on leaves them owed, not lost.
        self.seal_visible();
        crate::crash::point("commit-before");
        self.set_log_len(0);
        crate::crash::point("commit-after");
        let mut post = core::mem::take(&mut *self.post.borrow_mut());
        for op in post.drain(..) {
            let _ = doorbell::execute(&self, op);
        }
        *self.post.borrow_mut() = post;
        let later = core::mem::take(&mut *self.later.borrow_mut());
        for what in later.iter() {
            crate::pool::run_later(&self, *what);
        }
        *self.later.borrow_mut() = later;
        // Fields written by after-commit work (only hints whose either
        // value is safe, such as a gap's punch mark) form a second, smaller
        // transaction: committed here, rolled back if we die first.
        self.set_log_len(0);
        self.finish_lock();
        Ok(())
    }

    /// Turns the wake-ups noted so far into tickets (rule 8).
    fn seal_visible(&mut self) {
        let mut visible = core::mem::take(self.visible.get_mut());
        if !visible.is_empty() {
            let mut tickets = core::mem::take(self.tickets.get_mut());
            doorbell::seal(self, &visible, &mut tickets);
            *self.tickets.get_mut() = tickets;
        }
        visible.clear();
        *self.visible.get_mut() = visible;
    }

    /// Releases the locks, then makes the wake-ups the transaction owes
    /// (rule 8), and hands the work lists back for reuse.
    fn finish_lock(&mut self) {
        self.seal_visible();
        let tickets = core::mem::take(self.tickets.get_mut());
        self.finished = true;
        for &peer in self.held.borrow().iter().rev() {
            self.rec(peer).lock.unlock();
        }
        self.dom.unlock();
        if !tickets.is_empty() {
            doorbell::entries_visible(self.dom, &tickets);
        }
        return_lists(Lists {
            frees: core::mem::take(self.frees.get_mut()),
            ops: core::mem::take(self.ops.get_mut()),
            post: core::mem::take(self.post.get_mut()),
            later: core::mem::take(self.later.get_mut()),
            held: core::mem::take(self.held.get_mut()),
            visible: core::mem::take(self.visible.get_mut()),
            tickets,
        });
    }

    /// Undoes the whole transaction and releases the locks.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if self.inspect_only {
            self.set_log_len(self.inspect_base);
            self.finish_lock();
            return;
        }
        let intents = self.undo_to(0);
        self.check_heap_if_debugging("an abort");
        self.frees.borrow_mut().clear();
        self.ops.borrow_mut().clear();
        self.post.borrow_mut().clear();
        self.later.borrow_mut().clear();
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
            if let Err(e) = crate::table::check_ids(self) {
                panic!("ID table damaged by {stage}: {e}");
            }
            if let Err(e) = crate::object::check_graph(self) {
                panic!("object graph damaged by {stage}: {e}");
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

/// The peer locks a recovery took: released if it panics (the domain is
/// then marked damaged, and nobody may be left waiting for them).
struct TakenLocks<'d>(&'d Domain, Vec<(P<PeerRec>, libc::c_int)>);

impl Drop for TakenLocks<'_> {
    fn drop(&mut self) {
        for &(peer, r) in self.1.iter().rev() {
            if let (Some(p), 0 | libc::EOWNERDEAD) = (self.0.seg.try_rec(peer), r) {
                if r == libc::EOWNERDEAD {
                    p.lock.consistent();
                }
                p.lock.unlock();
            }
        }
    }
}

impl Store for Txn<'_> {
    fn dom(&self) -> &Domain {
        self.dom
    }

    #[inline]
    fn set<T: Pod>(&self, cell: &Cell<T>, v: T) {
        Txn::set(self, cell, v)
    }

    #[inline]
    fn init<T: Pod>(&self, cell: &Cell<T>, v: T) {
        cell.raw_set(v)
    }

    #[inline]
    fn hold(&self, peer: P<PeerRec>) {
        Txn::hold(self, peer)
    }

    fn claim(&self, user: P<UserRec>, res: usize, delta: i64) {
        Txn::claim(self, user, res, delta)
    }

    fn note_visible(&self, peer: P<PeerRec>, what: Visible) {
        Txn::note_visible(self, peer, what)
    }

    fn later(&self, what: Later) {
        self.later.borrow_mut().push(what);
    }

    fn has_later(&self, what: &Later) -> bool {
        self.later.borrow().contains(what)
    }

    fn intent(&self, peer: P<PeerRec>, what: Intent) -> Result<()> {
        Txn::intent(self, peer, what)
    }

    fn free_record(&self, peer: P<PeerRec>, r: P<Msg>)
    where
        Self: Sized,
    {
        self.defer_free(Free::Record(peer, r));
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.finished {
        } else if std::thread::panicking() {
            if self.inspect_only {
                self.finished = true;
                self.set_log_len(self.inspect_base);
                self.release_held();
                self.dom.unlock();
            } else if crate::fault::take_roll_back() {
                self.roll_back_out_of_log();
            } else {
                self.quarantine();
            }
        } else {
            self.abort_inner();
        }
    }
}
