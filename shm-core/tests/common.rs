//! Helpers shared by the engine tests: a fresh domain per test, peers, and
//! one-line wrappers around the operations with a simulated caller memory.
#![allow(dead_code)]

use shm_core::{Errno, OpenFlags, Peer, SimMem};
use std::path::PathBuf;
use uapi::*;

pub struct Bus {
    pub dir: PathBuf,
    /// The test damages the domain on purpose: the check at the end
    /// expects the damage mark and nothing else.
    damaged: std::cell::Cell<bool>,
}

impl Bus {
    pub fn new(name: &str) -> Bus {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("bus1-rt-{}-{}-{}", name, std::process::id(), nanos()));
        Bus { dir, damaged: std::cell::Cell::new(false) }
    }

    /// A bus that keeps the kernel-visible token of every peer socket
    /// exact (what `BUS1_WAKE=exact` does).
    pub fn exact(name: &str) -> Bus {
        let bus = Bus::new(name);
        let p = bus.peer();
        p.peer.domain().keep_tokens_exact();
        bus
    }

    /// Says that the test leaves the domain marked damaged on purpose.
    pub fn expect_damage(&self) {
        self.damaged.set(true);
    }

    pub fn peer(&self) -> P1 {
        let (fd, peer) = Peer::open(&self.dir, OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true }).unwrap();
        P1 { fd, peer, mem: SimMem::new() }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        // Whatever the test did, the segment it leaves must be consistent.
        if !std::thread::panicking() && self.dir.join("segment").exists() {
            let report = shm_core::Domain::attach(&self.dir).unwrap().check_invariants();
            if self.damaged.get() {
                assert!(report.len() == 1 && report[0].contains("marked damaged"), "more than the damage mark:\n{}", report.join("\n"));
            } else {
                assert!(report.is_empty(), "invariants violated:\n{}", report.join("\n"));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A peer with its fd and a simulated address space for arguments.
pub struct P1 {
    pub fd: i32,
    pub peer: Peer,
    pub mem: SimMem,
}

pub struct Msg {
    pub m: bus1_msg,
    pub payload: Vec<u8>,
    pub handles: Vec<u64>,
}

impl P1 {
    pub fn send_full(&self, flags: u64, dests: &[u64], data: &[&[u8]], handles: &[u64], fds: &[i32], errors: u64) -> Result<(), Errno> {
        let vecs: Vec<u64> = data.iter().flat_map(|d| [self.mem.put(d), d.len() as u64]).collect();
        let cmd = bus1_cmd_send {
            flags,
            ptr_destinations: self.mem.put_u64s(dests),
            ptr_errors: errors,
            n_destinations: dests.len() as u64,
            ptr_vecs: self.mem.put_u64s(&vecs),
            n_vecs: data.len() as u64,
            ptr_handles: self.mem.put_u64s(handles),
            n_handles: handles.len() as u64,
            ptr_fds: self.mem.put(&fds.iter().flat_map(|f| f.to_ne_bytes()).collect::<Vec<_>>()),
            n_fds: fds.len() as u64,
        };
        self.peer.send(self.fd, &cmd, &self.mem)
    }

    pub fn send(&self, dests: &[u64], data: &[u8]) -> Result<(), Errno> {
        self.send_full(0, dests, &[data], &[], &[], 0)
    }

    pub fn send_h(&self, dests: &[u64], data: &[u8], handles: &[u64]) -> Result<(), Errno> {
        self.send_full(0, dests, &[data], handles, &[], 0)
    }

    /// RECV with the whole pool as max_offset; reads payload and handle IDs
    /// back through a read-only mapping of the pool.
    pub fn recv_flags(&self, flags: u64) -> Result<Msg, Errno> {
        let m = self.peer.recv(self.fd, flags, shm_core::POOL_SIZE)?;
        let mut payload = Vec::new();
        let mut handles = Vec::new();
        if m.r#type == BUS1_MSG_DATA {
            let pool = self.pool();
            let off = m.offset as usize;
            payload = pool[off..off + m.n_bytes as usize].to_vec();
            let h = off + (m.n_bytes as usize).div_ceil(8) * 8;
            for j in 0..m.n_handles as usize {
                handles.push(u64::from_ne_bytes(pool[h + 8 * j..h + 8 * j + 8].try_into().unwrap()));
            }
        }
        Ok(Msg { m, payload, handles })
    }

    pub fn recv(&self) -> Result<Msg, Errno> {
        self.recv_flags(0)
    }

    pub fn pool(&self) -> &'static [u8] {
        let fd = self.peer.pool_fd_for_mmap(libc::O_RDWR, libc::PROT_READ, libc::MAP_SHARED).unwrap();
        // SAFETY: a fresh read-only shared mapping of the pool file, kept
        // for the rest of the test process (leaked on purpose).
        let p = unsafe { libc::mmap(std::ptr::null_mut(), shm_core::POOL_SIZE as usize, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fd) };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping is POOL_SIZE bytes and never unmapped.
        unsafe { std::slice::from_raw_parts(p as *const u8, shm_core::POOL_SIZE as usize) }
    }

    pub fn transfer(&self, src: u64, dst: &P1) -> Result<u64, Errno> {
        self.peer.handle_transfer(self.fd, src, Some(&dst.peer))
    }

    pub fn release(&self, id: u64) -> Result<(), Errno> {
        self.peer.handle_release(self.fd, id)
    }

    pub fn destroy(&self, ids: &[u64], flags: u64) -> Result<(), Errno> {
        let cmd = bus1_cmd_nodes_destroy { flags, ptr_nodes: self.mem.put_u64s(ids), n_nodes: ids.len() as u64 };
        self.peer.nodes_destroy(self.fd, &cmd, &self.mem)
    }

    pub fn slice_release(&self, off: u64) -> Result<(), Errno> {
        self.peer.slice_release(self.fd, off)
    }

    pub fn reset(&self, flags: u64) -> Result<(), Errno> {
        self.peer.reset(self.fd, &bus1_cmd_peer_reset { flags, peer_flags: u64::MAX, max_slices: u32::MAX, max_handles: u32::MAX, max_inflight_bytes: u32::MAX, max_inflight_fds: u32::MAX })
    }

    pub fn limits(&self, slices: u32, handles: u32, bytes: u32, fds: u32) -> Result<(), Errno> {
        self.peer.reset(self.fd, &bus1_cmd_peer_reset { flags: 0, peer_flags: u64::MAX, max_slices: slices, max_handles: handles, max_inflight_bytes: bytes, max_inflight_fds: fds })
    }

    /// Whether the peer is readable, as a waiter computes it.
    pub fn readable(&self) -> bool {
        self.peer.readiness().readable
    }

    /// Whether the kernel reports the peer socket readable (what a waiter
    /// the shim cannot see gets).
    pub fn socket_readable(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) };
        p.revents & libc::POLLIN != 0
    }

    /// Whether the peer socket becomes readable within `ms`.
    pub fn socket_readable_within(&self, ms: i32) -> bool {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
        p.revents & libc::POLLIN != 0
    }
}

impl Drop for P1 {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(self.fd) };
        self.peer.closed();
    }
}

/// Whether this is the process to run test `name` in: one of its own,
/// started here (the test binary again, running only `name`), with no
/// watcher thread, so that nothing recovers in the background what the
/// test means to recover itself. Returns false in the test's own process
/// once that one has passed.
#[allow(dead_code)]
pub fn alone(name: &str) -> bool {
    const ROLE: &str = "BUS1_RT_ALONE";
    if std::env::var(ROLE).is_ok_and(|v| v == name) {
        return true;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--quiet", "--test-threads=1"])
        .env(ROLE, name)
        .env("BUS1_NO_WATCHER", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{name} failed in its own process: {status}");
    false
}
