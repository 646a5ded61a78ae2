//! The system calls of the device backend, and views of this crate's ID
//! and fd slices as the ABI's arrays.
//!
//! One of the two modules of the crate with `unsafe` code (the other is
//! `pool`). Every call goes through the C library's wrapper (`open`,
//! `ioctl`, `poll`, `close`), never a raw system call, so that the
//! `LD_PRELOAD` shim sees it when it is loaded; under the kernel module
//! the same calls reach the driver. Each command has a typed wrapper
//! that builds the argument from live borrows, so the pointers inside an
//! argument are valid for exactly the duration of the call.

use crate::error::{Error, Result};
use crate::id::{HandleId, NodeId};
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use uapi::*;

/// The errno of the call that just failed.
fn last_error() -> Error {
    Error::from_errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

/// Opens the device at `path` read-write (a new peer).
pub fn open_device(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Invalid)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `ioctl(fd, cmd, arg)`.
///
/// # Safety
/// `arg` must be what `cmd` expects: a pointer to a live argument of the
/// size the command number encodes, whose own pointers (if any) name live
/// memory of the sizes their counts say, or the raw value the command
/// takes.
unsafe fn ioctl(fd: BorrowedFd<'_>, cmd: u32, arg: u64) -> Result<()> {
    // SAFETY: the caller vouches for `arg` (see above).
    if unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, arg) } < 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

/// Runs a command whose argument is one struct of plain integers.
fn ioctl_struct<T: Copy>(fd: BorrowedFd<'_>, cmd: u32, arg: &mut T) -> Result<()> {
    assert_eq!((cmd >> 16) & 0x3fff, std::mem::size_of::<T>() as u32, "argument size of {cmd:#x}");
    // SAFETY: `arg` is a live, exclusively borrowed value of the size the
    // command encodes (checked above); the ABI structs passed here carry
    // no pointers.
    unsafe { ioctl(fd, cmd, arg as *mut T as u64) }
}

pub fn disconnect(fd: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: PEER_DISCONNECT reads no memory: its argument is the raw value 0.
    unsafe { ioctl(fd, BUS1_CMD_PEER_DISCONNECT, 0) }
}

pub fn query(fd: BorrowedFd<'_>) -> Result<bus1_cmd_peer_reset> {
    let mut q = bus1_cmd_peer_reset::default();
    ioctl_struct(fd, BUS1_CMD_PEER_QUERY, &mut q)?;
    Ok(q)
}

pub fn reset(fd: BorrowedFd<'_>, r: &bus1_cmd_peer_reset) -> Result<()> {
    let mut r = *r;
    ioctl_struct(fd, BUS1_CMD_PEER_RESET, &mut r)
}

pub fn handle_release(fd: BorrowedFd<'_>, id: u64) -> Result<()> {
    let mut id = id;
    ioctl_struct(fd, BUS1_CMD_HANDLE_RELEASE, &mut id)
}

pub fn handle_transfer(fd: BorrowedFd<'_>, t: &mut bus1_cmd_handle_transfer) -> Result<()> {
    ioctl_struct(fd, BUS1_CMD_HANDLE_TRANSFER, t)
}

pub fn slice_release(fd: BorrowedFd<'_>, offset: u64) -> Result<()> {
    let mut off = offset;
    ioctl_struct(fd, BUS1_CMD_SLICE_RELEASE, &mut off)
}

pub fn nodes_destroy(fd: BorrowedFd<'_>, flags: u64, nodes: &[u64]) -> Result<()> {
    let mut cmd = bus1_cmd_nodes_destroy { flags, ptr_nodes: nodes.as_ptr() as u64, n_nodes: nodes.len() as u64 };
    // SAFETY: `cmd` is live and its pointer names `nodes`, borrowed for
    // the call, with its length as the count.
    unsafe { ioctl(fd, BUS1_CMD_NODES_DESTROY, &mut cmd as *mut _ as u64) }
}

/// The arrays of one SEND.
pub struct SendArrays<'a> {
    pub flags: u64,
    pub destinations: &'a [u64],
    pub errors: Option<&'a mut [u64]>,
    pub payload: &'a [IoSlice<'a>],
    pub handles: &'a [u64],
    pub fds: &'a [i32],
}

pub fn send(fd: BorrowedFd<'_>, a: SendArrays<'_>) -> Result<()> {
    let n_destinations = a.destinations.len() as u64;
    let ptr_errors = match a.errors {
        Some(e) => {
            assert_eq!(e.len() as u64, n_destinations, "one error slot per destination");
            e.as_mut_ptr() as u64
        }
        None => 0,
    };
    let mut cmd = bus1_cmd_send {
        flags: a.flags,
        ptr_destinations: a.destinations.as_ptr() as u64,
        ptr_errors,
        n_destinations,
        // `IoSlice` is guaranteed to be ABI compatible with `struct iovec`.
        ptr_vecs: a.payload.as_ptr() as u64,
        n_vecs: a.payload.len() as u64,
        ptr_handles: a.handles.as_ptr() as u64,
        n_handles: a.handles.len() as u64,
        ptr_fds: a.fds.as_ptr() as u64,
        n_fds: a.fds.len() as u64,
    };
    // SAFETY: `cmd` is live; every pointer in it names a slice borrowed for
    // the call, with that slice's length as its count (the error slots
    // exclusively, as the call writes them); the iovecs name buffers
    // borrowed for 'a.
    unsafe { ioctl(fd, BUS1_CMD_SEND, &mut cmd as *mut _ as u64) }
}

pub fn recv_v1(fd: BorrowedFd<'_>, flags: u64, max_offset: u64) -> Result<bus1_msg> {
    let mut r = bus1_cmd_recv { flags, max_offset, ..Default::default() };
    ioctl_struct(fd, BUS1_CMD_RECV, &mut r)?;
    Ok(r.msg)
}

pub fn recv_final(fd: BorrowedFd<'_>, flags: u64, max_offset: u64) -> Result<final_abi::bus1_msg> {
    let mut r = final_abi::bus1_cmd_recv { flags, max_offset, ..Default::default() };
    ioctl_struct(fd, final_abi::BUS1_CMD_RECV, &mut r)?;
    Ok(r.msg)
}

/// Waits until `fd` is readable or hung up, or `timeout_ms` passed (-1:
/// no limit). Returns whether it is ready. EINTR is retried by the caller.
pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> Result<bool> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one live pollfd, as the count says.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        return Err(last_error());
    }
    Ok(n > 0)
}

/// Takes ownership of a descriptor the linked-in engine just opened for
/// the caller (a new peer, a pool file to map): nothing else owns it.
pub fn adopt(fd: i32) -> OwnedFd {
    assert!(fd >= 0, "the engine returned a descriptor");
    // SAFETY: see above: a fresh descriptor handed over exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Takes ownership of descriptors a RECV installed into this process.
///
/// The numbers must come from the fd array of a message this process has
/// just received with INSTALL_FDS: the bus created those descriptors for
/// the caller, and nothing else refers to them yet.
pub fn installed_fds(numbers: impl Iterator<Item = i32>) -> Vec<OwnedFd> {
    numbers
        .filter(|n| *n >= 0)
        // SAFETY: see above: each number is a new descriptor the RECV made
        // for this caller alone, taken over exactly once.
        .map(|n| unsafe { OwnedFd::from_raw_fd(n) })
        .collect()
}

/// The IDs as the ABI's `__u64` array.
pub fn handle_words(ids: &[HandleId]) -> &[u64] {
    // SAFETY: HandleId is `repr(transparent)` over u64.
    unsafe { std::slice::from_raw_parts(ids.as_ptr() as *const u64, ids.len()) }
}

/// The node IDs as the ABI's `__u64` array.
pub fn node_words(ids: &[NodeId]) -> &[u64] {
    // SAFETY: NodeId is `repr(transparent)` over u64.
    unsafe { std::slice::from_raw_parts(ids.as_ptr() as *const u64, ids.len()) }
}

/// The descriptors as the ABI's `int` array.
pub fn fd_numbers<'a>(fds: &'a [BorrowedFd<'a>]) -> &'a [i32] {
    // SAFETY: BorrowedFd is `repr(transparent)` over the C `int` of a
    // descriptor (documented as usable in FFI as such).
    unsafe { std::slice::from_raw_parts(fds.as_ptr() as *const i32, fds.len()) }
}

/// Registers `fd` with the current tokio runtime's reactor, for
/// readability.
#[cfg(feature = "tokio")]
pub fn register(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use tokio::io::{unix::AsyncFd, Interest};
    // SAFETY: the reactor's descriptor is owned by the AsyncFd itself: an
    // OwnedFd stays open, names the same file description and returns the
    // same number until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}
