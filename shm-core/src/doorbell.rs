//! Readiness and file-descriptor transport through the peer socket.
//!
//! A peer's fd is an `AF_UNIX` datagram socket bound at `peer.<serial>` in
//! the domain directory. The kernel reports it readable exactly while its
//! receive queue holds a datagram, so the bus keeps one there exactly while
//! the peer's queue is non-empty:
//!
//! * a **plain token** (an empty datagram), sent by whoever makes the queue
//!   non-empty, drained by the peer itself when its queue becomes empty;
//! * or a **vault datagram**, which also keeps the peer's *vault* alive
//!   while messages carrying file descriptors are queued.
//!
//! The vault holds in-flight file descriptors as the kernel's own
//! `SCM_RIGHTS` references: a listening `SOCK_SEQPACKET` socket bound at
//! `vault.<serial>.<gen>`, to which each sender connects and sends one
//! *carrier* (the message's nonce and its fds), plus a datagram socket pair
//! (the *inbox*) where carriers that must stay queued after being looked at
//! (PEEK) are parked. The three vault sockets exist only in flight inside
//! the vault datagram, so they die, releasing every fd, when the peer's
//! queue empties or the peer goes away. Carriers are matched by nonce;
//! carriers whose nonce no longer names a message (rolled back, discarded)
//! are orphans and are dropped when met.
//!
//! The segment keeps a mirror of what the socket holds (`bell_*` fields of
//! the peer), so the common case costs one `sendto` when a queue becomes
//! non-empty and one `recv` when it becomes empty, and nothing otherwise.
//! Mirror updates are transactional; the socket operations run at commit
//! (see the rules in `txn`). A peer whose socket contents are uncertain is
//! *dirty* and rebuilds them on its next operation.

use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::P;
use crate::sys::{self, FdMode, UnixAddr};
use crate::table;
use crate::txn::{Intent, Txn};

const VAULT_MAGIC: &[u8; 4] = b"B1V\0";
const CARRIER_MAGIC: &[u8; 4] = b"B1C\0";
/// SCM_MAX_FD: the kernel's limit of descriptors per datagram.
const FDS_PER_PART: usize = 253;
const VAULT_BACKLOG: i32 = 4096;

/// A deferred socket side effect of a transaction.
pub enum Op {
    /// Send a plain token to a peer.
    Ring { peer: P<PeerRec>, serial: u64 },
    /// Create vault generation `gen` of a peer and put its datagram into
    /// the peer socket.
    NewVault { peer: P<PeerRec>, serial: u64, gen: u64 },
    /// Deliver a message's fds into a peer's vault.
    Carrier { serial: u64, gen: u64, nonce: u64, fds: Vec<i32> },
    /// Remove `count` datagrams from the caller's own peer socket.
    Drain { peer: P<PeerRec>, fd: i32, count: u32 },
    /// Remove a carrier that is no longer needed (after commit).
    DropCarrier { peer: P<PeerRec>, fd: i32, nonce: u64 },
    /// Punch out free pool pages (after commit, see `pool::trim_tail`).
    TrimPool { peer: P<PeerRec>, serial: u64, off: u64, len: u64 },
    /// Punch out the pages of a pool's free regions (after commit, see
    /// `pool::execute_sweep`).
    SweepPool { peer: P<PeerRec>, serial: u64 },
    /// Remove a file of the domain (after commit).
    Unlink { name: Vec<u8> },
    /// The transaction cannot commit.
    Fail(Errno),
}


/// Runs one side effect.
pub fn execute(tx: &Txn, op: Op) -> Result<()> {
    let dom = tx.domain();
    match op {
        Op::Fail(e) => Err(e),
        Op::Ring { peer, serial } => {
            tx.intent(peer, Intent::Added)?;
            if !ring(dom, serial) && tx.requires_live_receivers() {
                return Err(Errno::PEER_GONE);
            }
            Ok(())
        }
        Op::NewVault { peer, serial, gen } => {
            tx.intent(peer, Intent::Added)?;
            new_vault(dom, serial, gen, tx.requires_live_receivers())
        }
        Op::Carrier { serial, gen, nonce, fds } => send_carrier(dom, serial, gen, nonce, &fds),
        Op::Drain { peer, fd, count } => {
            tx.intent(peer, Intent::Removed)?;
            for _ in 0..count {
                if sys::discard_datagram(fd).is_err() {
                    break;
                }
            }
            Ok(())
        }
        Op::DropCarrier { peer, fd, nonce } => {
            if let Ok(Some(v)) = vault_open(tx, peer, fd) {
                let _ = find_carrier(tx, &v, nonce, Want::Discard);
            }
            Ok(())
        }
        Op::TrimPool { peer, serial, off, len } => {
            crate::pool::execute_trim(tx, peer, serial, off, len);
            Ok(())
        }
        Op::SweepPool { peer, serial } => {
            crate::pool::execute_sweep(tx, peer, serial);
            Ok(())
        }
        Op::Unlink { name } => {
            crate::crash::point("post-unlink");
            let _ = dom.remove_entry(&name);
            Ok(())
        }
    }
}

/// Sends a plain token to `serial`'s socket (a full one is readable
/// anyway). Returns false if the socket is gone: its last fd was closed.
pub(crate) fn ring(dom: &Domain, serial: u64) -> bool {
    if dom.ring_connected(serial) {
        return true;
    }
    let Ok(addr) = UnixAddr::new(&dom.peer_path(serial)) else { return true };
    dom.with_ring_fd(|fd| match sys::send_msg(fd, Some(&addr), &[], &[]) {
        Err(Errno::EAGAIN) | Err(Errno(libc::ENOBUFS)) => (true, true),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => (false, false),
        _ => (true, false),
    })
    .unwrap_or(true)
}

fn new_vault(dom: &Domain, serial: u64, gen: u64, tx_requires_live: bool) -> Result<()> {
    let name = Domain::vault_name(serial, gen);
    let listener = sys::socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)?;
    let close_all = |fds: &[i32]| fds.iter().for_each(|f| sys::close(*f));
    if let Err(e) = bind_fresh(dom, listener, &name).and_then(|_| sys::listen(listener, VAULT_BACKLOG)) {
        close_all(&[listener]);
        return Err(map_resource_err(e));
    }
    let (rd, wr) = match sys::socketpair(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK) {
        Ok(p) => p,
        Err(e) => {
            close_all(&[listener]);
            return Err(map_resource_err(e));
        }
    };
    let _ = sys::setsockopt_int(wr, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    let mut payload = VAULT_MAGIC.to_vec();
    payload.extend_from_slice(&gen.to_le_bytes());
    let peer_addr = UnixAddr::new(&dom.peer_path(serial))?;
    let r = dom.with_ring_fd(|fd| match sys::send_msg(fd, Some(&peer_addr), &payload, &[listener, rd, wr]) {
        Err(Errno::EAGAIN) => (Err(Errno::EAGAIN), true),
        r => (r, false),
    });
    close_all(&[listener, rd, wr]);
    match r {
        Ok(Ok(())) => Ok(()),
        // The peer socket is gone: the peer is being torn down, and its
        // messages with it.
        Ok(Err(Errno::ECONNREFUSED)) | Ok(Err(Errno::ENOENT)) => {
            if tx_requires_live { Err(Errno::PEER_GONE) } else { Ok(()) }
        }
        Ok(Err(e)) | Err(e) => Err(map_resource_err(e)),
    }
}

fn bind_fresh(dom: &Domain, fd: i32, name: &[u8]) -> Result<()> {
    match dom.bind_socket(fd, name) {
        Err(Errno(libc::EADDRINUSE)) => {
            // A stale file of a generation that was rolled back.
            let _ = dom.remove_entry(name);
            dom.bind_socket(fd, name)
        }
        r => r,
    }
}

/// Kernel resource errors of fd transport, as the bus reports them.
fn map_resource_err(e: Errno) -> Errno {
    match e {
        Errno::EAGAIN | Errno::ETOOMANYREFS => Errno::EDQUOT,
        Errno::EMFILE | Errno(libc::ENFILE) => Errno::EMFILE,
        _ => Errno::ENOMEM,
    }
}

fn carrier_header(nonce: u64, part: u32, nparts: u32) -> Vec<u8> {
    let mut h = CARRIER_MAGIC.to_vec();
    h.extend_from_slice(&nonce.to_le_bytes());
    h.extend_from_slice(&part.to_le_bytes());
    h.extend_from_slice(&nparts.to_le_bytes());
    h
}

fn parse_carrier(b: &[u8]) -> Option<(u64, u32, u32)> {
    if b.len() < 20 || &b[..4] != CARRIER_MAGIC {
        return None;
    }
    Some((
        u64::from_le_bytes(b[4..12].try_into().ok()?),
        u32::from_le_bytes(b[12..16].try_into().ok()?),
        u32::from_le_bytes(b[16..20].try_into().ok()?),
    ))
}

fn send_carrier(dom: &Domain, serial: u64, gen: u64, nonce: u64, fds: &[i32]) -> Result<()> {
    let addr = UnixAddr::new(&dom.vault_path(serial, gen))?;
    let c = sys::socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK).map_err(map_resource_err)?;
    let r = (|| {
        match sys::connect(c, &addr) {
            Ok(()) => {}
            // The vault died with its peer: nobody will receive this.
            Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(map_resource_err(e)),
        }
        let parts: Vec<&[i32]> = fds.chunks(FDS_PER_PART).collect();
        for (i, part) in parts.iter().enumerate() {
            sys::send_msg(c, None, &carrier_header(nonce, i as u32, parts.len() as u32), part).map_err(|e| match e {
                Errno::EBADF => Errno::EBADF,
                e => map_resource_err(e),
            })?;
        }
        Ok(())
    })();
    sys::close(c);
    r
}

// ------------------------------------------------------------ decisions

/// Whether `peer`'s socket must hold a datagram: its queue is non-empty,
/// or its seed carries fds (which live in the vault).
fn need_token(tx: &Txn, peer: P<PeerRec>) -> bool {
    let p = tx.rec(peer);
    p.q_len.get() > 0 || seed_has_fds(tx, peer)
}

fn seed_has_fds(tx: &Txn, peer: P<PeerRec>) -> bool {
    let s = tx.rec(peer).seed.get();
    !s.is_null() && tx.rec(s).n_fds.get() > 0
}

/// An entry was appended to `peer`'s queue.
pub fn after_enqueue(tx: &Txn, peer: P<PeerRec>) {
    let p = tx.rec(peer);
    let serial = p.serial.get();
    if p.bell_dirty.get() == 1 {
        tx.push_op(Op::Ring { peer, serial });
    } else if p.bell_plain.get() == 0 && p.bell_vault.get() == 0 {
        tx.set(&p.bell_plain, 1);
        tx.push_op(Op::Ring { peer, serial });
    }
}

/// A message with `fds` (identified by `nonce`) is about to be queued to
/// `peer` (or become its seed): make sure a vault exists and send the
/// carrier at commit.
pub fn prepare_carrier(tx: &Txn, peer: P<PeerRec>, nonce: u64, fds: &[i32]) {
    let p = tx.rec(peer);
    let serial = p.serial.get();
    if p.bell_vault.get() == 0 {
        let gen = p.vault_gen.get() + 1;
        tx.set(&p.vault_gen, gen);
        tx.set(&p.bell_vault, 1);
        tx.push_op(Op::NewVault { peer, serial, gen });
    }
    tx.push_op(Op::Carrier { serial, gen: p.vault_gen.get(), nonce, fds: fds.to_vec() });
}

/// The caller changed its own queue (through its own fd `fd`): drain the
/// socket if the queue became empty.
pub fn after_own_change(tx: &Txn, peer: P<PeerRec>, fd: i32) {
    let p = tx.rec(peer);
    if p.bell_dirty.get() == 1 {
        let _ = resync(tx, peer, fd);
        return;
    }
    if need_token(tx, peer) {
        return;
    }
    let count = p.bell_plain.get() + p.bell_vault.get();
    if count == 0 {
        return;
    }
    tx.push_op(Op::Drain { peer, fd, count });
    if p.bell_vault.get() == 1 {
        tx.push_post(Op::Unlink { name: Domain::vault_name(p.serial.get(), p.vault_gen.get()) });
    }
    tx.set(&p.bell_plain, 0);
    tx.set(&p.bell_vault, 0);
}

/// RECV found the caller's queue empty: its socket should hold nothing
/// the mirror does not account for. A datagram someone else sent to the
/// socket's address would leave it readable for good, so the socket is
/// emptied (one system call), or rebuilt when it must keep the vault of
/// the seed.
pub fn discard_strays(tx: &Txn, peer: P<PeerRec>, fd: i32) {
    let p = tx.rec(peer);
    if fd < 0 || p.state.get() != PEER_CONNECTED || p.bell_dirty.get() == 1 {
        return;
    }
    if need_token(tx, peer) {
        // `after_own_change`, at the end of this call, rebuilds it.
        tx.set(&p.bell_dirty, 1);
        return;
    }
    tx.push_op(Op::Drain { peer, fd, count: u32::MAX });
}

/// Rule 4 of `txn`: the socket of `peer` may not match the mirror.
pub fn mark_dirty(tx: &Txn, peer: P<PeerRec>) {
    let p = tx.rec(peer);
    tx.set(&p.bell_dirty, 1);
    if p.state.get() == PEER_CONNECTED && need_token(tx, peer) {
        tx.push_op(Op::Ring { peer, serial: p.serial.get() });
    }
}

/// Rebuilds the socket contents of a dirty peer (its own operation, so
/// `fd` is its socket): keeps the current vault if it is there, drops
/// everything else, and puts back exactly what the queue needs.
pub fn resync(tx: &Txn, peer: P<PeerRec>, fd: i32) -> Result<()> {
    let p = tx.rec(peer);
    tx.intent(peer, Intent::Removed)?;
    tx.intent(peer, Intent::Added)?;
    let dom = tx.domain();
    let mut kept: Option<Vec<i32>> = None;
    let mut buf = [0u8; 32];
    while let Ok((n, _)) = sys::recv_msg(fd, &mut buf, true, FdMode::Discard, 0) {
        let is_current_vault = n >= 12
            && &buf[..4] == VAULT_MAGIC
            && u64::from_le_bytes(buf[4..12].try_into().unwrap()) == p.vault_gen.get()
            && p.bell_vault.get() == 1
            && kept.is_none();
        if is_current_vault {
            match sys::recv_msg(fd, &mut buf, false, FdMode::Install, 3) {
                Ok((_, fds)) if fds.len() == 3 => kept = Some(fds),
                Ok((_, fds)) => fds.iter().for_each(|f| sys::close(*f)),
                Err(_) => break,
            }
        } else if sys::discard_datagram(fd).is_err() {
            break;
        }
    }
    let serial = p.serial.get();
    let own = UnixAddr::new(&dom.peer_path(serial))?;
    let had_vault = p.bell_vault.get() == 1;
    tx.set(&p.bell_plain, 0);
    tx.set(&p.bell_vault, 0);
    if need_token(tx, peer) {
        if let Some(fds) = &kept {
            let mut payload = VAULT_MAGIC.to_vec();
            payload.extend_from_slice(&p.vault_gen.get().to_le_bytes());
            let _ = dom.with_ring_fd(|rfd| ((), sys::send_msg(rfd, Some(&own), &payload, fds) == Err(Errno::EAGAIN)));
            tx.set(&p.bell_vault, 1);
        } else {
            ring(dom, serial);
            tx.set(&p.bell_plain, 1);
        }
    }
    if had_vault && p.bell_vault.get() == 0 {
        let _ = dom.remove_entry(&Domain::vault_name(serial, p.vault_gen.get()));
    }
    if let Some(fds) = kept {
        fds.iter().for_each(|f| sys::close(*f));
    }
    tx.set(&p.bell_dirty, 0);
    Ok(())
}

// ---------------------------------------------------------- the vault

/// Descriptors of a peer's vault, installed temporarily in this process.
pub struct Vault {
    listener: i32,
    inbox_rd: i32,
    inbox_wr: i32,
}

impl Drop for Vault {
    fn drop(&mut self) {
        for fd in [self.listener, self.inbox_rd, self.inbox_wr] {
            sys::close(fd);
        }
    }
}

/// Opens the vault of the caller's own peer (None if it has none).
pub fn vault_open(tx: &Txn, peer: P<PeerRec>, fd: i32) -> Result<Option<Vault>> {
    let p = tx.rec(peer);
    if p.bell_dirty.get() == 1 {
        resync(tx, peer, fd)?;
    }
    if p.bell_vault.get() == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 32];
    if p.bell_plain.get() == 1 {
        // The plain token is in front of the vault datagram.
        tx.intent(peer, Intent::Removed)?;
        let _ = sys::discard_datagram(fd);
        tx.set(&p.bell_plain, 0);
    }
    match sys::recv_msg(fd, &mut buf, true, FdMode::Install, 3) {
        Ok((n, fds)) if fds.len() == 3 && n >= 12 && &buf[..4] == VAULT_MAGIC => {
            Ok(Some(Vault { listener: fds[0], inbox_rd: fds[1], inbox_wr: fds[2] }))
        }
        Ok((_, fds)) => {
            fds.iter().for_each(|f| sys::close(*f));
            mark_dirty(tx, peer);
            Ok(None)
        }
        Err(Errno::EMFILE) | Err(Errno(libc::ENFILE)) => Err(Errno::EMFILE),
        Err(_) => {
            mark_dirty(tx, peer);
            Ok(None)
        }
    }
}

/// What to do with a carrier that was found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Install its fds and keep it (PEEK).
    Peek,
    /// Remove it without installing anything.
    Discard,
}

fn is_orphan(tx: &Txn, nonce: u64) -> bool {
    table::get(tx, TAG_NONCE, 0, nonce).is_none()
}

/// Reads all parts of one carrier from `fd` (a vault connection or the
/// inbox), installing fds unless discarding.
fn read_parts(fd: i32, install: bool) -> Result<(u64, Vec<i32>)> {
    let mut buf = [0u8; 32];
    let mut fds = Vec::new();
    let mut nonce = 0;
    let mut part = 0;
    loop {
        let mode = if install { FdMode::Install } else { FdMode::Discard };
        match sys::recv_msg(fd, &mut buf, false, mode, FDS_PER_PART) {
            Ok((n, got)) => {
                fds.extend(got);
                let Some((nc, _, nparts)) = parse_carrier(&buf[..n]) else { break };
                nonce = nc;
                part += 1;
                if part >= nparts {
                    break;
                }
            }
            Err(e) => {
                fds.iter().for_each(|f| sys::close(*f));
                return Err(e);
            }
        }
    }
    Ok((nonce, fds))
}

/// Parks a carrier's fds in the inbox (behind everything there).
fn park(v: &Vault, nonce: u64, fds: &[i32]) -> Result<()> {
    let parts: Vec<&[i32]> = if fds.is_empty() { vec![&[][..]] } else { fds.chunks(FDS_PER_PART).collect() };
    for (i, part) in parts.iter().enumerate() {
        sys::send_msg(v.inbox_wr, None, &carrier_header(nonce, i as u32, parts.len() as u32), part)
            .map_err(map_resource_err)?;
    }
    Ok(())
}

/// Finds the carrier of `nonce` in the vault and handles it as `want`
/// says. Returns the installed fds (empty when discarding), or None if the
/// carrier is missing.
pub fn find_carrier(tx: &Txn, v: &Vault, nonce: u64, want: Want) -> Result<Option<Vec<i32>>> {
    let mut buf = [0u8; 32];
    // The inbox first: parked carriers are older than anything pending on
    // the listener. Rotate past carriers of other queued messages.
    let mut rotations = 0;
    while let Ok((n, _)) = sys::recv_msg(v.inbox_rd, &mut buf, true, FdMode::Discard, 0) {
        let Some((nc, _, nparts)) = parse_carrier(&buf[..n]) else {
            let _ = sys::discard_datagram(v.inbox_rd);
            continue;
        };
        if nc == nonce {
            if want == Want::Peek && nparts == 1 {
                let (_, fds) = sys::recv_msg(v.inbox_rd, &mut buf, true, FdMode::Install, FDS_PER_PART)
                    .map_err(map_install_err)?;
                return Ok(Some(fds));
            }
            let (_, fds) = read_parts(v.inbox_rd, want != Want::Discard).map_err(map_install_err)?;
            if want == Want::Peek {
                if let Err(e) = park(v, nonce, &fds) {
                    fds.iter().for_each(|f| sys::close(*f));
                    return Err(e);
                }
            }
            return Ok(Some(fds));
        }
        if is_orphan(tx, nc) {
            let _ = read_parts(v.inbox_rd, false);
            continue;
        }
        rotations += 1;
        if rotations > 1024 {
            break;
        }
        let (nc, fds) = read_parts(v.inbox_rd, true).map_err(map_install_err)?;
        let r = park(v, nc, &fds);
        fds.iter().for_each(|f| sys::close(*f));
        r?;
    }
    // Then connections pending on the listener, in commit order.
    loop {
        let conn = match sys::accept(v.listener) {
            Ok(c) => c,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(map_install_err(e)),
        };
        let r = (|| {
            let (n, _) = sys::recv_msg(conn, &mut buf, true, FdMode::Discard, 0)?;
            let Some((nc, _, _)) = parse_carrier(&buf[..n]) else { return Ok(None) };
            if nc == nonce {
                let (_, fds) = read_parts(conn, want != Want::Discard)?;
                if want == Want::Peek {
                    if let Err(e) = park(v, nonce, &fds) {
                        fds.iter().for_each(|f| sys::close(*f));
                        return Err(e);
                    }
                }
                return Ok(Some(Some(fds)));
            }
            if is_orphan(tx, nc) {
                let _ = read_parts(conn, false);
            } else {
                let (nc, fds) = read_parts(conn, true)?;
                let r = park(v, nc, &fds);
                fds.iter().for_each(|f| sys::close(*f));
                r?;
            }
            Ok(None)
        })();
        sys::close(conn);
        if let Some(found) = r.map_err(map_install_err)? {
            return Ok(found);
        }
    }
}

fn map_install_err(e: Errno) -> Errno {
    match e {
        Errno::EMFILE | Errno(libc::ENFILE) => Errno::EMFILE,
        e => map_resource_err(e),
    }
}

// ------------------------------------------------------ disconnection

/// Makes the caller's socket report hang-up only: drains it, takes away
/// POLLOUT (by filling its own send buffer with a datagram queued to
/// itself) and shuts it down (POLLHUP).
pub fn hang_up(dom: &Domain, serial: u64, fd: i32) {
    while sys::discard_datagram(fd).is_ok() {}
    let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 1);
    if let Ok(own) = UnixAddr::new(&dom.peer_path(serial)) {
        // Must stay below the (now minimal) send buffer size minus 32.
        let filler = vec![0u8; 3000];
        let _ = sys::send_msg(fd, Some(&own), &filler, &[]);
    }
    let _ = sys::shutdown(fd, libc::SHUT_RDWR);
}
