//! Raw system calls used by the bus.
//!
//! Every call goes through `syscall(2)` directly instead of the libc wrapper
//! of the same name. Inside the preload shim the libc names (`open`, `close`,
//! `mmap`, ...) resolve to the shim's own interposers, so calling them from
//! the engine would recurse; raw syscalls also are never pthread
//! cancellation points, so a cancelled caller cannot unwind out of a critical
//! section. This module is one of the few that contain `unsafe`.

use crate::errno::{Errno, Result};
use libc::{c_int, c_long, c_void};
use std::ffi::{CStr, CString};
use std::mem::{size_of, size_of_val, zeroed, MaybeUninit};

fn check(r: c_long) -> Result<c_long> {
    if r < 0 {
        Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)))
    } else {
        Ok(r)
    }
}

/// Retries a call interrupted by a signal.
fn retry(mut f: impl FnMut() -> c_long) -> Result<c_long> {
    loop {
        match check(f()) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// A path for the calls below; a path with a NUL byte inside is EINVAL.
pub fn cstr(path: &[u8]) -> Result<CString> {
    CString::new(path).map_err(|_| Errno::EINVAL)
}

pub fn open(path: &CStr, flags: c_int, mode: u32) -> Result<c_int> {
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    retry(|| unsafe {
        libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags | libc::O_CLOEXEC, mode)
    })
    .map(|fd| fd as c_int)
}

/// Writes all of `buf` to `fd` (retrying after EINTR and short writes).
pub fn write_all(fd: c_int, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = retry(|| unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) })?;
        if n == 0 {
            return Err(Errno::EAGAIN);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor number has no memory-safety preconditions.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

pub fn mkdir(path: &CStr, mode: u32) -> Result<()> {
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), mode) }).map(drop)
}

pub fn unlink(path: &CStr) -> Result<()> {
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, path.as_ptr(), 0) }).map(drop)
}

pub fn symlink(target: &CStr, path: &CStr) -> Result<()> {
    // SAFETY: valid NUL-terminated paths.
    check(unsafe { libc::syscall(libc::SYS_symlinkat, target.as_ptr(), libc::AT_FDCWD, path.as_ptr()) }).map(drop)
}

/// The target of the symbolic link at `path`.
pub fn readlink(path: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid path; the buffer is writable for its whole length.
    let n = check(unsafe {
        libc::syscall(libc::SYS_readlinkat, libc::AT_FDCWD, path.as_ptr(), buf.as_mut_ptr(), buf.len())
    })? as usize;
    if n >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads the whole of a (small) file, such as one under /proc.
pub fn read_file(path: &CStr) -> Result<Vec<u8>> {
    let fd = open(path, libc::O_RDONLY, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let r = loop {
        // SAFETY: `buf` is a writable buffer of the length passed.
        match retry(|| unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) }) {
            Ok(0) => break Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n as usize]),
            Err(e) => break Err(e),
        }
    };
    close(fd);
    r
}

/// The names of the entries of a directory (without `.` and `..`).
pub fn dir_names(path: &CStr) -> Result<Vec<Vec<u8>>> {
    let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let r = dir_names_at(fd);
    close(fd);
    r
}

/// The entry names of the open directory `fd`, read from its start.
pub fn dir_names_at(fd: c_int) -> Result<Vec<Vec<u8>>> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::syscall(libc::SYS_lseek, fd, 0i64, libc::SEEK_SET) })?;
    let mut names = Vec::new();
    // u64 elements keep the records 8-byte aligned.
    let mut buf = vec![0u64; 4096];
    let r = loop {
        // SAFETY: `buf` is a writable buffer of the byte length passed.
        let n = match retry(|| unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len() * 8) }) {
            Ok(0) => break Ok(names),
            Ok(n) => n as usize,
            Err(e) => break Err(e),
        };
        // SAFETY: the kernel wrote `n` bytes of linux_dirent64 records.
        let bytes = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u8, n) };
        let mut at = 0;
        // Each record: d_ino (8), d_off (8), d_reclen (2), d_type (1), name.
        while at + 19 <= n {
            let reclen = u16::from_ne_bytes([bytes[at + 16], bytes[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n {
                break;
            }
            let name = &bytes[at + 19..at + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
            at += reclen;
        }
    };
    r
}

// ------------------------------------------------ relative to a directory

/// `openat(2)` relative to the directory `dir` (O_CLOEXEC added).
pub fn openat(dir: c_int, name: &CStr, flags: c_int, mode: u32) -> Result<c_int> {
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    retry(|| unsafe { libc::syscall(libc::SYS_openat, dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })
        .map(|fd| fd as c_int)
}

pub fn mkdirat(dir: c_int, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::syscall(libc::SYS_mkdirat, dir, name.as_ptr(), mode) }).map(drop)
}

/// `unlinkat(2)`; `flags` may be `AT_REMOVEDIR`.
pub fn unlinkat(dir: c_int, name: &CStr, flags: c_int) -> Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::syscall(libc::SYS_unlinkat, dir, name.as_ptr(), flags) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: c_int, name: &CStr) -> Result<()> {
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_symlinkat, target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

/// The target of the symbolic link `name` in `dir` (never followed).
pub fn readlinkat(dir: c_int, name: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid name; the buffer is writable for its whole length.
    let n = check(unsafe { libc::syscall(libc::SYS_readlinkat, dir, name.as_ptr(), buf.as_mut_ptr(), buf.len()) })?
        as usize;
    if n >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    buf.truncate(n);
    Ok(buf)
}

/// `stat` of `name` in `dir`, of the link itself if it is a symbolic link.
pub fn lstatat(dir: c_int, name: &CStr) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid name and a writable stat buffer.
    check(unsafe {
        libc::syscall(libc::SYS_newfstatat, dir, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })?;
    // SAFETY: the kernel filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `fchmodat(2)` of `name` in `dir`.
pub fn fchmodat(dir: c_int, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: valid NUL-terminated name.
    check(unsafe { libc::syscall(libc::SYS_fchmodat, dir, name.as_ptr(), mode) }).map(drop)
}

/// `renameat2(2)` with `RENAME_NOREPLACE`: fails with EEXIST if `to`
/// exists.
pub fn rename_noreplace(dir: c_int, from: &CStr, to: &CStr) -> Result<()> {
    // SAFETY: valid NUL-terminated names.
    check(unsafe { libc::syscall(libc::SYS_renameat2, dir, from.as_ptr(), dir, to.as_ptr(), libc::RENAME_NOREPLACE) })
        .map(drop)
}

/// Sets the process's umask, returning the old one (tests only: the bus
/// never depends on the umask).
pub fn umask(mask: u32) -> u32 {
    // SAFETY: plain integer argument.
    unsafe { libc::syscall(libc::SYS_umask, mask) as u32 }
}

/// `dup3(2)`: makes `new` refer to what `old` refers to (close-on-exec).
pub fn dup3_cloexec(old: c_int, new: c_int) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_dup3, old, new, libc::O_CLOEXEC) }).map(drop)
}

pub fn fchown(fd: c_int, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_fchown, fd, uid, gid) }).map(drop)
}

/// The type of the file system holding `fd` (`statfs.f_type`).
pub fn fs_type(fd: c_int) -> Result<i64> {
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` is a writable buffer of the kernel's struct statfs size.
    check(unsafe { libc::syscall(libc::SYS_fstatfs, fd, st.as_mut_ptr()) })?;
    // SAFETY: the kernel filled the struct.
    let st = unsafe { st.assume_init() };
    // `f_type` is an i64 on x86-64 but narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    Ok(i64::from(st.f_type))
}

/// A lock on one byte of a file, owned by the open file description
/// (`F_OFD_SETLK`): it is shared by every descriptor of that description
/// (`dup`, `fork`) and goes away with the last of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ByteLock {
    Read,
    Write,
    Unlock,
}

/// Takes (or drops) a [`ByteLock`] on byte `at` of `fd`; with `wait`, waits
/// for a conflicting lock of another description to go, else fails with
/// EAGAIN.
pub fn byte_lock(fd: c_int, at: u64, lock: ByteLock, wait: bool) -> Result<()> {
    // SAFETY: struct flock is plain old data; all-zero is valid.
    let mut fl: libc::flock = unsafe { zeroed() };
    fl.l_type = match lock {
        ByteLock::Read => libc::F_RDLCK,
        ByteLock::Write => libc::F_WRLCK,
        ByteLock::Unlock => libc::F_UNLCK,
    } as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = at as i64;
    fl.l_len = 1;
    let cmd = if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK };
    // SAFETY: `fl` is a valid struct flock for the duration of the call.
    match retry(|| unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, &mut fl as *mut libc::flock) }) {
        Err(Errno(libc::EACCES)) => Err(Errno::EAGAIN),
        r => r.map(drop),
    }
}

pub fn ftruncate(fd: c_int, len: u64) -> Result<()> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::syscall(libc::SYS_ftruncate, fd, len as i64) }).map(drop)
}

pub fn fallocate(fd: c_int, mode: c_int, off: u64, len: u64) -> Result<()> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::syscall(libc::SYS_fallocate, fd, mode, off as i64, len as i64) }).map(drop)
}

pub fn flock(fd: c_int, op: c_int) -> Result<()> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::syscall(libc::SYS_flock, fd, op) }).map(drop)
}

/// Maps `len` bytes of `fd` shared. The caller owns the returned range.
pub fn mmap_shared(fd: c_int, len: usize, prot: c_int) -> Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias
    // any existing Rust object.
    let p = check(unsafe {
        libc::syscall(libc::SYS_mmap, 0usize, len, prot, libc::MAP_SHARED, fd, 0usize)
    })?;
    Ok(p as *mut u8)
}

/// Frees the backing pages of a shared file mapping range (the file gets
/// a hole; later reads see zeros).
///
/// # Safety
/// The range must lie in a mapping this process made with [`mmap_shared`]
/// and hold nothing anyone still needs.
pub unsafe fn madvise_remove(addr: *mut u8, len: usize) -> Result<()> {
    check(libc::syscall(libc::SYS_madvise, addr, len, libc::MADV_REMOVE)).map(drop)
}

/// Unmaps a range this process mapped with [`mmap_shared`].
///
/// # Safety
/// No reference into the range may be used afterwards.
pub unsafe fn munmap(addr: *mut u8, len: usize) {
    libc::syscall(libc::SYS_munmap, addr, len);
}

pub fn fstat(fd: c_int) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a writable buffer of the kernel's struct stat size.
    check(unsafe { libc::syscall(libc::SYS_fstat, fd, st.as_mut_ptr()) })?;
    // SAFETY: the kernel filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub fn stat(path: &CStr) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid path and a writable stat buffer.
    check(unsafe {
        libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, path.as_ptr(), st.as_mut_ptr(), 0)
    })?;
    // SAFETY: the kernel filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `stat` of the link itself when `path` is a symbolic link.
pub fn lstat(path: &CStr) -> Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid path and a writable stat buffer.
    check(unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            path.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: the kernel filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> Result<c_long> {
    // SAFETY: only integer-argument commands are used by the engine.
    check(unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) })
}

pub fn getuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getuid) as u32 }
}

/// The effective user ID: the owner of the files this process creates.
pub fn geteuid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_geteuid) as u32 }
}

pub fn getgid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getgid) as u32 }
}

pub fn getpid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as u32 }
}

pub fn gettid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Kills the calling process with SIGKILL (crash injection).
pub fn kill_self() {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_kill, libc::getpid(), libc::SIGKILL) };
}

/// Stops the calling process with SIGSTOP until someone sends SIGCONT
/// (the freeze hook of the isolation tests).
pub fn stop_self() {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_kill, libc::getpid(), libc::SIGSTOP) };
}

/// Whether process `pid` exists (a zombie counts; a process of another
/// user counts too: only "no such process" says it is gone).
pub fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks; integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_kill, pid as c_int, 0) };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
}

/// Gives the CPU to another runnable task, if there is one.
pub fn yield_cpu() {
    // SAFETY: no arguments, no memory effects.
    unsafe { libc::syscall(libc::SYS_sched_yield) };
}

/// How many CPUs the calling thread may run on (1 if that cannot be told).
pub fn cpus_allowed() -> u32 {
    let mut set = [0u64; 16];
    // SAFETY: `set` is a writable buffer of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, size_of_val(&set), set.as_mut_ptr()) };
    if r <= 0 {
        return 1;
    }
    let n: u32 = set[..(r as usize / 8).min(set.len())].iter().map(|w| w.count_ones()).sum();
    n.max(1)
}

/// How many tasks the whole machine has runnable or running now (the
/// fourth field of `/proc/loadavg`), and how many CPUs are online; None if
/// either cannot be read. Raw system calls: no interposed `open`, and a
/// failure (EMFILE included) only means "not known".
pub fn runnable_tasks() -> Option<(u32, u32)> {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; `buf` is writable for its length; the
    // fd opened here is closed here.
    let n = unsafe {
        let fd = libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/proc/loadavg".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) as i32;
        if fd < 0 {
            return None;
        }
        let n = libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
        libc::syscall(libc::SYS_close, fd);
        n
    };
    let text = core::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
    let running = text.split_whitespace().nth(3)?.split('/').next()?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    Some((running, u32::try_from(cpus).ok()?.max(1)))
}

/// Sleeps while `*word == expected`, at most `timeout` (relative; None:
/// no limit). Returns early on a wake-up, a change of the word or a
/// signal; the caller re-checks whatever it waits for in every case.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout: Option<&libc::timespec>) {
    let ts = timeout.map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the call's duration (a
    // shared mapping for cross-process words, hence no PRIVATE flag); `ts`
    // is null or a valid timespec.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts, 0usize, 0u32) };
}

/// Whether the calling thread holds a robust mutex: the C library lists
/// those it holds in the thread's robust list, which the kernel knows the
/// head of. True when that cannot be read. (The list's pending entry is
/// not looked at: the C library may leave it pointing at a mutex whose
/// timed lock just failed, and no other lock operation is under way when
/// a thread asks.)
pub fn holds_robust_mutex() -> bool {
    #[repr(C)]
    struct RobustHead {
        list: *const c_void,
        futex_offset: c_long,
        pending: *const c_void,
    }
    let mut head: *const RobustHead = core::ptr::null();
    let mut len: usize = 0;
    // SAFETY: get_robust_list writes the head pointer and its length to
    // the two locations given. The head is the C library's record of this
    // thread (a stable address for the thread's life); an empty list
    // points to the head itself.
    unsafe {
        let r = libc::syscall(libc::SYS_get_robust_list, 0, &mut head as *mut *const RobustHead, &mut len as *mut usize);
        if r != 0 || head.is_null() || len < core::mem::size_of::<RobustHead>() {
            return true;
        }
        let h = core::ptr::read_volatile(head);
        h.list != head as *const c_void
    }
}

/// Wakes up to `n` sleepers of `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32, n: i32) {
    // SAFETY: as for `futex_wait`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0usize, 0usize, 0u32) };
}

/// Eight bytes from the kernel's random pool (zero if it has none yet).
pub fn getrandom_u64() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: `seed` is a writable 8-byte buffer.
    unsafe { libc::syscall(libc::SYS_getrandom, seed.as_mut_ptr(), 8usize, 0) };
    u64::from_ne_bytes(seed)
}

/// A number naming this program image: derived from the 16 random bytes
/// the kernel gives every image at exec (`AT_RANDOM`), so it is the same
/// for every copy of this library loaded into the process (the preload
/// shim's and one linked into the program itself) and new after an exec.
/// The bytes are mixed down to 32 bits before they are shared, as the C
/// library derives its stack guard from them. Zero if the kernel gave none.
pub fn image_number() -> u32 {
    // SAFETY: getauxval only reads the auxiliary vector.
    let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u8;
    if at.is_null() {
        return 0;
    }
    let mut bytes = [0u8; 16];
    // SAFETY: AT_RANDOM is the address of 16 bytes the kernel put on the
    // initial stack, readable for the life of the image.
    unsafe { core::ptr::copy_nonoverlapping(at, bytes.as_mut_ptr(), 16) };
    // FNV-1a over the 16 bytes: one-way enough that the number says
    // nothing useful about the guards.
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h
}

/// The soft RLIMIT_NOFILE (0 if it cannot be read).
pub fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid out pointer.
    unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_NOFILE, &mut rl as *mut libc::rlimit) };
    rl.rlim_cur
}

/// Runs `f` with every signal blocked in the calling thread (threads it
/// starts inherit that mask), then restores the thread's mask.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset operations on local sets, initialised by sigfillset
    // and by pthread_sigmask's out parameter before being read.
    unsafe {
        let mut all: libc::sigset_t = zeroed();
        let mut old: libc::sigset_t = zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        r
    }
}

/// The stack of the calling thread, as (lowest address, length), if the C
/// library can tell (`pthread_getattr_np`, a libc facility).
pub fn thread_stack() -> Option<(usize, usize)> {
    // SAFETY: the attribute object is initialised by pthread_getattr_np
    // before it is read and destroyed afterwards; the out pointers are
    // valid locals.
    unsafe {
        let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut addr: *mut c_void = core::ptr::null_mut();
        let mut len: usize = 0;
        let r = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut len);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (r == 0).then_some((addr as usize, len))
    }
}

/// Registers fork handlers (`pthread_atfork`, a libc facility with no
/// system call of its own).
pub fn atfork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions valid for the life of the
    // process, as `pthread_atfork` requires.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec { tv_sec: (ms / 1000) as _, tv_nsec: ((ms % 1000) * 1_000_000) as _ };
    // SAFETY: `ts` is a valid timespec; the remainder pointer may be NULL.
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts as *const libc::timespec, 0usize) };
}

/// The time `ms` milliseconds from now on `clock`, as the deadline of a
/// timed wait.
pub fn deadline_after_ms(clock: libc::clockid_t, ms: u64) -> libc::timespec {
    let mut ts = clock_now(clock);
    let ns = ts.tv_nsec as u64 + ms * 1_000_000;
    ts.tv_sec += (ns / 1_000_000_000) as libc::time_t;
    ts.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
    ts
}

fn clock_now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: valid out pointer; the callers pass clocks that always exist.
    unsafe { libc::clock_gettime(clock, ts.as_mut_ptr()) };
    // SAFETY: initialised (zeroed, then filled) above.
    unsafe { ts.assume_init() }
}

/// Monotonic clock in nanoseconds.
pub fn now_ns() -> u64 {
    let ts = clock_now(libc::CLOCK_MONOTONIC);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------- sockets

/// A `sockaddr_un` for a filesystem path.
pub struct UnixAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl UnixAddr {
    pub fn new(path: &[u8]) -> Result<UnixAddr> {
        // SAFETY: sockaddr_un is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_un = unsafe { zeroed() };
        if path.is_empty() || path.len() >= addr.sun_path.len() {
            return Err(Errno::ENAMETOOLONG);
        }
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let len = (size_of::<libc::sa_family_t>() + path.len() + 1) as libc::socklen_t;
        Ok(UnixAddr { addr, len })
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        &self.addr as *const libc::sockaddr_un as *const libc::sockaddr
    }
}

pub fn socket(ty: c_int) -> Result<c_int> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) })
        .map(|fd| fd as c_int)
}

/// Creates a socket with exactly the caller-visible flags (used for peer
/// fds, whose close-on-exec flag follows the opener's `O_CLOEXEC`).
pub fn socket_exact(ty: c_int) -> Result<c_int> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, ty, 0) }).map(|fd| fd as c_int)
}

pub fn socketpair(ty: c_int) -> Result<(c_int, c_int)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    check(unsafe {
        libc::syscall(libc::SYS_socketpair, libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    Ok((fds[0], fds[1]))
}

pub fn bind(fd: c_int, addr: &UnixAddr) -> Result<()> {
    // SAFETY: the address buffer lives for the duration of the call.
    check(unsafe { libc::syscall(libc::SYS_bind, fd, addr.as_ptr(), addr.len) }).map(drop)
}

pub fn connect(fd: c_int, addr: &UnixAddr) -> Result<()> {
    // SAFETY: the address buffer lives for the duration of the call.
    retry(|| unsafe { libc::syscall(libc::SYS_connect, fd, addr.as_ptr(), addr.len) }).map(drop)
}

pub fn listen(fd: c_int, backlog: c_int) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_listen, fd, backlog) }).map(drop)
}

pub fn accept(fd: c_int) -> Result<c_int> {
    // SAFETY: NULL address pointers are allowed.
    retry(|| unsafe {
        libc::syscall(libc::SYS_accept4, fd, 0usize, 0usize, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
    })
    .map(|fd| fd as c_int)
}

pub fn shutdown(fd: c_int, how: c_int) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_shutdown, fd, how) }).map(drop)
}

pub fn setsockopt_int(fd: c_int, level: c_int, name: c_int, val: c_int) -> Result<()> {
    // SAFETY: `val` lives for the call; its size is passed.
    check(unsafe {
        libc::syscall(libc::SYS_setsockopt, fd, level, name, &val as *const c_int, size_of::<c_int>())
    })
    .map(drop)
}

pub fn getsockopt_int(fd: c_int, level: c_int, name: c_int) -> Result<c_int> {
    let mut val: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: valid out buffers with their lengths.
    check(unsafe {
        libc::syscall(libc::SYS_getsockopt, fd, level, name, &mut val as *mut c_int, &mut len as *mut libc::socklen_t)
    })?;
    Ok(val)
}

/// The bound filesystem path of a unix socket (None if unbound/abstract).
pub fn getsockname_path(fd: c_int) -> Result<Option<Vec<u8>>> {
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: valid out buffers with their lengths.
    check(unsafe {
        libc::syscall(
            libc::SYS_getsockname,
            fd,
            &mut addr as *mut libc::sockaddr_un as *mut libc::sockaddr,
            &mut len as *mut libc::socklen_t,
        )
    })?;
    if addr.sun_family as c_int != libc::AF_UNIX {
        return Ok(None);
    }
    let n = (len as usize).saturating_sub(size_of::<libc::sa_family_t>());
    let raw: Vec<u8> = addr.sun_path[..n.min(addr.sun_path.len())].iter().map(|c| *c as u8).collect();
    if raw.is_empty() || raw[0] == 0 {
        return Ok(None);
    }
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Ok(Some(raw[..end].to_vec()))
}

/// Sends one datagram, optionally to `to` and optionally carrying `fds`.
pub fn send_msg(fd: c_int, to: Option<&UnixAddr>, data: &[u8], fds: &[c_int]) -> Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut c_void, iov_len: data.len() };
    let cmsg_space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(size_of_val(fds) as u32) as usize }
    };
    let mut control = vec![0u64; cmsg_space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    if let Some(a) = to {
        msg.msg_name = a.as_ptr() as *mut c_void;
        msg.msg_namelen = a.len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = cmsg_space as _;
        // SAFETY: the control buffer is large enough for one SCM_RIGHTS
        // header plus `fds.len()` ints (CMSG_SPACE above).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut c_int, fds.len());
        }
    }
    // SAFETY: every pointer in `msg` refers to live buffers above.
    retry(|| unsafe {
        libc::syscall(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    })
    .map(drop)
}

/// Sends an empty datagram on a connected socket: a readiness token.
/// `sendto` without an address costs about a third less than `sendmsg`,
/// which copies in a message header and an iovec first.
pub fn send_token(fd: c_int) -> Result<()> {
    // SAFETY: no buffer is passed: length 0, null data and address.
    retry(|| unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            core::ptr::null::<c_void>(),
            0usize,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            core::ptr::null::<c_void>(),
            0 as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Receives one datagram and throws it away, without ancillary data (the
/// kernel closes any file descriptors it carried): how tokens and stale
/// datagrams are drained. `recvfrom` skips the message header `recvmsg`
/// copies in and out, as [`send_token`] does on the sending side.
pub fn discard_datagram(fd: c_int) -> Result<()> {
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is live and writable for its length; no address is asked for.
    retry(|| unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr() as *mut c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            core::ptr::null_mut::<c_void>(),
            core::ptr::null_mut::<libc::socklen_t>(),
        )
    })
    .map(drop)
}

/// What [`recv_msg`] does with file descriptors carried by the datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FdMode {
    /// Let the kernel discard them without installing anything.
    Discard,
    /// Install them (close-on-exec) and return their numbers.
    Install,
}

/// Receives one datagram without blocking. With `peek`, it stays queued.
/// Returns (bytes, installed fds); `Err(EAGAIN)` if the queue is empty.
pub fn recv_msg(fd: c_int, buf: &mut [u8], peek: bool, mode: FdMode, max_fds: usize) -> Result<(usize, Vec<c_int>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut c_void, iov_len: buf.len() };
    let cmsg_space = if mode == FdMode::Install {
        // SAFETY: pure size computation.
        unsafe { libc::CMSG_SPACE((max_fds.max(1) * size_of::<c_int>()) as u32) as usize }
    } else {
        0
    };
    let mut control = vec![0u64; cmsg_space.div_ceil(8)];
    // SAFETY: plain old data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if cmsg_space > 0 {
        msg.msg_control = control.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = cmsg_space as _;
    }
    let mut flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    if peek {
        flags |= libc::MSG_PEEK;
    }
    // SAFETY: every pointer in `msg` refers to live buffers above.
    let n = retry(|| unsafe { libc::syscall(libc::SYS_recvmsg, fd, &mut msg as *mut libc::msghdr, flags) })?;
    let mut fds = Vec::new();
    let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    if cmsg_space > 0 {
        // SAFETY: the kernel wrote valid cmsg headers into `control`, and
        // `msg.msg_controllen` bounds them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const c_int;
                    let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<c_int>();
                    for i in 0..n {
                        fds.push(*data.add(i));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if truncated {
            // The kernel could not install them all (fd table full).
            fds.iter().for_each(|f| close(*f));
            return Err(Errno::EMFILE);
        }
    }
    Ok((n as usize, fds))
}

/// Fails with EMFILE unless this process can open `n` more descriptors
/// right now (checked by duplicating `probe_fd` and closing the copies).
pub fn check_fd_room(probe_fd: c_int, n: usize) -> Result<()> {
    let mut got = Vec::with_capacity(n);
    let mut r = Ok(());
    for _ in 0..n {
        match fcntl(probe_fd, libc::F_DUPFD_CLOEXEC, 0) {
            Ok(f) => got.push(f as c_int),
            Err(e) => {
                r = Err(if e == Errno(libc::ENFILE) { Errno::EMFILE } else { e });
                break;
            }
        }
    }
    got.iter().for_each(|f| close(*f));
    r
}

// ------------------------------------------------------ for the preload shim

/// A `struct stat` of all zeros, to be filled in by hand.
pub fn stat_zeroed() -> libc::stat {
    // SAFETY: struct stat is plain old data; all-zero is a valid value.
    unsafe { zeroed() }
}

/// A `struct statx` of all zeros, to be filled in by hand.
pub fn statx_zeroed() -> libc::statx {
    // SAFETY: struct statx is plain old data; all-zero is a valid value.
    unsafe { zeroed() }
}

/// The CLOCK_REALTIME time now.
pub fn realtime_now() -> libc::timespec {
    clock_now(libc::CLOCK_REALTIME)
}

/// A new anonymous memory file (`memfd_create(2)`).
pub fn memfd_create(name: &CStr, flags: libc::c_uint) -> Result<c_int> {
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    check(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) }).map(|fd| fd as c_int)
}

pub fn fchmod(fd: c_int, mode: u32) -> Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_fchmod, fd, mode) }).map(drop)
}

/// `open` with exactly the caller's flags: unlike [`open`], O_CLOEXEC is
/// not added and EINTR is returned rather than retried.
pub fn open_exact(path: &CStr, flags: c_int, mode: u32) -> Result<c_int> {
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    check(unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode) })
        .map(|fd| fd as c_int)
}

/// Calls `f` with the value of the environment variable `name` (None if
/// it is not set), read in place with `getenv(3)` (a C library facility
/// with no system call): without copying or allocating, and without the
/// Rust runtime's environment lock.
pub fn with_env<R>(name: &CStr, f: impl FnOnce(Option<&CStr>) -> R) -> R {
    // SAFETY: `name` is a valid NUL-terminated string.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: getenv returns NULL or a NUL-terminated string in the
    // environment. `f` only borrows it for the call: glibc never frees a
    // value that setenv/unsetenv replaced, so it stays readable even if
    // the environment changes meanwhile.
    let v = (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) });
    f(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn dir_names_and_read_file_see_what_was_written() {
        let dir = std::env::temp_dir().join(format!("bus1-sys-test.{}", getpid()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut want = Vec::new();
        for i in 0..300 {
            // Enough entries, with long names, to need several getdents64 calls.
            let name = format!("entry-{i:04}-{}", "x".repeat(40));
            std::fs::write(dir.join(&name), format!("content {i}")).unwrap();
            want.push(name.into_bytes());
        }
        let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut got = dir_names(&c).unwrap();
        got.sort();
        assert_eq!(got, want);
        let f = CString::new(dir.join("entry-0042-".to_string() + &"x".repeat(40)).as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(read_file(&f).unwrap(), b"content 42");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_names(&c), Err(Errno::ENOENT));
    }
}
