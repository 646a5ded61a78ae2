//! Nodes and handles (docs/reference.md §3): on-demand node
//! creation, handle IDs, coalescing, user references with the owner pin,
//! the strong count and its release notifications, and destruction
//! transactions. All of it runs under the domain lock, holding the lock of
//! every peer whose handles, ID table or queue it touches (rule 2 of
//! `txn`).
//!
//! Lifetimes: a handle object lives while it has user references or a
//! record of its holder points at it (`refs`, derived message state of the
//! holder). A section that drops the last such reference leaves the handle
//! for [`collect`]. A node lives while any handle object of it exists
//! (`Node::refs`); the owner's handle goes last, so `Node::owner_handle` is
//! valid whenever the node is.

use crate::alloc;
use crate::arena;
use crate::capacity;
use crate::doorbell;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::table;
use crate::txn::Txn;

const NODE: u64 = core::mem::size_of::<Node>() as u64;

/// The handle with `id` in `peer`'s ID table.
pub fn lookup_id(tx: &Txn, peer: P<PeerRec>, id: u64) -> Option<P<Handle>> {
    tx.hold(peer);
    table::id_get(tx, peer, id)
}

/// Resolves an ID named in an ioctl (3.4): the existing handle, ENXIO for
/// an unknown managed/remote-style ID, or a new node owned by `peer`
/// (returned with `true`). The new node has its pin and its ID already;
/// if the ioctl fails, the transaction is undone and the node vanishes.
/// Its handle quota is charged by the caller at the point the ioctl's
/// order of checks prescribes.
pub fn import(tx: &Txn, peer: P<PeerRec>, id: u64) -> Result<(P<Handle>, bool)> {
    if let Some(h) = lookup_id(tx, peer, id) {
        return Ok((h, false));
    }
    if id & (BUS1_ID_MANAGED | BUS1_ID_REMOTE) != 0 {
        return Err(Errno::ENXIO);
    }
    Ok((create_node(tx, peer, id)?, true))
}

const BUS1_ID_MANAGED: u64 = uapi::BUS1_HANDLE_FLAG_MANAGED;
const BUS1_ID_REMOTE: u64 = uapi::BUS1_HANDLE_FLAG_REMOTE;

fn create_node(tx: &Txn, owner: P<PeerRec>, id: u64) -> Result<P<Handle>> {
    let n = P::<Node>::from_off(alloc::alloc(tx, NODE)?);
    let h = new_handle(tx, owner, n)?;
    let nr = tx.rec(n);
    tx.init(&nr.owner, owner);
    tx.init(&nr.owner_handle, h);
    // owner's node list
    let p = tx.rec(owner);
    let head = p.nodes.get();
    tx.init(&nr.owner_next, head);
    if !head.is_null() {
        tx.set(&tx.rec(head).owner_prev, n);
    }
    tx.set(&p.nodes, n);
    tx.init(&nr.in_owner_list, 1);
    let hr = tx.rec(h);
    tx.set(&hr.user_refs, 1);
    tx.set(&hr.id, id);
    tx.set(&hr.has_id, 1);
    table::id_insert(tx, owner, id, h)?;
    Ok(h)
}

/// A new handle object of `holder` for `node`, linked everywhere, with no
/// user references and no ID.
fn new_handle(tx: &Txn, holder: P<PeerRec>, node: P<Node>) -> Result<P<Handle>> {
    tx.hold(holder);
    let h = alloc::alloc_handle(tx)?;
    let hr = tx.rec(h);
    tx.init(&hr.holder, holder);
    tx.init(&hr.node, node);
    tx.set(&hr.live, 1);
    let nr = tx.rec(node);
    let nh = nr.handles.get();
    tx.init(&hr.node_next, nh);
    if !nh.is_null() {
        tx.set(&tx.rec(nh).node_prev, h);
    }
    tx.set(&nr.handles, h);
    tx.add(&nr.refs, 1);
    let p = tx.rec(holder);
    let ph = p.handles.get();
    tx.init(&hr.holder_next, ph);
    if !ph.is_null() {
        tx.set(&tx.rec(ph).holder_prev, h);
    }
    tx.set(&p.handles, h);
    table::insert(tx, TAG_NODE_HANDLE, holder.off(), node.off(), h.off())?;
    Ok(h)
}

/// `peer`'s handle for `node` (coalescing, 3.6): its existing one (the
/// owner handle if it owns the node) or a new one.
pub fn handle_for(tx: &Txn, peer: P<PeerRec>, node: P<Node>) -> Result<P<Handle>> {
    tx.hold(peer);
    match table::get(tx, TAG_NODE_HANDLE, peer.off(), node.off()) {
        Some(h) => Ok(P::from_off(h)),
        None => new_handle(tx, peer, node),
    }
}

pub fn node_of(tx: &Txn, h: P<Handle>) -> P<Node> {
    tx.rec(h).node.get()
}

pub fn is_owner_handle(tx: &Txn, h: P<Handle>) -> bool {
    tx.rec(node_of(tx, h)).owner_handle.get() == h
}

/// The handle's ID, assigning a kernel ID (3.3) if it has none. The ID
/// belongs to the handle from now on (a RECV that fails after assigning it
/// reports the same ID when retried), but it enters the holder's ID table
/// only with the handle's first user reference ([`ref_add`]): an ID
/// nobody was told about must not outlive its handle in the table.
pub fn ensure_id(tx: &Txn, h: P<Handle>) -> u64 {
    let hr = tx.rec(h);
    if hr.has_id.get() == 1 {
        return hr.id.get();
    }
    let holder = hr.holder.get();
    tx.hold(holder);
    let p = tx.rec(holder);
    let c = p.id_counter.get() + 1;
    tx.set(&p.id_counter, c);
    let mut id = (c << 3) | BUS1_ID_MANAGED;
    if !is_owner_handle(tx, h) {
        id |= BUS1_ID_REMOTE;
    }
    tx.set(&hr.id, id);
    tx.set(&hr.has_id, 1);
    id
}

fn strong_inc(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    tx.add(&nr.strong, 1);
    if nr.strong.get() == 1 {
        withdraw_release(tx, node);
    }
}

fn strong_dec(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    debug_assert!(nr.strong.get() > 0);
    tx.add(&nr.strong, -1);
    if nr.strong.get() == 0 {
        queue_release(tx, node);
    }
}

/// +1 user reference (3.5). The caller charges the quota and has given the
/// handle its ID ([`ensure_id`]); the first reference enters the ID into the
/// holder's table, as [`ref_drop`] of the last one removes it.
pub fn ref_add(tx: &Txn, h: P<Handle>) -> Result<()> {
    let hr = tx.rec(h);
    tx.hold(hr.holder.get());
    let node = hr.node.get();
    let was = hr.user_refs.get();
    if was == 0 {
        assert!(hr.has_id.get() == 1, "user reference on handle {h:?} without an ID");
        table::id_insert(tx, hr.holder.get(), hr.id.get(), h)?;
    }
    tx.set(&hr.user_refs, was + 1);
    // The owner's last reference is the non-strong pin.
    if !(is_owner_handle(tx, h) && was == 0) {
        strong_inc(tx, node);
    }
    Ok(())
}

/// −1 user reference, refunding its handle quota.
pub fn ref_drop(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    let node = hr.node.get();
    let holder = hr.holder.get();
    tx.hold(holder);
    let now = hr.user_refs.get() - 1;
    tx.set(&hr.user_refs, now);
    quota::refund(tx, holder, RES_HANDLES, 1);
    let owner = is_owner_handle(tx, h);
    if now == 0 {
        if hr.has_id.get() == 1 {
            table::id_remove(tx, holder, hr.id.get());
            tx.set(&hr.has_id, 0);
        }
        if owner {
            // 3.10: the owner let go of its (necessarily destroyed) node.
            withdraw_release(tx, node);
            mark_released_if_done(tx, node);
        }
    }
    if !(owner && now == 0) {
        strong_dec(tx, node);
    }
    maybe_free(tx, h);
}

fn mark_released_if_done(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    let oh = nr.owner_handle.get();
    if nr.destroyed.get() == 1 && (oh.is_null() || (tx.rec(oh).user_refs.get() == 0 && tx.rec(oh).inflight.get() == 0)) {
        if !nr.owner.get().is_null() {
            tx.hold(nr.owner.get());
        }
        tx.set(&nr.released, 1);
    }
}

/// A queued message to the holder now carries this handle (attach).
pub fn inflight_add(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    let holder = hr.holder.get();
    tx.add(&hr.inflight, 1);
    message::handle_ref(tx, holder, h, 1);
    strong_inc(tx, hr.node.get());
}

/// A message's payload entry for this handle is gone.
pub fn inflight_drop(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    let node = hr.node.get();
    let holder = hr.holder.get();
    tx.add(&hr.inflight, -1);
    message::handle_ref(tx, holder, h, -1);
    if is_owner_handle(tx, h) && hr.user_refs.get() == 0 {
        mark_released_if_done(tx, node);
    }
    strong_dec(tx, node);
    maybe_free(tx, h);
}

/// Frees a handle that nothing references any more (and its node when the
/// node has nothing left either).
pub fn maybe_free(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    if hr.live.get() == 0 {
        return;
    }
    let holder = hr.holder.get();
    if !holder.is_null() {
        tx.hold(holder);
    }
    if hr.user_refs.get() > 0 || hr.refs.get() > 0 {
        return;
    }
    let node = hr.node.get();
    let nr = tx.rec(node);
    let owner = nr.owner_handle.get() == h;
    if owner && nr.refs.get() > 1 {
        return;
    }
    if owner && !nr.release_entry.get().is_null() {
        return;
    }
    // unlink from the node's list
    let (n, p) = (hr.node_next.get(), hr.node_prev.get());
    if p.is_null() {
        tx.set(&nr.handles, n);
    } else {
        tx.set(&tx.rec(p).node_next, n);
    }
    if !n.is_null() {
        tx.set(&tx.rec(n).node_prev, p);
    }
    if !holder.is_null() {
        unlink_from_holder(tx, holder, h);
        table::remove(tx, TAG_NODE_HANDLE, holder.off(), node.off());
    } else {
        unlink_from(tx, &tx.hdr().orphans, h);
    }
    alloc::free_handle(tx, h);
    tx.add(&nr.refs, -1);
    if owner {
        if !nr.owner.get().is_null() {
            tx.hold(nr.owner.get());
        }
        tx.set(&nr.owner_handle, P::NULL);
        unlink_from_owner(tx, node);
    }
    node_put(tx, node);
}

fn unlink_from_holder(tx: &Txn, holder: P<PeerRec>, h: P<Handle>) {
    unlink_from(tx, &tx.rec(holder).handles, h);
}

/// Moves `h`, just unlinked from the list of `holder`, to the orphans.
fn make_orphan(tx: &Txn, h: P<Handle>, holder: P<PeerRec>) {
    let hdr = tx.hdr();
    let hr = tx.rec(h);
    let head = hdr.orphans.get();
    tx.set(&hr.holder, P::NULL);
    tx.set(&hr.former_holder, holder);
    tx.set(&hr.holder_next, head);
    tx.set(&hr.holder_prev, P::NULL);
    if !head.is_null() {
        tx.set(&tx.rec(head).holder_prev, h);
    }
    tx.set(&hdr.orphans, h);
}

/// Frees the orphans (handles whose holder was torn down) that nothing
/// refers to any more: the last record pointing at one went in a
/// section, which leaves freeing to a transaction.
pub fn collect_orphans(tx: &Txn) {
    let mut h = tx.hdr().orphans.get();
    while !h.is_null() {
        let next = tx.rec(h).holder_next.get();
        let hr = tx.rec(h);
        if hr.refs.get() == 0 && hr.user_refs.get() == 0 {
            maybe_free(tx, h);
        }
        h = next;
    }
}

/// Takes the reference counts of the orphans of torn-down `peer` again
/// from its records, after a rebuild of its message state (which marks
/// the peer `gc_pending`). The rebuild counts the orphans its records
/// point at, but cannot see one that a recoverer killed between a
/// record's state store and the orphan's count update left with a count
/// and no records: only this walk of the orphans (under the domain lock)
/// finds it, so that it is freed.
pub fn recount_orphans(tx: &Txn, peer: P<PeerRec>) {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.gc_pending.get() == 0 {
        return;
    }
    tx.set(&p.gc_pending, 0);
    let live: Vec<P<Msg>> = crate::arena::all(tx, peer).into_iter().filter(|&r| tx.rec(r).state.get() != 0).collect();
    let counts: std::collections::HashMap<u64, u64> = crate::message::count_handle_refs(tx, &live).into_iter().map(|(h, n)| (h.off(), n)).collect();
    let mut h = tx.hdr().orphans.get();
    while !h.is_null() {
        let hr = tx.rec(h);
        if hr.former_holder.get() == peer {
            let n = counts.get(&h.off()).copied().unwrap_or(0);
            if hr.refs.get() != n {
                tx.set(&hr.refs, n);
            }
        }
        h = hr.holder_next.get();
    }
}

/// Unlinks `h` from the list (by `holder_next`/`holder_prev`) that starts
/// at `head`.
fn unlink_from(tx: &Txn, head: &crate::shm::Cell<P<Handle>>, h: P<Handle>) {
    let hr = tx.rec(h);
    let (n, p) = (hr.holder_next.get(), hr.holder_prev.get());
    if p.is_null() {
        tx.set(head, n);
    } else {
        tx.set(&tx.rec(p).holder_next, n);
    }
    if !n.is_null() {
        tx.set(&tx.rec(n).holder_prev, p);
    }
    tx.set(&hr.holder_next, P::NULL);
    tx.set(&hr.holder_prev, P::NULL);
}

fn unlink_from_owner(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    if nr.in_owner_list.get() == 0 {
        return;
    }
    let owner = nr.owner.get();
    let (n, p) = (nr.owner_next.get(), nr.owner_prev.get());
    if p.is_null() {
        tx.set(&tx.rec(owner).nodes, n);
    } else {
        tx.set(&tx.rec(p).owner_next, n);
    }
    if !n.is_null() {
        tx.set(&tx.rec(n).owner_prev, p);
    }
    tx.set(&nr.in_owner_list, 0);
}

/// Frees the node when no handle of it is left, or lets the owner handle
/// go when it is the last thing left.
fn node_put(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    match nr.refs.get() {
        0 => {
            debug_assert!(nr.release_entry.get().is_null());
                alloc::free(tx, node.off(), NODE);
        }
        1 => {
            let oh = nr.owner_handle.get();
            if !oh.is_null() {
                maybe_free(tx, oh);
            }
        }
        _ => {}
    }
}

/// Frees the handles of `peer` that sections left unreferenced (rule 5 of
/// `txn`), if any were.
pub fn collect(tx: &Txn, peer: P<PeerRec>) {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.gc_pending.get() == 0 {
        return;
    }
    tx.set(&p.gc_pending, 0);
    for h in held_handles(tx, peer) {
        let hr = tx.rec(h);
        if hr.user_refs.get() == 0 && hr.refs.get() == 0 && hr.live.get() == 1 {
            maybe_free(tx, h);
        }
    }
}

/// Checks the object graph of every peer (a debugging aid): each listed
/// handle is live, held by its peer and in its node's list, and each node
/// counts its handles.
pub fn check_graph(tx: &Txn) -> core::result::Result<(), String> {
    let mut free = std::collections::HashSet::new();
    let mut f = tx.hdr().free_handles.get();
    while !f.is_null() {
        if !free.insert(f.off()) {
            return Err(format!("free handle list loops at {f:?}"));
        }
        if tx.rec(f).live.get() != 0 {
            return Err(format!("live handle {f:?} on the free list"));
        }
        f = tx.rec(f).holder_next.get();
    }
    let mut prev = P::<Handle>::NULL;
    let mut o = tx.hdr().orphans.get();
    while !o.is_null() {
        let or = tx.rec(o);
        if free.contains(&o.off()) || or.live.get() != 1 || !or.holder.get().is_null() || or.holder_prev.get() != prev {
            return Err(format!("orphan {o:?}: live {} holder {:?} prev {:?}", or.live.get(), or.holder.get(), or.holder_prev.get()));
        }
        prev = o;
        o = or.holder_next.get();
    }
    for p in crate::peer::all(tx) {
        for h in held_handles(tx, p) {
            let hr = tx.rec(h);
            if free.contains(&h.off()) {
                return Err(format!("peer {p:?}: listed handle {h:?} is on the free list"));
            }
            if hr.live.get() != 1 || hr.holder.get() != p {
                return Err(format!("peer {p:?}: handle {h:?} live {} holder {:?}", hr.live.get(), hr.holder.get()));
            }
            let n = hr.node.get();
            let nr = tx.rec(n);
            let mut count = 0;
            let mut found = false;
            let mut x = nr.handles.get();
            while !x.is_null() && count < 100_000 {
                found |= x == h;
                count += 1;
                let xr = tx.rec(x);
                if xr.live.get() != 1 || xr.node.get() != n {
                    return Err(format!("node {n:?}: listed handle {x:?} live {} node {:?} gen {}", xr.live.get(), xr.node.get(), xr.gen.get()));
                }
                x = xr.node_next.get();
            }
            if !found || count != nr.refs.get() {
                return Err(format!("peer {p:?}: handle {h:?} node {n:?}: in its list {found}, list {count} refs {}", nr.refs.get()));
            }
        }
    }
    Ok(())
}

/// A new record in `peer`'s arena (growing it if needed), for a
/// transaction to initialise and commit with `message::set_state`.
pub fn new_record(tx: &Txn, peer: P<PeerRec>, kind: u32) -> Result<P<Msg>> {
    tx.hold(peer);
    if arena::peek(tx, peer).is_none() {
        capacity::grow_arena(tx, peer)?;
    }
    let r = arena::peek(tx, peer).ok_or(Errno::ENOMEM)?;
    arena::taken(tx, peer, r);
    message::clear(tx, r, kind);
    Ok(r)
}

/// A fresh transaction tag for entries committed under the domain lock.
pub fn next_tag(tx: &Txn) -> u64 {
    let hdr = tx.hdr();
    let t = hdr.next_tag.get() + 1;
    tx.set(&hdr.next_tag, t);
    (1 << 63) | t
}

/// The stamp of a transaction under the domain lock that commits entries
/// to `peers` (held) with `origin`: past every clock involved, which are
/// all raised to it.
pub fn commit_stamp(tx: &Txn, origin: P<PeerRec>, peers: &[P<PeerRec>]) -> u64 {
    let mut t = 0;
    for &p in peers.iter().chain(core::iter::once(&origin)) {
        tx.hold(p);
        t = t.max(tx.rec(p).clock.load());
    }
    let c = queue::tick(&tx.rec(origin).clock, t);
    for &p in peers {
        queue::sync(&tx.rec(p).clock, c);
    }
    c
}

/// Queues NODE_RELEASE on the owner if due (3.7): committed directly at
/// the owner's next tick (7.4).
fn queue_release(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    if nr.strong.get() != 0 || nr.destroyed.get() == 1 || nr.released.get() == 1 {
        return;
    }
    let owner = nr.owner.get();
    if owner.is_null() || tx.rec(owner).state.get() != PEER_CONNECTED {
        return;
    }
    tx.hold(owner);
    if !nr.release_entry.get().is_null() {
        return;
    }
    let Ok(e) = new_record(tx, owner, ENTRY_RELEASE) else {
        // Out of shared memory: the transaction cannot commit.
        tx.push_op(crate::doorbell::Op::Fail(Errno::ENOMEM));
        return;
    };
    let er = tx.rec(e);
    tx.set(&er.subject, node.off());
    tx.set(&er.stamp, queue::tick(&tx.rec(owner).clock, 0));
    tx.set(&er.tag, next_tag(tx));
    message::set_state(tx, owner, e, MS_LIVE | MS_QUEUED);
    doorbell::after_enqueue(tx, owner);
}

/// Removes a pending NODE_RELEASE (3.7 "withdrawn").
fn withdraw_release(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    let owner = nr.owner.get();
    if owner.is_null() {
        return;
    }
    tx.hold(owner);
    let e = nr.release_entry.get();
    if !e.is_null() && tx.rec(e).state.get() & MS_QUEUED != 0 {
        message::set_state(tx, owner, e, 0);
    }
}

/// Live (not destroyed) nodes owned by `peer`.
pub fn live_nodes(tx: &Txn, peer: P<PeerRec>) -> Vec<P<Node>> {
    tx.walk(tx.rec(peer).nodes.get(), |n| n.owner_next.get()).filter(|&n| tx.rec(n).destroyed.get() == 0).collect()
}

/// Handles held by `peer`.
pub fn held_handles(tx: &Txn, peer: P<PeerRec>) -> Vec<P<Handle>> {
    tx.walk(tx.rec(peer).handles.get(), |h| h.holder_next.get()).collect()
}

/// One destruction transaction (3.8) for `nodes` of `owner`. With
/// `owner_entries`, the owner gets a NODE_DESTROY per node (NODES_DESTROY);
/// a reset or disconnect passes false, since its flush would discard them
/// before anyone could see them. Every holder told is held, the stamp is
/// past all their clocks and the owner's, and the entries go in committed.
/// Returns the transaction's stamp.
pub fn destroy_nodes(tx: &Txn, owner: P<PeerRec>, nodes: &[P<Node>], owner_entries: bool) -> Result<u64> {
    tx.hold(owner);
    let mut told: Vec<(P<Handle>, P<PeerRec>)> = Vec::new();
    if owner_entries {
        told.extend(nodes.iter().map(|&n| (tx.rec(n).owner_handle.get(), owner)));
    }
    for &n in nodes {
        let oh = tx.rec(n).owner_handle.get();
        let mut targets = Vec::new();
        for h in tx.walk(tx.rec(n).handles.get(), |h| h.node_next.get()) {
            let hr = tx.rec(h);
            if h != oh && (hr.user_refs.get() > 0 || hr.inflight.get() > 0) {
                let holder = hr.holder.get();
                if !holder.is_null() && tx.rec(holder).state.get() == PEER_CONNECTED {
                    targets.push((h, holder));
                }
            }
        }
        // The node's list is newest first; notify in attachment order.
        told.extend(targets.into_iter().rev());
    }
    let mut peers: Vec<P<PeerRec>> = told.iter().map(|&(_, p)| p).collect();
    peers.sort_by_key(|p| p.off());
    peers.dedup();
    let stamp = commit_stamp(tx, owner, &peers);
    let tag = next_tag(tx);
    for &n in nodes {
        let nr = tx.rec(n);
        tx.set(&nr.destroyed, 1);
        tx.set(&nr.destroy_stamp, stamp);
        withdraw_release(tx, n);
    }
    for (i, &(h, holder)) in told.iter().enumerate() {
        let e = new_record(tx, holder, ENTRY_DESTROY)?;
        let er = tx.rec(e);
        tx.set(&er.subject, h.off());
        tx.set(&er.stamp, stamp);
        tx.set(&er.tag, tag);
        tx.set(&er.index, i as u32);
        message::set_state(tx, holder, e, MS_LIVE | MS_QUEUED);
        doorbell::after_enqueue(tx, holder);
    }
    Ok(stamp)
}

/// Teardown of `peer`: owner handles still kept by remote handles lose
/// their holder; the nodes stay (destroyed and released) until the last
/// remote handle goes.
pub fn orphan_owned(tx: &Txn, peer: P<PeerRec>) {
    for h in held_handles(tx, peer) {
        let node = node_of(tx, h);
        if !is_owner_handle(tx, h) {
            // Still pointed at by records of the peer that in-flight
            // transactions hold: it only loses its holder (and is freed
            // with the last such record).
            unlink_from_holder(tx, peer, h);
            table::remove(tx, TAG_NODE_HANDLE, peer.off(), node.off());
            make_orphan(tx, h, peer);
            continue;
        }
        let nr = tx.rec(node);
        tx.set(&nr.released, 1);
        unlink_from_owner(tx, node);
        unlink_from_holder(tx, peer, h);
        table::remove(tx, TAG_NODE_HANDLE, peer.off(), node.off());
        make_orphan(tx, h, peer);
        tx.set(&nr.owner, P::NULL);
    }
}
