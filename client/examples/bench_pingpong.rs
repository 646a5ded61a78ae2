//! The benchmark of the crate (run by `make bench`, see scripts/bench): the
//! 1 KiB cross-process ping-pong of bench/pingpong.c, made through this
//! crate's API, against a Unix-domain-socket ping-pong in the same run.
//!
//!   bench_pingpong device   [round-trips]   (under the shim: scripts/bus1-run)
//!   bench_pingpong embedded [round-trips]   (no shim; BUS1_DOMAIN names the domain)
//!
//! Per hop: a blocking `recv` (the crate's wait, then RECV), a copy of the
//! payload out of the pool, the slice's release (the message dropped) and
//! the reply's SEND. The baseline: `recv` + `send` on a datagram socket
//! pair, each side blocked in `recv`. The echoing side of each is a child
//! process (this program again), which gets its peer fd or socket as its
//! standard input. Prints the median wall time per round trip of
//! alternating rounds, their ratio, and the CPU time of both processes per
//! round trip over all rounds.

use bus1::{Abi, Backend, Event, HandleId, NodeId, Peer};
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const MSG: usize = 1024;
const ROUNDS: usize = 7;
const QUIT: u64 = u64::MAX;

fn backend(kind: &str) -> Backend {
    match kind {
        "device" => Backend::device(),
        "embedded" => Backend::embedded(),
        other => panic!("unknown backend {other} (device or embedded)"),
    }
}

/// One side of a ping-pong.
trait End {
    fn send(&self, buf: &[u8; MSG]);
    fn recv(&self, buf: &mut [u8; MSG]);
}

struct Bus1End {
    peer: Peer,
    to: HandleId,
}

impl End for Bus1End {
    fn send(&self, buf: &[u8; MSG]) {
        self.peer.send(&[self.to], &[IoSlice::new(buf)]).expect("SEND");
    }

    fn recv(&self, buf: &mut [u8; MSG]) {
        match self.peer.recv().expect("RECV") {
            Event::Message(m) => buf.copy_from_slice(m.payload()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

struct UdsEnd(UnixDatagram);

impl End for UdsEnd {
    fn send(&self, buf: &[u8; MSG]) {
        assert_eq!(self.0.send(buf).expect("send"), MSG);
    }

    fn recv(&self, buf: &mut [u8; MSG]) {
        assert_eq!(self.0.recv(buf).expect("recv"), MSG);
    }
}

fn seq(buf: &[u8; MSG]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"))
}

/// The echoing child: sends every message back until QUIT.
fn echo(end: &dyn End) {
    let mut buf = [0u8; MSG];
    loop {
        end.recv(&mut buf);
        if seq(&buf) == QUIT {
            return;
        }
        end.send(&buf);
    }
}

fn round_trips(end: &dyn End, n: u64, next: &mut u64) -> f64 {
    let mut buf = [0u8; MSG];
    let t0 = Instant::now();
    for _ in 0..n {
        buf[..8].copy_from_slice(&next.to_le_bytes());
        end.send(&buf);
        end.recv(&mut buf);
        assert_eq!(seq(&buf), *next, "echoed sequence number");
        *next += 1;
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// CPU time (clock ticks) a process has used, all its threads.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> f64 {
    // The kernel's USER_HZ, which /proc reports in; 100 on Linux.
    100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spawn_echo(args: &[&str], stdin: Stdio) -> Child {
    Command::new(std::env::current_exe().expect("exe")).args(args).stdin(stdin).spawn().expect("spawn the echo child")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("echo-bus1") {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().expect("stdin");
        let peer = Peer::from_fd(fd, args[2] == "embedded", Abi::V1).expect("the peer on stdin");
        let to = HandleId::from_raw(u64::from_str_radix(&args[3], 16).expect("handle"));
        return echo(&Bus1End { peer, to });
    }
    if args.get(1).map(String::as_str) == Some("echo-uds") {
        let fd = std::io::stdin().as_fd().try_clone_to_owned().expect("stdin");
        return echo(&UdsEnd(UnixDatagram::from(fd)));
    }
    let kind = args.get(1).map_or("embedded", String::as_str).to_string();
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20000).max(1);

    let node = NodeId::new(0x100).unwrap();
    let me = Peer::open(backend(&kind)).expect("open (under the shim for `device`)");
    let other = Peer::open(backend(&kind)).expect("open");
    let to_other = me.handle_from(&other, node).expect("transfer");
    let to_me = other.handle_from(&me, node).expect("transfer");
    let b_child = spawn_echo(
        &["echo-bus1", &kind, &format!("{:x}", to_me.raw())],
        Stdio::from(other.as_fd().try_clone_to_owned().expect("dup")),
    );
    drop(other);
    let bus1 = Bus1End { peer: me, to: to_other };

    let (a, b) = UnixDatagram::pair().expect("socketpair");
    let u_child = spawn_echo(&["echo-uds"], Stdio::from(std::os::fd::OwnedFd::from(b)));
    let uds = UdsEnd(a);

    let (mut bseq, mut useq) = (0u64, 0u64);
    round_trips(&bus1, n / 10 + 1, &mut bseq);
    round_trips(&uds, n / 10 + 1, &mut useq);
    let (mut tb, mut tu, mut ratio) = (vec![], vec![], vec![]);
    let (mut cb, mut cu) = (0u64, 0u64);
    let me_pid = std::process::id();
    for _ in 0..ROUNDS {
        let x0 = cpu_ticks(me_pid) + cpu_ticks(b_child.id());
        let b = round_trips(&bus1, n, &mut bseq);
        cb += cpu_ticks(me_pid) + cpu_ticks(b_child.id()) - x0;
        let y0 = cpu_ticks(me_pid) + cpu_ticks(u_child.id());
        let u = round_trips(&uds, n, &mut useq);
        cu += cpu_ticks(me_pid) + cpu_ticks(u_child.id()) - y0;
        tb.push(b);
        tu.push(u);
        ratio.push(b / u);
    }
    let quit = {
        let mut q = [0u8; MSG];
        q[..8].copy_from_slice(&QUIT.to_le_bytes());
        q
    };
    bus1.send(&quit);
    uds.send(&quit);
    for (mut c, what) in [(b_child, "bus1"), (u_child, "UDS")] {
        assert!(c.wait().expect("wait").success(), "the {what} echo child failed");
    }

    let (rmin, rmax) = (ratio.iter().cloned().fold(f64::MAX, f64::min), ratio.iter().cloned().fold(0.0, f64::max));
    let per_rt = |ticks: u64| ticks as f64 / ticks_per_second() * 1e6 / (n * ROUNDS as u64) as f64;
    println!("pingpong 1 KiB cross-process through the bus1 crate, {kind} backend, {n} round trips x {ROUNDS} rounds (wall time per round trip, median)");
    println!("  bus1 crate recv+copy+drop+send    : {:8.2} us", median(&mut tb) / 1e3);
    println!("  UDS  recv+send (datagram pair)    : {:8.2} us", median(&mut tu) / 1e3);
    println!("  ratio bus1/UDS                    : {:8.3} (min {rmin:.3}, max {rmax:.3})", median(&mut ratio));
    println!("  cpu bus1 per round trip (both)    : {:8.2} us", per_rt(cb));
    println!("  cpu UDS  per round trip (both)    : {:8.2} us", per_rt(cu));
}
