//! The device path: recognising it in path arguments, and what `stat` and
//! `access` report for it (a world-readable, world-writable character
//! device, as the module's misc device node would be).

use crate::config;
use libc::c_char;
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
    // SAFETY: a NUL-terminated string from the environment or a static.
    let dev = unsafe { CStr::from_ptr(config::device_cstr()) }.to_bytes();
    let (dir, name): (&[u8], &[u8]) = match dev.iter().rposition(|b| *b == b'/') {
        Some(0) => (b"/", &dev[1..]),
        Some(i) => (&dev[..i], &dev[i + 1..]),
        None => (b".", dev),
    };
    // A C string cannot hold NUL, so neither part does.
    (std::ffi::CString::new(dir).unwrap_or_default(), name.to_vec())
}

/// Whether `path` (relative to `dirfd`) names the bus1 device.
pub fn is_device(dirfd: i32, path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    // SAFETY: libc callers pass a NUL-terminated string; a bad pointer
    // would fault in libc itself just the same.
    let p = unsafe { CStr::from_ptr(path) }.to_bytes();
    if p.is_empty() {
        return false;
    }
    // Allocation-free filter first: every open() of the process passes here.
    let dev_ptr = config::device_cstr();
    // SAFETY: a NUL-terminated string from the environment or a static.
    let dev = unsafe { CStr::from_ptr(dev_ptr) }.to_bytes();
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

fn now() -> libc::timespec {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts
}

/// Fills `st` as for the device node.
pub fn fill_stat(st: &mut libc::stat) {
    // SAFETY: all-zero is a valid struct stat.
    *st = unsafe { core::mem::zeroed() };
    let t = now();
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
    // SAFETY: all-zero is a valid struct statx.
    *stx = unsafe { core::mem::zeroed() };
    let t = now();
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
