//! SEND (docs/reference.md §2.8): one message per destination, committed
//! as one transaction, including the documented CONTINUE and SEED
//! behaviour.
//!
//! Everything the call reads from the caller's memory (the vectors, the
//! IDs, the fd numbers, the payload of a transaction, whether `ptr_errors`
//! can be written) is read first, with no lock held; where a read faults,
//! the EFAULT is reported at the step the specification puts it, after any
//! earlier error. Then one of two paths runs:
//!
//! * the **data path** — no handles, no fds, no seed, every destination an
//!   existing handle — takes no domain lock: it resolves the destinations
//!   under the caller's lock, prepares each message under its receiver's
//!   lock (quota, slice, record), copies the payload into the slice with no
//!   lock held, and commits through its transaction slot (`slot`); a
//!   small unicast reads its payload first and does all of it in one
//!   section of the receiver (`direct`);
//! * every other SEND is one transaction under the domain lock, which
//!   copies the payload into the slices from the copy read beforehand.

use crate::capacity::{self, Need};
use crate::creds;
use crate::doorbell;
use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::message;
use crate::object;
use crate::pool;
use crate::queue;
use crate::quota;
use crate::section::Section;
use crate::shm::P;
use crate::slot::{self, Slot};
use crate::small::Small;
use crate::store::Store;
use crate::sys;
use crate::table;
use crate::txn::Txn;
use crate::usermem::{elem, range_ok, read_i32, read_u64, UserMem};
use std::collections::HashSet;

/// The destinations of one SEND already used (ENOTUNIQ), by handle
/// offset: a short list for a few, a set sized up front for many.
struct Used {
    few: Small<u64, 16>,
    many: Option<HashSet<u64, core::hash::BuildHasherDefault<OffsetHasher>>>,
}

impl Used {
    fn new(n_destinations: u64) -> Used {
        let many = (n_destinations > 16).then(|| HashSet::with_capacity_and_hasher(n_destinations.min(1 << 16) as usize, Default::default()));
        Used { few: Small::with_capacity(0), many }
    }

    /// Whether `h` is used for the first time (it is now).
    fn first(&mut self, h: u64) -> bool {
        match &mut self.many {
            Some(set) => set.insert(h),
            None => {
                !self.few.contains(&h) && {
                    self.few.push(h);
                    true
                }
            }
        }
    }
}

/// Hashes a handle's segment offset: offsets are distinct, so a multiply
/// spreads them well enough, and a keyed hash would cost more than the
/// rest of a destination's check.
#[derive(Default)]
struct OffsetHasher(u64);

impl core::hash::Hasher for OffsetHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The table indexes by the low bits, and offsets are aligned.
        self.0 = h ^ (h >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
use uapi::*;

/// Largest total payload (2.8 step 7.1).
const MAX_PAYLOAD: u64 = 0x7FFF_F000;
const MAX_VECS: u64 = 1024;
/// A payload larger than this can never be charged (the fair share of the
/// user's 16 MiB of in-flight bytes is at most half of it), so a
/// transaction does not read it beforehand.
const MAX_CHARGEABLE: u64 = DEFAULT_MAX[RES_BYTES] as u64;

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

/// An array of the caller's memory, read up to its first fault.
struct Ids {
    ids: Small<u64, 8>,
    /// Index of the element that could not be read, if any.
    fault: Option<usize>,
}

impl Ids {
    /// Elements read with one copy: a multicast's destinations cost one
    /// guarded copy per chunk, not one per ID.
    const CHUNK: u64 = 64;

    fn read(mem: &dyn UserMem, base: u64, n: u64) -> Ids {
        let mut ids = Small::with_capacity(n.min(1 << 16) as usize);
        let mut i = 0;
        while i < n {
            let k = (n - i).min(Self::CHUNK);
            if k > 1 && Self::read_chunk(mem, base, i, k, &mut ids) {
                i += k;
                continue;
            }
            // One element, or some element of the chunk faults: the first
            // that does is found one by one.
            for j in i..i + k {
                match elem(base, j, 8).and_then(|a| read_u64(mem, a)) {
                    Ok(id) => ids.push(id),
                    Err(_) => return Ids { ids, fault: Some(j as usize) },
                }
            }
            i += k;
        }
        Ids { ids, fault: None }
    }

    /// Appends elements `i..i + k` (`k` at most a chunk) if they can be
    /// read with one copy; false (nothing appended) if not.
    #[inline(never)]
    fn read_chunk(mem: &dyn UserMem, base: u64, i: u64, k: u64, ids: &mut Small<u64, 8>) -> bool {
        let mut raw = [0u8; Self::CHUNK as usize * 8];
        let chunk = &mut raw[..k as usize * 8];
        if elem(base, i, 8).and_then(|a| mem.read(a, chunk)).is_err() {
            return false;
        }
        chunk.chunks(8).for_each(|b| ids.push(u64::from_ne_bytes(b.try_into().unwrap())));
        true
    }

    /// Element `i`, or the EFAULT of reading it (step 9.1 / 7.2).
    fn get(&self, i: usize) -> Result<u64> {
        if self.fault == Some(i) {
            return Err(Errno::EFAULT);
        }
        Ok(self.ids[i])
    }
}

/// Everything a SEND reads from the caller's memory, read with no lock.
struct Args {
    /// Step 7.1's outcome: the vectors and their total, or its error.
    vecs: Result<(Small<(u64, u64), 8>, u64)>,
    handles: Ids,
    /// The fds, and step 7.3's first error (its index).
    fds: Small<i32, 8>,
    fd_error: Option<(usize, Errno)>,
    dests: Ids,
    /// Whether `ptr_errors` can be written (checked without changing it).
    errors_writable: bool,
}

fn read_vecs(cmd: &bus1_cmd_send, mem: &dyn UserMem) -> Result<(Small<(u64, u64), 8>, u64)> {
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
    Ok((vecs, total))
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

impl Args {
    fn read(cmd: &bus1_cmd_send, mem: &dyn UserMem) -> Args {
        let mut fds = Small::with_capacity(cmd.n_fds as usize);
        let mut fd_error = None;
        for i in 0..cmd.n_fds {
            match elem(cmd.ptr_fds, i, 4).and_then(|a| read_i32(mem, a)).and_then(|fd| check_fd(fd).map(|_| fd)) {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    fd_error = Some((i as usize, e));
                    break;
                }
            }
        }
        let cont = cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0;
        let errors_writable = !(cont && cmd.ptr_errors != 0 && cmd.n_destinations > 0) || {
            let mut b = vec![0u8; cmd.n_destinations.min(1 << 28) as usize * 8];
            mem.read(cmd.ptr_errors, &mut b).and_then(|_| mem.write(cmd.ptr_errors, &b)).is_ok()
        };
        Args {
            vecs: read_vecs(cmd, mem),
            handles: Ids::read(mem, cmd.ptr_handles, cmd.n_handles),
            fds,
            fd_error,
            dests: Ids::read(mem, cmd.ptr_destinations, cmd.n_destinations),
            errors_writable,
        }
    }

    fn simple(&self, cmd: &bus1_cmd_send) -> bool {
        cmd.n_handles == 0 && cmd.n_fds == 0 && cmd.flags & BUS1_SEND_FLAG_SEED == 0
    }
}

/// The credentials stamped on a message to `receiver`, translated into its
/// namespaces (4.6).
fn stamp_creds<S: Store>(s: &S, r: P<Msg>, receiver: P<PeerRec>, c: &creds::Creds) {
    let rp = s.rec(receiver);
    let rr = s.rec(r);
    let (pidns, userns) = creds::namespaces();
    let same_pidns = pidns == rp.pidns.get();
    let same_userns = userns == rp.userns.get();
    s.init(&rr.uid, if same_userns { c.uid } else { creds::OVERFLOW_ID });
    s.init(&rr.gid, if same_userns { c.gid } else { creds::OVERFLOW_ID });
    s.init(&rr.pid, if same_pidns { c.pid } else { 0 });
    s.init(&rr.tid, if same_pidns { c.tid } else { 0 });
}

/// SEND: the caller is the peer `caller` (serial `serial`), `fd` its own
/// peer fd.
pub fn send(dom: &Domain, caller: P<PeerRec>, serial: u64, fd: i32, cmd: &bus1_cmd_send, mem: &dyn UserMem) -> Result<()> {
    precheck(cmd)?;
    let args = Args::read(cmd, mem);
    if args.simple(cmd) {
        match data::send(dom, caller, serial, cmd, &args, mem) {
            Err(Errno::NEEDS_TXN) => {}
            r => return r,
        }
    }
    // A transaction: the payload is read now, with no lock held.
    let payload = match &args.vecs {
        Ok((vecs, total)) if *total <= MAX_CHARGEABLE && cmd.n_destinations + (cmd.flags & BUS1_SEND_FLAG_SEED != 0) as u64 > 0 => {
            Some(read_payload(vecs, *total, mem))
        }
        _ => None,
    };
    let errors = Small::<u64, 8>::filled(0, if cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0 { cmd.n_destinations.min(1 << 28) as usize } else { 0 });
    let errors = core::cell::RefCell::new(errors);
    let tx = dom.lock()?;
    let r = crate::peer::resolve_connected(&tx, caller, serial).and_then(|p| {
        object::collect(&tx, p);
        txn_send(&tx, p, fd, cmd, &args, payload.as_ref(), mem, &mut errors.borrow_mut())?;
        crate::peer::settle_own_socket(&tx, p, fd);
        Ok(())
    });
    tx.finish(r)?;
    write_errors(cmd, mem, &errors.borrow());
    Ok(())
}

/// Writes the per-destination results of a CONTINUE send once it is
/// committed (writability was checked before, in step order).
fn write_errors(cmd: &bus1_cmd_send, mem: &dyn UserMem, errors: &[u64]) {
    if cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0 && cmd.ptr_errors != 0 && cmd.n_destinations > 0 {
        let bytes: Vec<u8> = errors.iter().flat_map(|e| e.to_ne_bytes()).collect();
        let _ = mem.write(cmd.ptr_errors, &bytes);
    }
}

/// The payload, copied out of the caller's memory: the bytes, and whether
/// reading them faulted (then the first copy into a slice fails).
struct Payload {
    bytes: Vec<u8>,
    fault: bool,
}

fn read_payload(vecs: &[(u64, u64)], total: u64, mem: &dyn UserMem) -> Payload {
    let mut bytes = vec![0u8; total as usize];
    let fault = read_payload_into(vecs, &mut bytes, mem, || {}).is_err();
    Payload { bytes, fault }
}

/// Reads the payload `vecs` point at into `buf` (exactly their total
/// long), up to the first fault; `between` runs between two vectors.
fn read_payload_into(vecs: &[(u64, u64)], buf: &mut [u8], mem: &dyn UserMem, mut between: impl FnMut()) -> Result<()> {
    let mut pos = 0usize;
    for (k, &(addr, len)) in vecs.iter().enumerate() {
        if k > 0 {
            between();
        }
        mem.read(addr, &mut buf[pos..pos + len as usize])?;
        pos += len as usize;
    }
    Ok(())
}

// ------------------------------------------------------------ data path

mod data {
    use super::*;

    /// Where a destination ID led, looked up under the caller's lock.
    #[derive(Clone, Copy, Default)]
    enum Dest {
        /// The caller's handle `h`, of a node whose owner handle is `oh`
        /// (generation `gen`) held by `owner` (serial `serial`).
        Found { h: P<Handle>, oh: P<Handle>, gen: u64, owner: P<PeerRec>, serial: u64, released: bool },
        /// No such ID, and not one that would create a node: ENXIO.
        #[default]
        Unknown,
    }

    impl Dest {
        /// Where a message to this destination goes, as the `index`-th of
        /// the call: None if it cannot be delivered (ESHUTDOWN: the node's
        /// owner is gone or released it, unless the caller sends to its
        /// own node) or the ID is unknown.
        fn target(&self, caller: P<PeerRec>, caller_serial: u64, index: usize, n_bytes: u64) -> Option<Target> {
            let Dest::Found { oh, gen, owner, serial, released, .. } = *self else {
                return None;
            };
            let own = owner == caller;
            if !own && (owner.is_null() || released) {
                return None;
            }
            Some(Target { receiver: owner, serial: if own { caller_serial } else { serial }, oh, gen, index, n_bytes })
        }
    }

    /// What one destination's preparation came to.
    enum Prep {
        /// The record, and the stamp it was queued at (0: prepared only).
        Done(P<Msg>, u64),
        Fail(Errno),
        Room(Need),
    }

    /// A destination resolved under the caller's lock, kept by the thread
    /// for its next unicasts to the same ID.
    #[derive(Clone, Copy)]
    struct Resolved {
        domain: (usize, u64),
        caller: P<PeerRec>,
        serial: u64,
        id: u64,
        /// The caller's `id_removals` at the resolution.
        removals: u64,
        dest: Dest,
    }

    /// Entries of a thread's cache of resolved destinations (direct-mapped
    /// by ID).
    const RESOLVED: usize = 16;

    thread_local! {
        // One cell per entry: a look-up copies out one entry, not all.
        static RESOLVED_OF_THREAD: [core::cell::Cell<Option<Resolved>>; RESOLVED] = const { [const { core::cell::Cell::new(None) }; RESOLVED] };
    }

    /// Where the single destination of a unicast leads, from the thread's
    /// cache, if it can be known without the caller's lock: the caller is
    /// still the connected peer `serial` (steps 5 and 6) and no ID left its
    /// table since the resolution was made (an ID names one handle for
    /// life, and whether the handle's node can still take the message is
    /// checked again under the receiver's lock). A change made meanwhile
    /// by a call still in progress is one this SEND may precede.
    fn resolved(dom: &Domain, caller: P<PeerRec>, serial: u64, args: &Args) -> Option<Dest> {
        let p = dom.seg.rec(caller);
        if p.magic.load_racy() != PEER_MAGIC || p.serial.load_racy() != serial || p.state.load_racy() != PEER_CONNECTED {
            return None;
        }
        // Step 7.1 with its one destination.
        if dom.seg.try_rec(p.user.load_racy())?.max[RES_HANDLES].load_racy() < 1 {
            return None;
        }
        let id = args.dests.get(0).ok()?;
        let removals = p.id_removals.load();
        let e = RESOLVED_OF_THREAD.with(|c| c[id as usize % RESOLVED].get())?;
        let hit = e.domain == dom.cache_key() && e.caller == caller && e.serial == serial && e.id == id && e.removals == removals;
        hit.then_some(e.dest)
    }

    fn remember(dom: &Domain, caller: P<PeerRec>, serial: u64, id: u64, removals: u64, dest: Dest) {
        let e = Resolved { domain: dom.cache_key(), caller, serial, id, removals, dest };
        RESOLVED_OF_THREAD.with(|c| c[id as usize % RESOLVED].set(Some(e)));
    }

    pub(super) fn send(dom: &Domain, caller: P<PeerRec>, serial: u64, cmd: &bus1_cmd_send, args: &Args, mem: &dyn UserMem) -> Result<()> {
        let cont = cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0;
        if cmd.n_destinations == 1 {
            if let (Some(dest), Ok((vecs, total))) = (resolved(dom, caller, serial, args), args.vecs.as_ref()) {
                let creds = creds::current();
                let uid = dom.seg.rec(caller).uid.get();
                if let Some(done) = direct(dom, caller, serial, cmd, args, &[dest], vecs, *total, &creds, uid, mem) {
                    return done;
                }
            }
        }
        // Steps 5 and 6, then 7.1, then the destinations' resolution.
        let (dests, removals) = {
            let s = Section::lock(dom, caller)?;
            let p = s.rec(caller);
            if p.magic.get() != PEER_MAGIC || p.serial.get() != serial || p.state.get() != PEER_CONNECTED {
                return Err(Errno::ESHUTDOWN);
            }
            let removals = p.id_removals.load();
            if cmd.n_destinations > s.rec(p.user.get()).max[RES_HANDLES].get() as u64 {
                return Err(Errno::EINVAL);
            }
            let _ = args.vecs.as_ref().map_err(|e| *e)?;
            let n = args.dests.fault.unwrap_or(args.dests.ids.len());
            let mut v: Small<Dest, 8> = Small::with_capacity(n);
            for &id in &args.dests.ids[..n] {
                match table::id_get(&s, caller, id) {
                    Some(h) => {
                        let node = s.rec(s.rec(h).node.get());
                        let oh = node.owner_handle.load_racy();
                        let owner = node.owner.load_racy();
                        v.push(Dest::Found {
                            h,
                            oh,
                            gen: if oh.is_null() { 0 } else { s.rec(oh).gen.load_racy() },
                            owner,
                            serial: if owner.is_null() { 0 } else { s.rec(owner).serial.load_racy() },
                            released: node.released.load_racy() != 0,
                        });
                    }
                    // A new node would be created: that is a transaction.
                    None if id & (BUS1_HANDLE_FLAG_MANAGED | BUS1_HANDLE_FLAG_REMOTE) == 0 => return Err(Errno::NEEDS_TXN),
                    None => v.push(Dest::Unknown),
                }
            }
            crate::crash::point("send-resolving");
            (v, removals)
        };
        if let (1, Some(Dest::Found { .. })) = (cmd.n_destinations, dests.first()) {
            remember(dom, caller, serial, args.dests.ids[0], removals, dests[0]);
        }
        let (vecs, total) = args.vecs.as_ref().map_err(|e| *e)?;
        let creds = creds::current();
        let uid = dom.seg.rec(caller).uid.get();
        if let Some(done) = direct(dom, caller, serial, cmd, args, &dests, vecs, *total, &creds, uid, mem) {
            return done;
        }
        let slot = Slot::claim(dom, caller, serial)?;
        let mut errors: Small<u64, 8> = Small::filled(0, if cont { cmd.n_destinations as usize } else { 0 });
        let mut used = super::Used::new(cmd.n_destinations);
        for i in 0..cmd.n_destinations as usize {
            args.dests.get(i)?;
            let Dest::Found { h, .. } = dests[i] else {
                return Err(Errno::ENXIO);
            };
            if !used.first(h.off()) {
                return Err(Errno::ENOTUNIQ);
            }
            let target = dests[i].target(caller, serial, i, *total);
            let r = match target.map_or(Prep::Fail(Errno::ESHUTDOWN), |t| prepare_until_done(dom, &Commit::Slot(&slot), &t, &creds, uid)) {
                Prep::Done(r, _) => r,
                Prep::Fail(e) if cont && matches!(e, Errno::ESHUTDOWN | Errno::EDQUOT | Errno::EXFULL) => {
                    errors[i] = e.0 as u64;
                    continue;
                }
                Prep::Fail(e) => return Err(e),
                Prep::Room(_) => unreachable!(),
            };
            // 9.8: the payload, straight from the caller's memory into the
            // slice, which nobody else can see yet; no lock is held.
            let (off, _) = pool::range(&crate::section::Raw { dom }, r);
            let receiver = dom.seg.rec(r).peer.load_racy();
            let pool = match dom.pool_for(dom.seg.rec(receiver).serial.load_racy(), off + *total) {
                Ok(p) => p,
                // The receiver went away and took its pool file: the
                // message goes nowhere, as if sent just before.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            let mut pos = off;
            for (k, &(addr, len)) in vecs.iter().enumerate() {
                pool.copy_in(pos, mem, addr, len as usize)?;
                pos += len;
                if k == 0 && vecs.len() > 1 {
                    crate::crash::point("send-copying");
                }
            }
            crate::crash::point("send-copied");
        }
        if !args.errors_writable {
            return Err(Errno::EFAULT);
        }
        commit(dom, caller, slot)?;
        write_errors(cmd, mem, &errors);
        Ok(())
    }

    /// One destination of a SEND: the receiver (serial `serial`), its
    /// handle `oh` of the node (generation `gen`), the destination's index
    /// in the call and the payload's size.
    #[derive(Clone, Copy)]
    struct Target {
        receiver: P<PeerRec>,
        serial: u64,
        oh: P<Handle>,
        gen: u64,
        index: usize,
        n_bytes: u64,
    }

    /// How a prepared record is committed.
    enum Commit<'a> {
        /// Listed in the transaction slot and committed later (`commit`),
        /// after the payload was copied in with no lock held.
        Slot(&'a Slot<'a>),
        /// In the same section: the payload, already read into the
        /// process's own memory, goes into the slice under the receiver's
        /// lock, and the record is queued at once at a tick of the
        /// receiver's clock synced to `origin`.
        Direct { bytes: &'a [u8], pool: &'a crate::shm::PoolMapping, origin: &'a crate::shm::Atomic64, mem: &'a dyn UserMem },
    }

    /// The tag of a direct unicast's entry: its stamp, a tick of its
    /// queue's clock, is unique in the queue, and the tag only has to
    /// differ from those of transactions (slot tags, and tags with the
    /// top bit set) that may share the stamp.
    const DIRECT_TAG: u64 = 1 << 62;

    /// The largest payload of a direct unicast: copying it twice costs less
    /// than the slot's lock and a second section of the receiver.
    const DIRECT_MAX: u64 = 4096;

    thread_local! {
        /// Where a direct unicast's payload waits for the receiver's lock.
        static DIRECT_BUF: core::cell::RefCell<Vec<u8>> = const { core::cell::RefCell::new(Vec::new()) };
    }

    /// The direct unicast: a SEND to one existing destination with a small
    /// payload reads the payload first (no lock held), then prepares and
    /// commits the message in one section of the receiver, with no
    /// transaction slot. `None` when the call is not such a SEND or meets
    /// anything but success (a fault, a full quota, a receiver that went
    /// away): nothing has changed then, and the slot path runs the call
    /// and reports its errors in their order.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        dom: &Domain,
        caller: P<PeerRec>,
        serial: u64,
        cmd: &bus1_cmd_send,
        args: &Args,
        dests: &[Dest],
        vecs: &[(u64, u64)],
        total: u64,
        creds: &creds::Creds,
        uid: u32,
        mem: &dyn UserMem,
    ) -> Option<Result<()>> {
        if cmd.n_destinations != 1 || total > DIRECT_MAX || !args.errors_writable || args.dests.get(0).is_err() {
            return None;
        }
        let target = dests[0].target(caller, serial, 0, total)?;
        let pool = dom.pool(target.serial).ok()?;
        let origin = &dom.seg.rec(caller).clock;
        DIRECT_BUF
            .try_with(|buf| {
                let mut buf = buf.try_borrow_mut().ok()?;
                buf.resize(total as usize, 0);
                let mut first = true;
                read_payload_into(vecs, &mut buf, mem, || {
                    if core::mem::take(&mut first) {
                        crate::crash::point("send-copying");
                    }
                })
                .ok()?;
                crate::crash::point("send-copied");
                let how = Commit::Direct { bytes: &buf, pool: &pool, origin, mem };
                let Prep::Done(_, stamp) = prepare(dom, &how, &target, creds, uid) else {
                    return None;
                };
                queue::sync(origin, stamp);
                write_errors(cmd, mem, &[0]);
                Some(Ok(()))
            })
            .ok()
            .flatten()
    }

    fn prepare_until_done(dom: &Domain, how: &Commit, t: &Target, creds: &creds::Creds, uid: u32) -> Prep {
        let mut reaped = false;
        loop {
            match prepare(dom, how, t, creds, uid) {
                Prep::Room(need) => {
                    if let Err(e) = capacity::provide(dom, t.receiver, t.serial, need) {
                        return Prep::Fail(e);
                    }
                }
                // A dead sender's prepared records may hold what is
                // missing: recover dead slots once, then look again.
                Prep::Fail(Errno::EDQUOT | Errno::EXFULL) if !reaped && slot::reap_dead(dom) > 0 => reaped = true,
                r => return r,
            }
        }
    }

    /// Steps 9.4 to 9.7 for one destination, in one section of the
    /// receiver: the record is charged and its slice allocated, then
    /// either committed *prepared* (listed in the slot, in no queue) or,
    /// for a direct unicast, filled and queued.
    fn prepare(dom: &Domain, how: &Commit, t: &Target, creds: &creds::Creds, uid: u32) -> Prep {
        let Target { receiver, serial, oh, gen, index, n_bytes } = *t;
        let s = match Section::lock(dom, receiver) {
            Ok(s) => s,
            Err(e) => return Prep::Fail(e),
        };
        let p = s.rec(receiver);
        // 9.4: still connected, and still holding the node.
        if p.magic.get() != PEER_MAGIC || p.serial.get() != serial || p.state.get() != PEER_CONNECTED {
            return Prep::Fail(Errno::ESHUTDOWN);
        }
        let ohr = s.rec(oh);
        if ohr.gen.get() != gen || ohr.holder.get() != receiver || s.rec(ohr.node.get()).released.get() != 0 {
            return Prep::Fail(Errno::ESHUTDOWN);
        }
        let mut need = Need::default();
        if crate::arena::peek(&s, receiver).is_none() {
            need.records = 1;
        }
        if !quota::share_ready(&s, receiver, uid) {
            need.share = true;
        }
        if let Commit::Slot(slot) = how {
            if slot.capacity() <= slot.len() {
                need.slot = Some((slot.idx, slot.len() + 1));
            }
        }
        if need != Need::default() {
            return Prep::Room(need);
        }
        // 9.5 - 9.7 and the in-flight limits (after the pool's own
        // checks, so that an oversized message still reports EMSGSIZE).
        if let Err(e) = quota::check_fair(&s, receiver, RES_SLICES, 1, uid) {
            return Prep::Fail(e);
        }
        let size = match pool::rounded(&s, receiver, pool::slice_size(n_bytes, 0, 0)) {
            Ok(size) => size,
            Err(e) => return Prep::Fail(e),
        };
        let left = match pool::find_gap(&s, receiver, size) {
            Ok(l) => l,
            Err(e) => return Prep::Fail(e),
        };
        let off = pool::gap_start(&s, left);
        if !pool::dir_ready(&s, receiver, off) {
            return Prep::Room(Need { leaf_for: Some(off), ..Need::default() });
        }
        if let Err(e) = quota::check_fair(&s, receiver, RES_BYTES, size as i64, uid) {
            return Prep::Fail(e);
        }
        if let Commit::Direct { bytes, pool, mem, .. } = how {
            // A pool that grew beyond this process's mapping of it: the
            // slot path maps it again, with no lock held.
            if !pool.covers(off, bytes.len() as u64) {
                return Prep::Fail(Errno::ENOMEM);
            }
            // Into free pool space, which nobody reads: a failure here
            // leaves nothing to undo.
            if let Err(e) = pool.copy_shared(off, bytes, *mem) {
                return Prep::Fail(e);
            }
        }
        // The reservations first (authoritative), then the record.
        quota::reserve(&s, receiver, RES_SLICES, p.used[RES_SLICES].get() + 1);
        quota::reserve(&s, receiver, RES_BYTES, p.used[RES_BYTES].get() + size as i64);
        let r = crate::arena::peek(&s, receiver).expect("checked");
        message::clear(&s, r, ENTRY_DATA);
        let rr = s.rec(r);
        s.init(&rr.subject, oh.off());
        s.init(&rr.off, off);
        s.init(&rr.size, size);
        s.init(&rr.n_bytes, n_bytes);
        s.init(&rr.charged[RES_SLICES], 1);
        s.init(&rr.charged[RES_BYTES], size as i64);
        s.init(&rr.sender_uid, uid);
        s.init(&rr.index, index as u32);
        stamp_creds(&s, r, receiver, creds);
        let stamp = match how {
            Commit::Slot(slot) => {
                s.init(&rr.tx, slot.tag());
                slot.push(r);
                message::set_state(&s, receiver, r, MS_LIVE | MS_SLICE | MS_INFLIGHT | MS_PREPARED);
                crate::crash::point("send-prepared");
                0
            }
            Commit::Direct { origin, .. } => {
                crate::crash::point("send-prepared");
                crate::crash::point("commit-before");
                let c = queue::tick(&p.clock, origin.load());
                s.init(&rr.stamp, c);
                s.init(&rr.tag, DIRECT_TAG);
                message::set_state(&s, receiver, r, MS_LIVE | MS_SLICE | MS_INFLIGHT | MS_QUEUED);
                c
            }
        };
        crate::arena::taken(&s, receiver, r);
        pool::link_slice(&s, receiver, left, r);
        if stamp != 0 {
            doorbell::after_enqueue(&s, receiver);
            crate::crash::point("commit-after");
        }
        Prep::Done(r, stamp)
    }

    /// Step 11 through the slot: a unicast in one section of its
    /// receiver, a multicast in the four steps of `slot`.
    fn commit(dom: &Domain, caller: P<PeerRec>, slot: Slot) -> Result<()> {
        let recs = slot.records();
        let origin = &dom.seg.rec(caller).clock;
        match recs.len() {
            0 => {
                // A transaction with no entries still ticks the clock.
                queue::tick(origin, 0);
                slot.set_phase(TX_DONE);
                Ok(())
            }
            1 => {
                let r = recs[0];
                let c = unicast(dom, origin, slot.tag(), r);
                slot.set_phase(TX_DONE);
                queue::sync(origin, c?);
                Ok(())
            }
            _ => {
                slot.sort(|r| (dom.seg.rec(r).peer.get().off(), dom.seg.rec(r).index.get()));
                slot.set_phase(TX_STAGING);
                slot::drive(dom, slot.tag());
                Ok(())
            }
        }
    }

    /// Commits one prepared record in one section of its receiver: the
    /// receiver's clock synced to the sender's and ticked, the record
    /// committed at that stamp. Returns the stamp (0 if the receiver went
    /// away and the message with it).
    fn unicast(dom: &Domain, origin: &crate::shm::Atomic64, tag: u64, r: P<Msg>) -> Result<u64> {
        let peer = dom.seg.rec(r).peer.get();
        let s = Section::lock(dom, peer)?;
        let p = s.rec(peer);
        if p.magic.get() != PEER_MAGIC || p.state.get() != PEER_CONNECTED {
            message::set_state(&s, peer, r, 0);
            return Ok(0);
        }
        crate::crash::point("commit-before");
        let c = queue::tick(&p.clock, origin.load());
        let rr = s.rec(r);
        s.set(&rr.stamp, c);
        s.set(&rr.tag, tag);
        message::set_state(&s, peer, r, (rr.state.get() & !MS_PREPARED) | MS_QUEUED);
        doorbell::after_enqueue(&s, peer);
        crate::crash::point("commit-after");
        Ok(c)
    }
}

// ---------------------------------------------------------- transaction

/// The message template of a transaction SEND (2.8 step 7).
struct Template<'a> {
    n_bytes: u64,
    handles: Small<P<Handle>, 8>,
    fds: &'a [i32],
    creds: creds::Creds,
    sender_uid: u32,
    payload: Option<&'a Payload>,
    mem: &'a dyn UserMem,
}

fn template<'a>(tx: &Txn, caller: P<PeerRec>, args: &'a Args, payload: Option<&'a Payload>, mem: &'a dyn UserMem, provisional: &mut i64) -> Result<Template<'a>> {
    // 7.1 vecs
    let (_, total) = args.vecs.as_ref().map_err(|e| *e)?;
    // 7.2 handles
    let mut handles = Small::with_capacity(args.handles.ids.len());
    let n = args.handles.fault.map_or(args.handles.ids.len(), |f| f + 1);
    for i in 0..n {
        let id = args.handles.get(i)?;
        let (h, created) = object::import(tx, caller, id)?;
        *provisional += created as i64;
        handles.push(h);
    }
    // 7.3 fds
    if let Some((_, e)) = args.fd_error {
        return Err(e);
    }
    let c = creds::current();
    Ok(Template { n_bytes: *total, handles, fds: &args.fds, creds: c, sender_uid: tx.rec(caller).uid.get(), payload, mem })
}

/// Builds the message of one destination under the domain lock (2.8 step
/// 9.4 onwards): committed as a live record holding its slice and charges,
/// not yet queued. `dest` is the receiver's handle of the destination node
/// (null for a seed).
fn build(tx: &Txn, receiver: P<PeerRec>, dest: P<Handle>, t: &Template) -> Result<P<Msg>> {
    tx.hold(receiver);
    let n_handles = t.handles.len() as u64;
    let n_fds = t.fds.len() as u64;
    let uid = t.sender_uid;
    if !quota::share_ready(tx, receiver, uid) {
        capacity::share_block(tx, receiver)?;
    }
    quota::check_fair(tx, receiver, RES_SLICES, 1, uid)?;
    quota::check_fair(tx, receiver, RES_HANDLES, n_handles as i64, uid)?;
    let size = pool::rounded(tx, receiver, pool::slice_size(t.n_bytes, n_handles, n_fds))?;
    let left = pool::find_gap(tx, receiver, size)?;
    let off = pool::gap_start(tx, left);
    quota::check_fair(tx, receiver, RES_BYTES, size as i64, uid)?;
    quota::check_fair(tx, receiver, RES_FDS, n_fds as i64, uid)?;
    capacity::dir_leaf(tx, receiver, off)?;
    // The payload, from the copy read before the lock was taken.
    let rp = tx.rec(receiver);
    let pool = tx.domain().pool_for(rp.serial.get(), off + size)?;
    let payload = t.payload.expect("a chargeable payload was read");
    if payload.fault {
        return Err(Errno::EFAULT);
    }
    pool.copy_shared(off, &payload.bytes, t.mem)?;
    // RECV writes handle IDs and fd numbers behind the payload with plain
    // stores: make sure those pages exist now, while a full file system
    // is still an ENOMEM of this SEND rather than a fault later.
    let pos = off + payload.bytes.len() as u64;
    if n_handles + n_fds > 0 {
        pool.zero(pos, (off + size - pos) as usize, t.mem)?;
    }
    crate::crash::point("send-copied");
    let e = object::new_record(tx, receiver, ENTRY_DATA)?;
    let r = tx.rec(e);
    Store::init(tx, &r.subject, dest.off());
    stamp_creds(tx, e, receiver, &t.creds);
    Store::init(tx, &r.off, off);
    Store::init(tx, &r.size, size);
    Store::init(tx, &r.n_bytes, t.n_bytes);
    Store::init(tx, &r.n_fds, n_fds as u32);
    Store::init(tx, &r.charged[RES_SLICES], 1);
    Store::init(tx, &r.charged[RES_HANDLES], n_handles as i64);
    Store::init(tx, &r.charged[RES_BYTES], size as i64);
    Store::init(tx, &r.charged[RES_FDS], n_fds as i64);
    Store::init(tx, &r.sender_uid, uid);
    if n_handles > 0 {
        let block = crate::alloc::alloc(tx, n_handles * 8)?;
        Store::init(tx, &r.handles, block);
        Store::init(tx, &r.n_handles, n_handles);
    }
    message::set_state(tx, receiver, e, MS_LIVE | MS_SLICE | MS_INFLIGHT);
    pool::link_slice(tx, receiver, left, e);
    let slots = message::handle_slots(tx, e);
    for (j, &h) in t.handles.iter().enumerate() {
        let rh = object::handle_for(tx, receiver, object::node_of(tx, h))?;
        tx.init(&slots[j], rh.off());
        object::inflight_add(tx, rh);
    }
    if n_fds > 0 {
        let nonce = assign_nonce(tx, e)?;
        doorbell::prepare_carrier(tx, receiver, nonce, t.fds);
    }
    Ok(e)
}

/// A fresh nonce for an fd carrier, registered to `e`.
///
/// Nonces must stay unique even when a transaction is rolled back (its
/// carrier may already sit in the vault as an orphan), so they do not come
/// from the segment: they are random 64-bit values.
fn assign_nonce(tx: &Txn, e: P<Msg>) -> Result<u64> {
    let n = loop {
        let n = random_u64();
        if n != 0 && table::get(tx, TAG_NONCE, 0, n).is_none() {
            break n;
        }
    };
    tx.set(&tx.rec(e).nonce, n);
    table::insert(tx, TAG_NONCE, 0, n, e.off())?;
    Ok(n)
}

fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        s = crate::sys::getrandom_u64() | 1;
    }
    // Mixing in the pid keeps a forked child's sequence apart from its
    // parent's, which shares the same state.
    s = s.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ ((crate::creds::current().pid as u64) << 17);
    STATE.store(s, Ordering::Relaxed);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

/// SEND as a transaction from step 6 on (the caller is locked and
/// connected); `fd` is the caller's own peer fd.
#[allow(clippy::too_many_arguments)]
fn txn_send(tx: &Txn, caller: P<PeerRec>, fd: i32, cmd: &bus1_cmd_send, args: &Args, payload: Option<&Payload>, mem: &dyn UserMem, errors: &mut [u64]) -> Result<()> {
    let user = tx.rec(tx.rec(caller).user.get());
    if cmd.n_destinations > user.max[RES_HANDLES].get() as u64 {
        return Err(Errno::EINVAL);
    }
    tx.require_live_receivers();
    let mut provisional = 0i64;
    let t = template(tx, caller, args, payload, mem, &mut provisional)?;
    let cont = cmd.flags & BUS1_SEND_FLAG_CONTINUE != 0;
    if cmd.flags & BUS1_SEND_FLAG_SEED != 0 {
        if cont || cmd.n_destinations != 0 {
            return Err(Errno::EINVAL);
        }
        return set_seed(tx, caller, fd, &t, provisional);
    }
    let mut used = Used::new(cmd.n_destinations);
    let mut entries: Small<P<Msg>, 8> = Small::with_capacity(cmd.n_destinations.min(1 << 16) as usize);
    for i in 0..cmd.n_destinations as usize {
        let id = args.dests.get(i)?;
        let (h, created) = object::import(tx, caller, id)?;
        provisional += created as i64;
        if !used.first(h.off()) {
            return Err(Errno::ENOTUNIQ);
        }
        let sp = tx.savepoint();
        let r = receiver_of(tx, caller, h).and_then(|rcv| {
            let dest = tx.rec(object::node_of(tx, h)).owner_handle.get();
            build(tx, rcv, dest, &t)
        });
        match r {
            Ok(e) => entries.push(e),
            Err(e) if cont && matches!(e, Errno::ESHUTDOWN | Errno::EDQUOT | Errno::EXFULL) => {
                tx.rollback_to(sp);
                if let Some(slot) = errors.get_mut(i) {
                    *slot = e.0 as u64;
                }
            }
            Err(e) => return Err(e),
        }
    }
    quota::charge(tx, caller, RES_HANDLES, provisional)?;
    if !args.errors_writable {
        return Err(Errno::EFAULT);
    }
    // Commit: one stamp past every receiver's clock and the caller's,
    // destination order kept within each queue.
    let receivers: Vec<P<PeerRec>> = entries.iter().map(|&e| tx.rec(e).peer.get()).collect();
    let stamp = object::commit_stamp(tx, caller, &receivers);
    let tag = object::next_tag(tx);
    for (i, &e) in entries.iter().enumerate() {
        let r = tx.rec(e);
        tx.set(&r.stamp, stamp);
        tx.set(&r.tag, tag);
        tx.set(&r.index, i as u32);
        let peer = r.peer.get();
        message::set_state(tx, peer, e, r.state.get() | MS_QUEUED);
        doorbell::after_enqueue(tx, peer);
        if i == 0 {
            crate::crash::point("send-append");
        }
    }
    Ok(())
}

/// SEND with SEED: replace the caller's seed.
fn set_seed(tx: &Txn, caller: P<PeerRec>, fd: i32, t: &Template, provisional: i64) -> Result<()> {
    let e = build(tx, caller, P::NULL, t)?;
    quota::charge(tx, caller, RES_HANDLES, provisional)?;
    // Its payload handles are judged like a message's, by this stamp.
    tx.set(&tx.rec(e).stamp, object::commit_stamp(tx, caller, &[]));
    let r = tx.rec(e);
    message::set_state(tx, caller, e, r.state.get() | MS_SEED);
    let p = tx.rec(caller);
    let old = p.seed.get();
    tx.set(&p.seed, e);
    if !old.is_null() {
        crate::entry::release(tx, caller, fd, old, MS_SEED | MS_INFLIGHT);
    }
    Ok(())
}
