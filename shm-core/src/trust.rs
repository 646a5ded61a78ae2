//! The trust boundary on the file system: which directories and files a
//! domain may use, and with which owners and modes.
//!
//! Every process of a domain maps the same writable memory, so whoever can
//! create or replace a domain's files controls the bus. The checks here are
//! those a system daemon makes of its runtime directory:
//!
//! * a domain directory is a real directory that nobody but its owner may
//!   write. It is then **private**: it must belong to the caller (effective
//!   uid), and everything in it is the caller's, directories mode 0700,
//!   files and sockets mode 0600. The default domain is always private and
//!   never a symbolic link.
//! * an explicitly named directory (`BUS1_DOMAIN`) that is writable by its
//!   group and set-group-ID (mode 2770) is **shared** on purpose by the
//!   members of that group: everything in it belongs to that group, files
//!   and sockets mode 0660, directories 02770. If someone other than the
//!   caller or root owns it, its parent must be writable only by its owner,
//!   root or the domain's owner, so that nobody else can have made it.
//!   Nothing is ever writable by every user.
//!
//! Files are opened relative to the directory's descriptor, never through a
//! symbolic link (`O_NOFOLLOW`), created with `O_EXCL` and given their mode
//! with `fchmod` (so the umask plays no part), and checked with `fstat`
//! (type, single name, owner or group) before use. A directory or file that
//! fails a check refuses the domain with EPERM; the reason is kept for the
//! trace ([`take_refusal`]).

use crate::errno::{Errno, Result};
use crate::sys::{self, cstr};
use std::cell::RefCell;
use std::fmt::Display;

/// Who may use a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The caller's alone.
    Private,
    /// Shared by the members of group `gid`.
    Shared { gid: u32 },
}

impl Access {
    /// The mode of the domain's files and sockets.
    pub fn file_mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Shared { .. } => 0o660,
        }
    }

    /// The mode of the directories the bus makes.
    pub fn dir_mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
            Access::Shared { .. } => 0o2770,
        }
    }
}

thread_local! {
    /// Gone once the thread's destructors have run (a call made by an
    /// exit handler, or by a signal handler during the exit): then no
    /// reason is kept.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Refuses a domain because of `what`: EPERM, with the reason kept for the
/// trace.
pub(crate) fn refuse(what: &[u8], why: impl Display) -> Errno {
    let line = format!("{}: {why}", String::from_utf8_lossy(what));
    let _ = REFUSAL.try_with(|r| *r.borrow_mut() = Some(line));
    Errno::EPERM
}

/// Why this thread's last attempt to use a domain was refused with EPERM
/// (taken: a second call returns None).
pub fn take_refusal() -> Option<String> {
    REFUSAL.try_with(|r| r.borrow_mut().take()).ok().flatten()
}

/// Forgets a reason recorded by an attempt that went on to succeed or
/// failed otherwise.
pub(crate) fn clear_refusal() {
    let _ = REFUSAL.try_with(|r| *r.borrow_mut() = None);
}

fn file_type(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn type_name(kind: u32) -> &'static str {
    match kind {
        libc::S_IFDIR => "a directory",
        libc::S_IFREG => "a regular file",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "a special file",
    }
}

/// EPERM unless the caller (its effective uid) owns `st`.
fn caller_owns(st: &libc::stat, path: &[u8]) -> Result<()> {
    let euid = sys::geteuid();
    if st.st_uid != euid {
        return Err(refuse(path, format!("belongs to uid {}, not to this user (uid {euid})", st.st_uid)));
    }
    Ok(())
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

// ------------------------------------------------------------ directories

/// Creates `dir` and its missing parents with mode 0700 (less the umask;
/// the caller sets the exact mode of `dir` itself). Returns whether `dir`
/// itself was created.
fn mkdir_p(dir: &[u8]) -> Result<bool> {
    match sys::mkdir(&cstr(dir)?, 0o700) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(Errno::ENOENT) => {
            let parent = match dir.iter().rposition(|b| *b == b'/') {
                Some(0) | None => return Err(Errno::ENOENT),
                Some(i) => &dir[..i],
            };
            mkdir_p(parent)?;
            match sys::mkdir(&cstr(dir)?, 0o700) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A directory opened for a domain, with what its checks found.
pub(crate) struct OpenDir {
    pub fd: i32,
    pub access: Access,
}

/// Opens the domain directory `path` (absolute), creating it (and missing
/// parents) mode 0700 on first use unless `create` is `Create::No`, and
/// checks it. `strict`: the default domain, which must be private and not a
/// symbolic link.
pub(crate) fn open_domain_dir(path: &[u8], strict: bool, create: Create) -> Result<OpenDir> {
    let c = cstr(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | if strict { libc::O_NOFOLLOW } else { 0 };
    let mut created = false;
    let fd = loop {
        match sys::open(&c, flags, 0) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if !created && create != Create::No => created = mkdir_p(path)?,
            Err(Errno(libc::ELOOP)) | Err(Errno(libc::ENOTDIR)) => {
                let kind = sys::lstat(&c).map(|st| file_type(&st)).unwrap_or(0);
                return Err(refuse(path, format!("is {}, not a directory", type_name(kind))));
            }
            Err(e) => return Err(e),
        }
    };
    let r = (|| {
        let mut st = sys::fstat(fd)?;
        if created && st.st_uid == sys::geteuid() && st.st_mode & 0o7777 != 0o700 {
            // Exactly 0700, whatever the umask made of it.
            sys::fchmod(fd, 0o700)?;
            st = sys::fstat(fd)?;
        }
        let access = check_domain_dir(fd, &st, path, !strict)?;
        Ok(OpenDir { fd, access })
    })();
    if r.is_err() {
        sys::close(fd);
    }
    r
}

/// Whether the directory `st` (open as `fd`) may hold a domain, and how.
/// `allow_shared`: an explicitly named directory, which may be shared.
pub(crate) fn check_domain_dir(fd: i32, st: &libc::stat, path: &[u8], allow_shared: bool) -> Result<Access> {
    let euid = sys::geteuid();
    if file_type(st) != libc::S_IFDIR {
        return Err(refuse(path, format!("is {}, not a directory", type_name(file_type(st)))));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(refuse(path, format!("is writable by every user (mode {mode:04o})")));
    }
    if mode & 0o020 == 0 {
        caller_owns(st, path)?;
        return Ok(Access::Private);
    }
    if !allow_shared {
        return Err(refuse(path, format!("is writable by its group (mode {mode:04o}); the default domain is private")));
    }
    if mode & libc::S_ISGID == 0 {
        return Err(refuse(
            path,
            format!("is writable by its group but not set-group-ID (mode {mode:04o}): a private domain is mode 0700, one shared by a group 2770"),
        ));
    }
    if st.st_uid != euid && st.st_uid != 0 {
        check_maker(fd, st, path)?;
    }
    Ok(Access::Shared { gid: st.st_gid })
}

/// A shared directory owned by another user: only its owner, root or the
/// owner of its parent may have made it, so the parent must be writable by
/// nobody else.
fn check_maker(fd: i32, st: &libc::stat, path: &[u8]) -> Result<()> {
    let pfd = sys::openat(fd, c"..", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let pst = sys::fstat(pfd);
    sys::close(pfd);
    let pst = pst?;
    let trusted_owner = pst.st_uid == 0 || pst.st_uid == st.st_uid;
    if pst.st_mode & 0o022 != 0 || !trusted_owner {
        return Err(refuse(
            path,
            format!(
                "belongs to uid {} and lies in a directory others can write (uid {}, mode {:04o}): anyone could have made it",
                st.st_uid,
                pst.st_uid,
                pst.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Whether `st` is a directory the bus made for `access` (a memory or
/// links directory): private ones belong to the caller and nobody else may
/// use them; shared ones belong to the group, set-group-ID, closed to
/// others.
pub(crate) fn check_bus_dir(st: &libc::stat, access: Access, path: &[u8]) -> Result<()> {
    let mode = st.st_mode & 0o7777;
    if file_type(st) != libc::S_IFDIR {
        return Err(refuse(path, format!("is {}, not a directory", type_name(file_type(st)))));
    }
    match access {
        Access::Private => {
            caller_owns(st, path)?;
            if mode & 0o077 != 0 {
                return Err(refuse(path, format!("is open to other users (mode {mode:04o}, expected 0700)")));
            }
        }
        Access::Shared { gid } => {
            if st.st_gid != gid || mode & 0o007 != 0 || mode & libc::S_ISGID == 0 {
                return Err(refuse(
                    path,
                    format!("is group {} mode {mode:04o}, expected group {gid} mode 2770", st.st_gid),
                ));
            }
        }
    }
    Ok(())
}

/// Opens the directory `name` of `parent` (named `parent_path`), which the
/// bus makes for `access`: creating it if missing, with exactly
/// `access.dir_mode()` and, when shared, the group; and checking it.
pub(crate) fn open_bus_dir(parent: i32, parent_path: &[u8], name: &[u8], access: Access) -> Result<i32> {
    let c = cstr(name)?;
    let path = join(parent_path, name);
    for _ in 0..8 {
        match sys::openat(parent, &c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
            Ok(fd) => {
                let r = sys::fstat(fd).and_then(|st| check_bus_dir(&st, access, &path));
                if let Err(e) = r {
                    sys::close(fd);
                    return Err(e);
                }
                return Ok(fd);
            }
            Err(Errno::ENOENT) => make_bus_dir(parent, &c, access)?,
            Err(Errno(libc::ELOOP)) | Err(Errno(libc::ENOTDIR)) => {
                let kind = sys::lstatat(parent, &c).map(|st| file_type(&st)).unwrap_or(0);
                return Err(refuse(&path, format!("is {}, not a directory", type_name(kind))));
            }
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// Makes the directory `name` in `parent` for `access` (someone else making
/// it first is fine). A shared one is made under a temporary name and
/// renamed into place once its group and mode are right, so that no other
/// member ever finds it half made.
fn make_bus_dir(parent: i32, name: &std::ffi::CStr, access: Access) -> Result<()> {
    let (tmp, gid) = match access {
        Access::Private => {
            return match sys::mkdirat(parent, name, 0o700) {
                Ok(()) => {
                    let fd = sys::openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
                    let r = sys::fchmod(fd, 0o700);
                    sys::close(fd);
                    r
                }
                Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            };
        }
        Access::Shared { gid } => {
            let mut tmp = name.to_bytes().to_vec();
            tmp.extend_from_slice(format!(".new-{:x}", sys::getrandom_u64()).as_bytes());
            (cstr(&tmp)?, gid)
        }
    };
    sys::mkdirat(parent, &tmp, 0o700)?;
    let r = (|| {
        let fd = sys::openat(parent, &tmp, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        let r = sys::fchown(fd, u32::MAX, gid).and_then(|_| sys::fchmod(fd, access.dir_mode()));
        sys::close(fd);
        r?;
        match sys::rename_noreplace(parent, &tmp, name) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = sys::unlinkat(parent, &tmp, libc::AT_REMOVEDIR);
    r
}

// ------------------------------------------------------------------ files

/// Checks a file of a domain before use: its type, a single name for a
/// regular file, and that it belongs to the caller (private) or to the
/// domain's group (shared) and is writable by nobody else. ESTALE: it was
/// removed since it was opened (a domain's memory going, `memory`).
pub(crate) fn check_file(st: &libc::stat, kind: u32, access: Access, path: &[u8]) -> Result<()> {
    if file_type(st) != kind {
        return Err(refuse(path, format!("is {}, not {}", type_name(file_type(st)), type_name(kind))));
    }
    if kind == libc::S_IFREG && st.st_nlink == 0 {
        return Err(Errno::ESTALE);
    }
    if kind == libc::S_IFREG && st.st_nlink != 1 {
        return Err(refuse(path, format!("has {} names", st.st_nlink)));
    }
    let mode = st.st_mode & 0o7777;
    match access {
        Access::Private => {
            caller_owns(st, path)?;
            if mode & 0o022 != 0 {
                return Err(refuse(path, format!("is writable by other users (mode {mode:04o})")));
            }
        }
        Access::Shared { gid } => {
            if st.st_gid != gid {
                return Err(refuse(path, format!("belongs to group {}, not to the domain's group {gid}", st.st_gid)));
            }
            if mode & 0o002 != 0 {
                return Err(refuse(path, format!("is writable by every user (mode {mode:04o})")));
            }
        }
    }
    Ok(())
}

/// How [`open_file`] treats a missing or existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Open an existing file only.
    No,
    /// Open it, or create it if missing.
    IfMissing,
    /// Create it; an existing file is EEXIST.
    Only,
}

/// Opens the regular file `name` of the directory `dir` (named `dir_path`
/// in messages) with `flags`, never through a symbolic link, and checks it.
/// A file it creates gets exactly `access.file_mode()`. Returns the
/// descriptor and whether the file was created.
pub(crate) fn open_file(dir: i32, dir_path: &[u8], name: &[u8], flags: i32, access: Access, create: Create) -> Result<(i32, bool)> {
    let c = cstr(name)?;
    for _ in 0..8 {
        let (fd, created) = if create == Create::Only {
            (sys::openat(dir, &c, flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, access.file_mode())?, true)
        } else {
            match sys::openat(dir, &c, flags | libc::O_NOFOLLOW, 0) {
                Ok(fd) => (fd, false),
                Err(Errno::ENOENT) if create == Create::IfMissing => {
                    match sys::openat(dir, &c, flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, access.file_mode()) {
                        Ok(fd) => (fd, true),
                        // Made by someone else meanwhile: open that one.
                        Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(Errno(libc::ELOOP)) => return Err(refuse(&join(dir_path, name), "is a symbolic link")),
                Err(e) => return Err(e),
            }
        };
        let r = (|| {
            if created {
                sys::fchmod(fd, access.file_mode())?;
            }
            let st = sys::fstat(fd)?;
            check_file(&st, libc::S_IFREG, access, &join(dir_path, name))
        })();
        if let Err(e) = r {
            sys::close(fd);
            if created {
                let _ = sys::unlinkat(dir, &c, 0);
            }
            return Err(e);
        }
        return Ok((fd, created));
    }
    Err(Errno::EAGAIN)
}

/// Binds the socket `fd` at `addr`, which names the entry `name` of the
/// directory `dir`, with exactly `access.file_mode()`. The node `bind`
/// makes gets the socket's own mode less the umask, so the socket is given
/// the wanted mode first (the node is then never more open than wanted) and
/// the node is set exactly afterwards; it is also checked to be where `dir`
/// is.
pub(crate) fn bind_socket(fd: i32, addr: &sys::UnixAddr, dir: i32, dir_path: &[u8], name: &[u8], access: Access) -> Result<()> {
    let mode = access.file_mode();
    sys::fchmod(fd, mode)?;
    sys::bind(fd, addr)?;
    let c = cstr(name)?;
    let path = join(dir_path, name);
    let st = sys::lstatat(dir, &c).map_err(|_| refuse(&path, "the socket address does not lead into the domain directory"))?;
    let owner_ok = match access {
        Access::Private => st.st_uid == sys::geteuid(),
        Access::Shared { gid } => st.st_gid == gid,
    };
    if file_type(&st) != libc::S_IFSOCK || !owner_ok {
        return Err(refuse(&path, "the socket address does not lead to the socket just bound"));
    }
    if st.st_mode & 0o7777 != mode {
        sys::fchmodat(dir, &c, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(mode: u32, uid: u32, gid: u32) -> libc::stat {
        let mut st = sys::stat_zeroed();
        st.st_mode = mode;
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_nlink = 1;
        st
    }

    #[test]
    fn private_and_shared_directories_are_told_apart() {
        let me = sys::geteuid();
        let dir = |m| stat_of(libc::S_IFDIR | m, me, 77);
        assert_eq!(check_domain_dir(-1, &dir(0o700), b"/d", false), Ok(Access::Private));
        assert_eq!(check_domain_dir(-1, &dir(0o755), b"/d", false), Ok(Access::Private));
        assert_eq!(check_domain_dir(-1, &dir(0o2770), b"/d", true), Ok(Access::Shared { gid: 77 }));
        for (mode, shared) in [(0o777, true), (0o1777, true), (0o2770, false), (0o770, true), (0o702, true)] {
            assert_eq!(check_domain_dir(-1, &dir(mode), b"/d", shared), Err(Errno::EPERM), "{mode:o}");
            assert!(take_refusal().unwrap().starts_with("/d: "));
        }
        let other = stat_of(libc::S_IFDIR | 0o700, me.wrapping_add(1), 77);
        assert_eq!(check_domain_dir(-1, &other, b"/d", true), Err(Errno::EPERM));
        assert!(take_refusal().unwrap().contains("belongs to uid"));
        let file = stat_of(libc::S_IFREG | 0o700, me, 77);
        assert_eq!(check_domain_dir(-1, &file, b"/d", true), Err(Errno::EPERM));
    }

    #[test]
    fn files_must_have_the_domain_owner_and_one_name() {
        let me = sys::geteuid();
        let f = |m, uid, gid| stat_of(libc::S_IFREG | m, uid, gid);
        assert_eq!(check_file(&f(0o600, me, 5), libc::S_IFREG, Access::Private, b"x"), Ok(()));
        assert_eq!(check_file(&f(0o660, 9, 5), libc::S_IFREG, Access::Shared { gid: 5 }, b"x"), Ok(()));
        assert_eq!(check_file(&f(0o600, me.wrapping_add(1), 5), libc::S_IFREG, Access::Private, b"x"), Err(Errno::EPERM));
        assert_eq!(check_file(&f(0o666, me, 5), libc::S_IFREG, Access::Private, b"x"), Err(Errno::EPERM));
        assert_eq!(check_file(&f(0o660, me, 6), libc::S_IFREG, Access::Shared { gid: 5 }, b"x"), Err(Errno::EPERM));
        let mut two = f(0o600, me, 5);
        two.st_nlink = 2;
        assert_eq!(check_file(&two, libc::S_IFREG, Access::Private, b"x"), Err(Errno::EPERM));
        two.st_nlink = 0;
        assert_eq!(check_file(&two, libc::S_IFREG, Access::Private, b"x"), Err(Errno::ESTALE));
        let sock = stat_of(libc::S_IFSOCK | 0o600, me, 5);
        assert_eq!(check_file(&sock, libc::S_IFREG, Access::Private, b"x"), Err(Errno::EPERM));
        assert_eq!(check_file(&sock, libc::S_IFSOCK, Access::Private, b"x"), Ok(()));
        clear_refusal();
    }

    #[test]
    fn files_are_made_with_their_mode_whatever_the_umask() {
        let base = std::env::temp_dir().join(format!("bus1-trust-test.{}", sys::getpid()));
        std::fs::create_dir_all(&base).unwrap();
        let path = base.as_os_str().as_encoded_bytes().to_vec();
        let dir = sys::open(&cstr(&path).unwrap(), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let old = sys::umask(0o077);
        let (fd, created) = open_file(dir, &path, b"f", libc::O_RDWR, Access::Private, Create::IfMissing).unwrap();
        assert!(created);
        assert_eq!(sys::fstat(fd).unwrap().st_mode & 0o7777, 0o600);
        sys::close(fd);
        assert_eq!(open_file(dir, &path, b"f", libc::O_RDWR, Access::Private, Create::Only).err(), Some(Errno::EEXIST));
        let (fd, created) = open_file(dir, &path, b"f", libc::O_RDWR, Access::Private, Create::IfMissing).unwrap();
        assert!(!created);
        sys::close(fd);
        // a symbolic link is never followed
        std::os::unix::fs::symlink(base.join("f"), base.join("l")).unwrap();
        assert_eq!(open_file(dir, &path, b"l", libc::O_RDWR, Access::Private, Create::IfMissing).err(), Some(Errno::EPERM));
        assert!(take_refusal().unwrap().contains("symbolic link"));
        sys::umask(old);
        sys::close(dir);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
