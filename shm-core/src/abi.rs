//! Which of bus1's two ABIs a peer speaks, and the rules that depend on it.
//!
//! The bus serves programs written for the RFC v1 ABI and for bus1's final
//! ABI at the same time, talking to each other. The two differ in one
//! ioctl only: RECV (its struct and number, its flag bits, and PEEK, which
//! the final ABI dropped with the sender's credentials). The RECV number a
//! call uses says which layout it reads and writes, so that part never
//! needs more than the number: a message means the same whoever sent it.
//!
//! Three rules look at the peer instead: the `peer_flags` of PEER_RESET
//! (v1: all-ones, 0 or 1; final: all-ones only) and of PEER_QUERY (the v1
//! peer flag, or always 0), and the size of the pool (512 MiB, or 4 GiB
//! for a final peer). For those a peer speaks one ABI, chosen like this:
//!
//! * `BUS1_ABI=v1` or `final` in the opener's environment fixes it for
//!   the peer's life; the other ABI's RECV number then fails with ENOTTY,
//!   as it would on that module.
//! * Otherwise (`auto`) the peer starts undetermined and the first call
//!   that tells *latches* it for good: a RECV with either number, or a
//!   PEER_RESET with `peer_flags` 0 or 1 (which only a v1 program sends).
//!   The call latches as soon as it is decoded, so it latches even if it
//!   then fails, except that a disconnected peer answers ESHUTDOWN first
//!   and latches nothing. Both RECV numbers stay served afterwards. An
//!   undetermined peer reports no peer flags, accepts only all-ones (or the
//!   latching 0 and 1) and has a v1-sized pool; latching to final grows
//!   the pool once to 4 GiB, file included, with every slice and mapping
//!   staying valid.

use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::pool;
use crate::shm::P;
use crate::txn::Txn;
use uapi::{bus1_msg, final_abi, BUS1_MSG_FLAG_CONTINUE, BUS1_PEER_FLAG_WANT_SECCTX, BUS1_RECV_FLAG_INSTALL_FDS, BUS1_RECV_FLAG_SEED};

/// One of the two ABIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// The RFC v1 ABI (2016).
    V1,
    /// bus1's final ABI (2019).
    Final,
}

/// How a peer's ABI is chosen (the `BUS1_ABI` setting of its opener).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AbiMode {
    /// Latched by the first call that tells.
    #[default]
    Auto,
    /// Fixed: the v1 ABI only.
    V1,
    /// Fixed: the final ABI only.
    Final,
}

impl AbiMode {
    /// The mode a `BUS1_ABI` value asks for: `v1` or `final`; anything
    /// else, unset included, is `auto`.
    pub fn parse(value: Option<&[u8]>) -> AbiMode {
        match value {
            Some(b"v1") => AbiMode::V1,
            Some(b"final") => AbiMode::Final,
            _ => AbiMode::Auto,
        }
    }
}

/// The call that shows a peer's ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latch {
    /// A RECV with that ABI's number: refused (ENOTTY) by a peer fixed to
    /// the other ABI.
    Recv,
    /// A PEER_RESET with v1 peer flags: latches an undetermined peer, and
    /// otherwise leaves the peer's rules to answer.
    Reset,
}

// `PeerRec::abi` and `PeerRec::abi_mode`.
const UNDETERMINED: u32 = 0;
const V1: u32 = 1;
const FINAL: u32 = 2;

fn code(abi: Abi) -> u32 {
    match abi {
        Abi::V1 => V1,
        Abi::Final => FINAL,
    }
}

fn decode(v: u32) -> Option<Abi> {
    match v {
        V1 => Some(Abi::V1),
        FINAL => Some(Abi::Final),
        _ => None,
    }
}

/// The pool size a peer starts with.
pub fn initial_pool_size(mode: AbiMode) -> u64 {
    if mode == AbiMode::Final {
        POOL_SIZE_FINAL
    } else {
        POOL_SIZE
    }
}

/// Sets up a new peer's ABI fields (before its pool: see
/// [`initial_pool_size`]).
pub fn init(tx: &Txn, peer: P<PeerRec>, mode: AbiMode) {
    let p = tx.rec(peer);
    let (abi, fixed) = match mode {
        AbiMode::Auto => (UNDETERMINED, UNDETERMINED),
        AbiMode::V1 => (V1, V1),
        AbiMode::Final => (FINAL, FINAL),
    };
    tx.set(&p.abi, abi);
    tx.set(&p.abi_mode, fixed);
}

/// The ABI `peer` speaks, None while undetermined.
pub fn state(tx: &Txn, peer: P<PeerRec>) -> Option<Abi> {
    decode(tx.rec(peer).abi.get())
}

/// Whether the peer's ABI was fixed at open (not latched).
pub fn fixed(tx: &Txn, peer: P<PeerRec>) -> bool {
    tx.rec(peer).abi_mode.get() != UNDETERMINED
}

/// The answer to a latching call when the peer's ABI is settled already:
/// its state, or ENOTTY for a RECV of the other ABI on a fixed peer.
fn settled(state: Abi, fixed: bool, abi: Abi, by: Latch) -> Result<Option<Abi>> {
    if fixed && by == Latch::Recv && state != abi {
        return Err(Errno::ENOTTY);
    }
    Ok(Some(state))
}

/// Latches `peer` to `abi` if it is undetermined (growing the pool for the
/// final ABI), and returns the ABI it speaks afterwards.
pub fn latch(tx: &Txn, peer: P<PeerRec>, abi: Abi, by: Latch) -> Result<Option<Abi>> {
    let p = tx.rec(peer);
    if let Some(state) = decode(p.abi.get()) {
        return settled(state, fixed(tx, peer), abi, by);
    }
    // The latch is read under the peer's lock by the data path's RECV.
    tx.hold(peer);
    if abi == Abi::Final {
        pool::grow(tx, peer, POOL_SIZE_FINAL)?;
    }
    tx.set(&p.abi, code(abi));
    crate::crash::point("latch-grown");
    Ok(Some(abi))
}

/// [`latch`]'s answer read without the lock, when it cannot change any
/// more: None if the peer is still undetermined (the caller takes the
/// lock). The caller checks afterwards that the record is still its peer.
pub fn latch_hint(p: &PeerRec, abi: Abi, by: Latch) -> Option<Result<Option<Abi>>> {
    let state = decode(p.abi.load_racy())?;
    Some(settled(state, p.abi_mode.load_racy() != UNDETERMINED, abi, by))
}

/// PEER_RESET's `peer_flags` rule for a peer in `state`: all-ones is
/// always accepted; 0 and 1 only by a v1 peer (the call has latched an
/// undetermined one already); anything else is EINVAL.
pub fn check_reset_peer_flags(state: Option<Abi>, peer_flags: u64) -> Result<()> {
    let ok = peer_flags == u64::MAX || (state == Some(Abi::V1) && peer_flags & !BUS1_PEER_FLAG_WANT_SECCTX == 0);
    if ok {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// PEER_QUERY's `peer_flags` for a peer in `state` whose flags are
/// `flags`: only a v1 peer has any.
pub fn queried_peer_flags(state: Option<Abi>, flags: u64) -> u64 {
    if state == Some(Abi::V1) {
        flags & BUS1_PEER_FLAG_WANT_SECCTX
    } else {
        0
    }
}

/// The final RECV's flags in the v1 bits RECV works with: SEED (0x1) and
/// INSTALL_FDS (0x2); any other bit is EINVAL. (There is no PEEK.)
pub fn final_recv_flags(flags: u64) -> Result<u64> {
    if flags & !(final_abi::BUS1_RECV_FLAG_SEED | final_abi::BUS1_RECV_FLAG_INSTALL_FDS) != 0 {
        return Err(Errno::EINVAL);
    }
    let mut v1 = 0;
    if flags & final_abi::BUS1_RECV_FLAG_SEED != 0 {
        v1 |= BUS1_RECV_FLAG_SEED;
    }
    if flags & final_abi::BUS1_RECV_FLAG_INSTALL_FDS != 0 {
        v1 |= BUS1_RECV_FLAG_INSTALL_FDS;
    }
    Ok(v1)
}

/// A received message as the final ABI reports it: no sender fields, and
/// CONTINUE as 0x1 (nothing else can be set: no security context exists).
pub fn final_msg(m: &bus1_msg) -> final_abi::bus1_msg {
    final_abi::bus1_msg {
        r#type: m.r#type,
        flags: if m.flags & BUS1_MSG_FLAG_CONTINUE != 0 { final_abi::BUS1_MSG_FLAG_CONTINUE } else { 0 },
        destination: m.destination,
        offset: m.offset,
        n_bytes: m.n_bytes,
        n_handles: m.n_handles,
        n_fds: m.n_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus1_abi_values() {
        assert_eq!(AbiMode::parse(Some(b"v1")), AbiMode::V1);
        assert_eq!(AbiMode::parse(Some(b"final")), AbiMode::Final);
        for other in [&b"auto"[..], b"", b"V1", b"final ", b"2"] {
            assert_eq!(AbiMode::parse(Some(other)), AbiMode::Auto, "{other:?}");
        }
        assert_eq!(AbiMode::parse(None), AbiMode::Auto);
    }

    #[test]
    fn final_recv_flags_map_onto_v1_bits() {
        assert_eq!(final_recv_flags(0), Ok(0));
        assert_eq!(final_recv_flags(0x1), Ok(BUS1_RECV_FLAG_SEED));
        assert_eq!(final_recv_flags(0x2), Ok(BUS1_RECV_FLAG_INSTALL_FDS));
        assert_eq!(final_recv_flags(0x3), Ok(BUS1_RECV_FLAG_SEED | BUS1_RECV_FLAG_INSTALL_FDS));
        for bad in [0x4, 0x7, 1 << 63] {
            assert_eq!(final_recv_flags(bad), Err(Errno::EINVAL), "{bad:#x}");
        }
    }

    #[test]
    fn peer_flags_rules_by_state() {
        for state in [None, Some(Abi::V1), Some(Abi::Final)] {
            assert_eq!(check_reset_peer_flags(state, u64::MAX), Ok(()));
            assert_eq!(check_reset_peer_flags(state, 2), Err(Errno::EINVAL));
        }
        for flags in [0, 1] {
            assert_eq!(check_reset_peer_flags(Some(Abi::V1), flags), Ok(()));
            assert_eq!(check_reset_peer_flags(Some(Abi::Final), flags), Err(Errno::EINVAL));
        }
        assert_eq!(queried_peer_flags(Some(Abi::V1), 1), 1);
        assert_eq!(queried_peer_flags(Some(Abi::Final), 1), 0);
        assert_eq!(queried_peer_flags(None, 1), 0);
    }

    #[test]
    fn the_fixed_peer_refuses_the_other_recv_number() {
        assert_eq!(settled(Abi::V1, true, Abi::Final, Latch::Recv), Err(Errno::ENOTTY));
        assert_eq!(settled(Abi::Final, true, Abi::V1, Latch::Recv), Err(Errno::ENOTTY));
        assert_eq!(settled(Abi::Final, true, Abi::V1, Latch::Reset), Ok(Some(Abi::Final)));
        assert_eq!(settled(Abi::Final, false, Abi::V1, Latch::Recv), Ok(Some(Abi::Final)));
        assert_eq!(settled(Abi::V1, true, Abi::V1, Latch::Recv), Ok(Some(Abi::V1)));
    }

    #[test]
    fn final_msg_drops_the_sender_and_renumbers_continue() {
        let m = bus1_msg {
            r#type: 1,
            flags: BUS1_MSG_FLAG_CONTINUE,
            destination: 0x100,
            uid: 1,
            gid: 2,
            pid: 3,
            tid: 4,
            offset: 64,
            n_bytes: 5,
            n_handles: 6,
            n_fds: 7,
            n_secctx: 0,
        };
        let f = final_msg(&m);
        assert_eq!(f, final_abi::bus1_msg { r#type: 1, flags: 1, destination: 0x100, offset: 64, n_bytes: 5, n_handles: 6, n_fds: 7 });
        assert_eq!(final_msg(&bus1_msg { flags: 0, ..m }).flags, 0);
    }
}
