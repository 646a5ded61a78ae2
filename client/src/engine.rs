//! The two backends behind [`Peer`](crate::Peer): each operation as the
//! device's ioctl or as a call of the linked-in engine, both speaking the
//! ABI's structs. Nothing here knows bus semantics: the device backend
//! hands the command to whatever serves `/dev/bus1` (the kernel module or
//! the shim), the embedded one to `shm-core`, which is the shim's engine.

use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::sys::{self, SendArrays};
use crate::Abi;
use shm_core::{AbiMode, OpenFlags, SendSlices, Sleep, WaitSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Instant;
use uapi::*;

/// A peer fd and the way its operations are carried out.
pub(crate) enum Engine {
    /// ioctls on a descriptor of the device.
    Device(OwnedFd),
    /// Calls of the engine linked into this program.
    Embedded(Embedded),
}

/// A peer of the linked-in engine.
pub(crate) struct Embedded {
    /// Always Some until dropped (taken to close it before the engine
    /// checks whether it was the peer's last fd).
    fd: Option<OwnedFd>,
    pub(crate) peer: shm_core::Peer,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        drop(self.fd.take());
        // If that was the peer's last fd anywhere, it goes now, as the
        // module's peer goes with its last close.
        self.peer.closed();
    }
}

/// What a RECV reported, whatever the ABI.
pub(crate) struct Received {
    pub kind: u64,
    pub more: bool,
    pub destination: u64,
    pub offset: u64,
    pub n_bytes: u64,
    pub n_handles: u64,
    pub n_fds: u64,
    /// uid, gid, pid, tid (the RFC v1 RECV only).
    pub sender: Option<[u32; 4]>,
}

impl Engine {
    pub fn open_device(path: &Path) -> Result<Engine> {
        Ok(Engine::Device(sys::open_device(path)?))
    }

    pub fn open_embedded(domain: &Path, abi: Abi) -> Result<Engine> {
        let flags = OpenFlags { access: libc::O_RDWR, cloexec: true, nonblock: true };
        let mode = match abi {
            Abi::V1 => AbiMode::V1,
            Abi::Final => AbiMode::Final,
        };
        let (fd, peer) = shm_core::Peer::open_as(domain, flags, mode)?;
        Ok(Engine::Embedded(Embedded { fd: Some(sys::adopt(fd)), peer }))
    }

    /// A peer fd this process got some other way (inherited, received).
    pub fn from_fd(fd: OwnedFd, embedded: bool) -> Result<Engine> {
        if !embedded {
            return Ok(Engine::Device(fd));
        }
        match shm_core::Peer::identify(fd.as_raw_fd())? {
            Some(peer) => Ok(Engine::Embedded(Embedded { fd: Some(fd), peer })),
            None => Err(Error::NotSupported),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Engine::Device(fd) => fd.as_fd(),
            Engine::Embedded(e) => e.fd.as_ref().expect("open peer").as_fd(),
        }
    }

    fn raw(&self) -> i32 {
        self.fd().as_raw_fd()
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Engine::Embedded(_))
    }

    /// Maps the pool, `len` bytes.
    pub fn map_pool(&self, len: usize) -> Result<Pool> {
        match self {
            Engine::Device(fd) => Pool::map(fd.as_fd(), len),
            Engine::Embedded(e) => {
                let file = sys::adopt(e.peer.pool_fd_for_mmap(libc::O_RDWR, libc::PROT_READ, libc::MAP_SHARED)?);
                Pool::map(file.as_fd(), len)
            }
        }
    }

    pub fn query(&self) -> Result<bus1_cmd_peer_reset> {
        match self {
            Engine::Device(fd) => sys::query(fd.as_fd()),
            Engine::Embedded(e) => Ok(e.peer.query(0)?),
        }
    }

    pub fn reset(&self, r: &bus1_cmd_peer_reset) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::reset(fd.as_fd(), r),
            Engine::Embedded(e) => Ok(e.peer.reset(self.raw(), r)?),
        }
    }

    pub fn disconnect(&self) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::disconnect(fd.as_fd()),
            Engine::Embedded(e) => Ok(e.peer.disconnect(self.raw(), 0)?),
        }
    }

    pub fn handle_release(&self, id: u64) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::handle_release(fd.as_fd(), id),
            Engine::Embedded(e) => Ok(e.peer.handle_release(self.raw(), id)?),
        }
    }

    /// HANDLE_TRANSFER of `src` to `dst` (None: this peer); returns the
    /// destination's handle ID (`BUS1_HANDLE_INVALID` for a destroyed node).
    pub fn handle_transfer(&self, src: u64, dst: Option<&Engine>) -> Result<u64> {
        match self {
            Engine::Device(fd) => {
                let mut t = bus1_cmd_handle_transfer {
                    flags: 0,
                    src_handle: src,
                    dst_fd: dst.map_or(u64::MAX, |d| d.raw() as u64),
                    dst_handle: BUS1_HANDLE_INVALID,
                };
                sys::handle_transfer(fd.as_fd(), &mut t)?;
                Ok(t.dst_handle)
            }
            Engine::Embedded(e) => {
                // The destination as the linked-in engine knows it: its own
                // peer, or a device peer of the shim in this process.
                let found;
                let to = match dst {
                    None => None,
                    Some(Engine::Embedded(d)) => Some(&d.peer),
                    Some(d @ Engine::Device(_)) => {
                        found = shm_core::Peer::identify(d.raw())?.ok_or(Error::NotSupported)?;
                        Some(&found)
                    }
                };
                let to = to.filter(|d| !(d.serial() == e.peer.serial() && std::sync::Arc::ptr_eq(d.domain(), e.peer.domain())));
                Ok(e.peer.handle_transfer(self.raw(), src, to)?)
            }
        }
    }

    pub fn nodes_destroy(&self, flags: u64, nodes: &[u64]) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::nodes_destroy(fd.as_fd(), flags, nodes),
            Engine::Embedded(e) => Ok(e.peer.nodes_destroy_slice(self.raw(), flags, nodes)?),
        }
    }

    pub fn slice_release(&self, offset: u64) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::slice_release(fd.as_fd(), offset),
            Engine::Embedded(e) => Ok(e.peer.slice_release(self.raw(), offset)?),
        }
    }

    pub fn send(&self, a: SendArrays<'_>) -> Result<()> {
        match self {
            Engine::Device(fd) => sys::send(fd.as_fd(), a),
            Engine::Embedded(e) => {
                let args = SendSlices {
                    flags: a.flags,
                    destinations: a.destinations,
                    errors: a.errors,
                    payload: a.payload,
                    handles: a.handles,
                    fds: a.fds,
                };
                Ok(e.peer.send_slices(self.raw(), args)?)
            }
        }
    }

    /// RECV with INSTALL_FDS (and SEED if `seed`), in `abi`'s layout.
    pub fn recv(&self, abi: Abi, seed: bool, max_offset: u64) -> Result<Received> {
        // (type, CONTINUE, destination, offset, n_bytes, n_handles, n_fds,
        // sender) whichever layout it came in.
        let (kind, more, destination, offset, counts, sender) = match abi {
            Abi::V1 => {
                let flags = BUS1_RECV_FLAG_INSTALL_FDS | if seed { BUS1_RECV_FLAG_SEED } else { 0 };
                let m = match self {
                    Engine::Device(fd) => sys::recv_v1(fd.as_fd(), flags, max_offset)?,
                    Engine::Embedded(e) => e.peer.recv(self.raw(), flags, max_offset)?,
                };
                let sender = (m.r#type == BUS1_MSG_DATA).then_some([m.uid, m.gid, m.pid, m.tid]);
                (m.r#type, m.flags & BUS1_MSG_FLAG_CONTINUE, m.destination, m.offset, [m.n_bytes, m.n_handles, m.n_fds], sender)
            }
            Abi::Final => {
                use final_abi::{BUS1_MSG_FLAG_CONTINUE, BUS1_RECV_FLAG_INSTALL_FDS, BUS1_RECV_FLAG_SEED};
                let flags = BUS1_RECV_FLAG_INSTALL_FDS | if seed { BUS1_RECV_FLAG_SEED } else { 0 };
                let m = match self {
                    Engine::Device(fd) => sys::recv_final(fd.as_fd(), flags, max_offset)?,
                    Engine::Embedded(e) => e.peer.recv_final(self.raw(), flags, max_offset)?,
                };
                (m.r#type, m.flags & BUS1_MSG_FLAG_CONTINUE, m.destination, m.offset, [m.n_bytes, m.n_handles, m.n_fds], None)
            }
        };
        let [n_bytes, n_handles, n_fds] = counts;
        Ok(Received { kind, more: more != 0, destination, offset, n_bytes, n_handles, n_fds, sender })
    }

    /// Sleeps until the peer may be readable or hung up, or `deadline`
    /// passed (None: no limit). May return early: the caller looks.
    pub fn wait(&self, deadline: Option<Instant>) -> Result<()> {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self {
            Engine::Device(fd) => {
                // Whole milliseconds, rounded up (a wait never ends early
                // for want of precision).
                let ms = left.map_or(-1, |l| l.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32);
                match sys::poll_in(fd.as_fd(), ms) {
                    Ok(_) | Err(Error::Interrupted) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Engine::Embedded(e) => {
                let ready = || {
                    let r = e.peer.readiness();
                    r.readable || r.hup
                };
                if ready() {
                    return Ok(());
                }
                // Publish, then look again (a sender that commits later
                // sees this thread and rings it), then sleep.
                let mut set = WaitSet::new();
                e.peer.watch(&mut set);
                let armed = set.arm(Sleep::Futex);
                if ready() {
                    return Ok(());
                }
                let ts = left.map(|l| libc::timespec { tv_sec: l.as_secs() as _, tv_nsec: l.subsec_nanos() as _ });
                match armed {
                    Some(a) if !a.rung() => a.futex_sleep(ts.as_ref()),
                    Some(_) => {}
                    // No waiter slot free: short sleeps instead.
                    None => std::thread::sleep(left.unwrap_or(std::time::Duration::MAX).min(std::time::Duration::from_millis(5))),
                }
                Ok(())
            }
        }
    }

    /// The linked-in engine's waiter for async tasks (embedded only).
    #[cfg(feature = "tokio")]
    pub fn listener(&self) -> Option<Result<shm_core::Listener>> {
        match self {
            Engine::Device(_) => None,
            Engine::Embedded(e) => Some(e.peer.listener().map_err(Error::from)),
        }
    }
}
