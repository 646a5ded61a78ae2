//! The engine driven directly (no preload): messages, handles, nodes,
//! notifications, quotas, pools and readiness, in one process.

mod common;
use common::*;
use shm_core::{Errno, UserMem};
use uapi::*;

#[test]
fn unicast_roundtrip_and_readiness() {
    let bus = Bus::new("unicast");
    let a = bus.peer();
    let b = bus.peer();
    let id_b = a.transfer(0x100, &b).unwrap_or_else(|e| panic!("{e}"));
    // a created node 0x100; b gets the first remote ID
    assert_eq!(id_b, 0xB);
    assert!(!a.readable());
    b.send(&[id_b], b"hello").unwrap();
    assert!(a.readable());
    let m = a.recv().unwrap();
    assert_eq!(m.m.r#type, BUS1_MSG_DATA);
    assert_eq!(m.m.destination, 0x100);
    assert_eq!(m.payload, b"hello");
    assert_eq!(m.m.offset, 0);
    assert!(!a.readable());
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
    a.slice_release(m.m.offset).unwrap();
    assert_eq!(a.slice_release(m.m.offset), Err(Errno::ENXIO));
}

#[test]
fn remote_ids_count_up_and_are_never_reused() {
    let bus = Bus::new("ids");
    let a = bus.peer();
    let b = bus.peer();
    assert_eq!(a.transfer(0x100, &b), Ok(0xB));
    assert_eq!(a.transfer(0x200, &b), Ok(0x13));
    // coalescing: the same node again gives the same ID
    assert_eq!(a.transfer(0x100, &b), Ok(0xB));
    // two references now; release both, then the ID is gone
    b.release(0xB).unwrap();
    b.release(0xB).unwrap();
    assert_eq!(b.release(0xB), Err(Errno::ENXIO));
    // getting it again gives a new ID
    assert_eq!(a.transfer(0x100, &b), Ok(0x1B));
    // transfer to the owner yields the owner's ID
    assert_eq!(b.transfer(0x1B, &a), Ok(0x100));
}

#[test]
fn release_errors() {
    let bus = Bus::new("release");
    let a = bus.peer();
    assert_eq!(a.release(0x1), Err(Errno::ENXIO));
    assert_eq!(a.release(0x2), Err(Errno::ENXIO));
    assert_eq!(a.release(0x400), Err(Errno::EBUSY));
    // the EBUSY above created nothing: destroying 0x400 now creates it
    let b = bus.peer();
    assert_eq!(a.transfer(0x400, &b), Ok(0xB));
    // owner pin
    assert_eq!(a.release(0x400), Err(Errno::EBUSY));
    a.destroy(&[0x400], 0).unwrap();
    a.release(0x400).unwrap();
    assert_eq!(a.release(0x400), Err(Errno::EBUSY));
}

#[test]
fn release_notification_when_last_remote_reference_goes() {
    let bus = Bus::new("relnote");
    let a = bus.peer();
    let b = bus.peer();
    let id = a.transfer(0x100, &b).unwrap();
    assert!(!a.readable());
    b.release(id).unwrap();
    let m = a.recv().unwrap();
    assert_eq!(m.m.r#type, BUS1_MSG_NODE_RELEASE);
    assert_eq!(m.m.destination, 0x100);
    assert_eq!(m.m.offset, BUS1_OFFSET_INVALID);
    assert_eq!((m.m.uid, m.m.gid, m.m.pid, m.m.tid), (u32::MAX, u32::MAX, 0, 0));
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
}

#[test]
fn release_notification_withdrawn_by_new_reference() {
    let bus = Bus::new("withdraw");
    let a = bus.peer();
    let b = bus.peer();
    let id = a.transfer(0x100, &b).unwrap();
    b.release(id).unwrap();
    assert!(a.readable());
    a.transfer(0x100, &b).unwrap();
    assert!(!a.readable());
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
}

#[test]
fn destroy_notifies_owner_and_holders_in_order() {
    let bus = Bus::new("destroy");
    let a = bus.peer();
    let b = bus.peer();
    let h1 = a.transfer(0x100, &b).unwrap();
    let h2 = a.transfer(0x200, &b).unwrap();
    b.send(&[h1], b"before").unwrap();
    a.destroy(&[0x100, 0x200], 0).unwrap();
    b.send(&[h1], b"after").unwrap();
    // owner: the message before, then two NODE_DESTROY (CONTINUE on the first)
    let m = a.recv().unwrap();
    assert_eq!((m.m.r#type, m.payload.as_slice()), (BUS1_MSG_DATA, &b"before"[..]));
    let d1 = a.recv().unwrap();
    assert_eq!((d1.m.r#type, d1.m.destination, d1.m.flags), (BUS1_MSG_NODE_DESTROY, 0x100, BUS1_MSG_FLAG_CONTINUE));
    let d2 = a.recv().unwrap();
    assert_eq!((d2.m.r#type, d2.m.destination, d2.m.flags), (BUS1_MSG_NODE_DESTROY, 0x200, 0));
    // the message after the destruction is discarded
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
    // holder
    let d1 = b.recv().unwrap();
    assert_eq!((d1.m.r#type, d1.m.destination, d1.m.flags), (BUS1_MSG_NODE_DESTROY, h1, BUS1_MSG_FLAG_CONTINUE));
    let d2 = b.recv().unwrap();
    assert_eq!((d2.m.r#type, d2.m.destination), (BUS1_MSG_NODE_DESTROY, h2));
    // errors of NODES_DESTROY
    assert_eq!(a.destroy(&[0x100], 0), Err(Errno::ESTALE));
    assert_eq!(b.destroy(&[h1], 0), Err(Errno::EREMOTE));
    assert_eq!(a.destroy(&[0x300, 0x300], 0), Err(Errno::ENOTUNIQ));
    assert_eq!(a.destroy(&[0x7], 0), Err(Errno::ENXIO));
    assert_eq!(a.destroy(&[0x100], 2), Err(Errno::EINVAL));
    // after the owner released its handle, SEND fails
    a.release(0x100).unwrap();
    assert_eq!(b.send(&[h1], b"x"), Err(Errno::ESHUTDOWN));
}

/// Long destination lists (more than 16, where duplicates are found by a
/// set) on both paths: a duplicate anywhere is ENOTUNIQ and delivers
/// nothing, distinct ones all get the message.
#[test]
fn long_destination_lists_find_duplicates() {
    let bus = Bus::new("long-dests");
    let a = bus.peer();
    let rs: Vec<P1> = (0..40).map(|_| bus.peer()).collect();
    let ids: Vec<u64> = rs.iter().map(|r| r.transfer(0x100, &a).unwrap()).collect();
    let own = 0x200; // a node of a's own, attached as a handle: the transaction path
    for (k, with_handle) in [(17usize, false), (39, false), (17, true), (39, true)] {
        let mut dests = ids[..k].to_vec();
        dests.push(ids[k / 2]);
        let handles: &[u64] = if with_handle { &[own] } else { &[] };
        assert_eq!(a.send_h(&dests, b"dup", handles), Err(Errno::ENOTUNIQ), "{k} {with_handle}");
        assert!(rs.iter().all(|r| r.recv().err() == Some(Errno::EAGAIN)), "{k} {with_handle}: delivered");
        dests.pop();
        a.send_h(&dests, b"ok", handles).unwrap();
        for r in &rs[..k] {
            assert_eq!(r.recv().unwrap().payload, b"ok", "{k} {with_handle}");
        }
        assert!(rs.iter().all(|r| r.recv().err() == Some(Errno::EAGAIN)));
    }
}

#[test]
fn failed_multicast_delivers_nothing() {
    let bus = Bus::new("atomic");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let hc = c.transfer(0x100, &a).unwrap();
    assert_eq!(a.send(&[hb, hc, 0x3], b"x"), Err(Errno::ENXIO));
    assert_eq!(a.send(&[hb, hc, hb], b"x"), Err(Errno::ENOTUNIQ));
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    assert_eq!(c.recv().err(), Some(Errno::EAGAIN));
    a.send(&[hb, hc], b"ok").unwrap();
    let mb = b.recv().unwrap();
    let mc = c.recv().unwrap();
    assert_eq!(mb.payload, b"ok");
    assert_eq!(mc.payload, b"ok");
    // distinct peers: no CONTINUE
    assert_eq!(mb.m.flags & BUS1_MSG_FLAG_CONTINUE, 0);
}

#[test]
fn handles_in_messages_are_installed_and_usable() {
    let bus = Bus::new("payload-handles");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    // a sends b a handle to a new node 0x200 (twice) and to b's own node
    a.send_h(&[hb], b"h", &[0x200, 0x200, hb]).unwrap();
    let m = b.recv().unwrap();
    assert_eq!(m.handles, vec![0xB, 0xB, 0x100]);
    // the received ID works as a destination
    b.send(&[0xB], b"back").unwrap();
    let r = a.recv().unwrap();
    assert_eq!((r.m.destination, r.payload.as_slice()), (0x200, &b"back"[..]));
    // two user references were installed
    b.release(0xB).unwrap();
    b.release(0xB).unwrap();
    assert_eq!(b.release(0xB), Err(Errno::ENXIO));
    // a's node 0x200 is now unreferenced: release notification
    let n = a.recv().unwrap();
    assert_eq!((n.m.r#type, n.m.destination), (BUS1_MSG_NODE_RELEASE, 0x200));
}

#[test]
fn handle_to_node_destroyed_before_the_message_is_invalid() {
    let bus = Bus::new("invalid");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let hx = b.transfer(0x500, &a).unwrap();
    b.destroy(&[0x500], 0).unwrap();
    a.send_h(&[hb], b"x", &[hx]).unwrap();
    let _ = b.recv().unwrap(); // b's own NODE_DESTROY for 0x500
    let m = b.recv().unwrap();
    assert_eq!(m.handles, vec![BUS1_HANDLE_INVALID]);
}

#[test]
fn fair_share_slice_quota() {
    let bus = Bus::new("quota");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    b.limits(10, u32::MAX, u32::MAX, u32::MAX).unwrap();
    let mut sent = 0;
    while a.send(&[hb], b"x").is_ok() {
        sent += 1;
        assert!(sent < 100);
    }
    // R_peer >= s_peer + 2c with R = 10 - k, s = k: k <= 4 → 5 messages
    assert_eq!(sent, 5);
    assert_eq!(a.send(&[hb], b"x"), Err(Errno::EDQUOT));
    let m = b.recv().unwrap();
    // dequeued: the share is gone, but the slice stays charged until released
    assert_eq!(a.send(&[hb], b"x"), Err(Errno::EDQUOT));
    b.slice_release(m.m.offset).unwrap();
    a.send(&[hb], b"x").unwrap();
}

#[test]
fn continue_reports_per_destination_errors() {
    let bus = Bus::new("continue");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    let hc = c.transfer(0x100, &a).unwrap();
    // c's node goes away
    c.destroy(&[0x100], 0).unwrap();
    c.release(0x100).unwrap();
    let errs = a.mem.put_u64s(&[77, 77]);
    a.send_full(BUS1_SEND_FLAG_CONTINUE, &[hb, hc], &[b"x"], &[], &[], errs).unwrap();
    let e = a.mem.get(errs, 16);
    assert_eq!(u64::from_ne_bytes(e[..8].try_into().unwrap()), 0);
    assert_eq!(u64::from_ne_bytes(e[8..].try_into().unwrap()), libc::ESHUTDOWN as u64);
    assert_eq!(b.recv().unwrap().payload, b"x");
    // without CONTINUE the whole call fails
    assert_eq!(a.send(&[hb, hc], b"y"), Err(Errno::ESHUTDOWN));
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
    // an unwritable errors array fails with nothing sent
    let ro = a.mem.put_ro(&[0; 16]);
    assert_eq!(a.send_full(BUS1_SEND_FLAG_CONTINUE, &[hb, hc], &[b"z"], &[], &[], ro), Err(Errno::EFAULT));
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
}

#[test]
fn seed_is_set_read_and_flushed() {
    let bus = Bus::new("seed");
    let a = bus.peer();
    assert_eq!(a.recv_flags(BUS1_RECV_FLAG_SEED).err(), Some(Errno::EAGAIN));
    assert_eq!(a.send_full(BUS1_SEND_FLAG_SEED, &[0x100], &[b"s"], &[], &[], 0), Err(Errno::EINVAL));
    assert_eq!(a.send_full(BUS1_SEND_FLAG_SEED | BUS1_SEND_FLAG_CONTINUE, &[], &[b"s"], &[], &[], 0), Err(Errno::EINVAL));
    a.send_full(BUS1_SEND_FLAG_SEED, &[], &[b"seed-1"], &[0x100], &[], 0).unwrap();
    a.send_full(BUS1_SEND_FLAG_SEED, &[], &[b"seed-2"], &[0x100], &[], 0).unwrap();
    assert!(!a.readable());
    let m = a.recv_flags(BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_PEEK).unwrap();
    assert_eq!(m.payload, b"seed-2");
    assert_eq!(m.handles, vec![0x100]);
    // FLUSH without FLUSH_SEED keeps it and spares node 0x100
    a.reset(BUS1_PEER_RESET_FLAG_FLUSH).unwrap();
    let m = a.recv_flags(BUS1_RECV_FLAG_SEED).unwrap();
    assert_eq!(m.payload, b"seed-2");
    assert_eq!(a.recv_flags(BUS1_RECV_FLAG_SEED).err(), Some(Errno::EAGAIN));
    a.send_full(BUS1_SEND_FLAG_SEED, &[], &[b"seed-3"], &[], &[], 0).unwrap();
    a.reset(BUS1_PEER_RESET_FLAG_FLUSH_SEED).unwrap();
    assert_eq!(a.recv_flags(BUS1_RECV_FLAG_SEED).err(), Some(Errno::EAGAIN));
}

#[test]
fn reset_flush_destroys_nodes_and_drops_everything() {
    let bus = Bus::new("flush");
    let a = bus.peer();
    let b = bus.peer();
    let hb = a.transfer(0x100, &b).unwrap();
    let ha = b.transfer(0x200, &a).unwrap();
    b.send(&[hb], b"queued").unwrap();
    a.reset(BUS1_PEER_RESET_FLAG_FLUSH).unwrap();
    assert!(!a.readable());
    assert_eq!(a.recv().err(), Some(Errno::EAGAIN));
    // b's handle to a's node: NODE_DESTROY; b's node lost a's reference: NODE_RELEASE
    let mut got = vec![];
    while let Ok(m) = b.recv() {
        got.push((m.m.r#type, m.m.destination));
    }
    got.sort();
    assert_eq!(got, vec![(BUS1_MSG_NODE_DESTROY, hb), (BUS1_MSG_NODE_RELEASE, 0x200)]);
    // a's handle to b's node is gone; the ID counter continues
    assert_eq!(a.release(ha), Err(Errno::ENXIO));
    assert_eq!(b.transfer(0x200, &a), Ok(0x13));
    // user IDs can be reused after the flush
    a.send(&[0x100], b"self").unwrap();
    assert_eq!(a.recv().unwrap().m.destination, 0x100);
}

#[test]
fn disconnect_and_close_notify_holders() {
    let bus = Bus::new("disconnect");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    let hb = a.transfer(0x100, &b).unwrap();
    let hc = c.transfer(0x300, &b).unwrap();
    assert_eq!(a.peer.disconnect(a.fd, 1), Err(Errno::EINVAL));
    a.peer.disconnect(a.fd, 0).unwrap();
    assert_eq!(a.peer.disconnect(a.fd, 0), Err(Errno::ESHUTDOWN));
    assert_eq!(a.recv().err(), Some(Errno::ESHUTDOWN));
    let m = b.recv().unwrap();
    assert_eq!((m.m.r#type, m.m.destination), (BUS1_MSG_NODE_DESTROY, hb));
    assert_eq!(b.send(&[hb], b"x"), Err(Errno::ESHUTDOWN));
    drop(c);
    let m = b.recv().unwrap();
    assert_eq!((m.m.r#type, m.m.destination), (BUS1_MSG_NODE_DESTROY, hc));
    b.release(hb).unwrap();
    b.release(hc).unwrap();
}

#[test]
fn messages_of_a_closed_sender_stay_queued() {
    let bus = Bus::new("closed-sender");
    let a = bus.peer();
    let b = bus.peer();
    let ha = a.transfer(0x100, &b).unwrap();
    b.send_h(&[ha], b"last words", &[0x200]).unwrap();
    drop(b);
    let m = a.recv().unwrap();
    assert_eq!(m.payload, b"last words");
    // the carried node was b's and is destroyed now, after the message
    assert_eq!(m.handles, vec![0xB]);
    let d = a.recv().unwrap();
    assert_eq!((d.m.r#type, d.m.destination), (BUS1_MSG_NODE_DESTROY, 0xB));
}

#[test]
fn pool_offsets_and_erange() {
    let bus = Bus::new("pool");
    let a = bus.peer();
    a.send(&[0x100], &[1u8; 10]).unwrap();
    a.send(&[0x100], &[2u8; 20]).unwrap();
    let m1 = a.recv().unwrap();
    assert_eq!(m1.m.offset, 0);
    // slice sizes are 8-aligned: 16
    assert_eq!(a.peer.recv(a.fd, 0, 16 + 23).err(), Some(Errno::ERANGE));
    let m2 = a.peer.recv(a.fd, 0, 16 + 24).unwrap();
    assert_eq!(m2.offset, 16);
    a.slice_release(0).unwrap();
    a.send(&[0x100], &[3u8; 16]).unwrap();
    assert_eq!(a.recv().unwrap().m.offset, 0);
}

#[test]
fn fds_travel_in_messages() {
    let bus = Bus::new("fds");
    let a = bus.peer();
    let mut p = [0i32; 2];
    // SAFETY: valid out array.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    a.send_full(0, &[0x100], &[b"fd"], &[], &[p[1]], 0).unwrap();
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(p[1]) };
    let m = a.recv_flags(BUS1_RECV_FLAG_INSTALL_FDS).unwrap();
    assert_eq!(m.m.n_fds, 1);
    let pool = a.pool();
    let at = m.m.offset as usize + 8;
    let fd = i32::from_ne_bytes(pool[at..at + 4].try_into().unwrap());
    assert!(fd >= 0);
    // SAFETY: writing 3 bytes from a valid buffer to the installed fd, and
    // reading them back from the pipe.
    unsafe {
        assert_eq!(libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(libc::write(fd, b"abc".as_ptr() as *const _, 3), 3);
        let mut buf = [0u8; 3];
        assert_eq!(libc::read(p[0], buf.as_mut_ptr() as *mut _, 3), 3);
        assert_eq!(&buf, b"abc");
        libc::close(fd);
        libc::close(p[0]);
    }
    // a peer fd cannot be sent
    assert_eq!(a.send_full(0, &[0x100], &[b"x"], &[], &[a.fd], 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(a.send_full(0, &[0x100], &[b"x"], &[], &[-1], 0), Err(Errno::EBADF));
}

#[test]
fn everything_is_reclaimed_when_peers_close() {
    let bus = Bus::new("reclaim");
    let base = {
        let a = bus.peer();
        let s = a.peer.domain().stats().unwrap();
        drop(a);
        let after = bus.peer();
        let d = after.peer.domain().clone();
        drop(after);
        let _ = s;
        d.stats().unwrap()
    };
    {
        let a = bus.peer();
        let b = bus.peer();
        let hb = a.transfer(0x100, &b).unwrap();
        for i in 0..50u64 {
            b.send_h(&[hb], b"payload", &[0x1000 + 4 * i]).unwrap();
        }
        let _ = a.recv().unwrap();
        b.send_full(BUS1_SEND_FLAG_SEED, &[], &[b"seed"], &[0x4], &[], 0).unwrap();
    }
    let d = shm_core::Domain::attach(&bus.dir).unwrap();
    let now = d.stats().unwrap();
    assert_eq!(now.peers, 0);
    assert_eq!(now.live_bytes, base.live_bytes, "leaked shared memory: {now:?} vs {base:?}");
    assert_eq!(now.table_entries, base.table_entries);
}

/// Released slices at the pool's tail give their pages back: once a burst
/// of messages has been received and released, the pool file keeps only
/// its first MiB (the part a steady stream reuses) resident.
#[test]
fn free_pool_tail_pages_are_returned() {
    use std::os::unix::fs::MetadataExt;
    let bus = Bus::new("trim");
    let a = bus.peer();
    let b = bus.peer();
    let hb = a.transfer(0x100, &b).unwrap();
    let pool_path = bus.dir.join(format!("pool.{}", a.peer.serial()));
    let resident = || std::fs::metadata(&pool_path).unwrap().blocks() * 512;
    let payload = vec![0xa5u8; 16 << 10];
    for _ in 0..256 {
        b.send(&[hb], &payload).unwrap();
    }
    assert!(resident() >= 256 * (16 << 10), "burst is resident: {}", resident());
    let mut offsets = Vec::new();
    for _ in 0..256 {
        let m = a.recv().unwrap();
        assert_eq!(m.payload, payload);
        offsets.push(m.m.offset);
    }
    for off in offsets {
        a.slice_release(off).unwrap();
    }
    assert!(resident() <= (1 << 20) + (64 << 10), "free pages kept: {} bytes", resident());
    // The pool still works and reuses the punched range.
    b.send(&[hb], b"after").unwrap();
    let m = a.recv().unwrap();
    assert_eq!(m.payload, b"after");
    assert_eq!(m.m.offset, 0);
}

/// Holes between live slices are given back too: with every other slice
/// of a 4 MiB backlog released, at most the first MiB and the live slices
/// beyond it stay resident (plus the sweep's slack), and the live slices
/// keep their data. (The watcher's scan may already have given back more,
/// see the next test.)
#[test]
fn freed_pages_between_live_slices_are_returned() {
    use std::os::unix::fs::MetadataExt;
    const BIG: usize = 64 << 10;
    const KEEP: u64 = 1 << 20;
    const SLACK: u64 = 256 << 10;
    let bus = Bus::new("holes");
    let a = bus.peer();
    let pool_path = bus.dir.join(format!("pool.{}", a.peer.serial()));
    let resident = || std::fs::metadata(&pool_path).unwrap().blocks() * 512;
    assert_eq!(resident(), 0);
    for i in 0..64u8 {
        a.send(&[0x100], &vec![i; BIG]).unwrap();
    }
    assert_eq!(resident(), 64 * BIG as u64);
    let offs: Vec<u64> = (0..64).map(|_| a.recv().unwrap().m.offset).collect();
    for off in offs.iter().step_by(2) {
        a.slice_release(*off).unwrap();
    }
    let live_beyond_keep = offs.iter().skip(1).step_by(2).filter(|&&o| o >= KEEP).count() as u64 * BIG as u64;
    let held = resident();
    assert!(held >= live_beyond_keep && held <= KEEP + live_beyond_keep + SLACK, "{held} bytes resident");
    let pool = std::fs::File::open(&pool_path).unwrap();
    let mut buf = vec![0u8; BIG];
    for (i, off) in offs.iter().enumerate().skip(1).step_by(2) {
        std::os::unix::fs::FileExt::read_exact_at(&pool, &mut buf, *off).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8), "slice {i} damaged");
    }
    for off in offs.iter().skip(1).step_by(2) {
        a.slice_release(*off).unwrap();
    }
    assert!(resident() <= KEEP + SLACK);
}

/// Room freed while the queue still holds messages stays resident: the
/// next sends take it again. Once the queue is empty, the next release
/// gives back what was freed beyond the first MiB meanwhile.
#[test]
fn freed_room_of_a_backlog_is_returned_once_the_queue_is_empty() {
    // Without a watcher, whose scan could give the room back meanwhile.
    if !alone("freed_room_of_a_backlog_is_returned_once_the_queue_is_empty") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    const BIG: usize = 64 << 10;
    const KEEP: u64 = 1 << 20;
    const SLACK: u64 = 256 << 10;
    let bus = Bus::new("backlog");
    let a = bus.peer();
    let pool_path = bus.dir.join(format!("pool.{}", a.peer.serial()));
    let resident = || std::fs::metadata(&pool_path).unwrap().blocks() * 512;
    for i in 0..80u8 {
        a.send(&[0x100], &vec![i; BIG]).unwrap();
    }
    assert_eq!(resident(), 80 * BIG as u64);
    // 64 taken and released, 16 still queued behind them.
    for i in 0..64u8 {
        let m = a.recv().unwrap();
        assert!(m.payload.iter().all(|&b| b == i));
        a.slice_release(m.m.offset).unwrap();
    }
    assert_eq!(resident(), 80 * BIG as u64, "a backlog's freed room was punched");
    let mut last = Vec::new();
    for i in 64..80u8 {
        let m = a.recv().unwrap();
        assert!(m.payload.iter().all(|&b| b == i));
        last.push(m.m.offset);
    }
    // The queue is empty now: the first release sweeps.
    a.slice_release(last[0]).unwrap();
    let live = 15 * BIG as u64;
    assert!(resident() <= KEEP + live + SLACK, "{} bytes resident", resident());
    for off in &last[1..] {
        a.slice_release(*off).unwrap();
    }
    assert!(resident() <= KEEP + SLACK, "{} bytes resident", resident());
}

/// The periodic scan leaves a pool that messages came to since its
/// previous round as it is, and gives its free pages back at the first
/// round that finds it unchanged.
#[test]
fn periodic_sweep_waits_for_a_pool_to_stay_idle() {
    // Without a watcher, whose own rounds would interleave with these.
    if !alone("periodic_sweep_waits_for_a_pool_to_stay_idle") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    const BIG: usize = 16 << 10;
    let bus = Bus::new("idle2");
    let a = bus.peer();
    let pool_path = bus.dir.join(format!("pool.{}", a.peer.serial()));
    let resident = || std::fs::metadata(&pool_path).unwrap().blocks() * 512;
    let d = a.peer.domain().clone();
    for round in 0..3u8 {
        a.send(&[0x100], &vec![round; BIG]).unwrap();
        let m = a.recv().unwrap();
        a.slice_release(m.m.offset).unwrap();
        // Inside the first MiB: the message path keeps the pages.
        assert_eq!(resident(), BIG as u64);
        assert_eq!(d.sweep_idle_pools(), 0, "round {round}: a busy pool was swept");
        assert_eq!(resident(), BIG as u64);
    }
    assert_eq!(d.sweep_idle_pools(), BIG as u64);
    assert_eq!(resident(), 0);
    assert_eq!(d.sweep_idle_pools(), 0);
}

/// The periodic scan's sweep leaves exactly the pages of live slices
/// resident, the pool's first MiB and its free tail included, and the live
/// slices keep their data; once they are released too, nothing is left.
#[test]
fn scan_sweep_leaves_only_live_slice_pages() {
    use std::os::unix::fs::MetadataExt;
    const BIG: usize = 16 << 10;
    let bus = Bus::new("idle");
    let a = bus.peer();
    let pool_path = bus.dir.join(format!("pool.{}", a.peer.serial()));
    let resident = || std::fs::metadata(&pool_path).unwrap().blocks() * 512;
    // 40 slices of 16 KiB: all inside the first MiB, which the message
    // path never punches.
    for i in 0..40u8 {
        a.send(&[0x100], &vec![i; BIG]).unwrap();
    }
    let offs: Vec<u64> = (0..40).map(|_| a.recv().unwrap().m.offset).collect();
    for off in offs.iter().step_by(2) {
        a.slice_release(*off).unwrap();
    }
    a.peer.domain().sweep_pools();
    assert_eq!(resident(), 20 * BIG as u64);
    let pool = std::fs::File::open(&pool_path).unwrap();
    let mut buf = vec![0u8; BIG];
    for (i, off) in offs.iter().enumerate().skip(1).step_by(2) {
        std::os::unix::fs::FileExt::read_exact_at(&pool, &mut buf, *off).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8), "slice {i} damaged");
    }
    // A second sweep finds nothing left to punch.
    assert_eq!(a.peer.domain().sweep_pools(), 0);
    for off in offs.iter().skip(1).step_by(2) {
        a.slice_release(*off).unwrap();
    }
    a.peer.domain().sweep_pools();
    assert_eq!(resident(), 0);
    // The pool still works from its start.
    a.send(&[0x100], b"again").unwrap();
    let m = a.recv().unwrap();
    assert_eq!((m.m.offset, m.payload.as_slice()), (0, &b"again"[..]));
    assert_eq!(resident(), 4096);
}

/// A receiver whose last fd vanished without a teardown (its process
/// exited) is torn down by whoever notices: with exact tokens, the first
/// SEND that rings its socket (the SEND itself succeeds: its message is
/// committed before the ring, and is discarded with the peer). Later SENDs
/// fail as a SEND to a disconnected peer does; a multicast with CONTINUE
/// still reaches the live destinations. (In a process of its own: the
/// watcher thread's scan would otherwise race the SEND to the teardown.)
#[test]
fn send_to_a_peer_whose_fd_vanished_is_eshutdown() {
    if !alone("send_to_a_peer_whose_fd_vanished_is_eshutdown") {
        return;
    }
    let bus = Bus::exact("vanished");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    let ha = a.transfer(0x100, &b).unwrap();
    let hc = c.transfer(0x100, &b).unwrap();
    // Close a's socket behind the engine's back, as process exit would.
    // SAFETY: closing a descriptor this test owns; `a` is forgotten so
    // nothing uses it again.
    unsafe { libc::close(a.fd) };
    std::mem::forget(a);
    b.send(&[ha], b"x").unwrap();
    assert_eq!(b.send(&[ha], b"x"), Err(Errno::ESHUTDOWN));
    let errors = b.mem.put(&[0u8; 16]);
    b.send_full(BUS1_SEND_FLAG_CONTINUE, &[ha, hc], &[b"y"], &[], &[], errors).unwrap();
    let mut e = [0u8; 16];
    b.mem.read(errors, &mut e).unwrap();
    assert_eq!(u64::from_ne_bytes(e[..8].try_into().unwrap()), libc::ESHUTDOWN as u64);
    assert_eq!(u64::from_ne_bytes(e[8..].try_into().unwrap()), 0);
    assert_eq!(c.recv().unwrap().payload, b"y");
    // b learns that the node behind its handle is gone.
    let m = b.recv().unwrap();
    assert_eq!(m.m.r#type, BUS1_MSG_NODE_DESTROY);
    assert_eq!(m.m.destination, ha);
}

/// The same without exact tokens: nothing rings the dead peer's socket, so
/// the liveness scan (the watcher's, here called directly) tears it down.
#[test]
fn a_peer_whose_fd_vanished_is_torn_down_by_the_scan() {
    // Alone: the watcher's own scan must not find the peer first.
    if !alone("a_peer_whose_fd_vanished_is_torn_down_by_the_scan") {
        return;
    }
    let bus = Bus::new("vanished-lazy");
    let a = bus.peer();
    let b = bus.peer();
    let ha = a.transfer(0x100, &b).unwrap();
    // SAFETY: as above.
    unsafe { libc::close(a.fd) };
    std::mem::forget(a);
    assert_eq!(b.peer.domain().reap_dead_peers(), 1);
    assert_eq!(b.send(&[ha], b"x"), Err(Errno::ESHUTDOWN));
    let m = b.recv().unwrap();
    assert_eq!(m.m.r#type, BUS1_MSG_NODE_DESTROY);
    assert_eq!(m.m.destination, ha);
}

/// A failed multicast that took the last block of a free list (whose link
/// word is 0) and overwrote it must leave the free list intact: later
/// allocations keep working and hand out sane records.
#[test]
fn aborted_send_restores_the_free_list_end() {
    let bus = Bus::new("freelist");
    let a = bus.peer();
    let b = bus.peer();
    let c = bus.peer();
    let ha = a.transfer(0x100, &b).unwrap();
    let hc = c.transfer(0x100, &b).unwrap();
    // Messages through, so their records sit on the free lists; one slice
    // stays, so that the next slice starts at a non-zero offset (the first
    // word of its region record).
    b.send(&[ha], b"kept").unwrap();
    for _ in 0..3 {
        b.send(&[ha], b"warm").unwrap();
    }
    let _kept = a.recv().unwrap();
    for _ in 0..3 {
        let m = a.recv().unwrap();
        a.slice_release(m.m.offset).unwrap();
    }
    c.peer.disconnect(c.fd, 0).unwrap();
    for _ in 0..3 {
        assert_eq!(b.send(&[ha, hc], b"x"), Err(Errno::ESHUTDOWN));
        b.peer.domain().check_heap().unwrap();
    }
    for i in 0..50u8 {
        b.send(&[ha], &[i; 100]).unwrap();
    }
    for i in 0..50u8 {
        let m = a.recv().unwrap();
        assert_eq!(m.payload, vec![i; 100]);
        a.slice_release(m.m.offset).unwrap();
    }
}

/// The file sweep removes per-peer files only when nothing holds them: the
/// socket and pool of a serial without a record stay while a socket is
/// bound there (an opener at work) and go once it is closed; a vault file
/// goes once no socket is bound at it; a live peer's files stay.
#[test]
fn file_sweep_removes_only_files_nothing_holds() {
    use std::os::unix::net::UnixDatagram;
    let bus = Bus::new("files");
    let a = bus.peer();
    let b = bus.peer();
    let gone = b.peer.serial();
    drop(b);
    let dom = a.peer.domain();
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&bus.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    let live = names();
    // An opener at work on the torn-down serial's files, as far as the
    // sweep can tell: its socket is bound, its pool file made, no record.
    let opener = UnixDatagram::bind(bus.dir.join(format!("peer.{gone:x}"))).unwrap();
    std::fs::write(bus.dir.join(format!("pool.{gone:x}")), b"").unwrap();
    // A vault generation still held, and one nobody holds any more.
    let held = UnixDatagram::bind(bus.dir.join(format!("vault.{:x}.7", a.peer.serial()))).unwrap();
    drop(UnixDatagram::bind(bus.dir.join(format!("vault.{:x}.6", a.peer.serial()))).unwrap());
    // A serial never handed out is not the sweep's business.
    std::fs::write(bus.dir.join("pool.ffff"), b"").unwrap();
    // (The watcher thread may sweep too, so the files are what counts.)
    let with = |extra: &[String]| {
        let mut v = live.clone();
        v.extend_from_slice(extra);
        v.sort();
        v
    };
    let kept = [format!("peer.{gone:x}"), format!("pool.{gone:x}"), format!("vault.{:x}.7", a.peer.serial()), "pool.ffff".to_string()];
    assert!(dom.sweep_files() <= 1);
    assert_eq!(names(), with(&kept));
    drop(opener);
    drop(held);
    assert!(dom.sweep_files() <= 3);
    assert_eq!(names(), with(&kept[3..]));
    // The live peer is untouched and works.
    a.send(&[0x100], b"still here").unwrap();
    assert_eq!(a.recv().unwrap().payload, b"still here");
}

#[test]
fn failed_recv_keeps_ids_off_the_table_until_a_reference_exists() {
    let bus = Bus::new("failedrecv");
    let a = bus.peer();
    let b = bus.peer();
    let dest = a.transfer(0x100, &b).unwrap();
    b.send_h(&[dest], b"x", &[0x200]).unwrap();
    // The result cannot be written: nothing is delivered, and the ID the
    // handle got is not a's yet.
    let r = a.peer.recv_into(a.fd, 0, shm_core::POOL_SIZE, &|_| false);
    assert_eq!(r.err(), Some(Errno::EFAULT));
    assert_eq!(a.release(0xB), Err(Errno::ENXIO));
    // A retry reports the same ID, which now works.
    let m = a.recv().unwrap();
    assert_eq!(m.handles, vec![0xB]);
    a.release(0xB).unwrap();
    assert_eq!(a.release(0xB), Err(Errno::ENXIO));
    // Failed again, then flushed: the handle goes and leaves no table entry.
    b.send_h(&[dest], b"y", &[0x200]).unwrap();
    assert_eq!(a.peer.recv_into(a.fd, 0, shm_core::POOL_SIZE, &|_| false).err(), Some(Errno::EFAULT));
    a.reset(BUS1_PEER_RESET_FLAG_FLUSH).unwrap();
    assert_eq!(a.release(0x13), Err(Errno::ENXIO));
    b.reset(BUS1_PEER_RESET_FLAG_FLUSH).unwrap();
    drop(b);
    drop(a);
    // With every peer gone, nothing is left in the table.
    assert_eq!(bus_stats(&bus).table_entries, 0);
}

fn bus_stats(bus: &Bus) -> shm_core::Stats {
    shm_core::Domain::attach(&bus.dir).unwrap().stats().unwrap()
}

/// A peer's arena chunks go back to the heap with it and are reused by
/// later peers, their records as they were. A new peer's pool sentinel
/// taken from such a chunk (whose first record last held a message)
/// charges nothing: the peer's usage and its records add up.
#[test]
fn a_sentinel_in_a_reused_arena_chunk_charges_nothing() {
    let bus = Bus::new("reused-chunk");
    let a = bus.peer();
    let dom = a.peer.domain().clone();
    for round in 0..3 {
        let b = bus.peer();
        let hb = b.transfer(0x100, &a).unwrap();
        // more messages than one chunk holds: b's arena grows by chunks
        // whose first record holds a message
        for i in 0..40u32 {
            a.send(&[hb], &i.to_ne_bytes()).unwrap();
        }
        drop(b);
        a.recv().unwrap();
        a.release(hb).unwrap();
        // new peers take b's chunks, one each
        let fresh: Vec<P1> = (0..4).map(|_| bus.peer()).collect();
        let report = dom.check_invariants();
        assert!(report.is_empty(), "round {round}:\n{}", report.join("\n"));
        drop(fresh);
    }
}

/// A thread that sent to a destination before keeps where it led (no
/// lock of its own peer on the next unicasts), and that never outlives a
/// change to it: the handle released (here, from another thread), the
/// node destroyed (the SEND succeeds and delivers nothing), the caller
/// disconnected all give what a thread that never sent there gets.
#[test]
fn unicasts_to_a_known_destination_see_every_change_to_it() {
    let bus = Bus::new("resolved");
    let a = bus.peer();
    let b = bus.peer();
    // from a thread that never sent anywhere
    let cold = |p: &P1, id: u64| {
        let (peer, fd) = (&p.peer, p.fd);
        std::thread::scope(|t| {
            t.spawn(move || {
                let payload = [std::io::IoSlice::new(b"cold")];
                peer.send_slices(fd, shm_core::SendSlices { flags: 0, destinations: &[id], errors: None, payload: &payload, handles: &[], fds: &[] })
            })
            .join()
            .unwrap()
        })
    };
    // released from another thread
    let hb = a.transfer(0x100, &b).unwrap();
    for _ in 0..3 {
        b.send(&[hb], b"warm").unwrap();
    }
    std::thread::scope(|t| t.spawn(|| b.peer.handle_release(b.fd, hb)).join().unwrap()).unwrap();
    assert_eq!(b.send(&[hb], b"after release"), Err(Errno::ENXIO));
    assert_eq!(cold(&b, hb), Err(Errno::ENXIO));
    assert_eq!(data_payloads(&a), vec![b"warm".to_vec(); 3]);
    // the node destroyed by its owner
    let hb = a.transfer(0x200, &b).unwrap();
    b.send(&[hb], b"warm").unwrap();
    assert_eq!(data_payloads(&a), vec![b"warm".to_vec()]);
    a.destroy(&[0x200], 0).unwrap();
    let warm = b.send(&[hb], b"after destroy");
    assert_eq!(warm, cold(&b, hb));
    assert!(data_payloads(&a).is_empty());
    // the caller disconnected
    let hb = a.transfer(0x300, &b).unwrap();
    b.send(&[hb], b"warm").unwrap();
    assert_eq!(data_payloads(&a), vec![b"warm".to_vec()]);
    b.peer.disconnect(b.fd, 0).unwrap();
    assert_eq!(b.send(&[hb], b"after disconnect"), Err(Errno::ESHUTDOWN));
    assert_eq!(cold(&b, hb), Err(Errno::ESHUTDOWN));
    assert!(data_payloads(&a).is_empty());
}

/// The payloads of the data messages in `p`'s queue, which is emptied
/// (notifications are skipped).
fn data_payloads(p: &P1) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Ok(m) = p.recv() {
        if m.m.r#type == BUS1_MSG_DATA {
            v.push(m.payload);
        }
    }
    v
}

/// While the queue holds messages, SLICE_RELEASE goes through the release
/// ring without the peer lock: it reports what the locked call reports, and
/// the room it frees is the sender's at its next message.
#[test]
fn releases_behind_a_backlog_free_room_for_the_next_send() {
    let bus = Bus::new("ring-release");
    let a = bus.peer();
    let b = bus.peer();
    let hb = b.transfer(0x100, &a).unwrap();
    for p in [&b"first"[..], b"second", b"third"] {
        a.send(&[hb], p).unwrap();
    }
    let first = b.recv().unwrap();
    assert_eq!(b.slice_release(first.m.offset + 8), Err(Errno::ENXIO), "not a slice's start");
    b.slice_release(first.m.offset).unwrap();
    assert_eq!(b.slice_release(first.m.offset), Err(Errno::ENXIO), "released twice");
    a.send(&[hb], b"fourth").unwrap();
    let mut got = Vec::new();
    while let Ok(m) = b.recv() {
        got.push((m.payload.clone(), m.m.offset));
        b.slice_release(m.m.offset).unwrap();
        assert_eq!(b.slice_release(m.m.offset), Err(Errno::ENXIO), "released twice");
    }
    let payloads: Vec<&[u8]> = got.iter().map(|(p, _)| p.as_slice()).collect();
    assert_eq!(payloads, [&b"second"[..], b"third", b"fourth"]);
    assert_eq!(got[2].1, first.m.offset, "the released room was not reused");
    // a peer's own reset applies and forgets everything
    a.send(&[hb], b"fifth").unwrap();
    a.send(&[hb], b"sixth").unwrap();
    let fifth = b.recv().unwrap();
    b.slice_release(fifth.m.offset).unwrap();
    let sixth = b.recv().unwrap();
    assert_eq!(sixth.payload, b"sixth");
    b.slice_release(sixth.m.offset).unwrap();
    assert_eq!(b.recv().err(), Some(Errno::EAGAIN));
}
