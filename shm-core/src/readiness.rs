//! A peer's readiness as the module's `poll` reports it, read from shared
//! memory without the lock (docs/reference.md §8.2): POLLHUP alone once
//! the peer is disconnected; otherwise POLLOUT|POLLWRNORM, plus
//! POLLIN|POLLRDNORM while its queue holds a message or notification.
//!
//! The reads are racy by design (txn rule 8): a queue that a transaction
//! is changing may be seen half-way, which at worst reports POLLIN for an
//! entry that RECV then does not deliver — allowed, as for a head RECV
//! discards. What must never happen, POLLIN missing while RECV would
//! deliver, cannot: the state is read after the bell's `seq`, and every
//! change is visible before `seq` is bumped and sleepers are rung (txn
//! rule 8).

use crate::domain::Domain;
use crate::layout::*;
use crate::shm::P;
use crate::waiters::bell_rec;

/// The kernel's poll bits (identical for `poll` and `epoll`).
pub const POLLIN: u32 = libc::POLLIN as u32;
pub const POLLOUT: u32 = libc::POLLOUT as u32;
pub const POLLERR: u32 = libc::POLLERR as u32;
pub const POLLHUP: u32 = libc::POLLHUP as u32;
pub const POLLRDNORM: u32 = libc::POLLRDNORM as u32;
pub const POLLWRNORM: u32 = libc::POLLWRNORM as u32;

/// What a waiter sees of a peer at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Disconnected (or gone altogether).
    pub hup: bool,
    /// Something is queued.
    pub readable: bool,
    /// The bell's wake-up count when this was read (edge-triggered epoll).
    pub seq: u64,
}

impl Ready {
    /// The poll bits the module reports.
    pub fn mask(&self) -> u32 {
        if self.hup {
            POLLHUP
        } else if self.readable {
            POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM
        } else {
            POLLOUT | POLLWRNORM
        }
    }

    /// The bits a waiter asking for `events` gets (POLLERR and POLLHUP
    /// whether asked for or not).
    pub fn revents(&self, events: u32) -> u32 {
        self.mask() & (events | POLLERR | POLLHUP)
    }
}

/// Reads the readiness of peer `serial`, whose record this process knows
/// at `rec` and whose bell is `bell`.
pub(crate) fn peek(dom: &Domain, rec: P<PeerRec>, serial: u64, bell: u64) -> Ready {
    // `seq` first: a state read after it is at least as new as the last
    // change it counts.
    let seq = bell_rec(dom, bell).seq.load_seqcst();
    let p = dom.seg.rec(rec);
    let live = p.magic.load_racy() == PEER_MAGIC && p.serial.load_racy() == serial;
    if !live || p.state.load_racy() != PEER_CONNECTED {
        return Ready { hup: true, readable: false, seq };
    }
    Ready { hup: false, readable: p.q_len.load_racy() > 0, seq }
}

/// The count of bell `bell` now.
pub(crate) fn bell_seq(dom: &Domain, bell: u64) -> u64 {
    bell_rec(dom, bell).seq.load_seqcst()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_module() {
        let idle = Ready::default();
        assert_eq!(idle.mask(), POLLOUT | POLLWRNORM);
        assert_eq!(idle.revents(POLLIN), 0);
        let full = Ready { readable: true, ..idle };
        assert_eq!(full.revents(POLLIN), POLLIN);
        assert_eq!(full.revents(POLLIN | POLLOUT | POLLRDNORM), POLLIN | POLLOUT | POLLRDNORM);
        let hup = Ready { hup: true, readable: true, seq: 0 };
        assert_eq!(hup.mask(), POLLHUP);
        assert_eq!(hup.revents(0), POLLHUP);
        assert_eq!(hup.revents(POLLIN | POLLOUT), POLLHUP);
    }
}
