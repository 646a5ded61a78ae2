//! Which descriptors of this process are bus1 peers.
//!
//! Filled when the shim opens a peer, copied by dup/fcntl, emptied by
//! close, and filled lazily for descriptors the process got otherwise
//! (fork, exec, SCM_RIGHTS) the first time one is used with a bus1 ioctl,
//! mmap or as a transfer destination. A counter lets every interposer skip
//! the lookup entirely in processes without peers.

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
const CHUNKS: usize = 1 << 10;
type Chunk = [AtomicU64; BITS_PER_CHUNK / 64];
static MARKS: [OnceLock<Box<Chunk>>; CHUNKS] = [const { OnceLock::new() }; CHUNKS];

/// Sets or clears the mark of `fd`; called with the table locked.
fn mark(fd: usize, on: bool) {
    let Some(slot) = MARKS.get(fd / BITS_PER_CHUNK) else { return };
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

/// Whether `fd` is a peer descriptor this process knows, without locking.
#[inline]
pub fn is_peer_fd(fd: i32) -> bool {
    if fd < 0 || !any() {
        return false;
    }
    let fd = fd as usize;
    let Some(chunk) = MARKS.get(fd / BITS_PER_CHUNK).and_then(OnceLock::get) else { return false };
    let word = &chunk[(fd % BITS_PER_CHUNK) / 64];
    word.load(Ordering::Acquire) & (1u64 << (fd % 64)) != 0
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

pub fn get(fd: i32) -> Option<Arc<FdInfo>> {
    if fd < 0 || !any() {
        return None;
    }
    table().lock().get(fd as usize).cloned().flatten()
}

pub fn set(fd: i32, info: Arc<FdInfo>) {
    if fd < 0 {
        return;
    }
    let mut t = table().lock();
    if t.len() <= fd as usize {
        t.resize(fd as usize + 1, None);
    }
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
