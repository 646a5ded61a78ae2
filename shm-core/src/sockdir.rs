//! The directory named in a domain's socket addresses.
//!
//! A socket address holds at most 107 path bytes, while a domain directory
//! can be as long as any path. A domain whose directory is too long for
//! the longest socket name names its sockets through a short symbolic link
//! to the directory instead: `bind` and `connect` follow it, so the sockets
//! still live in the domain directory, and the address a peer fd reports
//! (`getsockname`, used to recognise it in another process) resolves to
//! the domain from any process. The links live in a private per-user
//! directory (mode 0700, checked), are named after the domain directory's
//! device and inode, and are never removed: a link whose directory is gone
//! is replaced when its name is needed again.

use crate::errno::{Errno, Result};
use crate::sys::{self, cstr};

/// Capacity of `sun_path` without its terminating NUL.
const SUN_PATH_MAX: usize = 107;
/// The longest name of a socket in a domain: `vault.<serial>.<gen>`, both
/// 64-bit hexadecimal.
const LONGEST_SOCKET_NAME: usize = "vault.".len() + 16 + 1 + 16;
/// The longest directory whose sockets can be named directly.
pub(crate) const DIRECT_MAX: usize = SUN_PATH_MAX - 1 - LONGEST_SOCKET_NAME;

/// The per-user directory holding the links.
fn links_dir() -> Vec<u8> {
    let base = if sys::stat(c"/dev/shm").is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR) {
        "/dev/shm"
    } else {
        "/tmp"
    };
    format!("{base}/bus1-{}.links", sys::getuid()).into_bytes()
}

/// Creates the links directory if needed and checks that only this user
/// can change it (it may live in a world-writable directory, where anyone
/// could have created the name first).
fn ensure_private(dir: &[u8]) -> Result<()> {
    let c = cstr(dir)?;
    match sys::mkdir(&c, 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let st = sys::lstat(&c)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != sys::getuid() || st.st_mode & 0o022 != 0 {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

/// The directory to name `dir`'s sockets in: `dir` itself when short
/// enough, else a link to it (created or renewed here). `dev_ino`
/// identifies `dir`.
pub(crate) fn socket_dir(dir: &[u8], dev_ino: (u64, u64)) -> Result<Vec<u8>> {
    if dir.len() <= DIRECT_MAX {
        return Ok(dir.to_vec());
    }
    let links = links_dir();
    ensure_private(&links)?;
    let mut link = links;
    link.extend_from_slice(format!("/{:x}-{:x}", dev_ino.0, dev_ino.1).as_bytes());
    let (c_link, c_dir) = (cstr(&link)?, cstr(dir)?);
    // Another process may renew the same link meanwhile; a few rounds
    // settle it.
    for _ in 0..8 {
        match sys::symlink(&c_dir, &c_link) {
            Ok(()) => return Ok(link),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match sys::stat(&c_link) {
            Ok(st) if (st.st_dev, st.st_ino) == dev_ino => return Ok(link),
            // Left by a directory that is gone (its inode reused since).
            _ => match sys::unlink(&c_link) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            },
        }
    }
    Err(Errno::ENAMETOOLONG)
}

/// The domain directory a socket address's directory stands for: the
/// target of a link made by [`socket_dir`], else the directory itself.
pub(crate) fn domain_dir_of(sock_dir: &[u8]) -> Vec<u8> {
    let links = links_dir();
    let is_link = sock_dir.strip_prefix(links.as_slice()).is_some_and(|rest| rest.starts_with(b"/"));
    if is_link {
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
        let dir = vec![b'd'; DIRECT_MAX];
        let name = format!("/vault.{:x}.{:x}", u64::MAX, u64::MAX);
        assert_eq!(dir.len() + name.len(), SUN_PATH_MAX);
    }

    #[test]
    fn long_directories_are_named_through_a_link_to_them() {
        let base = std::env::temp_dir().join(format!("sockdir-test-{}", std::process::id()));
        let long = base.join("x".repeat(120));
        std::fs::create_dir_all(&long).unwrap();
        let st = std::fs::metadata(&long).unwrap();
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::ffi::OsStrExt;
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
        // short directories are named directly, and are not links
        assert_eq!(socket_dir(b"/short", (1, 2)).unwrap(), b"/short");
        assert_eq!(domain_dir_of(b"/short"), b"/short");

        std::fs::remove_file(&link_os).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
