//! The invariant checker: one walk over a whole domain segment that reports
//! everything that does not add up.
//!
//! It starts from the header (the peer list, the allocator's free lists,
//! the free lists of peer, handle and chunk records, the orphaned handles,
//! the hash table, the transaction slots) and follows every link to every
//! record, checking that each offset names a block of the right kind inside
//! the heap; that every list ends, is linked both ways where it should be,
//! and holds each record once; and that the blocks reached plus the free
//! lists account for the heap exactly.
//!
//! Per peer it checks the object state (handles held, nodes owned, the ID
//! table) and, holding the peer's lock, the message state the data path
//! keeps: that the derived fields equal what the authoritative ones add up
//! to, as `rebuild` would recompute them — the queue (exactly the records
//! marked queued, in (stamp, tag, index) order, a staged entry's stamp odd
//! and its transaction slot still busy, committed stamps even and not
//! ahead of the queue's clock), the pool (the slices in address order
//! without overlap, their gaps and free-space bins, inside the peer's pool
//! size), the arena's free list, the prepared count, usage, reservations
//! and fair shares, handle reference counts and pending releases. A peer
//! whose lock another holder has (a process stopped in a section) is
//! checked for its object state only. A torn-down peer kept for records
//! that dead or stopped senders still hold in its arena points at
//! orphaned handles, whose reference counts are then checked against
//! those records.
//!
//! It reads the segment only through checked accessors, so it never
//! panics or loops on a damaged segment, and writes nothing but the log
//! entries that name the peer locks it takes, which it takes back (it
//! holds the domain lock while walking, through `Domain::lock_to_inspect`,
//! which inspects a domain marked damaged as it is, taking no peer lock).

use crate::alloc;
use crate::arena;
use crate::domain::Domain;
use crate::errno::Errno;
use crate::fault::contain;
use crate::layout::*;
use crate::pool;
use crate::shm::{Segment, P};
use crate::txn::Txn;
use std::collections::{HashMap, HashSet};

/// At most this many lines are reported (then a count of the rest).
const MAX_LINES: usize = 200;

impl Domain {
    /// Walks the whole segment under the domain lock and returns one
    /// human-readable line per violated invariant; empty means
    /// consistent. A domain marked damaged is inspected as it is (its mark
    /// is the first line).
    pub fn check_invariants(&self) -> Vec<String> {
        // A dead holder's transaction is rolled back first, as by any
        // locker; if that finds the domain damaged, it is inspected as such.
        let mut r = self.try_check();
        if r == Err(Errno::EIO) && self.damage().is_some() {
            r = self.try_check();
        }
        r.unwrap_or_else(|e| vec![format!("cannot check the domain: {e}")])
    }

    fn try_check(&self) -> Result<Vec<String>, Errno> {
        contain(|| {
            let tx = self.lock_to_inspect()?;
            let out = Checker::new(&tx).run();
            tx.abort();
            Ok(out)
        })
    }
}

/// What one walk found out about a handle from the records pointing at it.
#[derive(Default)]
struct HandleSeen {
    holder_lists: u32,
    node_lists: u32,
    orphan_lists: u32,
    /// Records of torn-down peers that point at it (an orphan).
    records: u64,
}

#[derive(Default)]
struct NodeSeen {
    owner_lists: u32,
}

#[derive(Default)]
struct UserSeen {
    peers: u64,
    resv: [i64; NRES],
    /// Every peer of the user had its message state checked.
    complete: bool,
}

const EMPTY_KEY: u64 = 0;
const TABLE_SLOT: u64 = 3;
/// The tag of handle IDs in a peer's ID table (see `table`).
const TAG_ID: u64 = 2;

fn tag_name(tag: u64) -> &'static str {
    match tag {
        TAG_PEER => "PEER",
        TAG_NODE_HANDLE => "NODE_HANDLE",
        TAG_USER => "USER",
        TAG_NONCE => "NONCE",
        _ => "unknown",
    }
}

struct Checker<'t, 'd> {
    tx: &'t Txn<'d>,
    seg: &'d Segment,
    heap_top: u64,
    out: Vec<String>,
    more: usize,
    /// Reachable blocks: offset → (block size, kind).
    blocks: HashMap<u64, (u64, &'static str)>,
    /// Blocks on the allocator's free lists: offset → block size.
    free: HashMap<u64, u64>,
    /// What the domain's table must hold: (tag, owner, key) → value.
    expected: HashMap<(u64, u64, u64), u64>,
    handles: HashMap<u64, HandleSeen>,
    nodes: HashMap<u64, NodeSeen>,
    users: HashMap<u64, UserSeen>,
    /// Blocks kept on the free lists of peer, handle and chunk records.
    pooled: (u64, u64),
    /// The message state of some peer was not checked (its lock was
    /// held, or the domain is damaged): blocks only it reaches were not
    /// seen.
    partial: bool,
}

impl<'t, 'd> Checker<'t, 'd> {
    fn new(tx: &'t Txn<'d>) -> Self {
        Checker {
            tx,
            seg: &tx.domain().seg,
            heap_top: tx.hdr().heap_top.get(),
            out: Vec::new(),
            more: 0,
            blocks: HashMap::new(),
            free: HashMap::new(),
            expected: HashMap::new(),
            handles: HashMap::new(),
            nodes: HashMap::new(),
            users: HashMap::new(),
            pooled: (0, 0),
            partial: false,
        }
    }

    fn bad(&mut self, line: String) {
        if self.out.len() < MAX_LINES {
            self.out.push(line);
        } else {
            self.more += 1;
        }
    }

    fn run(mut self) -> Vec<String> {
        let damaged = self.tx.domain().is_damaged();
        self.header();
        self.free_lists();
        self.record_pools();
        self.orphans();
        self.peer_list(!damaged);
        self.slots();
        self.check_nodes();
        self.check_handles();
        self.check_users();
        self.check_heap_accounting();
        self.check_table();
        if self.more > 0 {
            let more = self.more;
            self.out.push(format!("... and {more} more"));
        }
        self.out
    }

    // ------------------------------------------------------------ access

    /// The record of type `T` at `off`, if `off` lies in the heap, is
    /// aligned and the record fits below the heap top.
    fn get<T: 'd>(&self, off: u64) -> Option<&'d T> {
        let end = off.checked_add(core::mem::size_of::<T>() as u64)?;
        if off < HEAP_OFF || end > self.heap_top || off % 8 != 0 {
            return None;
        }
        self.seg.try_rec(P::<T>::from_off(off))
    }

    /// Visits the block of a record of `size` bytes at `off` as `kind`:
    /// Some(record) the first time, None (after reporting why, unless it
    /// was merely seen before as the same kind) otherwise.
    fn visit<T: 'd>(&mut self, off: u64, kind: &'static str, what: &dyn Fn() -> String) -> Option<&'d T> {
        let size = alloc::block_size(core::mem::size_of::<T>() as u64);
        self.visit_block(off, size, kind, what)?;
        let r = self.get::<T>(off);
        if r.is_none() {
            self.bad(format!("{}: {kind} at {off:#x} is outside the heap", what()));
        }
        r
    }

    /// Records a reachable block; None if it was seen before or is bad.
    fn visit_block(&mut self, off: u64, size: u64, kind: &'static str, what: &dyn Fn() -> String) -> Option<()> {
        if let Some(&(_, k)) = self.blocks.get(&off) {
            if k != kind {
                self.bad(format!("{}: block {off:#x} is reachable both as {k} and as {kind}", what()));
            }
            return None;
        }
        let align = size.min(4096);
        if off < HEAP_OFF || align == 0 || off % align != 0 || !matches!(off.checked_add(size), Some(e) if e <= self.heap_top) {
            self.bad(format!("{}: {kind} at {off:#x} is not a heap block", what()));
            return None;
        }
        if self.free.contains_key(&off) {
            self.bad(format!("{}: {kind} at {off:#x} is on a free list (used after free)", what()));
        }
        self.blocks.insert(off, (size, kind));
        Some(())
    }

    /// The records of a list from `first` through `next`, at most as many
    /// as the heap can hold; a longer list is reported as a cycle.
    fn list<T: 'd>(&mut self, first: u64, next: impl Fn(&'d T) -> u64, what: &dyn Fn() -> String) -> Vec<u64> {
        let bound = self.tx.list_bound::<T>();
        let mut v = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = first;
        while cur != 0 {
            if !seen.insert(cur) || v.len() as u64 >= bound {
                self.bad(format!("{}: the list does not end (a cycle through {cur:#x})", what()));
                break;
            }
            let Some(r) = self.get::<T>(cur) else {
                self.bad(format!("{}: link {cur:#x} points outside the heap", what()));
                break;
            };
            v.push(cur);
            cur = next(r);
        }
        v
    }

    /// As [`list`](Self::list), for a list linked both ways: also checks
    /// that each record's `prev` link names the record before it.
    fn chain<T: 'd>(&mut self, first: u64, next: impl Fn(&'d T) -> u64, prev: impl Fn(&'d T) -> u64, what: &dyn Fn() -> String) -> Vec<u64> {
        let list = self.list::<T>(first, next, what);
        let mut before = 0;
        for &r in &list {
            let back = prev(self.get::<T>(r).expect("listed"));
            if back != before {
                self.bad(format!("{}: {r:#x} links back to {back:#x}, not to {before:#x}", what()));
            }
            before = r;
        }
        list
    }

    fn expect(&mut self, tag: u64, owner: u64, key: u64, val: u64, what: &dyn Fn() -> String) {
        if let Some(old) = self.expected.insert((tag, owner, key), val) {
            if old != val {
                self.bad(format!("{}: {} key {key:#x} of {owner:#x} belongs to both {old:#x} and {val:#x}", what(), tag_name(tag)));
            }
        }
    }

    // ------------------------------------------------------------ header

    fn header(&mut self) {
        let h = self.tx.hdr();
        if let Some((pid, note)) = self.tx.domain().damage() {
            self.bad(format!("the domain is marked damaged (by process {pid}): {note}"));
        }
        if h.version.get() != VERSION {
            self.bad(format!("header: layout version {} (expected {VERSION})", h.version.get()));
        }
        let log_len = h.log_len.load();
        if log_len != 0 {
            self.bad(format!("header: {log_len} undo log entries left behind"));
        }
        if h.recovering.load() != 0 {
            self.bad(format!("header: {} recoveries begun and not finished", h.recovering.load()));
        }
        if self.heap_top < HEAP_OFF || self.heap_top > SEG_SIZE {
            self.bad(format!("header: heap top {:#x} outside the segment", self.heap_top));
            self.heap_top = self.heap_top.clamp(HEAP_OFF, SEG_SIZE);
        }
        if h.heap_reserved.get() < self.heap_top {
            self.bad(format!("header: heap reserved up to {:#x}, below its top {:#x}", h.heap_reserved.get(), self.heap_top));
        }
        let cap = h.table_cap.get();
        if cap != 0 && !cap.is_power_of_two() {
            self.bad(format!("header: table capacity {cap} is not a power of two"));
        }
    }

    fn free_lists(&mut self) {
        let h = self.tx.hdr();
        for class in 0..NCLASSES {
            let size = alloc::class_size(class);
            let mut b = h.free_heads[class].get();
            let mut n = 0u64;
            while b != 0 {
                if b < HEAP_OFF || b % size.min(4096) != 0 || !matches!(b.checked_add(size), Some(e) if e <= self.heap_top) {
                    self.bad(format!("free list of {size}-byte blocks: bad block {b:#x} at position {n}"));
                    break;
                }
                if self.free.insert(b, size).is_some() || n > self.heap_top / size {
                    self.bad(format!("free list of {size}-byte blocks: does not end (a cycle through {b:#x})"));
                    break;
                }
                n += 1;
                b = self.seg.try_cells(b, 1).map_or(0, |c| c[0].get());
            }
        }
    }

    /// The records kept for reuse: free peers, handles and arena chunks.
    fn record_pools(&mut self) {
        let h = self.tx.hdr();
        let (mut blocks, mut bytes) = (0u64, 0u64);
        for p in self.list::<PeerRec>(h.free_peers.get().off(), |p| p.free_next.get().off(), &|| "free peer list".into()) {
            if let Some(pr) = self.visit::<PeerRec>(p, "peer", &|| "free peer list".into()) {
                if pr.magic.get() == PEER_MAGIC {
                    self.bad(format!("free peer list: peer {p:#x} still has its magic"));
                }
                blocks += 1;
                bytes += alloc::block_size(core::mem::size_of::<PeerRec>() as u64);
            }
        }
        for x in self.list::<Handle>(h.free_handles.get().off(), |x| x.holder_next.get().off(), &|| "free handle list".into()) {
            if let Some(hr) = self.visit::<Handle>(x, "handle", &|| "free handle list".into()) {
                if hr.live.get() != 0 {
                    self.bad(format!("free handle list: handle {x:#x} is live"));
                }
                blocks += 1;
                bytes += alloc::block_size(core::mem::size_of::<Handle>() as u64);
            }
        }
        for c in self.list::<Chunk>(h.free_chunks.get().off(), |c| c.next.get().off(), &|| "free chunk list".into()) {
            if self.visit_block(c, alloc::block_size(arena::CHUNK_BYTES), "arena chunk", &|| "free chunk list".into()).is_some() {
                blocks += 1;
                bytes += alloc::block_size(arena::CHUNK_BYTES);
            }
        }
        self.pooled = (blocks, bytes);
        if (h.pooled_blocks.get(), h.pooled_bytes.get()) != (blocks, bytes) {
            self.bad(format!(
                "header: {} pooled blocks of {} bytes, but the record free lists hold {blocks} of {bytes}",
                h.pooled_blocks.get(),
                h.pooled_bytes.get()
            ));
        }
    }

    /// Handles whose holder was torn down while records still named them.
    fn orphans(&mut self) {
        let first = self.tx.hdr().orphans.get().off();
        for x in self.chain::<Handle>(first, |x| x.holder_next.get().off(), |x| x.holder_prev.get().off(), &|| "orphaned handles".into()) {
            let Some(hr) = self.visit::<Handle>(x, "handle", &|| "orphaned handles".into()) else { continue };
            if hr.live.get() != 1 || !hr.holder.get().is_null() {
                self.bad(format!("orphaned handle {x:#x}: live {} holder {:#x}", hr.live.get(), hr.holder.get().off()));
            }
            self.handles.entry(x).or_default().orphan_lists += 1;
            self.nodes.entry(hr.node.get().off()).or_default();
        }
    }

    // ------------------------------------------------------------- peers

    fn peer_list(&mut self, lock_peers: bool) {
        let h = self.tx.hdr();
        let list = self.chain::<PeerRec>(h.peers.get().off(), |p| p.next.get().off(), |p| p.prev.get().off(), &|| "peer list".into());
        if list.len() as u64 != h.n_peers.get() {
            self.bad(format!("header: n_peers is {} but the peer list holds {}", h.n_peers.get(), list.len()));
        }
        for p in list {
            self.peer(p, lock_peers);
        }
    }

    fn peer(&mut self, p: u64, lock_peers: bool) {
        let Some(pr) = self.visit::<PeerRec>(p, "peer", &|| "peer list".into()) else { return };
        let serial = pr.serial.get();
        let name = format!("peer {p:#x} (serial {serial:#x})");
        let what = || name.clone();
        let state = pr.state.get();
        let dead = state == PEER_DEAD;
        if !dead && pr.magic.get() != PEER_MAGIC {
            self.bad(format!("{name}: bad magic {:#x}", pr.magic.get()));
        }
        if !matches!(state, PEER_CONNECTED | PEER_DISCONNECTED | PEER_DEAD) {
            self.bad(format!("{name}: bad state {state}"));
        }
        if serial >= self.tx.hdr().next_serial.get() {
            self.bad(format!("{name}: serial not below next_serial {:#x}", self.tx.hdr().next_serial.get()));
        }
        for (field, v) in [("bell_plain", pr.bell_plain.get()), ("bell_vault", pr.bell_vault.get()), ("bell_dirty", pr.bell_dirty.get())] {
            if v > 1 {
                self.bad(format!("{name}: {field} is {v}"));
            }
        }
        if !dead {
            self.expect(TAG_PEER, 0, serial, p, &what);
            let b = pr.bell.get();
            let used = self.tx.hdr().bells_used.get((b / 64) as usize).is_some_and(|w| w.get() >> (b % 64) & 1 == 1);
            if b >= MAX_BELLS || !used {
                self.bad(format!("{name}: bell {b} is not a bell in use"));
            }
        }
        let pending = pr.rel_tail.load().wrapping_sub(pr.rel_head.get());
        if pending > RELEASE_RING as u64 {
            self.bad(format!("{name}: release ring holds {pending} entries, more than {RELEASE_RING}"));
        }
        let size = pr.pool_size.get();
        if size != POOL_SIZE && size != POOL_SIZE_FINAL {
            self.bad(format!("{name}: pool size {size:#x} is neither of the two ABIs' sizes"));
        }
        let user = pr.user.get().off();
        self.user(user, &name);
        // handles held
        let held = self.chain::<Handle>(pr.handles.get().off(), |h| h.holder_next.get().off(), |h| h.holder_prev.get().off(), &|| {
            format!("{name}: handle list")
        });
        let mut user_refs = 0i64;
        let mut with_refs = Vec::new();
        for &h in &held {
            let Some(hr) = self.visit::<Handle>(h, "handle", &what) else { continue };
            if hr.holder.get().off() != p || hr.live.get() != 1 {
                self.bad(format!("{name}: handle {h:#x} in its list is held by {:#x} (live {})", hr.holder.get().off(), hr.live.get()));
            }
            self.handles.entry(h).or_default().holder_lists += 1;
            let node = hr.node.get().off();
            self.nodes.entry(node).or_default();
            self.expect(TAG_NODE_HANDLE, p, node, h, &what);
            user_refs = user_refs.saturating_add(hr.user_refs.get().min(i64::MAX as u64) as i64);
            if hr.user_refs.get() > 0 {
                if hr.has_id.get() != 1 {
                    self.bad(format!("{name}: handle {h:#x} has user references but no ID"));
                } else {
                    with_refs.push((hr.id.get(), h));
                }
            }
        }
        self.id_table(p, pr, &with_refs, &name);
        // nodes owned
        for n in self.chain::<Node>(pr.nodes.get().off(), |n| n.owner_next.get().off(), |n| n.owner_prev.get().off(), &|| format!("{name}: node list")) {
            let Some(nr) = self.get::<Node>(n) else { continue };
            if nr.owner.get().off() != p {
                self.bad(format!("{name}: node {n:#x} in its list is owned by {:#x}", nr.owner.get().off()));
            }
            self.nodes.entry(n).or_default().owner_lists += 1;
        }
        // storage of the message state (allocated under the domain lock)
        let chunks = self.list::<Chunk>(pr.chunks.get().off(), |c| c.next.get().off(), &|| format!("{name}: arena"));
        for &c in &chunks {
            if self.visit_block(c, alloc::block_size(arena::CHUNK_BYTES), "arena chunk", &what).is_some()
                && self.get::<Chunk>(c).is_some_and(|cr| cr.peer.get().off() != p)
            {
                self.bad(format!("{name}: arena chunk {c:#x} belongs to another peer"));
            }
        }
        if chunks.len() as u64 != pr.n_chunks.get() {
            self.bad(format!("{name}: n_chunks {} but the arena has {}", pr.n_chunks.get(), chunks.len()));
        }
        let blocks = self.list::<ShareBlock>(pr.share_blocks.get().off(), |b| b.next.get().off(), &|| format!("{name}: share blocks"));
        for &b in &blocks {
            self.visit::<ShareBlock>(b, "share block", &what);
        }
        self.directory(pr, &name);
        // the message state, under the peer's lock
        let locked = lock_peers && self.tx.try_hold(P::from_off(p));
        let seen = self.users.entry(user).or_default();
        seen.peers += 1;
        if locked {
            for res in 0..NRES {
                seen.resv[res] = seen.resv[res].saturating_add(pr.resv[res].get());
            }
            MessageState::new(self, p, pr, &name, &chunks, &blocks).check(user_refs);
        } else {
            seen.complete = false;
            self.partial = true;
        }
    }

    fn user(&mut self, u: u64, peer: &str) {
        if self.users.contains_key(&u) {
            return;
        }
        self.users.insert(u, UserSeen { complete: true, ..Default::default() });
        let Some(ur) = self.visit::<UserRec>(u, "user", &|| peer.to_string()) else { return };
        let uid = ur.uid.get();
        self.expect(TAG_USER, 0, uid, u, &|| format!("user {uid}"));
    }

    /// The peer's ID table: exactly its handles with user references, each
    /// under its ID.
    fn id_table(&mut self, p: u64, pr: &'d PeerRec, with_refs: &[(u64, u64)], name: &str) {
        let (base, cap, used) = (pr.ids.get(), pr.ids_cap.get(), pr.ids_used.get());
        let mut found: HashMap<u64, u64> = HashMap::new();
        if cap != 0 {
            if !cap.is_power_of_two() || used * 2 > cap {
                self.bad(format!("{name}: ID table of capacity {cap} holding {used}"));
            }
            let bytes = cap.saturating_mul(TABLE_SLOT * 8);
            let slots = if self.visit_block(base, alloc::block_size(bytes), "ID table", &|| name.to_string()).is_some() {
                self.seg.try_cells(base, (cap * TABLE_SLOT) as usize)
            } else {
                None
            };
            for slot in slots.unwrap_or(&[]).chunks(3) {
                let k = slot[0].get();
                if k == EMPTY_KEY {
                    continue;
                }
                if k != TAG_ID << 56 {
                    self.bad(format!("{name}: ID table key {k:#x} is not an ID"));
                }
                if found.insert(slot[1].get(), slot[2].get()).is_some() {
                    self.bad(format!("{name}: ID {:#x} is twice in the ID table", slot[1].get()));
                }
            }
        }
        if found.len() as u64 != used {
            self.bad(format!("{name}: ids_used {used} but the ID table holds {}", found.len()));
        }
        for &(id, h) in with_refs {
            match found.remove(&id) {
                Some(v) if v == h => {}
                Some(v) => self.bad(format!("{name}: ID {id:#x} names {v:#x}, not its handle {h:#x}")),
                None => self.bad(format!("{name}: ID {id:#x} of handle {h:#x} is not in the ID table")),
            }
        }
        for (id, h) in found {
            self.bad(format!("{name}: stale ID {id:#x} in the ID table (handle {h:#x} of peer {p:#x} has no user reference under it)"));
        }
    }

    /// The slice directory's blocks.
    fn directory(&mut self, pr: &'d PeerRec, name: &str) {
        let top = pr.dir.get();
        if top == 0 {
            return;
        }
        let n = pool::dir_len(pr.pool_size.get().min(POOL_SIZE_FINAL));
        if self.visit_block(top, alloc::block_size(n as u64 * 8), "slice directory", &|| name.to_string()).is_none() {
            return;
        }
        let Some(leaves) = self.seg.try_cells(top, n) else { return };
        for l in leaves {
            let leaf = l.get();
            if leaf != 0 {
                self.visit_block(leaf, alloc::block_size(DIR_LEAF as u64 * 8), "slice directory leaf", &|| name.to_string());
            }
        }
    }

    // ------------------------------------------------------------- slots

    /// Transaction slots: the busy bits, and the heap blocks of their
    /// overflow lists.
    fn slots(&mut self) {
        let dom = self.tx.domain();
        for idx in 0..NSLOTS {
            let Some(ts) = self.seg.try_fixed::<TxSlot>(TX_SLOTS_OFF + (idx * core::mem::size_of::<TxSlot>()) as u64) else { continue };
            let extra = ts.extra.get();
            if extra != 0 {
                let cap = ts.extra_cap.get();
                self.visit_block(extra, alloc::block_size(cap.saturating_mul(8)), "slot list", &|| format!("transaction slot {idx}"));
            }
            let phase = ts.state.load() & 0xff;
            if phase > TX_DONE {
                self.bad(format!("transaction slot {idx}: bad phase {phase}"));
            }
            let _ = dom;
        }
    }

    // ----------------------------------------------------- handles, nodes

    fn check_handles(&mut self) {
        let handles: Vec<u64> = self.handles.keys().copied().collect();
        for h in handles {
            let seen = &self.handles[&h];
            let (holders, orphans, records) = (seen.holder_lists, seen.orphan_lists, seen.records);
            if holders + orphans != 1 {
                self.bad(format!("handle {h:#x}: on {holders} holder lists and {orphans} orphan lists"));
            }
            // Records of torn-down peers are counted only when every
            // peer's message state was checked.
            // A rebuild of its former holder leaves the count to be taken
            // again (`object::recount_orphans`, marked by `gc_pending`).
            if orphans > 0 && !self.partial {
                let Some(hr) = self.get::<Handle>(h) else { continue };
                let recount = self.get::<PeerRec>(hr.former_holder.get().off()).is_some_and(|p| p.gc_pending.get() != 0);
                if hr.refs.get() != records && !recount {
                    self.bad(format!("orphaned handle {h:#x}: refs {} but {records} records of torn-down peers point at it", hr.refs.get()));
                }
            }
        }
    }

    fn check_nodes(&mut self) {
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        for n in nodes {
            let name = format!("node {n:#x}");
            let Some(nr) = self.visit::<Node>(n, "node", &|| name.clone()) else { continue };
            let owner = nr.owner.get().off();
            let owned = self.nodes[&n].owner_lists;
            if owned > 1 {
                self.bad(format!("{name}: on {owned} owner lists"));
            }
            let list = self.chain::<Handle>(nr.handles.get().off(), |h| h.node_next.get().off(), |h| h.node_prev.get().off(), &|| format!("{name}: handle list"));
            let mut strong = 0u64;
            let oh = nr.owner_handle.get().off();
            for &h in &list {
                let Some(hr) = self.get::<Handle>(h) else { continue };
                if hr.node.get().off() != n || hr.live.get() != 1 {
                    self.bad(format!("{name}: listed handle {h:#x} belongs to node {:#x} (live {})", hr.node.get().off(), hr.live.get()));
                }
                self.handles.entry(h).or_default().node_lists += 1;
                let refs = hr.user_refs.get();
                strong = strong.saturating_add(if h == oh { refs.saturating_sub(1) } else { refs }).saturating_add(hr.inflight.get());
            }
            if list.len() as u64 != nr.refs.get() {
                self.bad(format!("{name}: refs {} but {} handles", nr.refs.get(), list.len()));
            }
            if oh != 0 && !list.contains(&oh) {
                self.bad(format!("{name}: its owner's handle {oh:#x} is not in its list"));
            }
            if owner != 0 && nr.destroyed.get() == 0 && owned != 1 && self.get::<PeerRec>(owner).is_some_and(|p| p.state.get() != PEER_DEAD) {
                self.bad(format!("{name}: not in its owner's node list"));
            }
            if nr.strong.get() != strong {
                self.bad(format!("{name}: strong count {} but user references and payload entries add up to {strong}", nr.strong.get()));
            }
        }
        let handles: Vec<(u64, u32)> = self.handles.iter().map(|(&h, s)| (h, s.node_lists)).collect();
        for (h, lists) in handles {
            if lists != 1 {
                self.bad(format!("handle {h:#x}: on {lists} node lists"));
            }
        }
    }

    /// A user's claim covers the reservations of its peers.
    fn check_users(&mut self) {
        let users: Vec<u64> = self.users.keys().copied().collect();
        for u in users {
            let Some(ur) = self.get::<UserRec>(u) else { continue };
            let (peers, complete, resv) = {
                let seen = &self.users[&u];
                (seen.peers, seen.complete, seen.resv)
            };
            if ur.refs.get() != peers {
                self.bad(format!("user {}: refs {} but {peers} peers", ur.uid.get(), ur.refs.get()));
            }
            if !complete {
                continue;
            }
            for (res, &r) in resv.iter().enumerate() {
                let claimed = ur.claimed[res].load() as i64;
                if claimed < r {
                    self.bad(format!("user {}: claimed {claimed} of resource {res}, below its peers' reservations {r}", ur.uid.get()));
                }
            }
        }
    }

    // -------------------------------------------------------------- heap

    fn check_heap_accounting(&mut self) {
        let h = self.tx.hdr();
        // The domain's table.
        let (table, cap) = (h.table.get(), h.table_cap.get());
        if cap != 0 {
            self.visit_block(table, alloc::block_size(cap.saturating_mul(TABLE_SLOT * 8)), "hash table", &|| "header".into());
        }
        let live_blocks = self.blocks.len() as u64;
        let live_bytes: u64 = self.blocks.values().map(|&(s, _)| s).sum();
        if !self.partial && (h.live_blocks.get(), h.live_bytes.get()) != (live_blocks, live_bytes) {
            self.bad(format!(
                "heap: {} blocks of {} bytes allocated, but {live_blocks} of {live_bytes} are reachable",
                h.live_blocks.get(),
                h.live_bytes.get()
            ));
        }
        // Reachable and free blocks tile the heap without overlap.
        let mut all: Vec<(u64, u64, &str)> = self.blocks.iter().map(|(&o, &(s, k))| (o, s, k)).collect();
        all.extend(self.free.iter().map(|(&o, &s)| (o, s, "free block")));
        all.sort_unstable();
        let mut end = HEAP_OFF;
        let mut reported = 0;
        for &(o, s, k) in &all {
            if o < end && reported < 8 {
                self.bad(format!("heap: {k} at {o:#x} overlaps the block before it (which ends at {end:#x})"));
                reported += 1;
            }
            end = end.max(o + s);
        }
    }

    fn check_table(&mut self) {
        let h = self.tx.hdr();
        let (base, cap, used) = (h.table.get(), h.table_cap.get(), h.table_used.get());
        let slots = if cap == 0 { Some(&[][..]) } else { self.seg.try_cells(base, cap.saturating_mul(TABLE_SLOT) as usize) };
        let Some(slots) = slots else {
            self.bad(format!("header: the table at {base:#x} is outside the segment"));
            return;
        };
        let mut n = 0;
        let mut found = HashSet::new();
        for slot in slots.chunks(3) {
            let k1 = slot[0].get();
            if k1 == EMPTY_KEY {
                continue;
            }
            n += 1;
            let (tag, owner, key, val) = (k1 >> 56, k1 & ((1 << 56) - 1), slot[1].get(), slot[2].get());
            if tag == TAG_NONCE {
                // A message carrying fds names its nonce while it is
                // prepared, queued or a seed.
                match self.get::<Msg>(val) {
                    Some(r) if r.state.get() & MS_REFS != 0 && r.nonce.get() == key && r.n_fds.get() > 0 => {}
                    _ => self.bad(format!("table: nonce {key:#x} names {val:#x}, not a queued message with that nonce")),
                }
                continue;
            }
            match self.expected.get(&(tag, owner, key)) {
                Some(&v) if v == val => {
                    found.insert((tag, owner, key));
                }
                Some(&v) => self.bad(format!("table: {} key {key:#x} of {owner:#x} names {val:#x}, expected {v:#x}", tag_name(tag))),
                None => self.bad(format!("table: stale {} entry, key {key:#x} of {owner:#x} -> {val:#x}", tag_name(tag))),
            }
        }
        if n != used {
            self.bad(format!("header: table_used {used} but the table holds {n}"));
        }
        let missing: Vec<(u64, u64, u64)> = self.expected.keys().filter(|k| !found.contains(k)).copied().collect();
        for (tag, owner, key) in missing.into_iter().take(20) {
            self.bad(format!("table: {} key {key:#x} of {owner:#x} is missing", tag_name(tag)));
        }
    }
}

/// The message state of one peer, checked under its lock.
struct MessageState<'c, 't, 'd> {
    c: &'c mut Checker<'t, 'd>,
    p: u64,
    pr: &'d PeerRec,
    name: &'c str,
    /// The arena's records (in chunks that lie in the heap).
    records: Vec<u64>,
    share_blocks: &'c [u64],
}

impl<'c, 't, 'd> MessageState<'c, 't, 'd> {
    fn new(c: &'c mut Checker<'t, 'd>, p: u64, pr: &'d PeerRec, name: &'c str, chunks: &[u64], share_blocks: &'c [u64]) -> Self {
        let records = chunks.iter().flat_map(|&ch| arena::records_of(P::from_off(ch)).map(|r| r.off())).collect();
        MessageState { c, p, pr, name, records, share_blocks }
    }

    fn rec(&self, r: u64) -> Option<&'d Msg> {
        self.c.get::<Msg>(r)
    }

    fn check(mut self, handle_user_refs: i64) {
        let name = self.name;
        let mut live = Vec::new();
        for &r in &self.records {
            let Some(rr) = self.rec(r) else { continue };
            if rr.state.get() == 0 {
                continue;
            }
            if rr.peer.get().off() != self.p {
                self.c.bad(format!("{name}: record {r:#x} of its arena belongs to peer {:#x}", rr.peer.get().off()));
            }
            if rr.state.get() & MS_LIVE == 0 || !matches!(rr.kind.get(), ENTRY_DATA | ENTRY_DESTROY | ENTRY_RELEASE | ENTRY_SENTINEL) {
                self.c.bad(format!("{name}: record {r:#x} has state {:#x} and kind {}", rr.state.get(), rr.kind.get()));
            }
            live.push(r);
        }
        self.free_records();
        self.queue(&live);
        self.pool(&live);
        self.prepared_and_seed(&live);
        self.usage(&live, handle_user_refs);
        self.references(&live);
    }

    fn with_bit(&self, live: &[u64], bit: u32) -> HashSet<u64> {
        live.iter().copied().filter(|&r| self.rec(r).is_some_and(|rr| rr.state.get() & bit != 0)).collect()
    }

    /// The arena's free list holds exactly its free records.
    fn free_records(&mut self) {
        let name = self.name;
        let list = self.c.list::<Msg>(self.pr.free_recs.get().off(), |r| r.free_next.get().off(), &|| format!("{name}: free records"));
        let mine: HashSet<u64> = self.records.iter().copied().collect();
        let free: HashSet<u64> = self.records.iter().copied().filter(|&r| self.rec(r).is_some_and(|rr| rr.state.get() == 0)).collect();
        for &r in &list {
            if !mine.contains(&r) || !free.contains(&r) {
                self.c.bad(format!("{name}: free record list holds {r:#x}, not a free record of its arena"));
            }
        }
        if list.len() != free.len() || list.len() as u64 != self.pr.n_free_recs.get() {
            self.c.bad(format!("{name}: {} free records, {} listed, n_free_recs {}", free.len(), list.len(), self.pr.n_free_recs.get()));
        }
    }

    /// The queue: exactly the queued records, in order; staged entries
    /// belong to a transaction slot still at work.
    fn queue(&mut self, live: &[u64]) {
        let (name, pr) = (self.name, self.pr);
        let list = self.c.chain::<Msg>(pr.q_head.get().off(), |r| r.q_next.get().off(), |r| r.q_prev.get().off(), &|| format!("{name}: queue"));
        let members = self.with_bit(live, MS_QUEUED);
        let clock = pr.clock.load();
        if clock % 2 != 0 {
            self.c.bad(format!("{name}: clock {clock} is odd"));
        }
        let mut last: Option<(u64, u64, u32)> = None;
        let mut fd_msgs = 0;
        for &r in &list {
            let Some(rr) = self.rec(r) else { continue };
            if !members.contains(&r) {
                self.c.bad(format!("{name}: queue holds {r:#x}, which is not a queued record of this peer"));
                continue;
            }
            let key = (rr.stamp.get(), rr.tag.get(), rr.index.get());
            if last.is_some_and(|l| l > key) {
                self.c.bad(format!("{name}: entry {r:#x} (stamp {}, tag {:#x}) is out of order", key.0, key.1));
            }
            last = Some(key);
            if key.0 % 2 == 1 {
                self.staged(r, rr);
            } else if key.0 > clock {
                self.c.bad(format!("{name}: entry {r:#x} has stamp {} ahead of the queue's clock {clock}", key.0));
            }
            if rr.kind.get() == ENTRY_DATA && rr.n_fds.get() > 0 {
                fd_msgs += 1;
            }
        }
        if list.len() != members.len() {
            self.c.bad(format!("{name}: {} records are queued, {} in the queue", members.len(), list.len()));
        }
        if pr.q_tail.get().off() != list.last().copied().unwrap_or(0) {
            self.c.bad(format!("{name}: queue tail {:#x} is not its last entry", pr.q_tail.get().off()));
        }
        if pr.q_len.get() != list.len() as u64 || pr.q_fd_msgs.get() != fd_msgs {
            self.c.bad(format!("{name}: q_len {} q_fd_msgs {}, but {} queued ({fd_msgs} with fds)", pr.q_len.get(), pr.q_fd_msgs.get(), list.len()));
        }
    }

    /// A staged entry: its transaction is a multicast of the data path
    /// whose slot has not finished it.
    fn staged(&mut self, r: u64, rr: &'d Msg) {
        let name = self.name;
        let tag = rr.tag.get();
        let (gen, idx) = crate::slot::split(tag);
        let ok = tag >> 63 == 0
            && idx < NSLOTS
            && self.c.seg.try_fixed::<TxSlot>(TX_SLOTS_OFF + (idx * core::mem::size_of::<TxSlot>()) as u64).is_some_and(|ts| {
                let st = ts.state.load();
                st >> 8 == gen && matches!(st & 0xff, TX_STAGING | TX_SEALED | TX_SYNCED)
            });
        if !ok {
            self.c.bad(format!("{name}: staged entry {r:#x} of transaction {tag:#x}, whose slot is not committing it"));
        }
    }

    /// The pool: the slices in address order, their gaps and bins.
    fn pool(&mut self, live: &[u64]) {
        let (name, pr) = (self.name, self.pr);
        let end_of_pool = pr.pool_size.get().saturating_sub(1);
        let sentinel = pr.sentinel.get().off();
        let slices = self.c.chain::<Msg>(sentinel, |r| r.a_next.get().off(), |r| r.a_prev.get().off(), &|| format!("{name}: slices"));
        let members = self.with_bit(live, MS_SLICE);
        if slices.first() != Some(&sentinel) || self.rec(sentinel).is_none_or(|s| s.kind.get() != ENTRY_SENTINEL || s.off.get() != 0 || s.size.get() != 0) {
            self.c.bad(format!("{name}: the pool's sentinel {sentinel:#x} is not a slice of size 0 at 0"));
        }
        let mut end = 0u64;
        let mut gaps = HashSet::new();
        for (i, &r) in slices.iter().enumerate() {
            let Some(rr) = self.rec(r) else { continue };
            if !members.contains(&r) {
                self.c.bad(format!("{name}: slice list holds {r:#x}, which holds no slice of this peer"));
            }
            let (off, size) = (rr.off.get(), rr.size.get());
            if off < end || off % 8 != 0 {
                self.c.bad(format!("{name}: slice {r:#x} at {off:#x} overlaps the slice before it or is misaligned"));
            }
            if rr.kind.get() == ENTRY_DATA {
                let want = pool::slice_size(rr.n_bytes.get().min(POOL_SIZE_FINAL), rr.n_handles.get().min(POOL_SIZE_FINAL), rr.n_fds.get() as u64).div_ceil(8) * 8;
                if size != want {
                    self.c.bad(format!("{name}: slice {r:#x} of {size} bytes for a message that needs {want}"));
                }
            }
            end = off.saturating_add(size);
            if end > end_of_pool {
                self.c.bad(format!("{name}: slice {r:#x} ends at {end:#x}, beyond the pool ({end_of_pool:#x})"));
            }
            let next = slices.get(i + 1).and_then(|&n| self.rec(n)).map_or(end_of_pool, |n| n.off.get());
            let gap = next.saturating_sub(end);
            if rr.gap.get() != gap {
                self.c.bad(format!("{name}: slice {r:#x} has gap {} but the next slice starts {gap} bytes after it", rr.gap.get()));
            }
            if gap > 0 {
                gaps.insert(r);
            }
        }
        if slices.len() != members.len() {
            self.c.bad(format!("{name}: {} records hold slices, {} in the slice list", members.len(), slices.len()));
        }
        if pr.pool_last.get().off() != slices.last().copied().unwrap_or(0) || pr.pool_slices.get() != slices.len().saturating_sub(1) as u64 {
            self.c.bad(format!("{name}: pool_last {:#x}, pool_slices {}, but {} slices", pr.pool_last.get().off(), pr.pool_slices.get(), slices.len().saturating_sub(1)));
        }
        // bins
        let mut binned = HashSet::new();
        for b in 0..NBINS {
            let list = self.c.chain::<Msg>(pr.bins[b].get().off(), |r| r.g_next.get().off(), |r| r.g_prev.get().off(), &|| format!("{name}: bin {b}"));
            if (pr.bin_mask.get() >> b & 1 == 1) == list.is_empty() {
                self.c.bad(format!("{name}: bin mask {:#x} disagrees with bin {b}", pr.bin_mask.get()));
            }
            for r in list {
                let gap = self.rec(r).map_or(0, |rr| rr.gap.get());
                if gap == 0 || ((63 - gap.leading_zeros()) as usize).min(NBINS - 1) != b || !binned.insert(r) {
                    self.c.bad(format!("{name}: bin {b} holds {r:#x} with gap {gap}"));
                }
            }
        }
        if binned != gaps {
            self.c.bad(format!("{name}: {} slices have a gap, {} are in bins", gaps.len(), binned.len()));
        }
    }

    /// Records prepared by transaction slots, and the seed.
    fn prepared_and_seed(&mut self, live: &[u64]) {
        let (name, pr) = (self.name, self.pr);
        let prepared = self.with_bit(live, MS_PREPARED);
        if pr.n_prepared.get() != prepared.len() as u64 {
            self.c.bad(format!("{name}: n_prepared {} but {} records are prepared", pr.n_prepared.get(), prepared.len()));
        }
        let seeds = self.with_bit(live, MS_SEED);
        let seed = pr.seed.get().off();
        if seeds.len() > 1 || (seed != 0) != (seeds.len() == 1) || (seed != 0 && !seeds.contains(&seed)) {
            self.c.bad(format!("{name}: seed {seed:#x} but {} records are marked seed", seeds.len()));
        }
    }

    /// Usage, reservations and fair shares.
    fn usage(&mut self, live: &[u64], handle_user_refs: i64) {
        let (name, pr) = (self.name, self.pr);
        let mut used = [0i64; NRES];
        used[RES_HANDLES] = handle_user_refs;
        let mut shares: HashMap<u64, [i64; NRES]> = HashMap::new();
        for &r in live {
            let Some(rr) = self.rec(r) else { continue };
            let st = rr.state.get();
            used[RES_SLICES] = used[RES_SLICES].saturating_add(rr.charged[RES_SLICES].get());
            used[RES_HANDLES] = used[RES_HANDLES].saturating_add(rr.charged[RES_HANDLES].get());
            if st & MS_INFLIGHT != 0 {
                used[RES_BYTES] = used[RES_BYTES].saturating_add(rr.charged[RES_BYTES].get());
                used[RES_FDS] = used[RES_FDS].saturating_add(rr.charged[RES_FDS].get());
                let bytes = if st & MS_SLICE != 0 { rr.size.get().min(i64::MAX as u64) as i64 } else { 0 };
                let amounts = [1, rr.n_handles.get().min(i64::MAX as u64) as i64, bytes, rr.n_fds.get() as i64];
                let s = shares.entry(rr.sender_uid.get() as u64 + 1).or_default();
                for (x, a) in s.iter_mut().zip(amounts) {
                    *x = x.saturating_add(a);
                }
            }
        }
        for (res, &want) in used.iter().enumerate() {
            if pr.used[res].get() != want {
                self.c.bad(format!("{name}: usage {} of resource {res}, but its records and handles add up to {want}", pr.used[res].get()));
            }
            if pr.resv[res].get() < want {
                self.c.bad(format!("{name}: reservation {} of resource {res} below its usage {want}", pr.resv[res].get()));
            }
        }
        let mut kept: Vec<&'d Share> = pr.shares.iter().collect();
        for &b in self.share_blocks {
            if let Some(block) = self.c.get::<ShareBlock>(b) {
                kept.extend(block.shares.iter());
            }
        }
        let mut seen = HashSet::new();
        for sh in kept {
            let uid = sh.uid.get();
            let amounts: [i64; NRES] = core::array::from_fn(|i| sh.used[i].get());
            if uid == 0 {
                continue;
            }
            if !seen.insert(uid) {
                self.c.bad(format!("{name}: two fair shares of uid {}", uid - 1));
            }
            let want = shares.remove(&uid).unwrap_or_default();
            if amounts != want {
                self.c.bad(format!("{name}: fair share of uid {} is {amounts:?}, its queued messages add up to {want:?}", uid - 1));
            }
        }
        for (uid, want) in shares {
            if want != [0; NRES] {
                self.c.bad(format!("{name}: no fair share of uid {} for its queued messages {want:?}", uid - 1));
            }
        }
    }

    /// Handle reference counts, payload arrays and pending releases.
    fn references(&mut self, live: &[u64]) {
        let (name, p) = (self.name, self.p);
        let mut refs: HashMap<u64, u64> = HashMap::new();
        let mut releases: HashMap<u64, u64> = HashMap::new();
        for &r in live {
            let Some(rr) = self.rec(r) else { continue };
            let st = rr.state.get();
            let kind = rr.kind.get();
            if kind == ENTRY_DATA && rr.n_handles.get() > 0 {
                let n = rr.n_handles.get();
                let arr = rr.handles.get();
                if arr != 0 && n <= DEFAULT_MAX[RES_HANDLES] as u64 {
                    self.c.visit_block(arr, alloc::block_size(n * 8), "handle array", &|| format!("{name}: record {r:#x}"));
                }
                if st & MS_REFS != 0 {
                    if n > DEFAULT_MAX[RES_HANDLES] as u64 {
                        self.c.bad(format!("{name}: record {r:#x} claims {n} handles"));
                    } else if let Some(slots) = self.c.seg.try_cells(arr, n as usize) {
                        for s in slots.iter().map(|s| s.get()).filter(|&s| s != 0) {
                            *refs.entry(s).or_default() += 1;
                        }
                    } else {
                        self.c.bad(format!("{name}: record {r:#x} has a bad handle array {arr:#x}"));
                    }
                }
            }
            if st & MS_REFS == 0 {
                continue;
            }
            match kind {
                ENTRY_DATA | ENTRY_DESTROY if rr.subject.get() != 0 => *refs.entry(rr.subject.get()).or_default() += 1,
                ENTRY_RELEASE => *releases.entry(rr.subject.get()).or_default() += r,
                _ => {}
            }
        }
        let held = self.c.list::<Handle>(self.pr.handles.get().off(), |h| h.holder_next.get().off(), &|| format!("{name}: handle list"));
        for h in held {
            let Some(hr) = self.c.get::<Handle>(h) else { continue };
            let want = refs.remove(&h).unwrap_or(0);
            if hr.refs.get() != want {
                self.c.bad(format!("{name}: handle {h:#x} has refs {} but {want} records point at it", hr.refs.get()));
            }
        }
        // A torn-down peer kept for the records that transactions of dead
        // or stopped senders still hold in its arena: its handles were
        // orphaned, and those records point at the orphans until they go.
        let dead = self.pr.state.get() == PEER_DEAD;
        for (h, n) in refs {
            if dead {
                if let Some(seen) = self.c.handles.get_mut(&h).filter(|seen| seen.orphan_lists > 0) {
                    seen.records += n;
                    continue;
                }
            }
            self.c.bad(format!("{name}: {n} records point at handle {h:#x}, which peer {p:#x} does not hold"));
        }
        let owned = self.c.list::<Node>(self.pr.nodes.get().off(), |n| n.owner_next.get().off(), &|| format!("{name}: node list"));
        for n in owned {
            let Some(nr) = self.c.get::<Node>(n) else { continue };
            let want = releases.remove(&n).unwrap_or(0);
            if nr.release_entry.get().off() != want {
                self.c.bad(format!("{name}: node {n:#x} names release entry {:#x}, but its queue holds {want:#x}", nr.release_entry.get().off()));
            }
        }
        for (n, r) in releases {
            self.c.bad(format!("{name}: release entry {r:#x} of node {n:#x}, which the peer does not own"));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{OpenFlags, Peer};
    use std::sync::Arc;

    /// A domain in a fresh directory, removed afterwards.
    pub struct TestBus {
        pub dir: std::path::PathBuf,
        peers: Vec<(i32, Peer)>,
        /// a's handles of b's and c's nodes.
        pub to: [u64; 2],
    }

    impl TestBus {
        /// Three peers: a holds a handle to a node of b and one of c, b
        /// has a queued message from a that carries a node of a (a
        /// transaction), c a seed and a plain message from a (the data
        /// path); so every kind of record exists.
        pub fn new(name: &str) -> TestBus {
            let dir = std::env::temp_dir().join(format!("bus1-check-{name}-{}-{:x}", std::process::id(), crate::sys::getrandom_u64()));
            std::fs::create_dir_all(&dir).unwrap();
            let flags = OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true };
            let peers: Vec<(i32, Peer)> = (0..3).map(|_| Peer::open(&dir, flags).unwrap()).collect();
            let (a, b, c) = (&peers[0], &peers[1], &peers[2]);
            let to_b = b.1.handle_transfer(b.0, 0x100, Some(&a.1)).unwrap();
            let to_c = c.1.handle_transfer(c.0, 0x200, Some(&a.1)).unwrap();
            let bus = TestBus { dir, peers, to: [to_b, to_c] };
            bus.send(0, &[to_b], b"hello", &[0x300], 0);
            bus.send(2, &[], b"seed", &[0x400], uapi::BUS1_SEND_FLAG_SEED);
            bus.send(0, &[to_c], b"plain", &[], 0);
            assert_eq!(bus.dom().check_invariants(), Vec::<String>::new(), "the bus is consistent before it is damaged");
            bus
        }

        pub fn p(&self, i: usize) -> &(i32, Peer) {
            &self.peers[i]
        }

        pub fn dom(&self) -> Arc<Domain> {
            self.peers[0].1.domain().clone()
        }

        /// `from` sends `data` with `handles` to `dests` (its own handle IDs).
        pub fn send(&self, from: usize, dests: &[u64], data: &[u8], handles: &[u64], flags: u64) {
            let (fd, p) = self.p(from);
            let bufs = [std::io::IoSlice::new(data)];
            let args = crate::SendSlices { flags, destinations: dests, errors: None, payload: &bufs, handles, fds: &[] };
            p.send_slices(*fd, args).unwrap();
        }

        /// Changes the segment with `f` (a transaction that commits).
        pub fn damage(&self, f: impl FnOnce(&Txn, &[P<PeerRec>])) {
            let d = self.dom();
            let tx = d.lock().unwrap();
            let peers: Vec<P<PeerRec>> = self.peers.iter().map(|(_, p)| p.rec).collect();
            peers.iter().for_each(|&p| tx.hold(p));
            f(&tx, &peers);
            tx.commit().unwrap();
        }

        /// The checker's report, which must mention every one of `words`.
        pub fn expect_report(&self, words: &[&str]) -> Vec<String> {
            let report = self.dom().check_invariants();
            for w in words {
                assert!(report.iter().any(|l| l.contains(w)), "no line mentions {w:?}: {report:?}");
            }
            report
        }
    }

    impl Drop for TestBus {
        fn drop(&mut self) {
            for (fd, p) in self.peers.drain(..) {
                p.closed();
                crate::sys::close(fd);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn first_handle(tx: &Txn, p: P<PeerRec>) -> P<Handle> {
        tx.rec(p).handles.get()
    }

    #[test]
    fn a_stale_id_in_the_table() {
        let bus = TestBus::new("staleid");
        bus.damage(|tx, p| {
            let node = tx.rec(p[1]).nodes.get();
            tx.set(&tx.rec(tx.rec(node).owner_handle.get()).user_refs, 0);
        });
        bus.expect_report(&["stale ID"]);
    }

    #[test]
    fn a_missing_table_entry() {
        let bus = TestBus::new("missing");
        bus.damage(|tx, p| {
            let serial = tx.rec(p[2]).serial.get();
            crate::table::remove(tx, TAG_PEER, 0, serial);
        });
        bus.expect_report(&["PEER key", "is missing"]);
    }

    #[test]
    fn a_bad_offset() {
        let bus = TestBus::new("badoff");
        bus.damage(|tx, p| tx.set(&tx.rec(p[1]).q_head, P::from_off(SEG_SIZE + 64)));
        bus.expect_report(&["queue", "outside the heap"]);
    }

    #[test]
    fn a_cycle_in_a_list() {
        let bus = TestBus::new("cycle");
        bus.damage(|tx, p| {
            let h = first_handle(tx, p[0]);
            tx.set(&tx.rec(h).holder_next, h);
        });
        bus.expect_report(&["does not end"]);
    }

    #[test]
    fn a_wrong_back_link() {
        let bus = TestBus::new("backlink");
        bus.damage(|tx, p| {
            let first = tx.hdr().peers.get();
            tx.set(&tx.rec(first).prev, p[2]);
        });
        bus.expect_report(&["links back"]);
    }

    #[test]
    fn reference_counts_that_do_not_add_up() {
        let bus = TestBus::new("refs");
        bus.damage(|tx, p| {
            let h = first_handle(tx, p[0]);
            let n = tx.rec(h).node.get();
            tx.add(&tx.rec(n).strong, 1);
            tx.add(&tx.rec(n).refs, 1);
            tx.add(&tx.rec(first_handle(tx, p[1])).refs, 1);
        });
        bus.expect_report(&["strong count", "but 2 handles", "records point at it"]);
    }

    #[test]
    fn a_user_reference_without_its_id() {
        let bus = TestBus::new("noid");
        bus.damage(|tx, p| {
            let h = first_handle(tx, p[0]);
            tx.set(&tx.rec(h).has_id, 0);
        });
        bus.expect_report(&["user references but no ID"]);
    }

    #[test]
    fn usage_that_does_not_add_up() {
        let bus = TestBus::new("usage");
        bus.damage(|tx, p| {
            tx.add_i(&tx.rec(p[1]).used[RES_HANDLES], 1);
            tx.set(&tx.rec(p[2]).resv[RES_BYTES], 0);
        });
        bus.expect_report(&["usage", "reservation"]);
    }

    #[test]
    fn an_orphan_that_records_do_not_account_for() {
        let mut bus = TestBus::new("orphan");
        // b goes away while a still holds a handle of b's node: b's own
        // handle of it is orphaned, with no record pointing at it
        let (fd, p) = bus.peers.remove(1);
        crate::sys::close(fd);
        p.closed();
        assert_eq!(bus.dom().check_invariants(), Vec::<String>::new());
        bus.damage(|tx, _| {
            let orphan = tx.hdr().orphans.get();
            assert!(!orphan.is_null(), "no orphan");
            tx.add(&tx.rec(orphan).refs, 1);
        });
        bus.expect_report(&["orphaned handle", "records of torn-down peers"]);
    }

    #[test]
    fn a_fair_share_that_does_not_add_up() {
        let bus = TestBus::new("share");
        bus.damage(|tx, p| {
            let sh = &tx.rec(p[1]).shares[0];
            tx.add_i(&sh.used[RES_SLICES], 1);
        });
        bus.expect_report(&["fair share", "add up to"]);
    }

    #[test]
    fn pool_accounting_that_does_not_add_up() {
        let bus = TestBus::new("pool");
        bus.damage(|tx, p| {
            tx.add(&tx.rec(p[1]).pool_slices, 1);
            let last = tx.rec(p[2]).pool_last.get();
            tx.add(&tx.rec(last).gap, 8);
        });
        bus.expect_report(&["pool_slices", "has gap"]);
    }

    #[test]
    fn a_queue_out_of_order_and_a_stray_staged_entry() {
        let bus = TestBus::new("order");
        bus.send(0, &[bus.to[1]], b"again", &[], 0);
        bus.damage(|tx, p| {
            let head = tx.rec(p[2]).q_head.get();
            tx.set(&tx.rec(head).stamp, u64::MAX - 1);
            let tail = tx.rec(p[2]).q_tail.get();
            tx.set(&tx.rec(tail).stamp, 7);
        });
        bus.expect_report(&["out of order", "whose slot is not committing it", "ahead of the queue's clock"]);
    }


    #[test]
    fn a_leaked_block() {
        let bus = TestBus::new("leak");
        bus.damage(|tx, _| {
            crate::alloc::alloc(tx, 64).unwrap();
        });
        bus.expect_report(&["heap:", "reachable"]);
    }

    #[test]
    fn a_block_in_use_and_on_a_free_list() {
        let bus = TestBus::new("uaf");
        bus.damage(|tx, p| {
            let b = tx.rec(p[0]).ids.get();
            let cap = tx.rec(p[0]).ids_cap.get();
            crate::alloc::free(tx, b, cap * TABLE_SLOT * 8);
        });
        bus.expect_report(&["on a free list (used after free)"]);
    }

    /// Whatever word of the heap is damaged, the checker reports instead
    /// of failing (a panic of its own would say "cannot check").
    #[test]
    fn the_checker_survives_any_damaged_word() {
        let bus = TestBus::new("anyword");
        let d = bus.dom();
        // The process's watcher (started by any other test here) visits
        // every attached domain; one that met a damaged word of this one
        // would mark the whole domain damaged. Leases it can never claim
        // keep it away (the damage below touches only the heap).
        let hdr: &Header = d.seg.at0();
        hdr.scan_lease.store(u64::MAX);
        hdr.bell_lease.store(u64::MAX);
        let top = d.seg.at0::<Header>().heap_top.get();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut reported = 0;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let off = HEAP_OFF + (rng % (top - HEAP_OFF)) / 8 * 8;
            let cell = &d.seg.cells(off, 1)[0];
            let old = cell.get();
            let new = match rng >> 61 {
                0 => 0,
                1 => old.wrapping_add(1),
                2 => old.wrapping_sub(8),
                3 => u64::MAX,
                4 => SEG_SIZE + 8,
                _ => rng.rotate_left(17),
            };
            // Not the words of a peer lock: a damaged lock word is a
            // wedge, not something a walk can report.
            if is_lock_word(&d, off) {
                continue;
            }
            cell.raw_set(new);
            let report = d.check_invariants();
            cell.raw_set(old);
            assert!(!report.iter().any(|l| l.contains("cannot check")), "at {off:#x}, {old:#x} -> {new:#x}: {report:?}");
            reported += !report.is_empty() as u32;
        }
        assert_eq!(d.check_invariants(), Vec::<String>::new());
        assert!(reported > 100, "only {reported} of 2000 damaged words were noticed");
    }

    fn is_lock_word(d: &Domain, off: u64) -> bool {
        let tx = d.lock().unwrap();
        let lock = core::mem::offset_of!(PeerRec, lock) as u64;
        let size = core::mem::size_of::<crate::sync::RobustMutex>() as u64;
        let hit = crate::peer::all(&tx).iter().any(|p| (p.off() + lock..p.off() + lock + size).contains(&off));
        tx.abort();
        hit
    }

    #[test]
    fn a_damage_mark() {
        let bus = TestBus::new("mark");
        bus.dom().mark_damaged("found a test");
        let report = bus.expect_report(&["marked damaged", "found a test"]);
        assert_eq!(report.len(), 1, "nothing else is wrong: {report:?}");
    }
}
