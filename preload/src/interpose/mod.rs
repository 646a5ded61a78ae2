//! The libc entry points this library replaces, one file per family. Each
//! one recognises bus1 descriptors or the device path and otherwise calls
//! straight through to libc. This module and its children are among the
//! few that contain `unsafe`: every function here is called by C code with
//! C's contract for its arguments.
#![allow(clippy::missing_safety_doc)]

mod epoll;
mod fds;
mod io;
mod memory;
mod paths;
mod signals;
mod waits;

use crate::device;
use crate::dispatch;
use crate::fdtable::{self, FdInfo};
use crate::procfs;
use crate::uaccess;
use libc::{c_char, c_int, c_uint, c_ulong, c_void, off_t};
use shm_core::{Errno, OpenFlags, Peer};
use std::ffi::CStr;
use std::sync::Arc;

pub(crate) fn set_errno(e: i32) {
    // SAFETY: errno is thread-local and always valid.
    unsafe { *libc::__errno_location() = e };
}

pub(crate) fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Runs `f` without letting it change errno.
pub(crate) fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let e = errno();
    let r = f();
    set_errno(e);
    r
}

/// Runs the shim's own part of an entry point. Nothing may unwind into
/// the C caller: a panic in it (an inconsistency the engine found in a
/// domain, see shm-core's `fault`) gives `fallback()` instead, which is
/// either a failure with EIO or the path the call takes for anything that
/// is not bus1's. The application's signal handlers of this thread wait
/// until it is over (see `sigdefer`).
pub(crate) fn guarded<T>(fallback: impl FnOnce() -> T, f: impl FnOnce() -> T) -> T {
    crate::sigdefer::hold(|| shm_core::contain(|| Ok(f()))).unwrap_or_else(|_| fallback())
}

pub(crate) fn fail(e: Errno) -> c_int {
    set_errno(e.0);
    -1
}

/// A path argument as a C string; None for NULL. The caller passes `path`
/// as the C library got it: null or a C string that outlives `'a`.
pub(crate) unsafe fn c_path<'a>(path: *const c_char) -> Option<&'a CStr> {
    // SAFETY: non-null, so a NUL-terminated string by C's contract for
    // path arguments; a bad pointer faults here as it would in libc.
    (!path.is_null()).then(|| unsafe { CStr::from_ptr(path) })
}

/// Whether the path argument `path` (relative to `dirfd`) names the bus1
/// device; false for NULL. The caller passes `path` as for [`c_path`].
pub(crate) unsafe fn is_device_path(dirfd: c_int, path: *const c_char) -> bool {
    guarded(|| false, || c_path(path).is_some_and(|p| device::is_device(dirfd, p)))
}
