//! RECV (docs/reference.md §2.9): choosing the entry to deliver, the discard
//! rules of 7.7, handle and fd installation, PEEK and seeds.

use crate::doorbell::{self, Op};
use crate::vault::{self, Want};
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::object;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::small::Small;
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

/// Whether entry `e` at the head is to be discarded (2.9 step 5, 7.7).
fn stale(tx: &Txn, peer: P<PeerRec>, e: P<Entry>) -> bool {
    let r = tx.rec(e);
    let stamp = r.stamp.get();
    if stamp <= tx.rec(peer).flush.get() {
        return true;
    }
    let (handle, node) = match r.kind.get() {
        ENTRY_RELEASE => {
            let node = P::<Node>::from_off(r.subject.get());
            (tx.rec(node).owner_handle.get(), node)
        }
        _ => {
            let h = P::<Handle>::from_off(r.subject.get());
            (h, object::node_of(tx, h))
        }
    };
    if handle.is_null() || tx.rec(handle).user_refs.get() == 0 {
        return true;
    }
    let nr = tx.rec(node);
    nr.destroyed.get() == 1 && nr.destroy_stamp.get() < stamp
}

/// RECV from step 3 on; `out` writes the result to the caller's memory
/// (false: it cannot, EFAULT) before anything is dequeued or installed.
pub fn recv(tx: &Txn, peer: P<PeerRec>, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&bus1_msg) -> bool) -> Result<Outcome> {
    let peek = flags & BUS1_RECV_FLAG_PEEK != 0;
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
        assert!(steps <= tx.list_bound::<Entry>(), "queue of peer {peer:?} longer than the segment can hold (a cycle)");
        let head = tx.rec(peer).q_head.get();
        if head.is_null() {
            doorbell::discard_strays(tx, peer, fd);
            return Ok(Outcome::Fail(Errno::EAGAIN));
        }
        if stale(tx, peer, head) {
            drop_entry(tx, peer, fd, head);
            continue;
        }
        break head;
    };
    let r = tx.rec(e);
    let next = r.next.get();
    let more = !next.is_null() && tx.rec(next).stamp.get() == r.stamp.get();
    if r.kind.get() != ENTRY_DATA {
        let msg = bus1_msg {
            r#type: if r.kind.get() == ENTRY_DESTROY { BUS1_MSG_NODE_DESTROY } else { BUS1_MSG_NODE_RELEASE },
            flags: if more { BUS1_MSG_FLAG_CONTINUE } else { 0 },
            destination: notification_destination(tx, e),
            uid: u32::MAX,
            gid: u32::MAX,
            pid: 0,
            tid: 0,
            offset: BUS1_OFFSET_INVALID,
            ..Default::default()
        };
        if !out(&msg) {
            return Ok(Outcome::Fail(Errno::EFAULT));
        }
        if !peek {
            queue::discard(tx, e);
        }
        return Ok(Outcome::Msg(msg));
    }
    deliver_data(tx, peer, fd, e, flags, max_offset, more, out)
}

fn notification_destination(tx: &Txn, e: P<Entry>) -> u64 {
    let r = tx.rec(e);
    let h = if r.kind.get() == ENTRY_RELEASE {
        tx.rec(P::<Node>::from_off(r.subject.get())).owner_handle.get()
    } else {
        P::<Handle>::from_off(r.subject.get())
    };
    let hr = tx.rec(h);
    if hr.has_id.get() == 1 {
        hr.id.get()
    } else {
        BUS1_HANDLE_INVALID
    }
}

/// Discards a head entry, removing its fd carrier from the vault after
/// the commit.
fn drop_entry(tx: &Txn, peer: P<PeerRec>, fd: i32, e: P<Entry>) {
    let r = tx.rec(e);
    if r.kind.get() == ENTRY_DATA && r.n_fds.get() > 0 {
        tx.push_post(Op::DropCarrier { peer, fd, nonce: r.nonce.get() });
    }
    queue::discard(tx, e);
}

#[allow(clippy::too_many_arguments)]
fn deliver_data(
    tx: &Txn,
    peer: P<PeerRec>,
    fd: i32,
    e: P<Entry>,
    flags: u64,
    max_offset: u64,
    more: bool,
    out: &dyn Fn(&bus1_msg) -> bool,
) -> Result<Outcome> {
    let peek = flags & BUS1_RECV_FLAG_PEEK != 0;
    let install_fds = flags & BUS1_RECV_FLAG_INSTALL_FDS != 0;
    let r = tx.rec(e);
    let (off, size) = pool::range(tx, r.slice.get());
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
    for (j, slot) in slots.iter().enumerate() {
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
            message::drop_slot(tx, e, j);
        }
    }
    let n_fds = r.n_fds.get();
    assert!(n_fds <= BUS1_FD_MAX, "message {e:?} claims {n_fds} fds");
    let dest = P::<Handle>::from_off(r.subject.get());
    let msg = bus1_msg {
        r#type: BUS1_MSG_DATA,
        flags: if more { BUS1_MSG_FLAG_CONTINUE } else { 0 },
        destination: if dest.is_null() {
            BUS1_HANDLE_INVALID
        } else {
            let d = tx.rec(dest);
            if d.has_id.get() == 1 { d.id.get() } else { BUS1_HANDLE_INVALID }
        },
        uid: r.uid.get(),
        gid: r.gid.get(),
        pid: r.pid.get(),
        tid: r.tid.get(),
        offset: off,
        n_bytes,
        n_handles: slots.len() as u64,
        n_fds,
        n_secctx: 0,
    };
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
    let pool = match tx.domain().pool(tx.rec(peer).serial.get()) {
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
    // covers `bytes`; the bus serialises all writers with the domain lock.
    pool.write(ids_at, &bytes);
    crate::crash::point("recv-installed");
    // 6.5
    pool::publish(tx, r.slice.get());
    // 6.8: the valid entries' quota becomes the new user references'.
    if !peek {
        tx.add_i(&r.charged[RES_HANDLES], -(valid.len() as i64));
        // The carrier goes once the RECV has committed (with INSTALL_FDS
        // its fds were installed from it, and it was left in the vault).
        if n_fds > 0 && (!install_fds || carrier_found) {
            tx.push_post(Op::DropCarrier { peer, fd, nonce: r.nonce.get() });
        }
        if e == tx.rec(peer).seed.get() {
            tx.set(&tx.rec(peer).seed, P::NULL);
            queue::free(tx, e);
        } else {
            queue::discard(tx, e);
        }
    }
    Ok(Outcome::Msg(msg))
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
