//! The two kinds of pthread mutex the engine uses.
//!
//! [`RobustMutex`] is the domain lock itself: a process-shared robust mutex
//! inside the segment's header. Its rules (who takes it, how a dead
//! holder's work is recovered) are written down in `txn`; this module only
//! wraps the calls.
//!
//! [`LocalMutex`] guards the little per-process state the engine keeps
//! (pool mappings, internal sockets). A std mutex held by another thread at
//! `fork` time would stay locked forever in the child, so these locks are
//! plain pthread mutexes that the fork handlers (`crate::forks`) take before
//! fork and release in both parent and child. Cross-process state never uses
//! these.
//!
//! This module is one of the few that contain `unsafe`.

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::ops::{Deref, DerefMut};

/// A process-shared robust `pthread_mutex_t` in shared memory (64 bytes
/// reserved; glibc's is 40 on x86-64). Results are pthread error numbers:
/// 0, `EBUSY`, `ETIMEDOUT`, `EOWNERDEAD` (the caller now owns the mutex and
/// must repair the state, then call [`consistent`](Self::consistent)), ...
#[repr(C, align(8))]
pub struct RobustMutex(UnsafeCell<[u64; 8]>);

const _: () = assert!(core::mem::size_of::<libc::pthread_mutex_t>() <= core::mem::size_of::<RobustMutex>());

impl RobustMutex {
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.0.get() as *mut libc::pthread_mutex_t
    }

    /// Initialises the mutex of a new segment, before any other process can
    /// reach it.
    pub fn init(&self) -> libc::c_int {
        // SAFETY: the attribute object is initialised before use and
        // destroyed after; the mutex memory is ours and large enough.
        unsafe {
            let mut attr = core::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutexattr_settype(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ERRORCHECK);
            let r = libc::pthread_mutex_init(self.raw(), attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            r
        }
    }

    /// Whether the mutex looks free right now (a hint for spinning): the
    /// first word of glibc's mutex is the futex word, zero while free.
    pub fn looks_free(&self) -> bool {
        crate::census::touch(self.0.get() as usize, 40);
        // SAFETY: the first 4 bytes of the mutex, which other threads and
        // processes only update atomically.
        let word = unsafe { &*(self.0.get() as *const AtomicI32) };
        word.load(Ordering::Relaxed) == 0
    }

    /// Whether a live thread holds the mutex: the futex word names its
    /// owner's thread id (the kernel clears it, leaving FUTEX_OWNER_DIED,
    /// when the owner dies).
    pub fn held_by_live_owner(&self) -> bool {
        // SAFETY: as for `looks_free`.
        let word = unsafe { &*(self.0.get() as *const AtomicI32) };
        word.load(Ordering::Relaxed) as u32 & libc::FUTEX_TID_MASK != 0
    }

    pub fn try_lock(&self) -> libc::c_int {
        crate::census::write(self.0.get() as usize, 40);
        // SAFETY: an initialised mutex in memory that stays mapped.
        unsafe { libc::pthread_mutex_trylock(self.raw()) }
    }

    /// Waits for the mutex at most `ms` milliseconds. The deadline is on
    /// CLOCK_MONOTONIC (`pthread_mutex_clocklock`), so that a change of the
    /// wall clock neither wakes waiters early nor strands them; a C
    /// library without that call gets the same wait on CLOCK_REALTIME.
    pub fn lock_for_ms(&self, ms: u64) -> libc::c_int {
        crate::census::write(self.0.get() as usize, 40);
        match clocklock() {
            Some(f) => {
                let deadline = crate::sys::deadline_after_ms(libc::CLOCK_MONOTONIC, ms);
                // SAFETY: as for `try_lock`; `f` is glibc's
                // pthread_mutex_clocklock, `deadline` a valid timespec.
                unsafe { f(self.raw(), libc::CLOCK_MONOTONIC, &deadline) }
            }
            None => {
                let deadline = crate::sys::deadline_after_ms(libc::CLOCK_REALTIME, ms);
                // SAFETY: as for `try_lock`; `deadline` is a valid timespec.
                unsafe { libc::pthread_mutex_timedlock(self.raw(), &deadline) }
            }
        }
    }

    /// Takes the mutex, spinning briefly first: critical sections last well
    /// under a microsecond, while sleeping on the futex and being woken
    /// costs several (and two system calls). The spin is bounded and only
    /// watches the lock word, so a holder that is descheduled or dead costs
    /// at most [`SPIN_ROUNDS`] pauses before the blocking (and robust) path,
    /// which sleeps at most [`WAIT_SLICE_MS`] at a time (rule 3 of `txn`).
    /// Returns 0, `EOWNERDEAD` or another pthread error.
    pub fn acquire(&self) -> libc::c_int {
        // One attempt whatever the word says: besides taking a free lock,
        // it reports at once (EDEADLK, the mutex checks errors) a lock this
        // thread holds itself — a signal handler's call that interrupted
        // the thread's own call — which the spin would watch in vain.
        let r = self.try_lock();
        if r != libc::EBUSY {
            return r;
        }
        for _ in 0..SPIN_ROUNDS {
            if self.looks_free() {
                let r = self.try_lock();
                if r != libc::EBUSY {
                    return r;
                }
            }
            core::hint::spin_loop();
        }
        loop {
            let r = self.lock_for_ms(WAIT_SLICE_MS);
            if r != libc::ETIMEDOUT {
                return r;
            }
            at_long_wait();
        }
    }

    /// Marks the state repaired after `EOWNERDEAD`.
    pub fn consistent(&self) {
        // SAFETY: as for `try_lock`; only the owner calls this.
        unsafe { libc::pthread_mutex_consistent(self.raw()) };
    }

    /// Releases the mutex the calling thread holds.
    pub fn unlock(&self) {
        crate::census::write(self.0.get() as usize, 40);
        // SAFETY: as for `try_lock`; the caller owns the mutex.
        unsafe { libc::pthread_mutex_unlock(self.raw()) };
    }
}

/// What the host runs when a thread has waited a whole slice for a lock
/// while holding none itself: 0, or a `fn()`.
static LONG_WAIT_HOOK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Local locks this thread holds through guards.
    static LOCAL_HELD: Cell<u32> = const { Cell::new(0) };
}

/// Sets the function a thread runs when it has waited a whole slice for a
/// domain or peer lock (a process stopped while holding it can make that
/// long) and holds no lock of the bus or of the process: the preload
/// library runs the application's signal handlers held meanwhile, which
/// the kernel module would have run in its sleep.
pub fn set_long_wait_hook(f: fn()) {
    LONG_WAIT_HOOK.store(f as usize, Ordering::Release);
}

fn at_long_wait() {
    let hook = LONG_WAIT_HOOK.load(Ordering::Acquire);
    if hook == 0 || LOCAL_HELD.try_with(Cell::get).unwrap_or(1) != 0 || crate::sys::holds_robust_mutex() {
        return;
    }
    // SAFETY: only `set_long_wait_hook` stores here, a `fn()`.
    let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
    f();
}

/// Pauses spent watching a held lock before sleeping on it.
pub const SPIN_ROUNDS: u32 = 200;
/// Longest single sleep on a lock before looking again.
pub const WAIT_SLICE_MS: u64 = 20;

type ClockLock = unsafe extern "C" fn(*mut libc::pthread_mutex_t, libc::clockid_t, *const libc::timespec) -> libc::c_int;

/// `pthread_mutex_clocklock` (glibc 2.30 and later), looked up once.
fn clocklock() -> Option<ClockLock> {
    static F: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *F.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_DEFAULT searches
        // the global scope, which holds the C library.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_mutex_clocklock".as_ptr()) as usize }
    });
    // SAFETY: a non-null address from dlsym is the function of that name,
    // whose C signature ClockLock spells out.
    (addr != 0).then(|| unsafe { core::mem::transmute::<usize, ClockLock>(addr) })
}

pub struct LocalMutex<T> {
    raw: Box<UnsafeCell<libc::pthread_mutex_t>>,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `raw`.
unsafe impl<T: Send> Send for LocalMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for LocalMutex<T> {}

impl<T> LocalMutex<T> {
    pub fn new(value: T) -> Self {
        LocalMutex { raw: Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)), value: UnsafeCell::new(value) }
    }

    pub fn lock(&self) -> LocalGuard<'_, T> {
        self.raw_lock();
        let _ = LOCAL_HELD.try_with(|n| n.set(n.get() + 1));
        LocalGuard { m: self }
    }

    /// Takes the lock without a guard (fork handlers).
    pub fn raw_lock(&self) {
        // SAFETY: the mutex is initialised and lives in a stable Box.
        unsafe { libc::pthread_mutex_lock(self.raw.get()) };
    }

    /// Releases a lock taken with [`raw_lock`](Self::raw_lock).
    pub fn raw_unlock(&self) {
        // SAFETY: called only by the owner of a raw_lock.
        unsafe { libc::pthread_mutex_unlock(self.raw.get()) };
    }

    /// The value, for a caller that holds the lock through
    /// [`raw_lock`](Self::raw_lock).
    ///
    /// # Safety
    /// The calling thread must hold the lock and not create a guard meanwhile.
    pub unsafe fn peek_locked(&self) -> &T {
        &*self.value.get()
    }

    /// Re-initialises the lock in a fork child, where the locking thread
    /// may not exist.
    pub fn reinit_in_child(&self) {
        // SAFETY: in the child only the forking thread exists; it owns the
        // lock (taken in the prepare handler), so nobody else can observe it.
        unsafe { *self.raw.get() = libc::PTHREAD_MUTEX_INITIALIZER };
    }
}

pub struct LocalGuard<'a, T> {
    m: &'a LocalMutex<T>,
}

impl<T> Deref for LocalGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.m.value.get() }
    }
}

impl<T> DerefMut for LocalGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock exclusively.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T> Drop for LocalGuard<'_, T> {
    fn drop(&mut self) {
        let _ = LOCAL_HELD.try_with(|n| n.set(n.get().saturating_sub(1)));
        self.m.raw_unlock();
    }
}
