//! The invariant checker: one walk over a whole domain segment that reports
//! everything that does not add up.
//!
//! It starts from the header (the peer list, the allocator's free lists,
//! the hash table) and follows every link to every record, checking that
//! each offset names a live block of the right kind inside the heap; that
//! every list ends, is linked both ways where it should be, and holds each
//! record once; that reference counts, quota remainders, fair shares and
//! pool accounting equal what the records that charge them add up to;
//! that every table entry names a live record of the right kind and every
//! record that belongs in the table is there; and that the blocks reached
//! plus the free lists account for the heap exactly, without overlap.
//!
//! It reads the segment only through checked accessors, so it never
//! panics or loops on a damaged segment, and never writes it (it holds the
//! domain lock while walking, through `Domain::lock_to_inspect`, which
//! inspects a domain marked damaged as it is).

use crate::alloc;
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
    /// Payload slots of queued messages and seeds.
    slots: u64,
    /// DATA destinations and NODE_DESTROY subjects.
    subjects: u64,
}

#[derive(Default)]
struct NodeSeen {
    owner_lists: u32,
    release_entries: Vec<u64>,
}

/// Quota charges found on one peer.
#[derive(Default, Clone, Copy)]
struct Charges {
    res: [i64; NRES],
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
    /// What the table must hold: (tag, owner, key) → value.
    expected: HashMap<(u64, u64, u64), u64>,
    peers: Vec<u64>,
    handles: HashMap<u64, HandleSeen>,
    nodes: HashMap<u64, NodeSeen>,
    /// Queue and seed memberships of entries.
    entries: HashMap<u64, u32>,
    users: HashSet<u64>,
    /// Peers per user.
    user_peers: HashMap<u64, u64>,
    /// Per peer: what its queue, seed and handles charge.
    charges: HashMap<u64, Charges>,
    /// Per share record: what the messages naming it add up to.
    share_used: HashMap<u64, [i64; NRES]>,
    shares: HashMap<u64, u64>,
    /// Slices referenced by messages: region → count.
    slice_refs: HashMap<u64, u32>,
}

/// The slice size of a message (as `pool::slice_size`, rounded as the
/// pool rounds it), None if the counts are too large for any slice.
fn slice_size_checked(n_bytes: u64, n_handles: u64, n_fds: u64) -> Option<u64> {
    if n_bytes > POOL_SIZE || n_handles > POOL_SIZE || n_fds > POOL_SIZE {
        return None;
    }
    Some(pool::slice_size(n_bytes, n_handles, n_fds).div_ceil(8) * 8)
}

fn tag_name(tag: u64) -> &'static str {
    match tag {
        TAG_PEER => "PEER",
        TAG_HANDLE_ID => "HANDLE_ID",
        TAG_NODE_HANDLE => "NODE_HANDLE",
        TAG_SLICE => "SLICE",
        TAG_USER => "USER",
        TAG_SHARE_USER => "SHARE_USER",
        TAG_SHARE_PEER => "SHARE_PEER",
        TAG_NONCE => "NONCE",
        _ => "unknown",
    }
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
            peers: Vec::new(),
            handles: HashMap::new(),
            nodes: HashMap::new(),
            entries: HashMap::new(),
            users: HashSet::new(),
            user_peers: HashMap::new(),
            charges: HashMap::new(),
            share_used: HashMap::new(),
            shares: HashMap::new(),
            slice_refs: HashMap::new(),
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
        self.header();
        self.free_lists();
        self.peer_list();
        self.walk_nodes();
        self.check_handles();
        self.check_nodes();
        self.check_quotas();
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

    /// Records a reachable block; false if it was seen before or is bad.
    fn visit_block(&mut self, off: u64, size: u64, kind: &'static str, what: &dyn Fn() -> String) -> Option<()> {
        if let Some(&(_, k)) = self.blocks.get(&off) {
            if k != kind {
                self.bad(format!("{}: block {off:#x} is reachable both as {k} and as {kind}", what()));
            }
            return None;
        }
        let align = size.min(4096);
        if off < HEAP_OFF || off % align != 0 || !matches!(off.checked_add(size), Some(e) if e <= self.heap_top) {
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

    // ------------------------------------------------------------- peers

    fn peer_list(&mut self) {
        let h = self.tx.hdr();
        let list = self.chain::<PeerRec>(h.peers.get().off(), |p| p.next.get().off(), |p| p.prev.get().off(), &|| "peer list".into());
        if list.len() as u64 != h.n_peers.get() {
            self.bad(format!("header: n_peers is {} but the peer list holds {}", h.n_peers.get(), list.len()));
        }
        for p in list {
            self.peer(p);
        }
    }

    fn peer(&mut self, p: u64) {
        let Some(pr) = self.visit::<PeerRec>(p, "peer", &|| "peer list".into()) else { return };
        let serial = pr.serial.get();
        let name = format!("peer {p:#x} (serial {serial:#x})");
        let what = || name.clone();
        self.peers.push(p);
        self.charges.insert(p, Charges::default());
        if pr.magic.get() != PEER_MAGIC {
            self.bad(format!("{name}: bad magic {:#x}", pr.magic.get()));
        }
        let state = pr.state.get();
        if state != PEER_CONNECTED && state != PEER_DISCONNECTED {
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
        self.expect(TAG_PEER, 0, serial, p, &what);
        self.user(pr.user.get().off(), &name);
        self.queue(p, pr, &name);
        let seed = pr.seed.get().off();
        if seed != 0 {
            self.entry(p, seed, false, &name);
        }
        // handles held
        let what = || format!("{name}: handle list");
        for h in self.chain::<Handle>(pr.handles.get().off(), |h| h.holder_next.get().off(), |h| h.holder_prev.get().off(), &what) {
            let hr = self.get::<Handle>(h).expect("listed");
            if hr.holder.get().off() != p {
                self.bad(format!("{name}: handle {h:#x} in its list is held by {:#x}", hr.holder.get().off()));
            }
            self.handles.entry(h).or_default().holder_lists += 1;
            self.nodes.entry(hr.node.get().off()).or_default();
        }
        // nodes owned
        let what = || format!("{name}: node list");
        for n in self.chain::<Node>(pr.nodes.get().off(), |n| n.owner_next.get().off(), |n| n.owner_prev.get().off(), &what) {
            let nr = self.get::<Node>(n).expect("listed");
            if nr.owner.get().off() != p {
                self.bad(format!("{name}: node {n:#x} in its list is owned by {:#x}", nr.owner.get().off()));
            }
            self.nodes.entry(n).or_default().owner_lists += 1;
        }
        self.pool(p, pr, &name);
        self.share_list(TAG_SHARE_PEER, p, pr.shares.get().off(), &name);
        if state == PEER_DISCONNECTED && (pr.q_len.get() != 0 || !pr.seed.get().is_null() || pr.pool_slices.get() != 0) {
            self.bad(format!(
                "{name}: disconnected, yet {} queued, a seed {:#x}, {} slices",
                pr.q_len.get(),
                pr.seed.get().off(),
                pr.pool_slices.get()
            ));
        }
    }

    fn user(&mut self, u: u64, peer: &str) {
        *self.user_peers.entry(u).or_default() += 1;
        if !self.users.insert(u) {
            return;
        }
        let Some(ur) = self.visit::<UserRec>(u, "user", &|| peer.to_string()) else { return };
        let uid = ur.uid.get();
        self.expect(TAG_USER, 0, uid, u, &|| format!("user {uid}"));
        self.share_list(TAG_SHARE_USER, u, ur.shares.get().off(), &format!("user {uid}"));
    }

    fn share_list(&mut self, tag: u64, owner: u64, first: u64, name: &str) {
        let list = self.list::<ShareRec>(first, |s| s.next.get().off(), &|| format!("{name}: share list"));
        for s in list {
            let Some(sr) = self.visit::<ShareRec>(s, "share", &|| name.to_string()) else { continue };
            if sr.key1.get() != (tag << 56 | owner) {
                self.bad(format!("{name}: share {s:#x} has key {:#x}, expected {:#x}", sr.key1.get(), tag << 56 | owner));
            }
            self.expect(tag, owner, sr.key2.get(), s, &|| name.to_string());
            self.shares.insert(s, owner);
            self.share_used.entry(s).or_insert([0; NRES]);
        }
    }

    // ------------------------------------------------------------ queues

    fn queue(&mut self, p: u64, pr: &'d PeerRec, name: &str) {
        let list = self.chain::<Entry>(pr.q_head.get().off(), |e| e.next.get().off(), |e| e.prev.get().off(), &|| format!("{name}: queue"));
        let (mut stamp, mut fd_msgs) = (0, 0);
        for &e in &list {
            let er = self.get::<Entry>(e).expect("listed");
            if er.stamp.get() < stamp {
                self.bad(format!("{name}: entry {e:#x} has stamp {} after stamp {stamp}", er.stamp.get()));
            }
            stamp = er.stamp.get();
            if er.kind.get() == ENTRY_DATA && er.n_fds.get() > 0 {
                fd_msgs += 1;
            }
            self.entry(p, e, true, name);
        }
        let last = list.last().copied().unwrap_or(0);
        if pr.q_tail.get().off() != last {
            self.bad(format!("{name}: queue tail {:#x}, but the last entry is {last:#x}", pr.q_tail.get().off()));
        }
        if pr.q_len.get() != list.len() as u64 {
            self.bad(format!("{name}: q_len {} but {} entries queued", pr.q_len.get(), list.len()));
        }
        if pr.q_fd_msgs.get() != fd_msgs {
            self.bad(format!("{name}: q_fd_msgs {} but {fd_msgs} queued messages carry fds", pr.q_fd_msgs.get()));
        }
        if stamp > self.tx.hdr().clock.get() {
            self.bad(format!("{name}: stamp {stamp} ahead of the clock {}", self.tx.hdr().clock.get()));
        }
    }

    /// A queued entry or (not `queued`) a seed of peer `p`.
    fn entry(&mut self, p: u64, e: u64, queued: bool, peer: &str) {
        *self.entries.entry(e).or_default() += 1;
        if self.entries[&e] > 1 {
            self.bad(format!("{peer}: entry {e:#x} is queued or a seed more than once"));
            return;
        }
        let name = format!("{peer}: entry {e:#x}");
        let Some(er) = self.visit::<Entry>(e, "entry", &|| peer.to_string()) else { return };
        if er.peer.get().off() != p {
            self.bad(format!("{name}: belongs to peer {:#x}", er.peer.get().off()));
        }
        if er.queued.get() != queued as u32 {
            self.bad(format!("{name}: queued flag {} (expected {})", er.queued.get(), queued as u32));
        }
        match er.kind.get() {
            ENTRY_DATA => self.data_entry(p, e, er, queued, &name),
            ENTRY_DESTROY if queued => {
                let h = er.subject.get();
                self.handle_subject(h, p, &name);
            }
            ENTRY_RELEASE if queued => {
                let n = er.subject.get();
                match self.get::<Node>(n) {
                    Some(nr) if nr.owner.get().off() == p => self.nodes.entry(n).or_default().release_entries.push(e),
                    Some(nr) => self.bad(format!("{name}: NODE_RELEASE of node {n:#x} owned by {:#x}", nr.owner.get().off())),
                    None => self.bad(format!("{name}: NODE_RELEASE of a bad node {n:#x}")),
                }
            }
            k => self.bad(format!("{name}: bad kind {k}{}", if queued { "" } else { " for a seed" })),
        }
    }

    fn handle_subject(&mut self, h: u64, p: u64, name: &str) {
        match self.get::<Handle>(h) {
            Some(hr) if hr.holder.get().off() == p => {
                self.handles.entry(h).or_default().subjects += 1;
                self.nodes.entry(hr.node.get().off()).or_default();
            }
            Some(hr) => self.bad(format!("{name}: subject handle {h:#x} is held by {:#x}", hr.holder.get().off())),
            None => self.bad(format!("{name}: bad subject handle {h:#x}")),
        }
    }

    fn data_entry(&mut self, p: u64, e: u64, er: &'d Entry, queued: bool, name: &str) {
        let (n_bytes, n_handles, n_fds) = (er.n_bytes.get(), er.n_handles.get(), er.n_fds.get());
        let dest = er.subject.get();
        match (queued, dest) {
            (true, 0) => self.bad(format!("{name}: queued message without destination")),
            (false, d) if d != 0 => self.bad(format!("{name}: seed with destination {d:#x}")),
            (_, 0) => {}
            (_, d) => self.handle_subject(d, p, name),
        }
        // the slice
        let s = er.slice.get().off();
        match self.get::<Region>(s) {
            Some(sr) => {
                *self.slice_refs.entry(s).or_default() += 1;
                let want = slice_size_checked(n_bytes, n_handles, n_fds);
                if Some(sr.size.get()) != want {
                    self.bad(format!("{name}: slice of {} bytes for {n_bytes} bytes, {n_handles} handles, {n_fds} fds", sr.size.get()));
                }
            }
            None => self.bad(format!("{name}: bad slice {s:#x}")),
        }
        // payload handles
        let mut live_slots = 0;
        if n_handles > 0 {
            let arr = er.handles.get();
            let size = alloc::block_size(n_handles.saturating_mul(8));
            if self.visit_block(arr, size, "handle array", &|| name.to_string()).is_some() {
                match self.seg.try_cells(arr, n_handles as usize) {
                    Some(slots) => {
                        for slot in slots {
                            let h = slot.get();
                            if h == 0 {
                                continue;
                            }
                            live_slots += 1;
                            match self.get::<Handle>(h) {
                                Some(hr) if hr.holder.get().off() == p => {
                                    self.handles.entry(h).or_default().slots += 1;
                                    self.nodes.entry(hr.node.get().off()).or_default();
                                }
                                Some(hr) => self.bad(format!("{name}: payload handle {h:#x} is held by {:#x}", hr.holder.get().off())),
                                None => self.bad(format!("{name}: bad payload handle {h:#x}")),
                            }
                        }
                    }
                    None => self.bad(format!("{name}: handle array {arr:#x} outside the segment")),
                }
            }
        }
        if n_fds > 0 {
            let nonce = er.nonce.get();
            self.expect(TAG_NONCE, 0, nonce, e, &|| name.to_string());
        }
        // what it charges its receiver
        let bytes = self.get::<Region>(s).map_or(0, |r| r.size.get() as i64);
        let want = [1, live_slots, bytes, n_fds as i64];
        for (res, label) in [(RES_SLICES, "slices"), (RES_HANDLES, "handles"), (RES_BYTES, "bytes"), (RES_FDS, "fds")] {
            let c = er.charged[res].get();
            if c != want[res] {
                self.bad(format!("{name}: charged {c} {label}, expected {}", want[res]));
            }
            if res != RES_SLICES {
                let sum = &mut self.charges.get_mut(&p).expect("peer").res[res];
                *sum = sum.wrapping_add(c);
            }
        }
        let amounts = [1, n_handles as i64, want[RES_BYTES], n_fds as i64];
        for s in [er.share_user.get().off(), er.share_peer.get().off()] {
            if s == 0 {
                self.bad(format!("{name}: no fair-share record"));
                continue;
            }
            let used = self.share_used.entry(s).or_insert([0; NRES]);
            for (u, a) in used.iter_mut().zip(amounts) {
                *u = u.wrapping_add(a);
            }
        }
    }

    // -------------------------------------------------------------- pools

    fn pool(&mut self, p: u64, pr: &'d PeerRec, name: &str) {
        let what = || format!("{name}: pool regions");
        let regions = self.chain::<Region>(pr.pool_regions.get().off(), |r| r.next.get().off(), |r| r.prev.get().off(), &what);
        let (mut at, mut prev, mut prev_free, mut slices, mut max_end) = (0u64, 0u64, false, 0u64, 0u64);
        let mut free_set = HashSet::new();
        for &r in &regions {
            let Some(rr) = self.visit::<Region>(r, "region", &|| name.to_string()) else { continue };
            let (off, size, free) = (rr.off.get(), rr.size.get(), rr.free.get() == 1);
            if off != at || size == 0 {
                self.bad(format!("{name}: region {r:#x} covers {off:#x}+{size:#x}, expected to start at {at:#x}"));
            }
            if free && prev_free {
                self.bad(format!("{name}: free regions {prev:#x} and {r:#x} are adjacent (not merged)"));
            }
            if free {
                free_set.insert(r);
                if rr.published.get() != 0 || rr.referenced.get() != 0 || rr.clean.get() > 2 {
                    self.bad(format!("{name}: free region {r:#x} is marked published/referenced/clean {}/{}/{}", rr.published.get(), rr.referenced.get(), rr.clean.get()));
                }
            } else {
                slices += 1;
                max_end = off.saturating_add(size);
                self.expect(TAG_SLICE, p, off, r, &|| name.to_string());
                let refs = self.slice_refs.get(&r).copied().unwrap_or(0);
                if rr.referenced.get() != refs.min(1) || refs > 1 {
                    self.bad(format!("{name}: slice {off:#x} marked referenced {} but {refs} messages hold it", rr.referenced.get()));
                }
                if rr.referenced.get() == 0 && rr.published.get() == 0 {
                    self.bad(format!("{name}: slice {off:#x} is neither referenced nor published (should be free)"));
                }
            }
            at = off.saturating_add(size);
            prev = r;
            prev_free = free;
        }
        let size = pr.pool_size.get();
        if at != size.wrapping_sub(1) || (size != POOL_SIZE && size != POOL_SIZE_FINAL) {
            self.bad(format!("{name}: pool regions end at {at:#x} in a pool of {size:#x} bytes"));
        }
        if slices != pr.pool_slices.get() {
            self.bad(format!("{name}: pool_slices {} but {slices} slices", pr.pool_slices.get()));
        }
        if max_end > pr.pool_dirty_end.get() {
            self.bad(format!("{name}: a slice ends at {max_end:#x}, beyond pool_dirty_end {:#x}", pr.pool_dirty_end.get()));
        }
        let what = || format!("{name}: free regions");
        for r in self.chain::<Region>(pr.pool_free.get().off(), |r| r.fnext.get().off(), |r| r.fprev.get().off(), &what) {
            if !free_set.remove(&r) {
                self.bad(format!("{name}: {r:#x} is on the free region list but not a free region of the pool"));
            }
        }
        for r in free_set {
            self.bad(format!("{name}: free region {r:#x} is missing from the free region list"));
        }
    }

    // ------------------------------------------------- nodes and handles

    /// Visits every node found so far and every handle on their lists,
    /// until nothing new turns up.
    fn walk_nodes(&mut self) {
        let mut done = HashSet::new();
        loop {
            let todo: Vec<u64> = self.nodes.keys().copied().filter(|n| !done.contains(n)).collect();
            if todo.is_empty() {
                break;
            }
            for n in todo {
                done.insert(n);
                let name = format!("node {n:#x}");
                let Some(_) = self.visit::<Node>(n, "node", &|| name.clone()) else {
                    if self.get::<Node>(n).is_none() {
                        self.nodes.remove(&n);
                    }
                    continue;
                };
                let nr = self.get::<Node>(n).expect("visited");
                let what = || format!("{name}: handle list");
                for h in self.chain::<Handle>(nr.handles.get().off(), |h| h.node_next.get().off(), |h| h.node_prev.get().off(), &what) {
                    let Some(hr) = self.visit::<Handle>(h, "handle", &|| name.clone()).or_else(|| self.get::<Handle>(h)) else { continue };
                    if hr.node.get().off() != n {
                        self.bad(format!("{name}: handle {h:#x} on its list belongs to node {:#x}", hr.node.get().off()));
                    }
                    self.handles.entry(h).or_default().node_lists += 1;
                    let holder = hr.holder.get().off();
                    if holder != 0 && !self.charges.contains_key(&holder) {
                        self.bad(format!("{name}: handle {h:#x} is held by {holder:#x}, which is not a peer"));
                    }
                }
            }
        }
    }

    fn check_handles(&mut self) {
        let handles: Vec<u64> = self.handles.keys().copied().collect();
        for h in handles {
            let name = format!("handle {h:#x}");
            let Some(hr) = self.get::<Handle>(h) else {
                self.bad(format!("{name}: outside the heap"));
                continue;
            };
            if !self.blocks.contains_key(&h) {
                // Reached only from a holder list or an entry: not on its node's list.
                let _ = self.visit::<Handle>(h, "handle", &|| name.clone());
            }
            let seen = &self.handles[&h];
            let (holder_lists, node_lists, slots, subjects) = (seen.holder_lists, seen.node_lists, seen.slots, seen.subjects);
            let holder = hr.holder.get().off();
            let node = hr.node.get().off();
            if node_lists != 1 {
                self.bad(format!("{name}: on its node's handle list {node_lists} times"));
            }
            if holder_lists != (holder != 0) as u32 {
                self.bad(format!("{name}: held by {holder:#x} and on holder lists {holder_lists} times"));
            }
            let (user_refs, inflight, refs) = (hr.user_refs.get(), hr.inflight.get(), hr.refs.get());
            if inflight != slots {
                self.bad(format!("{name}: inflight {inflight} but {slots} queued payload entries carry it"));
            }
            if refs != slots.wrapping_add(subjects) {
                self.bad(format!("{name}: refs {refs} but {} entries point at it", slots + subjects));
            }
            if hr.has_id.get() > 1 {
                self.bad(format!("{name}: has_id is {}", hr.has_id.get()));
            }
            let nr = self.get::<Node>(node);
            let is_owner = nr.is_some_and(|nr| nr.owner_handle.get().off() == h);
            if holder != 0 {
                self.expect(TAG_NODE_HANDLE, holder, node, h, &|| name.clone());
                if user_refs > 0 {
                    if hr.has_id.get() != 1 {
                        self.bad(format!("{name}: {user_refs} user references but no ID"));
                    } else {
                        self.expect(TAG_HANDLE_ID, holder, hr.id.get(), h, &|| name.clone());
                    }
                }
                let sum = &mut self.charges.entry(holder).or_default().res[RES_HANDLES];
                *sum = sum.wrapping_add(user_refs as i64);
            } else if !is_owner {
                self.bad(format!("{name}: a remote handle without holder"));
            } else if user_refs > 0 {
                self.bad(format!("{name}: an orphaned owner handle with {user_refs} user references"));
            }
            if user_refs == 0 && refs == 0 {
                let node_refs = nr.map_or(0, |nr| nr.refs.get());
                if !is_owner || node_refs <= 1 {
                    self.bad(format!("{name}: nothing references it, yet it was not freed"));
                }
            }
        }
    }

    fn check_nodes(&mut self) {
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        for n in nodes {
            let name = format!("node {n:#x}");
            let Some(nr) = self.get::<Node>(n) else { continue };
            let owner = nr.owner.get().off();
            let oh = nr.owner_handle.get().off();
            let mut handles = 0u64;
            let (mut user_refs, mut inflight) = (0u64, 0u64);
            let mut owner_handle_refs = 0;
            let list = self.list::<Handle>(nr.handles.get().off(), |h| h.node_next.get().off(), &|| format!("{name}: handle list"));
            let mut has_oh = false;
            for h in list {
                let Some(hr) = self.get::<Handle>(h) else { continue };
                handles += 1;
                user_refs = user_refs.wrapping_add(hr.user_refs.get());
                inflight = inflight.wrapping_add(hr.inflight.get());
                if h == oh {
                    has_oh = true;
                    owner_handle_refs = hr.user_refs.get();
                    if hr.holder.get().off() != owner {
                        self.bad(format!("{name}: owned by {owner:#x}, but its owner handle is held by {:#x}", hr.holder.get().off()));
                    }
                }
            }
            if !has_oh {
                self.bad(format!("{name}: owner handle {oh:#x} is not on its handle list"));
            }
            let seen = &self.nodes[&n];
            let (owner_lists, releases) = (seen.owner_lists, seen.release_entries.clone());
            if owner != 0 {
                if owner_lists != 1 || nr.in_owner_list.get() != 1 {
                    self.bad(format!("{name}: in_owner_list {}, on its owner's list {owner_lists} times", nr.in_owner_list.get()));
                }
                if !self.charges.contains_key(&owner) {
                    self.bad(format!("{name}: owner {owner:#x} is not a peer"));
                }
            } else {
                if owner_lists != 0 || nr.in_owner_list.get() != 0 {
                    self.bad(format!("{name}: without owner, yet on an owner list"));
                }
                if nr.released.get() != 1 {
                    self.bad(format!("{name}: without owner, yet not released"));
                }
            }
            if nr.destroyed.get() > 1 || nr.released.get() > 1 {
                self.bad(format!("{name}: destroyed {} released {}", nr.destroyed.get(), nr.released.get()));
            }
            if nr.destroyed.get() == 0 && owner == 0 {
                self.bad(format!("{name}: alive without owner"));
            }
            let re = nr.release_entry.get().off();
            match (re, releases.as_slice()) {
                (0, []) => {}
                (e, [q]) if e == *q => {}
                (e, q) => self.bad(format!("{name}: release entry {e:#x}, queued NODE_RELEASE entries {q:x?}")),
            }
            let want_refs = handles + releases.len() as u64;
            if nr.refs.get() != want_refs {
                self.bad(format!("{name}: refs {} but {handles} handles and {} release entries", nr.refs.get(), releases.len()));
            }
            let strong = user_refs.wrapping_add(inflight).wrapping_sub((owner_handle_refs > 0) as u64);
            if nr.strong.get() != strong {
                self.bad(format!("{name}: strong count {} but references add up to {strong}", nr.strong.get()));
            }
        }
    }

    // ------------------------------------------------------------ quotas

    fn check_quotas(&mut self) {
        let mut by_user: HashMap<u64, [i64; NRES]> = HashMap::new();
        for &p in &self.peers.clone() {
            let Some(pr) = self.get::<PeerRec>(p) else { continue };
            let name = format!("peer {p:#x} (serial {:#x})", pr.serial.get());
            let mut c = self.charges[&p];
            c.res[RES_SLICES] = pr.pool_slices.get() as i64;
            let used = by_user.entry(pr.user.get().off()).or_insert([0; NRES]);
            for (res, label) in [(RES_SLICES, "slices"), (RES_HANDLES, "handles"), (RES_BYTES, "bytes"), (RES_FDS, "fds")] {
                let (max, rem) = (pr.max[res].get(), pr.rem[res].get());
                if max.wrapping_sub(rem) != c.res[res] {
                    self.bad(format!("{name}: {label} quota {max} with {rem} left, but {} are charged", c.res[res]));
                }
                used[res] = used[res].wrapping_add(max.wrapping_sub(rem));
            }
        }
        for (u, used) in by_user {
            let Some(ur) = self.get::<UserRec>(u) else { continue };
            let uid = ur.uid.get();
            for (res, label) in [(RES_SLICES, "slices"), (RES_HANDLES, "handles"), (RES_BYTES, "bytes"), (RES_FDS, "fds")] {
                let (max, rem) = (ur.max[res].get(), ur.rem[res].get());
                if max.wrapping_sub(rem) != used[res] {
                    self.bad(format!("user {uid}: {label} quota {max} with {rem} left, but its peers were charged {}", used[res]));
                }
            }
            let peers = self.user_peers.get(&u).copied().unwrap_or(0);
            if ur.refs.get() != peers {
                self.bad(format!("user {uid}: refs {} but {peers} peers", ur.refs.get()));
            }
        }
        let shares: Vec<(u64, [i64; NRES])> = self.share_used.iter().map(|(s, u)| (*s, *u)).collect();
        for (s, used) in shares {
            if !self.shares.contains_key(&s) {
                self.bad(format!("share {s:#x}: named by messages but on no receiver's list"));
                continue;
            }
            let Some(sr) = self.get::<ShareRec>(s) else { continue };
            let have: Vec<i64> = sr.used.iter().map(|c| c.get()).collect();
            if have != used {
                self.bad(format!("share {s:#x} (sender uid {}): used {have:?}, but queued messages add up to {used:?}", sr.key2.get()));
            }
        }
    }

    // -------------------------------------------------- heap and table

    fn check_heap_accounting(&mut self) {
        let h = self.tx.hdr();
        let cap = h.table_cap.get();
        if cap != 0 {
            let off = h.table.get();
            let _ = self.visit_block(off, alloc::block_size(cap.saturating_mul(24)), "table", &|| "header".into());
        }
        let (count, bytes) = (self.blocks.len() as u64, self.blocks.values().map(|b| b.0).sum::<u64>());
        if count != h.live_blocks.get() || bytes != h.live_bytes.get() {
            self.bad(format!(
                "heap: {} blocks of {} bytes are allocated, but {count} blocks of {bytes} bytes are reachable",
                h.live_blocks.get(),
                h.live_bytes.get()
            ));
        }
        let mut all: Vec<(u64, u64, &'static str)> = self.blocks.iter().map(|(o, (s, k))| (*o, *s, *k)).collect();
        all.extend(self.free.iter().filter(|(o, _)| !self.blocks.contains_key(o)).map(|(o, s)| (*o, *s, "free block")));
        all.sort_unstable();
        for w in all.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                self.bad(format!("heap: {} at {:#x} (+{:#x}) overlaps {} at {:#x}", w[0].2, w[0].0, w[0].1, w[1].2, w[1].0));
            }
        }
    }

    fn check_table(&mut self) {
        let h = self.tx.hdr();
        let cap = h.table_cap.get();
        let Some(slots) = (cap > 0).then(|| self.seg.try_cells(h.table.get(), (cap * 3) as usize)).flatten() else {
            if !self.expected.is_empty() {
                self.bad(format!("table: missing, but {} entries belong in it", self.expected.len()));
            }
            return;
        };
        let (mut used, mut tombs) = (0u64, 0u64);
        let mut found = HashMap::new();
        for i in 0..cap as usize {
            let (k1, k2, v) = (slots[i * 3].get(), slots[i * 3 + 1].get(), slots[i * 3 + 2].get());
            match k1 {
                0 => continue,
                1 => {
                    tombs += 1;
                    continue;
                }
                _ => used += 1,
            }
            let (tag, owner) = (k1 >> 56, k1 & ((1 << 56) - 1));
            let desc = format!("table: {} key {k2:#x} of {owner:#x} -> {v:#x}", tag_name(tag));
            if found.insert((tag, owner, k2), v).is_some() {
                self.bad(format!("{desc}: duplicate key"));
                continue;
            }
            match self.expected.get(&(tag, owner, k2)) {
                Some(&want) if want == v => {}
                Some(&want) => self.bad(format!("{desc}: should point at {want:#x}")),
                None => self.bad(format!("{desc}: stale (no such record)")),
            }
            // A lookup must find it: no empty slot between its home and it.
            let mut j = (crate::table::hash(k1, k2) as usize) & (cap as usize - 1);
            let mut probes = 0;
            while j != i && probes < cap {
                if slots[j * 3].get() == 0 {
                    self.bad(format!("{desc}: unreachable by lookup"));
                    break;
                }
                j = (j + 1) & (cap as usize - 1);
                probes += 1;
            }
        }
        let expected: Vec<((u64, u64, u64), u64)> = self.expected.iter().map(|(k, v)| (*k, *v)).collect();
        for ((tag, owner, key), v) in expected {
            if !found.contains_key(&(tag, owner, key)) {
                self.bad(format!("table: {} key {key:#x} of {owner:#x} -> {v:#x} is missing", tag_name(tag)));
            }
        }
        if used != h.table_used.get() || tombs != h.table_tombs.get() {
            self.bad(format!(
                "table: counts {} used, {} tombstones, but holds {used} and {tombs}",
                h.table_used.get(),
                h.table_tombs.get()
            ));
        }
        if (used + tombs) * 2 > cap {
            self.bad(format!("table: {used} used and {tombs} tombstones in {cap} slots (more than half full)"));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Each test builds a small bus, damages its segment in one way and
    //! checks that the checker says what is wrong.
    use super::*;
    use crate::usermem::SimMem;
    use crate::{OpenFlags, Peer};
    use std::path::PathBuf;
    use std::sync::Arc;
    use uapi::*;

    /// A domain in a fresh directory, removed afterwards.
    pub(crate) struct TestBus {
        pub dir: PathBuf,
        pub peers: Vec<(i32, Peer)>,
    }

    impl TestBus {
        /// Three peers: a holds a handle to a node of b and one of c, b
        /// has a queued message from a that carries a node of a, c has a
        /// seed; so every kind of record exists.
        pub fn new(name: &str) -> TestBus {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let dir = PathBuf::from(format!("/dev/shm/bus1-check-{name}-{}-{nanos}", std::process::id()));
            let mut bus = TestBus { dir, peers: Vec::new() };
            for _ in 0..3 {
                let flags = OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true };
                bus.peers.push(Peer::open(&bus.dir, flags).unwrap());
            }
            let (a, b, c) = (bus.p(0), bus.p(1), bus.p(2));
            let to_b = b.1.handle_transfer(b.0, 0x100, Some(&a.1)).unwrap();
            c.1.handle_transfer(c.0, 0x200, Some(&a.1)).unwrap();
            bus.send(0, &[to_b], b"hello", &[0x300], 0);
            bus.send(2, &[], b"seed", &[0x400], BUS1_SEND_FLAG_SEED);
            let d = bus.dom();
            assert_eq!(d.check_invariants(), Vec::<String>::new(), "the bus is consistent before it is damaged");
            bus
        }

        pub fn p(&self, i: usize) -> &(i32, Peer) {
            &self.peers[i]
        }

        pub fn dom(&self) -> Arc<Domain> {
            self.peers[0].1.dom.clone()
        }

        pub fn send(&self, from: usize, dests: &[u64], data: &[u8], handles: &[u64], flags: u64) {
            let mem = SimMem::new();
            let vec = [mem.put(data), data.len() as u64];
            let cmd = bus1_cmd_send {
                flags,
                ptr_destinations: mem.put_u64s(dests),
                ptr_errors: 0,
                n_destinations: dests.len() as u64,
                ptr_vecs: mem.put_u64s(&vec),
                n_vecs: 1,
                ptr_handles: mem.put_u64s(handles),
                n_handles: handles.len() as u64,
                ptr_fds: 0,
                n_fds: 0,
            };
            let (fd, p) = self.p(from);
            p.send(*fd, &cmd, &mem).unwrap();
        }

        /// Changes the segment with `f` in a committed transaction.
        pub fn damage(&self, f: impl FnOnce(&Txn, &[P<PeerRec>])) {
            let d = self.dom();
            let tx = d.lock().unwrap();
            let recs: Vec<P<PeerRec>> = self.peers.iter().map(|(_, p)| p.rec).collect();
            f(&tx, &recs);
            tx.commit().unwrap();
        }

        /// The checker's report, which must mention every one of `words`.
        pub fn expect_report(&self, words: &[&str]) -> Vec<String> {
            let report = self.dom().check_invariants();
            let all = report.join("\n");
            for w in words {
                assert!(all.contains(w), "the report does not mention {w:?}:\n{all}");
            }
            report
        }
    }

    impl Drop for TestBus {
        fn drop(&mut self) {
            for (fd, p) in self.peers.drain(..) {
                crate::sys::close(fd);
                p.closed();
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
            // What the old RECV left behind: an ID for a handle that is gone.
            crate::table::insert(tx, TAG_HANDLE_ID, p[0].off(), 0x1b, HEAP_OFF + 0x100000).unwrap();
        });
        bus.expect_report(&["HANDLE_ID key 0x1b", "stale"]);
    }

    #[test]
    fn a_missing_table_entry() {
        let bus = TestBus::new("missing");
        bus.damage(|tx, p| {
            let serial = tx.rec(p[1]).serial.get();
            crate::table::remove(tx, TAG_PEER, 0, serial);
        });
        bus.expect_report(&["PEER key", "is missing"]);
    }

    #[test]
    fn a_bad_offset() {
        let bus = TestBus::new("badoff");
        bus.damage(|tx, p| tx.set(&tx.rec(p[1]).q_head, P::from_off(SEG_SIZE + 8)));
        bus.expect_report(&["queue", "outside the heap"]);
    }

    #[test]
    fn a_cycle_in_a_list() {
        let bus = TestBus::new("cycle");
        bus.damage(|tx, p| {
            let h = first_handle(tx, p[0]);
            let mut last = h;
            while !tx.rec(last).holder_next.get().is_null() {
                last = tx.rec(last).holder_next.get();
            }
            tx.set(&tx.rec(last).holder_next, h);
        });
        bus.expect_report(&["handle list", "does not end"]);
    }

    #[test]
    fn a_wrong_back_link() {
        let bus = TestBus::new("backlink");
        bus.damage(|tx, p| {
            let e = tx.rec(p[1]).q_head.get();
            tx.set(&tx.rec(e).prev, e);
        });
        bus.expect_report(&["queue", "links back to"]);
    }

    #[test]
    fn reference_counts_that_do_not_add_up() {
        let bus = TestBus::new("refs");
        bus.damage(|tx, p| {
            let h = first_handle(tx, p[0]);
            let n = tx.rec(h).node.get();
            tx.add(&tx.rec(n).strong, 1);
            tx.add(&tx.rec(n).refs, 1);
            tx.add(&tx.rec(h).refs, 1);
        });
        bus.expect_report(&["strong count", "refs 3 but 2 handles", "entries point at it"]);
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
    fn quota_that_does_not_add_up() {
        let bus = TestBus::new("quota");
        bus.damage(|tx, p| {
            tx.add_i(&tx.rec(p[1]).rem[RES_HANDLES], -1);
            let u = tx.rec(p[2]).user.get();
            tx.add_i(&tx.rec(u).rem[RES_BYTES], 8);
        });
        bus.expect_report(&["handles quota", "bytes quota"]);
    }

    #[test]
    fn a_fair_share_that_does_not_add_up() {
        let bus = TestBus::new("share");
        bus.damage(|tx, p| {
            let s = tx.rec(p[1]).shares.get();
            tx.add_i(&tx.rec(s).used[RES_SLICES], 1);
        });
        bus.expect_report(&["share", "queued messages add up"]);
    }

    #[test]
    fn pool_accounting_that_does_not_add_up() {
        let bus = TestBus::new("pool");
        bus.damage(|tx, p| {
            tx.add(&tx.rec(p[1]).pool_slices, 1);
            let r = tx.rec(p[2]).pool_regions.get();
            tx.add(&tx.rec(r).size, 8);
        });
        bus.expect_report(&["pool_slices", "expected to start at"]);
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
            let h = first_handle(tx, p[0]);
            crate::alloc::free(tx, h.off(), core::mem::size_of::<Handle>() as u64);
        });
        bus.expect_report(&["on a free list (used after free)"]);
    }

    #[test]
    fn a_record_reachable_twice() {
        let bus = TestBus::new("twice");
        bus.damage(|tx, p| {
            // b's queued message is also c's seed.
            let e = tx.rec(p[1]).q_head.get();
            tx.set(&tx.rec(p[2]).seed, e);
        });
        bus.expect_report(&["more than once"]);
    }

    /// Whatever word of the heap is damaged, the checker reports instead
    /// of failing (a panic of its own would say "cannot check").
    #[test]
    fn the_checker_survives_any_damaged_word() {
        let bus = TestBus::new("anyword");
        let d = bus.dom();
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
            cell.raw_set(new);
            let report = d.check_invariants();
            cell.raw_set(old);
            assert!(!report.iter().any(|l| l.contains("cannot check")), "at {off:#x}, {old:#x} -> {new:#x}: {report:?}");
            reported += !report.is_empty() as u32;
        }
        assert_eq!(d.check_invariants(), Vec::<String>::new());
        assert!(reported > 100, "only {reported} of 2000 damaged words were noticed");
    }

    #[test]
    fn a_damage_mark() {
        let bus = TestBus::new("mark");
        bus.dom().mark_damaged("found a test");
        let report = bus.expect_report(&["marked damaged", "found a test"]);
        assert_eq!(report.len(), 1, "nothing else is wrong: {report:?}");
    }
}
