//! Where a domain's memory lives, and when it goes.
//!
//! The segment, the pools and the sockets of a domain live in its *memory
//! directory*. On a memory file system (tmpfs, ramfs) that is the domain
//! directory itself. A domain directory anywhere else — say a `mktemp -d`
//! on a disk — holds only a symbolic link, `memory`, naming a directory of
//! its own on /dev/shm: `bus1-<uid>.mem/<token>` for a private domain,
//! `bus1-g<gid>.mem/<token>` for one shared by group `gid` (without a tmpfs
//! /dev/shm, a private domain's goes to `$XDG_RUNTIME_DIR` instead, and
//! failing that the memory stays in the domain directory). So bus data is
//! never written back to a disk, and a domain runs at the speed of memory
//! wherever its directory is. The token is random, so a directory that is
//! removed and another made with the same inode number never finds old
//! memory; the link is only read, never followed, and the directories are
//! checked as `trust` says.
//!
//! Lifetime: every process that maps a domain's segment holds a read lock
//! on its byte [`USER_BYTE`] for as long as it does (the lock belongs to
//! the open file description, so a forked child holds it too); attaching
//! and removing hold a write lock on byte [`ATTACH_BYTE`]. The memory of a
//! domain that no process has attached and whose peer sockets are all
//! closed can never be used again: the last process to leave it at a
//! normal exit removes it ([`collect`]), and a process attaching a domain
//! whose memory lives on /dev/shm, like the watcher now and then, removes
//! any memory directory left so by killed processes ([`sweep_orphans`]).
//! The next open starts afresh.

use crate::domain::parse_peer_file;
use crate::errno::{Errno, Result};
use crate::sys::{self, cstr, ByteLock};
use crate::trust::{self, Access};

/// The byte of the segment file whose write lock serialises attaching and
/// removing a domain's memory.
pub(crate) const ATTACH_BYTE: u64 = 0;
/// The byte of the segment file every attached process holds a read lock
/// on.
pub(crate) const USER_BYTE: u64 = 1;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// Hex digits of a memory directory's token.
const TOKEN_LEN: usize = 24;

/// Whether `fd` lies on a file system that keeps its files in memory.
pub(crate) fn is_memory_fs(fd: i32) -> bool {
    sys::fs_type(fd).is_ok_and(|t| t == TMPFS_MAGIC || t == RAMFS_MAGIC)
}

/// A domain's memory directory, open.
pub(crate) struct MemDir {
    pub fd: i32,
    pub path: Vec<u8>,
    /// A directory of its own under a memory parent (removed with the
    /// memory), rather than the domain directory itself.
    pub own: bool,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn dup(fd: i32) -> Result<i32> {
    sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0).map(|f| f as i32)
}

/// The memory file system directory that memory parents go in, open.
fn memory_base(access: Access) -> Option<(i32, Vec<u8>)> {
    let open_tmpfs = |path: &[u8]| {
        let fd = sys::open(&cstr(path).ok()?, libc::O_RDONLY | libc::O_DIRECTORY, 0).ok()?;
        if is_memory_fs(fd) {
            Some((fd, path.to_vec()))
        } else {
            sys::close(fd);
            None
        }
    };
    if let Some(b) = open_tmpfs(b"/dev/shm") {
        return Some(b);
    }
    // A user's runtime directory is of no use to a group.
    if access != Access::Private {
        return None;
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")?;
    open_tmpfs(xdg.as_encoded_bytes()).filter(|_| xdg.as_encoded_bytes().starts_with(b"/"))
}

/// The name of the memory parent for `access`.
fn parent_name(access: Access) -> Vec<u8> {
    match access {
        Access::Private => format!("bus1-{}.mem", sys::geteuid()),
        Access::Shared { gid } => format!("bus1-g{gid}.mem"),
    }
    .into_bytes()
}

/// Opens (making it if needed, unless `make` is false) the directory that
/// memory directories for `access` live in, if there is a memory file
/// system to put it on.
fn open_parent(access: Access, make: bool) -> Result<Option<(i32, Vec<u8>)>> {
    let Some((base, base_path)) = memory_base(access) else { return Ok(None) };
    let name = parent_name(access);
    let r = if make { trust::open_bus_dir(base, &base_path, &name, access) } else { open_existing_bus_dir(base, &base_path, &name, access) };
    sys::close(base);
    Ok(Some((r?, join(&base_path, &name))))
}

/// Opens the existing directory `name` of `parent` and checks it as
/// [`trust::open_bus_dir`] would (ENOENT if it is missing).
fn open_existing_bus_dir(parent: i32, parent_path: &[u8], name: &[u8], access: Access) -> Result<i32> {
    let fd = sys::openat(parent, &cstr(name)?, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
    match sys::fstat(fd).and_then(|st| trust::check_bus_dir(&st, access, &join(parent_path, name))) {
        Ok(()) => Ok(fd),
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}

/// Locates the memory directory of the domain directory `dom_fd` (named
/// `dom_path`), making it (and the `memory` link) on first use.
pub(crate) fn locate(dom_fd: i32, dom_path: &[u8], access: Access) -> Result<MemDir> {
    let in_place = || Ok(MemDir { fd: dup(dom_fd)?, path: dom_path.to_vec(), own: false });
    if is_memory_fs(dom_fd) {
        return in_place();
    }
    let Some((parent, parent_path)) = open_parent(access, true)? else { return in_place() };
    let r = (|| {
        let token = memory_token(dom_fd, dom_path, &parent_path, access, true)?;
        let fd = trust::open_bus_dir(parent, &parent_path, &token, access)?;
        Ok(MemDir { fd, path: join(&parent_path, &token), own: true })
    })();
    // The parent was removed meanwhile with the last memory directory in
    // it (`remove`): ESTALE, to look again.
    let r = match r {
        Err(Errno::ENOENT) if sys::fstat(parent).is_ok_and(|st| st.st_nlink == 0) => Err(Errno::ESTALE),
        r => r,
    };
    sys::close(parent);
    r
}

/// Locates the memory directory of an existing domain, as [`locate`] does
/// but making nothing: ENOENT if the domain has none.
pub(crate) fn locate_existing(dom_fd: i32, dom_path: &[u8], access: Access) -> Result<MemDir> {
    if is_memory_fs(dom_fd) {
        return Ok(MemDir { fd: dup(dom_fd)?, path: dom_path.to_vec(), own: false });
    }
    let Some((parent, parent_path)) = open_parent(access, false)? else {
        // Without a memory file system, the memory stays in place.
        return Ok(MemDir { fd: dup(dom_fd)?, path: dom_path.to_vec(), own: false });
    };
    let r = memory_token(dom_fd, dom_path, &parent_path, access, false).and_then(|token| {
        let fd = open_existing_bus_dir(parent, &parent_path, &token, access)?;
        Ok(MemDir { fd, path: join(&parent_path, &token), own: true })
    });
    sys::close(parent);
    r
}

/// The token the `memory` link of the domain directory names (making the
/// link with a new random token if there is none and `make` is true; else
/// ENOENT).
fn memory_token(dom_fd: i32, dom_path: &[u8], parent_path: &[u8], access: Access, make: bool) -> Result<Vec<u8>> {
    let link_path = join(dom_path, b"memory");
    for _ in 0..4 {
        match sys::readlinkat(dom_fd, c"memory") {
            Ok(target) => {
                let st = sys::lstatat(dom_fd, c"memory")?;
                if access == Access::Private && st.st_uid != sys::geteuid() {
                    return Err(trust::refuse(&link_path, format!("belongs to uid {}", st.st_uid)));
                }
                let token = target.strip_prefix(parent_path).and_then(|t| t.strip_prefix(b"/"));
                return match token {
                    Some(t) if t.len() == TOKEN_LEN && t.iter().all(u8::is_ascii_hexdigit) => Ok(t.to_vec()),
                    _ => Err(trust::refuse(
                        &link_path,
                        format!("names {}, not a memory directory under {}", String::from_utf8_lossy(&target), String::from_utf8_lossy(parent_path)),
                    )),
                };
            }
            Err(Errno::ENOENT) if !make => return Err(Errno::ENOENT),
            Err(Errno::ENOENT) => {
                let token = format!("{:016x}{:08x}", sys::getrandom_u64(), sys::getrandom_u64() as u32).into_bytes();
                match sys::symlinkat(&cstr(&join(parent_path, &token))?, dom_fd, c"memory") {
                    Ok(()) => return Ok(token),
                    Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(Errno::EINVAL) => return Err(trust::refuse(&link_path, "is not a symbolic link")),
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// Whether `seg_fd` is still the domain's segment: its memory directory
/// `mem_fd` still exists and still names it `segment` (a process that
/// removed the memory may have unlinked both while the caller waited for
/// the attach lock).
pub(crate) fn still_current(mem_fd: i32, seg_fd: i32) -> bool {
    let (Ok(dir), Ok(seg), Ok(named)) = (sys::fstat(mem_fd), sys::fstat(seg_fd), sys::lstatat(mem_fd, c"segment")) else {
        return false;
    };
    dir.st_nlink > 0 && (seg.st_dev, seg.st_ino) == (named.st_dev, named.st_ino)
}

/// Whether a peer socket in the memory directory `mem_fd` is still open
/// anywhere; `sock_dir` is the directory named in socket addresses.
fn any_peer_alive(mem_fd: i32, sock_dir: &[u8]) -> bool {
    let Ok(names) = sys::dir_names_at(mem_fd) else { return true };
    names
        .iter()
        .filter(|n| matches!(parse_peer_file(n), Some(crate::domain::PeerFile::Socket(_))))
        .any(|n| crate::domain::socket_still_open(&join(sock_dir, n)))
}

/// The memory directory to collect, with the descriptor of its segment.
pub(crate) struct Garbage<'a> {
    pub mem_fd: i32,
    pub mem_path: &'a [u8],
    /// The directory named in socket addresses (`mem_path` or a link).
    pub sock_dir: &'a [u8],
    pub own: bool,
    pub seg_fd: i32,
    /// `seg_fd` carries this process's own [`USER_BYTE`] lock, to keep.
    pub attached: bool,
}

/// Removes the memory of a domain if nothing can use it any more: no other
/// process has it attached and no peer socket is open. `wait`: give a
/// concurrent attach (or another process leaving at the same time) a
/// moment to finish instead of giving up at once; never longer, since a
/// process that stopped while attaching must not hold up anyone's exit.
/// Returns whether it was removed.
pub(crate) fn collect(g: &Garbage, wait: bool) -> bool {
    let mut tries = if wait { 200 } else { 1 };
    while sys::byte_lock(g.seg_fd, ATTACH_BYTE, ByteLock::Write, false).is_err() {
        tries -= 1;
        if tries == 0 {
            return false;
        }
        sys::sleep_ms(1);
    }
    let mut removed = false;
    // Another process's read lock on the user byte makes this fail; this
    // process's own (on the same description) is converted.
    if still_current(g.mem_fd, g.seg_fd) && sys::byte_lock(g.seg_fd, USER_BYTE, ByteLock::Write, false).is_ok() {
        if !any_peer_alive(g.mem_fd, g.sock_dir) {
            remove(g);
            removed = true;
        }
        let back = if g.attached { ByteLock::Read } else { ByteLock::Unlock };
        let _ = sys::byte_lock(g.seg_fd, USER_BYTE, back, false);
    }
    let _ = sys::byte_lock(g.seg_fd, ATTACH_BYTE, ByteLock::Unlock, false);
    removed
}

/// Removes the memory's files (under the attach lock). The segment goes
/// last: until it is unlinked, a process that opens the domain finds the
/// old one and waits for the lock held here, then sees it gone and starts
/// afresh, so nothing it makes is removed here.
fn remove(g: &Garbage) {
    let names = sys::dir_names_at(g.mem_fd).unwrap_or_default();
    for name in names.iter().filter(|n| g.own || parse_peer_file(n).is_some()) {
        if name.as_slice() != b"segment" {
            if let Ok(c) = cstr(name) {
                let _ = sys::unlinkat(g.mem_fd, &c, 0);
            }
        }
    }
    crate::sockdir::forget(g.sock_dir, g.mem_path);
    let _ = sys::unlinkat(g.mem_fd, c"segment", 0);
    if g.own {
        if let Ok(c) = cstr(g.mem_path) {
            let _ = sys::unlinkat(libc::AT_FDCWD, &c, libc::AT_REMOVEDIR);
        }
        // The parent too, if that was its last memory directory.
        if let Some(slash) = g.mem_path.iter().rposition(|b| *b == b'/') {
            if let Ok(c) = cstr(&g.mem_path[..slash]) {
                let _ = sys::unlinkat(libc::AT_FDCWD, &c, libc::AT_REMOVEDIR);
            }
        }
    }
}

/// Removes the memory directories under the memory parent for `access`
/// that nothing can use any more (left by processes that were killed).
/// Returns how many.
pub(crate) fn sweep_orphans(access: Access) -> usize {
    let Some((base, base_path)) = memory_base(access) else { return 0 };
    let name = parent_name(access);
    let parent = sys::openat(base, &cstr(&name).unwrap_or_default(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0);
    sys::close(base);
    let Ok(parent) = parent else { return 0 };
    let parent_path = join(&base_path, &name);
    let mut n = 0;
    // Only a directory that passes the checks is looked into.
    let trusted = sys::fstat(parent).is_ok_and(|st| trust::check_bus_dir(&st, access, &parent_path).is_ok());
    for token in sys::dir_names_at(parent).unwrap_or_default().into_iter().filter(|_| trusted) {
        if token.len() != TOKEN_LEN || !token.iter().all(u8::is_ascii_hexdigit) {
            continue;
        }
        let Ok(c) = cstr(&token) else { continue };
        let Ok(mem_fd) = sys::openat(parent, &c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) else { continue };
        let path = join(&parent_path, &token);
        let ok = sys::fstat(mem_fd).is_ok_and(|st| trust::check_bus_dir(&st, access, &path).is_ok());
        if ok {
            match trust::open_file(mem_fd, &path, b"segment", libc::O_RDWR, access, trust::Create::No) {
                Ok((seg_fd, _)) => {
                    let g = Garbage { mem_fd, mem_path: &path, sock_dir: &path, own: true, seg_fd, attached: false };
                    n += collect(&g, false) as usize;
                    sys::close(seg_fd);
                }
                // Being made, or left empty: only an empty one goes.
                Err(Errno::ENOENT) => {
                    let _ = sys::unlinkat(parent, &c, libc::AT_REMOVEDIR);
                }
                Err(_) => {}
            }
        }
        sys::close(mem_fd);
    }
    trust::clear_refusal();
    sys::close(parent);
    n
}

/// Whether `path` names a memory directory (under a memory parent), and
/// for which access: how a peer fd's socket address is recognised.
pub(crate) fn memory_dir_access(path: &[u8]) -> Option<Access> {
    let slash = path.iter().rposition(|b| *b == b'/')?;
    let (parent, token) = (&path[..slash], &path[slash + 1..]);
    if token.len() != TOKEN_LEN || !token.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let pname = &parent[parent.iter().rposition(|b| *b == b'/')? + 1..];
    let mid = pname.strip_prefix(b"bus1-")?.strip_suffix(b".mem")?;
    let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u32>().ok();
    match mid.strip_prefix(b"g") {
        Some(gid) => Some(Access::Shared { gid: num(gid)? }),
        None => (num(mid)? == sys::geteuid()).then_some(Access::Private),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_directories_are_recognised_by_their_names() {
        let me = sys::geteuid();
        let token = "0123456789abcdef01234567";
        let p = format!("/dev/shm/bus1-{me}.mem/{token}");
        assert_eq!(memory_dir_access(p.as_bytes()), Some(Access::Private));
        let p = format!("/dev/shm/bus1-g42.mem/{token}");
        assert_eq!(memory_dir_access(p.as_bytes()), Some(Access::Shared { gid: 42 }));
        let other = format!("/dev/shm/bus1-{}.mem/{token}", me.wrapping_add(1));
        for bad in [other.as_str(), "/dev/shm/bus1-0.mem/short", "/dev/shm/x/0123456789abcdef01234567", "/tmp/d"] {
            assert_eq!(memory_dir_access(bad.as_bytes()), None, "{bad}");
        }
    }
}
