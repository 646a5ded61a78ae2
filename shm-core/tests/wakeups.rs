//! Wake-ups: a thread that arms on a peer's bell and sleeps is woken by
//! every change that makes the peer ready, whoever makes it (threads,
//! processes, a dead sender's owed ring made good by the wake-up tick);
//! nobody is rung when nobody sleeps; edge-triggered and one-shot epoll
//! registrations report as the kernel's items would.

mod common;
use common::*;
use shm_core::{Errno, Sleep, WaitSet, EPOLLET, EPOLLONESHOT};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ }
}

/// Waits as a shim wait does (arm, look again, sleep) until `p` is
/// readable; false if `limit` passed first (a lost wake-up when the peer
/// became readable meanwhile).
fn sleep_until_readable(p: &P1, limit: Duration, how: Sleep) -> bool {
    let end = Instant::now() + limit;
    loop {
        if p.readable() {
            return Instant::now() < end;
        }
        let mut set = WaitSet::new();
        p.peer.watch(&mut set);
        let armed = set.arm(how).expect("a waiter slot");
        if p.readable() || armed.rung() {
            continue;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match how {
            Sleep::Futex => armed.futex_sleep(Some(&timespec(left))),
            Sleep::Socket => {
                let mut fds: Vec<libc::pollfd> = armed.wake_fds().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
                // SAFETY: a valid array of pollfds.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, left.as_millis() as i32) };
                if fds.iter().any(|f| f.revents != 0) {
                    armed.drain_wake_sockets();
                }
            }
        }
    }
}

/// A second handle on the same peer for another thread (its own scratch
/// memory; the fd is not closed when it goes away).
fn twin(p: &P1) -> ManuallyDrop<P1> {
    ManuallyDrop::new(P1 { fd: p.fd, peer: p.peer.clone(), mem: shm_core::SimMem::new() })
}

fn woken_by_a_send_from_another_thread(how: Sleep) {
    let bus = Bus::new("wake-thread");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let a2 = twin(&a);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a2.send(&[hb], b"wake").unwrap();
    });
    assert!(sleep_until_readable(&b, Duration::from_secs(5), how), "lost wake-up");
    assert_eq!(b.recv().unwrap().payload, b"wake");
    sender.join().unwrap();
    assert!(!b.peer.has_sleepers(), "a finished wait left its bit armed");
}

#[test]
fn a_futex_sleeper_is_woken_by_a_send() {
    woken_by_a_send_from_another_thread(Sleep::Futex);
}

#[test]
fn a_socket_sleeper_is_woken_by_a_send() {
    woken_by_a_send_from_another_thread(Sleep::Socket);
}

#[test]
fn a_sleeper_is_woken_by_a_disconnect() {
    let bus = Bus::new("wake-hup");
    let b = bus.peer();
    let b2 = twin(&b);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        b2.peer.disconnect(b2.fd, 0).unwrap();
    });
    let end = Instant::now() + Duration::from_secs(5);
    while !b.peer.readiness().hup {
        let mut set = WaitSet::new();
        b.peer.watch(&mut set);
        let armed = set.arm(Sleep::Futex).unwrap();
        if b.peer.readiness().hup || armed.rung() {
            continue;
        }
        assert!(Instant::now() < end, "lost wake-up for the hang-up");
        armed.futex_sleep(Some(&timespec(Duration::from_millis(500))));
    }
    t.join().unwrap();
    let r = b.peer.readiness();
    assert!(r.hup && !r.readable);
}

/// Many senders (threads) and many waiters (threads) on one peer: every
/// message is received exactly once and no waiter ever sleeps through one.
#[test]
fn many_senders_and_waiters_lose_no_wakeup() {
    const SENDERS: u32 = 4;
    const WAITERS: u32 = 3;
    const EACH: u32 = 3000;
    let bus = Bus::new("wake-many");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let got = Arc::new(AtomicU32::new(0));
    let mut threads = Vec::new();
    for w in 0..WAITERS {
        let b2 = twin(&b);
        let got = got.clone();
        threads.push(std::thread::spawn(move || {
            let how = if w % 2 == 0 { Sleep::Futex } else { Sleep::Socket };
            while got.load(Ordering::SeqCst) < SENDERS * EACH {
                match b2.recv() {
                    Ok(m) => {
                        b2.slice_release(m.m.offset).unwrap();
                        got.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Errno::EAGAIN) => {
                        // Others may take what woke us: short sleeps, but
                        // a sleep through a whole second of a non-empty
                        // queue would be a lost wake-up.
                        let _ = sleep_until_readable(&b2, Duration::from_millis(200), how);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for s in 0..SENDERS {
        let a2 = twin(&a);
        threads.push(std::thread::spawn(move || {
            for i in 0..EACH {
                loop {
                    match a2.send(&[hb], &[s as u8, i as u8]) {
                        Err(Errno::EDQUOT) => std::thread::yield_now(),
                        r => break r.unwrap(),
                    }
                }
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }));
    }
    // A watchdog for lost wake-ups: the queue must never stay non-empty
    // with every waiter asleep for long.
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while got.load(Ordering::SeqCst) < SENDERS * EACH {
        std::thread::sleep(Duration::from_millis(20));
        let n = got.load(Ordering::SeqCst);
        if n != last.0 {
            last = (n, Instant::now());
        } else if b.readable() && last.1.elapsed() > Duration::from_secs(3) {
            panic!("no progress for 3 s with messages queued: lost wake-up ({n} received)");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "too slow");
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    assert!(!b.peer.has_sleepers());
}

/// Forks a child running `f`; returns its pid.
fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = f();
        // SAFETY: leaving the child without the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn wait_child(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

/// A waiter in another process sleeps on a futex in the shared segment and
/// is woken by this process's send.
#[test]
fn a_sleeper_in_another_process_is_woken() {
    let bus = Bus::new("wake-proc");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let pid = fork_child(|| {
        if sleep_until_readable(&b, Duration::from_secs(5), Sleep::Futex) && b.recv().is_ok() {
            0
        } else {
            1
        }
    });
    let end = Instant::now() + Duration::from_secs(5);
    while !b.peer.has_sleepers() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    a.send(&[hb], b"across").unwrap();
    let st = wait_child(pid);
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "child not woken: {st:#x}");
}

/// A waiter killed while armed leaves its bit behind: later sends ring it
/// for nothing (no missing ring: a new waiter is still woken), and the
/// slot is freed once its process is found dead.
#[test]
fn a_killed_waiter_costs_extra_rings_only() {
    let bus = Bus::new("wake-killed");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let dom = b.peer.domain().clone();
    let before = dom.waiter_slots_in_use();
    let pid = fork_child(|| {
        sleep_until_readable(&b, Duration::from_secs(30), Sleep::Futex);
        2
    });
    let end = Instant::now() + Duration::from_secs(5);
    while !b.peer.has_sleepers() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(b.peer.has_sleepers());
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(libc::WIFSIGNALED(wait_child(pid)));
    assert!(b.peer.has_sleepers(), "the dead waiter's bit is still there");
    let a2 = twin(&a);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a2.send(&[hb], b"after").unwrap();
    });
    assert!(sleep_until_readable(&b, Duration::from_secs(5), Sleep::Futex), "lost wake-up after a waiter died");
    t.join().unwrap();
    assert_eq!(b.recv().unwrap().payload, b"after");
    assert!(dom.collect_dead_waiters() >= 1);
    assert!(!b.peer.has_sleepers(), "the dead waiter's bit was not cleared");
    assert!(dom.waiter_slots_in_use() <= before + 1, "the dead waiter's slot was not freed");
}

/// A sender killed after its commit, before it rang: the message is there,
/// and the sleeper is woken by the wake-up tick (of this process here),
/// which sees the ring still owed.
#[test]
fn a_ring_owed_by_a_dead_sender_is_made_good() {
    let bus = Bus::new("wake-owed");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let dom = b.peer.domain().clone();
    let b2 = twin(&b);
    let waiter = std::thread::spawn(move || sleep_until_readable(&b2, Duration::from_secs(3), Sleep::Futex));
    let end = Instant::now() + Duration::from_secs(5);
    while !b.peer.has_sleepers() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = fork_child(|| {
        shm_core::arm_crash_point("ring", 1);
        let _ = a.send(&[hb], b"owed");
        3
    });
    let st = wait_child(pid);
    assert!(libc::WIFSIGNALED(st), "the sender did not die at the ring: {st:#x}");
    // The waiter sleeps on: nobody rang. Two ticks see the ring owed.
    dom.wake_tick();
    dom.wake_tick();
    assert!(waiter.join().unwrap(), "the owed ring was not made good");
    assert_eq!(b.recv().unwrap().payload, b"owed");
}

/// Edge-triggered registrations report once per wake-up (message,
/// notification, disconnect) while the event holds; one-shot ones once
/// until modified; level-triggered ones while the state holds.
#[test]
fn epoll_registrations_keep_edges_and_one_shots() {
    let bus = Bus::new("wake-epoll");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let dom = b.peer.domain().clone();
    let inn = libc::EPOLLIN as u32;
    let lt = b.peer.epoll_register(b.fd, inn, 1).unwrap();
    let et = b.peer.epoll_register(b.fd, inn | EPOLLET, 2).unwrap();
    let os = b.peer.epoll_register(b.fd, inn | EPOLLONESHOT, 3).unwrap();
    for g in [&lt, &et, &os] {
        assert_eq!(dom.epoll_take(g), None);
    }
    a.send(&[hb], b"1").unwrap();
    assert_eq!(dom.epoll_take(&lt), Some((inn, 1)));
    assert_eq!(dom.epoll_take(&lt), Some((inn, 1)));
    assert_eq!(dom.epoll_take(&et), Some((inn, 2)));
    assert_eq!(dom.epoll_take(&et), None, "one edge per message");
    assert_eq!(dom.epoll_take(&os), Some((inn, 3)));
    assert_eq!(dom.epoll_take(&os), None);
    a.send(&[hb], b"2").unwrap();
    assert_eq!(dom.epoll_take(&et), Some((inn, 2)), "a second message is a second edge");
    assert_eq!(dom.epoll_take(&os), None, "disarmed until modified");
    dom.epoll_modify(&os, inn | EPOLLONESHOT, 33);
    assert_eq!(dom.epoll_take(&os), Some((inn, 33)));
    b.recv().unwrap();
    b.recv().unwrap();
    assert_eq!(dom.epoll_take(&lt), None);
    assert_eq!(dom.epoll_take(&et), None);
    // An item added while ready reports once, edge-triggered or not.
    a.send(&[hb], b"3").unwrap();
    let late = b.peer.epoll_register(b.fd, inn | EPOLLET, 4).unwrap();
    assert_eq!(dom.epoll_take(&late), Some((inn, 4)));
    assert_eq!(dom.epoll_take(&late), None);
    // Unregistered items report nothing and their tags resolve no more.
    dom.epoll_unregister(&late);
    assert_eq!(dom.epoll_take(&late), None);
    assert_eq!(dom.epoll_lookup(late.tag(), None), None);
    assert_eq!(dom.epoll_lookup(lt.tag(), None), Some(lt));
}
