//! Peers: opening one on either backend, and every operation but sending
//! (`send`) and what a RECV returns (`message`).

use crate::engine::{Engine, Received};
use crate::error::{Error, Result};
use crate::id::{HandleId, NodeId};
use crate::message::{Event, Message};
use crate::pool::Pool;
use crate::sys;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uapi::*;

/// Which of bus1's two ABIs a peer speaks: the module as first posted
/// (RFC v1, 2016, the default) or its last state (2019). Both run on one
/// bus and exchange messages freely. What differs for this crate: only
/// the RFC v1 RECV reports the sender's credentials
/// ([`Message::sender`]), and a final peer's pool spans 4 GiB instead of
/// 512 MiB (so a single message may be larger).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Abi {
    /// The RFC v1 ABI.
    #[default]
    V1,
    /// The final ABI.
    Final,
}

impl Abi {
    /// The length of a peer's pool under this ABI (what this crate maps).
    pub const fn pool_size(self) -> u64 {
        match self {
            Abi::V1 => shm_core::POOL_SIZE,
            Abi::Final => shm_core::POOL_SIZE_FINAL,
        }
    }
}

/// How a peer reaches the bus.
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// let scratch = bus1::ScratchDomain::new()?;
/// // The engine linked into this program: no LD_PRELOAD needed.
/// let peer = bus1::Peer::open(bus1::Backend::Embedded(scratch.path().into()))?;
/// // Through the device (the kernel module, or the shim under
/// // LD_PRELOAD): `bus1::Peer::open(bus1::Backend::device())`.
/// # drop(peer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// ioctls on the device at this path: the bus1 kernel module, or the
    /// `LD_PRELOAD` shim when the program runs under it (which then finds
    /// the domain in `BUS1_DOMAIN`, as for any program).
    Device(PathBuf),
    /// The bus engine linked into this program, in the domain (a
    /// directory) given: no kernel module and no `LD_PRELOAD`. Its peers
    /// share the bus with every other process using that domain, shimmed
    /// C programs included.
    Embedded(PathBuf),
}

impl Backend {
    /// The device backend at `$BUS1_DEVICE`, or `/dev/bus1` (the path the
    /// shim intercepts by the same rule).
    pub fn device() -> Backend {
        match std::env::var_os("BUS1_DEVICE") {
            Some(p) if !p.is_empty() => Backend::Device(p.into()),
            _ => Backend::Device("/dev/bus1".into()),
        }
    }

    /// The embedded backend in `$BUS1_DOMAIN`, or the shim's default
    /// domain of this user (so that it meets shimmed programs run without
    /// a `BUS1_DOMAIN`).
    pub fn embedded() -> Backend {
        match std::env::var_os("BUS1_DOMAIN") {
            Some(d) if !d.is_empty() => Backend::Embedded(d.into()),
            _ => Backend::Embedded(shm_core::default_dir()),
        }
    }
}

/// The per-peer limits that PEER_QUERY reports and PEER_RESET sets (see
/// [`Peer::query`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Slices of the pool the peer's queued and received messages may hold.
    pub max_slices: u32,
    /// Handle references (held, and carried by queued messages).
    pub max_handles: u32,
    /// Bytes of queued messages.
    pub max_inflight_bytes: u32,
    /// File descriptors carried by queued messages.
    pub max_inflight_fds: u32,
}

/// What a [`Peer::reset`] does: flush the peer, drop its seed, change its
/// limits (each at most `0x7FFF_FFFF`; a limit left unset stays).
///
/// ```
/// let r = bus1::Reset::new().flush().max_slices(16);
/// # let _ = r;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reset {
    flush: bool,
    flush_seed: bool,
    limits: [Option<u32>; 4],
}

impl Reset {
    /// A reset that changes nothing yet.
    pub fn new() -> Reset {
        Reset::default()
    }

    /// Destroy every node of the peer, drop every handle, discard its
    /// queue and release every slice (`BUS1_PEER_RESET_FLAG_FLUSH`).
    pub fn flush(mut self) -> Reset {
        self.flush = true;
        self
    }

    /// Drop the seed (`BUS1_PEER_RESET_FLAG_FLUSH_SEED`).
    pub fn flush_seed(mut self) -> Reset {
        self.flush_seed = true;
        self
    }

    /// Sets [`Limits::max_slices`].
    pub fn max_slices(mut self, n: u32) -> Reset {
        self.limits[0] = Some(n);
        self
    }

    /// Sets [`Limits::max_handles`].
    pub fn max_handles(mut self, n: u32) -> Reset {
        self.limits[1] = Some(n);
        self
    }

    /// Sets [`Limits::max_inflight_bytes`].
    pub fn max_inflight_bytes(mut self, n: u32) -> Reset {
        self.limits[2] = Some(n);
        self
    }

    /// Sets [`Limits::max_inflight_fds`].
    pub fn max_inflight_fds(mut self, n: u32) -> Reset {
        self.limits[3] = Some(n);
        self
    }

    fn command(&self) -> bus1_cmd_peer_reset {
        let l = |i: usize| self.limits[i].unwrap_or(u32::MAX);
        bus1_cmd_peer_reset {
            flags: if self.flush { BUS1_PEER_RESET_FLAG_FLUSH } else { 0 }
                | if self.flush_seed { BUS1_PEER_RESET_FLAG_FLUSH_SEED } else { 0 },
            // Peer flags unchanged: the one value both ABIs accept.
            peer_flags: u64::MAX,
            max_slices: l(0),
            max_handles: l(1),
            max_inflight_bytes: l(2),
            max_inflight_fds: l(3),
        }
    }
}

/// A bus1 peer: its fd, its pool mapping and the backend that carries out
/// its operations.
///
/// Dropping it closes the fd; the peer goes away with its last fd (as
/// the module's does), destroying its nodes. Messages borrow the peer
/// they were received on, so a peer cannot be dropped, reset or
/// disconnected while one of its messages is alive.
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// use bus1::{Event, NodeId, Peer};
/// use std::io::IoSlice;
/// let scratch = bus1::ScratchDomain::new()?;
/// let (a, b) = (Peer::open(scratch.backend())?, Peer::open(scratch.backend())?);
/// // `a` names its node 0x100; `b` gets a handle on it.
/// let to_a = b.handle_from(&a, NodeId::new(0x100).unwrap())?;
/// b.send(&[to_a], &[IoSlice::new(b"hello")])?;
/// match a.recv()? {
///     Event::Message(m) => assert_eq!(m.payload(), b"hello"),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct Peer {
    // Dropped in this order: the mapping, then the fd.
    pub(crate) pool: Pool,
    pub(crate) engine: Engine,
    pub(crate) abi: Abi,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("fd", &self.engine.fd().as_raw_fd())
            .field("embedded", &self.engine.is_embedded())
            .field("abi", &self.abi)
            .finish()
    }
}

impl Peer {
    /// Opens a new peer on `backend`, speaking the RFC v1 ABI.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// assert!(peer.is_embedded());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(backend: Backend) -> Result<Peer> {
        Peer::open_abi(backend, Abi::V1)
    }

    /// Opens a new peer on `backend` that speaks `abi`. On the device
    /// backend under the shim the peer latches to `abi` with its first
    /// RECV, unless `BUS1_ABI` fixed another ABI (whose RECV is then
    /// ENOTTY, [`Error::NotTty`]).
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open_abi(scratch.backend(), bus1::Abi::Final)?;
    /// assert_eq!(peer.abi(), bus1::Abi::Final);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_abi(backend: Backend, abi: Abi) -> Result<Peer> {
        let engine = match &backend {
            Backend::Device(path) => Engine::open_device(path)?,
            Backend::Embedded(dir) => Engine::open_embedded(dir, abi)?,
        };
        Peer::with_engine(engine, abi)
    }

    /// Takes over a peer fd this process got otherwise (inherited across
    /// `exec`, received with `SCM_RIGHTS`). With `embedded`, the linked-in
    /// engine must recognise it (a peer socket of a domain this process
    /// may use): else [`Error::NotSupported`]. Without, it is used through
    /// the device's ioctls.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// use std::os::fd::AsFd;
    /// let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// let copy = peer.as_fd().try_clone_to_owned()?;
    /// let same = bus1::Peer::from_fd(copy, true, bus1::Abi::V1)?;
    /// assert_eq!(same.query()?, peer.query()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_fd(fd: OwnedFd, embedded: bool, abi: Abi) -> Result<Peer> {
        Peer::with_engine(Engine::from_fd(fd, embedded)?, abi)
    }

    fn with_engine(engine: Engine, abi: Abi) -> Result<Peer> {
        let pool = engine.map_pool(abi.pool_size() as usize)?;
        Ok(Peer { pool, engine, abi })
    }

    /// The ABI this peer speaks.
    pub fn abi(&self) -> Abi {
        self.abi
    }

    /// Whether the peer runs on the linked-in engine.
    pub fn is_embedded(&self) -> bool {
        self.engine.is_embedded()
    }

    /// PEER_QUERY: the peer's limits.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// assert_eq!(peer.query()?.max_slices, 16384);
    /// # Ok(())
    /// # }
    /// ```
    pub fn query(&self) -> Result<Limits> {
        let q = self.engine.query()?;
        Ok(Limits {
            max_slices: q.max_slices,
            max_handles: q.max_handles,
            max_inflight_bytes: q.max_inflight_bytes,
            max_inflight_fds: q.max_inflight_fds,
        })
    }

    /// PEER_RESET. It needs the peer exclusively: a flush releases every
    /// slice, so no message of the peer may be alive.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let mut peer = bus1::Peer::open(scratch.backend())?;
    /// peer.reset(&bus1::Reset::new().flush().max_handles(100))?;
    /// assert_eq!(peer.query()?.max_handles, 100);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset(&mut self, r: &Reset) -> Result<()> {
        self.engine.reset(&r.command())
    }

    /// PEER_DISCONNECT: the peer leaves the bus for good (its nodes are
    /// destroyed, its queue dropped); every later operation is
    /// [`Error::Shutdown`]. It needs the peer exclusively, as
    /// [`Peer::reset`] does.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let mut peer = bus1::Peer::open(scratch.backend())?;
    /// peer.disconnect()?;
    /// assert_eq!(peer.query(), Err(bus1::Error::Shutdown));
    /// assert_eq!(peer.disconnect(), Err(bus1::Error::Shutdown));
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect(&mut self) -> Result<()> {
        self.engine.disconnect()
    }

    /// HANDLE_RELEASE: drops one of the peer's references of `handle`
    /// (each RECV of a message carrying a handle, and each transfer to
    /// this peer, gives one).
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let (a, b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
    /// let h = b.handle_from(&a, bus1::NodeId::new(0x10).unwrap())?;
    /// b.release(h)?;
    /// assert_eq!(b.release(h), Err(bus1::Error::NoSuchHandle));
    /// # Ok(())
    /// # }
    /// ```
    pub fn release(&self, handle: HandleId) -> Result<()> {
        self.engine.handle_release(handle.raw())
    }

    /// HANDLE_TRANSFER: gives `to` (a peer this process holds, of the same
    /// bus) a reference of this peer's `handle`; returns `to`'s handle ID,
    /// or None if the node was destroyed. `to` may be this peer.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let (a, b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
    /// let node = bus1::NodeId::new(0x100).unwrap();
    /// let h = a.transfer(node.into(), &b)?.expect("a live node");
    /// assert!(h.is_remote());
    /// # Ok(())
    /// # }
    /// ```
    pub fn transfer(&self, handle: HandleId, to: &Peer) -> Result<Option<HandleId>> {
        let id = self.engine.handle_transfer(handle.raw(), Some(&to.engine))?;
        Ok((id != BUS1_HANDLE_INVALID).then_some(HandleId::from_raw(id)))
    }

    /// This peer's handle on `owner`'s `node`: a transfer from `owner` to
    /// this peer ([`Peer::transfer`] the other way round), or
    /// [`Error::Stale`] if the node is destroyed.
    pub fn handle_from(&self, owner: &Peer, node: NodeId) -> Result<HandleId> {
        owner.transfer(node.into(), self)?.ok_or(Error::Stale)
    }

    /// NODES_DESTROY: destroys `nodes` (all of this peer's, all live) in
    /// one transaction; every holder is told with a NODE_DESTROY. With
    /// `release_handles`, also drops the peer's own reference of each.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let (a, b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
    /// let node = bus1::NodeId::new(0x40).unwrap();
    /// let h = b.handle_from(&a, node)?;
    /// a.destroy(&[node], true)?;
    /// match b.recv()? {
    ///     bus1::Event::NodeDestroy { handle, .. } => assert_eq!(handle, h),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn destroy(&self, nodes: &[NodeId], release_handles: bool) -> Result<()> {
        let flags = if release_handles { BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES } else { 0 };
        self.engine.nodes_destroy(flags, sys::node_words(nodes))
    }

    /// One RECV: the next message or notification, or [`Error::Again`] if
    /// nothing is queued. Received fds are installed in this process.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// assert_eq!(peer.try_recv().err(), Some(bus1::Error::Again));
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&self) -> Result<Event<'_>> {
        let r = self.engine.recv(self.abi, false, self.pool.len())?;
        Ok(self.event(r))
    }

    /// Waits for the next message or notification and receives it. A
    /// disconnected peer fails with [`Error::Shutdown`]. The wait sleeps
    /// (the device's `poll`, or the engine's waiter on a futex): no busy
    /// loop.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// use std::io::IoSlice;
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let (a, b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
    /// let to_a = b.handle_from(&a, bus1::NodeId::new(0x4).unwrap())?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| b.send(&[to_a], &[IoSlice::new(b"wake up")]).unwrap());
    ///     match a.recv().unwrap() {
    ///         bus1::Event::Message(m) => assert_eq!(m.payload(), b"wake up"),
    ///         other => panic!("{other:?}"),
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv(&self) -> Result<Event<'_>> {
        self.recv_until(None)
    }

    /// As [`Peer::recv`], for at most `timeout`: [`Error::Again`] if
    /// nothing came.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// let r = peer.recv_timeout(std::time::Duration::from_millis(10));
    /// assert_eq!(r.err(), Some(bus1::Error::Again));
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event<'_>> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Event<'_>> {
        loop {
            match self.try_recv() {
                Err(Error::Again) => {}
                r => return r,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Again);
            }
            self.engine.wait(deadline)?;
        }
    }

    /// RECV of the seed (see [`crate::Send::set_seed`]): consumes it;
    /// [`Error::Again`] if there is none.
    pub fn recv_seed(&self) -> Result<Message<'_>> {
        let r = self.engine.recv(self.abi, true, self.pool.len())?;
        match self.event(r) {
            Event::Message(m) => Ok(m),
            // A seed is always a message.
            _ => Err(Error::Os(libc::EPROTO)),
        }
    }

    fn event(&self, r: Received) -> Event<'_> {
        match r.kind {
            BUS1_MSG_NODE_DESTROY => Event::NodeDestroy { handle: HandleId::from_raw(r.destination), more: r.more },
            BUS1_MSG_NODE_RELEASE => Event::NodeRelease { node: NodeId::reported(r.destination), more: r.more },
            _ => Event::Message(Message::new(self, &r)),
        }
    }
}

impl AsFd for Peer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.engine.fd()
    }
}

impl AsRawFd for Peer {
    fn as_raw_fd(&self) -> RawFd {
        self.engine.fd().as_raw_fd()
    }
}
