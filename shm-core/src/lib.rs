//! bus1 semantics over shared memory.
//!
//! This crate is the whole bus: domains (one shared segment per directory),
//! peers, nodes, handles, queues, pools, transactions, quotas and crash
//! recovery, behaving as `docs/reference.md` specifies. It is an ordinary
//! library with a safe API, usable in-process (tests) and across
//! processes; the preload shim only translates libc calls into calls of
//! [`Peer`]. Section numbers in comments, such as (2.8) or (2.9 step 6.3),
//! are those of `docs/reference.md`; `docs/design.md` describes the design.
//!
//! Where to look:
//! * `txn` — the domain lock, the undo log, and **the locking and
//!   crash-recovery rules** every other module follows;
//! * `layout` — the shared records; `shm` — typed access to them;
//! * `object` (nodes, handles), `queue`, `message`, `send`, `recv`, `pool`,
//!   `quota`, `peer` — the semantics, one concept each; `abi` — which of
//!   bus1's two ABIs (RFC v1, final) a peer speaks and what depends on it;
//! * `readiness` — what `poll` reports for a peer, read without the lock;
//!   `waiters` — threads sleeping on peers and how a ring reaches them;
//!   `epollreg` — peer fds in epoll sets (edge and one-shot state);
//! * `doorbell` — wake-ups after a commit (the interface the engine
//!   calls) and what the peer socket holds (the kernel-visible token, the
//!   vault datagram); `vault` — where in-flight fds are kept;
//! * `reaper` — teardown of peers whose last fd is gone, and the periodic
//!   ticks of the watcher thread;
//! * `trust` — which directories and files a domain may use (owners,
//!   modes, no symbolic links); `memory` — where a domain's files live
//!   (memory, whatever file system holds the domain directory) and when
//!   they go; `sockdir` — the directory named in socket addresses;
//! * `fault` — what happens when the engine finds a domain inconsistent
//!   (EIO, then ENOTRECOVERABLE; no panic leaves the library); `check` —
//!   the invariant checker ([`Domain::check_invariants`]); `damage` —
//!   test-only ways to damage a domain.
//! * `inspect` — a consistent copy of a domain's state for tools.

// `is_multiple_of` needs Rust 1.87; the crate builds with 1.79 (the
// workspace's rust-version), so remainders stay spelled out.
#![allow(clippy::manual_is_multiple_of)]

mod abi;
mod alloc;
mod arena;
mod capacity;
pub mod census;
mod check;
mod crash;
mod creds;
mod damage;
mod doorbell;
mod domain;
mod entry;
mod epollreg;
mod errno;
mod fault;
mod forks;
mod inspect;
mod layout;
mod memory;
mod message;
mod object;
mod ownmem;
mod peer;
mod pool;
mod queue;
mod quota;
mod readiness;
mod rebuild;
mod recv;
mod reaper;
mod release;
mod section;
mod send;
mod shm;
mod slot;
mod small;
mod sockdir;
mod store;
mod sync;
pub mod sys;
mod table;
mod trust;
mod txn;
mod usermem;
mod vault;
mod waiters;

pub use abi::{Abi, AbiMode};
pub use crash::{arm as arm_crash_point, arm_park as arm_park_point};
pub use damage::{test_hooks_enabled, DAMAGE_CYCLE, DAMAGE_KEY, DAMAGE_OFFSET};
pub use creds::invalidate_ids;
pub use domain::{adopt_internal_fd, configured_dir, default_dir, evict_internal_fd, is_internal_fd, release_internal_fd, Domain};
pub use sync::{set_long_wait_hook, LocalGuard, LocalMutex};
pub use errno::{Errno, Result};
pub use fault::{contain, contain_callback, say, trace_enabled};
pub use inspect::{HandleInfo, NodeInfo, PeerInfo, PoolInfo, QueueInfo, Quota, Quotas, Snapshot, UserInfo};
pub use layout::{POOL_SIZE, POOL_SIZE_FINAL};
pub use epollreg::{untag as epoll_untag, RegRef, EPOLLET, EPOLLONESHOT};
pub use ownmem::is_own_memory;
pub use readiness::Ready;
pub use reaper::{only_thread_left, watcher_running};
pub use trust::take_refusal;
pub use waiters::{ArmedSet, Listener, ListenerGuard, Sleep, WaitSet};
pub use usermem::{range_ok, read_struct, write_struct, AbiPlain, SimMem, SliceMem, UserMem, USER_LIMIT};

use layout::*;
use shm::P;
use std::path::Path;
use std::sync::Arc;
use uapi::*;

/// A peer as seen from this process: the domain it lives in and its
/// serial. Operations take the fd the caller used, because some of them
/// act on the peer's socket (which only holders of an fd can read).
#[derive(Clone)]
pub struct Peer {
    dom: Arc<Domain>,
    serial: u64,
    rec: P<PeerRec>,
    bell: u64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({:?}#{:x})", self.dom.dir(), self.serial)
    }
}

/// How an fd was opened, as far as the bus cares.
#[derive(Clone, Copy, Debug)]
pub struct OpenFlags {
    /// O_ACCMODE bits of the open.
    pub access: i32,
    pub cloexec: bool,
    pub nonblock: bool,
}

impl Peer {
    /// Opens a new peer in the domain at `dir` (8.1), its ABI chosen by
    /// its first calls (`AbiMode::Auto`). Returns the peer fd.
    pub fn open(dir: &Path, flags: OpenFlags) -> Result<(i32, Peer)> {
        Self::open_as(dir, flags, AbiMode::Auto)
    }

    /// Opens a new peer whose ABI is chosen as `mode` says.
    pub fn open_as(dir: &Path, flags: OpenFlags, mode: AbiMode) -> Result<(i32, Peer)> {
        contain(|| Self::open_contained(dir, flags, mode))
    }

    fn open_contained(dir: &Path, flags: OpenFlags, mode: AbiMode) -> Result<(i32, Peer)> {
        let dom = Domain::attach(dir)?;
        let mut sf = 0;
        if flags.cloexec {
            sf |= libc::SOCK_CLOEXEC;
        }
        if flags.nonblock {
            sf |= libc::SOCK_NONBLOCK;
        }
        let (fd, serial, rec) = peer::create(&dom, (flags.access & libc::O_ACCMODE) as u32, sf, mode)?;
        let bell = dom.seg.rec(rec).bell.get();
        Ok((fd, Peer { dom, serial, rec, bell }))
    }

    /// Recognises a peer fd (inherited, received over a socket, kept across
    /// exec) by its socket address. Ok(None): not a bus1 peer.
    pub fn identify(fd: i32) -> Result<Option<Peer>> {
        contain(|| Self::identify_contained(fd))
    }

    fn identify_contained(fd: i32) -> Result<Option<Peer>> {
        let st = sys::fstat(fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Ok(None);
        }
        if sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok() != Some(libc::AF_UNIX)
            || sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok() != Some(libc::SOCK_DGRAM)
        {
            return Ok(None);
        }
        let Some(path) = sys::getsockname_path(fd)? else { return Ok(None) };
        let Some(slash) = path.iter().rposition(|b| *b == b'/') else { return Ok(None) };
        let (dir, name) = (&path[..slash], &path[slash + 1..]);
        let Some(hex) = name.strip_prefix(b"peer.") else { return Ok(None) };
        let Ok(serial) = u64::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16) else { return Ok(None) };
        // Not a domain, or one this process may not use: not a peer.
        let Ok(dom) = Domain::attach_existing(&sockdir::domain_dir_of(dir)) else { return Ok(None) };
        let found = match dom.lock() {
            Ok(tx) => {
                let found = peer::lookup_serial(&tx, serial).map(|rec| (rec, tx.rec(rec).bell.get()));
                tx.abort();
                found
            }
            // A peer of a damaged domain: its record cannot be looked up,
            // and every call on it is refused.
            Err(Errno::ENOTRECOVERABLE) => Some((P::NULL, 0)),
            Err(e) => return Err(e),
        };
        Ok(found.map(|(rec, bell)| Peer { dom, serial, rec, bell }))
    }

    pub fn domain(&self) -> &Arc<Domain> {
        &self.dom
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether the peer is connected; a lock-free hint used to answer
    /// ESHUTDOWN before decoding a command (2.0). Every operation
    /// re-checks under the lock.
    pub fn connected_hint(&self) -> bool {
        // No record: a peer of a damaged domain, whose calls are refused
        // under the lock.
        let Some(p) = self.dom.seg.try_rec(self.rec) else { return true };
        p.state.load_racy() == PEER_CONNECTED && p.magic.load_racy() == PEER_MAGIC && p.serial.load_racy() == self.serial
    }

    /// What `poll` reports for the peer now (read without the lock). A
    /// peer of a damaged domain reports hang-up, so that its waiters wake
    /// and meet the errno.
    pub fn readiness(&self) -> Ready {
        let hup = Ready { hup: true, readable: false, seq: 0 };
        if self.rec.is_null() || self.dom.is_damaged() {
            return hup;
        }
        contain(|| {
            self.dom.settle_interrupted();
            Ok(readiness::peek(&self.dom, self.rec, self.serial, self.bell))
        })
        .unwrap_or(hup)
    }

    /// The peer's bell count now: it moves whenever the peer's readiness
    /// may have changed (txn rule 8). What a spinning waiter watches: one
    /// load of a line that only a change of the peer's queue or state
    /// writes, where [`Peer::readiness`] would also read what a sender
    /// is writing during its transaction.
    pub fn bell_seq(&self) -> u64 {
        contain(|| Ok(readiness::bell_seq(&self.dom, self.bell))).unwrap_or(0)
    }

    /// Adds the peer to the bells a wait watches.
    pub fn watch(&self, set: &mut WaitSet) {
        set.add(&self.dom, self.bell);
    }

    /// Whether some thread is armed on the peer's bell now.
    pub fn has_sleepers(&self) -> bool {
        contain(|| Ok(waiters::has_sleepers(&self.dom, self.bell))).unwrap_or(false)
    }

    /// Whether a thread may sleep on the peer socket itself for POLLIN (in
    /// the kernel's poll) instead of arming on its bell: the domain keeps
    /// kernel tokens exact, and the socket holds nothing while the queue
    /// is empty (no vault kept for a seed, no late token to take out).
    pub fn socket_wakes(&self) -> bool {
        if !doorbell::exact(&self.dom) {
            return false;
        }
        let Some(p) = self.dom.seg.try_rec(self.rec) else { return false };
        contain(|| {
            let bell = waiters::bell_rec(&self.dom, self.bell);
            Ok(p.bell_vault.load_racy() == 0 && p.bell_dirty.load_racy() == 0 && bell.tok_sent.load() == bell.tok_taken.load())
        })
        .unwrap_or(false)
    }

    /// A waiter for this peer that is not tied to a thread (see
    /// [`Listener`]): for event loops that wait on the peer from any
    /// thread. ENOSPC if every waiter slot of the domain is taken.
    pub fn listener(&self) -> Result<Listener> {
        Listener::new(&self.dom, self.bell)
    }

    /// Registers the peer (its fd added to an epoll set) with the
    /// application's `events` and `data`; the kernel item carries the
    /// returned registration's tag.
    pub fn epoll_register(&self, fd: i32, events: u32, data: u64) -> Result<RegRef> {
        let ino = sys::fstat(fd)?.st_ino;
        contain(|| {
            let tx = self.dom.lock()?;
            let r = if peer::is_live(&tx, self.rec, self.serial) {
                epollreg::register(&tx, self.rec, ino, events, data, &self.readiness())
            } else {
                Err(Errno::ESHUTDOWN)
            };
            tx.finish(r)
        })
    }

    /// Runs `f` as a transaction on the connected peer, settles the
    /// caller's socket and commits (or aborts on error). A damaged domain
    /// found meanwhile is EIO (see `fault`).
    fn op<T>(&self, fd: i32, f: impl FnOnce(&txn::Txn, P<PeerRec>) -> Result<T>) -> Result<T> {
        reaper::ensure_watcher();
        contain(|| {
            let tx = self.dom.lock()?;
            let r = peer::resolve_connected(&tx, self.rec, self.serial).and_then(|p| {
                object::collect(&tx, p);
                let v = f(&tx, p)?;
                peer::settle_own_socket(&tx, p, fd);
                Ok(v)
            });
            tx.finish(r)
        })
    }

    /// PEER_DISCONNECT (2.1): `arg` is the raw ioctl argument.
    pub fn disconnect(&self, fd: i32, arg: u64) -> Result<()> {
        if arg != 0 {
            return Err(Errno::EINVAL);
        }
        contain(|| {
            let tx = self.dom.lock()?;
            let r = if peer::is_live(&tx, self.rec, self.serial) {
                peer::disconnect(&tx, self.rec, fd)
            } else {
                Err(Errno::ESHUTDOWN)
            };
            tx.finish(r)
        })?;
        doorbell::hang_up(&self.dom, self.serial, fd);
        Ok(())
    }

    /// A RECV with `abi`'s number was decoded (before its argument is
    /// read): latches an undetermined peer to `abi`, even if the RECV then
    /// fails; ENOTTY if the peer is fixed to the other ABI. Lock-free once
    /// the peer's ABI is settled.
    pub fn latch_recv(&self, abi: Abi) -> Result<()> {
        self.latch(abi, abi::Latch::Recv).map(|_| ())
    }

    /// Latches the peer (see `abi`) in a transaction of its own, so that
    /// the latch stays whatever the call that caused it does next.
    /// Returns the ABI the peer speaks afterwards.
    fn latch(&self, abi: Abi, by: abi::Latch) -> Result<Option<Abi>> {
        contain(|| self.latch_contained(abi, by))
    }

    fn latch_contained(&self, abi: Abi, by: abi::Latch) -> Result<Option<Abi>> {
        let Some(p) = self.dom.seg.try_rec(self.rec) else { return Err(Errno::ENOTRECOVERABLE) };
        if let Some(r) = abi::latch_hint(p, abi, by) {
            // Read before the check that the record is still this peer,
            // connected: then it was this peer when the hint was read.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if self.connected_hint() {
                return r;
            }
        }
        let tx = self.dom.lock()?;
        let r = peer::resolve_connected(&tx, self.rec, self.serial).and_then(|p| abi::latch(&tx, p, abi, by));
        tx.finish(r)
    }

    /// The ABI the peer speaks; None while it is undetermined.
    pub fn abi(&self) -> Result<Option<Abi>> {
        contain(|| {
            let tx = self.dom.lock()?;
            let r = peer::resolve_connected(&tx, self.rec, self.serial).map(|p| abi::state(&tx, p));
            tx.abort();
            r
        })
    }

    /// PEER_QUERY (2.2) after the argument was read and checked.
    pub fn query(&self, flags: u64) -> Result<bus1_cmd_peer_reset> {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        self.op(-1, |tx, p| Ok(peer::query(tx, p)))
    }

    /// PEER_RESET (2.3). Peer flags 0 or 1 latch an undetermined peer to
    /// the v1 ABI first.
    pub fn reset(&self, fd: i32, r: &bus1_cmd_peer_reset) -> Result<()> {
        self.latch_by_peer_flags(r.peer_flags)?;
        let args = peer::reset_args(
            r.flags,
            r.peer_flags,
            [r.max_slices as u64, r.max_handles as u64, r.max_inflight_bytes as u64, r.max_inflight_fds as u64],
            u32::MAX as u64,
        )?;
        self.op(fd, |tx, p| peer::reset(tx, p, fd, &args))
    }

    /// PEER_RESET with the man page's 48-byte layout (1.6).
    pub fn reset_u64(&self, fd: i32, r: &bus1_cmd_peer_reset_u64) -> Result<()> {
        self.latch_by_peer_flags(r.peer_flags)?;
        let args = peer::reset_args(
            r.flags,
            r.peer_flags,
            [r.max_slices, r.max_handles, r.max_inflight_bytes, r.max_inflight_fds],
            u64::MAX,
        )?;
        self.op(fd, |tx, p| peer::reset(tx, p, fd, &args))
    }

    /// The latch of a PEER_RESET: only the v1 ABI has peer flags 0 and 1.
    fn latch_by_peer_flags(&self, peer_flags: u64) -> Result<()> {
        if peer_flags <= BUS1_PEER_FLAG_WANT_SECCTX {
            self.latch(Abi::V1, abi::Latch::Reset)?;
        }
        Ok(())
    }

    /// HANDLE_RELEASE (2.4).
    pub fn handle_release(&self, fd: i32, id: u64) -> Result<()> {
        self.op(fd, |tx, p| peer::handle_release(tx, p, id))
    }

    /// HANDLE_TRANSFER (2.5) after flags and `dst_fd` were checked; `dst`
    /// None means the caller itself.
    pub fn handle_transfer(&self, fd: i32, src_handle: u64, dst: Option<&Peer>) -> Result<u64> {
        self.handle_transfer_into(fd, src_handle, dst, &|_| true)
    }

    /// HANDLE_TRANSFER whose result goes to caller memory: `out` writes the
    /// destination's ID there (false: it cannot, EFAULT) before the
    /// transfer commits, so that a failed write changes nothing (2.5 step
    /// 9, as the shim should do it).
    pub fn handle_transfer_into(&self, fd: i32, src_handle: u64, dst: Option<&Peer>, out: &dyn Fn(u64) -> bool) -> Result<u64> {
        if let Some(d) = dst {
            if !Arc::ptr_eq(&d.dom, &self.dom) {
                return Err(Errno::EOPNOTSUPP);
            }
        }
        let (dst_rec, dst_serial) = dst.map(|d| (d.rec, d.serial)).unwrap_or((self.rec, self.serial));
        self.op(fd, |tx, p| {
            if !peer::is_live(tx, dst_rec, dst_serial) {
                return Err(Errno::ESHUTDOWN);
            }
            let id = peer::handle_transfer(tx, p, dst_rec, src_handle)?;
            if out(id) { Ok(id) } else { Err(Errno::EFAULT) }
        })
    }

    /// NODES_DESTROY (2.6) after the struct was read.
    pub fn nodes_destroy(&self, fd: i32, cmd: &bus1_cmd_nodes_destroy, mem: &dyn UserMem) -> Result<()> {
        if cmd.flags & !BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES != 0 {
            return Err(Errno::EINVAL);
        }
        self.op(fd, |tx, p| peer::nodes_destroy(tx, p, cmd, mem))
    }

    /// SLICE_RELEASE (2.7): the data path.
    pub fn slice_release(&self, fd: i32, offset: u64) -> Result<()> {
        reaper::ensure_watcher();
        contain(|| {
            slot::reap_if_death_seen(&self.dom);
            recv::slice_release(&self.dom, self.rec, self.serial, fd, offset)
        })
    }

    /// SEND (2.8) after the struct was read.
    pub fn send(&self, fd: i32, cmd: &bus1_cmd_send, mem: &dyn UserMem) -> Result<()> {
        reaper::ensure_watcher();
        for _ in 0..3 {
            let r = contain(|| {
                slot::reap_if_death_seen(&self.dom);
                send::send(&self.dom, self.rec, self.serial, fd, cmd, mem)
            });
            match r {
                // A receiver's last fd went away without a teardown (its
                // process exited): tear it down now and send again.
                Err(Errno::PEER_GONE) => {
                    reaper::scan(&self.dom);
                }
                r => return r,
            }
        }
        Err(Errno::ESHUTDOWN)
    }

    /// SEND of a program that links the engine directly: the command's
    /// arrays are Rust slices (see [`SendSlices`]) instead of addresses in
    /// the caller's memory; otherwise exactly [`Peer::send`].
    pub fn send_slices(&self, fd: i32, args: SendSlices<'_>) -> Result<()> {
        let n_destinations = args.destinations.len() as u64;
        let mut mem = SliceMem::new();
        let cmd = bus1_cmd_send {
            flags: args.flags,
            ptr_destinations: mem.array(args.destinations),
            ptr_errors: args.errors.map_or(0, |e| mem.writable_u64s(e)),
            n_destinations,
            ptr_vecs: mem.iovecs(args.payload),
            n_vecs: args.payload.len() as u64,
            ptr_handles: mem.array(args.handles),
            n_handles: args.handles.len() as u64,
            ptr_fds: mem.array(args.fds),
            n_fds: args.fds.len() as u64,
        };
        self.send(fd, &cmd, &mem)
    }

    /// NODES_DESTROY of a program that links the engine directly: the
    /// node IDs as a Rust slice.
    pub fn nodes_destroy_slice(&self, fd: i32, flags: u64, nodes: &[u64]) -> Result<()> {
        let mut mem = SliceMem::new();
        let cmd = bus1_cmd_nodes_destroy { flags, ptr_nodes: mem.array(nodes), n_nodes: nodes.len() as u64 };
        self.nodes_destroy(fd, &cmd, &mem)
    }

    /// The v1 RECV (2.9) after the struct was read; returns the `msg`
    /// part. `flags` are the v1 RECV flags.
    pub fn recv(&self, fd: i32, flags: u64, max_offset: u64) -> Result<bus1_msg> {
        self.recv_into(fd, flags, max_offset, &|_| true)
    }

    /// The v1 RECV whose result goes to caller memory: `out` writes the
    /// `msg` part there (false: it cannot, EFAULT) after every other check,
    /// under the lock and before anything is dequeued or installed, so
    /// that a failed write changes nothing (2.9 step 9, as the shim should
    /// do it).
    pub fn recv_into(&self, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&bus1_msg) -> bool) -> Result<bus1_msg> {
        self.latch_recv(Abi::V1)?;
        recv::precheck(flags)?;
        self.recv_as(Abi::V1, fd, flags, max_offset, out)
    }

    /// The final ABI's RECV: `flags` are its flags (SEED 0x1, INSTALL_FDS
    /// 0x2); the message is reported in its layout.
    pub fn recv_final(&self, fd: i32, flags: u64, max_offset: u64) -> Result<final_abi::bus1_msg> {
        self.recv_final_into(fd, flags, max_offset, &|_| true)
    }

    /// The final RECV whose result goes to caller memory through `out` (see
    /// [`Peer::recv_into`]).
    pub fn recv_final_into(&self, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&final_abi::bus1_msg) -> bool) -> Result<final_abi::bus1_msg> {
        self.latch_recv(Abi::Final)?;
        let flags = abi::final_recv_flags(flags)?;
        self.recv_as(Abi::Final, fd, flags, max_offset, &|m| out(&abi::final_msg(m))).map(|m| abi::final_msg(&m))
    }

    /// RECV with v1 flag bits, for a call with `abi`'s number: the data
    /// path if the peer's ABI is settled (checked again under the peer's
    /// lock, where it is authoritative: the lock-free latch may have read
    /// one that was then rolled back), else a transaction that latches it.
    fn recv_as(&self, abi: Abi, fd: i32, flags: u64, max_offset: u64, out: &dyn Fn(&bus1_msg) -> bool) -> Result<bus1_msg> {
        reaper::ensure_watcher();
        let r = match contain(|| {
            slot::reap_if_death_seen(&self.dom);
            recv::recv_section(&self.dom, self.rec, self.serial, fd, flags, max_offset, out)
        }) {
            Err(Errno::NEEDS_TXN) => self.op(fd, |tx, p| {
                abi::latch(tx, p, abi, abi::Latch::Recv)?;
                recv::recv(tx, p, fd, flags, max_offset, out)
            })?,
            r => r?,
        };
        match r {
            recv::Outcome::Msg(m) => Ok(m),
            recv::Outcome::Fail(e) => Err(e),
        }
    }

    /// Test-only (`BUS1_TEST_HOOKS=1`, else ENOTTY): damages the domain
    /// in the way `kind` (a `DAMAGE_*` constant) names, so that tests can
    /// see a damaged domain fail safe.
    pub fn test_damage(&self, kind: u64) -> Result<()> {
        self.op(-1, |tx, p| damage::inflict(tx, p, kind))
    }

    /// mmap of the pool (5.4): a descriptor of the pool file opened
    /// read-only, to be mapped shared by the caller and then closed.
    /// `prot`/`flags` are the mmap arguments.
    pub fn pool_fd_for_mmap(&self, access: i32, prot: i32, flags: i32) -> Result<i32> {
        let acc = access & libc::O_ACCMODE;
        if acc == libc::O_WRONLY {
            return Err(Errno::EACCES);
        }
        if flags & libc::MAP_SHARED != 0 && prot & libc::PROT_WRITE != 0 && acc == libc::O_RDONLY {
            return Err(Errno::EACCES);
        }
        if self.dom.damage().is_some() {
            return Err(Errno::ENOTRECOVERABLE);
        }
        if !self.connected_hint() {
            return Err(Errno::ESHUTDOWN);
        }
        if prot & libc::PROT_WRITE != 0 {
            return Err(Errno::EPERM);
        }
        match self.dom.open_file(&Domain::pool_name(self.serial), libc::O_RDONLY) {
            Err(Errno::EPERM) => Err(Errno::EPERM),
            r => r.map_err(|_| Errno::ESHUTDOWN),
        }
    }

    /// The access mode the peer was opened with.
    pub fn access(&self) -> Result<i32> {
        contain(|| {
            let tx = self.dom.lock()?;
            let a = peer::lookup_serial(&tx, self.serial).map(|p| tx.rec(p).access.get() as i32);
            tx.abort();
            a.ok_or(Errno::ESHUTDOWN)
        })
    }

    /// Called after this process closed an fd of the peer: if that was the
    /// last one anywhere, the peer is torn down now (8.5).
    pub fn closed(&self) {
        contain_callback(|| {
            if !self.dom.peer_socket_alive(self.serial) {
                reaper::reap(&self.dom, self.serial);
            }
        });
    }
}

impl Domain {
    /// Makes every peer socket of the domain keep its kernel-visible token
    /// exact from now on (what `BUS1_WAKE=exact` does at attach).
    pub fn keep_tokens_exact(&self) {
        self.seg.at0::<Header>().wake_exact.store(1);
    }

    /// The registration an epoll item's data names in this domain (made
    /// for the peer socket of inode `sock_ino`, if given).
    pub fn epoll_lookup(&self, data: u64, sock_ino: Option<u64>) -> Option<RegRef> {
        epollreg::lookup(self, data, sock_ino)
    }

    /// The domain at `dir` (a configured domain directory) if that
    /// directory exists.
    pub fn attach_configured(dir: &Path) -> Option<Arc<Domain>> {
        if dir.is_dir() {
            Domain::attach(dir).ok()
        } else {
            None
        }
    }

    /// The readiness of a registration's peer now (hang-up once the
    /// domain is found damaged, see [`Peer::readiness`]).
    pub fn epoll_ready(&self, g: &RegRef) -> Ready {
        if self.is_damaged() {
            return Ready { hup: true, readable: false, seq: 0 };
        }
        contain(|| {
            self.settle_interrupted();
            Ok(readiness::peek(self, P::from_off(g.peer), g.serial, g.bell))
        })
        .unwrap_or(Ready { hup: true, readable: false, seq: 0 })
    }

    /// What an `epoll_wait` reports for `g` now (consuming an edge or a
    /// one-shot arming, as the kernel's item would).
    pub fn epoll_take(&self, g: &RegRef) -> Option<(u32, u64)> {
        contain(|| Ok(epollreg::take_event(self, g, &self.epoll_ready(g)))).unwrap_or(None)
    }

    /// Whether registration `g` still exists.
    pub fn epoll_exists(&self, g: &RegRef) -> bool {
        contain(|| Ok(epollreg::exists(self, g))).unwrap_or(false)
    }

    /// Whether `g` would report something now.
    pub fn epoll_pending(&self, g: &RegRef) -> bool {
        contain(|| Ok(epollreg::would_report(self, g, &self.epoll_ready(g)))).unwrap_or(false)
    }

    /// EPOLL_CTL_MOD of `g`.
    pub fn epoll_modify(&self, g: &RegRef, events: u32, data: u64) {
        contain_callback(|| epollreg::modify(self, g, events, data, &self.epoll_ready(g)))
    }

    /// EPOLL_CTL_DEL of `g` (or its kernel item is gone).
    pub fn epoll_unregister(&self, g: &RegRef) {
        contain_callback(|| {
            if let Ok(tx) = self.lock() {
                epollreg::unregister(&tx, g);
                let _ = tx.commit();
            }
        })
    }

    /// Adds `g`'s peer to the bells a wait watches.
    pub fn epoll_watch(self: &Arc<Self>, g: &RegRef, set: &mut WaitSet) {
        set.add(self, g.bell);
    }
}

/// The arguments of [`Peer::send_slices`]: a SEND's arrays as Rust
/// slices. `errors`, if given, receives one slot per destination with
/// CONTINUE (a positive errno, or 0 for a delivered destination) and must
/// be as long as `destinations`.
#[derive(Default)]
pub struct SendSlices<'a> {
    /// `BUS1_SEND_FLAG_*`.
    pub flags: u64,
    pub destinations: &'a [u64],
    pub errors: Option<&'a mut [u64]>,
    pub payload: &'a [std::io::IoSlice<'a>],
    pub handles: &'a [u64],
    pub fds: &'a [i32],
}

/// Statistics of a domain, for leak checks and tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub peers: u64,
    pub live_bytes: u64,
    pub live_blocks: u64,
    pub table_entries: u64,
    pub recoveries: u64,
}

impl Domain {
    /// Current statistics, after finishing what dead senders and the data
    /// path left for later (so that they count only what is live).
    pub fn stats(&self) -> Result<Stats> {
        contain(|| {
            slot::reap_dead(self);
            reaper::tidy(self);
            let tx = self.lock()?;
            let h = tx.hdr();
            let s = Stats {
                peers: h.n_peers.get(),
                live_bytes: h.live_bytes.get() - h.pooled_bytes.get(),
                live_blocks: h.live_blocks.get() - h.pooled_blocks.get(),
                table_entries: h.table_used.get(),
                recoveries: h.recoveries.load(),
            };
            tx.abort();
            Ok(s)
        })
    }

    /// Checks the segment heap's free lists; describes the first damage.
    pub fn check_heap(&self) -> core::result::Result<(), String> {
        contain(|| {
            let tx = self.lock()?;
            let r = alloc::check_free_lists(&tx);
            tx.abort();
            Ok(r)
        })
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Waiter slots in use (one per thread that has slept on a peer of
    /// the domain and not exited).
    pub fn waiter_slots_in_use(&self) -> u32 {
        waiters::slots_in_use(self)
    }

    /// Frees now the waiter slots of dead processes (what the wake-up tick
    /// does every few ticks); returns how many.
    pub fn collect_dead_waiters(&self) -> usize {
        contain(|| Ok(waiters::collect_dead(self))).unwrap_or(0)
    }

    /// Runs one wake-up tick now (what the watcher does every 40 ms).
    pub fn wake_tick(&self) {
        contain_callback(|| doorbell::tick(self));
    }

    /// Probes every peer now and tears down the dead ones.
    pub fn reap_dead_peers(&self) -> usize {
        contain(|| Ok(reaper::scan(self))).unwrap_or(0)
    }

    /// Gives back now every pool page that holds no live slice (what the
    /// watcher's periodic scan does for pools no message came to since
    /// its previous round); returns the bytes punched.
    pub fn sweep_pools(&self) -> u64 {
        contain(|| Ok(reaper::sweep_pools(self, reaper::Sweep::All))).unwrap_or(0)
    }

    /// The periodic scan's sweep: like [`Domain::sweep_pools`], but only
    /// for pools no message came to since the previous call.
    pub fn sweep_idle_pools(&self) -> u64 {
        contain(|| Ok(reaper::sweep_pools(self, reaper::Sweep::Idle))).unwrap_or(0)
    }

    /// Removes now the per-peer files that no peer needs any more (what the
    /// watcher does every few scans); returns how many.
    pub fn sweep_files(&self) -> usize {
        contain(|| Ok(reaper::sweep_files(self))).unwrap_or(0)
    }
}
