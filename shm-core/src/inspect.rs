//! A consistent picture of a domain for tools (`bus1ctl status`): its
//! peers with their queues, pools and quotas, every node with the handles
//! held on it, and the accounting records.
//!
//! [`Domain::snapshot`] copies everything into plain values inside one
//! short transaction that changes nothing (it is aborted), so the picture
//! is consistent, and the domain lock is released before the caller looks
//! at it: printing never holds up the bus. Walks are bounded and every
//! offset is checked before it is followed, so a damaged segment gives an
//! error, never a wild read or an endless loop.

use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::P;
use crate::txn::Txn;
use std::collections::HashMap;
use std::path::PathBuf;

/// Everything a tool shows about a domain.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The domain directory.
    pub dir: PathBuf,
    /// Where its files are (`segment`, pools, sockets): the domain
    /// directory itself on a memory file system, else a directory of its
    /// own in memory.
    pub memory_dir: PathBuf,
    /// The segment's layout version.
    pub version: u64,
    /// The highest clock of the peers' queues (each queue keeps its own;
    /// stamps of entries are taken from them).
    pub clock: u64,
    /// The serial the next peer will get.
    pub next_serial: u64,
    /// Segment heap: bytes and blocks in use, and the bytes reserved for
    /// it so far.
    pub heap_bytes: u64,
    pub heap_blocks: u64,
    pub heap_reserved: u64,
    /// Entries of the lookup table.
    pub table_entries: u64,
    /// Transactions of dead lock holders rolled back so far.
    pub recoveries: u64,
    pub users: Vec<UserInfo>,
    /// By serial.
    pub peers: Vec<PeerInfo>,
    /// Every node reachable from a peer (owned or held), by owner and ID.
    pub nodes: Vec<NodeInfo>,
}

/// A quota counter: the maximum and what is in use (maximum minus what
/// remains; negative remainders after a lowered limit show as more use
/// than the maximum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub max: i64,
    pub used: i64,
}

/// The four quota resources, in PEER_QUERY order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub slices: Quota,
    pub handles: Quota,
    pub inflight_bytes: Quota,
    pub inflight_fds: Quota,
}

/// The accounting record of one user (real UID of the openers).
#[derive(Clone, Debug)]
pub struct UserInfo {
    pub uid: u64,
    /// Peers and queued charges that keep the record.
    pub refs: u64,
    pub quota: Quotas,
}

#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub serial: u64,
    pub connected: bool,
    /// O_ACCMODE of the open that made it.
    pub access: u32,
    pub uid: u32,
    pub gid: u32,
    /// Peer flags (BUS1_PEER_FLAG_*).
    pub flags: u64,
    /// The ABI it speaks (None while undetermined), and whether its opener
    /// fixed it (`BUS1_ABI`) rather than its first call latching it.
    pub abi: Option<crate::Abi>,
    pub abi_fixed: bool,
    /// The address of the peer's socket (what its fds are bound to).
    pub socket: PathBuf,
    /// The peer's pool file.
    pub pool_file: PathBuf,
    pub queue: QueueInfo,
    pub pool: PoolInfo,
    pub quota: Quotas,
    /// Handles this peer holds (its own nodes' owner handles included).
    pub handles: Vec<HandleInfo>,
    /// IDs of the nodes it owns that are not destroyed.
    pub live_nodes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueInfo {
    /// Entries queued: messages and notifications.
    pub len: u64,
    pub data: u64,
    pub node_destroy: u64,
    pub node_release: u64,
    /// Queued messages that carry file descriptors.
    pub with_fds: u64,
    /// Whether the peer has a seed message.
    pub seed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolInfo {
    /// The pool's length (512 MiB, or 4 GiB for a peer of the final ABI).
    pub size: u64,
    /// Allocated slices, and how many of them RECV handed out (published).
    pub slices: u64,
    pub published: u64,
    /// Bytes in allocated slices.
    pub used_bytes: u64,
    /// The largest free range.
    pub largest_free: u64,
}

/// One handle, seen from its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleInfo {
    /// The holder's ID for it; None while it has none (only carried by
    /// queued messages).
    pub id: Option<u64>,
    pub user_refs: u64,
    /// Queued messages to the holder that carry it.
    pub inflight: u64,
    /// The node: its owner's serial (None once the owner is gone) and the
    /// owner's ID for it.
    pub node_owner: Option<u64>,
    pub node_id: Option<u64>,
    /// Whether this is the owner's own handle.
    pub owner: bool,
}

#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The owner's serial; None once the owner is gone.
    pub owner: Option<u64>,
    /// The owner's ID for the node; None once the owner let go of it.
    pub id: Option<u64>,
    pub destroyed: bool,
    pub released: bool,
    /// User references except the owner's pin, plus queued messages
    /// carrying it.
    pub strong: u64,
    /// Every handle on it: holder serial (None for an owner handle whose
    /// owner is gone), the holder's ID, user references, inflight.
    pub holders: Vec<(Option<u64>, Option<u64>, u64, u64)>,
}

/// Longest list a walk follows before it calls the segment damaged.
const WALK_MAX: usize = 1 << 26;

/// Follows a linked list from `first`, checking every record.
fn walk<T>(tx: &Txn, first: P<T>, next: impl Fn(&T) -> P<T>) -> Result<Vec<P<T>>> {
    let mut v = Vec::new();
    let mut p = first;
    while !p.is_null() {
        if !tx.domain().seg.holds(p) || v.len() >= WALK_MAX {
            return Err(Errno::ENOTRECOVERABLE);
        }
        v.push(p);
        p = next(tx.rec(p));
    }
    Ok(v)
}

fn checked<T>(tx: &Txn, p: P<T>) -> Result<P<T>> {
    if tx.domain().seg.holds(p) {
        Ok(p)
    } else {
        Err(Errno::ENOTRECOVERABLE)
    }
}

fn quotas(max: &[crate::shm::Cell<i64>; NRES], used: [i64; NRES]) -> Quotas {
    let q = |i: usize| Quota { max: max[i].get(), used: used[i] };
    Quotas { slices: q(RES_SLICES), handles: q(RES_HANDLES), inflight_bytes: q(RES_BYTES), inflight_fds: q(RES_FDS) }
}

impl Domain {
    /// A consistent copy of the domain's state, taken in one transaction
    /// that changes nothing; the lock is released when this returns. The
    /// message state of a peer whose lock another holder has (a process
    /// stopped in a section) is read as it stands, without waiting.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let tx = self.lock()?;
        let r = take(&tx);
        tx.abort();
        r
    }
}

fn take(tx: &Txn) -> Result<Snapshot> {
    let dom = tx.domain();
    let h = tx.hdr();
    let peer_recs = walk(tx, h.peers.get(), |p: &PeerRec| p.next.get())?;
    let serial_of: HashMap<u64, u64> = peer_recs.iter().map(|p| (p.off(), tx.rec(*p).serial.get())).collect();
    let owner_serial = |node: &Node| {
        let o = node.owner.get();
        (!o.is_null()).then(|| serial_of.get(&o.off()).copied()).flatten()
    };
    let owner_id = |tx: &Txn, node: &Node| -> Result<Option<u64>> {
        let oh = node.owner_handle.get();
        if oh.is_null() {
            return Ok(None);
        }
        let r = tx.rec(checked(tx, oh)?);
        Ok((r.has_id.get() == 1).then(|| r.id.get()))
    };

    // Per user: its peers' usage (each peer's own, read under its lock
    // where it is free).
    let mut user_used: HashMap<u64, [i64; NRES]> = HashMap::new();
    let mut clock = 0;
    for &p in &peer_recs {
        let r = tx.rec(p);
        let _ = tx.try_hold(p);
        let u = user_used.entry(checked(tx, r.user.get())?.off()).or_default();
        for (res, x) in u.iter_mut().enumerate() {
            *x += r.used[res].load_racy();
        }
        clock = clock.max(r.clock.load());
    }
    let mut users: Vec<UserInfo> = Vec::new();
    let mut peers = Vec::with_capacity(peer_recs.len());
    let mut node_offs: Vec<u64> = Vec::new();
    let mut seen_nodes = std::collections::HashSet::new();
    for &p in &peer_recs {
        let r = tx.rec(p);
        let serial = r.serial.get();
        let user = checked(tx, r.user.get())?;
        let u = tx.rec(user);
        if !users.iter().any(|x| x.uid == u.uid.get()) {
            users.push(UserInfo { uid: u.uid.get(), refs: u.refs.get(), quota: quotas(&u.max, user_used[&user.off()]) });
        }

        let mut queue = QueueInfo { seed: !r.seed.load_racy().is_null(), with_fds: r.q_fd_msgs.load_racy(), ..Default::default() };
        for e in walk(tx, r.q_head.load_racy(), |e: &Msg| e.q_next.load_racy())? {
            queue.len += 1;
            match tx.rec(e).kind.load_racy() {
                ENTRY_DATA => queue.data += 1,
                ENTRY_DESTROY => queue.node_destroy += 1,
                ENTRY_RELEASE => queue.node_release += 1,
                _ => return Err(Errno::ENOTRECOVERABLE),
            }
        }

        let mut pool = PoolInfo { size: r.pool_size.get(), ..Default::default() };
        for s in walk(tx, r.sentinel.get(), |m: &Msg| m.a_next.load_racy())? {
            let m = tx.rec(s);
            pool.largest_free = pool.largest_free.max(m.gap.load_racy());
            if m.kind.load_racy() != ENTRY_SENTINEL {
                pool.slices += 1;
                pool.used_bytes += m.size.load_racy();
                pool.published += (m.state.load_racy() & MS_PUBLISHED != 0) as u64;
            }
        }

        let mut handles = Vec::new();
        for hp in walk(tx, r.handles.get(), |h: &Handle| h.holder_next.get())? {
            let hr = tx.rec(hp);
            let node = checked(tx, hr.node.get())?;
            let nr = tx.rec(node);
            if seen_nodes.insert(node.off()) {
                node_offs.push(node.off());
            }
            handles.push(HandleInfo {
                id: (hr.has_id.get() == 1).then(|| hr.id.get()),
                user_refs: hr.user_refs.get(),
                inflight: hr.inflight.get(),
                node_owner: owner_serial(nr),
                node_id: owner_id(tx, nr)?,
                owner: nr.owner_handle.get() == hp,
            });
        }
        let mut live_nodes = 0;
        for n in walk(tx, r.nodes.get(), |n: &Node| n.owner_next.get())? {
            if seen_nodes.insert(n.off()) {
                node_offs.push(n.off());
            }
            live_nodes += (tx.rec(n).destroyed.get() == 0) as u64;
        }

        use std::os::unix::ffi::OsStringExt;
        peers.push(PeerInfo {
            serial,
            connected: r.state.get() == PEER_CONNECTED,
            access: r.access.get(),
            uid: r.uid.get(),
            gid: r.gid.get(),
            flags: r.flags.get(),
            abi: crate::abi::state(tx, p),
            abi_fixed: crate::abi::fixed(tx, p),
            socket: PathBuf::from(std::ffi::OsString::from_vec(dom.peer_path(serial))),
            pool_file: PathBuf::from(std::ffi::OsString::from_vec(dom.pool_path(serial))),
            queue,
            pool,
            quota: quotas(&r.max, core::array::from_fn(|i| r.used[i].load_racy())),
            handles,
            live_nodes,
        });
    }

    peers.sort_by_key(|p| p.serial);
    let mut nodes = Vec::with_capacity(node_offs.len());
    for off in node_offs {
        let node = P::<Node>::from_off(off);
        let nr = tx.rec(node);
        let mut holders = Vec::new();
        for hp in walk(tx, nr.handles.get(), |h: &Handle| h.node_next.get())? {
            let hr = tx.rec(hp);
            let holder = hr.holder.get();
            let holder = (!holder.is_null()).then(|| serial_of.get(&holder.off()).copied()).flatten();
            holders.push((holder, (hr.has_id.get() == 1).then(|| hr.id.get()), hr.user_refs.get(), hr.inflight.get()));
        }
        // The node's list is newest first: show the order of attachment.
        holders.reverse();
        nodes.push(NodeInfo {
            owner: owner_serial(nr),
            id: owner_id(tx, nr)?,
            destroyed: nr.destroyed.get() == 1,
            released: nr.released.get() == 1,
            strong: nr.strong.get(),
            holders,
        });
    }
    nodes.sort_by_key(|n| (n.owner.is_none(), n.owner, n.id));

    Ok(Snapshot {
        dir: dom.dir().to_path_buf(),
        memory_dir: dom.memory_dir().to_path_buf(),
        version: h.version.get(),
        clock,
        next_serial: h.next_serial.get(),
        heap_bytes: h.live_bytes.get(),
        heap_blocks: h.live_blocks.get(),
        heap_reserved: h.heap_reserved.get() - HEAP_OFF,
        table_entries: h.table_used.get(),
        recoveries: h.recoveries.load(),
        users,
        peers,
        nodes,
    })
}
