//! What a RECV returns: a message, whose payload is read in place from
//! the pool, or one of the two notifications.

use crate::engine::Received;
use crate::id::{HandleId, NodeId};
use crate::peer::Peer;
use crate::sys;
use std::os::fd::OwnedFd;
use uapi::BUS1_HANDLE_INVALID;

/// One entry of a peer's queue, as RECV delivers it.
///
/// `more` is the message flag CONTINUE: the next entry in the queue
/// belongs to the same transaction (a SEND to several of this peer's
/// nodes, or a destruction of several nodes it holds).
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// # let scratch = bus1::ScratchDomain::new()?;
/// let (owner, holder) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
/// let node = bus1::NodeId::new(0x10).unwrap();
/// let h = holder.handle_from(&owner, node)?;
/// holder.release(h)?;
/// match owner.recv()? {
///     bus1::Event::NodeRelease { node: n, more } => assert_eq!((n, more), (node, false)),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub enum Event<'p> {
    /// A message (DATA).
    Message(Message<'p>),
    /// NODE_DESTROY: the node behind `handle` was destroyed. The handle
    /// stays the peer's until it releases it.
    NodeDestroy {
        /// The peer's handle on the destroyed node.
        handle: HandleId,
        /// CONTINUE: more of the same transaction follows.
        more: bool,
    },
    /// NODE_RELEASE: nobody but the owner holds a reference of `node` any
    /// more.
    NodeRelease {
        /// The peer's node.
        node: NodeId,
        /// CONTINUE: more of the same transaction follows.
        more: bool,
    },
}

/// Who called SEND, as the RFC v1 RECV reports it (in this peer's
/// namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// Real user ID.
    pub uid: u32,
    /// Real group ID.
    pub gid: u32,
    /// Process ID.
    pub pid: u32,
    /// Thread ID.
    pub tid: u32,
}

/// A received message. Its payload and handle IDs are read in place from
/// the peer's pool; the slice they live in is released (SLICE_RELEASE)
/// when the message is dropped, exactly once. It borrows its peer, so the
/// peer outlives it and cannot be reset or disconnected meanwhile.
///
/// The fds it carried are installed in this process (close-on-exec) and
/// owned by the message until taken with [`Message::take_fds`]; the
/// handles it carried are the peer's references now, to be released with
/// [`Peer::release`] when no longer needed.
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// use std::io::IoSlice;
/// # let scratch = bus1::ScratchDomain::new()?;
/// let a = bus1::Peer::open(scratch.backend())?;
/// let node = bus1::NodeId::new(0x8).unwrap();
/// // A peer may send to its own node.
/// a.send(&[node.into()], &[IoSlice::new(b"to "), IoSlice::new(b"myself")])?;
/// if let bus1::Event::Message(m) = a.recv()? {
///     assert_eq!(m.payload(), b"to myself");
///     assert_eq!(m.destination(), node);
///     assert_eq!(m.sender().unwrap().pid, std::process::id());
/// }
/// # Ok(())
/// # }
/// ```
pub struct Message<'p> {
    peer: &'p Peer,
    offset: u64,
    payload: &'p [u8],
    handles: &'p [u8],
    destination: NodeId,
    more: bool,
    sender: Option<Credentials>,
    fds: Vec<OwnedFd>,
}

/// `x` rounded up to a multiple of 8 (the slice layout's alignment).
fn align8(x: u64) -> u64 {
    x.saturating_add(7) & !7
}

impl<'p> Message<'p> {
    pub(crate) fn new(peer: &'p Peer, r: &Received) -> Message<'p> {
        // The slice: payload, padding to 8, the handle IDs, the fd numbers.
        // A report the mapping cannot hold (a bus that lies) shows empty
        // arrays rather than memory outside the pool.
        let handles_at = r.offset.saturating_add(align8(r.n_bytes));
        let fds_at = handles_at.saturating_add(r.n_handles.saturating_mul(8));
        let fds = peer
            .pool
            .bytes(fds_at, r.n_fds.saturating_mul(4))
            .map(|b| sys::installed_fds(b.chunks_exact(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))))
            .unwrap_or_default();
        Message {
            peer,
            offset: r.offset,
            payload: peer.pool.bytes(r.offset, r.n_bytes).unwrap_or_default(),
            handles: peer.pool.bytes(handles_at, r.n_handles.saturating_mul(8)).unwrap_or_default(),
            destination: NodeId::reported(r.destination),
            more: r.more,
            sender: r.sender.map(|[uid, gid, pid, tid]| Credentials { uid, gid, pid, tid }),
            fds,
        }
    }

    /// The payload: the concatenation of the sender's buffers. The view
    /// borrows the message, so it cannot outlive the slice's release.
    pub fn payload(&self) -> &[u8] {
        self.payload
    }

    /// The handles the message carried, in the sender's order: this
    /// peer's ID for each, or None for a node destroyed before the
    /// message was sent.
    pub fn handles(&self) -> impl ExactSizeIterator<Item = Option<HandleId>> + '_ {
        self.handles.chunks_exact(8).map(|c| {
            let id = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            (id != BUS1_HANDLE_INVALID).then_some(HandleId::from_raw(id))
        })
    }

    /// The fds the message carried, installed in this process.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes the fds out of the message (they stay open).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The node of this peer the message was sent to.
    pub fn destination(&self) -> NodeId {
        self.destination
    }

    /// Whether the next queued entry belongs to the same transaction.
    pub fn more(&self) -> bool {
        self.more
    }

    /// The sender's credentials (RFC v1 ABI only; None under the final
    /// ABI, whose RECV does not report them).
    pub fn sender(&self) -> Option<Credentials> {
        self.sender
    }

    /// The slice's offset in the pool.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("offset", &self.offset)
            .field("bytes", &self.payload.len())
            .field("handles", &self.handles().collect::<Vec<_>>())
            .field("fds", &self.fds.len())
            .field("destination", &self.destination)
            .field("more", &self.more)
            .field("sender", &self.sender)
            .finish()
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        // Fails only if the peer was disconnected through another fd of
        // it (which released every slice already): nothing left to do.
        let _ = self.peer.engine.slice_release(self.offset);
    }
}
