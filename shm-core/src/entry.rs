//! An entry letting go of what it holds, in a transaction: its payload
//! handles (object graph), its fd carrier and nonce, its handle charge.
//! Sections never get here: the data path only carries entries without
//! handles or fds.

use crate::doorbell::Op;
use crate::layout::*;
use crate::message;
use crate::object;
use crate::quota;
use crate::shm::P;
use crate::table;
use crate::txn::Txn;

/// The state a record has once `remove` is taken from `state`: none at all
/// when it neither points at anything nor is published.
pub fn without(state: u32, remove: u32) -> u32 {
    let s = state & !remove;
    if s & (MS_REFS | MS_PUBLISHED) == 0 {
        0
    } else {
        s
    }
}

/// Takes `remove` from the state of `e` (a record of `peer`), releasing
/// what that ends: once it stops referencing, its payload handles and the
/// rest of its handle charge; once it leaves the queue or stops being a
/// seed, its fd carrier (removed from the vault after commit through `fd`,
/// the peer's own socket, when there is one and the caller has not taken
/// the carrier already: then it passes -1) and its nonce.
pub fn release(tx: &Txn, peer: P<PeerRec>, fd: i32, e: P<Msg>, remove: u32) {
    tx.hold(peer);
    let r = tx.rec(e);
    let old = r.state.get();
    let new = without(old, remove);
    if old & MS_REFS != 0 && new & MS_REFS == 0 {
        let slots = message::handle_slots(tx, e);
        for slot in slots {
            let h = P::<Handle>::from_off(slot.get());
            if !h.is_null() {
                tx.set(slot, 0);
                object::inflight_drop(tx, h);
            }
        }
        let rem = r.charged[RES_HANDLES].get();
        if rem != 0 {
            quota::refund(tx, peer, RES_HANDLES, rem);
            tx.set(&r.charged[RES_HANDLES], 0);
        }
        if r.kind.get() == ENTRY_DATA && r.n_fds.get() > 0 {
            if fd >= 0 {
                tx.push_post(Op::DropCarrier { peer, fd, nonce: r.nonce.get() });
            }
            // The nonce names the message only while its carrier may be
            // wanted: a section that frees the record later (a slice
            // release) cannot reach the domain's table.
            table::remove(tx, TAG_NONCE, 0, r.nonce.get());
        }
    }
    message::set_state(tx, peer, e, new);
    if old & MS_REFS != 0 && new & MS_REFS == 0 {
        if r.handles.get() != 0 {
            crate::alloc::free(tx, r.handles.get(), r.n_handles.get() * 8);
            tx.set(&r.handles, 0);
        }
        // What the record pointed at may be free to go now (a section
        // would leave that to `object::collect`; a transaction can do it).
        let h = message::subject_handle(tx, e);
        if !h.is_null() {
            object::maybe_free(tx, h);
        } else if r.kind.get() == ENTRY_RELEASE {
            let oh = tx.rec(P::<Node>::from_off(r.subject.get())).owner_handle.get();
            if !oh.is_null() {
                object::maybe_free(tx, oh);
            }
        }
    }
}
