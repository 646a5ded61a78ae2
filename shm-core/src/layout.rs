//! The records that live in the shared domain segment, and the segment's
//! fixed geometry.
//!
//! Every record is `#[repr(C)]` and made of [`Cell`]s and a few atomics.
//! Records refer to each other with [`P`] offsets. Which lock guards which
//! fields, and which fields are authoritative or derived, is written on
//! each record (the rules are at the top of `txn`).

use crate::shm::{Atomic32, Atomic64, Cell, P};
use crate::sync::RobustMutex;

/// Segment magic ("bus1-shm").
pub const MAGIC: u64 = 0x6275_7331_2d73_686d;
/// Bumped whenever a record layout changes.
pub const VERSION: u64 = 10;

/// Virtual size of the domain segment (a sparse file; only touched pages
/// use memory).
pub const SEG_SIZE: u64 = 8 << 30;
/// Start of the transaction slots.
pub const TX_SLOTS_OFF: u64 = 64 << 10;
/// Number of transaction slots: SENDs of the data path in progress at once.
pub const NSLOTS: usize = 1024;
/// Start of the undo log.
pub const LOG_OFF: u64 = 1 << 20;
/// Maximum number of undo entries of one transaction.
pub const LOG_CAP: u64 = 4 << 20;
/// Size of one undo entry.
pub const LOG_ENTRY: u64 = 24;
/// Start of the wake-up tables (`waiters`, `doorbell`, `epollreg`): fixed
/// arrays, never part of the heap, so that a process still holding an index
/// into one after the record it named went away touches at worst another
/// record of the same kind (an extra wake-up), never unrelated memory.
pub const WAKE_OFF: u64 = LOG_OFF + LOG_CAP * LOG_ENTRY;
/// Waiter slots: one per thread that sleeps on peers of the domain.
pub const WAIT_SLOTS: usize = 1024;
/// Words of a per-peer sleeper map (one bit per waiter slot).
pub const SLOT_WORDS: usize = WAIT_SLOTS / 64;
pub const SLOTS_OFF: u64 = WAKE_OFF;
/// Per-peer wake-up records ("bells"), one per live peer.
pub const MAX_BELLS: u64 = 1 << 16;
pub const BELLS_OFF: u64 = SLOTS_OFF + WAIT_SLOTS as u64 * 64;
/// Registrations of peer fds in epoll sets.
pub const MAX_REGS: u64 = 1 << 16;
pub const REGS_OFF: u64 = BELLS_OFF + MAX_BELLS * 256;
/// The wake-up tables are backed by file space in chunks of this size,
/// reserved when the first record of a chunk is handed out.
pub const WAKE_CHUNK: u64 = 64 << 10;
/// Start of the allocation heap.
pub const HEAP_OFF: u64 = REGS_OFF + MAX_REGS * REG_SIZE;
/// The heap is reserved (fallocated) in chunks of this size, so a write to
/// the segment never meets a missing page (SIGBUS on a full tmpfs).
pub const HEAP_CHUNK: u64 = 1 << 20;

/// Attempts at recovering a dead holder's work before the domain is
/// quarantined.
pub const RECOVERY_ATTEMPTS: u64 = 3;

/// Number of allocator size classes (powers of two from 16 bytes).
pub const NCLASSES: usize = 32;

/// Quota resources, in the order of the PEER_QUERY fields.
pub const RES_SLICES: usize = 0;
pub const RES_HANDLES: usize = 1;
pub const RES_BYTES: usize = 2;
pub const RES_FDS: usize = 3;
pub const NRES: usize = 4;

/// Module defaults (docs/reference.md §6.1).
pub const DEFAULT_MAX: [i64; NRES] = [16384, 65536, 16 << 20, 4096];

/// Pool geometry: a pool file is 2^29 bytes (512 MiB), of which 2^29 - 1
/// can be allocated, for a peer that speaks the RFC v1 ABI or has not yet
/// shown which ABI it speaks ...
pub const POOL_SIZE: u64 = 1 << 29;
/// ... and 2^32 bytes (4 GiB) for a peer that speaks the final ABI
/// (`abi`). A pool only ever grows, from the first to the second.
pub const POOL_SIZE_FINAL: u64 = 1 << 32;
/// The longest of the bus's own mappings of a pool: the largest pool. A
/// mapping is as long as its pool's file was when it was made
/// (`shm::PoolMapping`).
pub const POOL_MAP_LEN: u64 = POOL_SIZE_FINAL;

/// The header at offset 0. Owned by `txn` (lock, log, recovery), `alloc`
/// (heap), `table` (hash table root) and `domain` (global counters). All
/// of it is object state, under the domain lock, except the atomics.
#[repr(C, align(64))]
pub struct Header {
    pub magic: Atomic64,
    pub version: Cell<u64>,
    /// The domain lock (`txn`).
    pub mutex: RobustMutex,
    /// Number of valid undo entries of the transaction in progress.
    pub log_len: Atomic64,
    /// How often a dead holder's work was rolled back or forward
    /// (statistics).
    pub recoveries: Atomic64,
    /// Recoveries begun and not finished: a recoverer that died (killed,
    /// or aborted by a panic) leaves this raised for the next one.
    pub recovering: Atomic64,
    /// Set when a dead lock holder was met: its transaction slot may hold
    /// prepared records too, which the next data-path call of any process
    /// recovers (`slot::reap_if_death_seen`).
    pub death_seen: Atomic64,
    /// One bit per transaction slot in use (so that a look for dead
    /// senders touches only those).
    pub busy_slots: [Atomic64; NSLOTS / 64],

    pub heap_top: Cell<u64>,
    pub heap_reserved: Cell<u64>,
    pub free_heads: [Cell<u64>; NCLASSES],
    pub live_blocks: Cell<u64>,
    pub live_bytes: Cell<u64>,
    /// Blocks (and bytes) of the heap kept on the free lists of records
    /// that never go back to it (`free_peers` etc.): allocated, not live.
    pub pooled_blocks: Cell<u64>,
    pub pooled_bytes: Cell<u64>,

    pub table: Cell<u64>,
    pub table_cap: Cell<u64>,
    pub table_used: Cell<u64>,

    pub next_serial: Cell<u64>,
    pub next_nonce: Cell<u64>,
    /// Tags of transactions committed under the domain lock.
    pub next_tag: Cell<u64>,
    pub peers: Cell<P<PeerRec>>,
    pub n_peers: Cell<u64>,
    /// Peer records that are free. Peer, handle and arena-chunk memory is
    /// never given back to the heap: the data path reads such records
    /// without the domain lock, so they must stay records of their kind.
    pub free_peers: Cell<P<PeerRec>>,
    pub free_handles: Cell<P<Handle>>,
    pub free_chunks: Cell<P<Chunk>>,
    /// Live handles whose holder was torn down while records in its arena
    /// still pointed at them (linked by `holder_next`/`holder_prev`; a live
    /// handle has no holder exactly while it is on this list). Freed by a
    /// transaction once nothing refers to them (`object::collect_orphans`).
    pub orphans: Cell<P<Handle>>,
    /// Monotonic time (ns) of the last liveness scan; claimed with CAS so
    /// that one process scans per period.
    pub scan_lease: Atomic64,
    /// Monotonic time (ns) of the last wake-up tick (late rings, rings owed
    /// by dead or stopped senders, waiter slots of dead processes), claimed
    /// like `scan_lease`.
    pub bell_lease: Atomic64,
    /// Non-zero once a process attached with `BUS1_WAKE=exact`: from then
    /// on every sender keeps the kernel-visible token of the peer socket
    /// exact (see `doorbell`).
    pub wake_exact: Atomic64,
    /// Waiter slots in use (`waiters`), one bit each; claimed with CAS.
    pub slots_used: [Atomic64; SLOT_WORDS],
    /// Bells and epoll registrations in use, one bit each (under the lock).
    pub bells_used: [Cell<u64>; (MAX_BELLS / 64) as usize],
    pub regs_used: [Cell<u64>; (MAX_REGS / 64) as usize],
    /// Chunks of the wake-up tables backed by file space, one bit each.
    pub wake_reserved: [Cell<u64>; ((HEAP_OFF - WAKE_OFF) / WAKE_CHUNK).div_ceil(64) as usize],
    /// Nonzero once the bus found the segment inconsistent, or a recovery
    /// failed [`RECOVERY_ATTEMPTS`] times (its state cannot be trusted):
    /// the pid of the process that found it. Every later lock is refused
    /// (`fault`). Set without the undo log, so that no rollback takes it
    /// back.
    pub damaged: Atomic64,
    /// What was found, as UTF-8 text padded with NULs.
    pub damage_note: [Atomic64; DAMAGE_NOTE_WORDS],
}

/// Words of [`Header::damage_note`].
pub const DAMAGE_NOTE_WORDS: usize = 24;

/// Per-UID accounting. Owned by `quota`. `uid`, `refs` and `max` are
/// object state; `claimed` is updated with atomics by the peers of the
/// user (see `quota`).
#[repr(C)]
pub struct UserRec {
    pub uid: Cell<u64>,
    /// Peers that keep this record alive.
    pub refs: Cell<u64>,
    pub max: [Cell<i64>; NRES],
    /// The sum of the reservations of the user's peers: an upper bound of
    /// what they use, never below it.
    pub claimed: [Atomic64; NRES],
}

/// Fair-share usage of one sending user on one receiving peer: the amounts
/// of the messages from that user queued or staged to the peer. Derived
/// message state of the receiving peer.
#[repr(C)]
pub struct Share {
    /// Sending UID plus one; 0 = unused.
    pub uid: Cell<u64>,
    pub used: [Cell<i64>; NRES],
}

/// Shares kept in the peer record itself; more senders' shares go to a
/// list of [`ShareBlock`]s.
pub const INLINE_SHARES: usize = 2;
/// Shares per overflow block.
pub const BLOCK_SHARES: usize = 7;

/// Overflow storage of shares (allocated under the domain lock).
#[repr(C)]
pub struct ShareBlock {
    pub next: Cell<P<ShareBlock>>,
    pub _pad: [Cell<u64>; 4],
    pub shares: [Share; BLOCK_SHARES],
}

pub const PEER_MAGIC: u64 = 0x7065_6572_b051_a11e;
pub const PEER_CONNECTED: u32 = 1;
pub const PEER_DISCONNECTED: u32 = 2;
/// Torn down: no fd is left. The record stays until the records that
/// in-flight transactions still hold in its arena are gone.
pub const PEER_DEAD: u32 = 3;

/// Who held a peer lock last (`PeerRec::holder`).
pub const HELD_NONE: u64 = 0;
/// A data-path section: its work is recovered by rebuilding.
pub const HELD_SECTION: u64 = 1;
/// A transaction under the domain lock: its work is in the undo log.
pub const HELD_TXN: u64 = 2;

/// Number of free-space bins of a pool (power-of-two size classes).
pub const NBINS: usize = 30;
/// Pool pages covered by one leaf of the slice directory (2 MiB, a 4 KiB
/// leaf).
pub const DIR_LEAF: usize = 512;
/// Bytes of pool one leaf covers.
pub const DIR_LEAF_SPAN: u64 = DIR_LEAF as u64 * 4096;

/// A peer. Peer records are never given back to the heap (see
/// [`Header::free_peers`]).
///
/// Fields marked (O) are object state: written by transactions that also
/// hold the peer's lock, readable under either lock. The others are
/// message state under the peer's lock (`lock`): authoritative fields are
/// marked (A), everything else is derived and recomputed by `rebuild`
/// after a section died.
///
/// The order is by cache line, for the data path, where a sender and the
/// receiver take turns on the record from two CPUs: the fields a SEND,
/// RECV or SLICE_RELEASE only reads (set at open or by rare transactions)
/// fill the first three lines, the lock has a line of its own, and the
/// fields every message writes are packed into the four lines after it,
/// so that a message moves as few lines between the CPUs as possible.
/// Everything else comes after them.
#[repr(C, align(64))]
pub struct PeerRec {
    // ---- read on the data path, rarely written (lines 0 to 2)
    /// (O) [`PEER_MAGIC`] while the record is a live peer (cleared at
    /// teardown), so that a process can check a cached record offset.
    pub magic: Cell<u64>,
    /// (O)
    pub state: Cell<u32>,
    /// (O) O_ACCMODE of the open() that created it.
    pub access: Cell<u32>,
    /// (O)
    pub serial: Cell<u64>,
    /// (O)
    pub user: Cell<P<UserRec>>,
    /// (O)
    pub max: [Cell<i64>; NRES],

    /// (O)
    pub uid: Cell<u32>,
    /// (O)
    pub gid: Cell<u32>,
    /// (O) Which ABI the peer speaks, and whether that was fixed at open
    /// (owned by `abi`; the latch writes it holding the peer's lock too).
    pub abi: Cell<u32>,
    /// (O)
    pub abi_mode: Cell<u32>,
    /// (O)
    pub pidns: Cell<u64>,
    /// (O)
    pub userns: Cell<u64>,
    /// (O)
    pub seed: Cell<P<Msg>>,
    /// (O) Index of the peer's bell (its wake-up record) in the bell table.
    pub bell: Cell<u64>,
    /// (O) The slice directory's top level and the overflow blocks of
    /// shares (allocated under the domain lock).
    pub dir: Cell<u64>,
    /// (O)
    pub share_blocks: Cell<P<ShareBlock>>,

    /// (O) The pool's first record: a slice of size 0 at offset 0 whose
    /// gap is the free space before the first real slice.
    pub sentinel: Cell<P<Msg>>,
    /// (A) Length of the pool ([`POOL_SIZE`] or [`POOL_SIZE_FINAL`]):
    /// slices lie in `0 .. pool_size - 1`, and its file is at least this
    /// long (a transaction grows the file first, then this).
    pub pool_size: Cell<u64>,
    /// (O)(A) Bumped whenever an ID leaves the table, before the change is
    /// committed (never rolled back: a bump too many only costs a lookup
    /// under the lock): a thread's cached resolution of a SEND
    /// destination holds while it stays the same (`send`).
    pub id_removals: Atomic64,
    /// (A) Stamp of the last flushing reset.
    pub flush: Cell<u64>,
    /// Set when a transaction died holding the lock: nobody may touch the
    /// message state until the domain lock's recovery has undone it.
    pub await_txn: Cell<u32>,
    /// Rebuilds begun and not finished (see `rebuild`).
    pub rebuilding: Cell<u32>,
    /// A section left a handle or node unreferenced: the next transaction
    /// on this peer frees it (`gc`).
    pub gc_pending: Cell<u32>,
    /// The low half of the queue's clock when the periodic scan last
    /// looked at the pool: a clock that moved since means messages came,
    /// and the scan leaves the pool's free pages for its next round (a
    /// stale value costs one round's delay or a redundant punch; kept
    /// across rebuilds).
    pub swept_at: Cell<u32>,
    /// (O) The arena's chunks (allocated under the domain lock).
    pub chunks: Cell<P<Chunk>>,
    /// (O)
    pub n_chunks: Cell<u64>,

    // ---- the peer lock (line 3)
    /// The peer lock.
    pub lock: RobustMutex,

    // ---- written by every message (lines 4 to 7)
    /// [`HELD_SECTION`] or [`HELD_TXN`]: what kind of holder took the lock
    /// last (written right after taking it).
    pub holder: Cell<u64>,
    /// The release ring (`release`): SLICE_RELEASE calls that did not take
    /// the peer lock append to `rel_entries`, and every holder of the peer
    /// lock applies them when it takes it. Entries applied so far (message
    /// state of the peer, written under its lock) ...
    pub rel_head: Cell<u64>,
    /// (A) ... and appended so far (by the holder of `rel_lock`). Next to
    /// the lock's bookkeeping, which every section writes anyway.
    pub rel_tail: Atomic64,
    /// (A) Releases in progress through the ring (raised and lowered under
    /// `rel_lock`) ...
    pub rel_ring_busy: Atomic64,
    /// (A) ... and the locked way without `rel_lock` (under the peer
    /// lock): each side looks at the other's count after raising its own,
    /// and backs off if it is not zero (`release`).
    pub rel_locked_busy: Atomic64,
    /// (A) The queue's clock: even, only increased (atomic max).
    pub clock: Atomic64,
    pub q_head: Cell<P<Msg>>,
    pub q_tail: Cell<P<Msg>>,

    pub q_len: Cell<u64>,
    /// Records prepared by transaction slots, not queued yet.
    pub n_prepared: Cell<u64>,
    /// Queued DATA entries that carry file descriptors.
    pub q_fd_msgs: Cell<u64>,
    /// A plain readiness token is in the peer socket.
    pub bell_plain: Cell<u32>,
    /// A vault datagram is in the peer socket (behind the plain token, if
    /// both are there).
    pub bell_vault: Cell<u32>,
    /// The socket may hold datagrams the mirror does not know about.
    pub bell_dirty: Cell<u32>,
    /// Bytes of slices beyond the pool's kept start freed since the last
    /// sweep of its free space (see `pool`).
    pub pool_freed: Cell<u32>,
    /// Which free-space bins (`bins`) are not empty.
    pub bin_mask: Cell<u64>,
    /// The slice with the highest offset (its gap is the free tail).
    pub pool_last: Cell<P<Msg>>,
    pub pool_slices: Cell<u64>,

    /// Usage per resource (6.2's "max minus remaining").
    pub used: [Cell<i64>; NRES],
    /// (A) This peer's reservation in its user's `claimed`.
    pub resv: [Cell<i64>; NRES],

    /// End of the part of the pool that may have resident pages: the
    /// highest slice end since the pool's tail was last trimmed. A hint
    /// kept across rebuilds (a wrong value costs a redundant punch).
    pub pool_dirty_end: Cell<u64>,
    pub free_recs: Cell<P<Msg>>,
    pub n_free_recs: Cell<u64>,
    pub shares: [Share; INLINE_SHARES],

    // ---- the rest
    /// Free-space bins: gaps (the free space after a slice) by size class.
    pub bins: [Cell<P<Msg>>; NBINS],
    /// (O)
    pub flags: Cell<u64>,
    /// (O)
    pub id_counter: Cell<u64>,
    /// (O)
    pub handles: Cell<P<Handle>>,
    /// (O)
    pub nodes: Cell<P<Node>>,
    /// (O) The ID table: handle ID → handle (`ids`).
    pub ids: Cell<u64>,
    /// (O)
    pub ids_cap: Cell<u64>,
    /// (O)
    pub ids_used: Cell<u64>,
    /// (O)
    pub next: Cell<P<PeerRec>>,
    /// (O)
    pub prev: Cell<P<PeerRec>>,
    /// (O)
    pub free_next: Cell<P<PeerRec>>,
    /// (O)
    pub vault_gen: Cell<u64>,

    /// Serialises the SLICE_RELEASE calls of the peer (`release`); never
    /// taken while holding a peer lock (the lock order in `txn`).
    pub rel_lock: RobustMutex,
    /// (A) The release ring: [`RELEASE_RING`] pairs of (record, its
    /// incarnation `Msg::gen`).
    pub rel_entries: [[Atomic64; 2]; RELEASE_RING],
}

// The lines of the data path, as laid out above.
const _: () = assert!(core::mem::offset_of!(PeerRec, lock) == 3 * 64);
const _: () = assert!(core::mem::offset_of!(PeerRec, holder) == 4 * 64);
const _: () = assert!(core::mem::offset_of!(PeerRec, shares) + core::mem::size_of::<Share>() == 8 * 64);

/// Entries of a peer's release ring: releases not yet applied. A full ring
/// sends SLICE_RELEASE the locked way.
pub const RELEASE_RING: usize = 32;

/// A node. Owned by `object`. Object state, except `release_entry`,
/// which is derived message state of the owner.
#[repr(C)]
pub struct Node {
    pub owner: Cell<P<PeerRec>>,
    pub owner_handle: Cell<P<Handle>>,
    pub destroyed: Cell<u32>,
    pub released: Cell<u32>,
    pub destroy_stamp: Cell<u64>,
    /// docs/reference.md §3.2: user references except the owner's pin, plus
    /// one per payload entry of a queued message carrying the node.
    pub strong: Cell<u64>,
    /// The pending NODE_RELEASE entry, if any.
    pub release_entry: Cell<P<Msg>>,
    /// All handles of the node (the owner's included), via `Handle::node_*`.
    pub handles: Cell<P<Handle>>,
    /// Handle objects of this node.
    pub refs: Cell<u64>,
    pub owner_next: Cell<P<Node>>,
    pub owner_prev: Cell<P<Node>>,
    pub in_owner_list: Cell<u32>,
    pub _pad: Cell<u32>,
}

/// A handle: one peer's reference to one node. Owned by `object`. Object
/// state, except `refs`, which is derived message state of the holder.
/// Handle records are never given back to the heap; `gen` changes each
/// time one is freed, so that the data path can tell a record it looked up
/// earlier is still the same handle.
#[repr(C)]
pub struct Handle {
    pub holder: Cell<P<PeerRec>>,
    pub node: Cell<P<Node>>,
    pub id: Cell<u64>,
    pub has_id: Cell<u32>,
    pub live: Cell<u32>,
    pub gen: Cell<u64>,
    pub user_refs: Cell<u64>,
    /// Payload entries of staged/queued messages to the holder that carry
    /// this handle (docs/reference.md §3.2 "attached").
    pub inflight: Cell<u64>,
    /// Records of the holder that point at this handle (payload slot, DATA
    /// destination, NODE_DESTROY subject).
    pub refs: Cell<u64>,
    pub node_next: Cell<P<Handle>>,
    pub node_prev: Cell<P<Handle>>,
    pub holder_next: Cell<P<Handle>>,
    pub holder_prev: Cell<P<Handle>>,
    /// An orphan's holder before its teardown (whose records alone can
    /// point at it), so that its count can be taken again from them
    /// (`object::recount_orphans`).
    pub former_holder: Cell<P<PeerRec>>,
}

/// A peer's wake-up record, read and written without the domain lock (the
/// wake-up rules in `txn`). Owned by `doorbell` (counters, tokens) and
/// `waiters` (the sleeper map).
#[repr(C, align(64))]
pub struct BellRec {
    // ---- the senders' line: written by every wake-up owed
    /// Bumped once per transaction that makes entries visible in the
    /// queue, and at disconnect, after the change is visible: the module's
    /// wake-ups, counted (edge-triggered epoll reports one edge per bump).
    pub seq: Atomic64,
    /// Wake-ups committed (bumped under the lock at commit) ...
    pub owed: Atomic64,
    /// ... and the highest of them made: one is owed while `rung < owed`
    /// (a later one made covers an earlier one, since it happens after
    /// both commits).
    pub rung: Atomic64,
    /// Bit i set if word i of `sleepers` may be non-zero (only ever set).
    pub sleep_summary: Atomic64,
    /// Epoll registrations of the peer, a list through `EpollReg::next`
    /// (under the lock).
    pub regs: Cell<u64>,
    pub n_regs: Cell<u64>,
    /// Keeps the token counters off the line above: the receiver reads
    /// them at every RECV, and the senders write that line at every SEND.
    pub _pad: [Cell<u64>; 2],

    // ---- the tokens' line: written only when a token goes in or out
    /// Plain tokens committed to be sent into the peer socket ...
    pub tok_sent: Atomic64,
    /// ... the highest of them sent (as `rung` for `owed`) ...
    pub tok_done: Atomic64,
    /// ... and how many were taken out of it again (see `doorbell`).
    pub tok_taken: Atomic64,
    /// One bit per waiter slot armed on this peer.
    pub sleepers: [Atomic64; SLOT_WORDS],
}

const _: () = assert!(core::mem::size_of::<BellRec>() <= 256);
const _: () = assert!(core::mem::offset_of!(BellRec, tok_sent) == 64);

/// A waiter slot: one thread of one process that may sleep on peers of the
/// domain. Owned by `waiters`.
#[repr(C, align(64))]
pub struct WaitSlot {
    /// pid << 32 | the process image's incarnation; 0 while free.
    pub owner: Atomic64,
    /// Bumped by every ring; the futex word of a futex sleeper.
    pub word: Atomic32,
    /// How a ring reaches the sleeper: `waiters::HOW_*`.
    pub how: Atomic32,
    /// The id of the thread's wake socket (`wake.<id>`), 0 if none.
    pub wake_id: Atomic64,
}

const _: () = assert!(core::mem::size_of::<WaitSlot>() == 64);

/// A peer fd registered in an epoll set: what the set asked for, and the
/// edge and one-shot state the kernel would keep in its epoll item. Owned
/// by `epollreg`.
#[repr(C, align(128))]
pub struct EpollReg {
    /// Bumped at every allocation; tags name (index, generation).
    pub gen: Atomic64,
    /// The peer's record, bell index and serial (serial 0: the entry is
    /// free).
    pub peer: Atomic64,
    pub bell: Atomic64,
    pub serial: Atomic64,
    /// The inode of the peer socket the item was made for (the kernel
    /// shows it in the set's fdinfo): how a process that did not build the
    /// set tells the registration is the one its item names.
    pub sock_ino: Atomic64,
    /// The epoll events and flags asked for, and the data to report.
    pub events: Atomic64,
    pub data: Atomic64,
    /// Edge-triggered: the bell's `seq` last consumed.
    pub seen: Atomic64,
    /// One-shot: 1 while armed.
    pub armed: Atomic64,
    /// Next registration of the same peer (index + 1; under the lock).
    pub next: Cell<u64>,
}

/// Size of a registration record in its table.
pub const REG_SIZE: u64 = 128;
const _: () = assert!(core::mem::size_of::<EpollReg>() <= REG_SIZE as usize);

pub const ENTRY_DATA: u32 = 1;
pub const ENTRY_DESTROY: u32 = 2;
pub const ENTRY_RELEASE: u32 = 3;
/// The first record of a pool (see [`PeerRec::sentinel`]).
pub const ENTRY_SENTINEL: u32 = 4;

/// `Msg::state` bits. A record with state 0 is free.
pub const MS_LIVE: u32 = 1;
/// It holds a slice (`off`, `size`).
pub const MS_SLICE: u32 = 2;
/// Counted in in-flight bytes, fds and shares (until dequeued).
pub const MS_INFLIGHT: u32 = 4;
/// Built by a transaction slot, not queued yet (`tx` names the slot).
pub const MS_PREPARED: u32 = 8;
/// In the queue: staged while its stamp is odd, committed once even.
pub const MS_QUEUED: u32 = 16;
/// Its slice is published to userspace.
pub const MS_PUBLISHED: u32 = 32;
/// It is the peer's seed.
pub const MS_SEED: u32 = 64;
/// It references its subject (and its payload handles).
pub const MS_REFS: u32 = MS_PREPARED | MS_QUEUED | MS_SEED;

/// A message or notification, or the pool's sentinel: the record of an
/// entry and of its slice. Lives in the arena of the receiving peer and is
/// message state of that peer. Authoritative: `state` (the commit point of
/// every section), `kind`, `stamp`, `tag`, `index`, `tx`, the slice range,
/// `charged`, `sender_uid`, `subject` and the payload description. Derived:
/// the queue, address, gap and free-list links and `gap`.
#[repr(C, align(64))]
pub struct Msg {
    pub state: Cell<u32>,
    pub kind: Cell<u32>,
    /// Queue order: (stamp, tag, index). The stamp is odd while staged.
    pub stamp: Cell<u64>,
    pub tag: Cell<u64>,
    pub index: Cell<u32>,
    pub sender_uid: Cell<u32>,
    /// The peer whose arena holds the record (fixed for the record's life).
    pub peer: Cell<P<PeerRec>>,
    pub q_next: Cell<P<Msg>>,
    pub q_prev: Cell<P<Msg>>,

    pub off: Cell<u64>,
    pub size: Cell<u64>,
    /// Address order of the slices of the pool.
    pub a_next: Cell<P<Msg>>,
    pub a_prev: Cell<P<Msg>>,
    /// Free bytes after this slice, and its bin links.
    pub gap: Cell<u64>,
    pub g_next: Cell<P<Msg>>,
    pub g_prev: Cell<P<Msg>>,
    /// Which whole pages of the gap are known not to be resident (see
    /// `pool`); a hint.
    pub gap_clean: Cell<u32>,
    pub n_fds: Cell<u32>,

    /// DATA: the receiver's handle of the destination node (null for a
    /// seed); DESTROY: the holder's handle; RELEASE: the node (as offset).
    pub subject: Cell<u64>,
    pub uid: Cell<u32>,
    pub gid: Cell<u32>,
    pub pid: Cell<u32>,
    pub tid: Cell<u32>,
    pub n_bytes: Cell<u64>,
    pub n_handles: Cell<u64>,
    /// Array of `n_handles` P<Handle> (receiver-side handles; allocated
    /// under the domain lock).
    pub handles: Cell<u64>,
    /// Identifies this message's fd carrier in the receiver's vault.
    pub nonce: Cell<u64>,
    /// Resources charged on the receiver by this message.
    pub charged: [Cell<i64>; NRES],
    /// The tag of the transaction that built it.
    pub tx: Cell<u64>,
    pub free_next: Cell<P<Msg>>,
    /// The record's incarnation: bumped each time it is taken from its
    /// arena's free list (never reset), so that a release waiting in the
    /// ring applies to the message it was validated against and no later
    /// one.
    pub gen: Cell<u64>,
}

/// Records per arena chunk (the first slot holds the chunk header): a
/// chunk is 4 KiB.
pub const CHUNK_RECS: u64 = 15;

/// A block of records of one peer's arena: a [`Chunk`] header in the
/// first 256 bytes, then [`CHUNK_RECS`] records.
#[repr(C, align(64))]
pub struct Chunk {
    pub peer: Cell<P<PeerRec>>,
    pub next: Cell<P<Chunk>>,
    pub _pad: [Cell<u64>; 30],
}

/// Transaction slot phases (`TxSlot::state` low byte).
pub const TX_IDLE: u64 = 0;
pub const TX_PREPARING: u64 = 1;
pub const TX_STAGING: u64 = 2;
pub const TX_SEALED: u64 = 3;
pub const TX_SYNCED: u64 = 4;
pub const TX_DONE: u64 = 5;

/// Records a slot lists in itself; a larger multicast keeps the list in a
/// block of the heap that stays with the slot (`extra`).
pub const SLOT_INLINE: usize = 48;

/// A transaction slot of the data path (see `slot`).
#[repr(C, align(64))]
pub struct TxSlot {
    /// Held by the sender for the whole SEND.
    pub mutex: RobustMutex,
    /// (generation << 8) | phase; the generation counts the slot's
    /// transactions and makes their tags unique.
    pub state: Atomic64,
    /// The sending peer and its serial.
    pub origin: Cell<P<PeerRec>>,
    pub origin_serial: Cell<u64>,
    /// Number of records listed.
    pub count: Cell<u64>,
    /// Largest receiver clock seen while staging.
    pub seen: Atomic64,
    /// The commit stamp, once sealed (0 before).
    pub commit: Atomic64,
    /// Overflow list (heap block of `extra_cap` record offsets).
    pub extra: Cell<u64>,
    pub extra_cap: Cell<u64>,
    /// The transaction's records, sorted by (receiver, index) before
    /// staging.
    pub inline: [Cell<u64>; SLOT_INLINE],
}

/// Hash table tags (see `table`).
pub const TAG_PEER: u64 = 1;
pub const TAG_NODE_HANDLE: u64 = 3;
pub const TAG_USER: u64 = 5;
pub const TAG_NONCE: u64 = 8;

const _: () = assert!(core::mem::size_of::<Header>() <= TX_SLOTS_OFF as usize);
const _: () = assert!(TX_SLOTS_OFF + (NSLOTS * core::mem::size_of::<TxSlot>()) as u64 <= LOG_OFF);
const _: () = assert!(core::mem::size_of::<Msg>() == 256);
const _: () = assert!(core::mem::size_of::<Chunk>() == 256);
const _: () = assert!(core::mem::size_of::<TxSlot>() == 512);
const _: () = assert!(HEAP_OFF % WAKE_CHUNK == 0 && WAKE_OFF % WAKE_CHUNK == 0);
