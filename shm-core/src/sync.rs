//! Process-local locking that survives `fork`.
//!
//! The engine keeps a little per-process state (pool mappings, internal
//! sockets). A std mutex held by another thread at `fork` time would stay
//! locked forever in the child, so these locks are plain pthread mutexes
//! that the fork handlers (`crate::forks`) take before fork and release in
//! both parent and child. Cross-process state never uses these: it uses the
//! robust domain lock of `txn`.

use core::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};

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
        self.m.raw_unlock();
    }
}
