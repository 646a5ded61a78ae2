//! Nodes and handles (docs/reference.md §3): on-demand node creation,
//! handle IDs, coalescing, user references with the owner pin, the strong
//! count and its release notifications, and destruction transactions.
//!
//! Lifetimes: a handle object lives while it has user references or is
//! referenced by a queue entry (`refs`: payload entry, DATA destination,
//! NODE_DESTROY subject). A node lives while any handle object of it exists
//! or its NODE_RELEASE entry does (`Node::refs`); the owner's handle goes
//! last, so `Node::owner_handle` is valid whenever the node is.

use crate::alloc;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::table;
use crate::txn::Txn;

const NODE: u64 = core::mem::size_of::<Node>() as u64;
const HANDLE: u64 = core::mem::size_of::<Handle>() as u64;

/// The handle with `id` in `peer`'s ID table.
pub fn lookup_id(tx: &Txn, peer: P<PeerRec>, id: u64) -> Option<P<Handle>> {
    table::get(tx, TAG_HANDLE_ID, peer.off(), id).map(P::from_off)
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
    tx.init(&hr.user_refs, 1);
    tx.init(&hr.id, id);
    tx.init(&hr.has_id, 1);
    table::insert(tx, TAG_HANDLE_ID, owner.off(), id, h.off())?;
    Ok(h)
}

/// A new handle object of `holder` for `node`, linked everywhere, with no
/// user references and no ID.
fn new_handle(tx: &Txn, holder: P<PeerRec>, node: P<Node>) -> Result<P<Handle>> {
    let h = P::<Handle>::from_off(alloc::alloc(tx, HANDLE)?);
    let hr = tx.rec(h);
    tx.init(&hr.holder, holder);
    tx.init(&hr.node, node);
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
    let node = hr.node.get();
    let was = hr.user_refs.get();
    if was == 0 {
        assert!(hr.has_id.get() == 1, "user reference on handle {h:?} without an ID");
        table::insert(tx, TAG_HANDLE_ID, hr.holder.get().off(), hr.id.get(), h.off())?;
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
    let now = hr.user_refs.get() - 1;
    tx.set(&hr.user_refs, now);
    quota::refund(tx, holder, RES_HANDLES, 1);
    let owner = is_owner_handle(tx, h);
    if now == 0 {
        if hr.has_id.get() == 1 {
            table::remove(tx, TAG_HANDLE_ID, holder.off(), hr.id.get());
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
        tx.set(&nr.released, 1);
    }
}

/// A queued message to the holder now carries this handle (attach).
pub fn inflight_add(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    tx.add(&hr.inflight, 1);
    tx.add(&hr.refs, 1);
    strong_inc(tx, hr.node.get());
}

/// A message's payload entry for this handle is gone.
pub fn inflight_drop(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    let node = hr.node.get();
    tx.add(&hr.inflight, -1);
    tx.add(&hr.refs, -1);
    if is_owner_handle(tx, h) && hr.user_refs.get() == 0 {
        mark_released_if_done(tx, node);
    }
    strong_dec(tx, node);
    maybe_free(tx, h);
}

/// An entry points at this handle (DATA destination, NODE_DESTROY subject).
pub fn handle_ref(tx: &Txn, h: P<Handle>) {
    tx.add(&tx.rec(h).refs, 1);
}

/// Drops a reference taken with [`handle_ref`].
pub fn handle_unref(tx: &Txn, h: P<Handle>) {
    tx.add(&tx.rec(h).refs, -1);
    maybe_free(tx, h);
}

/// Frees a handle that nothing references any more (and its node when the
/// node has nothing left either).
fn maybe_free(tx: &Txn, h: P<Handle>) {
    let hr = tx.rec(h);
    if hr.user_refs.get() > 0 || hr.refs.get() > 0 {
        return;
    }
    let node = hr.node.get();
    let nr = tx.rec(node);
    let owner = nr.owner_handle.get() == h;
    if owner && nr.refs.get() > 1 {
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
    let holder = hr.holder.get();
    if !holder.is_null() {
        unlink_from_holder(tx, holder, h);
        table::remove(tx, TAG_NODE_HANDLE, holder.off(), node.off());
    }
    alloc::free(tx, h.off(), HANDLE);
    tx.add(&nr.refs, -1);
    if owner {
        tx.set(&nr.owner_handle, P::NULL);
        unlink_from_owner(tx, node);
    }
    node_put(tx, node);
}

fn unlink_from_holder(tx: &Txn, holder: P<PeerRec>, h: P<Handle>) {
    let hr = tx.rec(h);
    let (n, p) = (hr.holder_next.get(), hr.holder_prev.get());
    if p.is_null() {
        tx.set(&tx.rec(holder).handles, n);
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

/// Frees the node when nothing refers to it, or lets the owner handle go
/// when it is the last thing left.
fn node_put(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    match nr.refs.get() {
        0 => {
            debug_assert!(nr.release_entry.get().is_null());
            alloc::free(tx, node.off(), NODE);
        }
        1 => {
            let oh = nr.owner_handle.get();
            if !oh.is_null() && nr.release_entry.get().is_null() {
                maybe_free(tx, oh);
            }
        }
        _ => {}
    }
}

/// Queues NODE_RELEASE on the owner if due (3.7).
fn queue_release(tx: &Txn, node: P<Node>) {
    let nr = tx.rec(node);
    if nr.strong.get() != 0 || nr.destroyed.get() == 1 || nr.released.get() == 1 || !nr.release_entry.get().is_null() {
        return;
    }
    let owner = nr.owner.get();
    if owner.is_null() || tx.rec(owner).state.get() != PEER_CONNECTED {
        return;
    }
    let Ok(e) = queue::new_entry(tx, ENTRY_RELEASE, owner) else {
        // Out of shared memory: the transaction cannot commit (its log
        // records the failed state as well); report through the op list.
        tx.push_op(crate::doorbell::Op::Fail(Errno::ENOMEM));
        return;
    };
    tx.set(&tx.rec(e).subject, node.off());
    tx.set(&nr.release_entry, e);
    tx.add(&nr.refs, 1);
    let stamp = queue::next_stamp(tx);
    queue::append(tx, e, stamp);
}

/// Removes a pending NODE_RELEASE (3.7 "withdrawn").
fn withdraw_release(tx: &Txn, node: P<Node>) {
    let e = tx.rec(node).release_entry.get();
    if !e.is_null() && tx.rec(e).queued.get() == 1 {
        queue::discard(tx, e);
    }
}

/// A NODE_RELEASE entry was freed (dequeued, discarded or withdrawn).
pub fn release_entry_gone(tx: &Txn, node: P<Node>, e: P<Entry>) {
    let nr = tx.rec(node);
    if nr.release_entry.get() == e {
        tx.set(&nr.release_entry, P::NULL);
    }
    tx.add(&nr.refs, -1);
    node_put(tx, node);
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
/// before anyone could see them. Returns the transaction's stamp.
pub fn destroy_nodes(tx: &Txn, owner: P<PeerRec>, nodes: &[P<Node>], owner_entries: bool) -> Result<u64> {
    let stamp = queue::next_stamp(tx);
    for &n in nodes {
        let nr = tx.rec(n);
        tx.set(&nr.destroyed, 1);
        tx.set(&nr.destroy_stamp, stamp);
        withdraw_release(tx, n);
    }
    if owner_entries {
        for &n in nodes {
            notify_destroy(tx, tx.rec(n).owner_handle.get(), owner, stamp)?;
        }
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
        for (h, holder) in targets.into_iter().rev() {
            notify_destroy(tx, h, holder, stamp)?;
        }
    }
    Ok(stamp)
}

fn notify_destroy(tx: &Txn, h: P<Handle>, holder: P<PeerRec>, stamp: u64) -> Result<()> {
    let e = queue::new_entry(tx, ENTRY_DESTROY, holder)?;
    tx.set(&tx.rec(e).subject, h.off());
    handle_ref(tx, h);
    queue::append(tx, e, stamp);
    Ok(())
}

/// Teardown of `peer`: owner handles still kept by remote handles lose
/// their holder; the nodes stay (destroyed and released) until the last
/// remote handle goes.
pub fn orphan_owned(tx: &Txn, peer: P<PeerRec>) {
    for h in held_handles(tx, peer) {
        let node = node_of(tx, h);
        debug_assert!(is_owner_handle(tx, h), "remote handle left at peer teardown");
        let nr = tx.rec(node);
        tx.set(&nr.released, 1);
        unlink_from_owner(tx, node);
        unlink_from_holder(tx, peer, h);
        table::remove(tx, TAG_NODE_HANDLE, peer.off(), node.off());
        tx.set(&tx.rec(h).holder, P::NULL);
        tx.set(&nr.owner, P::NULL);
    }
}
