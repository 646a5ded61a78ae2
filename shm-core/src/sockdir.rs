//! The directory named in a domain's socket addresses.
//!
//! A socket address holds at most 107 path bytes, while a domain directory
//! can be as long as any path. A domain whose memory directory is too long
//! for the longest socket name names its sockets through a short symbolic
//! link to that directory instead: `bind` and `connect` follow it, so the
//! sockets still live in the domain, and the address a peer fd reports
//! (`getsockname`, used to recognise it in another process) resolves to
//! the domain from any process. The links live in a private per-user
//! directory (`bus1-<uid>.links` on /dev/shm, else /tmp; mode 0700,
//! checked as `trust` says), are named after the directory's device and
//! inode, and go when the domain's memory does; links whose directory is
//! gone are removed whenever a link is made.

use crate::errno::{Errno, Result};
use crate::sys::{self, cstr};
use crate::trust::{self, Access};

/// Capacity of `sun_path` without its terminating NUL.
const SUN_PATH_MAX: usize = 107;
/// The longest name of a socket in a domain: `vault.<serial>.<gen>`, both
/// 64-bit hexadecimal.
const LONGEST_SOCKET_NAME: usize = "vault.".len() + 16 + 1 + 16;
/// The longest directory whose sockets can be named directly.
pub(crate) const DIRECT_MAX: usize = SUN_PATH_MAX - 1 - LONGEST_SOCKET_NAME;

/// The directory the links directory lives in, and the links directory's
/// name there.
fn links_location() -> (&'static [u8], Vec<u8>) {
    let base: &[u8] = if sys::stat(c"/dev/shm").is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
        b"/dev/shm"
    } else {
        b"/tmp"
    };
    (base, format!("bus1-{}.links", sys::geteuid()).into_bytes())
}

/// The per-user directory holding the links.
fn links_dir() -> Vec<u8> {
    let (base, name) = links_location();
    let mut p = base.to_vec();
    p.push(b'/');
    p.extend_from_slice(&name);
    p
}

/// Opens the links directory, making it if needed; it may live in a
/// world-writable directory, where anyone could have made the name first,
/// so it is refused (EPERM) unless it is a real directory of this user that
/// nobody else may use.
fn open_links_dir() -> Result<i32> {
    let (base, name) = links_location();
    let bfd = sys::open(&cstr(base)?, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let r = trust::open_bus_dir(bfd, base, &name, Access::Private);
    sys::close(bfd);
    r
}

fn link_name(dev_ino: (u64, u64)) -> Vec<u8> {
    format!("{:x}-{:x}", dev_ino.0, dev_ino.1).into_bytes()
}

/// Whether the link `name` in `links` leads to the directory its name
/// stands for.
fn link_is_current(links: i32, name: &[u8]) -> bool {
    let Ok(c) = cstr(name) else { return false };
    let Ok(path) = sys::readlinkat(links, &c) else { return false };
    let Ok(st) = cstr(&path).and_then(|p| sys::stat(&p)) else { return false };
    link_name((st.st_dev, st.st_ino)) == name
}

/// The directory to name `dir`'s sockets in: `dir` itself when short
/// enough, else a link to it (made or renewed here). `dev_ino` identifies
/// `dir`.
pub(crate) fn socket_dir(dir: &[u8], dev_ino: (u64, u64)) -> Result<Vec<u8>> {
    if dir.len() <= DIRECT_MAX {
        return Ok(dir.to_vec());
    }
    let links = open_links_dir()?;
    let r = renew_link(links, dir, dev_ino);
    if r.is_ok() {
        remove_stale_links(links);
    }
    sys::close(links);
    r
}

fn renew_link(links: i32, dir: &[u8], dev_ino: (u64, u64)) -> Result<Vec<u8>> {
    let name = link_name(dev_ino);
    let mut link = links_dir();
    link.push(b'/');
    link.extend_from_slice(&name);
    let (c_name, c_dir) = (cstr(&name)?, cstr(dir)?);
    // Another process may renew the same link meanwhile; a few rounds
    // settle it.
    for _ in 0..8 {
        match sys::symlinkat(&c_dir, links, &c_name) {
            Ok(()) => return Ok(link),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        if link_is_current(links, &name) {
            return Ok(link);
        }
        // Left by a directory that is gone (its inode reused since).
        match sys::unlinkat(links, &c_name, 0) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Errno::ENAMETOOLONG)
}

/// Removes the links whose directory is gone.
fn remove_stale_links(links: i32) {
    for name in sys::dir_names_at(links).unwrap_or_default() {
        if !link_is_current(links, &name) {
            if let Ok(c) = cstr(&name) {
                let _ = sys::unlinkat(links, &c, 0);
            }
        }
    }
}

/// The domain's memory is gone: removes the link `sock_dir` made for
/// `dir`, if it is one.
pub(crate) fn forget(sock_dir: &[u8], dir: &[u8]) {
    if sock_dir == dir || !is_link(sock_dir) {
        return;
    }
    if let Ok(c) = cstr(sock_dir) {
        let _ = sys::unlink(&c);
    }
}

fn is_link(sock_dir: &[u8]) -> bool {
    let links = links_dir();
    sock_dir.strip_prefix(links.as_slice()).is_some_and(|rest| rest.starts_with(b"/"))
}

/// The directory a socket address's directory stands for: the target of a
/// link made by [`socket_dir`], else the directory itself.
pub(crate) fn domain_dir_of(sock_dir: &[u8]) -> Vec<u8> {
    if is_link(sock_dir) {
        if let Ok(target) = cstr(sock_dir).and_then(|c| sys::readlink(&c)) {
            return target;
        }
    }
    sock_dir.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_name_fits_below_the_limit() {
        let dir = [b'd'; DIRECT_MAX];
        let name = format!("/vault.{:x}.{:x}", u64::MAX, u64::MAX);
        assert_eq!(dir.len() + name.len(), SUN_PATH_MAX);
    }

    #[test]
    fn long_directories_are_named_through_a_link_to_them() {
        let base = std::env::temp_dir().join(format!("sockdir-test-{}", std::process::id()));
        let long = base.join("x".repeat(120));
        std::fs::create_dir_all(&long).unwrap();
        let st = std::fs::metadata(&long).unwrap();
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let dev_ino = (st.dev(), st.ino());
        let dir = long.as_os_str().as_bytes();

        let link = socket_dir(dir, dev_ino).unwrap();
        assert!(link.len() + LONGEST_SOCKET_NAME < SUN_PATH_MAX);
        let target = std::fs::metadata(std::ffi::OsStr::from_bytes(&link)).unwrap();
        assert_eq!((target.dev(), target.ino()), dev_ino);
        assert_eq!(domain_dir_of(&link), dir);
        // asking again gives the same link
        assert_eq!(socket_dir(dir, dev_ino).unwrap(), link);
        // a stale link of the same name is renewed
        let link_os = std::ffi::OsStr::from_bytes(&link).to_owned();
        std::fs::remove_file(&link_os).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &link_os).unwrap();
        assert_eq!(socket_dir(dir, dev_ino).unwrap(), link);
        assert_eq!(domain_dir_of(&link), dir);
        // links of directories that are gone are removed when a link is made
        let stale = std::path::Path::new(std::ffi::OsStr::from_bytes(&links_dir())).join("1-2");
        std::os::unix::fs::symlink("/nonexistent-bus1-domain", &stale).unwrap();
        assert_eq!(socket_dir(dir, dev_ino).unwrap(), link);
        assert!(std::fs::symlink_metadata(&stale).is_err());
        // short directories are named directly, and are not links
        assert_eq!(socket_dir(b"/short", (1, 2)).unwrap(), b"/short");
        assert_eq!(domain_dir_of(b"/short"), b"/short");
        // forgetting the domain removes its link
        forget(&link, dir);
        assert!(std::fs::symlink_metadata(&link_os).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
