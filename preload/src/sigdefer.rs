//! Application signal handlers run between the shim's calls, never inside
//! one.
//!
//! The module ran a handler between system calls. The shim's calls are
//! plain code holding process and bus locks (the table of pool mappings,
//! the allocator, peer locks): a handler run in the middle of one that
//! calls into the bus again would wait on a lock of its own thread, and a
//! handler that leaves by `longjmp` would leave the locks taken. So the
//! shim installs its own function (`trampoline`) as the kernel's handler
//! of every signal the application catches, with the application's mask
//! and flags, and records the application's action. A signal that lands
//! inside a shim call ([`hold`]) is kept, with its `siginfo` and the
//! interrupted context, in a small per-thread list; when the outermost
//! shim call ends, the shim calls each kept signal's handler itself,
//! under the mask the kernel would have set (the thread's, the action's
//! mask, and the signal unless SA_NODEFER), and then restores the mask.
//! That costs two mask changes, where queueing the signal to the thread
//! again would cost a mask change, a queue and a second delivery, about
//! four times as long on the machines measured.
//!
//! The first signal kept in a call also blocks, for the rest of the call,
//! every signal the trampoline handles that the interrupted code had not
//! blocked (it adds them to the mask the kernel restores when the
//! trampoline returns). Later signals then wait in the kernel, merged and
//! ordered as the kernel merges and orders pending signals, however many
//! come; the mask is restored after the kept handlers have run, and the
//! kernel delivers them then, outside any call. The list only holds
//! what lands before the block takes effect.
//!
//! The handler then runs on the thread's stack (not an alternate one),
//! and a change it makes to its context argument (a copy of the
//! interrupted one, whose floating-point state is not kept) has no
//! effect: the signals deferred here are asynchronous ones, whose
//! handlers do not resume elsewhere; one that leaves by `longjmp` leaves
//! no shim call behind it.
//!
//! Signals are not deferred where deferring could not work or would
//! change their meaning: SIGSEGV and SIGBUS (the fault handler of
//! `uaccess` owns them), the other synchronous signals (SIGILL, SIGFPE,
//! SIGTRAP, SIGSYS: the faulting instruction would run again), SIGKILL
//! and SIGSTOP, and the C library's internal signals (it refuses them).
//! A shim call that sleeps in the kernel (the waits of `wait`) is not a
//! held call: a handler runs there as the real call would run it, and the
//! wait fails with EINTR. A held call that waits long for a lock (a
//! process stopped while holding it) runs the kept handlers between the
//! slices of its wait when it holds no lock (shm-core's long-wait hook).
//!
//! This module is one of the few that contain `unsafe`.

use core::cell::Cell;
use core::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use libc::{c_int, c_void, siginfo_t};

/// Signals 1..=64.
const NSIG: usize = 65;

/// Words of one `sigaction` record.
const WORDS: usize = core::mem::size_of::<libc::sigaction>().div_ceil(8);

/// Words of one `siginfo_t`.
const INFO_WORDS: usize = core::mem::size_of::<siginfo_t>().div_ceil(8);

/// Signals kept per thread during one held call: the first, and any
/// that interrupts the trampoline before its block is in place. More run
/// at once, as they would without deferral.
const KEPT_MAX: usize = 4;

/// The signals the trampoline may hold, as a kernel signal mask (bit
/// `sig - 1`).
fn holdable_mask() -> u64 {
    (1..NSIG as c_int).filter(|&sig| deferrable(sig)).fold(0, |m, sig| m | 1u64 << (sig - 1))
}

/// Whether a handler for `sig` runs through the trampoline.
pub fn deferrable(sig: c_int) -> bool {
    if !(1..NSIG as c_int).contains(&sig) {
        return false;
    }
    // The C library's cancellation and set*id signals (32, 33) it keeps.
    let libc_internal = (32..libc::SIGRTMIN()).contains(&sig);
    !libc_internal
        && !matches!(
            sig,
            libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
        )
}

// ------------------------------------------------- the application's actions

/// One signal's recorded application action: a sequence lock, because the
/// trampoline (and `uaccess`'s fault handler) reads it in signal context
/// while another thread may write.
struct Record {
    seq: AtomicU32,
    words: [AtomicU64; WORDS],
    /// Whether an action was ever stored.
    known: AtomicBool,
}

impl Record {
    const fn new() -> Record {
        Record { seq: AtomicU32::new(0), words: [const { AtomicU64::new(0) }; WORDS], known: AtomicBool::new(false) }
    }

    fn read(&self) -> libc::sigaction {
        let mut w = [0u64; WORDS];
        loop {
            let s = self.seq.load(Ordering::Acquire);
            if s & 1 == 0 {
                for (o, i) in w.iter_mut().zip(&self.words) {
                    *o = i.load(Ordering::Relaxed);
                }
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s {
                    break;
                }
            }
            core::hint::spin_loop();
        }
        // SAFETY: the words were copied from a sigaction (or are zero,
        // SIG_DFL with an empty mask); every bit pattern is a valid one.
        unsafe { core::ptr::read_unaligned(w.as_ptr() as *const libc::sigaction) }
    }

    /// Only with `WRITING` held and every signal blocked (see `write`).
    fn store(&self, act: &libc::sigaction) {
        let mut w = [0u64; WORDS];
        // SAFETY: copies the record's bytes into a buffer at least as large.
        unsafe {
            core::ptr::copy_nonoverlapping(act as *const _ as *const u8, w.as_mut_ptr() as *mut u8, core::mem::size_of::<libc::sigaction>())
        };
        self.seq.fetch_add(1, Ordering::AcqRel);
        for (i, v) in self.words.iter().zip(w) {
            i.store(v, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::Release);
        self.known.store(true, Ordering::Release);
    }
}

static RECORDS: [Record; NSIG] = [const { Record::new() }; NSIG];

/// One writer at a time, over all records.
static WRITING: AtomicBool = AtomicBool::new(false);

/// Runs `f` as the only writer of the records, with every signal of this
/// thread blocked: a handler of this thread cannot interrupt a writer and
/// then wait for it.
fn write<T>(f: impl FnOnce() -> T) -> T {
    shm_core::sys::with_signals_blocked(|| {
        while WRITING.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::thread::yield_now();
        }
        let r = f();
        WRITING.store(false, Ordering::Release);
        r
    })
}

/// The application's recorded action for `sig` (SIG_DFL if none), for a
/// signal whose handler the shim keeps for itself (`uaccess`).
pub fn recorded(sig: c_int) -> libc::sigaction {
    RECORDS[sig as usize].read()
}

/// Whether an action was ever recorded for `sig`.
pub fn is_recorded(sig: c_int) -> bool {
    RECORDS[sig as usize].known.load(Ordering::Acquire)
}

/// Records `act` as the application's action for `sig` without telling
/// the kernel (a signal whose handler the shim keeps for itself).
pub fn record(sig: c_int, act: &libc::sigaction) {
    write(|| RECORDS[sig as usize].store(act));
}

/// Sets (and/or reads) the kernel's disposition of `sig` through libc's
/// real sigaction, which supplies the signal-return trampoline.
pub(crate) fn real_sigaction(sig: c_int, act: Option<&libc::sigaction>, old: Option<&mut libc::sigaction>) -> c_int {
    let a = act.map_or(core::ptr::null(), |a| a as *const libc::sigaction);
    let o = old.map_or(core::ptr::null_mut(), |o| o as *mut libc::sigaction);
    // SAFETY: valid (or null) sigaction pointers.
    unsafe { call_real!(crate::real::SIGACTION, fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int, sig, a, o) }
}

/// What the application sees as its old action: its record where the
/// kernel holds the trampoline, else whatever a call that bypassed this
/// module installed.
fn app_view(kernel_old: libc::sigaction, app: impl FnOnce() -> libc::sigaction) -> libc::sigaction {
    if kernel_old.sa_sigaction == trampoline as *const () as usize {
        app()
    } else {
        kernel_old
    }
}

/// Calls the application's handler `act` for `sig`, with the calling
/// convention its SA_SIGINFO flag announces.
pub(crate) fn call_handler(act: &libc::sigaction, sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: the application registered this function for `sig`.
    unsafe {
        if act.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = core::mem::transmute(act.sa_sigaction);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(c_int) = core::mem::transmute(act.sa_sigaction);
            f(sig);
        }
    }
}

fn is_handler(h: libc::sighandler_t) -> bool {
    h != libc::SIG_DFL && h != libc::SIG_IGN && h != libc::SIG_ERR
}

/// `sigaction(2)` for a deferrable signal: installs the trampoline in
/// place of an application handler and records the application's action;
/// `old` gets the application's view (its own action, or whatever a call
/// that bypassed this one installed).
pub fn sigaction(sig: c_int, act: Option<&libc::sigaction>, old: Option<&mut libc::sigaction>) -> c_int {
    debug_assert!(deferrable(sig));
    let rec = &RECORDS[sig as usize];
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
    let mut kernel_old: libc::sigaction = unsafe { core::mem::zeroed() };
    if !crate::owner::memory_is_ours() {
        let r = real_sigaction(sig, act, Some(&mut kernel_old));
        if r == 0 {
            if let Some(o) = old {
                *o = app_view(kernel_old, || rec.read());
            }
        }
        return r;
    }
    let (r, app_old) = write(|| {
        let app_old = rec.read();
        let r = match act {
            Some(a) if is_handler(a.sa_sigaction) => {
                shm_core::set_long_wait_hook(run_kept_while_waiting);
                let mut k = *a;
                k.sa_sigaction = trampoline as *const () as usize;
                k.sa_flags = (a.sa_flags | libc::SA_SIGINFO) & !libc::SA_RESETHAND;
                rec.store(a);
                let r = real_sigaction(sig, Some(&k), Some(&mut kernel_old));
                if r != 0 {
                    rec.store(&app_old);
                }
                r
            }
            Some(a) => {
                let r = real_sigaction(sig, Some(a), Some(&mut kernel_old));
                if r == 0 {
                    rec.store(a);
                }
                r
            }
            None => real_sigaction(sig, None, Some(&mut kernel_old)),
        };
        (r, app_old)
    });
    if r == 0 {
        if let Some(o) = old {
            *o = app_view(kernel_old, || app_old);
        }
    }
    r
}

// ------------------------------------------------------- held calls

/// Bytes kept of the interrupted context: the kernel's `ucontext` up to
/// and including its 8-byte signal mask (the rest of its frame, such as
/// the floating-point state, is not kept).
const CTX_BYTES: usize = core::mem::offset_of!(libc::ucontext_t, uc_sigmask) + 8;

/// A signal kept during a held call.
#[derive(Clone, Copy)]
struct Kept {
    sig: c_int,
    info: [u64; INFO_WORDS],
    ctx: [u64; CTX_BYTES.div_ceil(8)],
}

const NO_KEPT: Kept = Kept { sig: 0, info: [0; INFO_WORDS], ctx: [0; CTX_BYTES.div_ceil(8)] };

struct Thread {
    /// Held calls under way (nested: a handler run between calls may call
    /// again).
    depth: Cell<u32>,
    /// Kept signals. An atomic only so that `deliver_kept` can take the
    /// list in one instruction that no handler of this thread can cut.
    n_kept: AtomicUsize,
    kept: [Cell<Kept>; KEPT_MAX],
    /// The signals the trampoline blocked until the call ends (a kernel
    /// mask), which were not blocked before.
    blocked: Cell<u64>,
}

thread_local! {
    static THREAD: Thread = const {
        Thread {
            depth: Cell::new(0),
            n_kept: AtomicUsize::new(0),
            kept: [const { Cell::new(NO_KEPT) }; KEPT_MAX],
            blocked: Cell::new(0),
        }
    };
}

/// Runs `f`, a shim call, with the application's signal handlers of this
/// thread held until it (and any held call around it) has returned.
#[inline]
pub fn hold<T>(f: impl FnOnce() -> T) -> T {
    let _held = Held::enter();
    f()
}

/// One held call under way (this thread's record, or null if there is
/// none any more); its end, also by unwinding, delivers what was kept
/// once no held call is left.
struct Held(*const Thread);

impl Held {
    #[inline]
    fn enter() -> Held {
        let t = THREAD.try_with(|t| {
            t.depth.set(t.depth.get() + 1);
            t as *const Thread
        });
        // The handler runs on this thread: the count must be in place
        // before any of the call's work, and stay until all of it is done.
        compiler_fence(Ordering::SeqCst);
        Held(t.unwrap_or(core::ptr::null()))
    }
}

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: a non-null pointer is this thread's record, taken by
        // `enter` on this thread; it has no destructor, so it lives as
        // long as the thread, and a guard never leaves its thread.
        if let Some(t) = unsafe { self.0.as_ref() } {
            let d = t.depth.get() - 1;
            t.depth.set(d);
            if d == 0 && t.n_kept.load(Ordering::Relaxed) != 0 {
                deliver_kept(t);
            }
        }
    }
}

/// Runs the handlers of the kept signals, oldest first. No shim call is
/// under way: a handler may call the bus, or leave by `longjmp`.
#[cold]
fn deliver_kept(t: &Thread) {
    let errno = crate::interpose::errno();
    // Take the list. While it is copied, a signal that comes is kept (at
    // the end of the list: a handler of this thread runs to completion
    // before this code goes on), so the copy goes on until the count it
    // read is still the count when it empties the list.
    t.depth.set(1);
    compiler_fence(Ordering::SeqCst);
    let mut list = [NO_KEPT; KEPT_MAX];
    let mut n = 0;
    loop {
        let now = t.n_kept.load(Ordering::Relaxed);
        while n < now {
            list[n] = t.kept[n].get();
            n += 1;
        }
        if t.n_kept.compare_exchange(now, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            break;
        }
    }
    // Only a kept signal blocks, and every one kept so far is in the list.
    let blocked = t.blocked.replace(0);
    compiler_fence(Ordering::SeqCst);
    t.depth.set(0);
    // (The callers come only with a signal kept: n is at least 1.)
    for (i, k) in list.iter_mut().take(n).enumerate() {
        // The last handler's mask restore also lifts the block: what
        // waited in the kernel is delivered then, outside any call.
        run_kept(k, blocked, i + 1 == n);
    }
    crate::interpose::set_errno(errno);
}

/// Runs the kept handlers from inside a held call that has waited long
/// for a lock (a process stopped while holding it), when the thread holds
/// no lock at all: the module would have run them in its sleep. A handler
/// that leaves by `longjmp` abandons the waiting call, which holds
/// nothing; the held count it leaves at 0 is then right.
fn run_kept_while_waiting() {
    let _ = THREAD.try_with(|t| {
        if t.depth.get() == 0 || t.n_kept.load(Ordering::Relaxed) == 0 {
            return;
        }
        let depth = t.depth.replace(0);
        compiler_fence(Ordering::SeqCst);
        // The block is lifted here too: what waited in the kernel runs
        // now, with no lock held, as the kept handlers do.
        deliver_kept(t);
        compiler_fence(Ordering::SeqCst);
        t.depth.set(depth);
    });
}

/// Calls the handler of a kept signal as the kernel would have: under
/// the mask of the code it interrupted, with the action's mask (and the
/// signal) added, for its length. The block of the call's signals is
/// lifted meanwhile (signals that waited in the kernel and that this mask
/// lets through run first, as the kernel runs a pending signal's handler
/// on top of the one it has just set up). Then the thread's mask is
/// restored, without `blocked` when `last`.
fn run_kept(k: &mut Kept, blocked: u64, last: bool) {
    let act = RECORDS[k.sig as usize].read();
    let uc = k.ctx.as_ptr() as *const libc::ucontext_t;
    // SAFETY: `k.ctx` holds a copy of the interrupted ucontext up to and
    // including the first 8 bytes of its signal mask.
    let interrupted = mask_of(unsafe { &(*uc).uc_sigmask });
    let mut during = interrupted | mask_of(&act.sa_mask);
    if act.sa_flags & libc::SA_NODEFER == 0 {
        during |= 1u64 << (k.sig - 1);
    }
    // SAFETY: all-zero is a valid (empty) signal set.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: plain mask changes of this thread with initialised sets.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set_of(during), &mut old) };
    run_application_handler(k.sig, k.info.as_mut_ptr() as *mut siginfo_t, k.ctx.as_mut_ptr() as *mut c_void);
    let back = if last { set_of(mask_of(&old) & !blocked) } else { old };
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &back, core::ptr::null_mut()) };
}

/// The kernel mask (signals 1..=64, bit `sig - 1`) of the C library's
/// signal set `s`, whose first word it is.
fn mask_of(s: &libc::sigset_t) -> u64 {
    // SAFETY: a sigset_t is at least 8 bytes long and 8-byte aligned.
    unsafe { (s as *const libc::sigset_t as *const u64).read() }
}

/// The C library's signal set of kernel mask `m`.
fn set_of(m: u64) -> libc::sigset_t {
    // SAFETY: all-zero is a valid (empty) signal set; its first word is
    // the kernel mask (as above).
    unsafe {
        let mut s: libc::sigset_t = core::mem::zeroed();
        (&mut s as *mut libc::sigset_t as *mut u64).write(m);
        s
    }
}

/// Blocks, from the trampoline's return until the call ends, every
/// holdable signal the interrupted code had not blocked: the kernel sets
/// the thread's mask from `ctx` when the trampoline returns.
///
/// # Safety
/// `ctx` is the ucontext the kernel passed to this SA_SIGINFO handler.
unsafe fn block_until_call_ends(t: &Thread, ctx: *mut c_void) {
    let uc = ctx as *mut libc::ucontext_t;
    // SAFETY: `uc` is valid (the caller's promise).
    let before = mask_of(unsafe { &(*uc).uc_sigmask });
    let add = holdable_mask() & !before;
    // Only the first word: the kernel's mask is 8 bytes, and what follows
    // it in its signal frame is not the rest of a C library set.
    // SAFETY: as above; the set is at least 8 bytes long and aligned.
    unsafe { (core::ptr::addr_of_mut!((*uc).uc_sigmask) as *mut u64).write(before | add) };
    t.blocked.set(t.blocked.get() | add);
}

/// The kernel's handler of every signal the application catches.
extern "C" fn trampoline(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let kept = THREAD
        .try_with(|t| {
            if t.depth.get() == 0 {
                return false;
            }
            let n = t.n_kept.load(Ordering::Relaxed);
            let standard = sig < libc::SIGRTMIN();
            // A standard signal already kept merges with it, as the
            // kernel merges a pending one.
            if standard && t.kept.iter().take(n).any(|k| k.get().sig == sig) {
                return true;
            }
            if n == KEPT_MAX || info.is_null() || ctx.is_null() {
                return false;
            }
            let mut k = NO_KEPT;
            k.sig = sig;
            // SAFETY: the kernel passes a valid siginfo and ucontext to an
            // SA_SIGINFO handler; CTX_BYTES lie within its ucontext.
            unsafe {
                core::ptr::copy_nonoverlapping(info as *const u8, k.info.as_mut_ptr() as *mut u8, core::mem::size_of::<siginfo_t>());
                core::ptr::copy_nonoverlapping(ctx as *const u8, k.ctx.as_mut_ptr() as *mut u8, CTX_BYTES);
                let uc = k.ctx.as_mut_ptr() as *mut libc::ucontext_t;
                (*uc).uc_mcontext.fpregs = core::ptr::null_mut();
            }
            t.kept[n].set(k);
            // A handler that interrupted this one has already finished.
            t.n_kept.store(n + 1, Ordering::Relaxed);
            // SAFETY: `ctx` is the kernel's ucontext (non-null, checked).
            unsafe { block_until_call_ends(t, ctx) };
            true
        })
        .unwrap_or(false);
    if !kept {
        run_application_handler(sig, info, ctx);
    }
}

fn run_application_handler(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let act = RECORDS[sig as usize].read();
    if !is_handler(act.sa_sigaction) {
        // The application changed its mind while the signal was on its
        // way: what it set now applies (the kernel's action for SIG_DFL).
        if act.sa_sigaction == libc::SIG_DFL {
            write(|| real_sigaction(sig, Some(&act), None));
            // SAFETY: a plain system call that re-sends the signal.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) };
        }
        return;
    }
    if act.sa_flags & libc::SA_RESETHAND != 0 {
        // The one-shot handler the kernel would have reset on delivery.
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
        let dfl: libc::sigaction = unsafe { core::mem::zeroed() };
        write(|| {
            RECORDS[sig as usize].store(&dfl);
            real_sigaction(sig, Some(&dfl), None)
        });
    }
    call_handler(&act, sig, info, ctx);
}
