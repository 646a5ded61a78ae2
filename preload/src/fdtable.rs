//! Which descriptors of this process are bus1 peers.
//!
//! Filled when the shim opens a peer, copied by dup/fcntl, emptied by
//! close, and filled lazily for descriptors the process got otherwise
//! (fork, exec, SCM_RIGHTS) the first time one is used with a bus1 ioctl,
//! mmap, a wait or as a transfer destination. A counter lets every
//! interposer skip the lookup entirely in processes without peers, and a
//! second lock-free bitmap remembers the descriptors a wait has found not
//! to be peers, so that each is looked at once until it is closed.

use shm_core::{LocalMutex, Peer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

pub struct FdInfo {
    pub peer: Peer,
    /// O_ACCMODE of the open that created the peer.
    pub access: i32,
}

static COUNT: AtomicUsize = AtomicUsize::new(0);

/// A lock-free mirror of which slots are occupied, for interposers that
/// may run inside signal handlers (read/write on a self-pipe) and must not
/// take the table's lock. Chunks are allocated once, the first time a
/// descriptor in their range is marked, and never freed. Reading a slot
/// never blocks (`OnceLock::get` is an acquire load), and since marks are
/// only set with the table locked, filling one never waits either.
const BITS_PER_CHUNK: usize = 1 << 16;
pub(crate) const CHUNKS: usize = 1 << 10;
type Chunk = [AtomicU64; BITS_PER_CHUNK / 64];
pub(crate) type Marks = [OnceLock<Box<Chunk>>; CHUNKS];
static MARKS: Marks = [const { OnceLock::new() }; CHUNKS];
/// Descriptors found not to be peers (lock-free reads; written with the
/// table locked).
static NOT_PEERS: Marks = [const { OnceLock::new() }; CHUNKS];

/// Sets or clears the mark of `fd`; called with the table locked.
fn mark(fd: usize, on: bool) {
    set_bit(&MARKS, fd, on);
    if on {
        set_bit(&NOT_PEERS, fd, false);
    }
}

pub(crate) fn set_bit(marks: &Marks, fd: usize, on: bool) {
    let Some(slot) = marks.get(fd / BITS_PER_CHUNK) else { return };
    let chunk = if on {
        slot.get_or_init(|| Box::new([const { AtomicU64::new(0) }; BITS_PER_CHUNK / 64]))
    } else {
        let Some(chunk) = slot.get() else { return };
        chunk
    };
    let word = &chunk[(fd % BITS_PER_CHUNK) / 64];
    let bit = 1u64 << (fd % 64);
    if on {
        word.fetch_or(bit, Ordering::Release);
    } else {
        word.fetch_and(!bit, Ordering::Release);
    }
}

pub(crate) fn bit(marks: &Marks, fd: i32) -> bool {
    if fd < 0 {
        return false;
    }
    let fd = fd as usize;
    let Some(chunk) = marks.get(fd / BITS_PER_CHUNK).and_then(OnceLock::get) else { return false };
    let word = &chunk[(fd % BITS_PER_CHUNK) / 64];
    word.load(Ordering::Acquire) & (1u64 << (fd % 64)) != 0
}

/// Whether `fd` is a peer descriptor this process knows, without locking.
#[inline]
pub fn is_peer_fd(fd: i32) -> bool {
    any() && bit(&MARKS, fd)
}

/// Whether `fd` was found not to be a peer since it was last closed.
#[inline]
pub fn known_not_peer(fd: i32) -> bool {
    bit(&NOT_PEERS, fd)
}

/// Forgets what was found out about `fd` (it was closed or replaced).
pub fn forget_checked(fd: i32) {
    if fd >= 0 && known_not_peer(fd) {
        let _t = table().lock();
        set_bit(&NOT_PEERS, fd as usize, false);
    }
}

/// Forgets what was found out about the descriptors `lo..=hi`.
pub fn forget_checked_range(lo: u32, hi: u32) {
    let _t = table().lock();
    for (c, slot) in NOT_PEERS.iter().enumerate() {
        let Some(chunk) = slot.get() else { continue };
        let base = (c * BITS_PER_CHUNK) as u64;
        if base > hi as u64 || base + BITS_PER_CHUNK as u64 <= lo as u64 {
            continue;
        }
        for (w, word) in chunk.iter().enumerate() {
            let first = base + w as u64 * 64;
            if word.load(Ordering::Relaxed) == 0 || first > hi as u64 || first + 64 <= lo as u64 {
                continue;
            }
            let mut keep = 0u64;
            for b in 0..64 {
                let fd = first + b;
                if fd < lo as u64 || fd > hi as u64 {
                    keep |= 1 << b;
                }
            }
            word.fetch_and(keep, Ordering::Release);
        }
    }
}

/// The peer behind `fd` for a wait or an epoll set: known peers at once,
/// other descriptors looked at once (a socket's address tells) and
/// remembered as not being peers until they are closed.
pub fn classify(fd: i32) -> Option<Arc<FdInfo>> {
    if fd < 0 || known_not_peer(fd) {
        return None;
    }
    if let Some(e) = get(fd) {
        return Some(e);
    }
    match Peer::identify(fd) {
        Ok(Some(peer)) => {
            let access = peer.access().unwrap_or(libc::O_RDWR);
            let info = Arc::new(FdInfo { peer, access });
            set(fd, info.clone());
            Some(info)
        }
        Ok(None) => {
            let _t = table().lock();
            set_bit(&NOT_PEERS, fd as usize, true);
            None
        }
        // Not open (or not inspectable now): nothing to remember.
        Err(_) => None,
    }
}

fn table() -> &'static LocalMutex<Vec<Option<Arc<FdInfo>>>> {
    static T: OnceLock<LocalMutex<Vec<Option<Arc<FdInfo>>>>> = OnceLock::new();
    let t = T.get_or_init(|| LocalMutex::new(Vec::new()));
    static FORK: Once = Once::new();
    FORK.call_once(|| {
        // Called by the C library: nothing may unwind out of them.
        extern "C" fn prepare() {
            shm_core::contain_callback(|| table().raw_lock());
        }
        extern "C" fn parent() {
            shm_core::contain_callback(|| table().raw_unlock());
        }
        extern "C" fn child() {
            shm_core::contain_callback(|| table().reinit_in_child());
        }
        shm_core::sys::atfork(prepare, parent, child);
    });
    t
}

/// Whether this process knows of any peer fd at all.
#[inline]
pub fn any() -> bool {
    COUNT.load(Ordering::Relaxed) != 0
}

/// Bumped (with the table locked) by every change of the table: a
/// thread's cached lookup is good while it has not moved.
static GEN: AtomicU64 = AtomicU64::new(0);

/// Entries of a thread's lookup cache, chosen by the fd's low bits: a
/// thread that alternates between a few peer fds (a sender and a
/// receiver, a request and a reply peer) keeps hitting.
const CACHED_FDS: usize = 4;

/// One remembered lookup: (fd, generation, entry).
type CachedLookup = (i32, u64, Option<Arc<FdInfo>>);

thread_local! {
    /// The last lookups this thread made. Every ioctl looks its fd up, so
    /// the common case takes no lock.
    static LAST: std::cell::RefCell<[CachedLookup; CACHED_FDS]> =
        const { std::cell::RefCell::new([(-1, 0, None), (-1, 0, None), (-1, 0, None), (-1, 0, None)]) };
}

/// Runs `f` with the peer behind `fd` (found as [`lookup`] finds it when
/// `identify`, else as [`get`] does); None if `fd` is no peer fd. On a hit
/// in this thread's cache, `f` borrows the cached entry: an ioctl then
/// moves no reference count, two atomic operations on a line every
/// thread using the fd shares. (A call made meanwhile on this thread,
/// from a signal handler, finds the cache borrowed and does not update
/// it; the entry stays alive while borrowed.)
pub fn with_peer<R>(fd: i32, identify: bool, f: impl FnOnce(&FdInfo) -> R) -> Option<R> {
    let mut f = Some(f);
    if fd >= 0 && any() {
        let hit = cached(fd, GEN.load(Ordering::Acquire), |e| e.as_deref().and_then(|info| f.take().map(|f| f(info)))).flatten();
        if hit.is_some() {
            return hit;
        }
    }
    let info = if identify { lookup(fd) } else { get(fd) }?;
    f.take().map(|f| f(&info))
}

/// `f` of this thread's cached lookup of `fd` (made at generation `gen`),
/// borrowed; None if the cache holds no such lookup (or is borrowed
/// mutably, by a call this one interrupted).
fn cached<R>(fd: i32, gen: u64, f: impl FnOnce(&Option<Arc<FdInfo>>) -> R) -> Option<R> {
    LAST.try_with(|c| {
        let c = c.try_borrow().ok()?;
        let (cached_fd, cached_gen, e) = &c[fd as usize % CACHED_FDS];
        (*cached_fd == fd && *cached_gen == gen).then(|| f(e))
    })
    .ok()
    .flatten()
}

pub fn get(fd: i32) -> Option<Arc<FdInfo>> {
    if fd < 0 || !any() {
        return None;
    }
    let gen = GEN.load(Ordering::Acquire);
    let slot = fd as usize % CACHED_FDS;
    if let Some(hit) = cached(fd, gen, Option::clone) {
        return hit;
    }
    let e = table().lock().get(fd as usize).cloned().flatten();
    let _ = LAST.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c[slot] = (fd, gen, e.clone());
        }
    });
    e
}

pub fn set(fd: i32, info: Arc<FdInfo>) {
    if fd < 0 {
        return;
    }
    let mut t = table().lock();
    if t.len() <= fd as usize {
        t.resize(fd as usize + 1, None);
    }
    GEN.fetch_add(1, Ordering::AcqRel);
    if t[fd as usize].replace(info).is_none() {
        COUNT.fetch_add(1, Ordering::Relaxed);
        mark(fd as usize, true);
    }
}

pub fn take(fd: i32) -> Option<Arc<FdInfo>> {
    if fd < 0 || !any() {
        return None;
    }
    let mut t = table().lock();
    let e = t.get_mut(fd as usize).and_then(|e| e.take());
    if e.is_some() {
        GEN.fetch_add(1, Ordering::AcqRel);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        mark(fd as usize, false);
    }
    e
}

/// Removes every entry in `lo..=hi`, with its descriptor number.
pub fn take_range(lo: u32, hi: u32) -> Vec<(i32, Arc<FdInfo>)> {
    if !any() {
        return Vec::new();
    }
    let mut t = table().lock();
    let mut out = Vec::new();
    let end = (hi as usize).min(t.len().saturating_sub(1));
    for fd in lo as usize..=end {
        if fd >= t.len() {
            break;
        }
        if let Some(e) = t[fd].take() {
            GEN.fetch_add(1, Ordering::AcqRel);
            COUNT.fetch_sub(1, Ordering::Relaxed);
            mark(fd, false);
            out.push((fd as i32, e));
        }
    }
    out
}

/// Whether another descriptor of this process still refers to `peer`.
pub fn still_open(peer: &Peer) -> bool {
    table().lock().iter().flatten().any(|e| e.peer.serial() == peer.serial() && Arc::ptr_eq(e.peer.domain(), peer.domain()))
}

/// The peer behind `fd`, recognising it by its socket address if this
/// process has not seen it yet.
pub fn lookup(fd: i32) -> Option<Arc<FdInfo>> {
    if let Some(e) = get(fd) {
        return Some(e);
    }
    let peer = Peer::identify(fd).ok().flatten()?;
    let access = peer.access().unwrap_or(libc::O_RDWR);
    let info = Arc::new(FdInfo { peer, access });
    set(fd, info.clone());
    Some(info)
}
