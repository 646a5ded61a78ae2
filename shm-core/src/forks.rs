//! Fork handlers: keep process-local state usable in a child.
//!
//! Before `fork`, every process-local lock is taken so that no other thread
//! holds one at the moment of the copy; afterwards the parent releases them
//! and the child re-initialises them (the owning thread is the forking one)
//! and forgets per-process caches (pid, tid), and the child takes a claim
//! of its own on each domain's memory (`memory`). The domain lock is shared
//! memory and needs nothing: whoever holds it releases it as usual.

use crate::fault::contain_callback;
use std::sync::Once;

// Called by the C library: nothing may unwind out of them (see `fault`).

extern "C" fn prepare() {
    contain_callback(|| {
        crate::domain::lock_all_local();
        crate::ownmem::lock_for_fork();
    });
}

extern "C" fn parent() {
    contain_callback(|| {
        crate::ownmem::unlock_after_fork(false);
        crate::domain::unlock_all_local(false);
    });
}

extern "C" fn child() {
    contain_callback(|| {
        crate::ownmem::unlock_after_fork(true);
        crate::domain::unlock_all_local(true);
        crate::domain::own_claims_after_fork();
        crate::creds::after_fork();
        crate::reaper::after_fork();
    });
}

/// Registers the handlers once per process.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        crate::sys::atfork(prepare, parent, child);
    });
}
