//! A domain: one bus, living in one directory.
//!
//! A domain's files live in its memory directory (`memory`): the domain
//! directory itself on a memory file system, else a directory of its own on
//! /dev/shm that the domain directory names. They are the shared segment
//! (`segment`), one socket per peer (`peer.<serial>`, the peer's fd), one
//! pool file per peer (`pool.<serial>`) and the fd vaults
//! (`vault.<serial>.<gen>`). Peers opened with the same directory share a
//! bus; different directories are fully isolated buses. This module maps
//! the segment into the process (once per domain), creates it on first use
//! and keeps the process-local state: the open memory directory, which
//! every file is opened relative to, pool mappings and the internal
//! sockets used to ring peers and probe whether they are alive. Socket
//! addresses name the memory directory through `sockdir` (a short link
//! when it is too long for them). Which directories and files may be used
//! at all is `trust`'s business.

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::memory::{self, Garbage, MemDir, ATTACH_BYTE, USER_BYTE};
use crate::shm::{PoolMapping, Segment};
use crate::sync::LocalMutex;
use crate::sys::{self, cstr, ByteLock};
use crate::trust::{self, Access, Create};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A domain mapped into this process.
pub struct Domain {
    /// The domain directory, as it was named.
    pub(crate) dir: Vec<u8>,
    /// The memory directory, where the domain's files are.
    mem_dir: Vec<u8>,
    /// The memory directory is one of its own (removed with the memory).
    own_mem_dir: bool,
    /// The directory named in the domain's socket addresses (`sockdir`).
    sock_dir: Vec<u8>,
    access: Access,
    pub(crate) seg: Segment,
    pub(crate) local: LocalMutex<Local>,
    /// Device and inode of the memory directory.
    dev_ino: (u64, u64),
    /// This process has said that the domain is damaged (`fault`).
    pub(crate) damage_reported: std::sync::atomic::AtomicBool,
    /// Undo log entries known to be backed by memory (this process's
    /// knowledge; see [`Domain::back_log`]).
    log_backed: AtomicU64,
}

/// Process-local state of a domain (txn rule 7).
pub(crate) struct Local {
    /// Read-write mappings of peers' pools, by serial.
    pools: HashMap<u64, Arc<PoolMapping>>,
    /// Unbound datagram socket that sends readiness tokens.
    ring_fd: i32,
    /// Socket used to test whether a peer socket still exists.
    probe_fd: i32,
    /// The memory directory, which every file of the domain is opened
    /// relative to. Long-lived, so that no call takes a descriptor number
    /// from an application working at its limit.
    mem_fd: i32,
    /// The segment, open for growing it; its open file description holds
    /// this process's lock on `memory::USER_BYTE`.
    seg_fd: i32,
    /// Sockets connected to sockets this process rings often (peer
    /// sockets for tokens, wake sockets of sleeping threads): ringing
    /// through them spares the kernel a path lookup per ring. The first
    /// few targets get one; the others are rung through `ring_fd`, so a
    /// ring never creates a descriptor.
    bells: Vec<(RingTo, i32)>,
    /// The wake sockets of this process's threads: (fd, id).
    wake_socks: Vec<(i32, u64)>,
    /// Bells with a wake-up or token owed at this process's last wake-up
    /// tick: (bell, `owed`, `tok_sent`) then (`doorbell::tick`).
    owed_seen: Vec<(u64, u64, u64)>,
}

/// Where a ring goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RingTo {
    /// A peer socket (a kernel-visible token).
    Peer(u64),
    /// The wake socket of a sleeping thread.
    Wake(u64),
}

/// What became of a ring.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Rung {
    /// Queued (or the target's queue is full, which is readable anyway).
    Sent,
    /// The target socket no longer exists or no longer takes datagrams.
    Gone,
    /// No descriptor could be had to send it.
    Failed,
}

/// Bumped whenever a pool mapping goes away, which invalidates the
/// per-thread caches of pools.
static POOL_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Entries of a thread's pool cache: a multicast goes to many pools in a
/// row, and each miss costs the process's pool table and its lock.
const POOL_CACHE: usize = 1024;

/// A thread's recently used pool mappings, direct-mapped by serial, all
/// of one generation of [`POOL_GEN`] (emptied when it moves on, so that a
/// mapping that went away is not kept alive here). On the heap, and only
/// for threads that send: every thread of the host program has the
/// shim's thread-local storage.
struct PoolCache {
    gen: u64,
    slots: Vec<Option<(usize, u64, Arc<PoolMapping>)>>,
}

impl PoolCache {
    fn empty(gen: u64) -> Self {
        PoolCache { gen, slots: (0..POOL_CACHE).map(|_| None).collect() }
    }
}

impl Domain {
    /// What a per-thread cache keys this domain by: its address and the
    /// generation of [`POOL_GEN`], which moves on when a domain goes away
    /// (a later one may be allocated at its address) or a pool does.
    pub(crate) fn cache_key(&self) -> (usize, u64) {
        (self as *const Domain as usize, POOL_GEN.load(Ordering::Acquire))
    }
}

/// A domain that goes away (a tool's, a test's) empties the caches too: a
/// later domain may be allocated at its address and use its serials.
impl Drop for Domain {
    fn drop(&mut self) {
        POOL_GEN.fetch_add(1, Ordering::AcqRel);
    }
}

thread_local! {
    static POOL_CACHE_OF_THREAD: core::cell::RefCell<Option<PoolCache>> = const { core::cell::RefCell::new(None) };
}

/// How many connected ring sockets a process keeps per domain.
const BELL_CACHE: usize = 8;

/// `BUS1_WAKE=exact` in this process's environment.
fn wants_exact() -> bool {
    static E: OnceLock<bool> = OnceLock::new();
    *E.get_or_init(|| std::env::var_os("BUS1_WAKE").is_some_and(|v| v == "exact"))
}

static REGISTRY: OnceLock<LocalMutex<Vec<Arc<Domain>>>> = OnceLock::new();

fn registry() -> &'static LocalMutex<Vec<Arc<Domain>>> {
    REGISTRY.get_or_init(|| {
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

/// The path of the entry `name` of directory `dir`.
fn entry_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// Backs the header and the undo log's first chunks of the segment `fd`
/// with memory ([`HEAD_RESERVED`]).
fn reserve_head(fd: i32) -> Result<()> {
    for (off, len) in HEAD_RESERVED {
        sys::fallocate(fd, 0, off, len).map_err(|_| Errno::ENOMEM)?;
    }
    Ok(())
}

/// `path` made absolute against the working directory, without trailing
/// slashes.
fn absolute(dir: &Path) -> Result<Vec<u8>> {
    let abs = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir().map_err(|_| Errno::ENOENT)?.join(dir) };
    let mut bytes = abs.as_os_str().as_bytes().to_vec();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes.pop();
    }
    Ok(bytes)
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
    /// `wake.<id>`: the wake socket of a thread that sleeps on peers.
    Wake(u64),
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
    if let Some(id) = name.strip_prefix(b"wake.") {
        return hex(id).map(PeerFile::Wake);
    }
    let rest = name.strip_prefix(b"vault.")?;
    let dot = rest.iter().position(|b| *b == b'.')?;
    Some(PeerFile::Vault(hex(&rest[..dot])?, hex(&rest[dot + 1..])?))
}

/// Whether a domain left by another version of the shim is still in use:
/// another process maps its segment (`seg_fd`), or one of its peer sockets
/// is still open somewhere. When that cannot be told (no /proc), it counts
/// as in use.
fn stale_domain_in_use(mem_fd: i32, sock_dir: &[u8], seg_fd: i32) -> bool {
    let Ok(st) = sys::fstat(seg_fd) else { return true };
    let Ok(names) = sys::dir_names_at(mem_fd) else { return true };
    for name in names.iter().filter(|n| n.starts_with(b"peer.")) {
        if socket_still_open(&entry_path(sock_dir, name)) {
            return true;
        }
    }
    segment_mapped_elsewhere(&st)
}

/// Whether some socket is bound to `path` (its last fd not yet closed).
pub(crate) fn socket_still_open(path: &[u8]) -> bool {
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

/// Bytes of undo log backed with memory at a time (see [`Domain::back_log`]).
pub(crate) const LOG_CHUNK: u64 = 256 << 10;
/// The header and the undo log's first chunks, backed with memory when a
/// domain is attached: (offset, length) pairs.
const HEAD_RESERVED: [(u64, u64); 3] = [
    (0, (core::mem::size_of::<Header>() as u64).div_ceil(4096) * 4096),
    (LOG_OFF, 2 * LOG_CHUNK),
    (TX_SLOTS_OFF, (NSLOTS * core::mem::size_of::<TxSlot>()) as u64),
];

impl Domain {
    /// Maps the domain in `dir`, creating directory, memory and segment on
    /// first use. Everything is checked first (`trust`): a directory or
    /// file another user could control refuses the domain with EPERM.
    /// Attaching the same domain twice returns the same mapping.
    pub fn attach(dir: &Path) -> Result<Arc<Domain>> {
        Self::attach_dir(dir, false)
    }

    /// Maps the domain in `dir` for a tool, creating and changing nothing:
    /// ENOENT if there is no domain there, ENODEV if its segment is not
    /// initialised or has another layout version; the directories are
    /// checked as for [`Domain::attach`]. No watcher thread is started, and
    /// the tool does not count as a user of the domain (see `memory`).
    pub fn open_existing(dir: &Path) -> Result<Arc<Domain>> {
        Self::attach_dir(dir, true)
    }

    /// [`Domain::attach`], or with `inspect` [`Domain::open_existing`].
    fn attach_dir(dir: &Path, inspect: bool) -> Result<Arc<Domain>> {
        trust::clear_refusal();
        let dir_bytes = absolute(dir)?;
        // Whoever names the default directory gets its rules.
        let strict = absolute(&default_dir()).is_ok_and(|d| d == dir_bytes);
        let reg = registry();
        let mut list = reg.lock();
        if let Some(d) = list.iter().find(|d| d.dir == dir_bytes) {
            return Ok(d.clone());
        }
        let create = if inspect { Create::No } else { Create::IfMissing };
        let od = trust::open_domain_dir(&dir_bytes, strict, create)?;
        let r = Self::attach_with(&mut list, &dir_bytes, od.access, create, inspect, &|| {
            if inspect {
                memory::locate_existing(od.fd, &dir_bytes, od.access)
            } else {
                memory::locate(od.fd, &dir_bytes, od.access)
            }
        });
        sys::close(od.fd);
        drop(list);
        if inspect {
            r.map(|(d, _)| d)
        } else {
            Self::attached_now(r)
        }
    }

    /// Maps the existing domain whose memory directory is `mem_dir` (as a
    /// peer fd's socket address names it), checked as [`Domain::attach`]
    /// checks. ENOENT if there is no domain there.
    pub(crate) fn attach_existing(mem_dir: &[u8]) -> Result<Arc<Domain>> {
        trust::clear_refusal();
        let reg = registry();
        let mut list = reg.lock();
        if let Some(d) = list.iter().find(|d| d.mem_dir == mem_dir || d.dir == mem_dir) {
            return Ok(d.clone());
        }
        let c = cstr(mem_dir)?;
        let own = memory::memory_dir_access(mem_dir);
        let fd = sys::open(&c, libc::O_RDONLY | libc::O_DIRECTORY | if own.is_some() { libc::O_NOFOLLOW } else { 0 }, 0)?;
        let r = (|| {
            let st = sys::fstat(fd)?;
            let access = match own {
                Some(access) => trust::check_bus_dir(&st, access, mem_dir).map(|_| access)?,
                None => {
                    let strict = absolute(&default_dir()).is_ok_and(|d| d == mem_dir);
                    trust::check_domain_dir(fd, &st, mem_dir, !strict)?
                }
            };
            Self::attach_with(&mut list, mem_dir, access, Create::No, false, &|| {
                Ok(MemDir { fd: sys::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)? as i32, path: mem_dir.to_vec(), own: own.is_some() })
            })
        })();
        sys::close(fd);
        drop(list);
        Self::attached_now(r)
    }

    /// Registers a domain just mapped (`r`: the domain, and whether it is
    /// new to this process).
    fn attached_now(r: Result<(Arc<Domain>, bool)>) -> Result<Arc<Domain>> {
        let (d, new) = r?;
        trust::clear_refusal();
        if new {
            crate::reaper::attached(&d);
            if d.own_mem_dir {
                memory::sweep_orphans(d.access);
            }
        }
        Ok(d)
    }

    /// Maps the domain whose memory directory `locate` opens, unless it is
    /// attached already. Retries when the memory was removed meanwhile by
    /// a process that found it unused.
    /// `inspect`: for a tool (see [`Domain::open_existing`]).
    fn attach_with(
        list: &mut Vec<Arc<Domain>>,
        dir: &[u8],
        access: Access,
        create: Create,
        inspect: bool,
        locate: &dyn Fn() -> Result<MemDir>,
    ) -> Result<(Arc<Domain>, bool)> {
        for _ in 0..16 {
            let mem = match locate() {
                Err(Errno::ESTALE) => continue,
                r => r?,
            };
            let st = match sys::fstat(mem.fd) {
                Ok(st) => st,
                Err(e) => {
                    sys::close(mem.fd);
                    return Err(e);
                }
            };
            let dev_ino = (st.st_dev, st.st_ino);
            if let Some(d) = list.iter().find(|d| d.dev_ino == dev_ino) {
                sys::close(mem.fd);
                return Ok((d.clone(), false));
            }
            match Self::map(dir, mem, dev_ino, access, create, inspect) {
                Err(Errno::ESTALE) => continue,
                r => {
                    let d = Arc::new(r?);
                    list.push(d.clone());
                    return Ok((d, true));
                }
            }
        }
        Err(Errno::EAGAIN)
    }

    /// Every domain mapped into this process.
    pub fn attached() -> Vec<Arc<Domain>> {
        registry().lock().clone()
    }

    /// Whether this process has mapped a domain (without setting anything
    /// up if not).
    pub fn any_attached() -> bool {
        REGISTRY.get().is_some_and(|r| !r.lock().is_empty())
    }

    /// At a normal exit, once this process has closed its peer fds:
    /// [`Domain::leave`]s every domain it mapped.
    pub fn leave_all() {
        let Some(reg) = REGISTRY.get() else { return };
        let list = reg.lock().clone();
        for d in list {
            d.leave();
        }
    }

    /// Maps the segment in `mem` (whose descriptor it takes over). ESTALE:
    /// the memory was removed meanwhile; locate it again. `inspect`: for a
    /// tool, which initialises nothing (a segment that is not a domain of
    /// this version is ENODEV) and does not count as a user.
    fn map(dir: &[u8], mem: MemDir, dev_ino: (u64, u64), access: Access, create: Create, inspect: bool) -> Result<Domain> {
        // Before anything is made: a links directory that cannot be used
        // refuses the domain. (The link is renewed under the attach lock
        // below, where no process that removes the memory can interfere.)
        if let Err(e) = crate::sockdir::socket_dir(&mem.path, dev_ino) {
            sys::close(mem.fd);
            return Err(e);
        }
        let fd = match trust::open_file(mem.fd, &mem.path, b"segment", libc::O_RDWR, access, create) {
            Ok((fd, _)) => fd,
            Err(e) => {
                let gone = e == Errno::ENOENT && create != Create::No && sys::fstat(mem.fd).is_ok_and(|st| st.st_nlink == 0);
                sys::close(mem.fd);
                return Err(if gone { Errno::ESTALE } else { e });
            }
        };
        let mem_fd = mem.fd;
        let r = (|| {
            sys::byte_lock(fd, ATTACH_BYTE, ByteLock::Write, true)?;
            if !memory::still_current(mem_fd, fd) {
                return Err(Errno::ESTALE);
            }
            let sock_dir = crate::sockdir::socket_dir(&mem.path, dev_ino)?;
            let st = sys::fstat(fd)?;
            if (st.st_size as u64) < SEG_SIZE {
                if inspect {
                    return Err(Errno::ENODEV);
                }
                sys::ftruncate(fd, SEG_SIZE)?;
            }
            // The header and the start of the undo log are written without
            // further ado: back them with memory now (a full file system
            // is ENOMEM here, not a fault later).
            reserve_head(fd)?;
            let seg = Segment::map(fd, SEG_SIZE as usize)?;
            let d = Domain {
                dir: dir.to_vec(),
                mem_dir: mem.path.clone(),
                own_mem_dir: mem.own,
                sock_dir,
                access,
                seg,
                local: LocalMutex::new(Local {
                    pools: HashMap::new(),
                    ring_fd: -1,
                    probe_fd: -1,
                    mem_fd,
                    seg_fd: fd,
                    bells: Vec::new(),
                    wake_socks: Vec::new(),
                    owed_seen: Vec::new(),
                }),
                dev_ino,
                damage_reported: std::sync::atomic::AtomicBool::new(false),
                log_backed: AtomicU64::new(HEAD_RESERVED[1].1 / LOG_ENTRY),
            };
            let hdr: &Header = d.seg.at0();
            if inspect && (hdr.magic.load() != MAGIC || hdr.version.get() != VERSION) {
                return Err(Errno::ENODEV);
            }
            if hdr.magic.load() != MAGIC {
                // A new segment. Files of peers of an earlier one (whose
                // segment was removed) would collide with the new serials.
                d.remove_peer_files()?;
                d.initialise()?;
            } else if hdr.version.get() != VERSION {
                // Left by another version of the shim, whose records mean
                // something else: start afresh once nothing uses it.
                if stale_domain_in_use(mem_fd, &d.sock_dir, fd) {
                    return Err(Errno::ENODEV);
                }
                d.clear_stale(fd)?;
                d.initialise()?;
            } else if hdr.damaged.load() != 0 && !stale_domain_in_use(mem_fd, &d.sock_dir, fd) {
                // Found damaged (see `fault`) and left by everyone who used
                // it: start afresh. While it is in use, its calls are
                // refused with ENOTRECOVERABLE.
                d.clear_stale(fd)?;
                d.initialise()?;
            }
            // This process now uses the domain (see `memory`); the lock
            // cannot conflict, since only a holder of the attach lock
            // write-locks this byte.
            if !inspect {
                sys::byte_lock(fd, USER_BYTE, ByteLock::Read, false)?;
            }
            {
                let mut l = d.local.lock();
                l.mem_fd = internal_fd(mem_fd);
                l.seg_fd = internal_fd(fd);
                let _ = sys::byte_lock(l.seg_fd, ATTACH_BYTE, ByteLock::Unlock, false);
            }
            if wants_exact() {
                hdr.wake_exact.store(1);
            }
            // The ring socket exists from the start: a ring made when the
            // process has run out of descriptors must still get through.
            let _ = d.with_ring_fd(|_| ((), false));
            Ok(d)
        })();
        if r.is_err() {
            let _ = sys::byte_lock(fd, ATTACH_BYTE, ByteLock::Unlock, false);
            sys::close(fd);
            sys::close(mem_fd);
        }
        r
    }

    /// Empties a stale domain (under the attach lock taken in `map`):
    /// removes its peers' files and drops the segment's pages, so that it
    /// reads as zeros.
    fn clear_stale(&self, seg_fd: i32) -> Result<()> {
        self.remove_peer_files()?;
        sys::ftruncate(seg_fd, 0)?;
        sys::ftruncate(seg_fd, SEG_SIZE)?;
        reserve_head(seg_fd)
    }

    /// Removes the peer sockets, pools and fd vaults in the directory
    /// (under the attach lock taken in `map`, before a segment is
    /// initialised: no peer of the new segment exists yet).
    fn remove_peer_files(&self) -> Result<()> {
        for (name, _) in self.peer_files()? {
            let _ = self.remove_entry(&name);
        }
        Ok(())
    }

    /// The per-peer files now in the memory directory, with their names.
    pub(crate) fn peer_files(&self) -> Result<Vec<(Vec<u8>, PeerFile)>> {
        let names = sys::dir_names_at(self.local.lock().mem_fd)?;
        Ok(names.into_iter().filter_map(|n| parse_peer_file(&n).map(|f| (n, f))).collect())
    }

    /// Removes the entry `name` of the memory directory.
    pub(crate) fn remove_entry(&self, name: &[u8]) -> Result<()> {
        sys::unlinkat(self.local.lock().mem_fd, &cstr(name)?, 0)
    }

    /// Opens the existing file `name` of the memory directory, checked
    /// (`trust::open_file`).
    pub(crate) fn open_file(&self, name: &[u8], flags: i32) -> Result<i32> {
        let l = self.local.lock();
        trust::open_file(l.mem_fd, &self.mem_dir, name, flags, self.access, Create::No).map(|(fd, _)| fd)
    }

    /// Makes `serial`'s pool file at least `size` bytes long (a pool
    /// growing, see `pool::grow`). A file that is not the bus's (EPERM) or
    /// no descriptor to open it with (EMFILE) is that error; any other
    /// failure is ENOMEM: the pool could not grow.
    pub(crate) fn grow_pool_file(&self, serial: u64, size: u64) -> Result<()> {
        let fd = self.open_file(&Self::pool_name(serial), libc::O_RDWR).map_err(|e| match e {
            Errno::EPERM | Errno::EMFILE => e,
            _ => Errno::ENOMEM,
        })?;
        let r = match sys::fstat(fd) {
            Ok(st) if st.st_size as u64 >= size => Ok(()),
            _ => sys::ftruncate(fd, size).map_err(|_| Errno::ENOMEM),
        };
        sys::close(fd);
        r
    }

    /// Creates the file `name` in the memory directory (read-write; EEXIST
    /// if it exists).
    pub(crate) fn create_file(&self, name: &[u8]) -> Result<i32> {
        let l = self.local.lock();
        trust::open_file(l.mem_fd, &self.mem_dir, name, libc::O_RDWR, self.access, Create::Only).map(|(fd, _)| fd)
    }

    /// Binds the socket `fd` at the domain's socket `name`, with the
    /// domain's file mode whatever the umask (`trust::bind_socket`).
    pub(crate) fn bind_socket(&self, fd: i32, name: &[u8]) -> Result<()> {
        let addr = sys::UnixAddr::new(&entry_path(&self.sock_dir, name))?;
        let l = self.local.lock();
        trust::bind_socket(fd, &addr, l.mem_fd, &self.mem_dir, name, self.access)
    }

    /// Backs `len` bytes of the segment at `off` with memory, so that
    /// writing them cannot fault: ENOMEM if the file system is full.
    pub(crate) fn reserve(&self, off: u64, len: u64) -> Result<()> {
        let l = self.local.lock();
        sys::fallocate(l.seg_fd, 0, off, len).map_err(|_| Errno::ENOMEM)
    }

    /// Undo log entries known to be backed with memory.
    #[inline]
    pub(crate) fn log_backed(&self) -> u64 {
        self.log_backed.load(Ordering::Relaxed)
    }

    /// Backs undo log entries up to `upto` (in whole chunks) with memory
    /// before they are written: ENOMEM if the file system is full or
    /// `upto` is beyond the log's capacity (what fits is backed all the
    /// same).
    #[cold]
    pub(crate) fn back_log(&self, upto: u64) -> Result<()> {
        let have = self.log_backed();
        if upto < have {
            return Ok(());
        }
        let log_end = LOG_OFF + LOG_CAP * LOG_ENTRY;
        let start = (LOG_OFF + have * LOG_ENTRY) / 4096 * 4096;
        let end = (LOG_OFF + (upto + 1).min(LOG_CAP) * LOG_ENTRY).div_ceil(LOG_CHUNK).saturating_mul(LOG_CHUNK).min(log_end);
        if end > start {
            self.reserve(start, end - start)?;
            self.log_backed.fetch_max((end - LOG_OFF) / LOG_ENTRY, Ordering::Relaxed);
        }
        if upto >= LOG_CAP {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// Initialises a new segment (under the attach lock taken in `map`).
    fn initialise(&self) -> Result<()> {
        // A crashed initialiser may have left anything in the header (and
        // in the waiter slots, which are taken without the lock).
        self.seg.zero(0, core::mem::size_of::<Header>());
        self.reserve(SLOTS_OFF, WAKE_CHUNK)?;
        self.seg.zero(SLOTS_OFF, WAIT_SLOTS * 64);
        self.init_lock()?;
        crate::slot::init_all(self)?;
        let hdr: &Header = self.seg.at0();
        hdr.wake_reserved[0].raw_set(1);
        hdr.version.raw_set(VERSION);
        hdr.heap_top.raw_set(HEAP_OFF);
        hdr.heap_reserved.raw_set(HEAP_OFF);
        hdr.next_serial.raw_set(1);
        hdr.next_nonce.raw_set(1);
        hdr.magic.store(MAGIC);
        Ok(())
    }

    /// Called at a normal exit of the process, which uses the domain no
    /// more: if no other process uses it and none of its peer sockets is
    /// open any more, its memory is removed (`memory::collect`). Returns
    /// whether it was.
    ///
    /// The process gives up its own claim first, so that of several
    /// processes leaving at once the last to look finds none of the
    /// others' claims and removes the memory.
    pub fn leave(&self) -> bool {
        let l = self.local.lock();
        let _ = sys::byte_lock(l.seg_fd, USER_BYTE, ByteLock::Unlock, false);
        let g = Garbage {
            mem_fd: l.mem_fd,
            mem_path: &self.mem_dir,
            sock_dir: &self.sock_dir,
            own: self.own_mem_dir,
            seg_fd: l.seg_fd,
            attached: false,
        };
        memory::collect(&g, true)
    }

    /// Removes the memory left by killed processes next to this domain's
    /// (see `memory`). Returns how many domains' memory went.
    pub(crate) fn sweep_orphans(&self) -> usize {
        if self.own_mem_dir {
            memory::sweep_orphans(self.access)
        } else {
            0
        }
    }

    /// The directory of this domain.
    pub fn dir(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.dir))
    }

    /// The directory the domain's files are in: the domain directory on a
    /// memory file system, else the directory its `memory` link names.
    pub fn memory_dir(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.mem_dir))
    }

    /// The name of `serial`'s socket.
    pub(crate) fn peer_name(serial: u64) -> Vec<u8> {
        format!("peer.{serial:x}").into_bytes()
    }

    /// The name of `serial`'s pool file.
    pub(crate) fn pool_name(serial: u64) -> Vec<u8> {
        format!("pool.{serial:x}").into_bytes()
    }

    /// The name of `serial`'s fd vault of generation `gen`.
    pub(crate) fn vault_name(serial: u64, gen: u64) -> Vec<u8> {
        format!("vault.{serial:x}.{gen:x}").into_bytes()
    }

    /// The address of `serial`'s socket (named through `sock_dir`).
    pub(crate) fn peer_path(&self, serial: u64) -> Vec<u8> {
        entry_path(&self.sock_dir, &Self::peer_name(serial))
    }

    /// The path of `serial`'s pool file.
    pub(crate) fn pool_path(&self, serial: u64) -> Vec<u8> {
        entry_path(&self.mem_dir, &Self::pool_name(serial))
    }

    /// The name of the wake socket `id`.
    pub(crate) fn wake_name(id: u64) -> Vec<u8> {
        format!("wake.{id:x}").into_bytes()
    }

    /// The address of the wake socket `id`.
    pub(crate) fn wake_path(&self, id: u64) -> Vec<u8> {
        entry_path(&self.sock_dir, &Self::wake_name(id))
    }

    /// The address of `serial`'s fd vault of generation `gen`.
    pub(crate) fn vault_path(&self, serial: u64, gen: u64) -> Vec<u8> {
        entry_path(&self.sock_dir, &Self::vault_name(serial, gen))
    }

    /// This process's read-write mapping of `serial`'s pool, shared with
    /// the cache (a copy made with no lock held keeps it mapped even if the
    /// peer goes away meanwhile).
    pub(crate) fn pool(&self, serial: u64) -> Result<Arc<PoolMapping>> {
        let me = self as *const Domain as usize;
        let gen = POOL_GEN.load(Ordering::Acquire);
        let at = serial as usize % POOL_CACHE;
        let hit = POOL_CACHE_OF_THREAD
            .try_with(|c| {
                let mut c = c.try_borrow_mut().ok()?;
                let c = c.get_or_insert_with(|| PoolCache::empty(gen));
                if c.gen != gen {
                    *c = PoolCache::empty(gen);
                }
                match &c.slots[at] {
                    Some((d, s, m)) if *d == me && *s == serial => Some(m.clone()),
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if let Some(m) = hit {
            return Ok(m);
        }
        let m = self.pool_slow(serial, 0)?;
        let _ = POOL_CACHE_OF_THREAD.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(c) = c.as_mut().filter(|c| c.gen == gen) {
                    c.slots[at] = Some((me, serial, m.clone()));
                }
            }
        });
        Ok(m)
    }

    /// This process's mapping of `serial`'s pool, if it has mapped it
    /// already (nothing is opened or mapped).
    pub(crate) fn mapped_pool(&self, serial: u64) -> Option<Arc<PoolMapping>> {
        self.local.lock().pools.get(&serial).cloned()
    }

    /// This process's mapping of `serial`'s pool, covering at least its
    /// first `end` bytes: the cached one, or, if the pool grew since that
    /// was made, a new one of the grown pool. Every write at an offset the
    /// allocator chose goes through here (or checks `covers` first).
    pub(crate) fn pool_for(&self, serial: u64, end: u64) -> Result<Arc<PoolMapping>> {
        let m = self.pool(serial)?;
        if m.covers(0, end) {
            return Ok(m);
        }
        self.pool_slow(serial, end)
    }

    /// `pool_for` without the thread's cache: under the process's lock.
    fn pool_slow(&self, serial: u64, end: u64) -> Result<Arc<PoolMapping>> {
        let mut l = self.local.lock();
        if let Some(m) = l.pools.get(&serial).filter(|m| m.covers(0, end)) {
            return Ok(m.clone());
        }
        let name = Self::pool_name(serial);
        let (fd, _) = trust::open_file(l.mem_fd, &self.mem_dir, &name, libc::O_RDWR, self.access, Create::No)?;
        // A pool shorter than the smallest one would fault within its
        // range. A pool grows only under the domain lock, file first, so
        // an offset the allocator handed out lies inside the file by the
        // time anyone maps it for a write there.
        let r = match sys::fstat(fd) {
            Ok(st) if (st.st_size as u64) < POOL_SIZE => Err(trust::refuse(&entry_path(&self.mem_dir, &name), "is shorter than a pool")),
            Ok(st) if (st.st_size as u64) < end => Err(trust::refuse(&entry_path(&self.mem_dir, &name), "is shorter than its peer's pool")),
            Ok(st) => PoolMapping::map(fd, if st.st_size as u64 >= POOL_MAP_LEN { POOL_MAP_LEN } else { POOL_SIZE }),
            Err(e) => Err(e),
        };
        sys::close(fd);
        let m = Arc::new(r?);
        if l.pools.insert(serial, m.clone()).is_some() {
            // The shorter mapping leaves every thread's cache; copies in
            // progress keep it until they are done.
            POOL_GEN.fetch_add(1, Ordering::AcqRel);
        }
        Ok(m)
    }

    /// Drops this process's mapping of a pool (the peer is gone); copies
    /// still in progress keep it until they are done. The generation bump
    /// empties every thread's cache of it.
    pub(crate) fn forget_pool(&self, serial: u64) {
        let mut l = self.local.lock();
        if l.pools.remove(&serial).is_some() {
            POOL_GEN.fetch_add(1, Ordering::AcqRel);
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

    fn ring_path(&self, to: RingTo) -> Vec<u8> {
        match to {
            RingTo::Peer(serial) => self.peer_path(serial),
            RingTo::Wake(id) => self.wake_path(id),
        }
    }

    /// Sends a token to `to`.
    pub(crate) fn ring(&self, to: RingTo) -> Rung {
        let verdict = |r: Result<()>| match r {
            // A full queue is readable anyway.
            Ok(()) | Err(Errno::EAGAIN) | Err(Errno(libc::ENOBUFS)) => Rung::Sent,
            Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) | Err(Errno(libc::EPIPE)) => Rung::Gone,
            Err(_) => Rung::Failed,
        };
        let mut l = self.local.lock();
        if let Some(i) = l.bells.iter().position(|b| b.0 == to) {
            match verdict(sys::send_token(l.bells[i].1)) {
                Rung::Sent => return Rung::Sent,
                _ => {
                    // The target went away (or was replaced): forget it and
                    // try its address afresh.
                    let old = l.bells.swap_remove(i);
                    forget_internal(old.1);
                    sys::close(old.1);
                }
            }
        }
        let Ok(addr) = sys::UnixAddr::new(&self.ring_path(to)) else { return Rung::Gone };
        if l.bells.len() < BELL_CACHE {
            if let Ok(fd) = internal_socket(libc::SOCK_DGRAM) {
                match sys::connect(fd, &addr) {
                    Ok(()) => {
                        l.bells.push((to, fd));
                        return verdict(sys::send_token(fd));
                    }
                    Err(e) => {
                        forget_internal(fd);
                        sys::close(fd);
                        if matches!(e, Errno::ECONNREFUSED | Errno::ENOENT) {
                            return Rung::Gone;
                        }
                    }
                }
            }
        }
        drop(l);
        // Through the unconnected ring socket, which needs no new
        // descriptor (it is made when the domain is attached).
        self.with_ring_fd(|fd| {
            let r = verdict(sys::send_msg(fd, Some(&addr), &[], &[]));
            (r, false)
        })
        .unwrap_or(Rung::Failed)
    }

    /// Forgets the connected ring socket of a peer that is gone.
    pub(crate) fn forget_bell(&self, serial: u64) {
        let mut l = self.local.lock();
        if let Some(i) = l.bells.iter().position(|b| b.0 == RingTo::Peer(serial)) {
            let old = l.bells.swap_remove(i);
            forget_internal(old.1);
            sys::close(old.1);
        }
    }

    /// Makes a wake socket for a thread of this process: (fd, id).
    pub(crate) fn open_wake_socket(&self) -> Result<(i32, u64)> {
        let fd = internal_socket(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK)?;
        for _ in 0..4 {
            let id = sys::getrandom_u64() | 1 << 63;
            match self.bind_socket(fd, &Self::wake_name(id)) {
                Ok(()) => {
                    self.local.lock().wake_socks.push((fd, id));
                    return Ok((fd, id));
                }
                Err(Errno(libc::EADDRINUSE)) => continue,
                Err(e) => {
                    forget_internal(fd);
                    sys::close(fd);
                    return Err(e);
                }
            }
        }
        forget_internal(fd);
        sys::close(fd);
        Err(Errno(libc::EADDRINUSE))
    }

    /// Whether `fd` is still this process's wake socket `id` (the
    /// application may have made the shim move it, see
    /// `evict_internal_fd`).
    pub(crate) fn wake_socket_valid(&self, fd: i32, id: u64) -> bool {
        self.local.lock().wake_socks.contains(&(fd, id))
    }

    /// Closes and removes a wake socket of this process.
    pub(crate) fn close_wake_socket(&self, fd: i32, id: u64) {
        let mut l = self.local.lock();
        if let Some(i) = l.wake_socks.iter().position(|w| *w == (fd, id)) {
            l.wake_socks.swap_remove(i);
            forget_internal(fd);
            sys::close(fd);
        }
        drop(l);
        let _ = self.remove_entry(&Self::wake_name(id));
    }

    /// Empties a wake socket.
    pub(crate) fn drain_wake_socket(&self, fd: i32) {
        while sys::discard_datagram(fd).is_ok() {}
    }

    /// Rings the wake socket `id`; false if no descriptor could be had.
    pub(crate) fn ring_wake_socket(&self, id: u64) -> bool {
        self.ring(RingTo::Wake(id)) != Rung::Failed
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

    /// What this process's previous wake-up tick saw owed (taken).
    pub(crate) fn take_owed_seen(&self) -> Vec<(u64, u64, u64)> {
        core::mem::take(&mut self.local.lock().owed_seen)
    }

    pub(crate) fn put_owed_seen(&self, seen: Vec<(u64, u64, u64)>) {
        self.local.lock().owed_seen = seen;
    }

    /// Whether the wake socket `id` still exists.
    pub(crate) fn wake_alive(&self, id: u64) -> bool {
        self.socket_alive_at(&self.wake_path(id))
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
        let mut gone_wake = None;
        for slot in [&mut l.ring_fd, &mut l.probe_fd, &mut l.mem_fd, &mut l.seg_fd] {
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
        if let Some(i) = l.wake_socks.iter().position(|w| w.0 == fd) {
            // Its thread makes a new one the next time it sleeps.
            let (_, id) = l.wake_socks.swap_remove(i);
            forget_internal(fd);
            sys::close(fd);
            gone_wake = Some(id);
        }
        drop(guard);
        if let Some(id) = gone_wake {
            let _ = d.remove_entry(&Domain::wake_name(id));
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
            // The wake sockets belong to the parent's threads.
            let mut l = d.local.lock();
            for (fd, _) in core::mem::take(&mut l.wake_socks) {
                forget_internal(fd);
                sys::close(fd);
            }
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

/// In a fork child (after [`unlock_all_local`]): the segment descriptor
/// the child inherited shares its open file description, and with it the
/// lock that says "in use", with the parent. The child gets a description
/// of its own, with a lock of its own, under the same descriptor number,
/// so that its leaving (`Domain::leave`) never drops the parent's.
pub(crate) fn own_claims_after_fork() {
    let Some(reg) = REGISTRY.get() else { return };
    for d in reg.lock().iter() {
        let l = d.local.lock();
        let Ok(fd) = sys::openat(l.mem_fd, c"segment", libc::O_RDWR | libc::O_NOFOLLOW, 0) else { continue };
        let same = memory::still_current(l.mem_fd, fd);
        if same && sys::byte_lock(fd, USER_BYTE, ByteLock::Read, false).is_ok() {
            let _ = sys::dup3_cloexec(fd, l.seg_fd);
        }
        sys::close(fd);
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
