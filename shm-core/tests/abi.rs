//! The two ABIs through the engine's API: the final RECV, how a peer's ABI
//! is chosen and latched, and what follows from it (peer flags, the pool).

mod common;
use common::*;
use shm_core::{Abi, AbiMode, Errno, OpenFlags, Peer, SimMem, POOL_SIZE, POOL_SIZE_FINAL};
use uapi::*;

fn open(bus: &Bus, mode: AbiMode) -> P1 {
    let flags = OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true };
    let (fd, peer) = Peer::open_as(&bus.dir, flags, mode).unwrap();
    P1 { fd, peer, mem: SimMem::new() }
}

fn peer_flags(p: &P1, peer_flags: u64) -> Result<(), Errno> {
    let keep = u32::MAX;
    p.peer.reset(p.fd, &bus1_cmd_peer_reset { flags: 0, peer_flags, max_slices: keep, max_handles: keep, max_inflight_bytes: keep, max_inflight_fds: keep })
}

#[test]
fn final_recv_reports_the_final_layout() {
    let bus = Bus::new("abi-layout");
    let a = bus.peer();
    let b = bus.peer();
    let h = a.transfer(0x100, &b).unwrap();
    b.send(&[h], b"one").unwrap();
    a.send(&[0x100, 0x200], b"two").unwrap();
    let m = a.peer.recv_final(a.fd, 0, POOL_SIZE_FINAL).unwrap();
    assert_eq!(m, final_abi::bus1_msg { r#type: BUS1_MSG_DATA, flags: 0, destination: 0x100, offset: 0, n_bytes: 3, n_handles: 0, n_fds: 0 });
    let m = a.peer.recv_final(a.fd, 0, POOL_SIZE_FINAL).unwrap();
    assert_eq!((m.destination, m.flags), (0x100, final_abi::BUS1_MSG_FLAG_CONTINUE));
    // the same peer answers the v1 number too, in its layout
    let m = a.peer.recv(a.fd, 0, POOL_SIZE).unwrap();
    assert_eq!((m.destination, m.flags, m.pid), (0x200, 0, std::process::id()));
    assert_eq!(a.peer.abi(), Ok(Some(Abi::Final)));
}

#[test]
fn final_recv_flags() {
    let bus = Bus::new("abi-flags");
    let a = bus.peer();
    a.send(&[0x100], b"x").unwrap();
    for bad in [0x4, 0x8, 1 << 63] {
        assert_eq!(a.peer.recv_final(a.fd, bad, POOL_SIZE_FINAL), Err(Errno::EINVAL));
    }
    // 0x1 is SEED: no seed, and the queue is not looked at
    assert_eq!(a.peer.recv_final(a.fd, final_abi::BUS1_RECV_FLAG_SEED, POOL_SIZE_FINAL), Err(Errno::EAGAIN));
    assert_eq!(a.peer.recv_final(a.fd, final_abi::BUS1_RECV_FLAG_INSTALL_FDS, POOL_SIZE_FINAL).map(|m| m.n_bytes), Ok(1));
}

#[test]
fn modes_fix_the_abi_and_refuse_the_other_recv() {
    let bus = Bus::new("abi-modes");
    let v = open(&bus, AbiMode::V1);
    let f = open(&bus, AbiMode::Final);
    let a = open(&bus, AbiMode::Auto);
    assert_eq!(v.peer.abi(), Ok(Some(Abi::V1)));
    assert_eq!(f.peer.abi(), Ok(Some(Abi::Final)));
    assert_eq!(a.peer.abi(), Ok(None));
    assert_eq!(v.peer.recv_final(v.fd, 0, POOL_SIZE_FINAL), Err(Errno::ENOTTY));
    assert_eq!(v.peer.latch_recv(Abi::Final), Err(Errno::ENOTTY));
    assert_eq!(f.peer.recv(f.fd, 0, POOL_SIZE), Err(Errno::ENOTTY));
    assert_eq!(v.peer.recv(v.fd, 0, POOL_SIZE), Err(Errno::EAGAIN));
    assert_eq!(f.peer.recv_final(f.fd, 0, POOL_SIZE), Err(Errno::EAGAIN));
    // peer flags: v1 has them, final has none
    assert_eq!(peer_flags(&v, 1), Ok(()));
    assert_eq!(v.peer.query(0).map(|q| q.peer_flags), Ok(1));
    assert_eq!(peer_flags(&f, 0), Err(Errno::EINVAL));
    assert_eq!(peer_flags(&f, u64::MAX), Ok(()));
    // a fixed peer's PEER_RESET with v1 flags latches nothing either
    assert_eq!(f.peer.abi(), Ok(Some(Abi::Final)));
}

#[test]
fn auto_latches_on_the_first_call_that_tells() {
    let bus = Bus::new("abi-latch");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    // these tell nothing
    a.send(&[0x100], b"x").unwrap();
    a.reset(0).unwrap();
    assert_eq!(peer_flags(&a, 2), Err(Errno::EINVAL));
    assert_eq!(a.peer.query(0).map(|q| q.peer_flags), Ok(0));
    assert_eq!(a.peer.abi(), Ok(None));
    // a failing final RECV latches
    assert_eq!(a.peer.recv_final(a.fd, 0x4, POOL_SIZE_FINAL), Err(Errno::EINVAL));
    assert_eq!(a.peer.abi(), Ok(Some(Abi::Final)));
    // for good
    assert_eq!(a.recv().map(|m| m.payload), Ok(b"x".to_vec()));
    assert_eq!(peer_flags(&a, 1), Err(Errno::EINVAL));
    assert_eq!(a.peer.abi(), Ok(Some(Abi::Final)));
    // a failing v1 RECV latches v1
    assert_eq!(b.peer.recv(b.fd, 0x8, POOL_SIZE), Err(Errno::EINVAL));
    assert_eq!(b.peer.abi(), Ok(Some(Abi::V1)));
    // a failing PEER_RESET with v1 peer flags latches v1
    let keep = u32::MAX;
    let bad = bus1_cmd_peer_reset { flags: 0x80, peer_flags: 1, max_slices: keep, max_handles: keep, max_inflight_bytes: keep, max_inflight_fds: keep };
    assert_eq!(c.peer.reset(c.fd, &bad), Err(Errno::EINVAL));
    assert_eq!(c.peer.abi(), Ok(Some(Abi::V1)));
    assert_eq!(c.peer.recv_final(c.fd, 0, POOL_SIZE_FINAL), Err(Errno::EAGAIN));
    assert_eq!(c.peer.abi(), Ok(Some(Abi::V1)));
}

#[test]
fn a_disconnected_peer_latches_nothing() {
    let bus = Bus::new("abi-disconnected");
    let a = open(&bus, AbiMode::V1);
    let b = bus.peer();
    a.peer.disconnect(a.fd, 0).unwrap();
    b.peer.disconnect(b.fd, 0).unwrap();
    assert_eq!(a.peer.latch_recv(Abi::Final), Err(Errno::ESHUTDOWN));
    assert_eq!(b.peer.recv_final(b.fd, 0, POOL_SIZE_FINAL), Err(Errno::ESHUTDOWN));
    assert_eq!(b.peer.abi(), Err(Errno::ESHUTDOWN));
}

/// The final latch grows the pool; when that fails (here: its file is
/// gone), the RECV fails with ENOMEM and nothing latches.
#[test]
fn a_latch_that_cannot_grow_the_pool_changes_nothing() {
    let bus = Bus::new("abi-grow-fails");
    let a = bus.peer();
    a.send(&[0x100], b"kept").unwrap();
    let pool = a.peer.domain().memory_dir().join(format!("pool.{:x}", a.peer.serial()));
    let moved = pool.with_extension("moved");
    std::fs::rename(&pool, &moved).unwrap();
    assert_eq!(a.peer.recv_final(a.fd, 0, POOL_SIZE_FINAL), Err(Errno::ENOMEM));
    assert_eq!(a.peer.abi(), Ok(None));
    std::fs::rename(&moved, &pool).unwrap();
    let m = a.peer.recv_final(a.fd, 0, POOL_SIZE_FINAL).unwrap();
    assert_eq!(m.n_bytes, 4);
    assert_eq!(a.peer.abi(), Ok(Some(Abi::Final)));
    assert_eq!(std::fs::metadata(&pool).unwrap().len(), POOL_SIZE_FINAL);
}

/// The pool file follows the peer's ABI: 512 MiB until the final latch
/// (and for good for a v1 peer), 4 GiB after it or from the start.
#[test]
fn pool_files_follow_the_abi() {
    let bus = Bus::new("abi-pool-files");
    let a = bus.peer();
    let v = open(&bus, AbiMode::V1);
    let f = open(&bus, AbiMode::Final);
    let len = |p: &P1| std::fs::metadata(p.peer.domain().memory_dir().join(format!("pool.{:x}", p.peer.serial()))).unwrap().len();
    assert_eq!((len(&a), len(&v), len(&f)), (POOL_SIZE, POOL_SIZE, POOL_SIZE_FINAL));
    assert_eq!(v.peer.recv_final(v.fd, 0, POOL_SIZE_FINAL), Err(Errno::ENOTTY));
    assert_eq!(a.peer.recv(a.fd, 0, POOL_SIZE), Err(Errno::EAGAIN));
    assert_eq!(a.peer.recv_final(a.fd, 0, POOL_SIZE_FINAL), Err(Errno::EAGAIN));
    assert_eq!((len(&a), len(&v), len(&f)), (POOL_SIZE, POOL_SIZE, POOL_SIZE_FINAL));
    let b = bus.peer();
    assert_eq!(b.peer.recv_final(b.fd, 0, POOL_SIZE_FINAL), Err(Errno::EAGAIN));
    assert_eq!(len(&b), POOL_SIZE_FINAL);
}
