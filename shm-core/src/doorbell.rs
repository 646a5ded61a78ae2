//! Wake-ups, kernel-visible readiness and file-descriptor transport
//! through the peer socket.
//!
//! # Wake-ups (what the engine calls)
//!
//! Waiting processes learn of a peer's new state from shared memory (see
//! `readiness` and `waiters`); the kernel is involved only when someone
//! sleeps. The engine's side of it is one call in two halves:
//!
//! * under its locks, when entries become visible in a peer's queue (or
//!   the peer is disconnected), a transaction or section notes that the
//!   peer is owed a ring (`Store::note_visible`, through [`after_enqueue`]
//!   and friends); at its end, [`seal`] turns each note into a [`Ticket`]
//!   and counts it in the peer bell's `owed` counter — the crash-safe
//!   record of a ring not yet done;
//! * after releasing every lock, [`entries_visible`] bumps the bell's `seq`
//!   (the module's wake-up count: edge-triggered epoll reports one edge per
//!   bump), rings the threads armed on the bell, sends the kernel token when
//!   one is due, and marks the ticket's ring done (`rung`).
//!
//! No kernel call is made for a receiver while a lock is held. A process
//! that dies (or stops) between commit and ring leaves `rung < owed`; the
//! wake-up tick of any process (`tick`) rings such a peer one tick later.
//!
//! # Kernel-visible readiness
//!
//! A peer's fd is an `AF_UNIX` datagram socket bound at `peer.<serial>` in
//! the domain directory; the kernel reports it readable while its receive
//! queue holds a datagram. Waits made through the shim never look at it,
//! but waits the shim cannot see (a raw `poll` system call, io_uring) do,
//! so the bus keeps a *plain token* (an empty datagram) there while the
//! peer's queue is non-empty:
//!
//! * with `BUS1_WAKE=exact` (a flag of the domain) the sender that makes
//!   the queue non-empty sends it at once, after its commit;
//! * otherwise the wake-up tick sends it to peers whose queue has been
//!   non-empty without one, so that such waiters still wake within about
//!   a tick.
//!
//! The peer itself removes the token when its queue becomes empty. Tokens
//! are counted (`tok_sent`, `tok_taken` in the bell): one sent after the
//! queue was emptied again arrives late and is taken out at the peer's
//! next operation on an empty queue.
//!
//! # File descriptors in flight
//!
//! A *vault datagram* in the peer socket keeps the peer's fd vault (see
//! `vault`) alive while messages carrying file descriptors are queued (or
//! its seed carries some); it also makes the socket readable. The three
//! vault sockets exist only in flight inside that datagram, so they die,
//! releasing every fd, when the peer's queue empties or the peer goes away.
//!
//! The segment keeps a mirror of what the socket holds (`bell_*` fields of
//! the peer, message state under its lock). Vault and drain operations of
//! a transaction are side effects run at commit; a section (which holds the
//! peer's own lock and its own socket) drains at once (see the rules in
//! `txn`). A peer whose socket contents are uncertain is *dirty* and
//! rebuilds them on its next operation.

use crate::domain::{Domain, RingTo, Rung};
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::section::Section;
use crate::shm::P;
use crate::store::{Intent, Store};
use crate::sys::{self, FdMode, UnixAddr};
use crate::txn::Txn;
use crate::vault::{find_carrier, new_vault, send_carrier, Vault, Want, VAULT_MAGIC};
use crate::waiters::{self, bell_rec};

/// A deferred socket side effect of a transaction.
pub enum Op {
    /// Create vault generation `gen` of a peer and put its datagram into
    /// the peer socket.
    NewVault { peer: P<PeerRec>, serial: u64, gen: u64 },
    /// Deliver a message's fds into a peer's vault.
    Carrier { serial: u64, gen: u64, nonce: u64, fds: Vec<i32> },
    /// Remove `count` datagrams (tokens, and the vault datagram if
    /// `vault`) from the caller's own peer socket.
    Drain { peer: P<PeerRec>, fd: i32, count: u32, vault: bool },
    /// Remove a carrier that is no longer needed (after commit).
    DropCarrier { peer: P<PeerRec>, fd: i32, nonce: u64 },
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
        Op::NewVault { peer, serial, gen } => {
            tx.intent(peer, Intent::Added)?;
            new_vault(dom, serial, gen, tx.requires_live_receivers())
        }
        Op::Carrier { serial, gen, nonce, fds } => send_carrier(dom, serial, gen, nonce, &fds),
        Op::Drain { peer, fd, count, vault } => {
            tx.intent(peer, Intent::Removed)?;
            drain(tx, peer, fd, count, vault);
            Ok(())
        }
        Op::DropCarrier { peer, fd, nonce } => {
            if let Ok(Some(v)) = vault_open(tx, peer, fd) {
                let _ = find_carrier(tx, &v, nonce, Want::Discard);
            }
            Ok(())
        }
        Op::Unlink { name } => {
            crate::crash::point("post-unlink");
            let _ = dom.remove_entry(&name);
            Ok(())
        }
    }
}

/// Takes up to `count` datagrams (tokens, and the vault datagram first if
/// `vault`) out of `peer`'s own socket `fd`, and counts the tokens.
fn drain<S: Store>(s: &S, peer: P<PeerRec>, fd: i32, count: u32, vault: bool) {
    let all_sent = all_tokens_sent(s, peer);
    let mut removed = 0;
    while removed < count && sys::discard_datagram(fd).is_ok() {
        removed += 1;
    }
    let tokens = removed.saturating_sub(vault as u32);
    took_tokens(s, peer, tokens as u64, all_sent.filter(|_| removed < count));
}

/// If every token counted as sent into `peer`'s socket has been sent
/// (none is on its way), that count. Read before the socket is drained: a
/// token that arrives during the drain must not be settled as lost.
fn all_tokens_sent<S: Store>(s: &S, peer: P<PeerRec>) -> Option<u64> {
    let bell = bell_of(s, peer);
    let done = bell.tok_done.load_seqcst();
    let sent = bell.tok_sent.load_seqcst();
    (done >= sent).then_some(sent)
}

/// Counts `n` plain tokens taken out of `peer`'s socket. `settled`: the
/// socket ran dry although every token counted up to that number had been
/// sent before the drain began; those never seen were lost with a sender
/// whose send failed or that died before sending: the count is settled.
fn took_tokens<S: Store>(s: &S, peer: P<PeerRec>, n: u64, settled: Option<u64>) {
    let bell = bell_of(s, peer);
    bell.tok_taken.fetch_add(n);
    if let Some(sent) = settled {
        if bell.tok_taken.load() < sent {
            bell.tok_taken.store(sent);
        }
    }
}

/// Tokens counted as sent into `peer`'s socket and not taken out yet
/// (some may still be on their way).
fn tokens_outstanding<S: Store>(s: &S, peer: P<PeerRec>) -> u64 {
    let bell = bell_of(s, peer);
    bell.tok_sent.load_seqcst().saturating_sub(bell.tok_taken.load_seqcst())
}

/// Whether `peer`'s socket looks as if a release would owe it nothing
/// (`settle_in_section` would do nothing): not dirty, no vault datagram, no
/// token sent and not taken. Read without the lock, for a release that
/// does not take it (`release`); a token sent meanwhile is for a message
/// queued meanwhile, which a release does not drain either.
pub fn settled_racy(dom: &Domain, peer: P<PeerRec>) -> bool {
    let Some(p) = dom.seg.try_rec(peer) else { return false };
    let bell = p.bell.load_racy();
    if p.bell_dirty.load_racy() != 0 || p.bell_vault.load_racy() != 0 || bell >= MAX_BELLS {
        return false;
    }
    let b = crate::waiters::bell_rec(dom, bell);
    b.tok_sent.load_seqcst() == b.tok_taken.load_seqcst()
}

fn bell_of<S: Store>(s: &S, peer: P<PeerRec>) -> &BellRec {
    bell_rec(s.dom(), s.rec(peer).bell.get())
}

// ------------------------------------------------------------ decisions

/// Whether `peer`'s socket must hold a datagram: its queue is non-empty,
/// or its seed carries fds (which live in the vault).
fn need_token<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    let p = s.rec(peer);
    p.q_len.get() > 0 || seed_has_fds(s, peer)
}

fn seed_has_fds<S: Store>(s: &S, peer: P<PeerRec>) -> bool {
    let e = s.rec(peer).seed.get();
    !e.is_null() && s.rec(e).n_fds.get() > 0
}

/// Whether the domain keeps kernel tokens exact (`BUS1_WAKE=exact`).
pub(crate) fn exact(dom: &Domain) -> bool {
    dom.seg.at0::<Header>().wake_exact.load() != 0
}

/// Entries were made visible in `peer`'s queue (staged or committed, by a
/// transaction or a section holding the peer's lock): its waiters are owed
/// a ring, and in exact mode a queue that was empty is owed a token. Every
/// place that makes entries visible comes through here.
pub fn after_enqueue<S: Store>(s: &S, peer: P<PeerRec>) {
    s.hold(peer);
    let p = s.rec(peer);
    let token = if p.bell_dirty.get() == 1 {
        true
    } else if p.bell_plain.get() == 0 && p.bell_vault.get() == 0 && exact(s.dom()) {
        s.set(&p.bell_plain, 1);
        true
    } else {
        false
    };
    s.note_visible(peer, Visible { wake: true, token });
}

/// `peer` was disconnected: its waiters are owed a ring (they see
/// POLLHUP).
pub fn after_disconnect(tx: &Txn, peer: P<PeerRec>) {
    tx.note_visible(peer, Visible { wake: true, token: false });
}

/// A message with `fds` (identified by `nonce`) is about to be queued to
/// `peer` (or become its seed): make sure a vault exists and send the
/// carrier at commit.
pub fn prepare_carrier(tx: &Txn, peer: P<PeerRec>, nonce: u64, fds: &[i32]) {
    tx.hold(peer);
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

/// The caller changed its own queue (through its own fd `fd`): empty the
/// socket if nothing is queued any more (the vault datagram, the token,
/// and tokens that arrived after an earlier emptying).
pub fn after_own_change(tx: &Txn, peer: P<PeerRec>, fd: i32) {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.bell_dirty.get() == 1 {
        let _ = resync(tx, peer, fd);
        return;
    }
    let Some((count, vault)) = drain_plan(tx, peer) else { return };
    if count > 0 {
        tx.push_op(Op::Drain { peer, fd, count, vault });
        if vault {
            tx.push_post(Op::Unlink { name: Domain::vault_name(p.serial.get(), p.vault_gen.get()) });
        }
    }
}

/// What to take out of the caller's own socket once its queue changed:
/// None if the queue still needs what is there; else how many datagrams
/// and whether the vault datagram is among them (the mirror is updated).
fn drain_plan<S: Store>(s: &S, peer: P<PeerRec>) -> Option<(u32, bool)> {
    if need_token(s, peer) {
        return None;
    }
    let p = s.rec(peer);
    let vault = p.bell_vault.get() == 1;
    let stale = tokens_outstanding(s, peer);
    s.set(&p.bell_plain, 0);
    s.set(&p.bell_vault, 0);
    Some(((stale + vault as u64).min(u32::MAX as u64) as u32, vault))
}

/// The same for a section (the peer's lock is held, and `fd` is its own
/// socket): drains at once.
pub fn settle_in_section(s: &Section, peer: P<PeerRec>, fd: i32) {
    if s.rec(peer).bell_dirty.get() == 1 {
        let _ = resync(s, peer, fd);
        return;
    }
    let Some((count, vault)) = drain_plan(s, peer) else { return };
    if count > 0 {
        drain(s, peer, fd, count, vault);
        if vault {
            let p = s.rec(peer);
            let _ = s.dom().remove_entry(&Domain::vault_name(p.serial.get(), p.vault_gen.get()));
        }
    }
}

/// RECV found the caller's queue empty: its socket should hold nothing
/// the counts do not account for. A datagram someone else sent to the
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
    tx.push_op(Op::Drain { peer, fd, count: u32::MAX, vault: p.bell_vault.get() == 1 });
}

/// The same for a section: empties the socket at once, or rebuilds it
/// when it must keep the vault of the seed.
pub fn discard_strays_in_section(s: &Section, peer: P<PeerRec>, fd: i32) {
    let p = s.rec(peer);
    if fd < 0 || p.state.get() != PEER_CONNECTED {
        return settle_in_section(s, peer, fd);
    }
    if p.bell_dirty.get() == 1 || need_token(s, peer) {
        s.set(&p.bell_dirty, 1);
        let _ = resync(s, peer, fd);
        return;
    }
    let vault = p.bell_vault.get() == 1;
    s.set(&p.bell_plain, 0);
    s.set(&p.bell_vault, 0);
    drain(s, peer, fd, u32::MAX, vault);
    if vault {
        let _ = s.dom().remove_entry(&Domain::vault_name(p.serial.get(), p.vault_gen.get()));
    }
}

/// Rule 7 of `txn`: the socket of `peer` may not match the mirror. It is
/// rebuilt at the peer's next operation; until then a token makes it
/// readable if the queue is not empty. Returns what the peer is owed, for
/// the caller to note.
pub fn dirty<S: Store>(s: &S, peer: P<PeerRec>) -> Visible {
    let p = s.rec(peer);
    s.set(&p.bell_dirty, 1);
    let token = p.state.get() == PEER_CONNECTED && need_token(s, peer);
    Visible { wake: true, token }
}

/// [`dirty`], noted in `s`.
pub fn mark_dirty<S: Store>(s: &S, peer: P<PeerRec>) {
    s.hold(peer);
    let v = dirty(s, peer);
    s.note_visible(peer, v);
}

/// Rebuilds the socket contents of a dirty peer (its own operation, so
/// `fd` is its socket): keeps the current vault if it is there, drops
/// everything else, and puts back exactly what the queue needs.
pub fn resync<S: Store>(tx: &S, peer: P<PeerRec>, fd: i32) -> Result<()> {
    let p = tx.rec(peer);
    tx.intent(peer, Intent::Removed)?;
    tx.intent(peer, Intent::Added)?;
    let dom = tx.dom();
    let all_sent = all_tokens_sent(tx, peer);
    let mut kept: Option<Vec<i32>> = None;
    let mut tokens = 0;
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
        } else if n == 0 {
            tokens += 1;
        }
    }
    took_tokens(tx, peer, tokens, all_sent);
    let serial = p.serial.get();
    let own = UnixAddr::new(&dom.peer_path(serial))?;
    let had_vault = p.bell_vault.get() == 1;
    tx.set(&p.bell_plain, 0);
    tx.set(&p.bell_vault, 0);
    tx.set(&p.bell_dirty, 0);
    if need_token(tx, peer) {
        if let Some(fds) = &kept {
            let mut payload = VAULT_MAGIC.to_vec();
            payload.extend_from_slice(&p.vault_gen.get().to_le_bytes());
            let _ = dom.with_ring_fd(|rfd| ((), sys::send_msg(rfd, Some(&own), &payload, fds) == Err(Errno::EAGAIN)));
            tx.set(&p.bell_vault, 1);
        } else if exact(dom) && p.q_len.get() > 0 {
            tx.set(&p.bell_plain, 1);
            tx.note_visible(peer, Visible { wake: false, token: true });
        }
    }
    if had_vault && p.bell_vault.get() == 0 {
        let _ = dom.remove_entry(&Domain::vault_name(serial, p.vault_gen.get()));
    }
    if let Some(fds) = kept {
        fds.iter().for_each(|f| sys::close(*f));
    }
    Ok(())
}

// ------------------------------------------------------------- wake-ups

/// What a transaction owes a peer after it commits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Visible {
    /// Its state changed: bump `seq` and ring the threads armed on it.
    pub wake: bool,
    /// Send a plain token into its socket.
    pub token: bool,
}

/// A ring owed to one peer by a committed transaction, to be done with
/// [`entries_visible`] once every lock is released.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    bell: u64,
    serial: u64,
    /// The bell's `owed` count this wake-up settles (0: none).
    wake: u64,
    /// The bell's `tok_sent` count this token settles (0: none).
    token: u64,
}

/// Turns what a committing transaction owes into tickets: counts each
/// wake-up in its bell's `owed` (and each token in `tok_sent`) while the
/// lock is still held, so that one lost with this process is noticed.
pub(crate) fn seal<S: Store>(s: &S, owed: &[(P<PeerRec>, Visible)], out: &mut Vec<Ticket>) {
    out.extend(owed.iter().filter_map(|&(peer, what)| ticket(s, peer, what)));
}

/// The ticket of one peer's wake-up, counted in its bell (none if the
/// record is no peer any more).
pub(crate) fn ticket<S: Store>(s: &S, peer: P<PeerRec>, what: Visible) -> Option<Ticket> {
    let p = s.rec(peer);
    if p.magic.get() != PEER_MAGIC {
        return None;
    }
    let b = p.bell.get();
    let bell = bell_rec(s.dom(), b);
    let wake = if what.wake { bell.owed.fetch_add(1) + 1 } else { 0 };
    let token = if what.token { bell.tok_sent.fetch_add(1) + 1 } else { 0 };
    Some(Ticket { bell: b, serial: p.serial.get(), wake, token })
}

/// The second half of a wake-up, made after every lock is released: the
/// changes the tickets were issued for are visible to anyone who looks.
///
/// Bumps each bell's `seq`, then (after one fence for all of them, so that
/// a multicast pays one, not one per destination) rings every thread armed
/// on each bell, sends the kernel tokens that are due, and records the
/// rings as done. A ring that could not be made (no descriptor left for
/// it) stays owed and is made good by the wake-up tick.
pub fn entries_visible(dom: &Domain, tickets: &[Ticket]) {
    for t in tickets.iter().filter(|t| t.wake != 0) {
        bell_rec(dom, t.bell).seq.fetch_add(1);
    }
    // The changes (written before the lock was released) are ordered
    // before the looks at the sleepers (txn rule 8).
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    for t in tickets {
        crate::crash::point("ring");
        ring_ticket(dom, t);
    }
}

fn ring_ticket(dom: &Domain, t: &Ticket) {
    let bell = bell_rec(dom, t.bell);
    if t.wake != 0 && waiters::ring_sleepers(dom, t.bell) {
        bell.rung.fetch_max(t.wake);
    }
    let mut gone = false;
    if t.token != 0 {
        match dom.ring(RingTo::Peer(t.serial)) {
            Rung::Sent => {
                bell.tok_done.fetch_max(t.token);
            }
            Rung::Gone => gone = true,
            Rung::Failed => {}
        }
    }
    if gone {
        // The peer's last fd is gone (its process died): tear it down now
        // rather than at the next liveness scan.
        crate::reaper::reap(dom, t.serial);
    }
}

/// Takes a free entry of `used` (a bitmap of `n` entries under the lock);
/// returns its index.
pub(crate) fn take_index(tx: &Txn, used: &[crate::shm::Cell<u64>]) -> Option<u64> {
    for (i, w) in used.iter().enumerate() {
        let v = w.get();
        if v != u64::MAX {
            let bit = (!v).trailing_zeros() as u64;
            tx.set(w, v | 1 << bit);
            return Some(i as u64 * 64 + bit);
        }
    }
    None
}

/// Gives entry `i` of `used` back.
pub(crate) fn put_index(tx: &Txn, used: &[crate::shm::Cell<u64>], i: u64) {
    let w = &used[(i / 64) as usize];
    tx.set(w, w.get() & !(1 << (i % 64)));
}

/// Takes a bell for a new peer (under the lock, before the peer can be
/// seen): no sleepers, no registrations, no tokens outstanding.
pub(crate) fn bell_alloc(tx: &Txn) -> Result<u64> {
    let b = take_index(tx, &tx.hdr().bells_used).ok_or(Errno::ENOMEM)?;
    crate::alloc::reserve_table(tx, BELLS_OFF + b * 256)?;
    let dom = tx.domain();
    let bell = bell_rec(dom, b);
    waiters::reset_bell_sleepers(dom, b);
    let sent = bell.tok_sent.load_seqcst();
    bell.tok_done.fetch_max(sent);
    bell.tok_taken.store(sent);
    tx.set(&bell.regs, 0);
    tx.set(&bell.n_regs, 0);
    Ok(b)
}

/// Gives a peer's bell back (its peer is freed).
pub(crate) fn bell_free(tx: &Txn, b: u64) {
    put_index(tx, &tx.hdr().bells_used, b);
}

/// Period of the wake-up tick.
pub const TICK_MS: u64 = 40;

/// One wake-up tick of the domain (the watcher thread of one process runs
/// it every [`TICK_MS`]): rings owed since the previous tick (their sender
/// died, stopped or ran out of descriptors) are made good; in the default
/// mode, peers whose queue is non-empty without a token get one, so that
/// waiters the shim cannot see wake up.
pub(crate) fn tick(dom: &Domain) {
    let exact = exact(dom);
    // Rings owed at this process's previous tick and still not done.
    let before = dom.take_owed_seen();
    let mut seen = Vec::new();
    let Ok(tx) = dom.lock() else { return };
    for peer in crate::peer::all(&tx) {
        let p = tx.rec(peer);
        let b = p.bell.get();
        let bell = bell_rec(dom, b);
        let (owed, rung) = (bell.owed.load_seqcst(), bell.rung.load_seqcst());
        let (sent, done) = (bell.tok_sent.load_seqcst(), bell.tok_done.load_seqcst());
        if rung < owed || done < sent {
            seen.push((b, owed, sent));
        }
        // Late: what was owed at the previous tick is owed still.
        let late = before.iter().any(|&(x, o, t)| x == b && (rung < o || done < t));
        // A token for a queue that has none; read without the peer's lock
        // first, then again under it. A peer whose lock is busy (perhaps
        // held by a stopped process) waits for the next tick.
        let wants_token = |tx: &Txn| {
            !exact
                && p.state.get() == PEER_CONNECTED
                && p.q_len.get() > 0
                && p.bell_plain.get() == 0
                && p.bell_vault.get() == 0
                && p.bell_dirty.get() == 0
                && tokens_outstanding(tx, peer) == 0
        };
        if !(late || wants_token(&tx)) || !tx.try_hold(peer) {
            continue;
        }
        if late {
            mark_dirty(&tx, peer);
        } else if wants_token(&tx) {
            tx.set(&p.bell_plain, 1);
            tx.note_visible(peer, Visible { wake: false, token: true });
        }
    }
    // The tickets are run by the commit, once the lock is released; the
    // made-good ones settle everything owed before them.
    let _ = tx.commit();
    dom.put_owed_seen(seen);
}

// ------------------------------------------------- the vault datagram

/// Opens the vault of the caller's own peer (None if it has none).
pub fn vault_open(tx: &Txn, peer: P<PeerRec>, fd: i32) -> Result<Option<Vault>> {
    tx.hold(peer);
    let p = tx.rec(peer);
    if p.bell_dirty.get() == 1 {
        resync(tx, peer, fd)?;
    }
    if p.bell_vault.get() == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 32];
    // Plain tokens may be queued in front of the vault datagram; the vault
    // keeps the socket readable without them.
    loop {
        match sys::recv_msg(fd, &mut buf, true, FdMode::Discard, 0) {
            Ok((0, _)) => {
                tx.intent(peer, Intent::Removed)?;
                if sys::discard_datagram(fd).is_err() {
                    mark_dirty(tx, peer);
                    return Ok(None);
                }
                took_tokens(tx, peer, 1, None);
                tx.set(&p.bell_plain, 0);
            }
            Ok((n, _)) if n >= 12 && &buf[..4] == VAULT_MAGIC => break,
            _ => {
                mark_dirty(tx, peer);
                return Ok(None);
            }
        }
    }
    match sys::recv_msg(fd, &mut buf, true, FdMode::Install, 3) {
        Ok((n, fds)) if fds.len() == 3 && n >= 12 && &buf[..4] == VAULT_MAGIC => {
            Ok(Some(Vault::from_fds([fds[0], fds[1], fds[2]])))
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
