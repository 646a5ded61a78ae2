//! The credentials stamped on messages (docs/reference.md §4.6): real uid/gid,
//! process and thread ID of the task calling SEND, translated into the
//! receiver's namespaces.
//!
//! They are cached so that SEND needs no system call: the pid is reset by
//! the fork handler, the tid is cached per thread with the fork generation,
//! and uid/gid are re-read after the application changes identity
//! ([`invalidate_ids`], called by the preload's set*id interposers).

use crate::sys;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);
static UID: AtomicU32 = AtomicU32::new(u32::MAX);
static GID: AtomicU32 = AtomicU32::new(u32::MAX);
static IDS_VALID: AtomicU32 = AtomicU32::new(0);
static FORK_GEN: AtomicU64 = AtomicU64::new(1);
static NS: AtomicU64 = AtomicU64::new(0);
static NS_USER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TID: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// The overflow ID reported for identities not visible in the receiver's
/// namespace.
pub const OVERFLOW_ID: u32 = 65534;

pub(crate) fn after_fork() {
    PID.store(0, Ordering::Release);
    FORK_GEN.fetch_add(1, Ordering::AcqRel);
}

/// Forgets the cached uid/gid (the process changed identity).
pub fn invalidate_ids() {
    IDS_VALID.store(0, Ordering::Release);
}

/// Who is calling: the sending task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub tid: u32,
}

/// This process's pid (cached; reset by the fork handler).
pub(crate) fn pid() -> u32 {
    let mut pid = PID.load(Ordering::Acquire);
    if pid == 0 {
        pid = sys::getpid();
        PID.store(pid, Ordering::Release);
    }
    pid
}

pub fn current() -> Creds {
    if IDS_VALID.load(Ordering::Acquire) == 0 {
        UID.store(sys::getuid(), Ordering::Release);
        GID.store(sys::getgid(), Ordering::Release);
        IDS_VALID.store(1, Ordering::Release);
    }
    let pid = pid();
    let gen = FORK_GEN.load(Ordering::Acquire);
    let tid = TID.with(|c| {
        let (g, t) = c.get();
        if g == gen && t != 0 {
            t
        } else {
            let t = sys::gettid();
            c.set((gen, t));
            t
        }
    });
    Creds { uid: UID.load(Ordering::Acquire), gid: GID.load(Ordering::Acquire), pid, tid }
}

fn ns_inode(path: &std::ffi::CStr) -> u64 {
    sys::stat(path).map(|s| s.st_ino).unwrap_or(0)
}

/// (pid namespace, user namespace) inode numbers of this process.
pub fn namespaces() -> (u64, u64) {
    let mut pidns = NS.load(Ordering::Acquire);
    let mut userns = NS_USER.load(Ordering::Acquire);
    if pidns == 0 {
        pidns = ns_inode(c"/proc/self/ns/pid");
        userns = ns_inode(c"/proc/self/ns/user");
        NS_USER.store(userns, Ordering::Release);
        NS.store(pidns, Ordering::Release);
    }
    (pidns, userns)
}
