//! The device path: recognising it in path arguments, what `stat` and
//! `access` report for it (a world-readable, world-writable character
//! device, as the module's misc device node would be), and path (O_PATH)
//! descriptors of the node.

use crate::config;
use shm_core::sys;
use std::ffi::CStr;

/// Major of misc devices; the minor is dynamic for bus1.
const MISC_MAJOR: u32 = 10;
const BUS1_MINOR: u32 = 124;
/// Inode number of the device node, as stat and fdinfo report it.
pub const DEVICE_INO: u64 = 0xb051;

fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn dir_of_fd(dirfd: i32) -> Option<Vec<u8>> {
    if dirfd == libc::AT_FDCWD {
        use std::os::unix::ffi::OsStrExt;
        return std::env::current_dir().ok().map(|p| p.as_os_str().as_bytes().to_vec());
    }
    std::fs::read_link(format!("/proc/self/fd/{dirfd}")).ok().map(|p| {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    })
}

fn last_component(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').find(|c| !c.is_empty()).unwrap_or(b"")
}

/// The configured device path split into its directory (which exists,
/// unlike the node) and its last component.
pub fn device_dir_and_name() -> (std::ffi::CString, Vec<u8>) {
    config::with_device(|dev| {
        let dev = dev.to_bytes();
        let (dir, name): (&[u8], &[u8]) = match dev.iter().rposition(|b| *b == b'/') {
            Some(0) => (b"/", &dev[1..]),
            Some(i) => (&dev[..i], &dev[i + 1..]),
            None => (b".", dev),
        };
        // A C string cannot hold NUL, so neither part does.
        (std::ffi::CString::new(dir).unwrap_or_default(), name.to_vec())
    })
}

/// Whether `path` (relative to `dirfd`) names the bus1 device.
pub fn is_device(dirfd: i32, path: &CStr) -> bool {
    let p = path.to_bytes();
    if p.is_empty() {
        return false;
    }
    // Allocation-free filter first: every open() of the process passes here.
    config::with_device(|dev| {
        let dev = dev.to_bytes();
        if p == dev {
            return true;
        }
        if last_component(p) != last_component(dev) {
            return false;
        }
        // A relative device path names the node from the working directory,
        // as a relative path to a real node would.
        let Some(dev) = absolute(libc::AT_FDCWD, dev) else { return false };
        let Some(full) = absolute(dirfd, p) else { return false };
        normalize(&full) == normalize(&dev)
    })
}

/// `path` made absolute against `dirfd` (not normalised).
fn absolute(dirfd: i32, path: &[u8]) -> Option<Vec<u8>> {
    if path.first() == Some(&b'/') {
        return Some(path.to_vec());
    }
    let mut d = dir_of_fd(dirfd)?;
    d.push(b'/');
    d.extend_from_slice(path);
    Some(d)
}

/// Fills `st` as for the device node.
pub fn fill_stat(st: &mut libc::stat) {
    *st = sys::stat_zeroed();
    let t = sys::realtime_now();
    st.st_dev = libc::makedev(0, 5);
    st.st_ino = DEVICE_INO;
    st.st_mode = libc::S_IFCHR | 0o666;
    st.st_nlink = 1;
    st.st_rdev = libc::makedev(MISC_MAJOR, BUS1_MINOR);
    st.st_blksize = 4096;
    st.st_atime = t.tv_sec;
    st.st_mtime = t.tv_sec;
    st.st_ctime = t.tv_sec;
}

/// Fills `stx` as for the device node.
pub fn fill_statx(stx: &mut libc::statx) {
    *stx = sys::statx_zeroed();
    let t = sys::realtime_now();
    stx.stx_mask = libc::STATX_BASIC_STATS;
    stx.stx_blksize = 4096;
    stx.stx_nlink = 1;
    stx.stx_mode = (libc::S_IFCHR | 0o666) as u16;
    stx.stx_ino = DEVICE_INO;
    stx.stx_rdev_major = MISC_MAJOR;
    stx.stx_rdev_minor = BUS1_MINOR;
    stx.stx_dev_major = 0;
    stx.stx_dev_minor = 5;
    for ts in [&mut stx.stx_atime, &mut stx.stx_mtime, &mut stx.stx_ctime] {
        ts.tv_sec = t.tv_sec;
    }
}

/// access(2) on the device: readable and writable by everyone, not
/// executable.
pub fn access(mode: i32) -> Result<(), i32> {
    if mode & libc::X_OK != 0 {
        Err(libc::EACCES)
    } else {
        Ok(())
    }
}

// ------------------------------------------------------- path descriptors

/// The size that marks the memory file behind a path descriptor of the
/// node (together with no permission bits and no links): `fstat` of such a
/// descriptor shows the node, in any process it reaches.
const PATH_FD_MARK: i64 = 0xb051_b051;

/// open(2) of the device with O_PATH: a path descriptor, which the kernel
/// gives for a device node without calling its driver (no peer is made).
/// It refers to a marked, unlinked memory file, so that `read`, `ioctl`,
/// `mmap` and the rest fail with EBADF as they do on any path descriptor,
/// while it travels through `dup`, `fork`, exec and `SCM_RIGHTS` like one.
/// Returns the descriptor or a positive errno.
pub fn open_path_fd(flags: i32) -> Result<i32, i32> {
    if flags & libc::O_DIRECTORY != 0 {
        return Err(libc::ENOTDIR);
    }
    let mem = sys::memfd_create(c"bus1-device", libc::MFD_CLOEXEC).map_err(|e| e.0)?;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{mem}")).unwrap_or_default();
    let cloexec = flags & libc::O_CLOEXEC;
    // The raw system calls of `sys` keep these out of the shim's own open
    // and close.
    let r = sys::ftruncate(mem, PATH_FD_MARK as u64)
        .and_then(|()| sys::fchmod(mem, 0))
        .and_then(|()| sys::open_exact(&path, libc::O_PATH | cloexec, 0))
        .map_err(|e| e.0);
    sys::close(mem);
    r
}

/// Whether a real `stat` result describes a path descriptor of the node.
pub fn is_path_fd_stat(mode: u32, nlink: u64, size: i64) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG && mode & 0o7777 == 0 && nlink == 0 && size == PATH_FD_MARK
}

/// Whether `fd` is a path descriptor of the node.
pub fn is_path_fd(fd: i32) -> bool {
    // The raw system call of `sys::fstat` keeps this out of the shim's fstat.
    sys::fstat(fd).is_ok_and(|st| is_path_fd_stat(st.st_mode, st.st_nlink, st.st_size))
}
