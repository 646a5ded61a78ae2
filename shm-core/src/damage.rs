//! Test-only damage: with `BUS1_TEST_HOOKS=1`, a caller can break its
//! domain in one of a few ways that the engine is known to detect, to see
//! that a damaged domain fails safe (see `fault`). Without the variable
//! nothing here does anything.

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::object;
use crate::shm::P;
use crate::table;
use crate::txn::Txn;

/// Whether `BUS1_TEST_HOOKS` enables the test-only operations.
pub fn test_hooks_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("BUS1_TEST_HOOKS").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// The caller's queue head points past the end of the segment: its next
/// RECV meets a bad offset.
pub const DAMAGE_OFFSET: u64 = 1;
/// The caller's list of handles runs in a circle: its next flush meets a
/// list that does not end. The caller must hold a handle.
pub const DAMAGE_CYCLE: u64 = 2;
/// The ID the caller is to get next is already in its ID table: the next
/// handle given to it meets a duplicate key.
pub const DAMAGE_KEY: u64 = 3;

/// Damages the domain of `peer` as `kind` says.
pub(crate) fn inflict(tx: &Txn, peer: P<PeerRec>, kind: u64) -> Result<()> {
    if !test_hooks_enabled() {
        return Err(Errno::ENOTTY);
    }
    let p = tx.rec(peer);
    match kind {
        DAMAGE_OFFSET => {
            tx.hold(peer);
            tx.set(&p.q_head, P::from_off(SEG_SIZE + 8));
        }
        DAMAGE_CYCLE => {
            let first = p.handles.get();
            if first.is_null() {
                return Err(Errno::ENXIO);
            }
            let last = object::held_handles(tx, peer).last().copied().unwrap_or(first);
            tx.set(&tx.rec(last).holder_next, first);
        }
        DAMAGE_KEY => {
            let id = ((p.id_counter.get() + 1) << 3) | 3;
            // Any live record will do as the value: the key is the damage.
            table::id_insert(tx, peer, id, P::from_off(peer.off()))?;
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}
