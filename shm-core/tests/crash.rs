//! Crash recovery: a process killed inside a critical section leaves a bus
//! the next caller can use, with the dead transaction rolled back (or, past
//! its commit point, fully applied).

mod common;
use common::*;
use shm_core::Errno;
use uapi::*;

/// Runs `f` in a child process that dies at crash point `point`; returns
/// once the child is gone (it must have been killed by SIGKILL).
fn die_at(point: &str, f: impl FnOnce()) {
    // SAFETY: the child only runs `f` and exits; it shares nothing with
    // the test harness threads that it could corrupt.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        shm_core::arm_crash_point(point, 1);
        f();
        // SAFETY: leaving the child without running the parent's atexit.
        unsafe { libc::_exit(3) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL, "child did not die at {point}: status {st:#x}");
}

#[test]
fn send_killed_before_commit_is_rolled_back() {
    for point in ["send-copied", "send-append", "commit-before"] {
        let bus = Bus::exact("crash-send");
        let a = bus.peer();
        let b = bus.peer();
        let hb = b.transfer(0x100, &a).unwrap();
        let stats = a.peer.domain().stats().unwrap();
        die_at(point, || {
            let _ = a.send_h(&[hb], b"lost", &[0x200]);
        });
        // the lock is usable and the message never happened
        assert_eq!(b.recv().err(), Some(Errno::EAGAIN), "{point}");
        assert!(!b.readable(), "{point}: readable after the rollback");
        assert!(!b.socket_readable(), "{point}: stale token after resync");
        assert_eq!(a.release(0x200), Err(Errno::EBUSY), "{point}: provisional node survived");
        let after = a.peer.domain().stats().unwrap();
        assert_eq!(after.recoveries, stats.recoveries + 1, "{point}");
        assert_eq!(after.live_bytes, stats.live_bytes, "{point}: leaked");
        // and the bus still works
        a.send(&[hb], b"next").unwrap();
        assert_eq!(b.recv().unwrap().payload, b"next", "{point}");
    }
}

#[test]
fn send_killed_after_commit_is_complete() {
    let bus = Bus::exact("crash-after");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    die_at("commit-after", || {
        let _ = a.send(&[hb], b"kept");
    });
    assert!(b.readable());
    // the token the dead sender owed is sent by the wake-up tick (the
    // watcher's, or the one run here)
    let dom = b.peer.domain().clone();
    assert!((0..50).any(|_| {
        dom.wake_tick();
        b.socket_readable_within(40)
    }), "owed token never made good");
    assert_eq!(b.recv().unwrap().payload, b"kept");
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
}

#[test]
fn recv_killed_mid_install_leaves_the_message_queued() {
    let bus = Bus::exact("crash-recv");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send_h(&[hb], b"again", &[0x200]).unwrap();
    die_at("recv-installed", || {
        let _ = b.recv();
    });
    assert!(b.readable());
    assert!(b.socket_readable());
    let m = b.recv().unwrap();
    assert_eq!(m.payload, b"again");
    // the ID assigned by the dead RECV was rolled back too
    assert_eq!(m.handles, vec![0xB]);
}

#[test]
fn flush_killed_midway_is_rolled_back() {
    let bus = Bus::new("crash-flush");
    let a = bus.peer();
    let b = bus.peer();
    let hb = a.transfer(0x100, &b).unwrap();
    b.send(&[hb], b"queued").unwrap();
    die_at("flush-dropped", || {
        let _ = a.reset(BUS1_PEER_RESET_FLAG_FLUSH);
    });
    // nothing was destroyed or dropped
    assert_eq!(a.recv().unwrap().payload, b"queued");
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    b.send(&[hb], b"still alive").unwrap();
    assert_eq!(a.recv().unwrap().payload, b"still alive");
}

#[test]
fn last_holder_killed_peer_is_torn_down() {
    let bus = Bus::new("crash-holder");
    let a = bus.peer();
    let b = bus.peer();
    let hb = a.transfer(0x100, &b).unwrap();
    // a child opens a peer, shares a node with b through a, and is killed
    // SAFETY: the child only uses the bus and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let c = bus.peer();
        let hc_in_b = c.transfer(0x300, &b).unwrap();
        assert_eq!(hc_in_b, 0x13);
        // SAFETY: sending ourselves SIGKILL.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    // the dead peer's socket is gone; a scan (which the watcher thread
    // runs periodically) tears it down
    a.peer.domain().reap_dead_peers();
    let m = b.recv().unwrap();
    assert_eq!((m.m.r#type, m.m.destination), (BUS1_MSG_NODE_DESTROY, 0x13));
    let _ = hb;
}

/// txn rule 8: a waiter killed right after an unlock woke it takes that
/// wake-up with it. If the lock was meanwhile taken by a newcomer (which
/// does not mark it contended), the other sleepers would never be woken;
/// they must still get the lock once it is free.
#[test]
fn waiter_killed_after_its_wake_up_does_not_strand_the_others() {
    let bus = Bus::new("crash-wakeup");
    let a = bus.peer();
    let dom = a.peer.domain().clone();
    for round in 0..20 {
        let held = dom.lock().unwrap();
        let mut kids = Vec::new();
        for _ in 0..4 {
            // SAFETY: the child only takes and drops the domain lock.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let ok = dom.lock().map(|tx| tx.abort()).is_ok();
                // SAFETY: leaving the child without the parent's atexit.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            kids.push(pid);
        }
        // Let them all fall asleep on the lock.
        std::thread::sleep(std::time::Duration::from_millis(30));
        // Wake one, take the lock again at once, kill every sleeper but
        // the first: the woken one is likely among the dead.
        held.abort();
        let again = dom.lock().unwrap();
        for &k in &kids[1..] {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
        for &k in &kids[1..] {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(k, core::ptr::null_mut(), 0) };
        }
        again.abort();
        // The survivor must get the lock and exit within a bounded time.
        let mut st = 0;
        let mut done = false;
        for _ in 0..400 {
            // SAFETY: polling our own child.
            if unsafe { libc::waitpid(kids[0], &mut st, libc::WNOHANG) } == kids[0] {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if !done {
            // SAFETY: cleaning up our own child before failing.
            unsafe {
                libc::kill(kids[0], libc::SIGKILL);
                libc::waitpid(kids[0], core::ptr::null_mut(), 0);
            }
        }
        assert!(done, "round {round}: a waiter was stranded on a free lock");
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "round {round}: status {st:#x}");
    }
    // and the bus still works
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send(&[hb], b"after").unwrap();
    assert_eq!(b.recv().unwrap().payload, b"after");
}

/// A final latch killed after the pool grew is rolled back: the peer is
/// undetermined again with the small pool (its file may stay longer,
/// which is harmless), and the next final RECV latches and grows it.
#[test]
fn latch_killed_before_commit_is_rolled_back() {
    let bus = Bus::new("crash-latch");
    let a = bus.peer();
    a.send(&[0x100], b"queued").unwrap();
    let stats = a.peer.domain().stats().unwrap();
    die_at("latch-grown", || {
        let _ = a.peer.recv_final(a.fd, 0, shm_core::POOL_SIZE_FINAL);
    });
    assert_eq!(a.peer.abi(), Ok(None));
    let after = a.peer.domain().stats().unwrap();
    assert_eq!(after.recoveries, stats.recoveries + 1);
    assert_eq!(after.live_bytes, stats.live_bytes);
    let m = a.peer.recv_final(a.fd, 0, shm_core::POOL_SIZE_FINAL).unwrap();
    assert_eq!(m.n_bytes, 6);
    assert_eq!(a.peer.abi(), Ok(Some(shm_core::Abi::Final)));
}
