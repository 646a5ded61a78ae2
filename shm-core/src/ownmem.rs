//! The memory the bus maps for itself: each domain's segment, the
//! read-write mappings of the pools it writes, and the watcher thread's
//! stack.
//!
//! None of it is the caller's memory. An ioctl argument that points into
//! it is EFAULT, for writing (it would corrupt the bus) and for reading
//! alike (it would copy out the bus's internal state or another peer's
//! messages). The check runs on every copy, so it takes no lock and no
//! system call: the ranges are kept sorted in a fixed table that readers
//! search under a sequence lock, and that changes only when a mapping is
//! made or dropped. A pool mapping the application made itself (`mmap` of
//! its peer fd) is its own memory, read-only, and not listed here.

use crate::sync::LocalMutex;
use core::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The most ranges the table holds: more mappings than a process may have
/// (`vm.max_map_count` is 65530 by default).
const MAX: usize = 1 << 16;

/// Odd while a writer changes the table.
static SEQ: AtomicU64 = AtomicU64::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static STARTS: [AtomicUsize; MAX] = [const { AtomicUsize::new(0) }; MAX];
static ENDS: [AtomicUsize; MAX] = [const { AtomicUsize::new(0) }; MAX];
/// Where the lowest range starts and the highest ends (0 and 0 when there
/// is none): most arguments lie wholly outside, on the stack above the
/// mappings or in the heap below them, and need no search.
static LOWEST: AtomicUsize = AtomicUsize::new(0);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);

/// The writers' copy of the ranges, sorted by start; its lock serialises
/// writers and is taken around `fork` (`crate::forks`), so that a child
/// never inherits a table half written.
fn writer() -> &'static LocalMutex<Vec<(usize, usize)>> {
    static W: OnceLock<LocalMutex<Vec<(usize, usize)>>> = OnceLock::new();
    W.get_or_init(|| LocalMutex::new(Vec::new()))
}

/// Records `[start, start + len)` as the bus's own memory. False if the
/// table is full (the caller gives the mapping up).
pub(crate) fn add(start: usize, len: usize) -> bool {
    let mut w = writer().lock();
    if w.len() >= MAX {
        return false;
    }
    let i = w.partition_point(|r| r.0 < start);
    w.insert(i, (start, start.saturating_add(len)));
    publish(&w, i);
    true
}

/// Forgets the range that starts at `start`.
pub(crate) fn remove(start: usize) {
    let mut w = writer().lock();
    if let Some(i) = w.iter().position(|r| r.0 == start) {
        w.remove(i);
        publish(&w, i);
    }
}

/// Copies `ranges` from index `from` on into the readers' table.
fn publish(ranges: &[(usize, usize)], from: usize) {
    SEQ.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
    for (i, r) in ranges.iter().enumerate().skip(from) {
        STARTS[i].store(r.0, Ordering::Relaxed);
        ENDS[i].store(r.1, Ordering::Relaxed);
    }
    LEN.store(ranges.len(), Ordering::Relaxed);
    LOWEST.store(ranges.first().map_or(0, |r| r.0), Ordering::Relaxed);
    // Sorted and not overlapping: the last range ends highest.
    HIGHEST.store(ranges.last().map_or(0, |r| r.1), Ordering::Relaxed);
    SEQ.fetch_add(1, Ordering::Release);
}

/// Whether `[addr, addr + len)` touches memory the bus mapped for itself.
/// A reader that keeps finding the table being changed (it interrupted the
/// writer, in a signal handler) gives up and answers yes: EFAULT is the
/// safe answer.
pub fn is_own_memory(addr: u64, len: u64) -> bool {
    let start = addr as usize;
    let end = addr.saturating_add(len.max(1)) as usize;
    for _ in 0..1_000_000 {
        let seq = SEQ.load(Ordering::Acquire);
        if seq & 1 == 0 {
            let outside = end <= LOWEST.load(Ordering::Relaxed) || start >= HIGHEST.load(Ordering::Relaxed);
            let hit = !outside && search(start, end);
            fence(Ordering::Acquire);
            if SEQ.load(Ordering::Relaxed) == seq {
                return hit;
            }
        }
        core::hint::spin_loop();
    }
    true
}

/// Whether a published range overlaps `[start, end)` (read under the
/// sequence lock). The ranges do not overlap: only the last one that
/// starts before `end` can reach into the argument.
fn search(start: usize, end: usize) -> bool {
    let n = LEN.load(Ordering::Relaxed).min(MAX);
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if STARTS[mid].load(Ordering::Relaxed) < end {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo > 0 && ENDS[lo - 1].load(Ordering::Relaxed) > start
}

/// Fork prepare handler: no writer may be half way when the process is
/// copied.
pub(crate) fn lock_for_fork() {
    writer().raw_lock();
}

/// Fork parent/child handler.
pub(crate) fn unlock_after_fork(child: bool) {
    if child {
        writer().reinit_in_child();
    } else {
        writer().raw_unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_any_overlap() {
        // Addresses inside a buffer of this test's own: no mapping another
        // test registers at the same time can overlap them (a fixed
        // address could meet the many pools and segments other tests map).
        let buf = vec![0u8; 0x40000];
        let base = (buf.as_ptr() as usize + 0x1fff) & !0xfff;
        assert!(add(base + 0x10000, 0x1000));
        assert!(add(base, 0x1000));
        assert!(add(base + 0x20000, 0x3000));
        let own = |a: usize, l: u64| is_own_memory(a as u64, l);
        assert!(own(base, 1));
        assert!(own(base + 0xfff, 1));
        assert!(!own(base + 0x1000, 0x1000));
        assert!(own(base + 0x1000, 0xf001));
        assert!(own(base + 0x22000, 8));
        assert!(!own(base + 0x23000, 8));
        assert!(own(base - 8, 16));
        assert!(!own(base - 8, 8));
        assert!(own(base - 8, 0x24000), "a range around every mapping");
        remove(base + 0x10000);
        assert!(!own(base + 0x10000, 0x1000));
        assert!(own(base + 0x20000, 1));
        remove(base);
        remove(base + 0x20000);
        assert!(!own(base, 0x30000));
        drop(buf);
    }
}
