//! Prints what SEND, RECV and SLICE_RELEASE of one 1 KiB message touch in
//! the domain segment: distinct cache lines and undo entries, averaged
//! over many messages (unicast; and a multicast to 16 peers, per
//! destination), and how many lines of a unicast's SEND the receiver's
//! RECV and SLICE_RELEASE touch too, one side writing them: the lines that
//! move between the CPUs with each message when a sender and its receiver
//! run side by side. Run with:
//!   cargo run --release -p bus1-shm-core --features census --example census
use shm_core::{census, OpenFlags, Peer, SimMem};
use uapi::*;

const N: u64 = 2000;
const FANOUT: usize = 16;

struct End {
    fd: i32,
    peer: Peer,
}

fn open(dir: &std::path::Path) -> End {
    let (fd, peer) = Peer::open(dir, OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true }).expect("open");
    End { fd, peer }
}

fn handle_to(owner: &End, holder: &End) -> u64 {
    owner.peer.handle_transfer(owner.fd, 0x100, Some(&holder.peer)).expect("transfer")
}

#[derive(Default)]
struct Sum {
    lines: u64,
    undo: u64,
}

impl Sum {
    fn add(&mut self, c: &census::Census) {
        self.lines += c.lines();
        self.undo += c.undo;
    }
    fn print(&self, what: &str, per: u64) {
        println!("  {what:<34} {:6.1} lines  {:6.1} undo entries", self.lines as f64 / per as f64, self.undo as f64 / per as f64);
    }
}

fn measure<T>(sum: &mut Sum, f: impl FnOnce() -> T) -> (T, census::Census) {
    census::start();
    let v = f();
    let c = census::stop();
    sum.add(&c);
    (v, c)
}

fn main() {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = std::path::PathBuf::from(format!("{base}/bus1-census-{}", std::process::id()));
    let mem = SimMem::new();
    let payload = vec![0x5au8; 1024];
    let a = open(&dir);
    let rcv: Vec<End> = (0..FANOUT).map(|_| open(&dir)).collect();
    let dests: Vec<u64> = rcv.iter().map(|r| handle_to(r, &a)).collect();
    let cmd = |n: usize| bus1_cmd_send {
        ptr_destinations: mem.put_u64s(&dests[..n]),
        n_destinations: n as u64,
        ptr_vecs: mem.put_u64s(&[mem.put(&payload), payload.len() as u64]),
        n_vecs: 1,
        ..Default::default()
    };
    let (one, many) = (cmd(1), cmd(FANOUT));
    let (mut send, mut recv, mut release) = (Sum::default(), Sum::default(), Sum::default());
    let (mut msend, mut mrecv) = (Sum::default(), Sum::default());
    let mut moved_lines = 0;
    let b = &rcv[0];
    for round in 0..2 {
        // the first round warms up (pool mappings, tables, free lists)
        let keep = round == 1;
        let (mut s, mut r, mut l) = (Sum::default(), Sum::default(), Sum::default());
        let mut moved = 0;
        for _ in 0..N {
            let (sent, cs) = measure(&mut s, || a.peer.send(a.fd, &one, &mem));
            sent.expect("send");
            let (m, cr) = measure(&mut r, || b.peer.recv(b.fd, 0, shm_core::POOL_SIZE));
            let m = m.expect("recv");
            let (released, cl) = measure(&mut l, || b.peer.slice_release(b.fd, m.offset));
            released.expect("release");
            moved += cs.moved_with(&cr.joined(&cl));
        }
        let (mut ms, mut mr) = (Sum::default(), Sum::default());
        for _ in 0..N / 10 {
            measure(&mut ms, || a.peer.send(a.fd, &many, &mem)).0.expect("multicast");
            for r in &rcv {
                let m = measure(&mut mr, || r.peer.recv(r.fd, 0, shm_core::POOL_SIZE)).0.expect("recv");
                r.peer.slice_release(r.fd, m.offset).expect("release");
            }
        }
        if keep {
            (send, recv, release, msend, mrecv, moved_lines) = (s, r, l, ms, mr, moved);
        }
    }
    println!("segment cache lines and undo entries per message (1 KiB, averages of {N}):");
    send.print("SEND (unicast)", N);
    recv.print("RECV", N);
    release.print("SLICE_RELEASE", N);
    msend.print(&format!("SEND to {FANOUT}, per destination"), N / 10 * FANOUT as u64);
    mrecv.print(&format!("RECV after a SEND to {FANOUT}"), N / 10 * FANOUT as u64);
    println!(
        "  {:<34} {:6.1} lines (of the SEND's, also touched by RECV or SLICE_RELEASE, one side writing)",
        "moved between sender and receiver",
        moved_lines as f64 / N as f64
    );
    drop(rcv);
    let _ = std::fs::remove_dir_all(&dir);
}
