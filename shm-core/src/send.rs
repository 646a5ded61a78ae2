//! SEND (docs/reference.md §2.8): building one message per destination and
//! committing them as one transaction, including the documented CONTINUE
//! and SEED behaviour (A.1, A.2).

use crate::creds;
use crate::doorbell;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::object;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::shm::P;
use crate::sys;
use crate::txn::Txn;
use crate::usermem::{elem, range_ok, read_i32, read_u64, UserMem};
use crate::small::Small;
use std::collections::HashSet;
use uapi::*;

/// Largest total payload (2.8 step 7.1).
const MAX_PAYLOAD: u64 = 0x7FFF_F000;
const MAX_VECS: u64 = 1024;

/// Checks that need no lock (2.8 steps 2 and 3).
pub fn precheck(cmd: &bus1_cmd_send) -> Result<()> {
    if cmd.flags & !(BUS1_SEND_FLAG_CONTINUE | BUS1_SEND_FLAG_SEED) != 0 {
        return Err(Errno::EINVAL);
    }
    if cmd.n_destinations > 0x7FFF_FFFF || cmd.n_vecs > MAX_VECS || cmd.n_fds > BUS1_FD_MAX {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// The message template of a SEND (2.8 step 7).
struct Template {
    vecs: Small<(u64, u64), 8>,
    n_bytes: u64,
    handles: Small<P<Handle>, 8>,
    fds: Small<i32, 8>,
    creds: creds::Creds,
    sender_uid: u32,
}

/// An fd accepted as message payload (2.8 step 7.3).
fn check_fd(fd: i32) -> Result<()> {
    if fd < 0 {
        return Err(Errno::EBADF);
    }
    let fl = sys::fcntl(fd, libc::F_GETFL, 0).map_err(|_| Errno::EBADF)?;
    if fl as i32 & libc::O_PATH != 0 {
        return Ok(());
    }
    let st = sys::fstat(fd).map_err(|_| Errno::EBADF)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK
        && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok() == Some(libc::AF_UNIX)
    {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

fn template(tx: &Txn, caller: P<PeerRec>, cmd: &bus1_cmd_send, mem: &dyn UserMem, provisional: &mut i64) -> Result<Template> {
    // 7.1 vecs
    let mut vecs = Small::with_capacity(cmd.n_vecs as usize);
    let mut total = 0u64;
    if cmd.n_vecs > 0 {
        let mut raw: Small<u8, 128> = Small::filled(0, cmd.n_vecs as usize * 16);
        mem.read(cmd.ptr_vecs, &mut raw)?;
        for v in raw.chunks(16) {
            let base = u64::from_ne_bytes(v[..8].try_into().unwrap());
            let len = u64::from_ne_bytes(v[8..].try_into().unwrap());
            if (len as i64) < 0 {
                return Err(Errno::EMSGSIZE);
            }
            if !range_ok(base, len) {
                return Err(Errno::EFAULT);
            }
            total += len;
            if total > MAX_PAYLOAD {
                return Err(Errno::EMSGSIZE);
            }
            vecs.push((base, len));
        }
    }
    // 7.2 handles
    let mut handles = Small::with_capacity(cmd.n_handles.min(1 << 16) as usize);
    for i in 0..cmd.n_handles {
        let id = read_u64(mem, elem(cmd.ptr_handles, i, 8)?)?;
        let (h, created) = object::import(tx, caller, id)?;
        *provisional += created as i64;
        handles.push(h);
    }
    // 7.3 fds
    let mut fds = Small::with_capacity(cmd.n_fds as usize);
    for i in 0..cmd.n_fds {
        let fd = read_i32(mem, elem(cmd.ptr_fds, i, 4)?)?;
        check_fd(fd)?;
        fds.push(fd);
    }
    let c = creds::current();
    Ok(Template { vecs, n_bytes: total, handles, fds, creds: c, sender_uid: tx.rec(caller).uid.get() })
}

/// Builds the message of one destination (2.8 step 9.4 onwards). `dest`
/// is the receiver's handle of the destination node (null for a seed).
fn build(tx: &Txn, receiver: P<PeerRec>, dest: P<Handle>, t: &Template, mem: &dyn UserMem) -> Result<P<Entry>> {
    let n_handles = t.handles.len() as u64;
    let n_fds = t.fds.len() as u64;
    let sh = quota::shares(tx, receiver, t.sender_uid)?;
    quota::charge_fair(tx, receiver, RES_SLICES, 1, sh)?;
    quota::charge_fair(tx, receiver, RES_HANDLES, n_handles as i64, sh)?;
    let size = pool::slice_size(t.n_bytes, n_handles, n_fds);
    let slice = pool::alloc_slice(tx, receiver, size)?;
    // [documented] in-flight limits, after the pool's own checks so that
    // an oversized message still reports EMSGSIZE.
    let size = pool::range(tx, slice).1;
    quota::charge_fair(tx, receiver, RES_BYTES, size as i64, sh)?;
    quota::charge_fair(tx, receiver, RES_FDS, n_fds as i64, sh)?;
    // Payload, straight from the sender's memory into the receiver's pool.
    let rp = tx.rec(receiver);
    // The slice was just allocated by this transaction: nobody else writes it.
    let pool = tx.domain().pool(rp.serial.get())?;
    let (start, len) = pool::range(tx, slice);
    let mut pos = start;
    for &(addr, len) in &t.vecs {
        pool.copy_in(pos, mem, addr, len as usize)?;
        pos += len;
    }
    // RECV writes handle IDs and fd numbers behind the payload with plain
    // stores: make sure those pages exist now, while a full file system
    // is still an ENOMEM of this SEND rather than a fault later.
    if n_handles + n_fds > 0 {
        pool.zero(pos, (start + len - pos) as usize, mem)?;
    }
    crate::crash::point("send-copied");
    let e = queue::new_entry(tx, ENTRY_DATA, receiver)?;
    let r = tx.rec(e);
    if !dest.is_null() {
        tx.init(&r.subject, dest.off());
        object::handle_ref(tx, dest);
    }
    let (pidns, userns) = creds::namespaces();
    let same_pidns = pidns == rp.pidns.get();
    let same_userns = userns == rp.userns.get();
    tx.init(&r.uid, if same_userns { t.creds.uid } else { creds::OVERFLOW_ID });
    tx.init(&r.gid, if same_userns { t.creds.gid } else { creds::OVERFLOW_ID });
    tx.init(&r.pid, if same_pidns { t.creds.pid } else { 0 });
    tx.init(&r.tid, if same_pidns { t.creds.tid } else { 0 });
    tx.init(&r.slice, slice);
    tx.init(&r.n_bytes, t.n_bytes);
    tx.init(&r.n_fds, n_fds);
    tx.init(&r.charged[RES_SLICES], 1);
    tx.init(&r.charged[RES_HANDLES], n_handles as i64);
    tx.init(&r.charged[RES_BYTES], size as i64);
    tx.init(&r.charged[RES_FDS], n_fds as i64);
    tx.init(&r.share_user, sh.user);
    tx.init(&r.share_peer, sh.peer);
    message::alloc_slots(tx, e, n_handles)?;
    let slots = message::handle_slots(tx, e);
    for (j, &h) in t.handles.iter().enumerate() {
        let rh = object::handle_for(tx, receiver, object::node_of(tx, h))?;
        tx.init(&slots[j], rh.off());
        object::inflight_add(tx, rh);
    }
    if n_fds > 0 {
        let nonce = message::assign_nonce(tx, e)?;
        doorbell::prepare_carrier(tx, receiver, nonce, &t.fds);
    }
    Ok(e)
}

/// The receiving peer for destination handle `h` (2.8 step 9.4).
fn receiver_of(tx: &Txn, caller: P<PeerRec>, h: P<Handle>) -> Result<P<PeerRec>> {
    let nr = tx.rec(object::node_of(tx, h));
    let owner = nr.owner.get();
    if owner == caller {
        return Ok(caller);
    }
    if owner.is_null() || nr.released.get() == 1 || tx.rec(owner).state.get() != PEER_CONNECTED {
        return Err(Errno::ESHUTDOWN);
    }
    Ok(owner)
}

/// SEND from step 6 on (the caller is locked and connected); `fd` is the
/// caller's own peer fd.
pub fn send(tx: &Txn, caller: P<PeerRec>, fd: i32, cmd: &bus1_cmd_send, mem: &dyn UserMem) -> Result<()> {
    let user = tx.rec(tx.rec(caller).user.get());
    if cmd.n_destinations > user.max[RES_HANDLES].get() as u64 {
        return Err(Errno::EINVAL);
    }
    tx.require_live_receivers();
    let mut provisional = 0i64;
    let t = template(tx, caller, cmd, mem, &mut provisional)?;
    let cont = cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0;
    if cmd.flags & BUS1_SEND_FLAG_SEED != 0 {
        if cont || cmd.n_destinations != 0 {
            return Err(Errno::EINVAL);
        }
        return set_seed(tx, caller, fd, &t, mem, provisional);
    }
    // Destinations already used (ENOTUNIQ); a set only for long lists.
    let mut used_small: Small<u64, 16> = Small::with_capacity(0);
    let mut used_set = HashSet::new();
    let mut first_use = |h: u64| {
        if cmd.n_destinations <= 16 {
            !used_small.contains(&h) && {
                used_small.push(h);
                true
            }
        } else {
            used_set.insert(h)
        }
    };
    let mut entries: Small<P<Entry>, 8> = Small::with_capacity(cmd.n_destinations.min(1 << 16) as usize);
    let mut errors: Small<u64, 8> = Small::filled(0, if cont { cmd.n_destinations as usize } else { 0 });
    for i in 0..cmd.n_destinations {
        let id = read_u64(mem, elem(cmd.ptr_destinations, i, 8)?)?;
        let (h, created) = object::import(tx, caller, id)?;
        provisional += created as i64;
        if !first_use(h.off()) {
            return Err(Errno::ENOTUNIQ);
        }
        let sp = tx.savepoint();
        let r = receiver_of(tx, caller, h).and_then(|rcv| {
            let dest = tx.rec(object::node_of(tx, h)).owner_handle.get();
            build(tx, rcv, dest, &t, mem)
        });
        match r {
            Ok(e) => entries.push(e),
            Err(e) if cont && matches!(e, Errno::ESHUTDOWN | Errno::EDQUOT | Errno::EXFULL) => {
                tx.rollback_to(sp);
                errors[i as usize] = e.0 as u64;
            }
            Err(e) => return Err(e),
        }
    }
    quota::charge(tx, caller, RES_HANDLES, provisional)?;
    if cont && cmd.ptr_errors != 0 && cmd.n_destinations > 0 {
        let bytes: Vec<u8> = errors.iter().flat_map(|e| e.to_ne_bytes()).collect();
        mem.write(cmd.ptr_errors, &bytes)?;
    }
    // Commit: one stamp for the whole transaction, destination order kept.
    let stamp = queue::next_stamp(tx);
    for (i, &e) in entries.iter().enumerate() {
        queue::append(tx, e, stamp);
        if i == 0 {
            crate::crash::point("send-append");
        }
    }
    Ok(())
}

/// SEND with SEED (A.1): replace the caller's seed.
fn set_seed(tx: &Txn, caller: P<PeerRec>, fd: i32, t: &Template, mem: &dyn UserMem, provisional: i64) -> Result<()> {
    let e = build(tx, caller, P::NULL, t, mem)?;
    quota::charge(tx, caller, RES_HANDLES, provisional)?;
    // Its payload handles are judged like a message's, by this stamp.
    tx.set(&tx.rec(e).stamp, queue::next_stamp(tx));
    let p = tx.rec(caller);
    let old = p.seed.get();
    tx.set(&p.seed, e);
    if !old.is_null() {
        let o = tx.rec(old);
        if o.n_fds.get() > 0 {
            // Its files must not wait in the vault for a later RECV.
            tx.push_post(doorbell::Op::DropCarrier { peer: caller, fd, nonce: o.nonce.get() });
        }
        queue::free(tx, old);
    }
    Ok(())
}
