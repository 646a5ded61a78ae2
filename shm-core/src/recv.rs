//! RECV (docs/reference.md §2.9): choosing the entry to deliver, the
//! discard rules of the ordering protocol, handle and fd installation,
//! PEEK and seeds.
//!
//! The data path takes the caller's own lock only: it discards stale
//! heads, drives a transaction whose staged entry is at the head to its
//! commit (`slot::drive`), and delivers a notification or a message
//! without handles or fds. A head that carries handles or fds, and every
//! RECV of a seed, is delivered by a transaction. Either way the result is
//! written to the caller (`out`) before anything is dequeued or installed,
//! so that a caller whose memory cannot take it gets EFAULT with nothing
//! changed; the data path writes it under the caller's own peer lock, which
//! only the caller's own queue waits for (txn rule 3).

use crate::doorbell;
use crate::domain::Domain;
use crate::entry;
use crate::vault::{self, Want};
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::object;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::section::Section;
use crate::shm::P;
use crate::small::Small;
use crate::store::Store;
use crate::sys;
use crate::txn::Txn;
use uapi::*;

/// What a RECV ends with. Discards made while looking for an entry stand
/// even when the call then fails, as in the module; so failures after the
/// search are returned as a value and the transaction still commits.
pub enum Outcome {
    Msg(bus1_msg),
    Fail(Errno),
}

pub fn precheck(flags: u64) -> Result<()> {
    if flags & !(BUS1_RECV_FLAG_PEEK | BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_INSTALL_FDS) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Whether entry `e` at the head is to be discarded (2.9 step 5): flushed,
/// its subject released, or its node destroyed before it.
fn stale<S: Store>(s: &S, peer: P<PeerRec>, e: P<Msg>) -> bool {
    let r = s.rec(e);
    let stamp = r.stamp.get();
    if stamp <= s.rec(peer).flush.get() {
        return true;
    }
    let (handle, node) = match r.kind.get() {
        ENTRY_RELEASE => {
            let node = P::<Node>::from_off(r.subject.get());
            (s.rec(node).owner_handle.get(), node)
        }
        _ => {
            let h = P::<Handle>::from_off(r.subject.get());
            (h, s.rec(h).node.get())
        }
    };
    if handle.is_null() || s.rec(handle).user_refs.get() == 0 {
        return true;
    }
    let nr = s.rec(node);
    nr.destroyed.get() == 1 && nr.destroy_stamp.get() < stamp
}

/// Whether delivering or discarding `e` changes the object graph or the
/// fd vault, which only a transaction may do.
fn needs_txn<S: Store>(s: &S, e: P<Msg>) -> bool {
    let r = s.rec(e);
    r.kind.get() == ENTRY_DATA && (r.n_handles.get() > 0 || r.n_fds.get() > 0)
}

/// Whether the entry behind `e` belongs to the same transaction.
fn more_behind<S: Store>(s: &S, e: P<Msg>) -> bool {
    let r = s.rec(e);
    let next = r.q_next.get();
    !next.is_null() && {
        let n = s.rec(next);
        n.stamp.get() == r.stamp.get() && n.tag.get() == r.tag.get()
    }
}

fn notification_destination<S: Store>(s: &S, e: P<Msg>) -> u64 {
    let r = s.rec(e);
    let h = if r.kind.get() == ENTRY_RELEASE {
        s.rec(P::<Node>::from_off(r.subject.get())).owner_handle.get()
    } else {
        P::<Handle>::from_off(r.subject.get())
    };
    let hr = s.rec(h);
    if hr.has_id.get() == 1 {
        hr.id.get()
    } else {
        BUS1_HANDLE_INVALID
    }
}

fn notification<S: Store>(s: &S, e: P<Msg>, more: bool) -> bus1_msg {
    bus1_msg {
        r#type: if s.rec(e).kind.get() == ENTRY_DESTROY { BUS1_MSG_NODE_DESTROY } else { BUS1_MSG_NODE_RELEASE },
        flags: if more { BUS1_MSG_FLAG_CONTINUE } else { 0 },
        destination: notification_destination(s, e),
        uid: u32::MAX,
        gid: u32::MAX,
        pid: 0,
        tid: 0,
        offset: BUS1_OFFSET_INVALID,
        ..Default::default()
    }
}

/// The `msg` of DATA entry `e`.
fn data_msg<S: Store>(s: &S, e: P<Msg>, more: bool) -> bus1_msg {
    let r = s.rec(e);
    let dest = P::<Handle>::from_off(r.subject.get());
    bus1_msg {
        r#type: BUS1_MSG_DATA,
        flags: if more { BUS1_MSG_FLAG_CONTINUE } else { 0 },
        destination: if dest.is_null() {
            BUS1_HANDLE_INVALID
        } else {
            let d = s.rec(dest);
            if d.has_id.get() == 1 { d.id.get() } else { BUS1_HANDLE_INVALID }
        },
        uid: r.uid.get(),
        gid: r.gid.get(),
        pid: r.pid.get(),
        tid: r.tid.get(),
        offset: r.off.get(),
        n_bytes: r.n_bytes.get(),
        n_handles: r.n_handles.get(),
        n_fds: r.n_fds.get() as u64,
        n_secctx: 0,
    }
}

/// RECV of the data path; Err(NEEDS_TXN) hands the call to a transaction.
/// `out` writes the result to the caller's memory (false: it cannot,
/// EFAULT) before anything is dequeued.
pub fn recv_section(dom: &Domain, peer: P<PeerRec>, serial: u64, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&bus1_msg) -> bool) -> Result<Outcome> {
    if flags & BUS1_RECV_FLAG_SEED != 0 {
        return Err(Errno::NEEDS_TXN);
    }
    let peek = flags & BUS1_RECV_FLAG_PEEK != 0;
    let mut reaped = false;
    loop {
        let s = Section::lock(dom, peer)?;
        let p = s.rec(peer);
        if p.magic.get() != PEER_MAGIC || p.serial.get() != serial || p.state.get() != PEER_CONNECTED {
            return Err(Errno::ESHUTDOWN);
        }
        if p.abi.get() == 0 {
            // Not latched yet (`abi`): a transaction latches it.
            return Err(Errno::NEEDS_TXN);
        }
        let e = loop {
            let head = queue::head(&s, peer);
            if head.is_null() || queue::staged(&s, head) || needs_txn(&s, head) || !stale(&s, peer, head) {
                break head;
            }
            message::set_state(&s, peer, head, entry::without(s.rec(head).state.get(), MS_QUEUED | MS_INFLIGHT));
        };
        if e.is_null() {
            doorbell::discard_strays_in_section(&s, peer, fd);
            // Nothing to read, but records prepared for this queue: if
            // their sender died, give their room back now rather than at
            // the watcher's next scan.
            let prepared = p.n_prepared.get() > 0;
            drop(s);
            if prepared && !reaped && crate::slot::reap_dead(dom) > 0 {
                // A dead sender's multicast may have been finished just
                // now: look again (once).
                reaped = true;
                continue;
            }
            return Ok(Outcome::Fail(Errno::EAGAIN));
        }
        if queue::staged(&s, e) {
            // A multicast in progress (or whose sender stopped or died):
            // finish its commit, then look again.
            let tag = s.rec(e).tag.get();
            drop(s);
            crate::slot::drive(dom, tag);
            continue;
        }
        if needs_txn(&s, e) {
            return Err(Errno::NEEDS_TXN);
        }
        let more = more_behind(&s, e);
        let r = s.rec(e);
        let msg = if r.kind.get() != ENTRY_DATA {
            let msg = notification(&s, e, more);
            if !out(&msg) {
                return Ok(Outcome::Fail(Errno::EFAULT));
            }
            if !peek {
                message::set_state(&s, peer, e, 0);
            }
            msg
        } else {
            let (off, size) = pool::range(&s, e);
            if max_offset < off + size {
                return Ok(Outcome::Fail(Errno::ERANGE));
            }
            let msg = data_msg(&s, e, more);
            if !out(&msg) {
                return Ok(Outcome::Fail(Errno::EFAULT));
            }
            let st = r.state.get();
            let new = if peek { st | MS_PUBLISHED } else { (st & !(MS_QUEUED | MS_INFLIGHT)) | MS_PUBLISHED };
            message::set_state(&s, peer, e, new);
            crate::crash::point("recv-committed");
            msg
        };
        doorbell::settle_in_section(&s, peer, fd);
        return Ok(Outcome::Msg(msg));
    }
}

/// RECV as a transaction (the caller is locked and connected); `out`
/// writes the result to the caller's memory (false: it cannot, EFAULT)
/// before anything is dequeued or installed.
pub fn recv(tx: &Txn, peer: P<PeerRec>, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&bus1_msg) -> bool) -> Result<Outcome> {
    tx.hold(peer);
    if flags & BUS1_RECV_FLAG_SEED != 0 {
        let seed = tx.rec(peer).seed.get();
        if seed.is_null() {
            return Ok(Outcome::Fail(Errno::EAGAIN));
        }
        return deliver_data(tx, peer, fd, seed, flags, max_offset, false, out);
    }
    let mut steps = 0;
    let e = loop {
        steps += 1;
        assert!(steps <= tx.list_bound::<Msg>(), "queue of peer {peer:?} longer than the segment can hold (a cycle)");
        let head = queue::head(tx, peer);
        if head.is_null() {
            doorbell::discard_strays(tx, peer, fd);
            return Ok(Outcome::Fail(Errno::EAGAIN));
        }
        if queue::staged(tx, head) {
            // A staged head is driven to its commit by the data path only
            // (it takes receiver locks one at a time); under the domain
            // lock the queue is simply not readable yet.
            return Ok(Outcome::Fail(Errno::EAGAIN));
        }
        if stale(tx, peer, head) {
            entry::release(tx, peer, fd, head, MS_QUEUED | MS_INFLIGHT);
            continue;
        }
        break head;
    };
    let more = more_behind(tx, e);
    if tx.rec(e).kind.get() != ENTRY_DATA {
        let msg = notification(tx, e, more);
        if !out(&msg) {
            return Ok(Outcome::Fail(Errno::EFAULT));
        }
        if flags & BUS1_RECV_FLAG_PEEK == 0 {
            entry::release(tx, peer, fd, e, MS_QUEUED);
        }
        return Ok(Outcome::Msg(msg));
    }
    deliver_data(tx, peer, fd, e, flags, max_offset, more, out)
}

#[allow(clippy::too_many_arguments)]
fn deliver_data(
    tx: &Txn,
    peer: P<PeerRec>,
    fd: i32,
    e: P<Msg>,
    flags: u64,
    max_offset: u64,
    more: bool,
    out: &dyn Fn(&bus1_msg) -> bool,
) -> Result<Outcome> {
    let peek = flags & BUS1_RECV_FLAG_PEEK != 0;
    let install_fds = flags & BUS1_RECV_FLAG_INSTALL_FDS != 0;
    let r = tx.rec(e);
    let (off, size) = pool::range(tx, e);
    // 6.1
    if max_offset < off + size {
        return Ok(Outcome::Fail(Errno::ERANGE));
    }
    // 6.2: IDs (assigned here, they stay with their handles even if the
    // RECV fails below; they enter the ID table with the references).
    let stamp = r.stamp.get();
    let n_bytes = r.n_bytes.get();
    let ids_at = off + n_bytes.div_ceil(8) * 8;
    let slots = message::handle_slots(tx, e);
    let mut ids: Small<u64, 8> = Small::with_capacity(slots.len());
    let mut valid: Small<P<Handle>, 8> = Small::with_capacity(slots.len());
    for slot in slots.iter() {
        let h = P::<Handle>::from_off(slot.get());
        let ok = !h.is_null() && {
            let nr = tx.rec(object::node_of(tx, h));
            nr.destroyed.get() == 0 || nr.destroy_stamp.get() > stamp
        };
        if ok {
            ids.push(object::ensure_id(tx, h));
            valid.push(h);
        } else {
            ids.push(BUS1_HANDLE_INVALID);
            drop_slot(tx, peer, e, slot);
        }
    }
    let n_fds = r.n_fds.get() as u64;
    assert!(n_fds <= BUS1_FD_MAX, "message {e:?} claims {n_fds} fds");
    let msg = data_msg(tx, e, more);
    // From here on a failure changes nothing (2.9 step 6.3: "nothing is
    // installed, the message stays queued"): everything is undone back to
    // this point, and fds already installed are closed again.
    let sp = tx.savepoint();
    let fail = |err: Errno, installed: &[i32]| {
        installed.iter().for_each(|f| sys::close(*f));
        tx.rollback_to(sp);
        Ok(Outcome::Fail(err))
    };
    // The fallible bookkeeping of 6.6 goes first, so that nothing can fail
    // for want of shared memory once fds are installed: the user
    // references (which enter the IDs into the table) and this process's
    // view of the pool.
    for &h in &valid {
        if let Err(err) = object::ref_add(tx, h) {
            return fail(err, &[]);
        }
    }
    let pool = match tx.domain().pool_for(tx.rec(peer).serial.get(), r.off.get() + r.size.get()) {
        Ok(pool) => pool,
        Err(err) => return fail(err, &[]),
    };
    // 6.3: fds
    let mut installed: Vec<i32> = Vec::new();
    let mut carrier_found = false;
    if n_fds > 0 && install_fds {
        match take_fds(tx, peer, fd, r.nonce.get(), n_fds) {
            Ok(Some(fds)) => {
                installed = fds;
                carrier_found = true;
            }
            Ok(None) => {}
            Err(err) => return fail(err, &[]),
        }
        // A carrier lost to a crash leaves its slots at -1.
        installed.resize(n_fds as usize, -1);
    }
    // 6.4: PEEK charges the new references; then step 9: the result is
    // written to the caller now, under the lock, so that a caller whose
    // memory cannot take it gets EFAULT with nothing changed.
    if peek {
        if let Err(err) = quota::charge(tx, peer, RES_HANDLES, valid.len() as i64) {
            return fail(err, &installed);
        }
    }
    if !out(&msg) {
        return fail(Errno::EFAULT, &installed);
    }
    // Write handle IDs and fd numbers into the slice (the bus's own pool
    // mapping; userspace only has read-only ones).
    let mut bytes: Small<u8, 64> = Small::with_capacity(ids.len() * 8 + installed.len() * 4);
    ids.iter().for_each(|id| bytes.extend_from_slice(&id.to_ne_bytes()));
    installed.iter().for_each(|f| bytes.extend_from_slice(&f.to_ne_bytes()));
    // The slice holds A(n_bytes) + 8·n_handles + A(4·n_fds) bytes, which
    // covers `bytes`; the peer's lock keeps every other writer out.
    pool.write(ids_at, &bytes);
    crate::crash::point("recv-installed");
    // 6.8: the valid entries' quota becomes the new user references'.
    let st = r.state.get();
    if peek {
        message::set_state(tx, peer, e, st | MS_PUBLISHED);
    } else {
        tx.add_i(&r.charged[RES_HANDLES], -(valid.len() as i64));
        if st & MS_SEED != 0 {
            tx.set(&tx.rec(peer).seed, P::NULL);
        }
        message::set_state(tx, peer, e, st | MS_PUBLISHED);
        // The carrier goes once the RECV has committed (with INSTALL_FDS its
        // fds were installed from it, and it was left in the vault).
        let carrier_fd = if !install_fds || carrier_found { fd } else { -1 };
        entry::release(tx, peer, carrier_fd, e, MS_QUEUED | MS_INFLIGHT | MS_SEED);
    }
    Ok(Outcome::Msg(msg))
}

/// Drops payload entry `slot` of `e` (found INVALID at RECV): the handle
/// reference and its quota go.
fn drop_slot(tx: &Txn, peer: P<PeerRec>, e: P<Msg>, slot: &crate::shm::Cell<u64>) {
    let h = P::<Handle>::from_off(slot.get());
    if h.is_null() {
        return;
    }
    tx.set(slot, 0);
    let r = tx.rec(e);
    tx.add_i(&r.charged[RES_HANDLES], -1);
    quota::refund(tx, peer, RES_HANDLES, 1);
    object::inflight_drop(tx, h);
}

/// Descriptors the vault needs in this process while fds are taken out.
const VAULT_FDS: usize = 4;

/// Installs a message's fds from the vault (2.9 step 6.3), leaving the
/// carrier there; None if it is missing.
fn take_fds(tx: &Txn, peer: P<PeerRec>, fd: i32, nonce: u64, n_fds: u64) -> Result<Option<Vec<i32>>> {
    // 6.3: fail with EMFILE, message kept, unless all of them fit, plus
    // the vault's own descriptors (three, and one connection) that are
    // open here meanwhile: a carrier read in several parts cannot be put
    // back once a part is truncated.
    sys::check_fd_room(fd, n_fds as usize + VAULT_FDS)?;
    let Some(v) = doorbell::vault_open(tx, peer, fd)? else { return Ok(None) };
    vault::find_carrier(tx, &v, nonce, Want::Peek)
}

/// SLICE_RELEASE (2.7), in one section of the caller: the slice must
/// start exactly at `off` and be published.
pub fn slice_release(dom: &Domain, peer: P<PeerRec>, serial: u64, fd: i32, off: u64) -> Result<()> {
    if let Some(done) = crate::release::defer(dom, peer, serial, off) {
        return done;
    }
    // The locked way, excluded from releases through the ring.
    crate::release::locked(dom, peer, |s| {
        let p = s.rec(peer);
        if p.magic.get() != PEER_MAGIC || p.serial.get() != serial || p.state.get() != PEER_CONNECTED {
            return Err(Errno::ESHUTDOWN);
        }
        let r = pool::lookup(s, peer, off).ok_or(Errno::ENXIO)?;
        let st = s.rec(r).state.get();
        if st & MS_PUBLISHED == 0 {
            return Err(Errno::ENXIO);
        }
        message::set_state(s, peer, r, entry::without(st, MS_PUBLISHED));
        crate::crash::point("release-committed");
        doorbell::settle_in_section(s, peer, fd);
        Ok(())
    })
}
