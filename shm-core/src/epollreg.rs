//! Peer fds registered in epoll sets.
//!
//! The kernel's epoll item for a peer fd (the peer socket) exists as the
//! application made it, so that the set keeps it across `fork`, `exec` and
//! `SCM_RIGHTS` and drops it when the last fd of the peer is closed, as for
//! the module's file. Its data is the shim's *tag*, naming a registration
//! record here, which holds what the application asked for (events, flags,
//! data) and the state the module's epoll item would keep: whether an
//! edge-triggered item has seen the bell's latest wake-up, whether a
//! one-shot item is armed. Any process that meets a tag in a set finds the
//! registration from it, so all processes sharing a set share one item, as
//! they would in the kernel.
//!
//! Records live in a fixed table (`layout::REGS_OFF`); they are made and
//! dropped under the domain lock, and their event state is updated with
//! atomics, like the kernel's item (one edge is consumed by one waiter).
//! A record outlives its epoll set when the set is closed without removing
//! the fd; it is freed with its peer (at most `MAX_PER_PEER` per peer).

use crate::doorbell::{put_index, take_index};
use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::readiness::Ready;
use crate::shm::P;
use crate::txn::Txn;
use crate::waiters::bell_rec;

/// The top 16 bits of a tag.
const TAG_MAGIC: u64 = 0xb1e9;
/// Registrations one peer may have at once (the kernel's equivalent is the
/// per-user `max_user_watches`; exceeding it is ENOSPC there too).
pub const MAX_PER_PEER: u64 = 4096;

pub const EPOLLET: u32 = libc::EPOLLET as u32;
pub const EPOLLONESHOT: u32 = libc::EPOLLONESHOT as u32;

fn reg(dom: &Domain, idx: u64) -> &EpollReg {
    assert!(idx < MAX_REGS, "bad registration index {idx}");
    dom.seg.rec(P::<EpollReg>::from_off(REGS_OFF + idx * REG_SIZE))
}

/// The tag of registration `idx` of generation `gen`.
fn tag(idx: u64, gen: u64) -> u64 {
    TAG_MAGIC << 48 | (gen & 0xffff) << 32 | idx
}

/// The (index, generation) a kernel item's data names, if it is a tag.
pub fn untag(data: u64) -> Option<(u64, u64)> {
    (data >> 48 == TAG_MAGIC && data & 0xffff_ffff < MAX_REGS).then_some((data & 0xffff_ffff, (data >> 32) & 0xffff))
}

/// A registration as a waiter uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegRef {
    pub idx: u64,
    pub gen: u64,
    /// The peer's record, serial and bell.
    pub peer: u64,
    pub serial: u64,
    pub bell: u64,
}

impl RegRef {
    /// The tag the kernel item carries.
    pub fn tag(&self) -> u64 {
        tag(self.idx, self.gen)
    }
}

/// Finds the live registration a tag names; with `sock_ino`, only if it
/// was made for that peer socket.
pub(crate) fn lookup(dom: &Domain, data: u64, sock_ino: Option<u64>) -> Option<RegRef> {
    let (idx, gen) = untag(data)?;
    let g = reg(dom, idx);
    let serial = g.serial.load();
    if serial == 0 || g.gen.load() & 0xffff != gen || sock_ino.is_some_and(|i| i != g.sock_ino.load()) {
        return None;
    }
    Some(RegRef { idx, gen, peer: g.peer.load(), serial, bell: g.bell.load() })
}

/// The initial edge state: an item that is ready when it is added (or
/// modified) is reported once, even edge-triggered, as the kernel does.
fn seen_for(r: &Ready, events: u32) -> u64 {
    if r.revents(events) != 0 {
        r.seq.wrapping_sub(1)
    } else {
        r.seq
    }
}

/// Registers `peer` (ready as `r` says) with the application's `events`
/// and `data`; the kernel item is to carry the returned tag.
pub(crate) fn register(tx: &Txn, peer: P<PeerRec>, sock_ino: u64, events: u32, data: u64, r: &Ready) -> Result<RegRef> {
    let p = tx.rec(peer);
    let b = p.bell.get();
    let bell = bell_rec(tx.domain(), b);
    if bell.n_regs.get() >= MAX_PER_PEER {
        return Err(Errno(libc::ENOSPC));
    }
    let idx = take_index(tx, &tx.hdr().regs_used).ok_or(Errno(libc::ENOSPC))?;
    crate::alloc::reserve_table(tx, REGS_OFF + idx * REG_SIZE)?;
    let g = reg(tx.domain(), idx);
    let gen = g.gen.fetch_add(1) + 1;
    g.peer.store(peer.off());
    g.bell.store(b);
    g.sock_ino.store(sock_ino);
    g.events.store(events as u64);
    g.data.store(data);
    g.seen.store(seen_for(r, events));
    g.armed.store(1);
    tx.set(&g.next, bell.regs.get());
    tx.set(&bell.regs, idx + 1);
    tx.add(&bell.n_regs, 1);
    g.serial.store(p.serial.get());
    Ok(RegRef { idx, gen: gen & 0xffff, peer: peer.off(), serial: p.serial.get(), bell: b })
}

/// EPOLL_CTL_MOD: new events and data; re-arms a one-shot item and
/// reports it once if it is ready now.
pub(crate) fn modify(dom: &Domain, g: &RegRef, events: u32, data: u64, r: &Ready) {
    let rec = reg(dom, g.idx);
    rec.events.store(events as u64);
    rec.data.store(data);
    rec.seen.store(seen_for(r, events));
    rec.armed.store(1);
}

/// Frees registration `g` (EPOLL_CTL_DEL, or its peer is gone).
pub(crate) fn unregister(tx: &Txn, g: &RegRef) {
    let dom = tx.domain();
    let rec = reg(dom, g.idx);
    if !live(rec, g) {
        return;
    }
    let bell = bell_rec(dom, g.bell);
    // Unlink from the peer's list.
    let mut link = &bell.regs;
    while link.get() != 0 {
        let i = link.get() - 1;
        if i == g.idx {
            tx.set(link, rec.next.get());
            tx.add(&bell.n_regs, -1);
            break;
        }
        link = &reg(dom, i).next;
    }
    rec.serial.store(0);
    put_index(tx, &tx.hdr().regs_used, g.idx);
}

/// Frees every registration of a peer that is being freed.
pub(crate) fn drop_all(tx: &Txn, peer: P<PeerRec>) {
    let dom = tx.domain();
    let bell = bell_rec(dom, tx.rec(peer).bell.get());
    let mut next = bell.regs.get();
    while next != 0 {
        let idx = next - 1;
        let rec = reg(dom, idx);
        next = rec.next.get();
        rec.serial.store(0);
        put_index(tx, &tx.hdr().regs_used, idx);
    }
    tx.set(&bell.regs, 0);
    tx.set(&bell.n_regs, 0);
}

/// What an `epoll_wait` reports for registration `g` now, given the peer's
/// readiness `r`: (events, data), or None. Consumes the item's edge or
/// one-shot arming as the kernel's item would (one waiter gets it).
pub(crate) fn take_event(dom: &Domain, g: &RegRef, r: &Ready) -> Option<(u32, u64)> {
    let rec = reg(dom, g.idx);
    if !live(rec, g) {
        return None;
    }
    let events = rec.events.load() as u32;
    if events & EPOLLONESHOT != 0 && rec.armed.load() == 0 {
        return None;
    }
    let revents = r.revents(events);
    if events & EPOLLET != 0 {
        let seen = rec.seen.load();
        if seen == r.seq || !rec.seen.compare_exchange(seen, r.seq) {
            return None;
        }
    }
    if revents == 0 {
        return None;
    }
    if events & EPOLLONESHOT != 0 && !rec.armed.compare_exchange(1, 0) {
        return None;
    }
    let data = rec.data.load();
    // A registration freed meanwhile reports nothing.
    live(rec, g).then_some((revents, data))
}

/// Whether `rec` is still the registration `g` names.
fn live(rec: &EpollReg, g: &RegRef) -> bool {
    rec.serial.load() == g.serial && rec.gen.load() & 0xffff == g.gen
}

/// Whether registration `g` still exists (its set may still hold it).
pub(crate) fn exists(dom: &Domain, g: &RegRef) -> bool {
    live(reg(dom, g.idx), g)
}

/// Whether [`take_event`] would report something now (without consuming
/// anything): the set is readable for a `poll` on it.
pub(crate) fn would_report(dom: &Domain, g: &RegRef, r: &Ready) -> bool {
    let rec = reg(dom, g.idx);
    if !live(rec, g) {
        return false;
    }
    let events = rec.events.load() as u32;
    if events & EPOLLONESHOT != 0 && rec.armed.load() == 0 {
        return false;
    }
    if events & EPOLLET != 0 && rec.seen.load() == r.seq {
        return false;
    }
    r.revents(events) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_other_data_is_no_tag() {
        let t = tag(12345, 0x1_2345);
        assert_eq!(untag(t), Some((12345, 0x2345)));
        assert_eq!(untag(42), None);
        assert_eq!(untag(u64::MAX), None);
        assert_eq!(untag(TAG_MAGIC << 48 | MAX_REGS), None);
    }
}
