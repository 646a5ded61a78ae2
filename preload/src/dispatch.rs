//! ioctl translation: decode the command, copy the argument in, call the
//! engine, copy results out (docs/reference.md §2.0 dispatcher order: PEER_DISCONNECT
//! first, then ESHUTDOWN for a disconnected peer, then ENOTTY for unknown
//! commands, then the argument).

use crate::fdtable::{self, FdInfo};
use crate::trace;
use crate::uaccess::ProcMem;
use shm_core::{read_struct, write_struct, Abi, Errno, Result};
use uapi::*;

/// ioctls the kernel's VFS answers for every file before the driver sees
/// them. (The casts matter where libc spells these numbers in another type.)
#[allow(clippy::unnecessary_cast)]
pub fn is_generic(request: u64) -> bool {
    matches!(request, x if x == libc::FIOCLEX as u64 || x == libc::FIONCLEX as u64 || x == libc::FIONBIO as u64 || x == libc::FIOASYNC as u64)
}

/// Runs a bus1 ioctl on peer fd `fd`; returns the ioctl's return value.
pub fn ioctl(fd: i32, info: &FdInfo, request: u64, arg: u64) -> Result<i32> {
    if !trace::on() {
        return dispatch(fd, info, request, arg);
    }
    let line = trace::ioctl_args(fd, info.peer.serial(), request, arg);
    let r = dispatch(fd, info, request, arg);
    trace::ioctl_done(line, request, arg, &r);
    r
}

/// Test-only commands, answered only with `BUS1_TEST_HOOKS=1` (otherwise
/// they are unknown commands, as for the module): `_IO(0x96, 0xf0)` checks
/// the invariants of the peer's domain, prints each violation and returns
/// their number; `_IOW(0x96, 0xf1, __u64)` damages the domain in the way
/// the u64 names (shm-core's `DAMAGE_*`).
const TEST_CHECK: u64 = (BUS1_IOCTL_MAGIC << 8 | 0xf0) as u64;
const TEST_DAMAGE: u64 = (1 << 30 | 8 << 16 | BUS1_IOCTL_MAGIC << 8 | 0xf1) as u64;

fn test_hook(peer: &shm_core::Peer, request: u64, arg: u64) -> Option<Result<i32>> {
    if (request != TEST_CHECK && request != TEST_DAMAGE) || !shm_core::test_hooks_enabled() {
        return None;
    }
    if request == TEST_CHECK {
        let lines = peer.domain().check_invariants();
        for l in &lines {
            shm_core::say(format_args!("bus1: check: {l}"));
        }
        return Some(Ok(lines.len().min(i32::MAX as usize) as i32));
    }
    Some(read_struct(&ProcMem, arg).and_then(|kind| peer.test_damage(kind)).map(|()| 0))
}

fn dispatch(fd: i32, info: &FdInfo, request: u64, arg: u64) -> Result<i32> {
    let peer = &info.peer;
    let mem = ProcMem;
    if request == BUS1_CMD_PEER_DISCONNECT as u64 {
        peer.disconnect(fd, arg)?;
        return Ok(0);
    }
    if let Some(r) = test_hook(peer, request, arg) {
        return r;
    }
    if !peer.connected_hint() {
        return Err(Errno::ESHUTDOWN);
    }
    let Ok(cmd) = u32::try_from(request) else { return Err(Errno::ENOTTY) };
    match cmd {
        BUS1_CMD_PEER_QUERY => {
            let mut q: bus1_cmd_peer_reset = read_struct(&mem, arg)?;
            let r = peer.query(q.flags)?;
            q = bus1_cmd_peer_reset { flags: q.flags, ..r };
            write_struct(&mem, arg, &q)?;
        }
        BUS1_CMD_PEER_QUERY_U64 => {
            let q: bus1_cmd_peer_reset_u64 = read_struct(&mem, arg)?;
            let r = peer.query(q.flags)?;
            let out = bus1_cmd_peer_reset_u64 {
                flags: q.flags,
                peer_flags: r.peer_flags,
                max_slices: r.max_slices as u64,
                max_handles: r.max_handles as u64,
                max_inflight_bytes: r.max_inflight_bytes as u64,
                max_inflight_fds: r.max_inflight_fds as u64,
            };
            write_struct(&mem, arg, &out)?;
        }
        BUS1_CMD_PEER_RESET => {
            let r: bus1_cmd_peer_reset = read_struct(&mem, arg)?;
            peer.reset(fd, &r)?;
        }
        BUS1_CMD_PEER_RESET_U64 => {
            let r: bus1_cmd_peer_reset_u64 = read_struct(&mem, arg)?;
            peer.reset_u64(fd, &r)?;
        }
        BUS1_CMD_HANDLE_RELEASE => {
            let id: u64 = read_struct(&mem, arg)?;
            peer.handle_release(fd, id)?;
        }
        BUS1_CMD_HANDLE_TRANSFER => {
            let t: bus1_cmd_handle_transfer = read_struct(&mem, arg)?;
            if t.flags != 0 {
                return Err(Errno::EINVAL);
            }
            let dst = if t.dst_fd == u64::MAX {
                None
            } else {
                // The module takes the low 32 bits as an unsigned fd number.
                let n = t.dst_fd as u32;
                if n > i32::MAX as u32 || !fd_is_open(n as i32) {
                    return Err(Errno::EBADF);
                }
                let d = fdtable::lookup(n as i32).ok_or(Errno::EOPNOTSUPP)?;
                if !d.peer.connected_hint() {
                    return Err(Errno::ESHUTDOWN);
                }
                Some(d)
            };
            // Writability is checked before step 4, as bus1's
            // specification advises, so a read-only struct gets EFAULT
            // before any other error of the transfer.
            write_struct(&mem, arg, &t)?;
            let same = dst.as_ref().is_some_and(|d| d.peer.serial() == peer.serial() && std::sync::Arc::ptr_eq(d.peer.domain(), peer.domain()));
            // The result is written back before the transfer commits
            // (2.5 step 9), so a struct that cannot take it changes nothing.
            let out = |id| write_struct(&mem, arg, &bus1_cmd_handle_transfer { dst_handle: id, ..t }).is_ok();
            peer.handle_transfer_into(fd, t.src_handle, if same { None } else { dst.as_ref().map(|d| &d.peer) }, &out)?;
        }
        BUS1_CMD_NODES_DESTROY => {
            let d: bus1_cmd_nodes_destroy = read_struct(&mem, arg)?;
            peer.nodes_destroy(fd, &d, &mem)?;
        }
        BUS1_CMD_SLICE_RELEASE => {
            let off: u64 = read_struct(&mem, arg)?;
            peer.slice_release(fd, off)?;
        }
        BUS1_CMD_SEND => {
            let s: bus1_cmd_send = read_struct(&mem, arg)?;
            peer.send(fd, &s, &mem)?;
        }
        // Each ABI's RECV in its own layout. Decoding the number latches
        // the peer's ABI, before the argument is even read.
        BUS1_CMD_RECV => {
            peer.latch_recv(Abi::V1)?;
            let r: bus1_cmd_recv = read_struct(&mem, arg)?;
            // The result is written back before the RECV commits (2.9
            // step 9), so a struct that cannot take it changes nothing.
            let out = |msg: &bus1_msg| write_struct(&mem, arg, &bus1_cmd_recv { msg: *msg, ..r }).is_ok();
            peer.recv_into(fd, r.flags, r.max_offset, &out)?;
        }
        final_abi::BUS1_CMD_RECV => {
            peer.latch_recv(Abi::Final)?;
            let r: final_abi::bus1_cmd_recv = read_struct(&mem, arg)?;
            // As for the v1 RECV: written back before the commit.
            let out = |msg: &final_abi::bus1_msg| write_struct(&mem, arg, &final_abi::bus1_cmd_recv { msg: *msg, ..r }).is_ok();
            peer.recv_final_into(fd, r.flags, r.max_offset, &out)?;
        }
        _ => return Err(Errno::ENOTTY),
    }
    Ok(0)
}

fn fd_is_open(fd: i32) -> bool {
    shm_core::sys::fcntl(fd, libc::F_GETFD, 0).is_ok()
}
