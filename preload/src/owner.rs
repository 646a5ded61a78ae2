//! Which process the shim's memory belongs to.
//!
//! A child made by `vfork` (or `clone` with `CLONE_VM | CLONE_VFORK`)
//! shares its parent's memory, and with it every table the shim keeps,
//! but has descriptors and signal dispositions of its own until it execs
//! or exits. What it does to them meanwhile (closing descriptors or
//! `dup2` onto them, resetting handlers before an `exec`) must reach the
//! kernel without changing the parent's tables. A `fork` child has a copy
//! of its own and takes it over in an atfork handler.
//!
//! Telling the two apart costs a system call (`getpid`), so the callers
//! ask only when the call at hand would change a table.

use core::sync::atomic::{AtomicI32, Ordering};

/// The process whose memory this is: set when the library is loaded, and
/// by every `fork` child (0 only before the loader ran the constructor).
static OWNER: AtomicI32 = AtomicI32::new(0);

extern "C" fn take_over() {
    // SAFETY: getpid is a plain system call.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
}

/// Runs when the library is loaded: the loading process owns the memory
/// (asking only on the first call would let a `vfork` child that calls
/// first claim it).
extern "C" fn owner_at_load() {
    take_over();
    // SAFETY: registers a child handler that only stores a pid.
    unsafe { libc::pthread_atfork(None, None, Some(take_over)) };
}

#[used]
#[link_section = ".init_array"]
static OWNER_AT_LOAD: extern "C" fn() = owner_at_load;

/// Whether the calling process owns the shim's memory: false in a child
/// made by `vfork` that has not yet exec'd or exited.
pub fn memory_is_ours() -> bool {
    let owner = OWNER.load(Ordering::Relaxed);
    // SAFETY: getpid is a plain system call.
    owner == 0 || owner == unsafe { libc::getpid() }
}
