//! A frozen process never freezes the bus: a process stopped (SIGSTOP)
//! inside SEND, RECV or SLICE_RELEASE delays no unicast, multicast or
//! notification between other peers. At the points where it holds no
//! lock, even the queues its operation touches go on (a staged multicast
//! is finished by the first receiver that meets it); inside a peer's
//! section, only that peer's traffic waits for it.

mod common;
use common::*;
use shm_core::Errno;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uapi::*;

/// How long the other peers' traffic may take before the test calls it
/// stuck (and lets the frozen process go so that the test can end).
const STUCK_AFTER: Duration = Duration::from_secs(20);

/// Runs `f` in a child that stops itself at the `n`-th arrival at
/// `point`; returns its pid once it is stopped.
fn park_at(point: &str, n: i64, f: impl FnOnce() -> bool) -> libc::pid_t {
    // SAFETY: the child only uses the bus and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        shm_core::arm_park_point(point, n);
        let ok = f();
        // SAFETY: leaving the child without running the parent's atexit.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED) };
    assert!(libc::WIFSTOPPED(st), "child did not stop at {point}:{n}: status {st:#x}");
    pid
}

/// Lets the frozen child go and checks that its operation succeeded.
fn thaw(pid: libc::pid_t, what: &str) {
    // SAFETY: signalling and waiting for our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let mut st = 0;
    // SAFETY: as above.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{what}: the frozen operation failed: {st:#x}");
}

/// Runs `traffic` while `pid` is frozen; if it takes longer than
/// [`STUCK_AFTER`], the child is let go (so that the traffic can finish)
/// and the case fails.
fn while_frozen(pid: libc::pid_t, what: &str, traffic: impl FnOnce()) {
    let done = Arc::new(AtomicBool::new(false));
    let stuck = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, stuck) = (done.clone(), stuck.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Acquire) {
                if start.elapsed() > STUCK_AFTER {
                    stuck.store(true, Ordering::Release);
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    traffic();
    done.store(true, Ordering::Release);
    watchdog.join().unwrap();
    assert!(!stuck.load(Ordering::Acquire), "{what}: other peers' traffic waited for the frozen process");
}

/// Receives at `x` until a message with `payload` comes (those of the
/// frozen sender, `also`, may come first, each at most once).
fn expect(x: &P1, payload: &[u8], also: &[u8]) -> usize {
    let mut extra = 0;
    loop {
        let m = match x.recv() {
            Ok(m) => m,
            Err(Errno::EAGAIN) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(e) => panic!("recv: {e:?}"),
        };
        if m.m.r#type == BUS1_MSG_DATA {
            x.slice_release(m.m.offset).unwrap();
        }
        if m.payload == payload {
            return extra;
        }
        assert_eq!(m.payload, also, "unexpected message");
        extra += 1;
        assert!(extra <= 1, "the frozen sender's message came twice");
    }
}

/// Receives the notification of `kind` about `id` at `x` (next in line).
fn expect_note(x: &P1, kind: u64, id: u64) {
    let m = loop {
        match x.recv() {
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            r => break r.unwrap(),
        }
    };
    assert_eq!((m.m.r#type, m.m.destination), (kind, id));
}

/// What the frozen process does.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// A multicast to X and Y, and to D when `overlap`.
    Multicast { overlap: bool },
    /// A unicast to X.
    Unicast,
    /// A RECV at X.
    Recv,
    /// A SLICE_RELEASE at X with its queue empty: through the release ring
    /// too (the slice lies in the pool's first MiB: nothing to give back).
    Release,
    /// A SLICE_RELEASE at X while its queue holds a message: through the
    /// release ring, under X's release lock only.
    ReleaseBacklog,
    /// A SLICE_RELEASE at X, queue empty, of a slice beyond the pool's
    /// first MiB (its release may owe pages back): the locked way, under
    /// X's peer lock.
    ReleaseLocked,
    /// A SEND that carries a handle (a transaction) to X.
    Transaction,
}

const FROZEN: &[u8] = b"frozen message";

struct World {
    _bus: Bus,
    f: P1,
    x: P1,
    y: P1,
    c: P1,
    d: P1,
    e: P1,
    /// F's handles of X, Y, D.
    fx: u64,
    fy: u64,
    fd: u64,
    /// C's handles of D and E, and of D's node 0x200.
    cd: u64,
    ce: u64,
    c200: u64,
}

fn world() -> World {
    // No watcher: its wake-up tick (every 40 ms) gives a token to a queue
    // that has none, and a SLICE_RELEASE with a token outstanding goes the
    // locked way, under the peer lock, rather than through the release
    // ring. A tick between a case's set-up and its frozen operation would
    // change the path the case means to test. (Nothing here needs the
    // watcher: no process dies, and every receiver polls.) Set before this
    // process opens its first bus, which is when the watcher starts.
    static NO_WATCHER: std::sync::Once = std::sync::Once::new();
    NO_WATCHER.call_once(|| std::env::set_var("BUS1_NO_WATCHER", "1"));
    let bus = Bus::new("freeze");
    let (f, x, y, c, d, e) = (bus.peer(), bus.peer(), bus.peer(), bus.peer(), bus.peer(), bus.peer());
    let fx = x.transfer(0x100, &f).unwrap();
    let fy = y.transfer(0x100, &f).unwrap();
    let fd = d.transfer(0x100, &f).unwrap();
    let cd = d.transfer(0x100, &c).unwrap();
    let ce = e.transfer(0x100, &c).unwrap();
    let c200 = d.transfer(0x200, &c).unwrap();
    World { _bus: bus, f, x, y, c, d, e, fx, fy, fd, cd, ce, c200 }
}

/// The other peers' traffic: C→D unicast, C→{D,E} multicast, and (unless
/// `no_txn`) a NODE_DESTROY from D to C. Returns how many of the frozen
/// sender's messages D met on the way.
fn traffic(w: &World, no_txn: bool) -> usize {
    let mut met = 0;
    w.c.send(&[w.cd], b"unicast").unwrap();
    met += expect(&w.d, b"unicast", FROZEN);
    w.c.send(&[w.cd, w.ce], b"multicast").unwrap();
    met += expect(&w.d, b"multicast", FROZEN);
    expect(&w.e, b"multicast", b"");
    if !no_txn {
        w.d.destroy(&[0x200], 0).unwrap();
        expect_note(&w.c, BUS1_MSG_NODE_DESTROY, w.c200);
        expect_note(&w.d, BUS1_MSG_NODE_DESTROY, 0x200);
    }
    met
}

fn case(point: &str, n: i64, op: Op) {
    let what = format!("{op:?} frozen at {point}:{n}");
    let w = world();
    // warm every path up, so that nothing needs room meanwhile
    let dests = |overlap: bool| if overlap { vec![w.fx, w.fy, w.fd] } else { vec![w.fx, w.fy] };
    w.f.send(&dests(true), b"warm").unwrap();
    for p in [&w.x, &w.y, &w.d] {
        expect(p, b"warm", b"");
    }
    w.c.send(&[w.cd, w.ce], b"warm").unwrap();
    expect(&w.d, b"warm", b"");
    expect(&w.e, b"warm", b"");
    let mut published = 0;
    let mut filler = 0;
    match op {
        Op::Recv => w.f.send(&[w.fx], FROZEN).unwrap(),
        Op::Release => {
            w.f.send(&[w.fx], FROZEN).unwrap();
            published = w.x.recv().unwrap().m.offset;
        }
        Op::ReleaseBacklog => {
            w.f.send(&[w.fx], FROZEN).unwrap();
            w.f.send(&[w.fx], FROZEN).unwrap();
            published = w.x.recv().unwrap().m.offset;
        }
        Op::ReleaseLocked => {
            w.f.send(&[w.fx], &vec![0u8; 1 << 20]).unwrap();
            w.f.send(&[w.fx], FROZEN).unwrap();
            filler = w.x.recv().unwrap().m.offset;
            published = w.x.recv().unwrap().m.offset;
            assert!(published >= 1 << 20, "{what}: the slice lies in the first MiB");
        }
        _ => {}
    }
    let pid = park_at(point, n, || match op {
        Op::Multicast { overlap } => w.f.send_full(0, &dests(overlap), &[b"frozen ", b"message"], &[], &[], 0).is_ok(),
        Op::Unicast => w.f.send(&[w.fx], FROZEN).is_ok(),
        Op::Recv => w.x.recv().is_ok_and(|m| m.payload == FROZEN),
        Op::Release | Op::ReleaseBacklog | Op::ReleaseLocked => w.x.slice_release(published).is_ok(),
        Op::Transaction => w.f.send_h(&[w.fx], FROZEN, &[0x300]).is_ok(),
    });
    let mut met = 0;
    while_frozen(pid, &what, || {
        met = traffic(&w, matches!(op, Op::Transaction));
        if matches!(op, Op::Release | Op::ReleaseBacklog) {
            // X's own senders do not wait for its release lock either.
            w.f.send(&[w.fx], b"during").unwrap();
        }
    });
    thaw(pid, &what);
    // the frozen operation took effect exactly once
    match op {
        Op::Multicast { overlap } => {
            expect(&w.x, FROZEN, b"");
            expect(&w.y, FROZEN, b"");
            if overlap && met == 0 {
                expect(&w.d, FROZEN, b"");
            }
        }
        Op::Unicast | Op::Transaction => {
            expect(&w.x, FROZEN, b"");
        }
        Op::Recv => assert_eq!(w.x.recv().err(), Some(Errno::EAGAIN), "{what}"),
        Op::Release | Op::ReleaseBacklog => {
            assert_eq!(w.x.slice_release(published), Err(Errno::ENXIO), "{what}");
            if matches!(op, Op::ReleaseBacklog) {
                expect(&w.x, FROZEN, b"");
            }
            expect(&w.x, b"during", b"");
            // the frozen release's room was given back: the next message
            // lands where the released one was
            w.f.send(&[w.fx], b"again").unwrap();
            let m = w.x.recv().unwrap();
            assert_eq!((m.payload.as_slice(), m.m.offset), (&b"again"[..], published), "{what}");
            w.x.slice_release(m.m.offset).unwrap();
        }
        Op::ReleaseLocked => {
            assert_eq!(w.x.slice_release(published), Err(Errno::ENXIO), "{what}");
            w.x.slice_release(filler).unwrap();
            // both rooms were given back: a message spanning them lands at
            // the pool's start
            let long = vec![7u8; published as usize + FROZEN.len()];
            w.f.send(&[w.fx], &long).unwrap();
            let m = w.x.recv().unwrap();
            assert_eq!((m.payload.len(), m.m.offset), (long.len(), filler), "{what}");
            w.x.slice_release(m.m.offset).unwrap();
        }
    }
    for (name, p) in [("X", &w.x), ("Y", &w.y), ("D", &w.d), ("E", &w.e), ("C", &w.c)] {
        if let Ok(m) = p.recv() {
            panic!("{what}: left over at {name}: type {} destination {:#x} {:?}", m.m.r#type, m.m.destination, m.payload);
        }
    }
}

/// Points where the frozen sender holds no lock, or only its own: the
/// receivers its multicast touches (D among them) go on too.
#[test]
fn sender_frozen_outside_any_other_peers_lock() {
    for (point, n) in [("send-resolving", 1), ("send-copying", 1), ("send-copied", 2), ("send-staged", 1), ("send-sealed", 1)] {
        case(point, n, Op::Multicast { overlap: true });
    }
}

/// Points inside a receiver's section: that receiver waits, nobody else.
#[test]
fn sender_frozen_inside_a_receivers_section() {
    for (point, n) in [("send-prepared", 1), ("send-prepared", 2), ("send-append", 1), ("commit-op", 1), ("commit-op", 2)] {
        case(point, n, Op::Multicast { overlap: false });
    }
    for point in ["send-prepared", "send-copied", "commit-before", "commit-after"] {
        case(point, 1, Op::Unicast);
    }
}

/// A receiver frozen inside its RECV or SLICE_RELEASE holds only its own
/// queue.
#[test]
fn receiver_frozen_inside_recv_or_slice_release() {
    case("recv-committed", 1, Op::Recv);
    case("release-committed", 1, Op::Release);
    case("release-committed", 1, Op::ReleaseBacklog);
    case("release-committed", 1, Op::ReleaseLocked);
}

/// A SEND that carries handles is a transaction under the domain lock: a
/// process frozen there delays other transactions (node bookkeeping,
/// notifications), but no data-path SEND, RECV or SLICE_RELEASE.
#[test]
fn transaction_frozen_delays_no_data_path_traffic() {
    case("send-copied", 1, Op::Transaction);
}
