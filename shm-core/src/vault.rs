//! The fd vault: where file descriptors attached to queued messages are
//! kept while the message waits, as the kernel's own `SCM_RIGHTS`
//! references (see `doorbell` for the vault datagram that keeps a peer's
//! vault alive inside its socket).
//!
//! A vault generation is a listening `SOCK_SEQPACKET` socket bound at
//! `vault.<serial>.<gen>`, to which each sender connects and sends one
//! *carrier* (the message's nonce and its fds), plus a datagram socket pair
//! (the *inbox*) where carriers that must stay queued after being looked at
//! (PEEK) are parked. Carriers are matched by nonce; carriers whose nonce no
//! longer names a message (rolled back, discarded) are orphans and are
//! dropped when met.

use crate::domain::Domain;
use crate::errno::{Errno, Result};
use crate::layout::*;
use crate::sys::{self, FdMode, UnixAddr};
use crate::table;
use crate::txn::Txn;

pub(crate) const VAULT_MAGIC: &[u8; 4] = b"B1V\0";
const CARRIER_MAGIC: &[u8; 4] = b"B1C\0";
/// SCM_MAX_FD: the kernel's limit of descriptors per datagram.
const FDS_PER_PART: usize = 253;
const VAULT_BACKLOG: i32 = 4096;

/// Creates vault generation `gen` of peer `serial` and puts its datagram
/// into the peer socket.
pub(crate) fn new_vault(dom: &Domain, serial: u64, gen: u64, tx_requires_live: bool) -> Result<()> {
    let name = Domain::vault_name(serial, gen);
    let listener = sys::socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK)?;
    let close_all = |fds: &[i32]| fds.iter().for_each(|f| sys::close(*f));
    if let Err(e) = bind_fresh(dom, listener, &name).and_then(|_| sys::listen(listener, VAULT_BACKLOG)) {
        close_all(&[listener]);
        return Err(map_resource_err(e));
    }
    let (rd, wr) = match sys::socketpair(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK) {
        Ok(p) => p,
        Err(e) => {
            close_all(&[listener]);
            return Err(map_resource_err(e));
        }
    };
    let _ = sys::setsockopt_int(wr, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
    let mut payload = VAULT_MAGIC.to_vec();
    payload.extend_from_slice(&gen.to_le_bytes());
    let peer_addr = UnixAddr::new(&dom.peer_path(serial))?;
    let r = dom.with_ring_fd(|fd| match sys::send_msg(fd, Some(&peer_addr), &payload, &[listener, rd, wr]) {
        Err(Errno::EAGAIN) => (Err(Errno::EAGAIN), true),
        r => (r, false),
    });
    close_all(&[listener, rd, wr]);
    match r {
        Ok(Ok(())) => Ok(()),
        // The peer socket is gone: the peer is being torn down, and its
        // messages with it.
        Ok(Err(Errno::ECONNREFUSED)) | Ok(Err(Errno::ENOENT)) => {
            if tx_requires_live { Err(Errno::PEER_GONE) } else { Ok(()) }
        }
        Ok(Err(e)) | Err(e) => Err(map_resource_err(e)),
    }
}

fn bind_fresh(dom: &Domain, fd: i32, name: &[u8]) -> Result<()> {
    match dom.bind_socket(fd, name) {
        Err(Errno(libc::EADDRINUSE)) => {
            // A stale file of a generation that was rolled back.
            let _ = dom.remove_entry(name);
            dom.bind_socket(fd, name)
        }
        r => r,
    }
}

/// Kernel resource errors of fd transport, as the bus reports them.
fn map_resource_err(e: Errno) -> Errno {
    match e {
        Errno::EAGAIN | Errno::ETOOMANYREFS => Errno::EDQUOT,
        Errno::EMFILE | Errno(libc::ENFILE) => Errno::EMFILE,
        _ => Errno::ENOMEM,
    }
}

fn carrier_header(nonce: u64, part: u32, nparts: u32) -> Vec<u8> {
    let mut h = CARRIER_MAGIC.to_vec();
    h.extend_from_slice(&nonce.to_le_bytes());
    h.extend_from_slice(&part.to_le_bytes());
    h.extend_from_slice(&nparts.to_le_bytes());
    h
}

fn parse_carrier(b: &[u8]) -> Option<(u64, u32, u32)> {
    if b.len() < 20 || &b[..4] != CARRIER_MAGIC {
        return None;
    }
    Some((
        u64::from_le_bytes(b[4..12].try_into().ok()?),
        u32::from_le_bytes(b[12..16].try_into().ok()?),
        u32::from_le_bytes(b[16..20].try_into().ok()?),
    ))
}

pub(crate) fn send_carrier(dom: &Domain, serial: u64, gen: u64, nonce: u64, fds: &[i32]) -> Result<()> {
    let addr = UnixAddr::new(&dom.vault_path(serial, gen))?;
    let c = sys::socket(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK).map_err(map_resource_err)?;
    let r = (|| {
        match sys::connect(c, &addr) {
            Ok(()) => {}
            // The vault died with its peer: nobody will receive this.
            Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(map_resource_err(e)),
        }
        let parts: Vec<&[i32]> = fds.chunks(FDS_PER_PART).collect();
        for (i, part) in parts.iter().enumerate() {
            sys::send_msg(c, None, &carrier_header(nonce, i as u32, parts.len() as u32), part).map_err(|e| match e {
                Errno::EBADF => Errno::EBADF,
                e => map_resource_err(e),
            })?;
        }
        Ok(())
    })();
    sys::close(c);
    r
}

/// Descriptors of a peer's vault, installed temporarily in this process.
pub struct Vault {
    listener: i32,
    inbox_rd: i32,
    inbox_wr: i32,
}

impl Vault {
    /// The vault whose three sockets (listener, inbox reading and writing
    /// end) were just installed in this process from its datagram.
    pub(crate) fn from_fds(fds: [i32; 3]) -> Vault {
        Vault { listener: fds[0], inbox_rd: fds[1], inbox_wr: fds[2] }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        for fd in [self.listener, self.inbox_rd, self.inbox_wr] {
            sys::close(fd);
        }
    }
}

/// What to do with a carrier that was found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Install its fds and keep it (PEEK).
    Peek,
    /// Remove it without installing anything.
    Discard,
}

fn is_orphan(tx: &Txn, nonce: u64) -> bool {
    table::get(tx, TAG_NONCE, 0, nonce).is_none()
}

/// Reads all parts of one carrier from `fd` (a vault connection or the
/// inbox), installing fds unless discarding.
fn read_parts(fd: i32, install: bool) -> Result<(u64, Vec<i32>)> {
    let mut buf = [0u8; 32];
    let mut fds = Vec::new();
    let mut nonce = 0;
    let mut part = 0;
    loop {
        let mode = if install { FdMode::Install } else { FdMode::Discard };
        match sys::recv_msg(fd, &mut buf, false, mode, FDS_PER_PART) {
            Ok((n, got)) => {
                fds.extend(got);
                let Some((nc, _, nparts)) = parse_carrier(&buf[..n]) else { break };
                nonce = nc;
                part += 1;
                if part >= nparts {
                    break;
                }
            }
            Err(e) => {
                fds.iter().for_each(|f| sys::close(*f));
                return Err(e);
            }
        }
    }
    Ok((nonce, fds))
}

/// Parks a carrier's fds in the inbox (behind everything there).
fn park(v: &Vault, nonce: u64, fds: &[i32]) -> Result<()> {
    let parts: Vec<&[i32]> = if fds.is_empty() { vec![&[][..]] } else { fds.chunks(FDS_PER_PART).collect() };
    for (i, part) in parts.iter().enumerate() {
        sys::send_msg(v.inbox_wr, None, &carrier_header(nonce, i as u32, parts.len() as u32), part)
            .map_err(map_resource_err)?;
    }
    Ok(())
}

/// Finds the carrier of `nonce` in the vault and handles it as `want`
/// says. Returns the installed fds (empty when discarding), or None if the
/// carrier is missing.
pub fn find_carrier(tx: &Txn, v: &Vault, nonce: u64, want: Want) -> Result<Option<Vec<i32>>> {
    let mut buf = [0u8; 32];
    // The inbox first: parked carriers are older than anything pending on
    // the listener. Rotate past carriers of other queued messages.
    let mut rotations = 0;
    while let Ok((n, _)) = sys::recv_msg(v.inbox_rd, &mut buf, true, FdMode::Discard, 0) {
        let Some((nc, _, nparts)) = parse_carrier(&buf[..n]) else {
            let _ = sys::discard_datagram(v.inbox_rd);
            continue;
        };
        if nc == nonce {
            if want == Want::Peek && nparts == 1 {
                let (_, fds) = sys::recv_msg(v.inbox_rd, &mut buf, true, FdMode::Install, FDS_PER_PART)
                    .map_err(map_install_err)?;
                return Ok(Some(fds));
            }
            let (_, fds) = read_parts(v.inbox_rd, want != Want::Discard).map_err(map_install_err)?;
            if want == Want::Peek {
                if let Err(e) = park(v, nonce, &fds) {
                    fds.iter().for_each(|f| sys::close(*f));
                    return Err(e);
                }
            }
            return Ok(Some(fds));
        }
        if is_orphan(tx, nc) {
            let _ = read_parts(v.inbox_rd, false);
            continue;
        }
        rotations += 1;
        if rotations > 1024 {
            break;
        }
        let (nc, fds) = read_parts(v.inbox_rd, true).map_err(map_install_err)?;
        let r = park(v, nc, &fds);
        fds.iter().for_each(|f| sys::close(*f));
        r?;
    }
    // Then connections pending on the listener, in commit order.
    loop {
        let conn = match sys::accept(v.listener) {
            Ok(c) => c,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(map_install_err(e)),
        };
        let r = (|| {
            let (n, _) = sys::recv_msg(conn, &mut buf, true, FdMode::Discard, 0)?;
            let Some((nc, _, _)) = parse_carrier(&buf[..n]) else { return Ok(None) };
            if nc == nonce {
                let (_, fds) = read_parts(conn, want != Want::Discard)?;
                if want == Want::Peek {
                    if let Err(e) = park(v, nonce, &fds) {
                        fds.iter().for_each(|f| sys::close(*f));
                        return Err(e);
                    }
                }
                return Ok(Some(Some(fds)));
            }
            if is_orphan(tx, nc) {
                let _ = read_parts(conn, false);
            } else {
                let (nc, fds) = read_parts(conn, true)?;
                let r = park(v, nc, &fds);
                fds.iter().for_each(|f| sys::close(*f));
                r?;
            }
            Ok(None)
        })();
        sys::close(conn);
        if let Some(found) = r.map_err(map_install_err)? {
            return Ok(found);
        }
    }
}

fn map_install_err(e: Errno) -> Errno {
    match e {
        Errno::EMFILE | Errno(libc::ENFILE) => Errno::EMFILE,
        e => map_resource_err(e),
    }
}

