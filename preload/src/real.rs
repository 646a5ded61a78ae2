//! The libc functions this library interposes, resolved with
//! `dlsym(RTLD_NEXT)` so that the shim can pass calls through. This module
//! is one of the few that contain `unsafe`.

use core::sync::atomic::{AtomicUsize, Ordering};
use libc::c_void;

/// A lazily resolved libc symbol.
pub struct Real {
    name: &'static [u8],
    addr: AtomicUsize,
}

impl Real {
    pub const fn new(name: &'static [u8]) -> Real {
        Real { name, addr: AtomicUsize::new(0) }
    }

    /// The address of the next definition of the symbol.
    pub fn get(&self) -> *mut c_void {
        let a = self.addr.load(Ordering::Acquire);
        if a != 0 {
            return a as *mut c_void;
        }
        // SAFETY: `name` is a NUL-terminated symbol name; RTLD_NEXT looks
        // past this library.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr() as *const libc::c_char) };
        if p.is_null() {
            // A libc without this symbol: the caller gets ENOSYS.
            return core::ptr::null_mut();
        }
        self.addr.store(p as usize, Ordering::Release);
        p
    }
}

/// Declares `Real` statics: `real!(OPEN = "open");`
macro_rules! real {
    ($($id:ident = $name:literal;)*) => {
        $(pub static $id: $crate::real::Real = $crate::real::Real::new(concat!($name, "\0").as_bytes());)*
    };
}

real! {
    OPEN = "open";
    OPEN64 = "open64";
    OPENAT = "openat";
    OPENAT64 = "openat64";
    OPEN_2 = "__open_2";
    OPEN64_2 = "__open64_2";
    OPENAT_2 = "__openat_2";
    OPENAT64_2 = "__openat64_2";
    IOCTL = "ioctl";
    MMAP = "mmap";
    MMAP64 = "mmap64";
    MUNMAP = "munmap";
    READ = "read";
    WRITE = "write";
    READV = "readv";
    WRITEV = "writev";
    PREAD = "pread";
    PREAD64 = "pread64";
    PWRITE = "pwrite";
    PWRITE64 = "pwrite64";
    LSEEK = "lseek";
    LSEEK64 = "lseek64";
    CLOSE = "close";
    DUP = "dup";
    DUP2 = "dup2";
    DUP3 = "dup3";
    FCNTL = "fcntl";
    FCNTL64 = "fcntl64";
    CLOSE_RANGE = "close_range";
    STAT = "stat";
    STAT64 = "stat64";
    LSTAT = "lstat";
    LSTAT64 = "lstat64";
    FSTATAT = "fstatat";
    FSTATAT64 = "fstatat64";
    XSTAT = "__xstat";
    XSTAT64 = "__xstat64";
    LXSTAT = "__lxstat";
    LXSTAT64 = "__lxstat64";
    FXSTATAT = "__fxstatat";
    FXSTATAT64 = "__fxstatat64";
    STATX = "statx";
    FSTAT = "fstat";
    FSTAT64 = "fstat64";
    FXSTAT = "__fxstat";
    FXSTAT64 = "__fxstat64";
    FOPEN = "fopen";
    FOPEN64 = "fopen64";
    FCLOSE = "fclose";
    READLINK = "readlink";
    READLINKAT = "readlinkat";
    ACCESS = "access";
    FACCESSAT = "faccessat";
    EUIDACCESS = "euidaccess";
    EACCESS = "eaccess";
    GETXATTR = "getxattr";
    LGETXATTR = "lgetxattr";
    LISTXATTR = "listxattr";
    LLISTXATTR = "llistxattr";
    REALPATH = "realpath";
    REALPATH_CHK = "__realpath_chk";
    CANONICALIZE_FILE_NAME = "canonicalize_file_name";
    SIGACTION = "sigaction";
    SIGNAL = "signal";
    BSD_SIGNAL = "bsd_signal";
    SYSV_SIGNAL = "sysv_signal";
    SETUID = "setuid";
    SETGID = "setgid";
    SETEUID = "seteuid";
    SETEGID = "setegid";
    SETREUID = "setreuid";
    SETREGID = "setregid";
    SETRESUID = "setresuid";
    SETRESGID = "setresgid";
    POLL = "poll";
    PPOLL = "ppoll";
    POLL_CHK = "__poll_chk";
    PPOLL_CHK = "__ppoll_chk";
    SELECT = "select";
    PSELECT = "pselect";
    EPOLL_CREATE = "epoll_create";
    EPOLL_CREATE1 = "epoll_create1";
    EPOLL_CTL = "epoll_ctl";
    EPOLL_WAIT = "epoll_wait";
    EPOLL_PWAIT = "epoll_pwait";
    EPOLL_PWAIT2 = "epoll_pwait2";
    SENDMSG = "sendmsg";
    SENDMMSG = "sendmmsg";
}

/// The error return of a libc function: -1, MAP_FAILED or SIG_ERR.
pub trait Failure {
    fn failure() -> Self;
}

impl Failure for libc::c_int {
    fn failure() -> Self {
        -1
    }
}

impl Failure for isize {
    fn failure() -> Self {
        -1
    }
}

impl Failure for i64 {
    fn failure() -> Self {
        -1
    }
}

impl Failure for *mut c_void {
    fn failure() -> Self {
        libc::MAP_FAILED
    }
}

impl Failure for usize {
    fn failure() -> Self {
        libc::SIG_ERR
    }
}

impl Failure for *mut libc::c_char {
    fn failure() -> Self {
        core::ptr::null_mut()
    }
}

impl Failure for *mut libc::FILE {
    fn failure() -> Self {
        core::ptr::null_mut()
    }
}

/// Calls the real function `$real` with the given signature and arguments;
/// fails with ENOSYS if libc has no such symbol.
macro_rules! call_real {
    ($real:expr, fn($($t:ty),*) -> $r:ty, $($a:expr),*) => {{
        let p = $real.get();
        if p.is_null() {
            *libc::__errno_location() = libc::ENOSYS;
            <$r as $crate::real::Failure>::failure()
        } else {
            let f: unsafe extern "C" fn($($t),*) -> $r = core::mem::transmute(p);
            f($($a),*)
        }
    }};
}
