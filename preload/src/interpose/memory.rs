//! mmap of a peer fd (the receive pool) and munmap.
//!
//! The memory the bus maps for itself (shm-core's `ownmem`) can be neither
//! unmapped nor mapped over (`MAP_FIXED`) by the application: EINVAL.
#![allow(clippy::missing_safety_doc)]

use super::*;

/// Whether a mapping at `addr` of `len` bytes would replace memory the bus
/// mapped for itself.
fn replaces_bus_memory(addr: *mut c_void, len: usize, flags: c_int) -> bool {
    flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) == libc::MAP_FIXED && shm_core::is_own_memory(addr as u64, len as u64)
}

// ------------------------------------------------------------------ mmap

unsafe fn mmap_common(real: &crate::real::Real, addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void {
    if guarded(|| false, || replaces_bus_memory(addr, len, flags)) {
        set_errno(libc::EINVAL);
        return libc::MAP_FAILED;
    }
    let info = guarded(|| None, || if fd >= 0 { fdtable::get(fd) } else { None });
    let info = match info {
        Some(i) => i,
        None => {
            let r = call_real!(real, fn(*mut c_void, usize, c_int, c_int, c_int, off_t) -> *mut c_void, addr, len, prot, flags, fd, off);
            // A peer fd this process has not seen yet: sockets cannot be
            // mapped, so only that failure needs a second look.
            if r != libc::MAP_FAILED || fd < 0 || errno() != libc::ENODEV {
                return r;
            }
            match keep_errno(|| guarded(|| None, || fdtable::lookup(fd))) {
                Some(i) => i,
                None => return r,
            }
        }
    };
    if off & 0xfff != 0 || len == 0 {
        trace_mmap(fd, &info, len, prot, flags, off, Err(libc::EINVAL));
        set_errno(libc::EINVAL);
        return libc::MAP_FAILED;
    }
    let pfd = match guarded(|| Err(Errno::EIO), || info.peer.pool_fd_for_mmap(info.access, prot, flags)) {
        Ok(p) => p,
        Err(e) => {
            trace_mmap(fd, &info, len, prot, flags, off, Err(e.0));
            set_errno(e.0);
            return libc::MAP_FAILED;
        }
    };
    // Always shared: the pool file is opened read-only, so the mapping can
    // never become writable (mprotect(PROT_WRITE) fails with EACCES).
    let flags = (flags & !libc::MAP_PRIVATE) | libc::MAP_SHARED;
    let r = call_real!(real, fn(*mut c_void, usize, c_int, c_int, c_int, off_t) -> *mut c_void, addr, len, prot, flags, pfd, off);
    keep_errno(|| libc::syscall(libc::SYS_close, pfd));
    trace_mmap(fd, &info, len, prot, flags, off, if r == libc::MAP_FAILED { Err(errno()) } else { Ok(r as usize) });
    r
}

fn trace_mmap(fd: c_int, info: &FdInfo, len: usize, prot: c_int, flags: c_int, off: off_t, r: Result<usize, c_int>) {
    if crate::trace::on() {
        keep_errno(|| crate::trace::mmap(fd, info.peer.serial(), len, prot, flags, off, r));
    }
}

#[no_mangle]
pub unsafe extern "C" fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void {
    mmap_common(&crate::real::MMAP, addr, len, prot, flags, fd, off)
}

#[no_mangle]
pub unsafe extern "C" fn mmap64(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void {
    mmap_common(&crate::real::MMAP64, addr, len, prot, flags, fd, off)
}

/// munmap(2): pool mappings are ordinary shared file mappings, so unmapping
/// one needs no bookkeeping; the call goes straight through, unless it
/// would unmap memory of the bus's own.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    if guarded(|| false, || shm_core::is_own_memory(addr as u64, len as u64)) {
        set_errno(libc::EINVAL);
        return -1;
    }
    call_real!(crate::real::MUNMAP, fn(*mut c_void, usize) -> c_int, addr, len)
}
