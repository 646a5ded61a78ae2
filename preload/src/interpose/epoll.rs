//! epoll_create, epoll_ctl and the epoll waits: a peer fd added to a set
//! is registered in its domain, and its kernel item carries the
//! registration's tag as data (edge-triggered, so that the peer socket's
//! own contents never keep a wait busy); waits report the application's
//! events and data computed from the bus (see `wait` and `epolls`).
#![allow(clippy::missing_safety_doc)]

use super::waits::{timespec_ns, write_array, Libc};
use super::*;
use crate::epolls::{self, Member, Shadow};
use crate::uaccess::ProcMem;
use crate::wait::{self, Deadline};
use libc::{epoll_event, sigset_t, timespec};
use shm_core::{UserMem, EPOLLET, EPOLLONESHOT};

/// Descriptor `fd` was closed or replaced (see `fds`).
pub(super) fn closed(fd: c_int) {
    keep_errno(|| epolls::closed(fd));
}

pub(super) fn closed_range(lo: c_uint, hi: c_uint) {
    keep_errno(|| epolls::closed_range(lo, hi));
}

unsafe fn real_ctl(ep: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    call_real!(crate::real::EPOLL_CTL, fn(c_int, c_int, c_int, *mut epoll_event) -> c_int, ep, op, fd, ev)
}

/// The kernel item of a peer registration: the application's events,
/// edge-triggered and never one-shot (the bus keeps those states), with
/// the tag as data.
fn kernel_item(events: u32, tag: u64) -> epoll_event {
    epoll_event { events: (events & !EPOLLONESHOT) | EPOLLET, u64: tag }
}

fn read_event(ev: *const epoll_event) -> Result<epoll_event, Errno> {
    let mut bytes = [0u8; core::mem::size_of::<epoll_event>()];
    ProcMem.read(ev as u64, &mut bytes)?;
    // SAFETY: epoll_event is plain data; every byte pattern is valid.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const epoll_event) })
}

/// The registration of peer fd `fd` in set `ep` (known, or found in the
/// set's items).
fn member(ep: c_int, fd: c_int) -> Option<Member> {
    epolls::find(ep, fd).or_else(|| {
        epolls::inspect(ep)?;
        epolls::find(ep, fd)
    })
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    let r = call_real!(crate::real::EPOLL_CREATE, fn(c_int) -> c_int, size);
    if r >= 0 {
        epolls::created(r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    let r = call_real!(crate::real::EPOLL_CREATE1, fn(c_int) -> c_int, flags);
    if r >= 0 {
        epolls::created(r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(ep: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let Some(info) = (if (libc::EPOLL_CTL_ADD..=libc::EPOLL_CTL_MOD).contains(&op) { fdtable::classify(fd) } else { None }) else {
        return ctl_nested(ep, op, fd, ev);
    };
    match op {
        libc::EPOLL_CTL_ADD => {
            let Ok(want) = read_event(ev) else { return real_ctl(ep, op, fd, ev) };
            let exclusive = libc::EPOLLEXCLUSIVE as u32;
            if want.events & exclusive != 0 && want.events & EPOLLONESHOT != 0 {
                // The kernel refuses the pair; it never sees the one-shot.
                return fail(Errno::EINVAL);
            }
            let Ok(reg) = info.peer.epoll_register(fd, want.events, want.u64) else { return real_ctl(ep, op, fd, ev) };
            let dom = info.peer.domain().clone();
            let mut item = kernel_item(want.events, reg.tag());
            let r = real_ctl(ep, op, fd, &mut item);
            if r < 0 {
                keep_errno(|| dom.epoll_unregister(&reg));
                return r;
            }
            epolls::add(ep, Member { dom, reg, fd });
            r
        }
        libc::EPOLL_CTL_MOD => {
            let Some(m) = member(ep, fd) else { return real_ctl(ep, op, fd, ev) };
            let Ok(want) = read_event(ev) else { return real_ctl(ep, op, fd, ev) };
            let mut item = kernel_item(want.events, m.reg.tag());
            let r = real_ctl(ep, op, fd, &mut item);
            if r == 0 {
                m.dom.epoll_modify(&m.reg, want.events, want.u64);
            }
            r
        }
        _ => {
            let m = member(ep, fd);
            let r = real_ctl(ep, op, fd, ev);
            if r == 0 {
                if let Some(m) = m {
                    keep_errno(|| m.dom.epoll_unregister(&m.reg));
                    epolls::remove(ep, fd);
                }
            }
            r
        }
    }
}

/// epoll_ctl of an fd that is no peer: if it is a set holding peer fds,
/// the outer set remembers it, so that its waits see the inner peers.
unsafe fn ctl_nested(ep: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let inner_holds_peers = epolls::get(fd).is_some_and(|s| s.involves_bus());
    let nested = match op {
        libc::EPOLL_CTL_ADD if inner_holds_peers => read_event(ev).ok(),
        libc::EPOLL_CTL_MOD if epolls::has_nested(ep, fd) => read_event(ev).ok(),
        _ => None,
    };
    let r = real_ctl(ep, op, fd, ev);
    if r == 0 {
        match (op, nested) {
            (libc::EPOLL_CTL_DEL, _) => epolls::remove(ep, fd),
            (_, Some(e)) => epolls::add_nested(ep, fd, e.events, e.u64),
            _ => {}
        }
    }
    r
}

/// Takes out of `events` the items of peer registrations (the bus reports
/// those); returns how many are left and whether a tag `shadow` (the set as
/// this process knows it) does not hold was among them: the caller then
/// reads the set's items again. Such a tag is a peer fd another process or
/// thread added (perhaps of a domain this process has not attached), or an
/// item removed since the kernel reported it (EPOLL_CTL_DEL by another
/// thread meanwhile). Either way the event is dropped: the kernel reports
/// no item deleted before its wait returns, and the tag is not the
/// application's data (a program such as tokio takes that for a pointer).
/// No application data looks like a tag: its top 16 bits would make it a
/// non-canonical address.
fn drop_tagged(events: &mut [epoll_event], shadow: Option<&Shadow>) -> (usize, bool) {
    let mut kept = 0;
    let mut unknown = false;
    for i in 0..events.len() {
        let e = events[i];
        let data = e.u64;
        if shm_core::epoll_untag(data).is_some() {
            unknown |= !shadow.is_some_and(|s| s.knows(data));
        } else {
            events[kept] = e;
            kept += 1;
        }
    }
    (kept, unknown)
}

/// The real `epoll_pwait` without waiting, for a wait's harvest.
unsafe fn harvest_now(ep: c_int, out: &mut [epoll_event], shadow: &Shadow) -> Result<usize, i32> {
    let r = call_real!(
        crate::real::EPOLL_PWAIT,
        fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int,
        ep,
        out.as_mut_ptr(),
        out.len() as c_int,
        0,
        core::ptr::null()
    );
    if r < 0 {
        return Err(errno());
    }
    let (mut kept, unknown) = drop_tagged(&mut out[..r as usize], Some(shadow));
    if !shadow.nested.is_empty() {
        // The kernel's report of a nested set is the bus's to make.
        let mut k = 0;
        for i in 0..kept {
            if !shadow.nested_data(out[i].u64) {
                out[k] = out[i];
                k += 1;
            }
        }
        kept = k;
    }
    if unknown {
        // A peer fd added by another process, or an item deleted meanwhile:
        // learn the set's items as they are now.
        let _ = epolls::inspect(ep);
    }
    Ok(kept)
}

/// An epoll wait: `real` makes the C library's call (for sets without
/// peer registrations), which is then checked for tags.
unsafe fn wait_common(
    ep: c_int,
    events: *mut epoll_event,
    max: c_int,
    deadline: Deadline,
    mask: Option<&sigset_t>,
    real: &mut dyn FnMut() -> c_int,
) -> c_int {
    if max <= 0 || max as usize > (c_int::MAX as usize) / core::mem::size_of::<epoll_event>() {
        return real();
    }
    // A set this process did not make is looked up in its items the first
    // time it is waited on (sets made here are known from the start, so
    // this costs a read of `/proc` once per inherited or received set).
    let known = if epolls::kernel_only(ep) { None } else { epolls::lookup(ep).map(|(s, _)| s).or_else(|| epolls::inspect(ep)) };
    let shadow = match known {
        Some(s) if s.involves_bus() => s,
        _ => {
            // The kernel's wait. A peer fd may be added to the set (by
            // another thread) while it runs: the kernel then reports the
            // item with its tag, which is not the application's data.
            let r = real();
            if r <= 0 {
                return r;
            }
            let mut stack = [epoll_event { events: 0, u64: 0 }; 32];
            let mut heap = Vec::new();
            let local = if r as usize <= stack.len() {
                &mut stack[..r as usize]
            } else {
                heap.resize(r as usize, epoll_event { events: 0, u64: 0 });
                &mut heap[..]
            };
            if ProcMem.read(events as u64, bytes_mut(local)).is_err() {
                return r;
            }
            if !local.iter().any(|e| shm_core::epoll_untag(e.u64).is_some()) {
                return r;
            }
            let (kept, unknown) = drop_tagged(local, None);
            if kept == r as usize && !unknown {
                return r;
            }
            // The set holds peer fds this process had not seen: learn
            // them, and report what is left (or wait on properly).
            let _ = epolls::inspect(ep);
            if kept > 0 {
                return match write_array(events as u64, &local[..kept]) {
                    Ok(()) => kept as c_int,
                    Err(e) => fail(e),
                };
            }
            match epolls::get(ep) {
                Some(s) => s,
                None => return 0,
            }
        }
    };
    let mut local = vec![epoll_event { events: 0, u64: 0 }; max as usize];
    let r = wait::epoll(ep, &shadow, &mut local, deadline, mask, &mut Libc, &mut |out| harvest_now(ep, out, &shadow));
    if crate::trace::on() {
        let peers: Vec<i32> = shadow.members.iter().map(|m| m.fd).collect();
        keep_errno(|| crate::trace::epoll_wait("epoll_wait", ep, &peers, r));
    }
    match r {
        Ok(n) => match write_array(events as u64, &local[..n]) {
            Ok(()) => n as c_int,
            Err(e) => fail(e),
        },
        Err(e) => fail(Errno(e)),
    }
}

fn bytes_mut(v: &mut [epoll_event]) -> &mut [u8] {
    // SAFETY: epoll_event is plain data; any bytes are a valid value.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, core::mem::size_of_val(v)) }
}

fn ms_deadline(timeout: c_int) -> Deadline {
    Deadline::after_ns((timeout >= 0).then(|| timeout as u64 * 1_000_000))
}

unsafe fn read_mask(mask: *const sigset_t) -> Result<Option<sigset_t>, Errno> {
    if mask.is_null() {
        return Ok(None);
    }
    let mut m: sigset_t = core::mem::zeroed();
    // SAFETY: sigset_t is plain data.
    let bytes = core::slice::from_raw_parts_mut(&mut m as *mut sigset_t as *mut u8, 8);
    ProcMem.read(mask as u64, bytes)?;
    Ok(Some(m))
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_wait(ep: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int {
    let mut real = || call_real!(crate::real::EPOLL_WAIT, fn(c_int, *mut epoll_event, c_int, c_int) -> c_int, ep, events, max, timeout);
    wait_common(ep, events, max, ms_deadline(timeout), None, &mut real)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait(ep: c_int, events: *mut epoll_event, max: c_int, timeout: c_int, mask: *const sigset_t) -> c_int {
    let mut real = || {
        call_real!(crate::real::EPOLL_PWAIT, fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int, ep, events, max, timeout, mask)
    };
    let Ok(m) = read_mask(mask) else { return real() };
    wait_common(ep, events, max, ms_deadline(timeout), m.as_ref(), &mut real)
}

#[no_mangle]
pub unsafe extern "C-unwind" fn epoll_pwait2(ep: c_int, events: *mut epoll_event, max: c_int, ts: *const timespec, mask: *const sigset_t) -> c_int {
    let mut real = || {
        call_real!(
            crate::real::EPOLL_PWAIT2,
            fn(c_int, *mut epoll_event, c_int, *const timespec, *const sigset_t) -> c_int,
            ep,
            events,
            max,
            ts,
            mask
        )
    };
    let Ok(m) = read_mask(mask) else { return real() };
    let deadline = if ts.is_null() {
        Deadline::Never
    } else {
        let mut t = timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: timespec is plain data.
        let bytes = core::slice::from_raw_parts_mut(&mut t as *mut timespec as *mut u8, core::mem::size_of::<timespec>());
        match ProcMem.read(ts as u64, bytes).ok().and_then(|_| timespec_ns(&t)) {
            Some(ns) => Deadline::after_ns(Some(ns)),
            None => return real(),
        }
    };
    wait_common(ep, events, max, deadline, m.as_ref(), &mut real)
}
