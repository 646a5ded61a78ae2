//! Errors: one variant per errno the bus gives, each keeping its number.

use std::fmt;

/// What a bus1 operation failed with. Each variant stands for one errno
/// of the module's ABI (its meaning for bus1 is on the variant);
/// [`Error::errno`] gives the number back and [`Error::from_errno`] maps
/// any errno, so nothing is lost on the way.
///
/// ```
/// use bus1::Error;
/// assert_eq!(Error::from_errno(libc::EAGAIN), Error::Again);
/// assert_eq!(Error::Shutdown.errno(), libc::ESHUTDOWN);
/// assert_eq!(Error::from_errno(9999), Error::Os(9999));
/// let io: std::io::Error = Error::Quota.into();
/// assert_eq!(io.raw_os_error(), Some(libc::EDQUOT));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// EAGAIN: nothing to receive (or no seed).
    Again,
    /// ESHUTDOWN: this peer is disconnected, or a destination's owner
    /// released its node or is gone.
    Shutdown,
    /// ENXIO: an unknown bus-assigned handle ID, or an unknown slice.
    NoSuchHandle,
    /// EBUSY: releasing a live node's last owner reference, or an ID the
    /// peer has never held.
    Busy,
    /// EDQUOT: a quota of the receiver (slices, handles, in-flight bytes
    /// or fds) is exhausted.
    Quota,
    /// EXFULL: the receiver's pool has no room for the message.
    PoolFull,
    /// EMSGSIZE: too many vectors, fds or destinations, or too large.
    TooLarge,
    /// ENOTUNIQ: an ID appears twice where it must be unique.
    NotUnique,
    /// EREMOTE: destroying a node this peer does not own.
    NotOwner,
    /// ESTALE: destroying a node that is already destroyed.
    Stale,
    /// EBADF: a descriptor that is not open.
    BadFd,
    /// EOPNOTSUPP: a bus1 peer or a Unix socket as a message fd, or a
    /// transfer to something that is not a peer of the same bus.
    NotSupported,
    /// EINVAL: bad flags or arguments.
    Invalid,
    /// EFAULT: memory the bus could not read or write.
    Fault,
    /// ENOMEM: the bus ran out of memory.
    NoMemory,
    /// ERANGE: the message lies beyond the mapped part of the pool.
    Range,
    /// EMFILE: no descriptor left for a message's fds (it stays queued).
    TooManyFiles,
    /// EPERM: refused (a domain another user could control).
    Permission,
    /// EACCES: access denied.
    Access,
    /// ENOENT: no such device or directory (no kernel module and no shim
    /// for the device backend).
    NotFound,
    /// ENODEV: the device (or domain) cannot be used.
    NoDevice,
    /// ENOSPC: a table of the bus is full (waiter slots).
    NoSpace,
    /// ENOTTY: the command is not one this peer's ABI knows.
    NotTty,
    /// EINTR: interrupted by a signal.
    Interrupted,
    /// Any other errno.
    Os(i32),
}

/// The variants that stand for one errno, with it.
const TABLE: &[(Error, i32)] = &[
    (Error::Again, libc::EAGAIN),
    (Error::Shutdown, libc::ESHUTDOWN),
    (Error::NoSuchHandle, libc::ENXIO),
    (Error::Busy, libc::EBUSY),
    (Error::Quota, libc::EDQUOT),
    (Error::PoolFull, libc::EXFULL),
    (Error::TooLarge, libc::EMSGSIZE),
    (Error::NotUnique, libc::ENOTUNIQ),
    (Error::NotOwner, libc::EREMOTE),
    (Error::Stale, libc::ESTALE),
    (Error::BadFd, libc::EBADF),
    (Error::NotSupported, libc::EOPNOTSUPP),
    (Error::Invalid, libc::EINVAL),
    (Error::Fault, libc::EFAULT),
    (Error::NoMemory, libc::ENOMEM),
    (Error::Range, libc::ERANGE),
    (Error::TooManyFiles, libc::EMFILE),
    (Error::Permission, libc::EPERM),
    (Error::Access, libc::EACCES),
    (Error::NotFound, libc::ENOENT),
    (Error::NoDevice, libc::ENODEV),
    (Error::NoSpace, libc::ENOSPC),
    (Error::NotTty, libc::ENOTTY),
    (Error::Interrupted, libc::EINTR),
];

impl Error {
    /// The error for errno `e`.
    pub fn from_errno(e: i32) -> Error {
        TABLE.iter().find(|(_, n)| *n == e).map_or(Error::Os(e), |(v, _)| *v)
    }

    /// The errno this error stands for.
    ///
    /// ```
    /// for e in [libc::ENXIO, libc::EXFULL, libc::ENOTUNIQ, 4242] {
    ///     assert_eq!(bus1::Error::from_errno(e).errno(), e);
    /// }
    /// ```
    pub fn errno(self) -> i32 {
        match self {
            Error::Os(e) => e,
            v => TABLE.iter().find(|(t, _)| *t == v).map_or(libc::EIO, |(_, n)| *n),
        }
    }
}

impl From<shm_core::Errno> for Error {
    fn from(e: shm_core::Errno) -> Error {
        Error::from_errno(e.0)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno())
    }
}

impl From<std::io::Error> for Error {
    /// The errno of an I/O error (EIO if it has none).
    fn from(e: std::io::Error) -> Error {
        Error::from_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", std::io::Error::from_raw_os_error(self.errno()), self)
    }
}

impl std::error::Error for Error {}

/// The result of a bus1 operation.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_keeps_its_errno() {
        for (v, n) in TABLE {
            assert_eq!(Error::from_errno(*n), *v);
            assert_eq!(v.errno(), *n);
        }
        assert_eq!(Error::from_errno(0x7fff).errno(), 0x7fff);
        let e: Error = std::io::Error::from_raw_os_error(libc::EBADF).into();
        assert_eq!(e, Error::BadFd);
        assert!(Error::Shutdown.to_string().contains("Shutdown"));
    }
}
