//! Which epoll sets of this process hold peer fds.
//!
//! A peer fd added to an epoll set is registered in its domain
//! (`Peer::epoll_register`), and the kernel's item carries the
//! registration's tag as data. This table remembers, per epoll fd number,
//! the registrations the set holds, so that a wait on the set can compute
//! their events from the bus. It is filled by `epoll_ctl` and, for sets
//! this process did not build (inherited across `exec`, received over
//! `SCM_RIGHTS`, or changed by another process sharing the set), by
//! reading the set's items from `/proc/self/fdinfo` the first time the set
//! is waited on, and again whenever a wait meets a tag it does not know.
//!
//! A set made by this process that nothing else can hold (not inherited
//! by a forked child, not duplicated, not sent over a socket) dies when
//! its fd is closed: its registrations are freed then. Others are freed
//! with their peer (or by EPOLL_CTL_DEL).

use crate::fdtable;
use shm_core::{Domain, LocalMutex, RegRef, WaitSet};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, OnceLock};

/// A registration held by a set.
#[derive(Clone)]
pub struct Member {
    pub dom: Arc<Domain>,
    pub reg: RegRef,
    /// The peer fd the set was given (the kernel item's fd number).
    pub fd: i32,
}

/// An epoll set holding peer fds that is itself in this set (its kernel
/// item has the application's events and data; this process reports it
/// when a registration of the inner set would report something).
#[derive(Clone)]
pub struct Nested {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
    /// One-shot: still armed (shared by the snapshots of this set).
    armed: Arc<AtomicBool>,
}

/// The registrations of one set (an immutable snapshot).
#[derive(Default)]
pub struct Shadow {
    pub members: Vec<Member>,
    pub nested: Vec<Nested>,
    /// Where the next `take_events` starts, so that a set with more ready
    /// registrations than a wait asks for reports them all in turn.
    next: AtomicUsize,
}

/// How deep `pending` follows sets inside sets (the kernel's limit).
const MAX_NESTING: u32 = 5;

impl Shadow {
    fn with(members: Vec<Member>, nested: Vec<Nested>) -> Shadow {
        Shadow { members, nested, next: AtomicUsize::new(0) }
    }

    /// Whether the set holds anything the bus reports.
    pub fn involves_bus(&self) -> bool {
        !self.members.is_empty() || !self.nested.is_empty()
    }

    /// Fills `out` with the events the registrations report now (consuming
    /// edges and one-shot arming); returns how many.
    pub fn take_events(&self, out: &mut [libc::epoll_event]) -> usize {
        let len = self.members.len();
        let mut n = 0;
        if len > 0 && !out.is_empty() {
            let start = self.next.load(Ordering::Relaxed) % len;
            for i in 0..len {
                let m = &self.members[(start + i) % len];
                if let Some((events, data)) = m.dom.epoll_take(&m.reg) {
                    out[n] = libc::epoll_event { events, u64: data };
                    n += 1;
                    if n == out.len() {
                        self.next.store(start + i + 1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        for s in &self.nested {
            if n == out.len() {
                break;
            }
            let ready = s.events & libc::EPOLLIN as u32 != 0 && get(s.fd).is_some_and(|inner| inner.pending_at(1));
            let oneshot = s.events & libc::EPOLLONESHOT as u32 != 0;
            if ready && (!oneshot || s.armed.swap(false, Ordering::AcqRel)) {
                out[n] = libc::epoll_event { events: libc::EPOLLIN as u32, u64: s.data };
                n += 1;
            }
        }
        n
    }

    /// Whether some registration would report something now.
    pub fn pending(&self) -> bool {
        self.pending_at(0)
    }

    fn pending_at(&self, depth: u32) -> bool {
        self.members.iter().any(|m| m.dom.epoll_pending(&m.reg))
            || (depth < MAX_NESTING
                && self.nested.iter().any(|s| {
                    s.events & libc::EPOLLIN as u32 != 0
                        && (s.events & libc::EPOLLONESHOT as u32 == 0 || s.armed.load(Ordering::Acquire))
                        && get(s.fd).is_some_and(|inner| inner.pending_at(depth + 1))
                }))
    }

    /// Adds every registration's peer to the bells a wait watches.
    pub fn watch(&self, set: &mut WaitSet) {
        self.watch_at(set, 0);
    }

    fn watch_at(&self, set: &mut WaitSet, depth: u32) {
        for m in &self.members {
            m.dom.epoll_watch(&m.reg, set);
        }
        if depth < MAX_NESTING {
            for s in &self.nested {
                if let Some(inner) = get(s.fd) {
                    inner.watch_at(set, depth + 1);
                }
            }
        }
    }

    /// Whether `data` is the tag of one of the registrations.
    pub fn knows(&self, data: u64) -> bool {
        self.members.iter().any(|m| m.reg.tag() == data)
    }

    /// Whether `data` is that of a nested set (reported by `take_events`).
    pub fn nested_data(&self, data: u64) -> bool {
        self.nested.iter().any(|s| s.data == data)
    }
}

static ANY: AtomicBool = AtomicBool::new(false);

/// What this process knows of one epoll fd.
struct Set {
    shadow: Arc<Shadow>,
    /// Made here, and nothing else can hold it.
    private: bool,
}

fn sets() -> &'static LocalMutex<HashMap<i32, Set>> {
    static S: OnceLock<LocalMutex<HashMap<i32, Set>>> = OnceLock::new();
    let s = S.get_or_init(|| LocalMutex::new(HashMap::new()));
    static FORK: Once = Once::new();
    FORK.call_once(|| {
        extern "C" fn prepare() {
            sets().raw_lock();
        }
        extern "C" fn parent() {
            sets().raw_unlock();
            all_shared();
        }
        extern "C" fn child() {
            sets().reinit_in_child();
            all_shared();
        }
        shm_core::sys::atfork(prepare, parent, child);
    });
    s
}

/// After a fork both processes hold every set.
fn all_shared() {
    for set in changing().values_mut() {
        set.private = false;
    }
}

/// Set `ep` was just made by this process.
pub fn created(ep: i32) {
    let mut s = changing();
    s.insert(ep, Set { shadow: Arc::default(), private: true });
    fdtable::set_bit(&SET_FDS, ep as usize, true);
    ANY.store(true, Ordering::Relaxed);
}

/// Set `ep` may now be held elsewhere too (duplicated, or sent away).
pub fn shared(ep: i32) {
    if any() {
        if let Some(set) = changing().get_mut(&ep) {
            set.private = false;
        }
    }
}

/// Whether `fd` is a set this process knows.
pub fn is_set(fd: i32) -> bool {
    any() && fdtable::bit(&SET_FDS, fd)
}

/// Whether this process knows any set at all (the interposers skip the
/// lookup otherwise).
pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

/// Bumped, with the table locked, before every change of it: a thread's
/// cached lookup is good while it has not moved.
static GEN: AtomicU64 = AtomicU64::new(0);

/// The table, locked for a change.
fn changing() -> shm_core::LocalGuard<'static, HashMap<i32, Set>> {
    let s = sets().lock();
    GEN.fetch_add(1, Ordering::AcqRel);
    s
}

/// A known set: its registrations, and whether nothing else can hold it.
type Known = Option<(Arc<Shadow>, bool)>;

/// The descriptors that are known sets (lock-free reads, written with the
/// table locked): a wait on anything else learns so without a lookup.
static SET_FDS: fdtable::Marks = [const { OnceLock::new() }; fdtable::CHUNKS];

thread_local! {
    /// The last lookup this thread made: (set, generation, result). Every
    /// wait on a set looks it up, so the common case takes no lock.
    static LAST: core::cell::RefCell<(i32, u64, Known)> = const { core::cell::RefCell::new((-1, 0, None)) };
}

/// Calls `f` with what is known of set `ep` (its registrations, and
/// whether it is private), without cloning anything when this thread's
/// last lookup still holds.
fn with_known<R>(ep: i32, f: impl Fn(Option<&(Arc<Shadow>, bool)>) -> R) -> R {
    if !any() || !fdtable::bit(&SET_FDS, ep) {
        return f(None);
    }
    let gen = GEN.load(Ordering::Acquire);
    let hit = LAST
        .try_with(|c| match c.try_borrow() {
            Ok(c) if c.0 == ep && c.1 == gen => Some(f(c.2.as_ref())),
            _ => None,
        })
        .ok()
        .flatten();
    if let Some(r) = hit {
        return r;
    }
    let found = sets().lock().get(&ep).map(|s| (s.shadow.clone(), s.private));
    let r = f(found.as_ref());
    let _ = LAST.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = (ep, gen, found);
        }
    });
    r
}

/// The registrations of set `ep` and whether it is private, if it has
/// been looked at.
pub fn lookup(ep: i32) -> Known {
    with_known(ep, |k| k.cloned())
}

/// The registrations of set `ep`, if it has been looked at.
pub fn get(ep: i32) -> Option<Arc<Shadow>> {
    with_known(ep, |k| k.map(|(s, _)| s.clone()))
}

/// Whether set `ep` is the kernel's alone: made here, held nowhere else,
/// and without peer fds (a wait on it passes straight through).
pub fn kernel_only(ep: i32) -> bool {
    with_known(ep, |k| k.is_some_and(|(s, private)| *private && !s.involves_bus()))
}

fn update(ep: i32, f: impl FnOnce(&mut Vec<Member>, &mut Vec<Nested>)) {
    let mut s = changing();
    fdtable::set_bit(&SET_FDS, ep as usize, true);
    let set = s.entry(ep).or_insert_with(|| Set { shadow: Arc::default(), private: false });
    let mut members = set.shadow.members.clone();
    let mut nested = set.shadow.nested.clone();
    f(&mut members, &mut nested);
    set.shadow = Arc::new(Shadow::with(members, nested));
    ANY.store(true, Ordering::Relaxed);
}

/// Set `ep` now holds the set `inner` (which holds peer fds).
pub fn add_nested(ep: i32, inner: i32, events: u32, data: u64) {
    update(ep, |_, v| {
        v.retain(|x| x.fd != inner);
        v.push(Nested { fd: inner, events, data, armed: Arc::new(AtomicBool::new(true)) });
    });
}

/// Whether set `ep` holds the set `inner` as a nested member.
pub fn has_nested(ep: i32, inner: i32) -> bool {
    get(ep).is_some_and(|s| s.nested.iter().any(|x| x.fd == inner))
}

/// Set `ep` now holds `m`.
pub fn add(ep: i32, m: Member) {
    update(ep, |v, _| {
        v.retain(|x| x.fd != m.fd);
        v.push(m);
    });
}

/// The registration of peer fd `fd` in set `ep`, if known.
pub fn find(ep: i32, fd: i32) -> Option<Member> {
    get(ep)?.members.iter().find(|m| m.fd == fd).cloned()
}

/// Set `ep` no longer holds peer fd `fd`.
pub fn remove(ep: i32, fd: i32) {
    if any() {
        update(ep, |v, n| {
            v.retain(|x| x.fd != fd);
            n.retain(|x| x.fd != fd);
        });
    }
}

/// Descriptor `fd` was closed or replaced: if it was a set, forget it,
/// and if nothing else held the set, free its registrations.
pub fn closed(fd: i32) {
    if !any() {
        return;
    }
    let gone = {
        let mut s = changing();
        fdtable::set_bit(&SET_FDS, fd as usize, false);
        s.remove(&fd)
    };
    if let Some(set) = gone {
        if set.private {
            set.shadow.members.iter().for_each(|m| m.dom.epoll_unregister(&m.reg));
        }
    }
}

/// Descriptors `lo..=hi` were closed.
pub fn closed_range(lo: u32, hi: u32) {
    if !any() {
        return;
    }
    let fds: Vec<i32> = sets().lock().keys().copied().filter(|fd| (lo..=hi).contains(&(*fd as u32))).collect();
    fds.into_iter().for_each(closed);
}

/// Reads set `ep`'s items from `/proc/self/fdinfo` and remembers the peer
/// registrations among them (None: the file cannot be read; `ep` is then
/// not a descriptor of this process, and the kernel will say so).
pub fn inspect(ep: i32) -> Option<Arc<Shadow>> {
    let path = std::ffi::CString::new(format!("/proc/self/fdinfo/{ep}")).ok()?;
    let text = shm_core::sys::read_file(&path).ok()?;
    let members: Vec<Member> = text
        .split(|b| *b == b'\n')
        .filter_map(parse_item)
        .filter(|item| shm_core::epoll_untag(item.data).is_some())
        .filter_map(|item| resolve(item.data, item.tfd, item.ino))
        .collect();
    let mut s = changing();
    let old = s.get(&ep);
    let private = old.is_some_and(|set| set.private);
    let nested = old.map(|set| set.shadow.nested.clone()).unwrap_or_default();
    let shadow = Arc::new(Shadow::with(members, nested));
    s.insert(ep, Set { shadow: shadow.clone(), private });
    fdtable::set_bit(&SET_FDS, ep as usize, true);
    ANY.store(true, Ordering::Relaxed);
    Some(shadow)
}

/// Finds the registration a tag names: in a domain this process has
/// attached, in the domain of the item's fd if that is a peer here, or in
/// the configured domain. With the item's inode (from fdinfo), only a
/// registration made for that peer socket counts.
pub fn resolve(data: u64, tfd: i32, ino: Option<u64>) -> Option<Member> {
    if let Some(m) = resolve_attached(data, tfd, ino) {
        return Some(m);
    }
    let dom = match crate::fdtable::classify(tfd) {
        Some(info) => info.peer.domain().clone(),
        // A process holding a set but none of its peer fds (it inherited or
        // received the set only): the bus it was configured for.
        None => Domain::attach_configured(&crate::config::domain())?,
    };
    let reg = dom.epoll_lookup(data, ino)?;
    Some(Member { dom, reg, fd: tfd })
}

/// Finds the registration a tag names in a domain this process has
/// attached.
pub fn resolve_attached(data: u64, tfd: i32, ino: Option<u64>) -> Option<Member> {
    Domain::attached().into_iter().find_map(|dom| {
        let reg = dom.epoll_lookup(data, ino)?;
        Some(Member { dom, reg, fd: tfd })
    })
}

struct Item {
    tfd: i32,
    data: u64,
    ino: Option<u64>,
}

/// One item line of an epoll fd's fdinfo:
/// `tfd:        5 events:       19 data:                0  pos:0 ino:...`.
fn parse_item(line: &[u8]) -> Option<Item> {
    let s = std::str::from_utf8(line).ok()?;
    let mut words = s.split_whitespace();
    if words.next()? != "tfd:" {
        return None;
    }
    let tfd = words.next()?.parse().ok()?;
    let (mut data, mut ino) = (None, None);
    while let Some(w) = words.next() {
        if w == "data:" {
            data = u64::from_str_radix(words.next()?, 16).ok();
        } else if let Some(i) = w.strip_prefix("ino:") {
            ino = u64::from_str_radix(i, 16).ok();
        }
    }
    Some(Item { tfd, data: data?, ino })
}

#[cfg(test)]
mod tests {
    use super::parse_item;

    #[test]
    fn fdinfo_items_parse() {
        let i = parse_item(b"tfd:        5 events:       19 data: b1e9000100000007  pos:0 ino:61d sdev:7").unwrap();
        assert_eq!(i.tfd, 5);
        assert_eq!(i.data, 0xb1e9_0001_0000_0007);
        assert_eq!(i.ino, Some(0x61d));
        assert!(parse_item(b"pos:\t0").is_none());
        assert!(parse_item(b"flags:\t02").is_none());
    }
}
