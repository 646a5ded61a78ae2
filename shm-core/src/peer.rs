//! Peers: creation, the small ioctls (QUERY, RESET, HANDLE_RELEASE,
//! HANDLE_TRANSFER, NODES_DESTROY, SLICE_RELEASE), flushing, disconnection
//! and the final teardown when the last fd is gone (docs/reference.md §2.1–2.7,
//! 8.1–8.6).

use crate::abi::{self, AbiMode};
use crate::alloc;
use crate::arena;
use crate::capacity;
use crate::creds;
use crate::doorbell::{self, Op};
use crate::domain::Domain;
use crate::entry;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::object;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::sys;
use crate::table;
use crate::txn::Txn;
use crate::usermem::{elem, read_u64, UserMem};
use std::collections::HashSet;
use uapi::*;

pub fn lookup_serial(tx: &Txn, serial: u64) -> Option<P<PeerRec>> {
    table::get(tx, TAG_PEER, 0, serial).map(P::from_off)
}

/// Whether `rec` (an offset remembered by this process) is still the live
/// peer `serial`.
pub fn is_live(tx: &Txn, rec: P<PeerRec>, serial: u64) -> bool {
    // No record at all: a peer found while its domain was damaged.
    let Some(p) = tx.domain().seg.try_rec(rec) else { return false };
    p.magic.get() == PEER_MAGIC && p.serial.get() == serial
}

/// Every peer of the domain.
pub fn all(tx: &Txn) -> Vec<P<PeerRec>> {
    tx.walk(tx.hdr().peers.get(), |p| p.next.get()).collect()
}

/// Creates a peer (8.1): its socket (returned: the peer fd), its pool file
/// and its record. `sock_flags` are SOCK_CLOEXEC/SOCK_NONBLOCK as the
/// opener asked; `mode` is how its ABI is chosen (`abi`).
pub fn create(dom: &Domain, access: u32, sock_flags: i32, mode: AbiMode) -> Result<(i32, u64, P<PeerRec>)> {
    let serial = {
        let tx = dom.lock()?;
        let s = tx.hdr().next_serial.get();
        tx.set(&tx.hdr().next_serial, s + 1);
        tx.commit()?;
        s
    };
    let pool_name = Domain::pool_name(serial);
    let sock_name = Domain::peer_name(serial);
    let cleanup = |fd: i32| {
        sys::close(fd);
        let _ = dom.remove_entry(&pool_name);
        let _ = dom.remove_entry(&sock_name);
    };
    // The socket is bound before the pool file is made: until the record
    // is committed, a live socket is what tells the file sweep
    // (`reaper::sweep_files`) that the opener is still at work.
    let fd = sys::socket_exact(libc::SOCK_DGRAM | sock_flags)?;
    if let Err(e) = dom.bind_socket(fd, &sock_name) {
        cleanup(fd);
        return Err(e);
    }
    let pool_size = abi::initial_pool_size(mode);
    let pool = dom.create_file(&pool_name).and_then(|pfd| {
        let r = sys::ftruncate(pfd, pool_size);
        sys::close(pfd);
        r
    });
    if let Err(e) = pool {
        cleanup(fd);
        return Err(e);
    }
    crate::crash::point("open-files-made");
    let (pidns, userns) = creds::namespaces();
    let tx = match dom.lock() {
        Ok(tx) => tx,
        Err(e) => {
            cleanup(fd);
            return Err(e);
        }
    };
    let r = (|| {
        let (peer, fresh) = alloc::alloc_peer(&tx)?;
        let p = tx.rec(peer);
        if fresh {
            // A new record: nobody can reach its lock before the commit.
            let r = p.lock.init();
            if r != 0 {
                return Err(Errno(r));
            }
            let r = p.rel_lock.init();
            if r != 0 {
                return Err(Errno(r));
            }
        }
        // Fresh or reused, the record comes zeroed but for its locks
        // (`alloc`): its release ring is empty.
        tx.hold(peer);
        let uid = sys::getuid();
        let user = user_get(&tx, uid)?;
        tx.set(&p.magic, PEER_MAGIC);
        tx.set(&p.state, PEER_CONNECTED);
        tx.set(&p.access, access);
        tx.set(&p.serial, serial);
        tx.set(&p.uid, uid);
        tx.set(&p.gid, sys::getgid());
        tx.set(&p.user, user);
        for i in 0..NRES {
            tx.set(&p.max[i], tx.rec(user).max[i].get());
        }
        tx.set(&p.pidns, pidns);
        tx.set(&p.userns, userns);
        tx.set(&p.bell, doorbell::bell_alloc(&tx)?);
        abi::init(&tx, peer, mode);
        capacity::dir_top(&tx, peer, pool_size)?;
        // The first 2 MiB of the pool are where every receiver starts.
        capacity::dir_leaf(&tx, peer, 0)?;
        capacity::grow_arena(&tx, peer)?;
        let sentinel = arena::peek(&tx, peer).ok_or(Errno::ENOMEM)?;
        pool::init(&tx, peer, sentinel, pool_size);
        let hdr = tx.hdr();
        let head = hdr.peers.get();
        tx.set(&p.next, head);
        if !head.is_null() {
            tx.set(&tx.rec(head).prev, peer);
        }
        tx.set(&hdr.peers, peer);
        tx.add(&hdr.n_peers, 1);
        table::insert(&tx, TAG_PEER, 0, serial, peer.off())?;
        Ok(peer)
    })();
    match tx.finish(r) {
        Ok(peer) => Ok((fd, serial, peer)),
        Err(e) => {
            cleanup(fd);
            Err(e)
        }
    }
}

/// PEER_QUERY (2.2); the peer flags by the peer's ABI.
pub fn query(tx: &Txn, peer: P<PeerRec>) -> bus1_cmd_peer_reset {
    let p = tx.rec(peer);
    bus1_cmd_peer_reset {
        flags: 0,
        peer_flags: abi::queried_peer_flags(abi::state(tx, peer), p.flags.get()),
        max_slices: p.max[RES_SLICES].get() as u32,
        max_handles: p.max[RES_HANDLES].get() as u32,
        max_inflight_bytes: p.max[RES_BYTES].get() as u32,
        max_inflight_fds: p.max[RES_FDS].get() as u32,
    }
}

/// The arguments of PEER_RESET, from either struct layout.
#[derive(Clone, Copy, Debug)]
pub struct Reset {
    pub flags: u64,
    pub peer_flags: u64,
    /// Limits in PEER_QUERY order; None = unchanged.
    pub limits: [Option<u32>; NRES],
}

/// PEER_RESET steps 2 and 4 (no lock needed; step 3, the peer flags,
/// depends on the peer's ABI and is [`reset`]'s). `limits` are the raw
/// fields widened to u64 and `all_ones` is the "unchanged" value of the
/// layout.
pub fn reset_args(flags: u64, peer_flags: u64, limits: [u64; NRES], all_ones: u64) -> Result<Reset> {
    if flags & !(BUS1_PEER_RESET_FLAG_FLUSH | BUS1_PEER_RESET_FLAG_FLUSH_SEED) != 0 {
        return Err(Errno::EINVAL);
    }
    let mut out = [None; NRES];
    for (i, &l) in limits.iter().enumerate() {
        if l == all_ones {
            continue;
        }
        if l > 0x7FFF_FFFF {
            return Err(Errno::EINVAL);
        }
        out[i] = Some(l as u32);
    }
    Ok(Reset { flags, peer_flags, limits: out })
}

/// PEER_RESET step 3 (the peer flags, by the peer's ABI), then step 5
/// onwards. (Steps 2 to 4 all fail with EINVAL, so their order is not
/// observable.)
pub fn reset(tx: &Txn, peer: P<PeerRec>, fd: i32, r: &Reset) -> Result<()> {
    tx.hold(peer);
    abi::check_reset_peer_flags(abi::state(tx, peer), r.peer_flags)?;
    let p = tx.rec(peer);
    if r.peer_flags != u64::MAX {
        tx.set(&p.flags, r.peer_flags);
    }
    for (i, l) in r.limits.iter().enumerate() {
        if let Some(l) = l {
            quota::set_peer_max(tx, peer, i, *l as i64);
        }
    }
    if r.flags & BUS1_PEER_RESET_FLAG_FLUSH != 0 {
        flush(tx, peer, fd, r.flags & BUS1_PEER_RESET_FLAG_FLUSH_SEED != 0)?;
    } else if r.flags & BUS1_PEER_RESET_FLAG_FLUSH_SEED != 0 {
        drop_seed(tx, peer, fd);
    }
    Ok(())
}

fn drop_seed(tx: &Txn, peer: P<PeerRec>, fd: i32) {
    let p = tx.rec(peer);
    let seed = p.seed.get();
    if !seed.is_null() {
        tx.set(&p.seed, P::NULL);
        entry::release(tx, peer, fd, seed, MS_SEED | MS_INFLIGHT);
    }
}

/// Nodes of `peer` that its seed carries (spared by a FLUSH without
/// FLUSH_SEED).
fn seed_nodes(tx: &Txn, peer: P<PeerRec>) -> HashSet<u64> {
    let seed = tx.rec(peer).seed.get();
    let mut s = HashSet::new();
    if !seed.is_null() {
        for slot in message::handle_slots(tx, seed) {
            let h = P::<Handle>::from_off(slot.get());
            if !h.is_null() {
                s.insert(object::node_of(tx, h).off());
            }
        }
    }
    s
}

/// The flush of 2.3 step 6 (also the teardown of a disconnect, with
/// `flush_seed`). `fd` is the peer's own socket, or -1 if it is gone.
pub fn flush(tx: &Txn, peer: P<PeerRec>, fd: i32, flush_seed: bool) -> Result<()> {
    tx.hold(peer);
    let spared = if flush_seed { HashSet::new() } else { seed_nodes(tx, peer) };
    let nodes: Vec<P<Node>> = object::live_nodes(tx, peer).into_iter().filter(|n| !spared.contains(&n.off())).collect();
    // 1. one destruction transaction
    let f = object::destroy_nodes(tx, peer, &nodes, false)?;
    // 2. every user reference of every handle
    for h in object::held_handles(tx, peer) {
        let n = tx.rec(h).user_refs.get();
        // Every user reference costs its user one unit of handle quota.
        let most = tx.rec(tx.rec(peer).user.get()).max[RES_HANDLES].get();
        assert!(n <= most as u64, "handle {h:?} has {n} user references, more than its user's quota of {most}");
        for _ in 0..n {
            object::ref_drop(tx, h);
        }
    }
    crate::crash::point("flush-dropped");
    // 3. everything committed up to F (which is every committed entry);
    // staged entries stay and are discarded when they commit at or below
    // F (7.8).
    for e in queue::entries(tx, peer) {
        let r = tx.rec(e);
        if !queue::staged(tx, e) && r.stamp.get() <= f {
            entry::release(tx, peer, fd, e, MS_QUEUED | MS_INFLIGHT);
        }
    }
    tx.set(&tx.rec(peer).flush, f);
    // 4. published slices
    for e in arena::all(tx, peer) {
        if tx.rec(e).state.get() & MS_PUBLISHED != 0 {
            entry::release(tx, peer, fd, e, MS_PUBLISHED);
        }
    }
    if flush_seed {
        drop_seed(tx, peer, fd);
    }
    Ok(())
}

/// PEER_DISCONNECT (2.1) and the first half of the last close (8.5):
/// returns Err(ESHUTDOWN) if someone else disconnected it first.
pub fn disconnect(tx: &Txn, peer: P<PeerRec>, fd: i32) -> Result<()> {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.state.get() != PEER_CONNECTED {
        return Err(Errno::ESHUTDOWN);
    }
    tx.set(&p.state, PEER_DISCONNECTED);
    doorbell::after_disconnect(tx, peer);
    flush(tx, peer, fd, true)?;
    // The socket is emptied and shut down by `doorbell::hang_up`.
    tx.set(&p.bell_plain, 0);
    tx.set(&p.bell_vault, 0);
    tx.set(&p.bell_dirty, 0);
    Ok(())
}

/// Frees a peer whose socket is gone (8.5, 8.6). Records that data-path
/// transactions still hold in its arena (prepared or staged, never
/// committed) keep the record as a *dead* peer until they are gone; they
/// find it dead and drop themselves, and [`collect_dead_one`] finishes it.
pub fn free_dead(tx: &Txn, peer: P<PeerRec>) -> Result<()> {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.state.get() == PEER_CONNECTED {
        disconnect(tx, peer, -1)?;
    }
    let serial = p.serial.get();
    object::orphan_owned(tx, peer);
    object::collect(tx, peer);
    table::ids_free(tx, peer);
    table::remove(tx, TAG_PEER, 0, serial);
    let dom = tx.domain();
    tx.push_post(Op::Unlink { name: Domain::peer_name(serial) });
    tx.push_post(Op::Unlink { name: Domain::pool_name(serial) });
    if p.vault_gen.get() > 0 {
        tx.push_post(Op::Unlink { name: Domain::vault_name(serial, p.vault_gen.get()) });
    }
    // A process killed while its transaction created the next generation
    // leaves that socket file behind when the transaction is rolled back
    // (the next vault would bind over it; a peer going away has none).
    tx.push_post(Op::Unlink { name: Domain::vault_name(serial, p.vault_gen.get() + 1) });
    crate::epollreg::drop_all(tx, peer);
    doorbell::bell_free(tx, p.bell.get());
    tx.set(&p.magic, 0);
    tx.set(&p.state, PEER_DEAD);
    dom.forget_pool(serial);
    dom.forget_bell(serial);
    finish_dead(tx, peer);
    Ok(())
}

/// Frees the record of a dead peer once nothing is left in its arena but
/// the pool's sentinel.
fn finish_dead(tx: &Txn, peer: P<PeerRec>) -> bool {
    let p = tx.rec(peer);
    let live = arena::all(tx, peer).into_iter().filter(|&r| tx.rec(r).state.get() != 0).count();
    if live > 1 {
        return false;
    }
    let hdr = tx.hdr();
    let (next, prev) = (p.next.get(), p.prev.get());
    if prev.is_null() {
        tx.set(&hdr.peers, next);
    } else {
        tx.set(&tx.rec(prev).next, next);
    }
    if !next.is_null() {
        tx.set(&tx.rec(next).prev, prev);
    }
    tx.add(&hdr.n_peers, -1);
    for res in 0..NRES {
        let resv = p.resv[res].get();
        if resv != 0 {
            tx.set(&p.resv[res], 0);
            tx.claim(p.user.get(), res, -resv);
        }
    }
    user_put(tx, p.user.get());
    capacity::drop_dir(tx, peer);
    capacity::drop_shares(tx, peer);
    capacity::drop_arena(tx, peer);
    tx.set(&p.sentinel, P::NULL);
    alloc::free_peer(tx, peer);
    true
}

/// Frees `peer` if it is dead and its last in-flight records are gone,
/// with the handles those records kept (their last reference dropped in
/// a section, which leaves them to a transaction).
pub fn collect_dead_one(tx: &Txn, peer: P<PeerRec>) -> bool {
    if tx.rec(peer).state.get() != PEER_DEAD {
        return false;
    }
    object::recount_orphans(tx, peer);
    object::collect_orphans(tx);
    finish_dead(tx, peer)
}

/// The user record of `uid`, created on first use; takes a reference.
pub fn user_get(tx: &Txn, uid: u32) -> Result<P<UserRec>> {
    if let Some(u) = table::get(tx, TAG_USER, 0, uid as u64) {
        let u = P::<UserRec>::from_off(u);
        tx.add(&tx.rec(u).refs, 1);
        return Ok(u);
    }
    let u = P::<UserRec>::from_off(alloc::alloc(tx, core::mem::size_of::<UserRec>() as u64)?);
    let r = tx.rec(u);
    tx.set(&r.uid, uid as u64);
    tx.set(&r.refs, 1);
    for (i, &max) in DEFAULT_MAX.iter().enumerate() {
        tx.set(&r.max[i], max);
    }
    table::insert(tx, TAG_USER, 0, uid as u64, u.off())?;
    Ok(u)
}

/// Drops a reference; the record (and its counters) go with the last one.
pub fn user_put(tx: &Txn, u: P<UserRec>) {
    let r = tx.rec(u);
    tx.add(&r.refs, -1);
    if r.refs.get() == 0 {
        table::remove(tx, TAG_USER, 0, r.uid.get());
        alloc::free(tx, u.off(), core::mem::size_of::<UserRec>() as u64);
    }
}

/// HANDLE_RELEASE (2.4).
pub fn handle_release(tx: &Txn, peer: P<PeerRec>, id: u64) -> Result<()> {
    let Some(h) = object::lookup_id(tx, peer, id) else {
        return Err(if id & 3 != 0 { Errno::ENXIO } else { Errno::EBUSY });
    };
    let hr = tx.rec(h);
    if object::is_owner_handle(tx, h)
        && hr.user_refs.get() == 1
        && tx.rec(object::node_of(tx, h)).destroyed.get() == 0
    {
        return Err(Errno::EBUSY);
    }
    object::ref_drop(tx, h);
    Ok(())
}

/// HANDLE_TRANSFER (2.5) from step 4: returns the destination's ID.
pub fn handle_transfer(tx: &Txn, src: P<PeerRec>, dst: P<PeerRec>, src_id: u64) -> Result<u64> {
    if tx.rec(dst).state.get() != PEER_CONNECTED {
        return Err(Errno::ESHUTDOWN);
    }
    let (h, created) = object::import(tx, src, src_id)?;
    let node = object::node_of(tx, h);
    if tx.rec(node).destroyed.get() == 1 {
        return Ok(BUS1_HANDLE_INVALID);
    }
    let dh = object::handle_for(tx, dst, node)?;
    quota::charge(tx, dst, RES_HANDLES, 1)?;
    if created {
        quota::charge(tx, src, RES_HANDLES, 1)?;
    }
    let id = object::ensure_id(tx, dh);
    object::ref_add(tx, dh)?;
    Ok(id)
}

/// NODES_DESTROY (2.6) from step 4.
pub fn nodes_destroy(tx: &Txn, peer: P<PeerRec>, cmd: &bus1_cmd_nodes_destroy, mem: &dyn UserMem) -> Result<()> {
    let user = tx.rec(tx.rec(peer).user.get());
    if cmd.n_nodes > user.max[RES_HANDLES].get() as u64 {
        return Err(Errno::EINVAL);
    }
    let mut seen = HashSet::new();
    let mut handles = Vec::with_capacity(cmd.n_nodes as usize);
    let mut provisional = 0;
    for i in 0..cmd.n_nodes {
        let id = read_u64(mem, elem(cmd.ptr_nodes, i, 8)?)?;
        let (h, created) = object::import(tx, peer, id)?;
        provisional += created as i64;
        if !seen.insert(h.off()) {
            return Err(Errno::ENOTUNIQ);
        }
        let node = object::node_of(tx, h);
        if tx.rec(node).owner.get() != peer {
            return Err(Errno::EREMOTE);
        }
        if tx.rec(node).destroyed.get() == 1 {
            return Err(Errno::ESTALE);
        }
        handles.push(h);
    }
    quota::charge(tx, peer, RES_HANDLES, provisional)?;
    let nodes: Vec<P<Node>> = handles.iter().map(|h| object::node_of(tx, *h)).collect();
    if !nodes.is_empty() {
        object::destroy_nodes(tx, peer, &nodes, true)?;
    }
    if cmd.flags & BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES != 0 {
        for h in handles {
            object::ref_drop(tx, h);
        }
    }
    Ok(())
}

/// Makes the caller's own socket match its queue after an operation.
pub fn settle_own_socket(tx: &Txn, peer: P<PeerRec>, fd: i32) {
    if fd >= 0 && tx.rec(peer).state.get() == PEER_CONNECTED {
        doorbell::after_own_change(tx, peer, fd);
    }
}

/// The caller `rec` if it is still the live, connected peer `serial`.
pub fn resolve_connected(tx: &Txn, rec: P<PeerRec>, serial: u64) -> Result<P<PeerRec>> {
    if is_live(tx, rec, serial) && tx.rec(rec).state.get() == PEER_CONNECTED {
        Ok(rec)
    } else {
        Err(Errno::ESHUTDOWN)
    }
}
