//! A domain: one bus, living in one directory.
//!
//! The directory holds the shared segment (`segment`), one socket per peer
//! (`peer.<serial>`, the peer's fd), one pool file per peer
//! (`pool.<serial>`) and the fd vaults (`vault.<serial>.<gen>`). Peers opened
//! with the same directory share a bus; different directories are fully
//! isolated buses. This module maps the segment into the process (once per
//! directory), creates it on first use and keeps the process-local state:
//! pool mappings and the internal sockets used to ring peers and probe
//! whether they are alive. Socket addresses name the directory through
//! `sockdir` (a short link when the directory is too long for them).

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::shm::{PoolMap, PoolMapping, Segment};
use crate::sync::LocalMutex;
use crate::sys::{self, cstr};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

/// A domain mapped into this process.
pub struct Domain {
    pub(crate) dir: Vec<u8>,
    /// The directory named in the domain's socket addresses (`sockdir`).
    sock_dir: Vec<u8>,
    pub(crate) segment_path: CString,
    pub(crate) seg: Segment,
    pub(crate) local: LocalMutex<Local>,
    dev_ino: (u64, u64),
}

/// Process-local state of a domain (txn rule 7).
pub(crate) struct Local {
    /// Read-write mappings of peers' pools, by serial.
    pools: HashMap<u64, PoolMapping>,
    /// Unbound datagram socket that sends readiness tokens.
    ring_fd: i32,
    /// Socket used to test whether a peer socket still exists.
    probe_fd: i32,
    /// The domain directory, kept open for the watcher's file sweep so that
    /// the sweep takes no descriptor number from the application.
    dir_fd: i32,
    /// Sockets connected to recently rung peers: (serial, fd, last use).
    /// Ringing through them spares the kernel a path lookup per token.
    bells: Vec<(u64, i32, u64)>,
    bell_clock: u64,
}

/// Bumped whenever a pool mapping goes away, which invalidates the
/// per-thread cache of the last pool used.
static POOL_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// (domain, serial, generation, view) of the last pool this thread used.
    static LAST_POOL: core::cell::Cell<(usize, u64, u64, Option<PoolMap>)> = const { core::cell::Cell::new((0, 0, 0, None)) };
}

/// How many connected ring sockets a process keeps per domain.
const BELL_CACHE: usize = 8;

fn registry() -> &'static LocalMutex<Vec<Arc<Domain>>> {
    static R: OnceLock<LocalMutex<Vec<Arc<Domain>>>> = OnceLock::new();
    R.get_or_init(|| {
        crate::forks::install();
        LocalMutex::new(Vec::new())
    })
}

/// The default domain directory: `$XDG_RUNTIME_DIR/bus1`, else
/// `/dev/shm/bus1-<uid>`, else `/tmp/bus1-<uid>`.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        if !x.is_empty() && Path::new(&x).is_dir() {
            return Path::new(&x).join("bus1");
        }
    }
    let uid = sys::getuid();
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from(format!("/dev/shm/bus1-{uid}"))
    } else {
        PathBuf::from(format!("/tmp/bus1-{uid}"))
    }
}

/// The domain directory the environment names: `BUS1_DOMAIN` if set and
/// not empty, else [`default_dir`].
pub fn configured_dir() -> PathBuf {
    match std::env::var_os("BUS1_DOMAIN") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => default_dir(),
    }
}

/// Creates `dir` (and missing parents) with mode 0700.
fn mkdir_p(dir: &[u8]) -> Result<()> {
    match sys::mkdir(&cstr(dir)?, 0o700) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Ok(()),
        Err(Errno::ENOENT) => {
            let parent = match dir.iter().rposition(|b| *b == b'/') {
                Some(0) | None => return Err(Errno::ENOENT),
                Some(i) => &dir[..i],
            };
            mkdir_p(parent)?;
            match sys::mkdir(&cstr(dir)?, 0o700) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The path of the entry `name` of directory `dir`.
fn entry_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// A per-peer file of a domain directory, named by its entry name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerFile {
    /// `peer.<serial>`: the peer's socket.
    Socket(u64),
    /// `pool.<serial>`: the peer's pool.
    Pool(u64),
    /// `vault.<serial>.<gen>`: one generation of the peer's fd vault.
    Vault(u64, u64),
}

/// Which per-peer file `name` is (numbers in hex), if it is one.
pub(crate) fn parse_peer_file(name: &[u8]) -> Option<PeerFile> {
    let hex = |s: &[u8]| {
        if s.is_empty() || !s.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
    };
    if let Some(serial) = name.strip_prefix(b"peer.") {
        return hex(serial).map(PeerFile::Socket);
    }
    if let Some(serial) = name.strip_prefix(b"pool.") {
        return hex(serial).map(PeerFile::Pool);
    }
    let rest = name.strip_prefix(b"vault.")?;
    let dot = rest.iter().position(|b| *b == b'.')?;
    Some(PeerFile::Vault(hex(&rest[..dot])?, hex(&rest[dot + 1..])?))
}

/// Whether a domain left by another version of the shim is still in use:
/// another process maps its segment (`seg_fd`), or one of its peer sockets
/// is still open somewhere. When that cannot be told (no /proc), it counts
/// as in use.
fn stale_domain_in_use(dir: &[u8], sock_dir: &[u8], seg_fd: i32) -> bool {
    let Ok(st) = sys::fstat(seg_fd) else { return true };
    let Ok(names) = cstr(dir).and_then(|c| sys::dir_names(&c)) else { return true };
    for name in names.iter().filter(|n| n.starts_with(b"peer.")) {
        if socket_still_open(&entry_path(sock_dir, name)) {
            return true;
        }
    }
    segment_mapped_elsewhere(&st)
}

/// Whether some socket is bound to `path` (its last fd not yet closed).
fn socket_still_open(path: &[u8]) -> bool {
    let Ok(addr) = sys::UnixAddr::new(path) else { return true };
    let Ok(fd) = sys::socket(libc::SOCK_DGRAM) else { return true };
    let bound = socket_bound_at(fd, &addr);
    sys::close(fd);
    bound
}

/// Whether a socket is bound at `addr`, tested by connecting the datagram
/// socket `probe` to it: the address refuses once the socket's last fd is
/// closed. Any other failure counts as bound (nothing is torn down on a
/// doubt).
fn socket_bound_at(probe: i32, addr: &sys::UnixAddr) -> bool {
    !matches!(sys::connect(probe, addr), Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT))
}

/// Whether a process other than this one maps the file `st` describes
/// (looked up in every readable `/proc/<pid>/maps`).
fn segment_mapped_elsewhere(st: &libc::stat) -> bool {
    let Ok(pids) = cstr(b"/proc").and_then(|c| sys::dir_names(&c)) else { return true };
    let dev = format!("{:02x}:{:02x}", libc::major(st.st_dev), libc::minor(st.st_dev));
    let ino = st.st_ino.to_string();
    let me = sys::getpid().to_string();
    for pid in pids {
        if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) || pid == me.as_bytes() {
            continue;
        }
        let mut path = b"/proc/".to_vec();
        path.extend_from_slice(&pid);
        path.extend_from_slice(b"/maps");
        let Ok(maps) = cstr(&path).and_then(|c| sys::read_file(&c)) else { continue };
        let hit = maps.split(|b| *b == b'\n').any(|line| {
            let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty()).skip(3);
            fields.next() == Some(dev.as_bytes()) && fields.next() == Some(ino.as_bytes())
        });
        if hit {
            return true;
        }
    }
    false
}

/// `dir` made absolute, without trailing slashes.
fn absolute_dir(dir: &Path) -> Result<Vec<u8>> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|_| Errno::ENOENT)?.join(dir)
    };
    let mut dir_bytes = abs.as_os_str().as_bytes().to_vec();
    while dir_bytes.len() > 1 && dir_bytes.ends_with(b"/") {
        dir_bytes.pop();
    }
    Ok(dir_bytes)
}

impl Domain {
    /// Maps the domain in `dir`, creating directory and segment on first
    /// use. Attaching the same directory twice returns the same mapping.
    pub fn attach(dir: &Path) -> Result<Arc<Domain>> {
        let dir_bytes = absolute_dir(dir)?;
        let reg = registry();
        let mut list = reg.lock();
        if let Some(d) = list.iter().find(|d| d.dir == dir_bytes) {
            return Ok(d.clone());
        }
        mkdir_p(&dir_bytes)?;
        let st = sys::stat(&cstr(&dir_bytes)?)?;
        let dev_ino = (st.st_dev, st.st_ino);
        if let Some(d) = list.iter().find(|d| d.dev_ino == dev_ino) {
            return Ok(d.clone());
        }
        let d = Arc::new(Self::map(dir_bytes, dev_ino)?);
        list.push(d.clone());
        drop(list);
        crate::reaper::attached(&d);
        Ok(d)
    }

    /// Maps the domain in `dir` for a tool, creating nothing: ENOENT if
    /// there is no domain there, ENODEV if its segment is not initialised
    /// or has another layout version. No watcher thread is started.
    pub fn open_existing(dir: &Path) -> Result<Arc<Domain>> {
        let dir_bytes = absolute_dir(dir)?;
        let mut list = registry().lock();
        if let Some(d) = list.iter().find(|d| d.dir == dir_bytes) {
            return Ok(d.clone());
        }
        let st = sys::stat(&cstr(&dir_bytes)?)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno(libc::ENOTDIR));
        }
        let dev_ino = (st.st_dev, st.st_ino);
        if let Some(d) = list.iter().find(|d| d.dev_ino == dev_ino) {
            return Ok(d.clone());
        }
        let segment_path = cstr(&entry_path(&dir_bytes, b"segment"))?;
        let fd = sys::open(&segment_path, libc::O_RDWR | libc::O_NOFOLLOW, 0)?;
        let seg = sys::fstat(fd).and_then(|st| {
            if st.st_mode & libc::S_IFMT != libc::S_IFREG || (st.st_size as u64) < SEG_SIZE {
                return Err(Errno::ENODEV);
            }
            Segment::map(fd, SEG_SIZE as usize)
        });
        sys::close(fd);
        // A long directory's sockets are named through a link (`sockdir`),
        // renewed here if it went missing, or peers could not be probed.
        let sock_dir = crate::sockdir::socket_dir(&dir_bytes, dev_ino)?;
        let d = Domain::new(dir_bytes, sock_dir, segment_path, seg?, dev_ino);
        let hdr: &Header = d.seg.at0();
        if hdr.magic.load() != MAGIC || hdr.version.get() != VERSION {
            return Err(Errno::ENODEV);
        }
        let d = Arc::new(d);
        list.push(d.clone());
        Ok(d)
    }

    fn new(dir: Vec<u8>, sock_dir: Vec<u8>, segment_path: CString, seg: Segment, dev_ino: (u64, u64)) -> Domain {
        Domain {
            dir,
            sock_dir,
            segment_path,
            seg,
            local: LocalMutex::new(Local {
                pools: HashMap::new(),
                ring_fd: -1,
                probe_fd: -1,
                dir_fd: -1,
                bells: Vec::new(),
                bell_clock: 0,
            }),
            dev_ino,
        }
    }

    /// Every domain mapped into this process.
    pub fn attached() -> Vec<Arc<Domain>> {
        registry().lock().clone()
    }

    fn map(dir: Vec<u8>, dev_ino: (u64, u64)) -> Result<Domain> {
        let sock_dir = crate::sockdir::socket_dir(&dir, dev_ino)?;
        let mut sp = dir.clone();
        sp.extend_from_slice(b"/segment");
        let segment_path = cstr(&sp)?;
        let fd = sys::open(&segment_path, libc::O_RDWR | libc::O_CREAT, 0o600)?;
        let r = (|| {
            sys::flock(fd, libc::LOCK_EX)?;
            let st = sys::fstat(fd)?;
            if (st.st_size as u64) < SEG_SIZE {
                sys::ftruncate(fd, SEG_SIZE)?;
            }
            let seg = Segment::map(fd, SEG_SIZE as usize)?;
            let d = Domain::new(dir, sock_dir, segment_path.clone(), seg, dev_ino);
            let hdr: &Header = d.seg.at0();
            if hdr.magic.load() != MAGIC {
                // A new segment. Files of peers of an earlier one (whose
                // segment was removed) would collide with the new serials.
                d.remove_peer_files()?;
                d.initialise()?;
            } else if hdr.version.get() != VERSION {
                // Left by another version of the shim, whose records mean
                // something else: start afresh once nothing uses it.
                if stale_domain_in_use(&d.dir, &d.sock_dir, fd) {
                    return Err(Errno::ENODEV);
                }
                d.clear_stale(fd)?;
                d.initialise()?;
            }
            Ok(d)
        })();
        // The mapping keeps the open file description (and with it the
        // flock) alive, so the lock must be dropped explicitly.
        let _ = sys::flock(fd, libc::LOCK_UN);
        sys::close(fd);
        r
    }

    /// Empties a stale domain (under the file lock taken in `map`): removes
    /// its peers' files and drops the segment's pages, so that it reads as
    /// zeros.
    fn clear_stale(&self, seg_fd: i32) -> Result<()> {
        self.remove_peer_files()?;
        sys::ftruncate(seg_fd, 0)?;
        sys::ftruncate(seg_fd, SEG_SIZE)
    }

    /// Removes the peer sockets, pools and fd vaults in the directory
    /// (under the file lock taken in `map`, before a segment is
    /// initialised: no peer of the new segment exists yet).
    fn remove_peer_files(&self) -> Result<()> {
        for (name, _) in self.peer_files()? {
            let _ = self.remove_entry(&name);
        }
        Ok(())
    }

    /// The per-peer files now in the directory, with their names. Read
    /// through a long-lived internal descriptor: the watcher calls this
    /// periodically, and a descriptor opened for the occasion could take
    /// the last free number from an application working at its limit.
    pub(crate) fn peer_files(&self) -> Result<Vec<(Vec<u8>, PeerFile)>> {
        let names = {
            let mut l = self.local.lock();
            if l.dir_fd < 0 {
                l.dir_fd = internal_fd(sys::open(&cstr(&self.dir)?, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?);
            }
            sys::dir_names_at(l.dir_fd)?
        };
        Ok(names.into_iter().filter_map(|n| parse_peer_file(&n).map(|f| (n, f))).collect())
    }

    /// Removes the directory entry `name`.
    pub(crate) fn remove_entry(&self, name: &[u8]) -> Result<()> {
        sys::unlink(&cstr(&entry_path(&self.dir, name))?)
    }

    /// Initialises a new segment (under the file lock taken in `map`).
    fn initialise(&self) -> Result<()> {
        // A crashed initialiser may have left anything in the header.
        self.seg.zero(0, core::mem::size_of::<Header>());
        self.init_lock()?;
        let hdr: &Header = self.seg.at0();
        hdr.version.raw_set(VERSION);
        hdr.heap_top.raw_set(HEAP_OFF);
        hdr.heap_reserved.raw_set(HEAP_OFF);
        hdr.next_serial.raw_set(1);
        hdr.next_nonce.raw_set(1);
        hdr.magic.store(MAGIC);
        Ok(())
    }

    /// The directory of this domain.
    pub fn dir(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.dir))
    }

    pub(crate) fn path_of(&self, name: &str) -> Vec<u8> {
        entry_path(&self.dir, name.as_bytes())
    }

    /// The address of `serial`'s socket (named through `sock_dir`).
    pub(crate) fn peer_path(&self, serial: u64) -> Vec<u8> {
        entry_path(&self.sock_dir, format!("peer.{serial:x}").as_bytes())
    }

    pub(crate) fn pool_path(&self, serial: u64) -> Vec<u8> {
        self.path_of(&format!("pool.{serial:x}"))
    }

    /// The address of `serial`'s fd vault of generation `gen`.
    pub(crate) fn vault_path(&self, serial: u64, gen: u64) -> Vec<u8> {
        entry_path(&self.sock_dir, format!("vault.{serial:x}.{gen:x}").as_bytes())
    }

    /// This process's read-write view of `serial`'s pool. Mappings are
    /// cached; the caller holds the domain lock, so the peer (and its pool
    /// file) cannot go away meanwhile.
    pub(crate) fn pool(&self, serial: u64) -> Result<PoolMap> {
        let me = self as *const Domain as usize;
        let gen = POOL_GEN.load(Ordering::Acquire);
        let hit = LAST_POOL.with(|c| match c.get() {
            (d, s, g, Some(v)) if d == me && s == serial && g == gen => Some(v),
            _ => None,
        });
        if let Some(v) = hit {
            return Ok(v);
        }
        let v = self.pool_slow(serial)?;
        LAST_POOL.with(|c| c.set((me, serial, gen, Some(v))));
        Ok(v)
    }

    /// This process's view of `serial`'s pool, if it has mapped it already
    /// (nothing is opened or mapped).
    pub(crate) fn mapped_pool(&self, serial: u64) -> Option<PoolMap> {
        self.local.lock().pools.get(&serial).map(PoolMapping::view)
    }

    fn pool_slow(&self, serial: u64) -> Result<PoolMap> {
        let mut l = self.local.lock();
        if let Some(m) = l.pools.get(&serial) {
            return Ok(m.view());
        }
        let fd = sys::open(&cstr(&self.pool_path(serial))?, libc::O_RDWR, 0)?;
        let r = PoolMapping::map(fd);
        sys::close(fd);
        let m = r?;
        let v = m.view();
        l.pools.insert(serial, m);
        Ok(v)
    }

    /// Drops this process's mapping of a pool (the peer is gone). Callers
    /// hold the domain lock, so no transaction uses a view of it; the
    /// generation bump empties every thread's cache of it.
    pub(crate) fn forget_pool(&self, serial: u64) {
        let mut l = self.local.lock();
        if let Some(m) = l.pools.remove(&serial) {
            POOL_GEN.fetch_add(1, Ordering::AcqRel);
            drop(m);
        }
    }

    /// Serials of the pools this process has mapped.
    pub(crate) fn mapped_pools(&self) -> Vec<u64> {
        self.local.lock().pools.keys().copied().collect()
    }

    /// Runs `f` with the ring socket, creating it when needed. `f` returns
    /// true when the socket is exhausted (its send buffer holds too many
    /// undelivered tokens) and must be replaced.
    pub(crate) fn with_ring_fd<R>(&self, f: impl Fn(i32) -> (R, bool)) -> Result<R> {
        let mut l = self.local.lock();
        for _ in 0..2 {
            if l.ring_fd < 0 {
                l.ring_fd = internal_socket(libc::SOCK_DGRAM)?;
                let _ = sys::setsockopt_int(l.ring_fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
            }
            let (r, exhausted) = f(l.ring_fd);
            if !exhausted {
                return Ok(r);
            }
            // Tokens already sent stay charged to the old socket until they
            // are consumed; a new socket has a fresh send buffer.
            forget_internal(l.ring_fd);
            sys::close(l.ring_fd);
            l.ring_fd = -1;
        }
        Err(Errno::ENOMEM)
    }

    /// Sends a plain readiness token to `serial`'s socket through a cached
    /// connected socket. Returns false if the peer socket is gone.
    pub(crate) fn ring_connected(&self, serial: u64) -> bool {
        let mut l = self.local.lock();
        l.bell_clock += 1;
        let now = l.bell_clock;
        let idx = match l.bells.iter().position(|b| b.0 == serial) {
            Some(i) => i,
            None => {
                let Ok(addr) = sys::UnixAddr::new(&self.peer_path(serial)) else { return true };
                let Ok(fd) = internal_socket(libc::SOCK_DGRAM) else { return true };
                if sys::connect(fd, &addr).is_err() {
                    forget_internal(fd);
                    sys::close(fd);
                    return false;
                }
                if l.bells.len() >= BELL_CACHE {
                    let (i, _) = l.bells.iter().enumerate().min_by_key(|(_, b)| b.2).unwrap();
                    let old = l.bells.swap_remove(i);
                    forget_internal(old.1);
                    sys::close(old.1);
                }
                l.bells.push((serial, fd, now));
                l.bells.len() - 1
            }
        };
        l.bells[idx].2 = now;
        match sys::send_token(l.bells[idx].1) {
            // A full queue is readable anyway.
            Ok(()) | Err(Errno::EAGAIN) => true,
            Err(_) => {
                let old = l.bells.swap_remove(idx);
                forget_internal(old.1);
                sys::close(old.1);
                false
            }
        }
    }

    /// Forgets the connected ring socket of a peer that is gone.
    pub(crate) fn forget_bell(&self, serial: u64) {
        let mut l = self.local.lock();
        if let Some(i) = l.bells.iter().position(|b| b.0 == serial) {
            let old = l.bells.swap_remove(i);
            forget_internal(old.1);
            sys::close(old.1);
        }
    }

    /// Whether the peer socket of `serial` still exists (some process, or
    /// a message in flight, still holds an fd of it).
    pub fn peer_socket_alive(&self, serial: u64) -> bool {
        self.socket_alive_at(&self.peer_path(serial))
    }

    /// Whether vault generation `gen` of `serial` still exists (its
    /// listening socket is still held, in flight in the peer socket).
    pub(crate) fn vault_alive(&self, serial: u64, gen: u64) -> bool {
        self.socket_alive_at(&self.vault_path(serial, gen))
    }

    /// Whether a socket is bound at socket address `path`; a doubt counts
    /// as bound.
    fn socket_alive_at(&self, path: &[u8]) -> bool {
        let Ok(addr) = sys::UnixAddr::new(path) else { return true };
        let mut l = self.local.lock();
        if l.probe_fd < 0 {
            match internal_socket(libc::SOCK_DGRAM) {
                Ok(fd) => l.probe_fd = fd,
                Err(_) => return true,
            }
        }
        socket_bound_at(l.probe_fd, &addr)
    }
}

// ------------------------------------------------------ internal sockets

/// Descriptors the engine owns inside the application's fd table; the
/// preload must not let the application close or replace them.
static INTERNAL: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];

fn remember_internal(fd: i32) {
    for slot in &INTERNAL {
        if slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return;
        }
    }
}

fn forget_internal(fd: i32) {
    for slot in &INTERNAL {
        if slot.compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return;
        }
    }
}

/// Whether `fd` is one of the engine's own long-lived descriptors.
pub fn is_internal_fd(fd: i32) -> bool {
    fd >= 0 && INTERNAL.iter().any(|s| s.load(Ordering::Acquire) == fd)
}

/// Lowest number used for long-lived internal descriptors, so that they
/// stay out of the way of the application's own (and of select()).
fn internal_fd_floor() -> i32 {
    let cur = crate::sys::nofile_limit().min(1 << 20) as i32;
    if cur > 1200 {
        1024
    } else {
        (cur - 64).max(3)
    }
}

/// Creates a long-lived internal socket at a high descriptor number.
fn internal_socket(ty: i32) -> Result<i32> {
    Ok(internal_fd(sys::socket(ty)?))
}

/// Moves a new long-lived internal descriptor to a high number and
/// remembers it as internal.
fn internal_fd(fd: i32) -> i32 {
    let high = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, internal_fd_floor() as libc::c_long);
    let fd = match high {
        Ok(h) => {
            sys::close(fd);
            h as i32
        }
        Err(_) => fd,
    };
    remember_internal(fd);
    fd
}

/// Takes `fd` (opened by the caller for its own long-lived use, such as a
/// trace file) into the engine's internal descriptors: moved to a high
/// number and shielded from the application's close/dup2 like the
/// engine's own. Returns the descriptor to use from then on.
pub fn adopt_internal_fd(fd: i32) -> i32 {
    internal_fd(fd)
}

/// Closes a descriptor taken with [`adopt_internal_fd`].
pub fn release_internal_fd(fd: i32) {
    forget_internal(fd);
    sys::close(fd);
}

/// Moves an internal descriptor out of the way of `fd` (the application
/// wants that number, e.g. with dup2). Returns true if `fd` was internal.
pub fn evict_internal_fd(fd: i32) -> bool {
    if !is_internal_fd(fd) {
        return false;
    }
    for d in Domain::attached() {
        let mut guard = d.local.lock();
        let l = &mut *guard;
        for slot in [&mut l.ring_fd, &mut l.probe_fd, &mut l.dir_fd] {
            if *slot == fd {
                if let Ok(n) = sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, internal_fd_floor() as libc::c_long) {
                    forget_internal(fd);
                    remember_internal(n as i32);
                    *slot = n as i32;
                } else {
                    forget_internal(fd);
                    *slot = -1;
                }
                sys::close(fd);
            }
        }
        if let Some(i) = l.bells.iter().position(|b| b.1 == fd) {
            l.bells.swap_remove(i);
            forget_internal(fd);
            sys::close(fd);
        }
    }
    true
}

/// Fork prepare handler: takes every process-local lock.
pub(crate) fn lock_all_local() {
    registry().raw_lock();
    for d in registry_snapshot() {
        d.local.raw_lock();
    }
}

/// Fork parent/child handler: releases (parent) or re-initialises (child)
/// the locks taken by [`lock_all_local`].
pub(crate) fn unlock_all_local(child: bool) {
    for d in registry_snapshot() {
        if child {
            d.local.reinit_in_child();
        } else {
            d.local.raw_unlock();
        }
    }
    if child {
        registry().reinit_in_child();
    } else {
        registry().raw_unlock();
    }
}

/// The registry's list while its lock is held by the caller.
fn registry_snapshot() -> Vec<Arc<Domain>> {
    // SAFETY: only called by the fork handlers, which hold the registry
    // lock through raw_lock and create no guard.
    unsafe { registry().peek_locked().clone() }
}

#[cfg(test)]
mod tests {
    use super::{parse_peer_file, PeerFile};

    #[test]
    fn only_the_bus_files_count_as_peer_files() {
        let cases = [
            ("peer.1", PeerFile::Socket(1)),
            ("pool.1f", PeerFile::Pool(0x1f)),
            ("vault.a.0", PeerFile::Vault(10, 0)),
            ("peer.ffffffff", PeerFile::Socket(0xffff_ffff)),
        ];
        for (name, file) in cases {
            assert_eq!(parse_peer_file(name.as_bytes()), Some(file), "{name}");
        }
        for name in ["segment", "peer.", "pool.x", "vault.1", "vault.1.", "peer.1.txt", "poolside", "vault.1.2.3", "peer.+1"] {
            assert_eq!(parse_peer_file(name.as_bytes()), None, "{name}");
        }
    }
}
