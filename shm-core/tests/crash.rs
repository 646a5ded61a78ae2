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
    die_at_n(point, 1, f)
}

/// [`die_at`] the `n`-th time the child gets to `point`.
fn die_at_n(point: &str, n: i64, f: impl FnOnce()) {
    let pid = in_child(|| {
        shm_core::arm_crash_point(point, n);
        f();
        3
    });
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL, "child did not die at {point}: status {st:#x}");
}

/// Whether `f`, run in a child process, returns true within `secs`
/// seconds (a child still running then is killed).
fn finishes_within(secs: u64, f: impl FnOnce() -> bool) -> bool {
    let pid = in_child(|| if f() { 0 } else { 1 });
    let mut st = 0;
    for _ in 0..secs * 100 {
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) } == pid {
            return libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: our own child, still running.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut st, 0);
    }
    false
}

/// Forks a child that runs `f` and exits with the status it returns.
fn in_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `f` and exits; it shares nothing with
    // the test harness threads that it could corrupt.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let status = f();
        // SAFETY: leaving the child without running the parent's atexit.
        unsafe { libc::_exit(status) };
    }
    pid
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

/// txn rule 9: a recovery that keeps failing (here: its recoverer killed
/// in the middle, three times) is not retried forever by every later
/// locker; the domain is quarantined and every call fails cleanly.
#[test]
fn recovery_that_keeps_failing_quarantines_the_domain() {
    // Counted recoveries must be this test's own: no watcher may recover
    // anything meanwhile.
    if !alone("recovery_that_keeps_failing_quarantines_the_domain") {
        return;
    }
    let bus = Bus::new("crash-quarantine");
    bus.expect_damage();
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    die_at("commit-before", || {
        let _ = a.send(&[hb], b"lost");
    });
    for _ in 0..3 {
        die_at("recovering", || {
            let _ = a.send(&[hb], b"never");
        });
    }
    assert_eq!(a.send(&[hb], b"refused"), Err(Errno::ENOTRECOVERABLE));
    assert_eq!(b.recv().err(), Some(Errno::ENOTRECOVERABLE));
    assert!(a.peer.domain().stats().is_err());
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

/// Receives one message at each of `rs`: Some(payload) (its slice
/// released) or None for EAGAIN.
fn take_each(rs: &[P1]) -> Vec<Option<Vec<u8>>> {
    rs.iter()
        .map(|x| match x.recv() {
            Ok(m) => {
                x.slice_release(m.m.offset).unwrap();
                Some(m.payload)
            }
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN);
                None
            }
        })
        .collect()
}

/// After a dead sender: every receiver's queue goes on in order, and its
/// pool is empty again (the next message lands at offset 0).
fn queues_go_on(a: &P1, rs: &[P1], ids: &[u64], what: &str) {
    a.send(ids, b"next").unwrap();
    for x in rs {
        let m = x.recv().unwrap();
        assert_eq!(m.payload, b"next", "{what}");
        assert_eq!(m.m.offset, 0, "{what}: a slice leaked");
        x.slice_release(m.m.offset).unwrap();
        assert_eq!(x.recv().err(), Some(Errno::EAGAIN), "{what}");
    }
}

/// The data path (no handles, no fds): a multicast to three receivers
/// whose sender is killed at any of its points is delivered whole or not
/// at all. Before its entries are staged it is undone (its prepared
/// records are invisible, and given back by whoever needs them or looks);
/// from the first staged entry on, the first receiver that meets one
/// finishes the commit, so no queue waits for the dead sender.
#[test]
fn data_path_multicast_killed_at_each_point_is_all_or_nothing() {
    let points = [
        ("send-resolving", 1, false),
        ("send-prepared", 2, false),
        ("send-copying", 2, false),
        ("send-copied", 3, false),
        ("send-append", 1, true),
        ("send-staged", 1, true),
        ("send-sealed", 1, true),
        ("commit-op", 2, true),
    ];
    for (point, n, delivered) in points {
        let what = format!("{point}:{n}");
        let bus = Bus::new("crash-data-mc");
        let a = bus.peer();
        let rs: Vec<P1> = (0..3).map(|_| bus.peer()).collect();
        let ids: Vec<u64> = rs.iter().map(|x| x.transfer(0x100, &a).unwrap()).collect();
        // warm up (records, shares), so that the heap is what it will be
        a.send(&ids, b"warm").unwrap();
        assert!(take_each(&rs).iter().all(|m| m.as_deref() == Some(&b"warm"[..])));
        let stats = a.peer.domain().stats().unwrap();
        die_at_n(point, n, || {
            let _ = a.send_full(0, &ids, &[b"two ", b"halves"], &[], &[], 0);
        });
        let got = take_each(&rs);
        let want = if delivered { Some(b"two halves".to_vec()) } else { None };
        assert!(got.iter().all(|m| *m == want), "{what}: {got:?}");
        queues_go_on(&a, &rs, &ids, &what);
        let after = a.peer.domain().stats().unwrap();
        assert_eq!(after.live_bytes, stats.live_bytes, "{what}: leaked");
    }
}

/// The same for a unicast, whose commit is one section of the receiver:
/// a small one (read first, then prepared and committed in one section)
/// and one too large for that (prepared, copied with no lock, committed).
#[test]
fn data_path_unicast_killed_at_each_point_is_all_or_nothing() {
    let points = [
        ("send-prepared", false),
        ("send-copied", false),
        ("commit-before", false),
        ("commit-after", true),
    ];
    let large = vec![7u8; 5000];
    for ((point, delivered), payload) in points.iter().flat_map(|p| [(*p, &b"one"[..]), (*p, &large[..])]) {
        let bus = Bus::new("crash-data-uc");
        let a = bus.peer();
        let rs = vec![bus.peer()];
        let ids = vec![rs[0].transfer(0x100, &a).unwrap()];
        a.send(&ids, b"warm").unwrap();
        take_each(&rs);
        let stats = a.peer.domain().stats().unwrap();
        die_at(point, || {
            let _ = a.send(&ids, payload);
        });
        let what = format!("{point} ({} bytes)", payload.len());
        let got = take_each(&rs);
        assert_eq!(got[0].is_some(), delivered, "{what}");
        if delivered {
            assert_eq!(got[0].as_deref(), Some(payload), "{what}");
        }
        queues_go_on(&a, &rs, &ids, &what);
        assert_eq!(a.peer.domain().stats().unwrap().live_bytes, stats.live_bytes, "{what}: leaked");
    }
}

/// A dead sender's prepared record holds the receiver's quota: the next
/// sender that finds the quota exhausted takes it back and succeeds.
#[test]
fn dead_senders_prepared_room_is_taken_back_by_the_next_sender() {
    let bus = Bus::new("crash-data-room");
    let a = bus.peer();
    let c = bus.peer();
    let r = bus.peer();
    let ha = r.transfer(0x100, &a).unwrap();
    let hc = r.transfer(0x100, &c).unwrap();
    r.limits(2, u32::MAX, u32::MAX, u32::MAX).unwrap();
    // the limit lets one message of this user in, not two
    c.send(&[hc], b"one").unwrap();
    assert_eq!(c.send(&[hc], b"two"), Err(Errno::EDQUOT));
    let m = r.recv().unwrap();
    r.slice_release(m.m.offset).unwrap();
    // too large for a direct unicast: its record is prepared before the copy
    die_at("send-copied", || {
        let _ = a.send(&[ha], &[0u8; 5000]);
    });
    c.send(&[hc], b"got through").unwrap();
    assert_eq!(r.recv().unwrap().payload, b"got through");
}

/// A RECV of the data path killed after its commit: the message is taken
/// (its slice published, as if the process had died right after the call
/// returned); the queue and the lock go on.
#[test]
fn data_path_recv_killed_after_commit() {
    let bus = Bus::new("crash-data-recv");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send(&[hb], b"first").unwrap();
    a.send(&[hb], b"second").unwrap();
    die_at("recv-committed", || {
        let _ = b.recv();
    });
    let m = b.recv().unwrap();
    assert_eq!(m.payload, b"second");
    // the first one's slice is published at 0 and can be released
    b.slice_release(0).unwrap();
    b.slice_release(m.m.offset).unwrap();
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    queues_go_on(&a, &[b], &[hb], "recv-committed");
}

/// A SLICE_RELEASE the locked way killed after its commit: the slice is
/// free. (It goes the locked way because its slice lies beyond the pool's
/// first MiB, so that its release may owe pages back; the ring's own case
/// follows below.)
#[test]
fn data_path_slice_release_killed_after_commit() {
    let bus = Bus::new("crash-data-release");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send(&[hb], &vec![0u8; 1 << 20]).unwrap();
    a.send(&[hb], b"first").unwrap();
    let filler = b.recv().unwrap();
    let m = b.recv().unwrap();
    assert!(m.m.offset >= 1 << 20, "the slice lies in the first MiB: {:#x}", m.m.offset);
    die_at("release-committed", || {
        let _ = b.slice_release(m.m.offset);
    });
    assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO));
    b.slice_release(filler.m.offset).unwrap();
    queues_go_on(&a, &[b], &[hb], "release-committed");
}

/// Two peers, A sending to B, with two messages queued at B and the first
/// received (its slice published): B's next SLICE_RELEASE of it goes
/// through the release ring.
fn backlog_of_two(bus: &Bus) -> (P1, P1, u64, Msg) {
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send(&[hb], b"first").unwrap();
    a.send(&[hb], b"second").unwrap();
    let m = b.recv().unwrap();
    (a, b, hb, m)
}

/// B receives the second message and releases it; then the queues go on.
fn second_then_on(a: &P1, b: P1, hb: u64, what: &str) {
    let second = b.recv().unwrap();
    assert_eq!(second.payload, b"second", "{what}");
    b.slice_release(second.m.offset).unwrap();
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN), "{what}");
    queues_go_on(a, &[b], &[hb], what);
}

/// A SLICE_RELEASE through the release ring (the queue holds a message)
/// killed after its commit, holding the release lock: the lock is
/// recovered, the release stands (a second one is ENXIO) and is applied
/// by the next holder of the peer lock, whose slice lands in its room.
#[test]
fn ring_release_killed_after_commit_stands() {
    let bus = Bus::new("crash-ring-release");
    let (a, b, hb, m) = backlog_of_two(&bus);
    die_at("release-committed", || {
        let _ = b.slice_release(m.m.offset);
    });
    assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO));
    second_then_on(&a, b, hb, "release-committed (ring)");
}

/// The same with the queue empty: a receiver that keeps up releases
/// through the ring too (its slice lies in the pool's first MiB, so the
/// release owes no pages back). Killed after the commit, the release
/// stands, and the next message takes its room.
#[test]
fn ring_release_with_an_empty_queue_killed_after_commit_stands() {
    let bus = Bus::new("crash-ring-release-empty");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    a.send(&[hb], b"only").unwrap();
    let m = b.recv().unwrap();
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    die_at("release-committed", || {
        let _ = b.slice_release(m.m.offset);
    });
    assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO));
    queues_go_on(&a, &[b], &[hb], "release-committed (ring, empty queue)");
}

/// A peer record taken over from a peer that went away keeps its release
/// lock a robust mutex: a releaser killed holding it wedges nobody.
#[test]
fn ring_release_on_a_reused_peer_record_survives_a_killed_holder() {
    let bus = Bus::new("crash-ring-reused");
    for _ in 0..3 {
        // peers that come and go leave their records to the next ones
        drop((bus.peer(), bus.peer()));
        let (a, b, hb, m) = backlog_of_two(&bus);
        die_at("release-committed", || {
            let _ = b.slice_release(m.m.offset);
        });
        // the release lock the dead child held is recovered, not waited
        // for (tried in a child first, which a wedge cannot take along)
        let off = m.m.offset;
        assert!(
            finishes_within(20, || b.slice_release(off) == Err(Errno::ENXIO)),
            "SLICE_RELEASE wedged on a dead holder's release lock, or was not ENXIO"
        );
        assert_eq!(b.slice_release(off), Err(Errno::ENXIO));
        second_then_on(&a, b, hb, "release-committed (reused record)");
    }
}

/// A sender killed in the receiver's section while applying a release from
/// the ring: the next holder rebuilds and applies the entry again, which
/// finds it done; nothing is freed twice or leaked.
#[test]
fn ring_release_applier_killed_midway() {
    // No watcher: its periodic look at the pool would apply the entry first.
    if !alone("ring_release_applier_killed_midway") {
        return;
    }
    let bus = Bus::new("crash-ring-apply");
    let (a, b, hb, m) = backlog_of_two(&bus);
    b.slice_release(m.m.offset).unwrap();
    // queued, not applied yet: releasing it again is ENXIO all the same
    assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO));
    die_at("release-applied", || {
        let _ = a.send(&[hb], b"lost or not");
    });
    assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO));
    // the killed SEND had not committed its message: only "second" is there
    second_then_on(&a, b, hb, "release-applied");
}

/// A receiver torn down while a sender (stopped, then killed) had a record
/// prepared for it stays a zombie until that record is gone; then
/// everything of it goes, its own handle of the node the record was
/// addressed to included.
#[test]
fn zombie_receiver_of_a_dead_sender_leaves_nothing_behind() {
    // The receiver's close must be the last of its socket: a child another
    // test forks meanwhile would hold a copy of its fd, and the teardown
    // (with its NODE_DESTROY) would wait for that child's death.
    if !alone("zombie_receiver_of_a_dead_sender_leaves_nothing_behind") {
        return;
    }
    let bus = Bus::new("crash-zombie");
    let a = bus.peer();
    let mut gone = Vec::new();
    for crash in [false, true] {
        let b = bus.peer();
        let hb = b.transfer(0x100, &a).unwrap();
        a.send(&[hb], b"warm").unwrap();
        let m = b.recv().unwrap();
        b.slice_release(m.m.offset).unwrap();
        let before = a.peer.domain().stats().unwrap().live_bytes;
        let pid = if crash {
            // SAFETY: the child only uses the bus, then stops or exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // b's last fd is the parent's
                // SAFETY: closing the child's copy of a descriptor.
                unsafe { libc::close(b.fd) };
                shm_core::arm_park_point("send-copied", 1);
                let _ = a.send(&[hb], b"in flight");
                // SAFETY: leaving the child.
                unsafe { libc::_exit(0) };
            }
            let mut st = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) };
            assert!(libc::WIFSTOPPED(st));
            pid
        } else {
            0
        };
        drop(b);
        if crash {
            // SAFETY: killing and reaping our own stopped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        let m = a.recv().unwrap_or_else(|e| panic!("crash {crash}: {e:?}"));
        assert_eq!((m.m.r#type, m.m.destination), (BUS1_MSG_NODE_DESTROY, hb));
        a.release(hb).unwrap();
        let after = a.peer.domain().stats().unwrap().live_bytes;
        gone.push(before - after);
    }
    assert_eq!(gone[0], gone[1], "the zombie left something behind");
}

/// What the receivers of a data-path SEND do while its sender is dead (or
/// stopped) in the middle of it, before anyone finished or undid it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Meanwhile {
    /// NODES_DESTROY of the node the message is addressed to, then
    /// HANDLE_RELEASE of the receiver's own handle of it.
    DestroyAndRelease,
    /// PEER_RESET with FLUSH.
    Flush,
    /// PEER_DISCONNECT (the last close follows later).
    Disconnect,
    /// The last close of a connected peer (its teardown).
    Close,
}

/// How the sender is caught in the middle of its SEND.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caught {
    /// Killed at the point; the receivers act afterwards.
    Killed,
    /// Stopped at the point while the receivers act, then killed.
    Stopped,
}

fn consistent(bus: &Bus, what: &str) {
    let report = shm_core::Domain::attach(&bus.dir).unwrap().check_invariants();
    assert!(report.is_empty(), "{what}: invariants violated:\n{}", report.join("\n"));
}

/// A child that runs `f` and stops (SIGSTOP) at `point`; returns its pid
/// once it is stopped. It closes `fds` first, so that the parent's close of
/// them is their last.
fn stopped_at(point: &str, n: i64, fds: &[i32], f: impl FnOnce()) -> i32 {
    // SAFETY: the child only uses the bus, then stops or exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        for &fd in fds {
            // SAFETY: closing the child's copy of a descriptor.
            unsafe { libc::close(fd) };
        }
        shm_core::arm_park_point(point, n);
        f();
        // SAFETY: leaving the child without running the parent's atexit.
        unsafe { libc::_exit(3) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) };
    assert!(libc::WIFSTOPPED(st), "child did not stop at {point}: status {st:#x}");
    pid
}

fn kill_stopped(pid: i32) {
    // SAFETY: killing and reaping our own stopped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Takes the sender's notifications of the receivers' nodes and lets go
/// of its handles of them (which keep the nodes until then).
fn drain_notifications(a: &P1, what: &str) {
    loop {
        match a.recv() {
            Ok(m) => {
                assert_eq!(m.m.r#type, BUS1_MSG_NODE_DESTROY, "{what}");
                a.release(m.m.destination).unwrap();
            }
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN, "{what}");
                return;
            }
        }
    }
}

/// A data-path SEND (multicast to three receivers, or unicast) whose
/// sender dies at each of its points while its receivers destroy the
/// node, flush, disconnect or go away: right after the death, after what
/// the receivers do, and after the recovery the watcher would run, the
/// bus is consistent; once the receivers are closed, nothing of them is
/// left, and the sender goes on.
#[test]
fn receivers_torn_down_under_a_dead_data_path_sender() {
    // Nothing may recover the dead sender's transaction in the background
    // before the receivers act: no watcher, and no other test's forks
    // holding copies of the receivers' fds.
    if !alone("receivers_torn_down_under_a_dead_data_path_sender") {
        return;
    }
    // (point, which time, multicast, whether no lock is held there)
    let points = [
        ("send-resolving", 1, true, false),
        ("send-prepared", 2, true, false),
        ("send-copying", 2, true, true),
        ("send-copied", 3, true, true),
        ("send-append", 1, true, false),
        ("send-staged", 1, true, true),
        ("send-sealed", 1, true, true),
        ("commit-op", 2, true, false),
        ("send-prepared", 1, false, false),
        ("send-copied", 1, false, true),
        ("commit-before", 1, false, false),
        ("commit-after", 1, false, false),
    ];
    // A unicast too large for the direct path (prepared in its slot,
    // copied, committed) at every point, and a small one (prepared and
    // committed in one section) at the points it has.
    let large = vec![7u8; 5000];
    let points = points.iter().map(|&(point, n, multicast, lock_free)| (point, n, multicast, lock_free, !multicast)).chain(
        [("send-prepared", 1), ("commit-before", 1), ("commit-after", 1)].into_iter().map(|(point, n)| (point, n, false, false, false)),
    );
    let actions = [Meanwhile::DestroyAndRelease, Meanwhile::Flush, Meanwhile::Disconnect, Meanwhile::Close];
    for (point, n, multicast, lock_free, is_large) in points {
        for caught in [Caught::Killed, Caught::Stopped] {
            if caught == Caught::Stopped && !lock_free {
                // The receivers would wait for the stopped sender's lock.
                continue;
            }
            for meanwhile in actions {
                let what = format!("{point}:{n} {} {caught:?} {meanwhile:?}", if multicast { "multicast" } else if is_large { "large unicast" } else { "small unicast" });
                let bus = Bus::new("crash-data-teardown");
                let a = bus.peer();
                let dom = a.peer.domain().clone();
                let k = if multicast { 3 } else { 1 };
                // A round with no crash first, so that the sender's own
                // memory (its arena, ID table, shares) is what it will be.
                let mut baseline = None;
                let (mut rs, ids) = loop {
                    let rs: Vec<P1> = (0..k).map(|_| bus.peer()).collect();
                    let ids: Vec<u64> = rs.iter().map(|x| x.transfer(0x100, &a).unwrap()).collect();
                    a.send(&ids, b"warm").unwrap();
                    assert!(take_each(&rs).iter().all(|m| m.as_deref() == Some(&b"warm"[..])), "{what}");
                    if baseline.is_some() {
                        break (rs, ids);
                    }
                    drop(rs);
                    drain_notifications(&a, &what);
                    baseline = Some(dom.stats().unwrap());
                };
                let baseline = baseline.unwrap();
                let send = || {
                    let _ = if is_large { a.send(&ids, &large) } else { a.send_full(0, &ids, &[b"two ", b"halves"], &[], &[], 0) };
                };
                let stopped = match caught {
                    Caught::Killed => {
                        die_at_n(point, n, send);
                        consistent(&bus, &format!("{what}: after the kill"));
                        None
                    }
                    Caught::Stopped => Some(stopped_at(point, n, &rs.iter().map(|x| x.fd).collect::<Vec<_>>(), send)),
                };
                match meanwhile {
                    Meanwhile::DestroyAndRelease => {
                        for x in &rs {
                            x.destroy(&[0x100], 0).unwrap();
                            x.release(0x100).unwrap();
                        }
                    }
                    Meanwhile::Flush => rs.iter().for_each(|x| x.reset(BUS1_PEER_RESET_FLAG_FLUSH).unwrap()),
                    Meanwhile::Disconnect => rs.iter().for_each(|x| x.peer.disconnect(x.fd, 0).unwrap()),
                    Meanwhile::Close => rs.clear(),
                }
                consistent(&bus, &format!("{what}: after the receivers acted"));
                if let Some(pid) = stopped {
                    kill_stopped(pid);
                    consistent(&bus, &format!("{what}: after the kill"));
                }
                // What the watcher does: dead senders' slots, then what
                // transactions are left to finish, then dead peers.
                dom.reap_dead_peers();
                dom.stats().unwrap();
                consistent(&bus, &format!("{what}: after the recovery"));
                rs.clear();
                let after = dom.stats().unwrap();
                consistent(&bus, &format!("{what}: after the receivers' close"));
                drain_notifications(&a, &what);
                let after_release = dom.stats().unwrap();
                assert_eq!((after_release.peers, after_release.live_bytes), (baseline.peers, baseline.live_bytes), "{what}: the receivers left something behind (before the sender let go: {after:?})");
                // and the sender goes on
                let c = bus.peer();
                let hc = c.transfer(0x100, &a).unwrap();
                a.send(&[hc], b"next").unwrap();
                assert_eq!(c.recv().unwrap().payload, b"next", "{what}");
            }
        }
    }
}

/// A torn-down receiver whose only records are a dead sender's prepared
/// one (pointing at the receiver's orphaned handle), and a recoverer that
/// dies inside the receiver's section while rolling that record back: the
/// next recoverer rebuilds the receiver and counts the orphan's references
/// from the records alone, so the orphan and the peer are freed once the
/// record is gone.
#[test]
fn recoverer_dies_rolling_back_a_torn_down_receivers_record() {
    if !alone("recoverer_dies_rolling_back_a_torn_down_receivers_record") {
        return;
    }
    recoverer_dies_under_a_torn_down_receiver("rollback-record", "crash-rebuild-orphan");
}

/// The same with the recoverer killed after the record's state store and
/// before the orphan's count update: the rebuild sees no record for the
/// orphan, and the count is taken again from the records when the
/// torn-down receiver is collected, which frees the orphan.
#[test]
fn recoverer_dies_between_a_records_state_and_its_orphans_count() {
    if !alone("recoverer_dies_between_a_records_state_and_its_orphans_count") {
        return;
    }
    recoverer_dies_under_a_torn_down_receiver("orphan-unref", "crash-orphan-unref");
}

fn recoverer_dies_under_a_torn_down_receiver(point: &str, name: &str) {
    let bus = Bus::new(name);
    let a = bus.peer();
    let dom = a.peer.domain().clone();
    // a round with no crash first, so that the sender's own memory (its
    // arena, ID table, shares) is what it will be
    let warm = |a: &P1| {
        let rs = vec![bus.peer()];
        let ids = vec![rs[0].transfer(0x100, a).unwrap()];
        a.send(&ids, b"warm").unwrap();
        take_each(&rs);
        (rs, ids)
    };
    drop(warm(&a));
    drain_notifications(&a, "rebuild-orphan warm-up");
    let baseline = dom.stats().unwrap();
    let (mut rs, ids) = warm(&a);
    // too large for a direct unicast: prepared in its slot, then the sender dies
    die_at("send-prepared", || {
        let _ = a.send(&ids, &[7u8; 5000]);
    });
    rs.clear();
    consistent(&bus, "after the receiver's close");
    // the first recoverer dies inside the receiver's section
    die_at(point, || {
        let _ = dom.stats();
    });
    dom.stats().unwrap();
    consistent(&bus, "after the second recovery");
    dom.reap_dead_peers();
    drain_notifications(&a, "rebuild-orphan");
    consistent(&bus, "after the collection");
    let after = dom.stats().unwrap();
    assert_eq!((after.peers, after.live_bytes), (baseline.peers, baseline.live_bytes), "{point}: the receiver was left behind: {after:?}");
    let c = bus.peer();
    let hc = c.transfer(0x100, &a).unwrap();
    a.send(&[hc], b"next").unwrap();
    assert_eq!(c.recv().unwrap().payload, b"next");
}
