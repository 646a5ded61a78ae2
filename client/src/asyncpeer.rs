//! An async `recv` on tokio's reactor (feature `tokio`).
//!
//! The task sleeps in the reactor on a descriptor that becomes readable
//! when the peer may have something, and looks (one RECV) only then: no
//! busy loop. Which descriptor depends on the backend:
//!
//! * device: the peer fd itself. Under the module it is readable while the
//!   queue is; under the `LD_PRELOAD` shim the reactor's `epoll_wait` is
//!   the shim's, which reports the peer's readiness from the bus.
//! * embedded: there is no interposer to report the peer fd's readiness,
//!   so the peer gets a [`shm_core::Listener`], a waiter of the engine
//!   with a wake socket of its own. A task arms it (publishes itself in
//!   the peer's sleeper map), looks once more, and only then awaits the
//!   socket; a sender that commits after the publication rings it. The
//!   peer fd is never registered with the reactor, so a process that also
//!   runs under the shim handles nothing twice.
//!
//! A task that finds the peer empty after a wake-up clears the readiness
//! (and, embedded, drains the wake socket) before it looks again, so a
//! wake-up that comes meanwhile is never lost; one that received something
//! leaves the readiness set, so that other tasks waiting on the same peer
//! look too. Dropping a pending `recv` (cancellation) withdraws its
//! publication.

use crate::error::{Error, Result};
use crate::message::Event;
use crate::peer::{Peer, Reset};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

/// A [`Peer`] with an async [`AsyncPeer::recv`]; every other operation of
/// the peer is reached through `Deref`. Made inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> bus1::Result<()> {
/// use std::io::IoSlice;
/// # let scratch = bus1::ScratchDomain::new()?;
/// let server = bus1::AsyncPeer::new(bus1::Peer::open(scratch.backend())?)?;
/// let client = bus1::Peer::open(scratch.backend())?;
/// let to_server = client.handle_from(&server, bus1::NodeId::new(0x100).unwrap())?;
/// let task = tokio::spawn(async move {
///     match server.recv().await? {
///         bus1::Event::Message(m) => Ok::<_, bus1::Error>(m.payload().to_vec()),
///         other => panic!("{other:?}"),
///     }
/// });
/// client.send(&[to_server], &[IoSlice::new(b"ping")])?;
/// assert_eq!(task.await.unwrap()?, b"ping");
/// # Ok(())
/// # }
/// ```
pub struct AsyncPeer {
    /// A descriptor of the file the reactor watches (the peer's, or its
    /// listener's wake socket), its own so that it stays open while
    /// registered.
    io: AsyncFd<OwnedFd>,
    listener: Option<shm_core::Listener>,
    peer: Peer,
}

impl std::fmt::Debug for AsyncPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncPeer").field("peer", &self.peer).field("listener", &self.listener).finish()
    }
}

impl AsyncPeer {
    /// Registers `peer` with the current tokio runtime's reactor (panics
    /// outside a runtime, as tokio's own types do). Embedded: ENOSPC
    /// ([`Error::NoSpace`]) if the domain has no waiter slot free.
    pub fn new(peer: Peer) -> Result<AsyncPeer> {
        let listener = peer.engine.listener().transpose()?;
        let watched = match &listener {
            Some(l) => crate::sys::adopt(l.dup_fd()?),
            None => peer.as_fd().try_clone_to_owned()?,
        };
        let io = crate::sys::register(watched)?;
        Ok(AsyncPeer { io, listener, peer })
    }

    /// Waits for the next message or notification and receives it.
    /// Cancel-safe: a `recv` dropped before it completes has received
    /// nothing.
    pub async fn recv(&self) -> Result<Event<'_>> {
        loop {
            let guard = self.listener.as_ref().map(|l| l.arm());
            // Armed (embedded) before this look: whatever is sent after it
            // rings the socket.
            match self.peer.try_recv() {
                Err(Error::Again) => {}
                r => return r,
            }
            let mut ready = self.io.readable().await?;
            match self.peer.try_recv() {
                Err(Error::Again) => {}
                r => return r,
            }
            // Nothing there: forget the wake-ups seen so far, then look
            // again (the loop) before sleeping once more.
            if let Some(l) = &self.listener {
                l.drain();
            }
            ready.clear_ready();
            drop(guard);
        }
    }

    /// The peer.
    pub fn get_ref(&self) -> &Peer {
        &self.peer
    }

    /// [`Peer::reset`].
    pub fn reset(&mut self, r: &Reset) -> Result<()> {
        self.peer.reset(r)
    }

    /// [`Peer::disconnect`]; a pending or later `recv` then fails with
    /// [`Error::Shutdown`].
    pub fn disconnect(&mut self) -> Result<()> {
        self.peer.disconnect()
    }

    /// The peer, taken off the reactor.
    pub fn into_inner(self) -> Peer {
        let AsyncPeer { io, listener, peer } = self;
        drop(io);
        drop(listener);
        peer
    }
}

impl std::ops::Deref for AsyncPeer {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl AsRawFd for AsyncPeer {
    fn as_raw_fd(&self) -> RawFd {
        self.peer.as_raw_fd()
    }
}
