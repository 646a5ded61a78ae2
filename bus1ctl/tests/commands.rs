//! bus1ctl run as a separate process against domains built here with the
//! engine's API (or by a child process that is then killed): what
//! `status` reports, that it changes and creates nothing, and what `gc`
//! cleans up.

use shm_core::{AbiMode, OpenFlags, Peer, SimMem};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use uapi::*;

// ------------------------------------------------------------ JSON reader

/// A parsed JSON value (enough of JSON for bus1ctl's output).
#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(i128),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

impl J {
    fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m.get(k).unwrap_or_else(|| panic!("no key {k} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }
    fn num(&self) -> i128 {
        match self {
            J::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
}

fn parse_json(text: &str) -> J {
    let b = text.as_bytes();
    let mut i = 0;
    let v = value(b, &mut i);
    skip_ws(b, &mut i);
    assert_eq!(i, b.len(), "trailing text after JSON");
    v
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn expect(b: &[u8], i: &mut usize, c: u8) {
    skip_ws(b, i);
    assert_eq!(b.get(*i), Some(&c), "expected {:?} at {}", c as char, i);
    *i += 1;
}

fn value(b: &[u8], i: &mut usize) -> J {
    skip_ws(b, i);
    match b[*i] {
        b'{' => {
            *i += 1;
            let mut m = BTreeMap::new();
            skip_ws(b, i);
            if b[*i] == b'}' {
                *i += 1;
                return J::Obj(m);
            }
            loop {
                skip_ws(b, i);
                let J::Str(k) = value(b, i) else { panic!("object key is not a string") };
                expect(b, i, b':');
                let v = value(b, i);
                assert!(m.insert(k, v).is_none(), "duplicate key");
                skip_ws(b, i);
                *i += 1;
                if b[*i - 1] == b'}' {
                    return J::Obj(m);
                }
                assert_eq!(b[*i - 1], b',');
            }
        }
        b'[' => {
            *i += 1;
            let mut v = Vec::new();
            skip_ws(b, i);
            if b[*i] == b']' {
                *i += 1;
                return J::Arr(v);
            }
            loop {
                v.push(value(b, i));
                skip_ws(b, i);
                *i += 1;
                if b[*i - 1] == b']' {
                    return J::Arr(v);
                }
                assert_eq!(b[*i - 1], b',');
            }
        }
        b'"' => {
            *i += 1;
            let mut s = String::new();
            loop {
                let c = b[*i];
                *i += 1;
                match c {
                    b'"' => return J::Str(s),
                    b'\\' => {
                        let e = b[*i];
                        *i += 1;
                        match e {
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            b'u' => {
                                let h = std::str::from_utf8(&b[*i..*i + 4]).unwrap();
                                s.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap());
                                *i += 4;
                            }
                            c => s.push(c as char),
                        }
                    }
                    _ => {
                        // copy one UTF-8 sequence
                        let start = *i - 1;
                        let mut end = *i;
                        while end < b.len() && (b[end] & 0xc0) == 0x80 {
                            end += 1;
                        }
                        s.push_str(std::str::from_utf8(&b[start..end]).unwrap());
                        *i = end;
                    }
                }
            }
        }
        b't' => {
            *i += 4;
            J::Bool(true)
        }
        b'f' => {
            *i += 5;
            J::Bool(false)
        }
        b'n' => {
            *i += 4;
            J::Null
        }
        _ => {
            let start = *i;
            while *i < b.len() && (b[*i] == b'-' || b[*i].is_ascii_digit()) {
                *i += 1;
            }
            J::Num(std::str::from_utf8(&b[start..*i]).unwrap().parse().unwrap())
        }
    }
}

// ------------------------------------------------------------ tools

fn domain_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    base.join(format!("bus1ctl-test-{name}-{}-{t}", std::process::id()))
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs bus1ctl; returns (exit code, stdout, stderr).
fn bus1ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bus1ctl")).args(args).env_remove("BUS1_DOMAIN").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn status_json(dir: &Path) -> J {
    let (code, out, err) = bus1ctl(&["--json", "status", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "status failed: {err}");
    parse_json(&out)
}

struct P1 {
    fd: i32,
    peer: Peer,
    mem: SimMem,
}

impl P1 {
    fn open(dir: &Path) -> P1 {
        let (fd, peer) = Peer::open(dir, OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true }).unwrap();
        P1 { fd, peer, mem: SimMem::new() }
    }

    fn transfer(&self, id: u64, to: &P1) -> u64 {
        self.peer.handle_transfer(self.fd, id, Some(&to.peer)).unwrap()
    }

    fn send(&self, dest: u64, data: &[u8], handles: &[u64]) {
        let vecs = [self.mem.put(data), data.len() as u64];
        let cmd = bus1_cmd_send {
            flags: 0,
            ptr_destinations: self.mem.put_u64s(&[dest]),
            ptr_errors: 0,
            n_destinations: 1,
            ptr_vecs: self.mem.put_u64s(&vecs),
            n_vecs: 1,
            ptr_handles: self.mem.put_u64s(handles),
            n_handles: handles.len() as u64,
            ptr_fds: 0,
            n_fds: 0,
        };
        self.peer.send(self.fd, &cmd, &self.mem).unwrap();
    }
}

impl Drop for P1 {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(self.fd) };
        self.peer.closed();
    }
}

fn peer(j: &J, serial: i128) -> &J {
    j.get("peers").arr().iter().find(|p| p.get("serial").num() == serial).unwrap_or_else(|| panic!("no peer {serial}"))
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

// ------------------------------------------------------------ status

/// Peers 1 and 2; 2 owns node 0x100 and gave 1 a handle to it (0xb);
/// 1 sent two messages to it, the second carrying 1's new node 0x200;
/// peer 3 is disconnected.
#[test]
fn status_lists_peers_queues_pools_quotas_nodes_and_handles() {
    let dir = Dir(domain_dir("status"));
    let a = P1::open(&dir.0);
    let b = P1::open(&dir.0);
    let c = P1::open(&dir.0);
    let h = b.transfer(0x100, &a);
    assert_eq!(h, 0xb);
    a.send(h, b"first", &[]);
    a.send(h, b"second", &[0x200]);
    c.peer.disconnect(c.fd, 0).unwrap();

    let j = status_json(&dir.0);
    assert_eq!(j.get("domain").str(), dir.0.to_str().unwrap());
    let peers = j.get("peers").arr();
    assert_eq!(peers.len(), 3);
    let me = std::process::id() as i128;
    for p in peers {
        // (a process another test forks holds copies until it execs)
        assert!(p.get("pids").arr().contains(&J::Num(me)), "the test process holds every peer");
        assert_eq!(p.get("fd_open"), &J::Bool(true));
        assert_eq!(p.get("uid").num(), unsafe { libc::getuid() } as i128);
    }

    let pa = peer(&j, 1);
    assert_eq!(pa.get("state").str(), "connected");
    // nothing has told which ABI it speaks yet
    assert_eq!(pa.get("abi"), &J::Null);
    assert_eq!(pa.get("abi_fixed"), &J::Bool(false));
    assert_eq!(pa.get("pool").get("size").num(), 1 << 29);
    assert_eq!(pa.get("queue").get("length").num(), 0);
    assert_eq!(pa.get("live_nodes").num(), 1);
    let ha = pa.get("handles").arr();
    assert_eq!(ha.len(), 2);
    let remote = ha.iter().find(|x| x.get("id") == &J::Str("0xb".into())).unwrap();
    assert_eq!(remote.get("owner"), &J::Bool(false));
    assert_eq!(remote.get("node_owner").num(), 2);
    assert_eq!(remote.get("node_id").str(), "0x100");
    assert_eq!(remote.get("user_refs").num(), 1);
    let own = ha.iter().find(|x| x.get("id") == &J::Str("0x200".into())).unwrap();
    assert_eq!(own.get("owner"), &J::Bool(true));

    let pb = peer(&j, 2);
    let q = pb.get("queue");
    assert_eq!((q.get("length").num(), q.get("data").num(), q.get("node_destroy").num()), (2, 2, 0));
    assert_eq!(q.get("seed"), &J::Bool(false));
    let pool = pb.get("pool");
    assert_eq!(pool.get("slices").num(), 2);
    assert_eq!(pool.get("published").num(), 0);
    // "first" takes 8 bytes, "second" 8 + one handle ID
    assert_eq!(pool.get("used_bytes").num(), 8 + 16);
    assert!(pool.get("resident_bytes").num() >= 4096);
    let quota = pb.get("quota");
    assert_eq!(quota.get("slices").get("used").num(), 2);
    assert_eq!(quota.get("slices").get("max").num(), 16384);
    // its own node's pin, and the handle carried by the queued message
    assert_eq!(quota.get("handles").get("used").num(), 2);
    assert_eq!(quota.get("inflight_bytes").get("used").num(), 8 + 16);
    // b holds the carried node without an ID yet
    let carried = pb.get("handles").arr().iter().find(|x| x.get("id") == &J::Null).unwrap();
    assert_eq!(carried.get("inflight").num(), 1);
    assert_eq!(carried.get("node_owner").num(), 1);
    assert_eq!(carried.get("node_id").str(), "0x200");

    assert_eq!(peer(&j, 3).get("state").str(), "disconnected");

    // a peer whose opener fixed the final ABI has the final pool
    let (fd, fin) = Peer::open_as(&dir.0, OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true }, AbiMode::Final).unwrap();
    let j = status_json(&dir.0);
    let pf = peer(&j, 4);
    assert_eq!(pf.get("abi").str(), "final");
    assert_eq!(pf.get("abi_fixed"), &J::Bool(true));
    assert_eq!(pf.get("pool").get("size").num(), 1 << 32);
    let (_, text, _) = bus1ctl(&["status", dir.0.to_str().unwrap()]);
    assert!(text.contains("peer 0x4  connected  O_RDWR  abi final (fixed)  uid "), "{text}");
    assert!(text.contains("  pool     4.0 GiB: 0 slices"), "{text}");
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    fin.closed();
    let j = status_json(&dir.0);

    let nodes = j.get("nodes").arr();
    assert_eq!(nodes.len(), 2);
    let n100 = nodes.iter().find(|n| n.get("id") == &J::Str("0x100".into())).unwrap();
    assert_eq!(n100.get("owner").num(), 2);
    assert_eq!(n100.get("state").str(), "live");
    assert_eq!(n100.get("strong").num(), 1);
    let holders: Vec<(i128, &str)> =
        n100.get("handles").arr().iter().map(|x| (x.get("holder").num(), x.get("id").str())).collect();
    assert_eq!(holders, vec![(2, "0x100"), (1, "0xb")]);

    let users = j.get("users").arr();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].get("quota").get("slices").get("used").num(), 2);

    // the text form says the same in words
    let (code, text, _) = bus1ctl(&["status", dir.0.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("peer 0x1  connected  O_RDWR  abi undetermined  uid {} gid {}  pids ", unsafe { libc::getuid() }, unsafe { libc::getgid() })),
        "{text}"
    );
    assert!(text.contains(&format!("{me}")), "{text}");
    assert!(text.contains("  queue    2 entries: 2 data, 0 NODE_DESTROY, 0 NODE_RELEASE; 0 with fds; no seed\n"), "{text}");
    assert!(text.contains("peer 0x3  disconnected"), "{text}");
    assert!(text.contains("  0x2:0x100  live  strong 1  held by 0x1 as 0xb (1 ref)\n"), "{text}");
    assert!(text.contains("0xb (node 0x2:0x100, 1 ref)"), "{text}");
}

/// status neither creates a domain nor changes one.
#[test]
fn status_creates_and_changes_nothing() {
    let missing = domain_dir("missing");
    let (code, _, err) = bus1ctl(&["status", missing.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(err.contains("no bus1 domain here"), "{err}");
    assert!(!missing.exists());
    let (code, _, _) = bus1ctl(&["gc", missing.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(!missing.exists());

    // a file is no domain, and the error says why in words
    let file = Dir(domain_dir("file"));
    std::fs::write(&file.0, b"").unwrap();
    let (code, _, err) = bus1ctl(&["status", file.0.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(err.contains("refused: ") && err.contains("not a directory"), "{err}");
    std::fs::remove_file(&file.0).unwrap();

    // an empty directory is no domain either, and stays empty
    let empty = Dir(domain_dir("empty"));
    std::fs::create_dir(&empty.0).unwrap();
    let (code, _, _) = bus1ctl(&["status", empty.0.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(dir_names(&empty.0).is_empty());

    let dir = Dir(domain_dir("unchanged"));
    let a = P1::open(&dir.0);
    let b = P1::open(&dir.0);
    let h = b.transfer(0x100, &a);
    a.send(h, b"x", &[]);
    let dom = a.peer.domain().clone();
    let before = (dom.stats().unwrap(), dir_names(&dir.0), dom.snapshot().unwrap().clock);
    let first = status_json(&dir.0);
    let after = (dom.stats().unwrap(), dir_names(&dir.0), dom.snapshot().unwrap().clock);
    assert_eq!(before, after);
    assert_eq!(without_pids(first), without_pids(status_json(&dir.0)));
}

/// `status --json` without the processes holding each peer: a process
/// another test forks holds copies of this one's descriptors until it
/// execs.
fn without_pids(mut j: J) -> J {
    if let J::Obj(m) = &mut j {
        if let Some(J::Arr(peers)) = m.get_mut("peers") {
            for p in peers {
                if let J::Obj(pm) = p {
                    pm.remove("pids");
                }
            }
        }
    }
    j
}

#[test]
fn usage_errors_exit_with_status_2() {
    assert_eq!(bus1ctl(&[]).0, 2);
    assert_eq!(bus1ctl(&["frobnicate"]).0, 2);
    assert_eq!(bus1ctl(&["status", "a", "b"]).0, 2);
    assert_eq!(bus1ctl(&["--bogus", "status"]).0, 2);
    let (code, out, _) = bus1ctl(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("usage: bus1ctl"));
}

/// DOMAIN defaults to $BUS1_DOMAIN, as for the shim.
#[test]
fn the_domain_defaults_to_bus1_domain() {
    let dir = Dir(domain_dir("env"));
    let _a = P1::open(&dir.0);
    let out = Command::new(env!("CARGO_BIN_EXE_bus1ctl")).args(["--json", "status"]).env("BUS1_DOMAIN", &dir.0).output().unwrap();
    assert!(out.status.success());
    let j = parse_json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(j.get("domain").str(), dir.0.to_str().unwrap());
    assert_eq!(j.get("peers").arr().len(), 1);
}

// ------------------------------------------------------------ gc

const OPENER_ENV: &str = "BUS1CTL_TEST_OPENER_DIR";

/// Run as a child process (see gc_cleans_up_after_a_killed_process):
/// two peers with a queued message, then an open that is killed after it
/// made its files but before the peer existed; prints "ready" first.
#[test]
fn opener_killed_mid_open() {
    let Ok(dir) = std::env::var(OPENER_ENV) else { return };
    let dir = PathBuf::from(dir);
    let a = P1::open(&dir);
    let b = P1::open(&dir);
    let h = b.transfer(0x100, &a);
    a.send(h, b"left behind", &[]);
    std::mem::forget((a, b));
    println!("ready");
    shm_core::arm_crash_point("open-files-made", 1);
    let _ = P1::open(&dir);
    unreachable!("the crash point kills the process");
}

#[test]
fn gc_cleans_up_after_a_killed_process() {
    let dir = Dir(domain_dir("gc"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "opener_killed_mid_open", "--nocapture", "--test-threads=1"])
        .env(OPENER_ENV, &dir.0)
        .env("BUS1_NO_WATCHER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // (the harness prints its own words before it on the same line)
    assert!(lines.any(|l| l.unwrap().ends_with("ready")));
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // the half-made third peer's files, and the two dead peers' own
    assert_eq!(dir_names(&dir.0), ["peer.1", "peer.2", "peer.3", "pool.1", "pool.2", "pool.3", "segment"]);

    // status shows the dead peers as such, and repairs nothing
    let j = status_json(&dir.0);
    assert_eq!(j.get("peers").arr().len(), 2);
    for p in j.get("peers").arr() {
        assert_eq!(p.get("fd_open"), &J::Bool(false));
        assert!(p.get("pids").arr().is_empty());
    }
    assert_eq!(peer(&j, 2).get("queue").get("length").num(), 1);
    let (_, text, _) = bus1ctl(&["status", dir.0.to_str().unwrap()]);
    assert!(text.contains("pids none: its last fd is gone"), "{text}");
    assert_eq!(dir_names(&dir.0).len(), 7);

    let (code, out, err) = bus1ctl(&["--json", "gc", dir.0.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let g = parse_json(&out);
    assert_eq!(g.get("peers_torn_down").num(), 2);
    assert_eq!(g.get("files_removed").num(), 2);
    // then nothing used the domain any more: its memory went too
    assert_eq!(g.get("memory_removed"), &J::Bool(true));
    assert!(dir_names(&dir.0).is_empty());
    let (code, _, _) = bus1ctl(&["status", dir.0.to_str().unwrap()]);
    assert_eq!(code, 3);
}

/// gc of a domain in use tears down its dead peers only.
#[test]
fn gc_leaves_a_domain_in_use() {
    let dir = Dir(domain_dir("gc-used"));
    let a = P1::open(&dir.0);
    let b = P1::open(&dir.0);
    let h = b.transfer(0x100, &a);
    a.send(h, b"x", &[]);
    let (code, out, err) = bus1ctl(&["gc", dir.0.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 0 dead peers torn down, 0 leftover files removed, 0 B of pool memory given back\n"), "{out}");
    assert_eq!(status_json(&dir.0).get("peers").arr().len(), 2);
    assert_eq!(dir_names(&dir.0), ["peer.1", "peer.2", "pool.1", "pool.2", "segment"]);
}

/// A domain directory on a disk keeps only a link to its memory: status
/// names both, and reads the domain through the link.
#[test]
fn status_of_a_domain_on_a_disk_names_its_memory() {
    let base = Path::new("/var/tmp");
    if !base.is_dir() {
        return;
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = Dir(base.join(format!("bus1ctl-test-disk-{}-{t}", std::process::id())));
    let a = P1::open(&dir.0);
    let _b = P1::open(&dir.0);
    let j = status_json(&dir.0);
    let memory = PathBuf::from(j.get("memory").str());
    assert_eq!(memory, a.peer.domain().memory_dir());
    if memory != dir.0 {
        // (unless /var/tmp is itself a memory file system)
        assert_eq!(std::fs::read_link(dir.0.join("memory")).unwrap(), memory);
        assert_eq!(dir_names(&dir.0), ["memory"]);
        assert!(dir_names(&memory).contains(&"segment".to_string()));
    }
    assert_eq!(j.get("peers").arr().len(), 2);
    assert_eq!(peer(&j, 1).get("socket").str(), memory.join("peer.1").to_str().unwrap());
    // leave no memory behind on /dev/shm (a process another test forks
    // holds copies of the peer sockets until it execs: look again then)
    let dom = a.peer.domain().clone();
    drop((a, _b));
    assert!((0..200).any(|_| dom.leave() || {
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    }));
    assert!(!memory.join("segment").exists());
}

// ------------------------------------------------------------ check

const DAMAGER_ENV: &str = "BUS1CTL_TEST_DAMAGER_DIR";

/// Run as a child process (see check_finds_a_damaged_domain): two peers
/// with a queued message, then the receiver's queue head is pointed
/// outside the segment (test hooks on); prints "damaged".
#[test]
fn damager() {
    let Ok(dir) = std::env::var(DAMAGER_ENV) else { return };
    let dir = PathBuf::from(dir);
    let a = P1::open(&dir);
    let b = P1::open(&dir);
    let h = b.transfer(0x100, &a);
    a.send(h, b"queued", &[]);
    b.peer.test_damage(shm_core::DAMAGE_OFFSET).unwrap();
    std::mem::forget((a, b));
    println!("damaged");
}

#[test]
fn check_passes_a_consistent_domain() {
    let dir = Dir(domain_dir("check-ok"));
    let a = P1::open(&dir.0);
    let b = P1::open(&dir.0);
    let h = b.transfer(0x100, &a);
    a.send(h, b"x", &[h]);
    let (code, out, err) = bus1ctl(&["check", dir.0.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, format!("domain {}: consistent\n", dir.0.display()));
    let (code, out, _) = bus1ctl(&["--json", "check", dir.0.to_str().unwrap()]);
    assert_eq!(code, 0);
    let j = parse_json(&out);
    assert_eq!(j.get("consistent"), &J::Bool(true));
    assert!(j.get("violations").arr().is_empty());
    // and it changed nothing: the message is still there
    assert_eq!(peer(&status_json(&dir.0), 2).get("queue").get("length").num(), 1);
}

#[test]
fn check_finds_a_damaged_domain() {
    let dir = Dir(domain_dir("check-damaged"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "damager", "--nocapture", "--test-threads=1"])
        .env(DAMAGER_ENV, &dir.0)
        .env("BUS1_TEST_HOOKS", "1")
        .env("BUS1_NO_WATCHER", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("damaged"), "{out:?}");
    let (code, text, err) = bus1ctl(&["check", dir.0.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}{err}");
    assert!(text.lines().count() >= 2, "{text}");
    assert!(text.lines().next().unwrap().contains("violation"), "{text}");
    let (code, out, _) = bus1ctl(&["--json", "check", dir.0.to_str().unwrap()]);
    assert_eq!(code, 1);
    let j = parse_json(&out);
    assert_eq!(j.get("consistent"), &J::Bool(false));
    assert!(!j.get("violations").arr().is_empty());
}
