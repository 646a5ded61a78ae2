//! Node and handle IDs.
//!
//! bus1 names everything a peer can reach by a *handle ID* in that peer's
//! own namespace. A handle on a node the peer owns is its *owner handle*,
//! and its ID is how the peer names the node: either an ID the
//! application chose (any multiple of 4; the node is made the first time
//! the ID is used), or one the bus assigned. Handles on other peers'
//! nodes always get IDs from the bus. The two types below keep the two
//! roles apart; both are plain numbers, valid only with the peer they
//! came from.

use std::fmt;

/// A handle ID of one peer: a destination of a message, a handle carried
/// in one, or the subject of a release or transfer. Any [`NodeId`]
/// converts into the handle the peer has on its own node.
///
/// ```
/// use bus1::{HandleId, NodeId};
/// let own: HandleId = NodeId::new(0x100).unwrap().into();
/// assert!(!own.is_remote());
/// let remote = HandleId::from_raw(0xb); // the first remote handle a peer learns of
/// assert!(remote.is_remote() && remote.is_managed());
/// assert_eq!(remote.raw(), 0xb);
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(u64);

impl HandleId {
    /// The handle with this ID as the ABI spells it.
    pub const fn from_raw(id: u64) -> HandleId {
        HandleId(id)
    }

    /// The ID as the ABI spells it.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the bus assigned the ID (`BUS1_HANDLE_FLAG_MANAGED`).
    pub const fn is_managed(self) -> bool {
        self.0 & uapi::BUS1_HANDLE_FLAG_MANAGED != 0
    }

    /// Whether it is a handle on another peer's node
    /// (`BUS1_HANDLE_FLAG_REMOTE`).
    pub const fn is_remote(self) -> bool {
        self.0 & uapi::BUS1_HANDLE_FLAG_REMOTE != 0
    }

    /// The node, if this is an owner handle (not remote).
    pub const fn node(self) -> Option<NodeId> {
        if self.is_remote() {
            None
        } else {
            Some(NodeId(self.0))
        }
    }
}

impl fmt::Debug for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleId({:#x})", self.0)
    }
}

/// A node the peer owns, named by its owner handle's ID.
///
/// ```
/// use bus1::NodeId;
/// let n = NodeId::new(0x100).unwrap();
/// assert_eq!(n.raw(), 0x100);
/// assert_eq!(NodeId::new(0x101), None); // the low two bits are the bus's
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// An ID the application chooses for a node of its own: any multiple
    /// of 4 (the two low bits are the bus's flags). The node exists from
    /// the first operation that names the ID (a SEND to it, a transfer of
    /// it, a handle carried in a message); until then the ID is free.
    pub const fn new(id: u64) -> Option<NodeId> {
        if id & 3 == 0 {
            Some(NodeId(id))
        } else {
            None
        }
    }

    /// A node ID as the bus reported it (an owner handle it assigned has
    /// bit 0 set).
    pub(crate) const fn reported(id: u64) -> NodeId {
        NodeId(id)
    }

    /// The ID as the ABI spells it.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The peer's own handle on the node.
    pub const fn handle(self) -> HandleId {
        HandleId(self.0)
    }
}

impl From<NodeId> for HandleId {
    fn from(n: NodeId) -> HandleId {
        n.handle()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:#x})", self.0)
    }
}
