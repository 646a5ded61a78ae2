//! ioctl, the read/write/seek family that a peer fd refuses, and sendmsg
//! (which may pass an epoll set to another process).
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
                fdtable::with_peer(fd, bus1_cmd, |info| {
                    (!dispatch::is_generic(request)).then(|| match dispatch::ioctl(fd, info, request, arg as u64) {
                        Ok(v) => v,
                        Err(e) => fail(e),
                    })
                })
                .flatten()
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

// ------------------------------------------------------- sending fds away

/// Notes the epoll sets among the fds a message passes (SCM_RIGHTS): the
/// receiver will hold them too, so closing them here no longer ends them.
fn note_passed_fds(msg: *const libc::msghdr) {
    use crate::uaccess::ProcMem;
    use shm_core::UserMem;
    let mut hdr = [0u8; core::mem::size_of::<libc::msghdr>()];
    if ProcMem.read(msg as u64, &mut hdr).is_err() {
        return;
    }
    // SAFETY: msghdr is plain data; every byte pattern is a valid value.
    let hdr: libc::msghdr = unsafe { core::ptr::read_unaligned(hdr.as_ptr() as *const libc::msghdr) };
    let len = (hdr.msg_controllen as usize).min(1 << 16);
    if hdr.msg_control.is_null() || len == 0 {
        return;
    }
    let mut control = vec![0u8; len];
    if ProcMem.read(hdr.msg_control as u64, &mut control).is_err() {
        return;
    }
    // Walk the cmsghdr list: (len: size_t, level: int, type: int, data).
    let head = core::mem::size_of::<usize>() + 8;
    let mut off = 0;
    while off + head <= len {
        let clen = usize::from_ne_bytes(control[off..off + 8].try_into().unwrap_or([0; 8]));
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().unwrap_or([0; 4]));
        let kind = i32::from_ne_bytes(control[off + 12..off + 16].try_into().unwrap_or([0; 4]));
        if clen < head || off + clen > len {
            break;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            for fd in control[off + head..off + clen].chunks_exact(4) {
                crate::epolls::shared(i32::from_ne_bytes(fd.try_into().unwrap_or([0; 4])));
            }
        }
        off += clen.div_ceil(8) * 8;
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    if crate::epolls::any() && !msg.is_null() {
        keep_errno(|| note_passed_fds(msg));
    }
    call_real!(crate::real::SENDMSG, fn(c_int, *const libc::msghdr, c_int) -> isize, fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn sendmmsg(fd: c_int, msgs: *mut libc::mmsghdr, n: c_uint, flags: c_int) -> c_int {
    if crate::epolls::any() && !msgs.is_null() {
        for i in 0..n.min(1024) as usize {
            keep_errno(|| note_passed_fds(msgs.wrapping_add(i) as *const libc::msghdr));
        }
    }
    call_real!(crate::real::SENDMMSG, fn(c_int, *mut libc::mmsghdr, c_uint, c_int) -> c_int, fd, msgs, n, flags)
}
