//! What happens when the engine finds a domain inconsistent.
//!
//! The engine checks what it relies on as it goes: that offsets lie inside
//! the segment, that lists end, that table keys are unique, that counts
//! stay within what quotas allow. A check that fails is a panic, and a
//! panic never leaves the library:
//!
//! 1. Every entry point runs its work through [`contain`], which turns a
//!    panic into **EIO** for that call. (The preload shim wraps its libc
//!    entry points the same way, so nothing unwinds into C code.)
//! 2. A transaction that is open when the panic unwinds through it
//!    *quarantines* its domain (`Txn`'s `Drop`): it rolls back what its
//!    undo log allows, marks the segment header damaged (never undone) and
//!    releases the lock. A panic during the recovery of a dead holder's
//!    transaction ends the same way, so a poisoned undo log is replayed
//!    once, not by every later locker.
//! 3. Every later lock of a damaged domain, in any process, is refused
//!    with **ENOTRECOVERABLE**, without touching the segment further.
//! 4. Each process says so once per domain on stderr: the process that
//!    found the damage with what it found, every other one when it is
//!    first refused. With `BUS1_TRACE` the panic's own message and
//!    location are printed as well.
//! 5. A process that attaches a damaged domain which nobody uses any more
//!    (no process maps it, no peer socket is open) starts it afresh, as it
//!    does with a domain left by another version of the shim.
//!
//! Other domains are not affected: the mark lives in each segment. The
//! panics that are no damage are [`OutOfLog`] (no memory for the undo
//! log), [`PeerBusy`] and [`HeldByThisThread`]: their transaction is
//! rolled back exactly and the call fails with ENOMEM, EAGAIN or EDEADLK.

use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    /// What the panic unwinding on this thread said, for the report (only
    /// touched when there is a panic).
    static NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The panic unwinding on this thread is an [`OutOfLog`], a
    /// [`PeerBusy`] or a [`HeldByThisThread`]: the transaction it leaves
    /// is rolled back exactly.
    static ROLL_BACK: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// The one panic that is no damage: a transaction found no memory left
/// for its undo log (a full file system) in the middle of a step it could
/// not stop otherwise. Every change it made is logged, so it is rolled
/// back exactly, the domain stays usable, and the call fails with ENOMEM.
pub(crate) struct OutOfLog;

/// The other panic that is no damage: a background transaction (see
/// `Txn::never_wait`) met a peer lock another holder has. It is rolled
/// back exactly, and its call fails with EAGAIN.
pub(crate) struct PeerBusy;

/// A transaction met a peer lock this very thread holds: a call made
/// from a signal handler that interrupted another call of the thread
/// inside its section. The interrupted call cannot go on before the
/// handler returns, so waiting would never end; the transaction is rolled
/// back exactly (nothing of that peer was touched) and the handler's call
/// fails with EDEADLK.
pub(crate) struct HeldByThisThread;

/// The errno of a panic that is no damage ([`OutOfLog`], [`PeerBusy`],
/// [`HeldByThisThread`]): its transaction is rolled back exactly. None for
/// any other panic.
fn no_damage(payload: &(dyn std::any::Any + Send)) -> Option<Errno> {
    if payload.is::<OutOfLog>() {
        Some(Errno::ENOMEM)
    } else if payload.is::<PeerBusy>() {
        Some(Errno::EAGAIN)
    } else if payload.is::<HeldByThisThread>() {
        Some(Errno::EDEADLK)
    } else {
        None
    }
}

/// Whether `BUS1_TRACE` asks for traces (set, and neither empty nor "0").
pub fn trace_enabled() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("BUS1_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Writes one line to stderr; never fails (a closed or full stderr loses
/// the line).
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut buf = Vec::with_capacity(128);
    let _ = writeln!(buf, "{line}");
    let _ = std::io::stderr().write_all(&buf);
}

/// Whether a panic at `file` is one of the engine's (its own sources, not
/// integration tests), which [`contain`] catches and reports.
fn engine_source(file: &str) -> bool {
    file.contains("shm-core/src/") || file.contains("preload/src/")
}

/// Installs the panic hook once per process: a panic in the engine's code
/// is recorded for the report instead of printed (unless tracing); any
/// other panic goes to the hook that was there before. (Deciding by the
/// panic's source file rather than by a per-thread "inside contain" mark
/// keeps thread-local storage, which is slow in a shared library, off the
/// path of every call.) The crate's own unit tests print every panic.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            if no_damage(p).is_some() {
                let _ = ROLL_BACK.try_with(|f| f.set(true));
                return;
            }
            let Some(l) = info.location().filter(|l| engine_source(l.file())) else {
                previous(info);
                return;
            };
            let what = p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()));
            let note = format!("{} (at {}:{})", what.unwrap_or("panic"), l.file(), l.line());
            let _ = NOTE.try_with(|n| n.try_borrow_mut().map(|mut n| *n = Some(note)));
            if trace_enabled() || cfg!(test) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic in it becomes EIO (see the module's rules).
#[inline]
pub fn contain<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => match no_damage(&*payload) {
            Some(e) => {
                let _ = take_roll_back();
                Err(e)
            }
            None => {
                // A quarantine took the note if a domain was involved.
                if let Some(note) = take_note() {
                    say(format_args!("bus1: internal error: {note}; the call fails with EIO"));
                }
                Err(Errno::EIO)
            }
        },
    }
}

/// Runs `f` for a caller that has nothing to report to (a callback of
/// the C library): a panic in it is contained as by [`contain`] and
/// otherwise ignored.
pub fn contain_callback(f: impl FnOnce()) {
    let _ = contain(|| {
        f();
        Ok(())
    });
}

/// Whether the panic now unwinding on this thread asks for an exact
/// rollback, an [`OutOfLog`], a [`PeerBusy`] or a [`HeldByThisThread`]
/// (once).
pub(crate) fn take_roll_back() -> bool {
    ROLL_BACK.try_with(|f| f.replace(false)).unwrap_or(false)
}

/// What the panic now unwinding on this thread said (once).
pub(crate) fn take_note() -> Option<String> {
    NOTE.try_with(|n| n.try_borrow_mut().ok().and_then(|mut n| n.take())).ok().flatten()
}

impl Domain {
    /// Marks the segment damaged, with `note` saying what was found. Only
    /// atomic stores: this runs while a panic unwinds.
    pub(crate) fn mark_damaged(&self, note: &str) {
        let hdr: &Header = self.seg.at0();
        if hdr.damaged.load() != 0 {
            return;
        }
        let bytes = note.as_bytes();
        for (i, w) in hdr.damage_note.iter().enumerate() {
            let mut word = [0u8; 8];
            for (j, b) in word.iter_mut().enumerate() {
                *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
            }
            w.store(u64::from_le_bytes(word));
        }
        hdr.damaged.store(crate::sys::getpid() as u64);
    }

    /// Marks the segment damaged because a recovery cannot be trusted
    /// (txn rule 9) and says so, as a quarantine by a panic would.
    pub(crate) fn quarantine(&self, why: &str) {
        self.mark_damaged(why);
        self.report_damage(true);
    }

    /// Whether the segment is marked damaged (one load).
    #[inline]
    pub(crate) fn is_damaged(&self) -> bool {
        self.seg.at0::<Header>().damaged.load() != 0
    }

    /// Whether the segment is marked damaged: by which process, and what it
    /// found.
    pub fn damage(&self) -> Option<(u64, String)> {
        let hdr: &Header = self.seg.at0();
        let pid = hdr.damaged.load();
        if pid == 0 {
            return None;
        }
        let bytes: Vec<u8> = hdr.damage_note.iter().flat_map(|w| w.load().to_le_bytes()).take_while(|b| *b != 0).collect();
        Some((pid, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Says once per process that this domain is damaged (`found`: this
    /// process found it now).
    pub(crate) fn report_damage(&self, found: bool) {
        if self.damage_reported.swap(true, Ordering::AcqRel) {
            return;
        }
        let dir = String::from_utf8_lossy(&self.dir);
        let (pid, note) = self.damage().unwrap_or((0, String::new()));
        if found {
            say(format_args!(
                "bus1: domain {dir} is damaged: {note}; this call fails with EIO and every later one on the domain with ENOTRECOVERABLE"
            ));
        } else {
            say(format_args!(
                "bus1: domain {dir} was found damaged by process {pid} ({note}); its calls fail with ENOTRECOVERABLE"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::TestBus;
    use crate::shm::P;
    use crate::{OpenFlags, Peer};

    #[test]
    fn a_panic_inside_contain_is_eio_and_leaves_no_note_behind() {
        let r: Result<u32> = contain(|| panic!("found something"));
        assert_eq!(r, Err(Errno::EIO));
        assert_eq!(take_note(), None);
        assert_eq!(contain(|| Ok(7)), Ok(7));
        assert_eq!(contain::<u32>(|| Err(Errno::ENXIO)), Err(Errno::ENXIO));
        // Nested: the inner one catches.
        let outer = contain(|| {
            let inner: Result<u32> = contain(|| panic!("inner"));
            assert_eq!(inner, Err(Errno::EIO));
            Ok(1)
        });
        assert_eq!(outer, Ok(1));
    }

    fn recv(bus: &TestBus, i: usize) -> Result<uapi::bus1_msg> {
        let (fd, p) = bus.p(i);
        p.recv(*fd, 0, POOL_SIZE)
    }

    /// Every later call on the domain is refused, a checker still sees
    /// what is wrong, and another domain works.
    fn expect_quarantined(bus: &TestBus, found: &str) {
        let d = bus.dom();
        let (pid, note) = d.damage().expect("marked damaged");
        assert_eq!(pid, crate::sys::getpid() as u64);
        assert!(note.contains(found), "{note:?} does not say {found:?}");
        for i in 0..3 {
            assert_eq!(recv(bus, i).err(), Some(Errno::ENOTRECOVERABLE));
        }
        let (fd, a) = bus.p(0);
        assert_eq!(a.handle_transfer(*fd, 0x900, None).err(), Some(Errno::ENOTRECOVERABLE));
        let flags = OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true };
        assert_eq!(Peer::open(&bus.dir, flags).err(), Some(Errno::ENOTRECOVERABLE));
        assert_eq!(d.stats().err(), Some(Errno::ENOTRECOVERABLE));
        assert_eq!(a.pool_fd_for_mmap(libc::O_RDWR, libc::PROT_READ, libc::MAP_SHARED).err(), Some(Errno::ENOTRECOVERABLE));
        let report = d.check_invariants();
        assert!(report[0].contains("marked damaged"), "{report:?}");
        // A fresh domain is unaffected.
        let other = TestBus::new("fresh");
        assert_eq!(recv(&other, 1).map(|m| m.n_bytes), Ok(5));
        assert!(other.dom().damage().is_none());
    }

    #[test]
    fn a_bad_offset_is_eio_then_the_domain_is_refused() {
        let bus = TestBus::new("q-offset");
        bus.damage(|tx, p| tx.set(&tx.rec(p[1]).q_head, P::from_off(SEG_SIZE + 8)));
        assert_eq!(recv(&bus, 1).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "bad shared offset");
    }

    /// A record pointer into the header (here: the lock word) is a bad
    /// offset: following it would write the lock and hang every process.
    #[test]
    fn a_pointer_into_the_header_is_eio_not_a_hang() {
        let bus = TestBus::new("q-header");
        let lock = core::mem::offset_of!(Header, mutex) as u64;
        bus.damage(|tx, p| tx.set(&tx.rec(p[1]).q_head, P::from_off(lock)));
        assert_eq!(recv(&bus, 1).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "bad shared offset");
    }

    /// A dead holder's undo entry that names the lock or the log itself
    /// is damage, not something to write.
    #[test]
    fn an_undo_entry_naming_the_lock_is_damage() {
        let bus = TestBus::new("q-loglock");
        let d = bus.dom();
        let lock = core::mem::offset_of!(Header, mutex) as u64;
        d.seg.write_log_entry(LOG_OFF, 0, [lock, 0x1234, 4 << 8]);
        d.seg.at0::<Header>().log_len.store(1);
        assert_eq!(recv(&bus, 1).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "undo log entry 0 is damaged");
    }

    #[test]
    fn a_cycle_is_eio_not_an_endless_walk() {
        let bus = TestBus::new("q-cycle");
        bus.damage(|tx, p| {
            let h = tx.rec(p[0]).handles.get();
            tx.set(&tx.rec(h).holder_next, h);
        });
        let (fd, a) = bus.p(0);
        let flush = uapi::bus1_cmd_peer_reset { flags: uapi::BUS1_PEER_RESET_FLAG_FLUSH, peer_flags: u64::MAX, max_slices: u32::MAX, max_handles: u32::MAX, max_inflight_bytes: u32::MAX, max_inflight_fds: u32::MAX };
        assert_eq!(a.reset(*fd, &flush).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "longer than the segment can hold");
    }

    /// The walks of a peer's own message state (its record chunks, its
    /// senders' share blocks) are bounded like the domain's lists.
    #[test]
    fn a_cycle_of_record_chunks_is_eio() {
        let bus = TestBus::new("q-chunks");
        bus.damage(|tx, p| {
            let c = tx.rec(p[1]).chunks.get();
            tx.set(&tx.rec(c).next, c);
        });
        let (fd, b) = bus.p(1);
        let flush = uapi::bus1_cmd_peer_reset { flags: uapi::BUS1_PEER_RESET_FLAG_FLUSH, peer_flags: u64::MAX, max_slices: u32::MAX, max_handles: u32::MAX, max_inflight_bytes: u32::MAX, max_inflight_fds: u32::MAX };
        assert_eq!(b.reset(*fd, &flush).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "a list of Chunk records is longer than the segment can hold");
    }

    #[test]
    fn a_cycle_of_share_blocks_is_eio() {
        let bus = TestBus::new("q-shares");
        bus.damage(|tx, p| {
            crate::capacity::share_block(tx, p[1]).unwrap();
            let b = tx.rec(p[1]).share_blocks.get();
            tx.set(&tx.rec(b).next, b);
            // Every inline slot taken by another user: the sender's share
            // is looked for in the blocks.
            for (i, sh) in tx.rec(p[1]).shares.iter().enumerate() {
                tx.set(&sh.uid, 0xdead_0000 + i as u64 + 1);
            }
        });
        let (fd, a) = bus.p(0);
        let bufs = [std::io::IoSlice::new(b"x")];
        let dests = [bus.to[0]];
        let args = crate::SendSlices { flags: 0, destinations: &dests, errors: None, payload: &bufs, handles: &[], fds: &[] };
        assert_eq!(a.send_slices(*fd, args).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "a list of ShareBlock records is longer than the segment can hold");
    }

    /// Background work under the domain lock never waits for a peer lock
    /// another holder has (a stopped process): it is rolled back, EAGAIN,
    /// and the domain goes on.
    #[test]
    fn a_never_waiting_transaction_meets_a_busy_peer_with_eagain() {
        let bus = TestBus::new("q-busy");
        let d = bus.dom();
        let x = bus.p(1).1.rec;
        let before = d.check_invariants();
        assert!(before.is_empty(), "{before:?}");
        let section = crate::section::Section::lock(&d, x).unwrap();
        let r = contain(|| {
            let tx = d.lock()?;
            tx.never_wait();
            tx.set(&tx.rec(x).gc_pending, 7);
            tx.hold(x);
            unreachable!("the lock is busy");
        });
        assert_eq!(r, Err::<(), _>(Errno::EAGAIN));
        drop(section);
        assert!(d.damage().is_none());
        // rolled back exactly, and the domain lock is free again
        let tx = d.lock().unwrap();
        assert_eq!(tx.rec(x).gc_pending.get(), 0);
        tx.abort();
        assert_eq!(d.check_invariants(), Vec::<String>::new());
        assert_eq!(recv(&bus, 1).map(|m| m.n_bytes), Ok(5));
    }

    #[test]
    fn a_duplicate_key_is_eio() {
        let bus = TestBus::new("q-dup");
        // Plant a's next kernel ID in a's table already.
        bus.damage(|tx, p| {
            let id = ((tx.rec(p[0]).id_counter.get() + 1) << 3) | 3;
            crate::table::id_insert(tx, p[0], id, P::from_off(HEAP_OFF)).unwrap()
        });
        let (fd, a) = bus.p(0);
        let (_, b) = bus.p(1);
        assert_eq!(b.handle_transfer(bus.p(1).0, 0x500, Some(a)).err(), Some(Errno::EIO));
        let _ = fd;
        expect_quarantined(&bus, "duplicate table key");
    }

    /// Whatever word of a small bus's heap is damaged, its calls return:
    /// a value or an errno (EIO for what the engine notices), never an
    /// abort or an endless loop.
    #[test]
    fn calls_return_whatever_word_is_damaged() {
        let mut rng = 0x5DEE_CE66_D1CE_4E5Bu64;
        let flush = uapi::bus1_cmd_peer_reset { flags: uapi::BUS1_PEER_RESET_FLAG_FLUSH, peer_flags: u64::MAX, max_slices: u32::MAX, max_handles: u32::MAX, max_inflight_bytes: u32::MAX, max_inflight_fds: u32::MAX };
        let mut eio = 0;
        // Each bus maps a segment that stays mapped for the rest of the
        // test process: a few dozen, not thousands (run it longer by hand).
        for _ in 0..60 {
            let bus = TestBus::new("anyword");
            let d = bus.dom();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // A word of a peer record or of a queued record: most of a
            // small heap is slack (free records of the arenas, empty table
            // slots), which no call meets.
            let words = words_in_use(&bus);
            let off = words[(rng % words.len() as u64) as usize];
            let cell = &d.seg.cells(off, 1)[0];
            cell.raw_set(match rng >> 62 {
                0 => 0,
                1 => u64::MAX / 3,
                2 => SEG_SIZE + 8,
                _ => cell.get() ^ (1 << (rng % 64)),
            });
            let mut results = Vec::new();
            for i in 0..3 {
                results.push(recv(&bus, i).err());
                let (fd, p) = bus.p(i);
                results.push(p.handle_transfer(*fd, 0x100 + i as u64 * 0x100, None).err());
                results.push(p.reset(*fd, &flush).err());
            }
            // The watcher thread may meet the damage first: then the calls
            // are refused.
            eio += results.iter().any(|r| matches!(r, Some(Errno::EIO) | Some(Errno::ENOTRECOVERABLE))) as u32;
        }
        // Most words of a small heap are slack (empty table slots, unused
        // bytes of blocks): only some damage is ever met.
        assert!(eio > 0, "no damage noticed in 60 buses");
    }

    /// The words of the peers' records (their two locks excepted: a damaged
    /// lock word is a wedge no check can see) and of their queued records.
    fn words_in_use(bus: &TestBus) -> Vec<u64> {
        let d = bus.dom();
        let tx = d.lock().unwrap();
        let lock = core::mem::offset_of!(PeerRec, lock) as u64;
        let lock_end = lock + core::mem::size_of::<crate::sync::RobustMutex>() as u64;
        let rel = core::mem::offset_of!(PeerRec, rel_lock) as u64;
        let rel_end = rel + core::mem::size_of::<crate::sync::RobustMutex>() as u64;
        let mut v = Vec::new();
        for i in 0..3 {
            let p = bus.p(i).1.rec;
            let words = (0..core::mem::size_of::<PeerRec>() as u64 / 8).map(|w| w * 8);
            v.extend(words.filter(|w| !(lock..lock_end).contains(w) && !(rel..rel_end).contains(w)).map(|w| p.off() + w));
            for e in crate::queue::entries(&tx, p) {
                v.extend((0..core::mem::size_of::<Msg>() as u64 / 8).map(|w| e.off() + w * 8));
            }
        }
        tx.abort();
        v
    }

    #[test]
    fn a_table_without_an_empty_slot_is_eio_not_an_endless_probe() {
        let bus = TestBus::new("q-table");
        // a's ID table, which HANDLE_RELEASE looks an ID up in.
        bus.damage(|tx, p| {
            let (off, cap) = (tx.rec(p[0]).ids.get(), tx.rec(p[0]).ids_cap.get());
            for slot in tx.domain().seg.cells(off, cap as usize * 3).chunks(3) {
                if slot[0].get() == 0 {
                    tx.set(&slot[0], 1);
                }
            }
        });
        // Looking up an ID that is not there probes every slot.
        assert_eq!(bus.p(0).1.handle_release(bus.p(0).0, 0x7f3).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "no empty slot");
    }

    #[test]
    fn a_reference_count_beyond_any_quota_is_eio_not_an_endless_loop() {
        let bus = TestBus::new("q-refs");
        bus.damage(|tx, p| {
            let h = tx.rec(p[0]).handles.get();
            tx.set(&tx.rec(h).user_refs, u64::MAX / 2);
        });
        let (fd, a) = bus.p(0);
        let flush = uapi::bus1_cmd_peer_reset { flags: uapi::BUS1_PEER_RESET_FLAG_FLUSH, peer_flags: u64::MAX, max_slices: u32::MAX, max_handles: u32::MAX, max_inflight_bytes: u32::MAX, max_inflight_fds: u32::MAX };
        assert_eq!(a.reset(*fd, &flush).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "more than its user's quota");
    }

    #[test]
    fn an_undo_log_out_of_memory_is_enomem_and_no_damage() {
        let bus = TestBus::new("q-nolog");
        let d = bus.dom();
        let clock = d.seg.at0::<Header>().next_tag.get();
        let r: Result<()> = contain(|| {
            let tx = d.lock()?;
            let (_, a) = bus.p(0);
            tx.set(&tx.hdr().next_tag, clock + 100);
            tx.set(&tx.rec(a.rec).bell_dirty, 0);
            tx.intent(a.rec, crate::store::Intent::Removed)?;
            std::panic::panic_any(OutOfLog)
        });
        assert_eq!(r, Err(Errno::ENOMEM));
        assert!(d.damage().is_none());
        assert_eq!(d.seg.at0::<Header>().next_tag.get(), clock, "rolled back");
        let (_, a) = bus.p(0);
        assert_eq!(d.seg.rec(a.rec).bell_dirty.get(), 1, "the peer named by an intent is dirty");
        assert_eq!(d.check_invariants(), Vec::<String>::new());
        assert_eq!(recv(&bus, 1).map(|m| m.n_bytes), Ok(5));
    }

    #[test]
    fn a_poisoned_undo_log_is_replayed_once() {
        let bus = TestBus::new("q-log");
        let d = bus.dom();
        // A dead holder's log whose entry points outside the segment.
        d.seg.write_log_entry(LOG_OFF, 0, [SEG_SIZE + 64, 0, 8 << 8]);
        d.seg.at0::<Header>().log_len.store(1);
        assert_eq!(recv(&bus, 1).err(), Some(Errno::EIO));
        expect_quarantined(&bus, "undo log entry 0 is damaged");
        // The log was not replayed again: the entry is still there.
        assert_eq!(d.seg.at0::<Header>().log_len.load(), 1);
    }
}
