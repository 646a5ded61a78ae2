//! bus1 for Rust programs: peers, nodes, handles, messages read in place
//! from the pool, fd passing and async receiving, with or without
//! `LD_PRELOAD`.
//!
//! A [`Peer`] is opened on one of two backends ([`Backend`]), which offer
//! the same API and share one bus:
//!
//! * **device** — ioctls on `/dev/bus1`, exactly as a C program makes them:
//!   the bus1 kernel module where there is one, otherwise the
//!   `LD_PRELOAD` shim (`scripts/bus1-run ./program`, or
//!   `LD_PRELOAD=.../libbus1_preload.so`);
//! * **embedded** — the bus engine (`shm-core`, the shim's own engine)
//!   linked into the program: no module, no `LD_PRELOAD`. Its peers live
//!   in a domain directory like any other, so they talk to device peers
//!   of shimmed processes and to C programs under the shim.
//!
//! The object model is the module's: a peer owns *nodes* ([`NodeId`]),
//! holds *handles* on other peers' nodes ([`HandleId`]), sends a message
//! to handles ([`Peer::send`], [`Peer::message`]) with handles and fds
//! attached, and receives messages and notifications in one global order
//! ([`Peer::recv`], [`Event`]). A [`Message`] reads its payload in place
//! from the peer's pool and releases its slice when dropped. Errors keep
//! their errno ([`Error`]). With the `tokio` feature, [`AsyncPeer`]
//! receives on tokio's reactor.
//!
//! ```
//! # fn main() -> bus1::Result<()> {
//! use bus1::{Event, NodeId, Peer};
//! use std::io::IoSlice;
//!
//! // A private bus for the example; a program would use
//! // `bus1::Backend::embedded()` (the user's default domain, or
//! // `$BUS1_DOMAIN`) or `bus1::Backend::device()`.
//! let scratch = bus1::ScratchDomain::new()?;
//! let service = Peer::open(scratch.backend())?;
//! let client = Peer::open(scratch.backend())?;
//!
//! // The service's node 0x100; the client gets a handle on it, and sends
//! // a handle on its own node 0x200 along for the reply.
//! let to_service = client.handle_from(&service, NodeId::new(0x100).unwrap())?;
//! let reply_node = NodeId::new(0x200).unwrap();
//! client.message().to(&[to_service]).payload(&[IoSlice::new(b"ping")]).handles(&[reply_node.into()]).send()?;
//!
//! if let Event::Message(m) = service.recv()? {
//!     let reply_to = m.handles().next().flatten().expect("a reply handle");
//!     service.send(&[reply_to], &[IoSlice::new(b"pong: "), IoSlice::new(m.payload())])?;
//!     service.release(reply_to)?;
//! }
//! match client.recv()? {
//!     Event::Message(m) => assert_eq!(m.payload(), b"pong: ping"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `unsafe` code lives in two modules: `sys` (the device's system calls)
//! and `pool` (the pool mapping and the views into it).

#![warn(missing_docs)]

mod engine;
mod error;
mod id;
mod message;
mod peer;
mod pool;
mod scratch;
mod send;
mod sys;

#[cfg(feature = "tokio")]
mod asyncpeer;

#[cfg(feature = "tokio")]
pub use asyncpeer::AsyncPeer;
pub use error::{Error, Result};
pub use id::{HandleId, NodeId};
pub use message::{Credentials, Event, Message};
pub use peer::{Abi, Backend, Limits, Peer, Reset};
pub use scratch::ScratchDomain;
pub use send::{Delivery, Send};

/// At a normal exit (`exit`, a return from `main`) with no other thread
/// left: leaves the domains the linked-in engine attached, so that the
/// last process to use a domain removes its memory, as the shim does at
/// its exit. Peers still open then are torn down by whoever looks next.
extern "C" fn leave_domains_at_exit() {
    if shm_core::Domain::any_attached() && shm_core::only_thread_left() {
        shm_core::Domain::leave_all();
    }
}

#[used]
#[link_section = ".fini_array"]
static LEAVE_DOMAINS_AT_EXIT: extern "C" fn() = leave_domains_at_exit;
