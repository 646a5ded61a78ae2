//! ioctl, and the read/write/seek family that a peer fd refuses.
#![allow(clippy::missing_safety_doc)]

use super::*;

// ----------------------------------------------------------------- ioctl

#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    // c_ulong is u64 here, u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let request = u64::from(request);
    let bus1_cmd = (request >> 8) & 0xff == uapi::BUS1_IOCTL_MAGIC as u64;
    if bus1_cmd || fdtable::any() {
        let r = guarded(
            || Some(fail(Errno::EIO)),
            || {
                let info = if bus1_cmd { fdtable::lookup(fd) } else { fdtable::get(fd) };
                let info = info.filter(|_| !dispatch::is_generic(request))?;
                Some(match dispatch::ioctl(fd, &info, request, arg as u64) {
                    Ok(v) => v,
                    Err(e) => fail(e),
                })
            },
        );
        if let Some(r) = r {
            return r;
        }
    }
    call_real!(crate::real::IOCTL, fn(c_int, c_ulong, *mut c_void) -> c_int, fd, request as c_ulong, arg)
}

// ------------------------------------------------------- read/write/seek

/// The module has no read/write handlers (the kernel answers EINVAL); the
/// peer's socket must not be read or written by the application either,
/// since its contents are the shim's readiness tokens.
macro_rules! no_io_fn {
    ($name:ident, $real:ident, ($($a:ident: $t:ty),*)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, $($a: $t),*) -> isize {
            if fdtable::is_peer_fd(fd) {
                set_errno(libc::EINVAL);
                return -1;
            }
            call_real!(crate::real::$real, fn(c_int, $($t),*) -> isize, fd, $($a),*)
        }
    };
}
no_io_fn!(read, READ, (buf: *mut c_void, n: usize));
no_io_fn!(write, WRITE, (buf: *const c_void, n: usize));
no_io_fn!(readv, READV, (iov: *const libc::iovec, n: c_int));
no_io_fn!(writev, WRITEV, (iov: *const libc::iovec, n: c_int));
no_io_fn!(pread, PREAD, (buf: *mut c_void, n: usize, off: off_t));
no_io_fn!(pread64, PREAD64, (buf: *mut c_void, n: usize, off: off_t));
no_io_fn!(pwrite, PWRITE, (buf: *const c_void, n: usize, off: off_t));
no_io_fn!(pwrite64, PWRITE64, (buf: *const c_void, n: usize, off: off_t));

/// The module's llseek is a no-op that succeeds (the position stays 0).
macro_rules! noop_seek_fn {
    ($name:ident, $real:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(fd: c_int, off: off_t, whence: c_int) -> off_t {
            if fdtable::is_peer_fd(fd) {
                return 0;
            }
            call_real!(crate::real::$real, fn(c_int, off_t, c_int) -> off_t, fd, off, whence)
        }
    };
}
noop_seek_fn!(lseek, LSEEK);
noop_seek_fn!(lseek64, LSEEK64);
