//! The peer's pool mapping and views of the slices in it.
//!
//! One of the two modules of the crate with `unsafe` code (the other is
//! `sys`). The pool is mapped read-only and shared, once per [`Peer`]
//! (crate::Peer), for the peer's whole life: it is unmapped only when the
//! peer is dropped, and every view borrows the peer. A view covers a slice
//! that a RECV of this peer published and that its [`Message`]
//! (crate::Message) has not released yet: the bus writes a slice only
//! while it is not published (a SEND copies into free space; a RECV writes
//! the handle and fd arrays before it publishes), and this crate never
//! releases a slice while a view of it can exist — the message releases
//! it when it is dropped, and RESET and DISCONNECT, which release every
//! slice, need the peer exclusively. What this cannot rule out is another
//! process that holds the same peer's fd and resets it: the bytes under a
//! view may then change (never the mapping itself, so reads stay sound
//! for the machine, if not meaningful).

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, BorrowedFd};

/// A read-only shared mapping of a pool.
pub struct Pool {
    base: *const u8,
    len: usize,
}

// SAFETY: the mapping is plain read-only memory owned by this value; it
// may be read from any thread, and unmapped from any thread.
unsafe impl Send for Pool {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Pool {}

impl Pool {
    /// Maps `len` bytes of the pool behind `fd` (a peer fd of the device,
    /// or the pool file the engine gave): read-only, shared.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Pool> {
        // SAFETY: a new mapping at an address the kernel chooses, over no
        // existing memory; the result is checked before it is used.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(Error::from_errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)));
        }
        Ok(Pool { base: p as *const u8, len })
    }

    /// The length of the mapping (the RECV's `max_offset`).
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// The bytes `[off, off+len)`, if the mapping holds them.
    pub fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: the range lies inside the mapping (checked above), which
        // lives as long as `self`; see the module's documentation for why
        // the bytes of a published slice do not change under the view.
        Some(unsafe { std::slice::from_raw_parts(self.base.add(off as usize), len as usize) })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no view of it
        // outlives `self` (views borrow it).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}
