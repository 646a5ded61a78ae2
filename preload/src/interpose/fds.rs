//! Descriptor lifecycle: close (and closing at exit), dup, fcntl,
//! close_range and closefrom.
#![allow(clippy::missing_safety_doc)]

use super::*;

// ------------------------------------------------- closing and duplicating

/// A peer lost one of this process's descriptors (`fd`): if none is left
/// here, check whether it was the last one anywhere.
fn after_close(fd: c_int, old: Option<Arc<FdInfo>>) {
    if let Some(info) = old {
        let last = keep_errno(|| guarded(|| false, || !fdtable::still_open(&info.peer)));
        if crate::trace::on() {
            keep_errno(|| guarded(|| (), || crate::trace::close(fd, info.peer.serial(), last)));
        }
        if last {
            keep_errno(|| guarded(|| (), || info.peer.closed()));
        }
    }
}

/// Forgets `fd` before it is closed: its peer entry (returned) and what
/// the shim remembers about it.
fn forget(fd: c_int) -> Option<Arc<FdInfo>> {
    guarded(
        || None,
        || {
            let old = fdtable::take(fd);
            fdtable::forget_checked(fd);
            old
        },
    )
}

/// Whether closing or replacing `fd` changes what the shim remembers: it
/// is a peer fd, a known epoll set or one of the shim's own.
fn tracked(fd: c_int) -> bool {
    fdtable::is_peer_fd(fd) || crate::epolls::is_set(fd) || shm_core::is_internal_fd(fd)
}

/// Whether a call on the descriptors `fds` must go straight to the
/// kernel: it would change the shim's tables, which belong to the parent
/// when this is a `vfork` child (see `owner`).
fn vfork_child_touching(fds: &[c_int]) -> bool {
    fds.iter().any(|&fd| tracked(fd)) && !crate::owner::memory_is_ours()
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if vfork_child_touching(&[fd]) {
        return call_real!(crate::real::CLOSE, fn(c_int) -> c_int, fd);
    }
    if shm_core::is_internal_fd(fd) {
        // The application closing "everything": the shim's own sockets
        // stay; pretend they were closed.
        return 0;
    }
    let old = forget(fd);
    let r = call_real!(crate::real::CLOSE, fn(c_int) -> c_int, fd);
    if r == 0 {
        guarded(|| (), || super::epoll::closed(fd));
    }
    after_close(fd, old);
    r
}

/// At a normal exit (exit(3), a return from main) the module's peers went
/// away with the process's files, before anyone could see the process
/// gone; the kernel closes the sockets only later, and the watcher would
/// tear the peers down up to a scan period afterwards. So the peer fds are
/// closed here, as the last thing the process does, and peers whose last
/// fd they were are torn down at once. Only when no other application
/// thread is left: those may use their peers until the process ends.
/// Then the process leaves its domains: the last process to use a domain
/// removes its memory (see shm-core's `memory`).
extern "C" fn close_peers_at_exit() {
    if !(fdtable::any() || shm_core::Domain::any_attached()) || !guarded(|| false, shm_core::only_thread_left) {
        return;
    }
    let old = guarded(Vec::new, || fdtable::take_range(0, c_uint::MAX));
    for (fd, _) in &old {
        // SAFETY: closes a descriptor of a process that is exiting; no
        // application code runs after this destructor.
        unsafe { call_real!(crate::real::CLOSE, fn(c_int) -> c_int, *fd) };
    }
    // As after close_range: a peer with several of these fds is torn
    // down by the first check, and the others find it gone.
    for (fd, info) in old {
        after_close(fd as c_int, Some(info));
    }
    guarded(|| (), shm_core::Domain::leave_all);
}

#[used]
#[link_section = ".fini_array"]
static CLOSE_PEERS_AT_EXIT: extern "C" fn() = close_peers_at_exit;

/// fclose(3) closes its descriptor with the C library's internal close,
/// which the interposer above never sees: forget a peer fd here.
#[no_mangle]
pub unsafe extern "C" fn fclose(f: *mut libc::FILE) -> c_int {
    let fd = if f.is_null() { -1 } else { libc::fileno(f) };
    if vfork_child_touching(&[fd]) {
        return call_real!(crate::real::FCLOSE, fn(*mut libc::FILE) -> c_int, f);
    }
    let old = forget(fd);
    let r = call_real!(crate::real::FCLOSE, fn(*mut libc::FILE) -> c_int, f);
    after_close(fd, old);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = call_real!(crate::real::DUP, fn(c_int) -> c_int, fd);
    if r >= 0 && !vfork_child_touching(&[fd]) {
        guarded(|| (), || duplicated(fd, r));
    }
    r
}

/// `new` is now a duplicate of `old`: a peer fd if `old` is one, and in
/// the same epoll sets' eyes.
fn duplicated(old: c_int, new: c_int) {
    if let Some(i) = fdtable::get(old) {
        fdtable::set(new, i);
    }
    crate::epolls::shared(old);
}

unsafe fn dup_onto(old: c_int, new: c_int, f: impl FnOnce() -> c_int) -> c_int {
    if vfork_child_touching(&[old, new]) {
        return f();
    }
    let replaced = if old != new {
        keep_errno(|| guarded(|| false, || shm_core::evict_internal_fd(new)));
        forget(new)
    } else {
        None
    };
    let r = f();
    if r >= 0 && old != new {
        guarded(
            || (),
            || {
                super::epoll::closed(new);
                crate::epolls::shared(old);
            },
        );
    }
    if r < 0 {
        if let Some(p) = replaced {
            guarded(|| (), || fdtable::set(new, p));
        }
        return r;
    }
    guarded(|| (), || duplicated(old, new));
    after_close(new, replaced);
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    dup_onto(old, new, || call_real!(crate::real::DUP2, fn(c_int, c_int) -> c_int, old, new))
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    dup_onto(old, new, || call_real!(crate::real::DUP3, fn(c_int, c_int, c_int) -> c_int, old, new, flags))
}

unsafe fn fcntl_common(real: &crate::real::Real, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = call_real!(real, fn(c_int, c_int, c_ulong) -> c_int, fd, cmd, arg);
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) && !vfork_child_touching(&[fd]) {
        guarded(|| (), || duplicated(fd, r));
    }
    if r >= 0 && cmd == libc::F_GETFL {
        return guarded(|| r, || device_file_flags(fd, r));
    }
    r
}

/// The kernel's O_LARGEFILE, which it sets on every open of a 64-bit
/// process. The C library's constant is 0 on these targets, since the flag
/// is implied there, so the kernel's value is spelt out.
#[cfg(any(target_arch = "x86_64", target_arch = "riscv64", target_arch = "s390x", target_arch = "loongarch64"))]
const KERNEL_O_LARGEFILE: c_int = 0o100000;
#[cfg(target_arch = "aarch64")]
const KERNEL_O_LARGEFILE: c_int = 0o400000;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "riscv64",
    target_arch = "s390x",
    target_arch = "loongarch64",
    target_arch = "aarch64"
)))]
const KERNEL_O_LARGEFILE: c_int = 0;

/// F_GETFL of a peer fd as the module's file would answer it: the access
/// mode of the open (the socket always says O_RDWR) and O_LARGEFILE. Status
/// flags such as O_NONBLOCK are the socket's own, kept up to date by F_SETFL.
pub(super) fn device_file_flags(fd: c_int, socket_flags: c_int) -> c_int {
    // Only a socket's flags (O_RDWR, never O_LARGEFILE) can belong to a
    // peer; other descriptors are not looked up at all.
    if socket_flags & libc::O_ACCMODE != libc::O_RDWR || socket_flags & KERNEL_O_LARGEFILE != 0 {
        return socket_flags;
    }
    match fdtable::lookup(fd) {
        Some(info) => (socket_flags & !libc::O_ACCMODE) | info.access | KERNEL_O_LARGEFILE,
        None => socket_flags,
    }
}

#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(&crate::real::FCNTL, fd, cmd, arg)
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(&crate::real::FCNTL64, fd, cmd, arg)
}

/// close_range(2): closes the range around the shim's own descriptors.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let tables = fdtable::any() || crate::epolls::any() || shm_core::Domain::any_attached();
    if flags as c_uint & libc::CLOSE_RANGE_CLOEXEC != 0 || tables && !crate::owner::memory_is_ours() {
        return call_real!(crate::real::CLOSE_RANGE, fn(c_uint, c_uint, c_int) -> c_int, first, last, flags);
    }
    let old = guarded(Vec::new, || {
        let old = fdtable::take_range(first, last);
        fdtable::forget_checked_range(first, last);
        old
    });
    let mut lo = first as u64;
    let hi = last as u64;
    let mut internal: Vec<u64> = (0..4096u64).filter(|f| *f >= lo && *f <= hi && shm_core::is_internal_fd(*f as i32)).collect();
    internal.sort();
    let mut r = 0;
    for fd in internal.into_iter().chain(std::iter::once(hi + 1)) {
        if fd > lo {
            let end = (fd - 1).min(u32::MAX as u64) as c_uint;
            r = call_real!(crate::real::CLOSE_RANGE, fn(c_uint, c_uint, c_int) -> c_int, lo as c_uint, end, flags);
            if r < 0 {
                break;
            }
        }
        lo = fd + 1;
        if lo > hi {
            break;
        }
    }
    if r == 0 {
        guarded(|| (), || super::epoll::closed_range(first, last));
    }
    for (fd, o) in old {
        after_close(fd as c_int, Some(o));
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    close_range(lowfd.max(0) as c_uint, c_uint::MAX, 0);
}
