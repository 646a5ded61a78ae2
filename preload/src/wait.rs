//! How `poll`, `select` and `epoll_wait` wait when peer fds are involved.
//!
//! Readiness of a peer comes from the bus (`Peer::readiness`, no system
//! call); other fds are asked of the kernel. When nothing is ready, the
//! thread may spin a little (only when every fd is a peer fd, and by
//! default only while the machine has a CPU to spare), watching the
//! peers' bell counts, or, on one CPU, yield it once; an epoll wait over
//! peers does the same, looking at the kernel's part of its set between
//! slices of the spin. Then it arms
//! on the peers' bells (`shm_core::WaitSet`), looks once more, and sleeps:
//!
//! * on a futex in shared memory when every fd is a peer fd of one domain,
//!   no signal mask is given and the application catches no signal (a
//!   futex sleep is restarted after a handler with SA_RESTART, where poll
//!   must fail with EINTR);
//! * otherwise in the kernel's `ppoll`, on the other fds plus the thread's
//!   wake socket (which a ring makes readable), with the caller's signal
//!   mask applied atomically.
//!
//! With `BUS1_WAKE=exact` the peer socket itself is readable exactly while
//! the queue is not empty, and a poll-style wait sleeps on it in the kernel
//! without arming.
//!
//! While a wait is armed and awake it keeps every signal blocked, so that a
//! handler runs only inside the kernel's sleep (which then fails with
//! EINTR) or after the wait is over; the caller's mask is back when the
//! wait returns. This is what makes "signal masks applied for the whole
//! wait" hold for the spin too, at the price of delaying a signal by at
//! most the spin.
//!
//! The kernel calls are the caller's ([`Kernel`]): this module has no
//! `unsafe`.

use crate::epolls::Shadow;
use crate::fdtable::FdInfo;
use shm_core::{sys, ArmedSet, Sleep, WaitSet};
use std::sync::{Arc, OnceLock};

pub const POLLIN: i16 = libc::POLLIN;
pub const POLLRDNORM: i16 = libc::POLLRDNORM;
pub const POLLNVAL: i16 = libc::POLLNVAL;

/// The kernel calls a wait needs, made by the interposers.
pub trait Kernel {
    /// The C library's `ppoll` (a cancellation point).
    fn ppoll(&mut self, fds: &mut [libc::pollfd], timeout: Option<libc::timespec>, mask: Option<&libc::sigset_t>) -> Result<usize, i32>;
    /// Blocks every signal the C library lets a thread block; returns the
    /// mask before.
    fn block_signals(&mut self) -> libc::sigset_t;
    fn set_signal_mask(&mut self, mask: &libc::sigset_t);
    /// Whether the application has a handler for some signal.
    fn catches_signals(&self) -> bool;
    /// Sleeps on the futex of `armed` until a ring or `timeout`, as a
    /// cancellation point.
    fn futex_sleep(&mut self, armed: &ArmedSet, timeout: Option<libc::timespec>);
}

/// When a wait ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    Now,
    Never,
    /// CLOCK_MONOTONIC nanoseconds.
    At(u64),
}

impl Deadline {
    /// From a relative timeout in nanoseconds (None: none).
    pub fn after_ns(ns: Option<u64>) -> Deadline {
        match ns {
            None => Deadline::Never,
            Some(0) => Deadline::Now,
            Some(ns) => Deadline::At(sys::now_ns().saturating_add(ns)),
        }
    }

    /// The time left (None: no limit); zero once passed.
    pub fn remaining(&self) -> Option<libc::timespec> {
        let ns = match *self {
            Deadline::Now => 0,
            Deadline::Never => return None,
            Deadline::At(t) => t.saturating_sub(sys::now_ns()),
        };
        Some(libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ })
    }

    pub fn passed(&self) -> bool {
        match *self {
            Deadline::Now => true,
            Deadline::Never => false,
            Deadline::At(t) => sys::now_ns() >= t,
        }
    }
}

/// `BUS1_SPIN_US`: how long a wait on peer fds only may spin before it
/// sleeps; 0 disables. Never spins when the thread may run on one CPU only.
pub fn spin_ns() -> u64 {
    if one_cpu() {
        0
    } else {
        spin_setting().0
    }
}

/// The spin (ns) `BUS1_SPIN_US` asks for, and whether it was set: a spin
/// asked for explicitly is tried on a busy machine too.
fn spin_setting() -> (u64, bool) {
    static SPIN: OnceLock<(u64, bool)> = OnceLock::new();
    *SPIN.get_or_init(|| {
        let set = std::env::var("BUS1_SPIN_US").ok().and_then(|v| v.trim().parse::<u64>().ok());
        (set.unwrap_or(DEFAULT_SPIN_US).min(1_000_000) * 1000, set.is_some())
    })
}

thread_local! {
    /// Whether this thread may run on one CPU only, read at its first wait
    /// (affinity belongs to a thread, and a program may pin some threads
    /// only).
    static ONE_CPU: core::cell::Cell<Option<bool>> = const { core::cell::Cell::new(None) };
}

/// Whether the calling thread may run on one CPU only.
fn one_cpu() -> bool {
    ONE_CPU
        .try_with(|c| {
            c.get().unwrap_or_else(|| {
                let one = sys::cpus_allowed() < 2;
                c.set(Some(one));
                one
            })
        })
        .unwrap_or(false)
}

/// Whether a wait that may not spin yields its CPU once before it sleeps:
/// when the thread may run on one CPU only, unless `BUS1_SPIN_US=0`. The
/// peer it waits for is then often runnable on that same CPU (woken by
/// this thread's last message): yielding lets it answer before this
/// thread has announced a sleep, so that neither side pays for a ring.
fn yields_before_sleep() -> bool {
    let (spin, explicit) = spin_setting();
    one_cpu() && !(explicit && spin == 0)
}

/// The spin when `BUS1_SPIN_US` is not set, and only while the machine
/// has a CPU to spare (see the README for how it was chosen and what it
/// costs).
pub const DEFAULT_SPIN_US: u64 = 50;

thread_local! {
    /// This thread's current spin budget (ns) and how many waits it has
    /// skipped spinning since the budget ran out.
    static BUDGET: core::cell::Cell<(u64, u32)> = const { core::cell::Cell::new((u64::MAX, 0)) };
}

/// Whether the machine has a CPU to spare for spinning: the runnable
/// tasks (counting this one), averaged over samples at most every 10 ms,
/// do not outnumber the CPUs online. On a machine busier than that a spin
/// only keeps the peer it waits for (or anyone else) from a CPU: measured
/// with 2 CPUs and 4 to 5 runnable tasks, every spin made ping-pong slower
/// (README, Benchmarks). Applies to the default spin only.
fn cpu_to_spare() -> bool {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
    /// When the last sample was taken (ns), and the average in 1/16 tasks.
    static SAMPLED: AtomicU64 = AtomicU64::new(0);
    static AVERAGE: AtomicU32 = AtomicU32::new(0);
    static CPUS: AtomicU32 = AtomicU32::new(0);
    let now = sys::now_ns();
    let last = SAMPLED.load(Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 10_000_000) && SAMPLED.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        if let Some((running, cpus)) = sys::runnable_tasks() {
            let sample = running.min(1 << 20) * 16;
            let old = AVERAGE.load(Relaxed);
            // A quarter of each new sample, the first taken whole.
            AVERAGE.store(if last == 0 { sample } else { old - old / 4 + sample / 4 }, Relaxed);
            CPUS.store(cpus, Relaxed);
        }
    }
    let cpus = CPUS.load(Relaxed);
    // Unknown (no /proc): spin as configured.
    cpus == 0 || AVERAGE.load(Relaxed) <= cpus * 16 + 8
}

/// How long this wait may spin. A spin that ends without the peer becoming
/// ready halves the thread's budget (down to none: a loaded machine or an
/// idle peer makes spinning a waste of CPU another process needs); one
/// that pays off restores it. Without budget, every sixteenth wait tries
/// a short spin again.
fn spin_budget() -> u64 {
    let (max, explicit) = spin_setting();
    if max == 0 || one_cpu() || !(explicit || cpu_to_spare()) {
        return 0;
    }
    BUDGET.with(|b| {
        let (budget, skipped) = b.get();
        let budget = budget.min(max);
        if budget > 0 {
            return budget;
        }
        b.set((0, skipped.wrapping_add(1)));
        if skipped % 16 == 15 {
            max / 4
        } else {
            0
        }
    })
}

/// Records how a spin of `budget` ended.
fn spin_result(budget: u64, paid_off: bool) {
    let max = spin_ns();
    BUDGET.with(|b| {
        let (old, skipped) = b.get();
        let new = if paid_off {
            max
        } else {
            let half = old.min(budget) / 2;
            if half < 2000 {
                0
            } else {
                half
            }
        };
        b.set((new, if new > 0 { 0 } else { skipped }));
    });
}

/// One entry of a poll-style wait.
pub enum Member {
    /// Ignored (a negative fd).
    Skip,
    /// A peer fd.
    Peer(Arc<FdInfo>),
    /// An epoll set holding peer fds: readable when one of them would be
    /// reported, or when the kernel says so.
    Epoll(Arc<Shadow>),
    /// Anything else: the kernel's.
    Kernel,
}

impl Member {
    /// Whether the bus has something to say about this member (a peer, or
    /// a set holding peers).
    pub fn involves_bus(&self) -> bool {
        matches!(self, Member::Peer(_) | Member::Epoll(_))
    }

    fn in_kernel(&self) -> bool {
        matches!(self, Member::Kernel | Member::Epoll(_))
    }
}

/// What the bus says for member `m` asked for `events`.
fn bus_revents(m: &Member, events: i16) -> i16 {
    match m {
        Member::Peer(info) => info.peer.readiness().revents(events as u16 as u32) as i16,
        Member::Epoll(shadow) if shadow.pending() => (POLLIN | POLLRDNORM) & events,
        _ => 0,
    }
}

/// Computes every entry's revents: the bus's for peers, the kernel's (a
/// zero-timeout `ppoll`) for the rest. Returns how many are non-zero.
fn scan(fds: &mut [libc::pollfd], members: &[Member], k: &mut dyn Kernel, kernel_fds: &mut Vec<libc::pollfd>) -> Result<usize, i32> {
    kernel_fds.clear();
    for (p, m) in fds.iter().zip(members) {
        if m.in_kernel() {
            kernel_fds.push(libc::pollfd { fd: p.fd, events: p.events, revents: 0 });
        }
    }
    if !kernel_fds.is_empty() {
        k.ppoll(kernel_fds, Some(libc::timespec { tv_sec: 0, tv_nsec: 0 }), None)?;
    }
    let mut kernel = kernel_fds.iter();
    let mut n = 0;
    for (p, m) in fds.iter_mut().zip(members) {
        p.revents = bus_revents(m, p.events);
        if m.in_kernel() {
            p.revents |= kernel.next().map_or(0, |k| k.revents);
        }
        n += (p.revents != 0) as usize;
    }
    Ok(n)
}

/// Whether a peer or epoll member is ready now, by the bus alone.
/// A peer member's bell count (0 for the rest).
fn bell_seq(m: &Member) -> u64 {
    match m {
        Member::Peer(info) => info.peer.bell_seq(),
        _ => 0,
    }
}

fn bus_ready(fds: &[libc::pollfd], members: &[Member]) -> bool {
    fds.iter().zip(members).any(|(p, m)| bus_revents(m, p.events) != 0)
}

/// Signals kept blocked while the wait is armed and awake; the caller's
/// mask is restored on drop.
struct Blocked<'k> {
    old: Option<libc::sigset_t>,
    k: &'k mut dyn Kernel,
}

impl Blocked<'_> {
    fn block(&mut self) {
        if self.old.is_none() {
            self.old = Some(self.k.block_signals());
        }
    }

    fn restore(&mut self) {
        if let Some(old) = self.old.take() {
            self.k.set_signal_mask(&old);
        }
    }
}

/// A poll-style wait: `fds` (the caller's array, copied) with one member
/// each. Returns the number of entries with events, or an errno.
pub fn poll(fds: &mut [libc::pollfd], members: &[Member], deadline: Deadline, mask: Option<&libc::sigset_t>, k: &mut dyn Kernel) -> Result<usize, i32> {
    let mut kernel_fds = Vec::new();
    let only_peers = members.iter().all(|m| matches!(m, Member::Peer(_) | Member::Skip));
    let must_block = mask.is_some() || k.catches_signals();
    let mut b = Blocked { old: None, k };
    let mut spun = false;
    // Whether a peer socket may still be slept on (exact mode): not after
    // it woke a sleep while nothing was ready (a datagram that is no
    // token, or a token sent after its queue was emptied), until which the
    // socket would keep the sleep from lasting.
    let mut sockets_wake = true;
    let mut slept_on_sockets = false;
    loop {
        let n = scan(fds, members, b.k, &mut kernel_fds)?;
        if slept_on_sockets && n == 0 {
            sockets_wake = false;
        }
        slept_on_sockets = false;
        if n > 0 || deadline.passed() {
            b.restore();
            return Ok(n);
        }
        if !spun && only_peers {
            spun = true;
            let budget = spin_budget();
            let yields = budget == 0 && yields_before_sleep();
            if budget > 0 || yields {
                if must_block {
                    b.block();
                }
                // Watch the bells' counts, not the queues: the spin then
                // reads no line a sender writes until it is done.
                // (On the stack for the usual few members.)
                let mut inline = [0u64; 16];
                let heap: Vec<u64>;
                let seqs: &[u64] = if members.len() <= inline.len() {
                    inline.iter_mut().zip(members).for_each(|(s, m)| *s = bell_seq(m));
                    &inline[..members.len()]
                } else {
                    heap = members.iter().map(bell_seq).collect();
                    &heap
                };
                let rung = || members.iter().zip(seqs).any(|(m, s)| bell_seq(m) != *s);
                let paid_off = if yields {
                    sys::yield_cpu();
                    rung()
                } else {
                    let paid_off = spin(budget, deadline, rung);
                    spin_result(budget, paid_off);
                    paid_off
                };
                if paid_off {
                    continue;
                }
            }
        }
        if must_block {
            b.block();
        }
        // Arm on every peer that a ring must wake; with exact tokens a
        // peer socket wakes a kernel sleep by itself.
        let mut set = WaitSet::new();
        let mut sleep_fds: Vec<libc::pollfd> = Vec::new();
        for (p, m) in fds.iter().zip(members) {
            match m {
                Member::Peer(info) if sockets_wake && info.peer.socket_wakes() => {
                    let ev = if p.events & (POLLIN | POLLRDNORM) != 0 { POLLIN } else { 0 };
                    sleep_fds.push(libc::pollfd { fd: p.fd, events: ev, revents: 0 });
                    slept_on_sockets = true;
                }
                Member::Peer(info) => info.peer.watch(&mut set),
                Member::Epoll(shadow) => {
                    shadow.watch(&mut set);
                    sleep_fds.push(libc::pollfd { fd: p.fd, events: p.events, revents: 0 });
                }
                Member::Kernel => sleep_fds.push(libc::pollfd { fd: p.fd, events: p.events, revents: 0 }),
                Member::Skip => {}
            }
        }
        let futex = sleep_fds.is_empty() && set.one_domain() && mask.is_none() && !b.k.catches_signals();
        let armed = if set.is_empty() { None } else { set.arm(if futex { Sleep::Futex } else { Sleep::Socket }) };
        let slice = set.is_empty() || armed.is_some();
        if armed.as_ref().is_some_and(|a| a.rung()) || bus_ready(fds, members) {
            continue;
        }
        let sleep_mask = mask.or(b.old.as_ref()).copied();
        match &armed {
            Some(a) if futex => b.k.futex_sleep(a, deadline.remaining()),
            _ => {
                let first_wake = sleep_fds.len();
                if let Some(a) = &armed {
                    sleep_fds.extend(a.wake_fds().map(|fd| libc::pollfd { fd, events: POLLIN, revents: 0 }));
                }
                // Without a slot to arm, look again every few milliseconds.
                let timeout = if slice { deadline.remaining() } else { Some(short_slice(deadline)) };
                let r = b.k.ppoll(&mut sleep_fds, timeout, sleep_mask.as_ref());
                if let Some(a) = &armed {
                    if sleep_fds[first_wake..].iter().any(|p| p.revents != 0) {
                        a.drain_wake_sockets();
                    }
                }
                if let Err(e) = r {
                    drop(armed);
                    b.restore();
                    return Err(e);
                }
            }
        }
    }
}

/// Spins until `ready` or `budget` ns (or the deadline) have passed.
pub fn spin(budget: u64, deadline: Deadline, ready: impl Fn() -> bool) -> bool {
    let end = sys::now_ns() + budget;
    let mut i = 0u32;
    loop {
        if ready() {
            return true;
        }
        for _ in 0..32 {
            core::hint::spin_loop();
        }
        i = i.wrapping_add(1);
        if i.is_multiple_of(8) && (sys::now_ns() >= end || deadline.passed()) {
            return false;
        }
    }
}

/// How long an epoll wait spins between looks at the kernel's part of its
/// set (a system call each): a non-peer fd that becomes ready is reported
/// at most this late.
const EPOLL_SPIN_SLICE_NS: u64 = 10_000;

/// The sleep of a waiter that could not arm: 5 ms, or less if the
/// deadline is nearer.
fn short_slice(deadline: Deadline) -> libc::timespec {
    let five = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
    match deadline.remaining() {
        Some(r) if (r.tv_sec, r.tv_nsec) < (five.tv_sec, five.tv_nsec) => r,
        _ => five,
    }
}

/// An epoll wait on set `ep` whose peer registrations `shadow` knows:
/// fills `out` with up to `out.len()` events. `harvest` collects what the
/// kernel has ready in the set without waiting (dropping the items of peer
/// registrations, which the bus reports instead).
pub fn epoll(
    ep: i32,
    shadow: &Shadow,
    out: &mut [libc::epoll_event],
    deadline: Deadline,
    mask: Option<&libc::sigset_t>,
    k: &mut dyn Kernel,
    harvest: &mut dyn FnMut(&mut [libc::epoll_event]) -> Result<usize, i32>,
) -> Result<usize, i32> {
    let must_block = mask.is_some() || k.catches_signals();
    let mut b = Blocked { old: None, k };
    let mut spun = false;
    loop {
        let mut n = shadow.take_events(out);
        if n < out.len() {
            n += harvest(&mut out[n..])?;
        }
        if n > 0 || deadline.passed() {
            b.restore();
            return Ok(n);
        }
        if must_block {
            b.block();
        }
        if !spun && shadow.involves_bus() {
            spun = true;
            let budget = spin_budget();
            if budget > 0 {
                // The set may hold other fds, which only the kernel can
                // report: look at them between slices of the spin.
                let end = sys::now_ns().saturating_add(budget);
                let mut paid_off = false;
                while !paid_off && sys::now_ns() < end && !deadline.passed() {
                    let slice = end.saturating_sub(sys::now_ns()).min(EPOLL_SPIN_SLICE_NS);
                    paid_off = spin(slice, deadline, || shadow.pending());
                    if !paid_off {
                        let k = harvest(out)?;
                        if k > 0 {
                            spin_result(budget, true);
                            b.restore();
                            return Ok(k);
                        }
                    }
                }
                spin_result(budget, paid_off);
                continue;
            }
            // On one CPU, give the peer the chance to answer first, as a
            // poll-style wait does (see `yields_before_sleep`).
            if yields_before_sleep() {
                sys::yield_cpu();
                continue;
            }
        }
        let mut set = WaitSet::new();
        shadow.watch(&mut set);
        let armed = if set.is_empty() { None } else { set.arm(Sleep::Socket) };
        let slice = set.is_empty() || armed.is_some();
        if armed.as_ref().is_some_and(|a| a.rung()) || shadow.pending() {
            continue;
        }
        let mut sleep_fds = vec![libc::pollfd { fd: ep, events: POLLIN, revents: 0 }];
        if let Some(a) = &armed {
            sleep_fds.extend(a.wake_fds().map(|fd| libc::pollfd { fd, events: POLLIN, revents: 0 }));
        }
        let timeout = if slice { deadline.remaining() } else { Some(short_slice(deadline)) };
        let sleep_mask = mask.or(b.old.as_ref()).copied();
        let r = b.k.ppoll(&mut sleep_fds, timeout, sleep_mask.as_ref());
        if let Some(a) = &armed {
            if sleep_fds[1..].iter().any(|p| p.revents != 0) {
                a.drain_wake_sockets();
            }
        }
        if let Err(e) = r {
            drop(armed);
            b.restore();
            return Err(e);
        }
    }
}
