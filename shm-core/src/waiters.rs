//! Waiters: threads that sleep until a peer's state changes, and how a
//! ring reaches them.
//!
//! A thread that must sleep on some peers takes a *waiter slot* in the
//! domain's slot table (one per thread and domain, kept while the thread
//! lives) and *arms* it on each peer: it sets the slot's bit in the peer
//! bell's sleeper map, then re-checks the peers and sleeps only if none is
//! ready. A party that changes a peer's state first makes the change
//! visible, then reads the sleeper map and rings every slot found there
//! (`ring_sleepers`): it bumps the slot's word and wakes the thread the way
//! the slot says it sleeps, on the word as a futex or on the thread's wake
//! socket. Both sides use sequentially consistent operations, so at least
//! one of them sees the other: no wake-up is lost, and nobody is rung when
//! nobody sleeps (txn rule 8).
//!
//! A thread whose wait ends abnormally (killed, or left by `longjmp` from a
//! signal handler) leaves its bits set: they cost extra rings, never a
//! missing one. The thread's next wait releases what it left behind, its
//! exit frees its slots, and the slots of dead processes are freed by the
//! wake-up tick of any process (`collect_dead`).

use crate::creds;
use crate::domain::Domain;
use crate::layout::*;
use crate::shm::P;
use crate::sys;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

/// A ring only bumps the slot's word (the thread is armed but awake).
pub const HOW_AWAKE: u32 = 0;
/// A ring also wakes the word as a futex.
pub const HOW_FUTEX: u32 = 1;
/// A ring also sends a token to the thread's wake socket.
pub const HOW_SOCKET: u32 = 2;

/// This process image, as slot owners name it (so that a slot left by the
/// image a process had before `exec` is recognised as dead although the
/// pid is the same). Every copy of this library in one process agrees on
/// it — the preload shim's and one a program links itself — so that
/// neither takes the other's slots for those of a dead image.
fn incarnation() -> u32 {
    static INC: AtomicU32 = AtomicU32::new(0);
    let v = INC.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let image = sys::image_number();
    let new = if image != 0 { image } else { sys::getrandom_u64() as u32 }.max(1);
    match INC.compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => new,
        Err(v) => v,
    }
}

fn owner_word() -> u64 {
    (creds::pid() as u64) << 32 | incarnation() as u64
}

fn slot_rec(dom: &Domain, s: u32) -> &WaitSlot {
    dom.seg.rec(P::<WaitSlot>::from_off(SLOTS_OFF + s as u64 * 64))
}

/// The bell record of index `bell`.
pub(crate) fn bell_rec(dom: &Domain, bell: u64) -> &BellRec {
    assert!(bell < MAX_BELLS, "bad bell index {bell}");
    dom.seg.rec(P::<BellRec>::from_off(BELLS_OFF + bell * 256))
}

fn hdr(dom: &Domain) -> &Header {
    dom.seg.at0()
}

/// Takes a free slot for the calling thread; None if all are taken.
fn take_slot(dom: &Domain, hint: u32) -> Option<u32> {
    let used = &hdr(dom).slots_used;
    let start = (hint as usize / 64) % SLOT_WORDS;
    for i in 0..SLOT_WORDS {
        let w = (start + i) % SLOT_WORDS;
        loop {
            let cur = used[w].load();
            if cur == u64::MAX {
                break;
            }
            let bit = (!cur).trailing_zeros();
            if used[w].compare_exchange(cur, cur | 1 << bit) {
                let s = (w * 64) as u32 + bit;
                let rec = slot_rec(dom, s);
                rec.how.store(HOW_AWAKE);
                rec.wake_id.store(0);
                rec.owner.store(owner_word());
                return Some(s);
            }
        }
    }
    None
}

/// Clears slot `s`'s bit in every bell it may be armed on (all bells in
/// use: used when the owner is gone and its list with it).
fn unarm_everywhere(dom: &Domain, s: u32) {
    let (w, bit) = (s as usize / 64, 1u64 << (s % 64));
    for (i, used) in hdr(dom).bells_used.iter().enumerate() {
        let mut m = used.load_racy();
        while m != 0 {
            let b = i as u64 * 64 + m.trailing_zeros() as u64;
            m &= m - 1;
            let rec = bell_rec(dom, b);
            if rec.sleepers[w].load() & bit != 0 {
                rec.sleepers[w].fetch_and(!bit);
            }
        }
    }
}

fn free_slot(dom: &Domain, s: u32) {
    slot_rec(dom, s).owner.store(0);
    hdr(dom).slots_used[s as usize / 64].fetch_and(!(1u64 << (s % 64)));
}

// ------------------------------------------------------------ per thread

/// A slot this thread owns in one domain.
struct Owned {
    dom: Weak<Domain>,
    pid: u32,
    slot: u32,
    /// The wake socket (fd, id), made the first time the thread sleeps on
    /// a socket in this domain.
    wake: Option<(i32, u64)>,
}

/// The registration of the wait in progress (at most one per thread: a
/// wait blocks every signal while it is armed and awake, so a handler can
/// only run while it sleeps, and a wait made by that handler replaces it;
/// the interrupted sleep then ends with EINTR).
struct Active {
    id: u64,
    dom: Arc<Domain>,
    slot: u32,
    bells: Vec<u64>,
}

#[derive(Default)]
struct ThreadState {
    owned: Vec<Owned>,
    active: Vec<Active>,
    next_id: u64,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        for a in self.active.drain(..) {
            disarm_bells(&a.dom, a.slot, &a.bells);
        }
        let pid = creds::pid();
        for o in self.owned.drain(..) {
            if o.pid != pid {
                continue;
            }
            if let Some(dom) = o.dom.upgrade() {
                if let Some((fd, id)) = o.wake {
                    dom.close_wake_socket(fd, id);
                }
                free_slot(&dom, o.slot);
            }
        }
    }
}

thread_local! {
    static THREAD: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

fn disarm_bells(dom: &Domain, s: u32, bells: &[u64]) {
    let (w, bit) = (s as usize / 64, 1u64 << (s % 64));
    for &b in bells {
        bell_rec(dom, b).sleepers[w].fetch_and(!bit);
    }
    slot_rec(dom, s).how.store(HOW_AWAKE);
}

/// Releases every registration this thread left armed: a wait that was
/// left by longjmp, or one interrupted by the signal handler now waiting.
fn release_stale(t: &mut ThreadState) {
    for a in t.active.drain(..) {
        disarm_bells(&a.dom, a.slot, &a.bells);
    }
}

/// This thread's slot in `dom` (taken on first use).
fn own_slot(t: &mut ThreadState, dom: &Arc<Domain>) -> Option<usize> {
    let pid = creds::pid();
    // Entries copied into a forked child name the parent's slots.
    t.owned.retain(|o| o.pid == pid && o.dom.strong_count() > 0);
    if let Some(i) = t.owned.iter().position(|o| o.dom.as_ptr() == Arc::as_ptr(dom)) {
        return Some(i);
    }
    let slot = take_slot(dom, creds::current().tid)?;
    t.owned.push(Owned { dom: Arc::downgrade(dom), pid, slot, wake: None });
    Some(t.owned.len() - 1)
}

/// How an armed thread will sleep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sleep {
    /// On the slot's word as a futex.
    Futex,
    /// In the kernel's poll, on the thread's wake socket among other fds.
    Socket,
}

/// A thread armed on bells of one domain. Dropping it disarms.
pub struct Armed {
    id: u64,
    dom: Arc<Domain>,
    slot: u32,
    /// The slot's word when the thread armed: a ring changes it.
    word0: u32,
    wake_fd: i32,
}

impl Armed {
    /// Whether a ring came since the thread armed.
    pub fn rung(&self) -> bool {
        slot_rec(&self.dom, self.slot).word.load() != self.word0
    }

    /// Sleeps on the slot's word until a ring, a signal or `timeout`
    /// (relative; None: no limit).
    pub fn futex_sleep(&self, timeout: Option<&libc::timespec>) {
        sys::futex_wait(slot_rec(&self.dom, self.slot).word.as_atomic(), self.word0, timeout);
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let _ = THREAD.try_with(|t| {
            let mut t = t.borrow_mut();
            if let Some(i) = t.active.iter().position(|a| a.id == self.id) {
                let a = t.active.swap_remove(i);
                disarm_bells(&a.dom, a.slot, &a.bells);
            }
        });

    }
}

/// The bells one wait watches, by domain.
#[derive(Default)]
pub struct WaitSet {
    groups: Vec<(Arc<Domain>, Vec<u64>)>,
}

impl WaitSet {
    pub fn new() -> WaitSet {
        WaitSet::default()
    }

    /// Adds bell `bell` of `dom`.
    pub fn add(&mut self, dom: &Arc<Domain>, bell: u64) {
        match self.groups.iter_mut().find(|g| Arc::ptr_eq(&g.0, dom)) {
            Some(g) => {
                if !g.1.contains(&bell) {
                    g.1.push(bell);
                }
            }
            None => self.groups.push((dom.clone(), vec![bell])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether the bells belong to one domain (a futex sleep is possible).
    pub fn one_domain(&self) -> bool {
        self.groups.len() == 1
    }

    /// Arms the calling thread on every bell, to sleep as `how` says
    /// ([`Sleep::Futex`] only for a set of one domain). The caller then
    /// re-checks the peers and sleeps only if none is ready and no ring
    /// came ([`ArmedSet::rung`]). First releases whatever an earlier wait
    /// of this thread left armed. None: a waiter slot or a wake socket
    /// could not be had; the caller then sleeps in short slices instead.
    pub fn arm(&self, how: Sleep) -> Option<ArmedSet> {
        let _ = THREAD.try_with(|t| release_stale(&mut t.borrow_mut()));
        let mut armed = Vec::with_capacity(self.groups.len());
        for (dom, bells) in &self.groups {
            armed.push(arm(dom, bells, how)?);
        }
        // Published before the caller looks at the peers (txn rule 8).
        std::sync::atomic::fence(Ordering::SeqCst);
        Some(ArmedSet { armed })
    }
}

/// A thread armed on the bells of a [`WaitSet`]; dropping it disarms.
pub struct ArmedSet {
    armed: Vec<Armed>,
}

impl ArmedSet {
    /// Whether a ring came since the thread armed.
    pub fn rung(&self) -> bool {
        self.armed.iter().any(Armed::rung)
    }

    /// Sleeps on the futex (armed with [`Sleep::Futex`], one domain).
    pub fn futex_sleep(&self, timeout: Option<&libc::timespec>) {
        if let [a] = &self.armed[..] {
            a.futex_sleep(timeout);
        }
    }

    /// The wake sockets to poll for POLLIN (armed with [`Sleep::Socket`]).
    pub fn wake_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.armed.iter().map(|a| a.wake_fd)
    }

    /// Empties the wake sockets (a sleep found one readable: a token of
    /// this ring, or a late one of an earlier wait).
    pub fn drain_wake_sockets(&self) {
        for a in &self.armed {
            if a.wake_fd >= 0 {
                a.dom.drain_wake_socket(a.wake_fd);
            }
        }
    }
}

/// Arms the calling thread on `bells` of `dom` (see [`WaitSet::arm`]).
fn arm(dom: &Arc<Domain>, bells: &[u64], how: Sleep) -> Option<Armed> {
    THREAD
        .try_with(|t| {
            let mut t = t.borrow_mut();
            let i = own_slot(&mut t, dom)?;
            let slot = t.owned[i].slot;
            let wake_fd = match how {
                Sleep::Futex => -1,
                Sleep::Socket => {
                    if !t.owned[i].wake.is_some_and(|(fd, id)| dom.wake_socket_valid(fd, id)) {
                        t.owned[i].wake = Some(dom.open_wake_socket().ok()?);
                    }
                    t.owned[i].wake.map_or(-1, |w| w.0)
                }
            };
            let rec = slot_rec(dom, slot);
            match how {
                Sleep::Futex => rec.how.store(HOW_FUTEX),
                Sleep::Socket => {
                    rec.wake_id.store(t.owned[i].wake.map_or(0, |w| w.1));
                    rec.how.store(HOW_SOCKET);
                }
            }
            let (w, bit) = (slot as usize / 64, 1u64 << (slot % 64));
            for &b in bells {
                let bell = bell_rec(dom, b);
                if bell.sleep_summary.load() & 1 << w == 0 {
                    bell.sleep_summary.fetch_or(1 << w);
                }
                bell.sleepers[w].fetch_or(bit);
            }
            let word0 = rec.word.load();
            t.next_id += 1;
            let id = t.next_id;
            t.active.push(Active { id, dom: dom.clone(), slot, bells: bells.to_vec() });
            Some(Armed { id, dom: dom.clone(), slot, word0, wake_fd })
        })
        .ok()
        .flatten()
}

// --------------------------------------------------------- listeners

/// A waiter that is an object rather than a thread: it owns a waiter slot
/// and a wake socket of its own, and is rung through that socket, which an
/// event loop (an async runtime's reactor) can watch like any other fd.
/// Tasks that wait on one peer from any thread use it in place of the
/// thread-bound [`WaitSet::arm`]:
///
/// 1. [`Listener::arm`] publishes the slot in the peer's sleeper map;
/// 2. the task looks at the peer again (a RECV, or its readiness) and
///    waits for [`Listener::fd`] to become readable only if nothing is
///    there — a sender that commits after the publication rings the
///    socket, so no wake-up is lost (txn rule 9);
/// 3. once awake and the peer found empty, [`Listener::drain`] empties the
///    socket before the task looks again.
///
/// Several tasks may be armed at once; the slot stays published while any
/// of their guards lives. It belongs to the process that made it: in a
/// forked child it does nothing (the fork handler closed its socket there)
/// and its drop leaves the parent's slot alone.
pub struct Listener {
    dom: Arc<Domain>,
    bell: u64,
    slot: u32,
    fd: i32,
    id: u64,
    pid: u32,
    /// How many guards are alive (the slot is published while non-zero).
    armed: std::sync::Mutex<u32>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listener(slot {}, fd {})", self.slot, self.fd)
    }
}

impl Listener {
    /// Takes a slot and makes a wake socket for bell `bell` of `dom`.
    /// ENOSPC if every waiter slot of the domain is taken.
    pub(crate) fn new(dom: &Arc<Domain>, bell: u64) -> crate::errno::Result<Listener> {
        let slot = take_slot(dom, creds::current().tid).ok_or(crate::errno::Errno(libc::ENOSPC))?;
        let (fd, id) = match dom.open_wake_socket() {
            Ok(w) => w,
            Err(e) => {
                free_slot(dom, slot);
                return Err(e);
            }
        };
        let rec = slot_rec(dom, slot);
        rec.wake_id.store(id);
        rec.how.store(HOW_SOCKET);
        Ok(Listener { dom: dom.clone(), bell, slot, fd, id, pid: creds::pid(), armed: std::sync::Mutex::new(0) })
    }

    /// The wake socket: readable after a ring (non-blocking; drain it with
    /// [`Listener::drain`], never read it otherwise).
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// A new descriptor of the wake socket (close-on-exec), the caller's
    /// to own and close: for a reactor that must own what it watches.
    pub fn dup_fd(&self) -> crate::errno::Result<i32> {
        sys::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0).map(|fd| fd as i32)
    }

    fn mine(&self) -> bool {
        self.pid == creds::pid()
    }

    fn set_published(&self, on: bool) {
        let (w, bit) = (self.slot as usize / 64, 1u64 << (self.slot % 64));
        let bell = bell_rec(&self.dom, self.bell);
        if on {
            if bell.sleep_summary.load() & 1 << w == 0 {
                bell.sleep_summary.fetch_or(1 << w);
            }
            bell.sleepers[w].fetch_or(bit);
        } else {
            bell.sleepers[w].fetch_and(!bit);
        }
    }

    /// Publishes the slot in the peer's sleeper map (once for all live
    /// guards) and orders that before whatever the caller reads next. The
    /// slot is withdrawn when the last guard is dropped.
    pub fn arm(&self) -> ListenerGuard<'_> {
        if self.mine() {
            let mut n = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            if *n == 0 {
                self.set_published(true);
            }
            *n += 1;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        ListenerGuard { l: self }
    }

    /// Empties the wake socket.
    pub fn drain(&self) {
        if self.mine() {
            self.dom.drain_wake_socket(self.fd);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if !self.mine() {
            return;
        }
        self.set_published(false);
        self.dom.close_wake_socket(self.fd, self.id);
        free_slot(&self.dom, self.slot);
    }
}

/// A task armed on a [`Listener`]; dropping it withdraws the slot once no
/// other guard is alive.
#[must_use = "the listener is armed only while the guard lives"]
pub struct ListenerGuard<'l> {
    l: &'l Listener,
}

impl Drop for ListenerGuard<'_> {
    fn drop(&mut self) {
        if !self.l.mine() {
            return;
        }
        let mut n = self.l.armed.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.l.set_published(false);
        }
    }
}

/// Rings every thread armed on `bell`. The caller has made its change
/// visible with a sequentially consistent write first (the bell's `seq`
/// bump). Returns false if a sleeper could not be reached (no descriptor
/// for the ring): the ring stays owed and the wake-up tick makes it good.
pub(crate) fn ring_sleepers(dom: &Domain, bell: u64) -> bool {
    let rec = bell_rec(dom, bell);
    let mut summary = rec.sleep_summary.load_seqcst();
    let mut ok = true;
    while summary != 0 {
        let w = summary.trailing_zeros() as usize;
        summary &= summary - 1;
        let mut m = rec.sleepers[w].load_seqcst();
        while m != 0 {
            let s = (w * 64) as u32 + m.trailing_zeros();
            m &= m - 1;
            ok &= ring_slot(dom, s);
        }
    }
    ok
}

/// Whether any thread is armed on `bell` (for tests and statistics).
pub(crate) fn has_sleepers(dom: &Domain, bell: u64) -> bool {
    let rec = bell_rec(dom, bell);
    rec.sleepers.iter().any(|w| w.load() != 0)
}

fn ring_slot(dom: &Domain, s: u32) -> bool {
    let rec = slot_rec(dom, s);
    rec.word.fetch_add(1);
    match rec.how.load() {
        HOW_FUTEX => {
            sys::futex_wake(rec.word.as_atomic(), 1);
            true
        }
        HOW_SOCKET => dom.ring_wake_socket(rec.wake_id.load()),
        _ => true,
    }
}

/// Frees the slots whose owner is gone (its process exited, or exec'd
/// into a new image of the same pid that has attached since), clearing
/// their bits everywhere. Returns how many.
pub(crate) fn collect_dead(dom: &Domain) -> usize {
    let me = owner_word();
    let mut n = 0;
    for (w, used) in hdr(dom).slots_used.iter().enumerate() {
        let mut m = used.load();
        while m != 0 {
            let s = (w * 64) as u32 + m.trailing_zeros();
            m &= m - 1;
            let owner = slot_rec(dom, s).owner.load();
            let pid = (owner >> 32) as u32;
            let dead = if owner == 0 {
                false
            } else if pid == creds::pid() {
                owner != me
            } else {
                !sys::process_exists(pid)
            };
            if dead && slot_rec(dom, s).owner.compare_exchange(owner, 0) {
                unarm_everywhere(dom, s);
                hdr(dom).slots_used[w].fetch_and(!(1u64 << (s % 64)));
                n += 1;
            }
        }
    }
    n
}

/// Slots in use (tests and statistics).
pub(crate) fn slots_in_use(dom: &Domain) -> u32 {
    hdr(dom).slots_used.iter().map(|w| w.load().count_ones()).sum()
}

/// Drops a freed bell's sleeper bits (a new peer starts with none; a
/// waiter still armed on it clears its bit again, harmlessly).
pub(crate) fn reset_bell_sleepers(dom: &Domain, bell: u64) {
    let rec = bell_rec(dom, bell);
    for w in &rec.sleepers {
        w.store(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_words_carry_the_pid() {
        assert_eq!((super::owner_word() >> 32) as u32, crate::sys::getpid());
        assert_ne!(super::incarnation(), 0);
    }
}
