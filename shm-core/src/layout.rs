//! The records that live in the shared domain segment, and the segment's
//! fixed geometry.
//!
//! Every record is `#[repr(C)]` and made of [`Cell`]s (written only through
//! a transaction) and a few atomics (read without the lock). Records refer
//! to each other with [`P`] offsets. Which module owns which fields is
//! noted on each record.

use crate::shm::{Atomic32, Atomic64, Cell, P};
use crate::sync::RobustMutex;

/// Segment magic ("bus1-shm").
pub const MAGIC: u64 = 0x6275_7331_2d73_686d;
/// Bumped whenever a record layout changes.
pub const VERSION: u64 = 4;

/// Virtual size of the domain segment (a sparse file; only touched pages
/// use memory).
pub const SEG_SIZE: u64 = 8 << 30;
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
/// Length of the bus's own mapping of every pool: the largest pool, so
/// that a pool that grows needs no new mapping anywhere (only its file
/// grows; until then the mapping's pages beyond the file are never
/// touched).
pub const POOL_MAP_LEN: u64 = POOL_SIZE_FINAL;

/// The header at offset 0. Owned by `txn` (lock, log), `alloc` (heap),
/// `table` (hash table root) and `domain` (global counters).
#[repr(C, align(64))]
pub struct Header {
    pub magic: Atomic64,
    pub version: Cell<u64>,
    /// The domain lock (`txn`).
    pub mutex: RobustMutex,
    /// Number of valid undo entries of the transaction in progress.
    pub log_len: Atomic64,
    /// How often a dead holder's transaction was rolled back (statistics).
    pub recoveries: Cell<u64>,

    pub heap_top: Cell<u64>,
    pub heap_reserved: Cell<u64>,
    pub free_heads: [Cell<u64>; NCLASSES],
    pub live_blocks: Cell<u64>,
    pub live_bytes: Cell<u64>,

    pub table: Cell<u64>,
    pub table_cap: Cell<u64>,
    pub table_used: Cell<u64>,
    pub table_tombs: Cell<u64>,

    /// The global transaction counter `G` (docs/reference.md §7.9).
    pub clock: Cell<u64>,
    pub next_serial: Cell<u64>,
    pub next_nonce: Cell<u64>,
    pub peers: Cell<P<PeerRec>>,
    pub n_peers: Cell<u64>,
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
    /// Nonzero once the bus found the segment inconsistent: the pid of the
    /// process that found it. Every later lock is refused (`fault`). Set
    /// without the undo log, so that no rollback takes it back.
    pub damaged: Atomic64,
    /// What was found, as UTF-8 text padded with NULs.
    pub damage_note: [Atomic64; DAMAGE_NOTE_WORDS],
}

/// Words of [`Header::damage_note`].
pub const DAMAGE_NOTE_WORDS: usize = 24;

/// Per-UID accounting (docs/reference.md §6.1). Owned by `quota`.
#[repr(C)]
pub struct UserRec {
    pub uid: Cell<u64>,
    /// Peers and charges that keep this record alive.
    pub refs: Cell<u64>,
    pub max: [Cell<i64>; NRES],
    pub rem: [Cell<i64>; NRES],
    /// Fair-share records kept on this user (freed with it).
    pub shares: Cell<P<ShareRec>>,
}

/// What one sending user has charged on one receiving user or peer (the
/// fair-share rule, docs/reference.md §A.3). Owned by `quota`.
#[repr(C)]
pub struct ShareRec {
    pub used: [Cell<i64>; NRES],
    pub key1: Cell<u64>,
    pub key2: Cell<u64>,
    /// Next record kept on the same receiving user or peer. Records stay
    /// while their receiver lives, so that a busy sender does not create
    /// and free one per message.
    pub next: Cell<P<ShareRec>>,
}

pub const PEER_MAGIC: u64 = 0x7065_6572_b051_a11e;
pub const PEER_CONNECTED: u32 = 1;
pub const PEER_DISCONNECTED: u32 = 2;

/// A peer. Owned by `peer`; queue fields by `queue`, pool fields by `pool`,
/// ABI fields by `abi`, bell fields by `doorbell`.
#[repr(C)]
pub struct PeerRec {
    /// [`PEER_MAGIC`] while the record is a live peer (cleared when freed),
    /// so that a process can check a cached record offset without a
    /// table lookup.
    pub magic: Cell<u64>,
    pub state: Cell<u32>,
    /// O_ACCMODE of the open() that created it.
    pub access: Cell<u32>,
    pub serial: Cell<u64>,
    pub uid: Cell<u32>,
    pub gid: Cell<u32>,
    pub user: Cell<P<UserRec>>,
    pub flags: Cell<u64>,
    pub max: [Cell<i64>; NRES],
    pub rem: [Cell<i64>; NRES],
    pub id_counter: Cell<u64>,

    pub q_head: Cell<P<Entry>>,
    pub q_tail: Cell<P<Entry>>,
    pub q_len: Cell<u64>,
    /// Queued DATA entries that carry file descriptors.
    pub q_fd_msgs: Cell<u64>,
    pub flush: Cell<u64>,
    pub seed: Cell<P<Entry>>,

    pub handles: Cell<P<Handle>>,
    pub nodes: Cell<P<Node>>,
    /// Fair-share records kept on this peer as a receiver.
    pub shares: Cell<P<ShareRec>>,

    /// Which ABI the peer speaks, and whether that was fixed at open
    /// (owned by `abi`).
    pub abi: Cell<u32>,
    pub abi_mode: Cell<u32>,

    /// Length of the pool ([`POOL_SIZE`] or [`POOL_SIZE_FINAL`]): its
    /// regions cover `0 .. pool_size - 1`, and its file is at least this
    /// long.
    pub pool_size: Cell<u64>,
    pub pool_regions: Cell<P<Region>>,
    pub pool_free: Cell<P<Region>>,
    pub pool_slices: Cell<u64>,
    /// End of the part of the pool that may have resident pages: the
    /// highest slice end since the pool's tail was last trimmed.
    pub pool_dirty_end: Cell<u64>,

    /// A plain readiness token is in the peer socket.
    pub bell_plain: Cell<u32>,
    /// A vault datagram is in the peer socket (behind the plain token, if
    /// both are there).
    pub bell_vault: Cell<u32>,
    /// The socket may hold datagrams the mirror does not know about.
    pub bell_dirty: Cell<u32>,
    /// Bytes of slices beyond the pool's kept start freed since the last
    /// sweep of its free regions (see `pool`).
    pub pool_freed: Cell<u32>,
    pub vault_gen: Cell<u64>,
    /// Index of the peer's bell (its wake-up record) in the bell table.
    pub bell: Cell<u64>,

    pub pidns: Cell<u64>,
    pub userns: Cell<u64>,
    pub next: Cell<P<PeerRec>>,
    pub prev: Cell<P<PeerRec>>,
}

/// A node. Owned by `object`.
#[repr(C)]
pub struct Node {
    pub owner: Cell<P<PeerRec>>,
    pub owner_handle: Cell<P<Handle>>,
    pub destroyed: Cell<u32>,
    pub released: Cell<u32>,
    pub destroy_stamp: Cell<u64>,
    /// docs/reference.md §3.2: user references except the owner's pin, plus one
    /// per payload entry of a queued message carrying the node.
    pub strong: Cell<u64>,
    /// The pending NODE_RELEASE entry, if any.
    pub release_entry: Cell<P<Entry>>,
    /// All handles of the node (the owner's included), via `Handle::node_*`.
    pub handles: Cell<P<Handle>>,
    /// Handle objects plus entries that point at this node.
    pub refs: Cell<u64>,
    pub owner_next: Cell<P<Node>>,
    pub owner_prev: Cell<P<Node>>,
    pub in_owner_list: Cell<u32>,
    pub _pad: Cell<u32>,
}

/// A handle: one peer's reference to one node. Owned by `object`.
#[repr(C)]
pub struct Handle {
    pub holder: Cell<P<PeerRec>>,
    pub node: Cell<P<Node>>,
    pub id: Cell<u64>,
    pub has_id: Cell<u32>,
    pub _pad: Cell<u32>,
    pub user_refs: Cell<u64>,
    /// Payload entries of staged/queued messages to the holder that carry
    /// this handle (docs/reference.md §3.2 "attached").
    pub inflight: Cell<u64>,
    /// Queue entries that point at this object (payload, destination,
    /// notification subject), plus one while user_refs > 0.
    pub refs: Cell<u64>,
    pub node_next: Cell<P<Handle>>,
    pub node_prev: Cell<P<Handle>>,
    pub holder_next: Cell<P<Handle>>,
    pub holder_prev: Cell<P<Handle>>,
}

/// A peer's wake-up record, read and written without the domain lock (the
/// wake-up rules in `txn`). Owned by `doorbell` (counters, tokens) and
/// `waiters` (the sleeper map).
#[repr(C, align(64))]
pub struct BellRec {
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
    /// Plain tokens committed to be sent into the peer socket ...
    pub tok_sent: Atomic64,
    /// ... the highest of them sent (as `rung` for `owed`) ...
    pub tok_done: Atomic64,
    /// ... and how many were taken out of it again (see `doorbell`).
    pub tok_taken: Atomic64,
    /// Bit i set if word i of `sleepers` may be non-zero (only ever set).
    pub sleep_summary: Atomic64,
    /// One bit per waiter slot armed on this peer.
    pub sleepers: [Atomic64; SLOT_WORDS],
    /// Epoll registrations of the peer, a list through `EpollReg::next`
    /// (under the lock).
    pub regs: Cell<u64>,
    pub n_regs: Cell<u64>,
}

const _: () = assert!(core::mem::size_of::<BellRec>() <= 256);

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

/// A queue entry: a message or a notification. Owned by `queue` (links),
/// `message` (DATA payload) and `object` (notifications).
#[repr(C)]
pub struct Entry {
    pub kind: Cell<u32>,
    pub queued: Cell<u32>,
    pub stamp: Cell<u64>,
    pub peer: Cell<P<PeerRec>>,
    pub next: Cell<P<Entry>>,
    pub prev: Cell<P<Entry>>,
    /// DATA: the receiver's handle of the destination node (null for a
    /// seed); DESTROY: the holder's handle; RELEASE: the node (as offset).
    pub subject: Cell<u64>,
    pub uid: Cell<u32>,
    pub gid: Cell<u32>,
    pub pid: Cell<u32>,
    pub tid: Cell<u32>,
    pub slice: Cell<P<Region>>,
    pub n_bytes: Cell<u64>,
    pub n_handles: Cell<u64>,
    /// Array of `n_handles` P<Handle> (receiver-side handles).
    pub handles: Cell<u64>,
    pub n_fds: Cell<u64>,
    /// Identifies this message's fd carrier in the receiver's vault.
    pub nonce: Cell<u64>,
    /// Resources charged on the receiver by this message (for refunds).
    pub charged: [Cell<i64>; NRES],
    /// Fair-share records charged (sending user on receiving user / peer).
    pub share_user: Cell<P<ShareRec>>,
    pub share_peer: Cell<P<ShareRec>>,
}

/// A pool range: a slice or a free range. Owned by `pool`.
#[repr(C)]
pub struct Region {
    pub off: Cell<u64>,
    pub size: Cell<u64>,
    pub free: Cell<u32>,
    pub published: Cell<u32>,
    pub referenced: Cell<u32>,
    /// For a free region, which of its whole pages are known not to be
    /// resident: none (0), those beyond the pool's kept start (1, after a
    /// sweep of the message path), or all (2, after the periodic scan's
    /// sweep); see `pool`. Only a hint: a value too low costs a redundant
    /// punch, and every free that grows the region resets it to 0.
    pub clean: Cell<u32>,
    pub next: Cell<P<Region>>,
    pub prev: Cell<P<Region>>,
    pub fnext: Cell<P<Region>>,
    pub fprev: Cell<P<Region>>,
}

/// Hash table tags (see `table`).
pub const TAG_PEER: u64 = 1;
pub const TAG_HANDLE_ID: u64 = 2;
pub const TAG_NODE_HANDLE: u64 = 3;
pub const TAG_SLICE: u64 = 4;
pub const TAG_USER: u64 = 5;
pub const TAG_SHARE_USER: u64 = 6;
pub const TAG_SHARE_PEER: u64 = 7;
pub const TAG_NONCE: u64 = 8;

const _: () = assert!(core::mem::size_of::<Header>() <= LOG_OFF as usize);
const _: () = assert!(HEAP_OFF % WAKE_CHUNK == 0 && WAKE_OFF % WAKE_CHUNK == 0);
