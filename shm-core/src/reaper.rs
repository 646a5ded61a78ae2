//! Cleaning up after peers whose last fd is gone, with no daemon
//! (docs/design.md, fixed decision 5).
//!
//! A peer's socket disappears from the kernel when its last fd is closed
//! anywhere, including by the death of a process. Whoever notices tears the
//! peer down: the process that closed an fd checks right after the close,
//! and every process attached to a domain runs a small watcher thread that,
//! a few times a second, probes the peers of the domain if no other
//! process has done so recently (a lease in the segment header), so that
//! holders blocked in `poll` learn of a crashed peer's node destruction
//! within a bounded time. The same scan gives back the pool pages the
//! message path leaves resident (`pool::sweep_idle`), now and then removes
//! files killed processes left in the domain (`sweep_files`), and more
//! rarely the memory of domains nobody uses any more (`memory`). A shorter
//! lease runs the wake-up tick (`doorbell::tick`): rings owed by dead or
//! stopped senders, tokens for waiters the shim cannot see, waiter slots
//! of dead processes.

use crate::doorbell;
use crate::errno::Errno;
use crate::domain::{Domain, PeerFile};
use crate::layout::*;
use crate::peer;
use crate::section::Section;
use crate::shm::P;
use crate::store::Store;
use crate::sys;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How often the domain is scanned (by one process).
pub const SCAN_PERIOD_MS: u64 = 200;

/// The directory is swept for stale files every this many scans (made
/// by this process): such files are rare, and listing a domain of many
/// peers is not free.
const FILE_SWEEP_EVERY: u64 = 5;
/// Memory left by killed processes next to an attached domain's is looked
/// for every this many scans (made by this process).
const ORPHAN_SWEEP_EVERY: u64 = 50;
static SCANS: AtomicU64 = AtomicU64::new(0);

/// Waiter slots of dead processes are looked for every this many ticks.
const SLOT_COLLECT_EVERY: u64 = 5;

static WATCHER: AtomicBool = AtomicBool::new(false);
static FORK_GEN: AtomicU64 = AtomicU64::new(0);

/// In a forked child (after the process-local locks are usable again):
/// the parent's watcher thread did not come along, so start one if the
/// child inherited domains. The child may go straight into poll() on an
/// inherited peer fd and make no bus1 call that would start it later.
pub(crate) fn after_fork() {
    WATCHER.store(false, Ordering::Release);
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
    if !Domain::attached().is_empty() {
        ensure_watcher();
    }
}

/// A domain was attached by this process.
pub(crate) fn attached(_dom: &Arc<Domain>) {
    ensure_watcher();
}

/// Whether this process runs a watcher thread (so that a process can tell
/// its own threads from the watcher's).
pub fn watcher_running() -> bool {
    WATCHER.load(Ordering::Acquire)
}

/// The watcher thread's name.
const WATCHER_NAME: &str = "bus1-watch";

/// Whether the calling thread is the process's only thread besides
/// watchers (what decides, at exit, whether peers and domains may be left
/// now or other threads may still use them). Watchers are counted by name,
/// so that the watcher of another copy of this library in the process (the
/// preload shim's, next to a program that links the engine) counts as one
/// too, and at least this copy's own if it runs (a thread takes its name
/// only once it has started).
pub fn only_thread_left() -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
    let (mut total, mut named) = (0, 0);
    for t in tasks.filter_map(|t| t.ok()) {
        total += 1;
        if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == WATCHER_NAME) {
            named += 1;
        }
    }
    total <= 1 + named.max(watcher_running() as usize)
}

/// Starts this process's watcher thread if it is not running.
pub fn ensure_watcher() {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if WATCHER.load(Ordering::Acquire) || *DISABLED.get_or_init(|| std::env::var_os("BUS1_NO_WATCHER").is_some()) {
        return;
    }
    if WATCHER.swap(true, Ordering::AcqRel) {
        return;
    }
    let gen = FORK_GEN.load(Ordering::Acquire);
    // The thread must not take signals meant for the application: block
    // them all around the spawn (the new thread inherits the mask).
    let r = sys::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name(WATCHER_NAME.into())
            .stack_size(64 << 10)
            .spawn(move || watch(gen))
    });
    if r.is_err() {
        WATCHER.store(false, Ordering::Release);
    }
}

/// Claims a lease of `period_ms` in `lease` (one process per period does
/// the work it guards).
fn claim(lease: &crate::shm::Atomic64, period_ms: u64) -> bool {
    let now = sys::now_ns();
    let last = lease.load();
    now.saturating_sub(last) >= period_ms * 1_000_000 && lease.compare_exchange(last, now)
}

fn watch(gen: u64) {
    // The thread's stack is the bus's, not the application's memory.
    if let Some((low, len)) = sys::thread_stack() {
        crate::ownmem::add(low, len);
    }
    let mut ticks = 0u64;
    loop {
        sys::sleep_ms(doorbell::TICK_MS);
        if FORK_GEN.load(Ordering::Acquire) != gen {
            return;
        }
        ticks += 1;
        for d in Domain::attached() {
            let hdr: &Header = d.seg.at0();
            // A damaged domain (see `fault`) ends its part of this round,
            // not the watcher; it stops doing anything once marked.
            if d.is_damaged() {
                continue;
            }
            crate::fault::contain_callback(|| {
                if claim(&hdr.bell_lease, doorbell::TICK_MS) {
                    doorbell::tick(&d);
                    if ticks % SLOT_COLLECT_EVERY == 0 {
                        crate::waiters::collect_dead(&d);
                    }
                }
                if claim(&hdr.scan_lease, SCAN_PERIOD_MS) {
                    scan(&d);
                    sweep_pools(&d, Sweep::Idle);
                    let n = SCANS.fetch_add(1, Ordering::Relaxed);
                    if n % FILE_SWEEP_EVERY == 0 {
                        sweep_files(&d);
                    }
                    if n % ORPHAN_SWEEP_EVERY == ORPHAN_SWEEP_EVERY - 1 {
                        d.sweep_orphans();
                    }
                }
            });
        }
    }
}

/// Probes every peer of `dom` and tears down those whose socket is gone.
/// Returns how many were torn down.
pub fn scan(dom: &Domain) -> usize {
    // Data-path transactions whose sender died, and what sections left
    // for transactions to finish.
    crate::slot::reap_dead(dom);
    tidy(dom);
    let Ok(tx) = dom.lock() else { return 0 };
    let serials: Vec<u64> = peer::all(&tx).iter().filter(|p| tx.rec(**p).magic.get() == PEER_MAGIC).map(|p| tx.rec(*p).serial.get()).collect();
    tx.abort();
    let mut n = 0;
    for s in serials {
        if !dom.peer_socket_alive(s) && reap(dom, s) {
            n += 1;
        }
    }
    // Pools of peers that are gone: drop this process's mappings.
    let mapped = dom.mapped_pools();
    if !mapped.is_empty() {
        if let Ok(tx) = dom.lock() {
            let gone: Vec<u64> = mapped.into_iter().filter(|s| peer::lookup_serial(&tx, *s).is_none()).collect();
            for s in gone {
                dom.forget_pool(s);
            }
            tx.abort();
        }
    }
    n
}

/// Finishes what sections leave to transactions: handles and nodes
/// nothing refers to any more (`object::collect`), and dead peers whose
/// last in-flight records are gone. One short transaction per peer, so
/// that a domain of many peers is not held up (each transaction keeps the
/// locks of the peers it touches).
pub fn tidy(dom: &Domain) {
    let Ok(tx) = dom.lock() else { return };
    let todo: Vec<(P<PeerRec>, bool)> = peer::all(&tx)
        .into_iter()
        .filter_map(|p| {
            let pr = tx.rec(p);
            let live = pr.magic.get() == PEER_MAGIC;
            (pr.state.get() == PEER_DEAD || (live && pr.gc_pending.load_racy() != 0)).then_some((p, live))
        })
        .collect();
    tx.abort();
    for (p, live) in todo {
        // A peer whose lock a stopped process holds is left for a later
        // round (EAGAIN), rather than waited for under the domain lock.
        let r = crate::fault::contain(|| {
            let tx = dom.lock()?;
            tx.never_wait();
            if live {
                crate::object::collect(&tx, p);
            } else {
                peer::collect_dead_one(&tx, p);
            }
            let _ = tx.commit();
            Ok(())
        });
        if r.is_err_and(|e| e != Errno::EAGAIN) {
            return;
        }
    }
}

/// Which pools [`sweep_pools`] gives pages back from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Every pool.
    All,
    /// The periodic scan's rule: pools to which no message came since the
    /// previous scan. A pool in use would only fault its free pages back
    /// in (its first MiB on every message after each scan); once it stays
    /// as it is for a scan period, the next scan gives them back.
    Idle,
}

/// Gives back the pages of the pools of `dom` (`which`) that hold no live
/// slice. Returns the number of bytes punched.
///
/// Each pool is swept under its own peer's lock alone: punching costs
/// system calls, and a domain of a thousand pools that just went idle must
/// not stall every other call for the whole sweep.
pub fn sweep_pools(dom: &Domain, which: Sweep) -> u64 {
    let Ok(tx) = dom.lock() else { return 0 };
    let peers: Vec<(P<PeerRec>, u64)> = peer::all(&tx)
        .into_iter()
        .filter(|&p| tx.rec(p).magic.get() == PEER_MAGIC)
        .map(|p| (p, tx.rec(p).serial.get()))
        .collect();
    tx.abort();
    let mut punched = 0;
    for (p, serial) in peers {
        let Ok(s) = Section::lock(dom, p) else { break };
        let pr = s.rec(p);
        if pr.magic.get() != PEER_MAGIC || pr.serial.get() != serial {
            continue;
        }
        let busy = crate::pool::busy_since_last_look(&s, p);
        if (which == Sweep::All || !busy) && crate::pool::has_unswept(&s, p) {
            punched += crate::pool::sweep_idle(&s, p);
        }
    }
    punched
}

/// Removes the per-peer files that nothing will remove any more, returning
/// how many: those of an opener killed before its peer's record was
/// committed, and vault generations whose removal after a commit was cut
/// short by a kill (txn rule 4; teardown only knows the current two).
///
/// Under the domain lock no commit is half done, so a file is stale when
/// nothing holds its socket: a vault nobody holds in flight, or the socket
/// and pool of a serial that was handed out (`next_serial`) but has no
/// record. An opener binds its socket before it makes the pool file
/// (`peer::create`), so a pool file whose opener is still at work always
/// comes with a live socket.
pub fn sweep_files(dom: &Domain) -> usize {
    let Ok(files) = dom.peer_files() else { return 0 };
    if files.is_empty() {
        return 0;
    }
    let Ok(tx) = dom.lock() else { return 0 };
    let next_serial = tx.hdr().next_serial.get();
    let mut removed = 0;
    // `peer.N` and `pool.N` share one verdict: probe the socket once.
    let mut verdicts = std::collections::HashMap::new();
    for (name, file) in files {
        let stale = match file {
            PeerFile::Socket(s) | PeerFile::Pool(s) => *verdicts.entry(s).or_insert_with(|| {
                s < next_serial && peer::lookup_serial(&tx, s).is_none() && !dom.peer_socket_alive(s)
            }),
            PeerFile::Vault(s, gen) => {
                let current = peer::lookup_serial(&tx, s).is_some_and(|p| {
                    let p = tx.rec(p);
                    p.bell_vault.get() == 1 && p.vault_gen.get() == gen
                });
                !current && !dom.vault_alive(s, gen)
            }
            PeerFile::Wake(id) => !dom.wake_alive(id),
        };
        if stale && dom.remove_entry(&name).is_ok() {
            removed += 1;
        }
    }
    tx.abort();
    removed
}

/// Tears down peer `serial` if its socket is really gone.
pub fn reap(dom: &Domain, serial: u64) -> bool {
    let Ok(tx) = dom.lock() else { return false };
    let Some(p) = peer::lookup_serial(&tx, serial) else {
        tx.abort();
        return false;
    };
    // Re-check under the lock: a concurrent reaper may have won.
    if dom.peer_socket_alive(serial) {
        tx.abort();
        return false;
    }
    let r = peer::free_dead(&tx, p);
    tx.finish(r).is_ok()
}
