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
    for point in ["send-copied", "send-append", "commit-op", "commit-before"] {
        let bus = Bus::new("crash-send");
        let a = bus.peer();
        let b = bus.peer();
        let hb = b.transfer(0x100, &a).unwrap();
        let stats = a.peer.domain().stats().unwrap();
        die_at(point, || {
            let _ = a.send_h(&[hb], b"lost", &[0x200]);
        });
        // the lock is usable and the message never happened
        assert_eq!(b.recv().err(), Some(Errno::EAGAIN), "{point}");
        assert!(!b.readable(), "{point}: stale readiness after resync");
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
    let bus = Bus::new("crash-after");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    die_at("commit-after", || {
        let _ = a.send(&[hb], b"kept");
    });
    assert!(b.readable());
    assert_eq!(b.recv().unwrap().payload, b"kept");
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
}

#[test]
fn recv_killed_mid_install_leaves_the_message_queued() {
    let bus = Bus::new("crash-recv");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send_h(&[hb], b"again", &[0x200]).unwrap();
    die_at("recv-installed", || {
        let _ = b.recv();
    });
    assert!(b.readable());
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
