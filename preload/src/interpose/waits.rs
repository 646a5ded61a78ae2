//! poll, ppoll, select and pselect (and the `_FORTIFY_SOURCE` entry
//! points `__poll_chk` and `__ppoll_chk`): peer fds get the bus's
//! readiness and wake-ups (see `wait`); a set without peer fds goes
//! straight to the C library.
#![allow(clippy::missing_safety_doc)]

use super::*;
use crate::epolls;
use crate::uaccess::ProcMem;
use crate::wait::{self, Deadline, Kernel, Member};
use libc::{nfds_t, pollfd, sigset_t, timespec};
use shm_core::{ArmedSet, UserMem};

extern "C" {
    fn pthread_setcanceltype(kind: c_int, old: *mut c_int) -> c_int;
}
const PTHREAD_CANCEL_ASYNCHRONOUS: c_int = 1;

/// The kernel calls of a wait, through the C library.
pub(super) struct Libc;

impl Kernel for Libc {
    fn ppoll(&mut self, fds: &mut [pollfd], timeout: Option<timespec>, mask: Option<&sigset_t>) -> Result<usize, i32> {
        let ts = timeout.as_ref().map_or(core::ptr::null(), |t| t as *const timespec);
        let m = mask.map_or(core::ptr::null(), |m| m as *const sigset_t);
        // SAFETY: `fds` is our own array; `ts` and `m` are null or valid.
        let r = unsafe {
            call_real!(crate::real::PPOLL, fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int, fds.as_mut_ptr(), fds.len() as nfds_t, ts, m)
        };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as usize)
        }
    }

    fn block_signals(&mut self) -> sigset_t {
        // SAFETY: sigset operations on local sets; pthread_sigmask leaves
        // the C library's own signals (cancellation, setxid) unblocked.
        unsafe {
            let mut all: sigset_t = core::mem::zeroed();
            let mut old: sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        }
    }

    fn set_signal_mask(&mut self, mask: &sigset_t) {
        // SAFETY: a valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, core::ptr::null_mut()) };
    }

    fn catches_signals(&self) -> bool {
        super::signals::app_catches_signals()
    }

    fn futex_sleep(&mut self, armed: &ArmedSet, timeout: Option<timespec>) {
        // A futex wait is no cancellation point of the C library: allow
        // asynchronous cancellation while asleep (nothing else runs then).
        let mut old = 0;
        // SAFETY: valid out pointer; both calls only change this thread's
        // cancellation type.
        unsafe { pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &mut old) };
        armed.futex_sleep(timeout.as_ref());
        // SAFETY: as above.
        unsafe { pthread_setcanceltype(old, core::ptr::null_mut()) };
    }
}

/// What a wait does with fd `fd`: a peer, an epoll set holding peers, or
/// the kernel's business.
pub(super) fn member_of(fd: c_int) -> Member {
    if fd < 0 {
        return Member::Skip;
    }
    if let Some(info) = fdtable::classify(fd) {
        return Member::Peer(info);
    }
    match epolls::get(fd) {
        Some(s) if s.involves_bus() => Member::Epoll(s),
        _ => Member::Kernel,
    }
}

/// Whether a wait on `fd` is the shim's business (cheap for known fds).
fn involves_bus(fd: c_int) -> bool {
    member_of(fd).involves_bus()
}

/// Entries read at a time (a small buffer: it is initialised on every wait).
const CHUNK: usize = 16;

/// Reads the caller's pollfd array and tells whether it holds a peer fd
/// (or a set of them). Err: the array cannot be read.
fn poll_involves_bus(fds: *const pollfd, nfds: nfds_t) -> Result<bool, Errno> {
    let mut buf = [pollfd { fd: -1, events: 0, revents: 0 }; CHUNK];
    let mut done = 0usize;
    while done < nfds as usize {
        let n = (nfds as usize - done).min(CHUNK);
        read_array(fds as u64 + (done * size_of::<pollfd>()) as u64, &mut buf[..n])?;
        if buf[..n].iter().any(|p| involves_bus(p.fd)) {
            return Ok(true);
        }
        done += n;
    }
    Ok(false)
}

fn size_of<T>() -> usize {
    core::mem::size_of::<T>()
}

/// Copies an array of plain C structs from the caller.
fn read_array<T: Copy>(addr: u64, out: &mut [T]) -> Result<(), Errno> {
    // SAFETY: T is a plain C struct (pollfd, epoll_event, fd_set words):
    // any bytes are a valid value.
    let bytes = unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, core::mem::size_of_val(out)) };
    ProcMem.read(addr, bytes)
}

/// Copies an array of plain C structs to the caller.
pub(super) fn write_array<T: Copy>(addr: u64, v: &[T]) -> Result<(), Errno> {
    // SAFETY: as for `read_array`; reading the bytes of initialised values.
    let bytes = unsafe { core::slice::from_raw_parts(v.as_ptr() as *const u8, core::mem::size_of_val(v)) };
    ProcMem.write(addr, bytes)
}

/// A relative timespec as nanoseconds; None if it is not valid (the real
/// call then reports EINVAL).
pub(super) fn timespec_ns(ts: &timespec) -> Option<u64> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return None;
    }
    Some((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
}

/// A poll-style wait on the caller's `fds` that involves the bus, its
/// array read into `local` and classified into `members`.
unsafe fn run_poll(fds: *mut pollfd, local: &mut [pollfd], members: &[Member], deadline: Deadline, mask: Option<&sigset_t>) -> c_int {
    let r = wait::poll(local, members, deadline, mask, &mut Libc);
    trace_wait("poll", local, members, &r);
    match r {
        Ok(n) => match write_array(fds as u64, local) {
            Ok(()) => n as c_int,
            Err(e) => fail(e),
        },
        Err(e) => fail(Errno(e)),
    }
}

/// A poll-style wait: the caller's array is read and classified once (on
/// the stack for up to [`CHUNK`] entries: the usual wait costs no heap);
/// `args` reads the timeout and mask once the wait is known to be the
/// bus's. None: the C library's call must run as it is (no peer fd, an
/// unreadable array or arguments, more fds than the kernel takes).
unsafe fn poll_bus(fds: *mut pollfd, nfds: nfds_t, args: impl FnOnce() -> Option<(Deadline, Option<sigset_t>)>) -> Option<c_int> {
    if nfds == 0 || nfds > 1 << 20 {
        return None;
    }
    let n = nfds as usize;
    if n <= CHUNK {
        let mut local = [pollfd { fd: -1, events: 0, revents: 0 }; CHUNK];
        let local = &mut local[..n];
        read_array(fds as u64, local).ok()?;
        let mut members: [Member; CHUNK] = [const { Member::Skip }; CHUNK];
        let mut bus = false;
        for (m, p) in members.iter_mut().zip(local.iter()) {
            *m = member_of(p.fd);
            bus |= m.involves_bus();
        }
        if !bus {
            return None;
        }
        let (deadline, mask) = args()?;
        return Some(run_poll(fds, local, &members[..n], deadline, mask.as_ref()));
    }
    // The kernel refuses more fds than RLIMIT_NOFILE (asked only for sets
    // this large: a limit below 64 is not worth a system call per wait).
    if !matches!(poll_involves_bus(fds, nfds), Ok(true)) || (nfds > 64 && nfds > shm_core::sys::nofile_limit()) {
        return None;
    }
    let (deadline, mask) = args()?;
    let mut local = vec![pollfd { fd: -1, events: 0, revents: 0 }; n];
    if let Err(e) = read_array(fds as u64, &mut local) {
        return Some(fail(e));
    }
    let members: Vec<Member> = local.iter().map(|p| member_of(p.fd)).collect();
    Some(run_poll(fds, &mut local, &members, deadline, mask.as_ref()))
}

/// The one place where poll-style waits are traced (`BUS1_TRACE`): each
/// descriptor with what was asked and what came back.
pub(super) fn trace_wait(what: &str, fds: &[pollfd], members: &[Member], r: &Result<usize, i32>) {
    if crate::trace::on() {
        let list: Vec<crate::trace::WaitFd> = fds
            .iter()
            .zip(members)
            .map(|(p, m)| crate::trace::WaitFd {
                fd: p.fd,
                serial: if let Member::Peer(info) = m { Some(info.peer.serial()) } else { None },
                events: p.events,
                revents: p.revents,
            })
            .collect();
        keep_errno(|| crate::trace::wait(what, &list, *r));
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    let args = || Some((Deadline::after_ns((timeout >= 0).then(|| timeout as u64 * 1_000_000)), None));
    match poll_bus(fds, nfds, args) {
        Some(r) => r,
        None => call_real!(crate::real::POLL, fn(*mut pollfd, nfds_t, c_int) -> c_int, fds, nfds, timeout),
    }
}

/// ppoll's timeout and mask as a wait takes them; None if the real call
/// must judge them (invalid or unreadable).
unsafe fn ppoll_args(ts: *const timespec, mask: *const sigset_t, sigsetsize: usize) -> Option<(Deadline, Option<sigset_t>)> {
    let deadline = if ts.is_null() {
        Deadline::Never
    } else {
        let mut t = [timespec { tv_sec: 0, tv_nsec: 0 }];
        read_array(ts as u64, &mut t).ok()?;
        Deadline::after_ns(Some(timespec_ns(&t[0])?))
    };
    let mask = if mask.is_null() {
        None
    } else {
        if sigsetsize != 8 {
            return None;
        }
        let mut m: [sigset_t; 1] = [core::mem::zeroed()];
        read_array(mask as u64, &mut m).ok()?;
        Some(m[0])
    };
    Some((deadline, mask))
}

#[no_mangle]
pub unsafe extern "C-unwind" fn ppoll(fds: *mut pollfd, nfds: nfds_t, ts: *const timespec, mask: *const sigset_t) -> c_int {
    if let Some(r) = poll_bus(fds, nfds, || ppoll_args(ts, mask, 8)) {
        return r;
    }
    call_real!(crate::real::PPOLL, fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int, fds, nfds, ts, mask)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __poll_chk(fds: *mut pollfd, nfds: nfds_t, timeout: c_int, fdslen: usize) -> c_int {
    if fdslen / size_of::<pollfd>() < nfds as usize {
        // The C library reports the overflow and aborts.
        return call_real!(crate::real::POLL_CHK, fn(*mut pollfd, nfds_t, c_int, usize) -> c_int, fds, nfds, timeout, fdslen);
    }
    poll(fds, nfds, timeout)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn __ppoll_chk(fds: *mut pollfd, nfds: nfds_t, ts: *const timespec, mask: *const sigset_t, fdslen: usize) -> c_int {
    if fdslen / size_of::<pollfd>() < nfds as usize {
        return call_real!(
            crate::real::PPOLL_CHK,
            fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, usize) -> c_int,
            fds,
            nfds,
            ts,
            mask,
            fdslen
        );
    }
    ppoll(fds, nfds, ts, mask)
}

// ----------------------------------------------------------------- select

/// select's three sets, read from the caller (one bit per fd below nfds).
struct FdSets {
    words: usize,
    sets: [Option<Vec<u64>>; 3],
}

const SELECT_IN: i16 = libc::POLLIN | libc::POLLRDNORM | libc::POLLRDBAND;
const SELECT_OUT: i16 = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;
const SELECT_EX: i16 = libc::POLLPRI;

impl FdSets {
    /// Reads the sets; None if one cannot be read (the real call reports
    /// EFAULT).
    fn read(nfds: c_int, ptrs: [*mut libc::fd_set; 3]) -> Option<FdSets> {
        let words = (nfds as usize).div_ceil(64);
        let mut sets: [Option<Vec<u64>>; 3] = [None, None, None];
        for (i, p) in ptrs.iter().enumerate() {
            if !p.is_null() {
                let mut v = vec![0u64; words];
                read_array(*p as u64, &mut v).ok()?;
                // Bits at or above nfds do not count.
                if nfds % 64 != 0 {
                    if let Some(last) = v.last_mut() {
                        *last &= (1u64 << (nfds % 64)) - 1;
                    }
                }
                sets[i] = Some(v);
            }
        }
        Some(FdSets { words, sets })
    }

    fn has(&self, i: usize, fd: usize) -> bool {
        self.sets[i].as_ref().is_some_and(|v| v[fd / 64] & 1 << (fd % 64) != 0)
    }

    /// The fds in any set.
    fn fds(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words * 64).filter(|fd| (0..3).any(|i| self.has(i, *fd)))
    }

    fn involves_bus(&self) -> bool {
        self.fds().any(|fd| involves_bus(fd as c_int))
    }
}

/// A select-style wait that involves the bus: the sets become a poll set
/// and back. Returns the count or an errno; the sets are rewritten only on
/// success.
unsafe fn run_select(sets: &FdSets, ptrs: [*mut libc::fd_set; 3], deadline: Deadline, mask: Option<&sigset_t>) -> Result<usize, i32> {
    let fds: Vec<usize> = sets.fds().collect();
    let mut local: Vec<pollfd> = fds
        .iter()
        .map(|&fd| {
            let mut events = 0;
            if sets.has(0, fd) {
                events |= SELECT_IN;
            }
            if sets.has(1, fd) {
                events |= SELECT_OUT;
            }
            if sets.has(2, fd) {
                events |= SELECT_EX;
            }
            pollfd { fd: fd as c_int, events, revents: 0 }
        })
        .collect();
    let members: Vec<Member> = local.iter().map(|p| member_of(p.fd)).collect();
    let r = wait::poll(&mut local, &members, deadline, mask, &mut Libc);
    trace_wait("select", &local, &members, &r);
    r?;
    if local.iter().any(|p| p.revents & wait::POLLNVAL != 0) {
        return Err(libc::EBADF);
    }
    let mut out: [Vec<u64>; 3] = [vec![0; sets.words], vec![0; sets.words], vec![0; sets.words]];
    let mut count = 0;
    for p in &local {
        let fd = p.fd as usize;
        let hits = [
            sets.has(0, fd) && p.revents & (SELECT_IN | libc::POLLHUP | libc::POLLERR) != 0,
            sets.has(1, fd) && p.revents & (SELECT_OUT | libc::POLLERR) != 0,
            sets.has(2, fd) && p.revents & SELECT_EX != 0,
        ];
        for (i, hit) in hits.iter().enumerate() {
            if *hit {
                out[i][fd / 64] |= 1 << (fd % 64);
                count += 1;
            }
        }
    }
    for (i, p) in ptrs.iter().enumerate() {
        if !p.is_null() {
            write_array(*p as u64, &out[i]).map_err(|e| e.0)?;
        }
    }
    Ok(count)
}

/// Whether select's fd count is one the shim reads sets for (others go
/// to the C library, which judges them).
fn select_nfds_ok(nfds: c_int) -> bool {
    nfds > 0 && nfds <= 1 << 20
}

#[no_mangle]
pub unsafe extern "C-unwind" fn select(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, tv: *mut libc::timeval) -> c_int {
    let ptrs = [r, w, e];
    let real = |tv: *mut libc::timeval| {
        call_real!(
            crate::real::SELECT,
            fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int,
            nfds,
            r,
            w,
            e,
            tv
        )
    };
    if !select_nfds_ok(nfds) {
        return real(tv);
    }
    let Some(sets) = FdSets::read(nfds, ptrs).filter(FdSets::involves_bus) else { return real(tv) };
    let deadline = if tv.is_null() {
        Deadline::Never
    } else {
        let mut t = [libc::timeval { tv_sec: 0, tv_usec: 0 }];
        // Linux carries whole seconds of tv_usec over; negative fields are
        // the real call's EINVAL.
        if read_array(tv as u64, &mut t).is_err() || t[0].tv_sec < 0 || t[0].tv_usec < 0 {
            return real(tv);
        }
        Deadline::after_ns(Some((t[0].tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t[0].tv_usec as u64 * 1000)))
    };
    let res = run_select(&sets, ptrs, deadline, None);
    if !tv.is_null() {
        // Linux tells how much of the timeout is left.
        let left = deadline.remaining().unwrap_or(timespec { tv_sec: 0, tv_nsec: 0 });
        let _ = write_array(tv as u64, &[libc::timeval { tv_sec: left.tv_sec, tv_usec: left.tv_nsec / 1000 }]);
    }
    match res {
        Ok(n) => n as c_int,
        Err(e) => fail(Errno(e)),
    }
}

#[no_mangle]
pub unsafe extern "C-unwind" fn pselect(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let ptrs = [r, w, e];
    if select_nfds_ok(nfds) {
        if let Some(sets) = FdSets::read(nfds, ptrs).filter(FdSets::involves_bus) {
            if let Some((deadline, m)) = ppoll_args(ts, mask, 8) {
                return match run_select(&sets, ptrs, deadline, m.as_ref()) {
                    Ok(n) => n as c_int,
                    Err(e) => fail(Errno(e)),
                };
            }
        }
    }
    call_real!(
        crate::real::PSELECT,
        fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const timespec, *const sigset_t) -> c_int,
        nfds,
        r,
        w,
        e,
        ts,
        mask
    )
}
