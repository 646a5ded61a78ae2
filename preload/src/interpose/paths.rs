//! open, stat, access, realpath, readlink and the extended-attribute
//! queries: the device path and the `/proc` views of peer fds.
#![allow(clippy::missing_safety_doc)]

use super::*;

// ------------------------------------------------------------------ open

/// open(2) of the device: a new peer in the configured domain.
fn open_device(path: &CStr, flags: c_int) -> c_int {
    if flags & libc::O_EXCL != 0 && flags & libc::O_CREAT != 0 {
        return traced_open_failure(path, flags, Errno::EEXIST);
    }
    if flags & libc::O_DIRECTORY != 0 {
        return traced_open_failure(path, flags, Errno(libc::ENOTDIR));
    }
    let of = OpenFlags { access: flags & libc::O_ACCMODE, cloexec: flags & libc::O_CLOEXEC != 0, nonblock: flags & libc::O_NONBLOCK != 0 };
    let domain = crate::config::domain();
    let r = Peer::open_as(&domain, of, crate::config::abi_mode());
    if crate::trace::on() {
        let (outcome, note) = match &r {
            Ok((fd, peer)) => (Ok(*fd), format!("peer {:#x}", peer.serial())),
            // The only ENODEV of an open: the bus cannot be shared.
            Err(Errno::ENODEV) => (Err(Errno::ENODEV), "the domain was made by another version of the shim and is still in use".into()),
            // A directory or file another user could control.
            Err(Errno::EPERM) => (Err(Errno::EPERM), shm_core::take_refusal().map(|r| format!("refused: {r}")).unwrap_or_default()),
            Err(e) => (Err(*e), String::new()),
        };
        crate::trace::open(path.to_bytes(), flags, Some(&domain), outcome, &note);
    }
    match r {
        Ok((fd, peer)) => {
            fdtable::set(fd, Arc::new(FdInfo { peer, access: of.access }));
            fd
        }
        Err(e) => fail(e),
    }
}

/// An open of the node refused before any domain is involved.
fn traced_open_failure(path: &CStr, flags: c_int, e: Errno) -> c_int {
    if crate::trace::on() {
        crate::trace::open(path.to_bytes(), flags, None, Err(e), "");
    }
    fail(e)
}

// C declares open(2) variadic (the mode is read only with O_CREAT or
// O_TMPFILE); Rust cannot define a variadic function on stable. On the
// Linux targets this builds for, a variadic call passes `mode` in the same
// register as the third argument of this definition, as every LD_PRELOAD
// interposer of open relies on. Newer compilers reject the mismatch with
// the standard library's own declaration unless told it is deliberate.
macro_rules! open_fn {
    ($name:ident, $real:ident) => {
        #[allow(unknown_lints, invalid_runtime_symbol_definitions)]
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            if let Some(fd) = guarded(|| None, || open_special(libc::AT_FDCWD, path, flags)) {
                return fd;
            }
            call_real!(crate::real::$real, fn(*const c_char, c_int, c_uint) -> c_int, path, flags, mode)
        }
    };
}
open_fn!(open, OPEN);
open_fn!(open64, OPEN64);

macro_rules! openat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
            if let Some(fd) = guarded(|| None, || open_special(dirfd, path, flags)) {
                return fd;
            }
            call_real!(crate::real::$real, fn(c_int, *const c_char, c_int, c_uint) -> c_int, dirfd, path, flags, mode)
        }
    };
}
openat_fn!(openat, OPENAT);
openat_fn!(openat64, OPENAT64);

macro_rules! open2_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            if let Some(fd) = guarded(|| None, || open_special(libc::AT_FDCWD, path, flags)) {
                return fd;
            }
            call_real!(crate::real::$real, fn(*const c_char, c_int) -> c_int, path, flags)
        }
    };
}
open2_fn!(__open_2, OPEN_2);
open2_fn!(__open64_2, OPEN64_2);

macro_rules! openat2_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            if let Some(fd) = guarded(|| None, || open_special(dirfd, path, flags)) {
                return fd;
            }
            call_real!(crate::real::$real, fn(c_int, *const c_char, c_int) -> c_int, dirfd, path, flags)
        }
    };
}
openat2_fn!(__openat_2, OPENAT_2);
openat2_fn!(__openat64_2, OPENAT64_2);

/// open(2) of something the shim stands in for: the device node, a peer
/// fd's or node path descriptor's `/proc/self/fd/N` (which opens the node
/// again, as for the module's file), or a peer fd's fdinfo. None for the
/// real open. The caller passes `path` as for [`c_path`].
unsafe fn open_special(dirfd: c_int, path: *const c_char, flags: c_int) -> Option<c_int> {
    let path = c_path(path)?;
    if device::is_device(dirfd, path) {
        return Some(open_node(path, flags));
    }
    match procfs::entry(path)? {
        procfs::Entry::FdInfo(fd) => open_fdinfo(fd, flags),
        procfs::Entry::FdLink(fd) => (fdtable::lookup(fd).is_some() || device::is_path_fd(fd)).then(|| open_node(path, flags)),
    }
}

/// open(2) of the node (named `path`): a new peer, or with O_PATH a path
/// descriptor.
fn open_node(path: &CStr, flags: c_int) -> c_int {
    if flags & libc::O_PATH == 0 {
        return open_device(path, flags);
    }
    let r = device::open_path_fd(flags);
    if crate::trace::on() {
        crate::trace::open(path.to_bytes(), flags, None, r.map_err(Errno), "a path descriptor, no peer");
    }
    match r {
        Ok(fd) => fd,
        Err(e) => fail(Errno(e)),
    }
}

// ------------------------------------------------------------ /proc views

/// open(2) of `/proc/self/fdinfo/N` for a peer fd N, read-only: the
/// module's fdinfo text, in a memory file. None when the real open should
/// run instead (another descriptor, or an open that the real file would
/// refuse anyway).
fn open_fdinfo(fd: c_int, flags: c_int) -> Option<c_int> {
    if flags & (libc::O_ACCMODE | libc::O_PATH | libc::O_DIRECTORY | libc::O_CREAT) != libc::O_RDONLY {
        return None;
    }
    let serial = match fdtable::lookup(fd) {
        Some(info) => Some(info.peer.serial()),
        // A path descriptor of the node has no file operations, so the
        // kernel shows only its generic lines.
        None if device::is_path_fd(fd) => None,
        None => return None,
    };
    let text = fdinfo_of(fd, serial)?;
    Some(memory_file(text.as_bytes(), flags & libc::O_CLOEXEC != 0))
}

/// The fdinfo text of `fd` as a descriptor of the node: with the driver's
/// line for a peer (`serial`), without it for a path descriptor. None if
/// `fd` is not open.
fn fdinfo_of(fd: c_int, serial: Option<u64>) -> Option<String> {
    // SAFETY: fcntl with integer arguments only.
    let fl = unsafe { call_real!(crate::real::FCNTL, fn(c_int, c_int, c_ulong) -> c_int, fd, libc::F_GETFL, 0) };
    // SAFETY: as above.
    let fdfl = unsafe { call_real!(crate::real::FCNTL, fn(c_int, c_int, c_ulong) -> c_int, fd, libc::F_GETFD, 0) };
    if fl < 0 || fdfl < 0 {
        return None;
    }
    let mut shown = super::fds::device_file_flags(fd, fl);
    if fdfl & libc::FD_CLOEXEC != 0 {
        shown |= libc::O_CLOEXEC;
    }
    Some(procfs::fdinfo_text(shown, device_mount_id(), device::DEVICE_INO, serial))
}

/// The mount ID of the directory holding the device node (where the
/// module's node would live), 0 if the kernel does not say.
fn device_mount_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let (dir, _) = device::device_dir_and_name();
        // SAFETY: all-zero is a valid struct statx.
        let mut stx: libc::statx = unsafe { core::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a writable struct statx; the
        // raw system call keeps this out of the statx interposer.
        let r = unsafe { libc::syscall(libc::SYS_statx, libc::AT_FDCWD, dir.as_ptr(), 0, libc::STATX_MNT_ID, &mut stx) };
        if r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0 {
            stx.stx_mnt_id
        } else {
            0
        }
    })
}

/// A fresh memory file holding `bytes`, positioned at its start; -1 with
/// errno set if it cannot be made.
fn memory_file(bytes: &[u8], cloexec: bool) -> c_int {
    let flags = if cloexec { libc::MFD_CLOEXEC } else { 0 };
    // SAFETY: a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"bus1-fdinfo".as_ptr(), flags) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: writes `bytes`, a live buffer, to our fresh descriptor.
    let n = unsafe { libc::syscall(libc::SYS_pwrite64, fd, bytes.as_ptr(), bytes.len(), 0) };
    if n != bytes.len() as i64 {
        // SAFETY: closing the descriptor made above.
        keep_errno(|| unsafe { libc::syscall(libc::SYS_close, fd) });
        return fail(Errno(libc::EIO));
    }
    fd
}

/// The open(2) flags of an fopen(3) mode string (None if it is not one).
fn fopen_flags(mode: *const c_char) -> Option<c_int> {
    if mode.is_null() {
        return None;
    }
    // SAFETY: libc callers pass a NUL-terminated mode string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let plus = m.contains(&b'+');
    let mut flags = match (m.first()?, plus) {
        (b'r', false) => libc::O_RDONLY,
        (b'r', true) => libc::O_RDWR,
        (b'w', p) => libc::O_CREAT | libc::O_TRUNC | if p { libc::O_RDWR } else { libc::O_WRONLY },
        (b'a', p) => libc::O_CREAT | libc::O_APPEND | if p { libc::O_RDWR } else { libc::O_WRONLY },
        _ => return None,
    };
    if m.contains(&b'e') {
        flags |= libc::O_CLOEXEC;
    }
    if m.contains(&b'x') {
        flags |= libc::O_EXCL;
    }
    Some(flags)
}

/// fopen(3) of the device or of a peer fd's fdinfo: the descriptor as
/// open(2) would give it, or None for the real fopen. The caller passes
/// `path` as for [`c_path`].
unsafe fn fopen_special(path: *const c_char, mode: *const c_char) -> Option<c_int> {
    open_special(libc::AT_FDCWD, path, fopen_flags(mode)?)
}

// The C library's fopen opens files with its internal open, which the
// open interposers above never see.
macro_rules! fopen_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
            if let Some(fd) = guarded(|| None, || fopen_special(path, mode)) {
                if fd < 0 {
                    return core::ptr::null_mut();
                }
                let f = libc::fdopen(fd, mode);
                if f.is_null() {
                    keep_errno(|| super::fds::close(fd));
                }
                return f;
            }
            call_real!(crate::real::$real, fn(*const c_char, *const c_char) -> *mut libc::FILE, path, mode)
        }
    };
}
fopen_fn!(fopen, FOPEN);
fopen_fn!(fopen64, FOPEN64);

/// readlink of `/proc/self/fd/N` for a peer fd or node path descriptor N:
/// the device's canonical path, as the module's file would show. None when the real readlink should run.
/// The caller passes `path` as for [`c_path`].
unsafe fn readlink_peer(path: *const c_char, buf: *mut c_char, size: usize) -> Option<isize> {
    let procfs::Entry::FdLink(fd) = procfs::entry(c_path(path)?)? else { return None };
    if fdtable::lookup(fd).is_none() && !device::is_path_fd(fd) {
        return None;
    }
    if size == 0 {
        return Some(fail(Errno::EINVAL) as isize);
    }
    let dev = canonical_device_path();
    let dev = dev.as_bytes();
    let n = dev.len().min(size);
    use shm_core::UserMem;
    Some(match uaccess::ProcMem.write(buf as u64, &dev[..n]) {
        Ok(()) => n as isize,
        Err(e) => fail(e) as isize,
    })
}

#[no_mangle]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    if let Some(r) = guarded(|| None, || readlink_peer(path, buf, size)) {
        return r;
    }
    call_real!(crate::real::READLINK, fn(*const c_char, *mut c_char, usize) -> isize, path, buf, size)
}

#[no_mangle]
pub unsafe extern "C" fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    if let Some(r) = guarded(|| None, || readlink_peer(path, buf, size)) {
        return r;
    }
    call_real!(crate::real::READLINKAT, fn(c_int, *const c_char, *mut c_char, usize) -> isize, dirfd, path, buf, size)
}

// ------------------------------------------------------------------ stat

macro_rules! stat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, buf: *mut libc::stat) -> c_int {
            if is_device_path(libc::AT_FDCWD, path) && !buf.is_null() {
                device::fill_stat(&mut *buf);
                return 0;
            }
            call_real!(crate::real::$real, fn(*const c_char, *mut libc::stat) -> c_int, path, buf)
        }
    };
}
stat_fn!(stat, STAT);
stat_fn!(stat64, STAT64);
stat_fn!(lstat, LSTAT);
stat_fn!(lstat64, LSTAT64);

macro_rules! fstatat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
            if is_device_path(dirfd, path) && !buf.is_null() {
                device::fill_stat(&mut *buf);
                return 0;
            }
            let r = call_real!(crate::real::$real, fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int, dirfd, path, buf, flags);
            if empty_path_of_fd(path, flags) {
                return stat_of_fd(dirfd, r, buf);
            }
            r
        }
    };
}
fstatat_fn!(fstatat, FSTATAT);
fstatat_fn!(fstatat64, FSTATAT64);

macro_rules! xstat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
            if is_device_path(libc::AT_FDCWD, path) && !buf.is_null() {
                device::fill_stat(&mut *buf);
                return 0;
            }
            call_real!(crate::real::$real, fn(c_int, *const c_char, *mut libc::stat) -> c_int, ver, path, buf)
        }
    };
}
xstat_fn!(__xstat, XSTAT);
xstat_fn!(__xstat64, XSTAT64);
xstat_fn!(__lxstat, LXSTAT);
xstat_fn!(__lxstat64, LXSTAT64);

macro_rules! fxstatat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
            if is_device_path(dirfd, path) && !buf.is_null() {
                device::fill_stat(&mut *buf);
                return 0;
            }
            let r = call_real!(crate::real::$real, fn(c_int, c_int, *const c_char, *mut libc::stat, c_int) -> c_int, ver, dirfd, path, buf, flags);
            if empty_path_of_fd(path, flags) {
                return stat_of_fd(dirfd, r, buf);
            }
            r
        }
    };
}
fxstatat_fn!(__fxstatat, FXSTATAT);
fxstatat_fn!(__fxstatat64, FXSTATAT64);

#[no_mangle]
pub unsafe extern "C" fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut libc::statx) -> c_int {
    if is_device_path(dirfd, path) && !buf.is_null() {
        device::fill_statx(&mut *buf);
        return 0;
    }
    let r = call_real!(crate::real::STATX, fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int, dirfd, path, flags, mask, buf);
    if r == 0 && empty_path_of_fd(path, flags) && shows_node(dirfd, (*buf).stx_mode as u32, (*buf).stx_nlink as u64, (*buf).stx_size as i64) {
        device::fill_statx(&mut *buf);
    }
    r
}

/// Whether `fd`, whose real stat says `mode`, `nlink` and `size`, shows
/// the device node: a peer fd (a socket the shim knows, or recognises, as
/// a peer) or a path descriptor of the node.
fn shows_node(fd: c_int, mode: u32, nlink: u64, size: i64) -> bool {
    let peer = || mode & libc::S_IFMT == libc::S_IFSOCK && fdtable::lookup(fd).is_some();
    guarded(|| false, peer) || device::is_path_fd_stat(mode, nlink, size)
}

/// `path` is "" with AT_EMPTY_PATH: the call is about the descriptor.
/// The caller passes `path` as the C library got it: null or a C string.
unsafe fn empty_path_of_fd(path: *const c_char, flags: c_int) -> bool {
    flags & libc::AT_EMPTY_PATH != 0 && !path.is_null() && *path == 0
}

/// After a successful fstat of `fd` into `buf`: a peer fd or a path
/// descriptor of the node shows the device node, as the module's file
/// does. The caller passes `buf` as the C library got it: null or a
/// writable struct stat that the real call just filled.
unsafe fn stat_of_fd(fd: c_int, r: c_int, buf: *mut libc::stat) -> c_int {
    if r == 0 && !buf.is_null() && shows_node(fd, (*buf).st_mode, (*buf).st_nlink, (*buf).st_size) {
        device::fill_stat(&mut *buf);
    }
    r
}

macro_rules! fstat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut libc::stat) -> c_int {
            let r = call_real!(crate::real::$real, fn(c_int, *mut libc::stat) -> c_int, fd, buf);
            stat_of_fd(fd, r, buf)
        }
    };
}
fstat_fn!(fstat, FSTAT);
fstat_fn!(fstat64, FSTAT64);

macro_rules! fxstat_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
            let r = call_real!(crate::real::$real, fn(c_int, c_int, *mut libc::stat) -> c_int, ver, fd, buf);
            stat_of_fd(fd, r, buf)
        }
    };
}
fxstat_fn!(__fxstat, FXSTAT);
fxstat_fn!(__fxstat64, FXSTAT64);

macro_rules! access_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_int) -> c_int {
            if is_device_path(libc::AT_FDCWD, path) {
                return match device::access(mode) {
                    Ok(()) => 0,
                    Err(e) => fail(Errno(e)),
                };
            }
            call_real!(crate::real::$real, fn(*const c_char, c_int) -> c_int, path, mode)
        }
    };
}
access_fn!(access, ACCESS);
access_fn!(euidaccess, EUIDACCESS);
access_fn!(eaccess, EACCESS);

#[no_mangle]
pub unsafe extern "C" fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
    if is_device_path(dirfd, path) {
        return match device::access(mode) {
            Ok(()) => 0,
            Err(e) => fail(Errno(e)),
        };
    }
    call_real!(crate::real::FACCESSAT, fn(c_int, *const c_char, c_int, c_int) -> c_int, dirfd, path, mode, flags)
}

// ------------------------------------------------------------- realpath

/// The result of a real `realpath`-like call `r`, except that when it
/// failed with ENOENT on the device path, the device path resolves to
/// its canonical form, as the module's node would (the C library looks the
/// path up with its internal calls, which the shim does not see).
/// `resolved` is the caller's buffer of PATH_MAX bytes, or null for a new
/// allocation.
unsafe fn realpath_or_device(r: *mut c_char, path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    if !r.is_null() || errno() != libc::ENOENT || !is_device_path(libc::AT_FDCWD, path) {
        return r;
    }
    let Some(dev) = guarded(|| None, || Some(canonical_device_path())) else { return r };
    if resolved.is_null() {
        return libc::strdup(dev.as_ptr());
    }
    if dev.as_bytes().len() >= libc::PATH_MAX as usize {
        return r;
    }
    libc::strcpy(resolved, dev.as_ptr())
}

/// The device path with its directory resolved by the real `realpath`
/// (the node itself does not exist, but its directory does), so that a
/// relative or oddly spelt `BUS1_DEVICE` still resolves to an absolute,
/// canonical path. The configured path as it is if its directory does not
/// resolve.
fn canonical_device_path() -> std::ffi::CString {
    let configured = crate::config::with_device(|d| d.to_owned());
    let (dir, name) = device::device_dir_and_name();
    let mut buf = [0 as c_char; libc::PATH_MAX as usize];
    // SAFETY: a NUL-terminated path and a buffer of PATH_MAX bytes, as
    // realpath requires.
    let r = keep_errno(|| unsafe {
        call_real!(crate::real::REALPATH, fn(*const c_char, *mut c_char) -> *mut c_char, dir.as_ptr(), buf.as_mut_ptr())
    });
    if r.is_null() || name.is_empty() {
        return configured;
    }
    // SAFETY: realpath succeeded, so buf holds a NUL-terminated path.
    let mut path = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_bytes().to_vec();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(&name);
    std::ffi::CString::new(path).unwrap_or(configured)
}

#[no_mangle]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    let r = call_real!(crate::real::REALPATH, fn(*const c_char, *mut c_char) -> *mut c_char, path, resolved);
    realpath_or_device(r, path, resolved)
}

#[no_mangle]
pub unsafe extern "C" fn __realpath_chk(path: *const c_char, resolved: *mut c_char, size: usize) -> *mut c_char {
    let r = call_real!(crate::real::REALPATH_CHK, fn(*const c_char, *mut c_char, usize) -> *mut c_char, path, resolved, size);
    realpath_or_device(r, path, resolved)
}

#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    let r = call_real!(crate::real::CANONICALIZE_FILE_NAME, fn(*const c_char) -> *mut c_char, path);
    realpath_or_device(r, path, core::ptr::null_mut())
}

// ---------------------------------------------------------------- xattr

// The module's node has no extended attributes. `ls -l` asks for its
// security label (and ACL tools list its attributes): they must find none,
// not ENOENT.

macro_rules! getxattr_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize {
            if is_device_path(libc::AT_FDCWD, path) {
                return fail(Errno(libc::ENODATA)) as isize;
            }
            call_real!(crate::real::$real, fn(*const c_char, *const c_char, *mut c_void, usize) -> isize, path, name, value, size)
        }
    };
}
getxattr_fn!(getxattr, GETXATTR);
getxattr_fn!(lgetxattr, LGETXATTR);

macro_rules! listxattr_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, list: *mut c_char, size: usize) -> isize {
            if is_device_path(libc::AT_FDCWD, path) {
                return 0;
            }
            call_real!(crate::real::$real, fn(*const c_char, *mut c_char, usize) -> isize, path, list, size)
        }
    };
}
listxattr_fn!(listxattr, LISTXATTR);
listxattr_fn!(llistxattr, LLISTXATTR);
