//! The error type of every bus operation: a Linux errno value.

use core::fmt;

/// A Linux errno value, as the bus1 module would return it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Internal, never returned to callers: a SEND found a receiver whose
    /// last fd is gone but which nobody has torn down yet. The caller
    /// reaps it and runs the SEND again, which then sees a disconnected
    /// peer, as it would have had the teardown been synchronous.
    pub const PEER_GONE: Errno = Errno(-1);
    /// Internal, never returned to callers: the data path met something
    /// only a transaction under the domain lock may do (a node to create,
    /// handles or fds to deliver) before it changed anything; the call
    /// runs again as a transaction.
    pub const NEEDS_TXN: Errno = Errno(-2);
}

macro_rules! errnos {
    ($($name:ident = $val:path),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno($val);)*
            /// The symbolic name, for traces and test messages.
            pub fn name(self) -> &'static str {
                $(if self.0 == $val { return stringify!($name); })*
                "E?"
            }
        }
    };
}

errnos! {
    EPERM = libc::EPERM,
    ENOENT = libc::ENOENT,
    EINTR = libc::EINTR,
    EIO = libc::EIO,
    ENXIO = libc::ENXIO,
    EBADF = libc::EBADF,
    EAGAIN = libc::EAGAIN,
    ENOMEM = libc::ENOMEM,
    EACCES = libc::EACCES,
    EFAULT = libc::EFAULT,
    EBUSY = libc::EBUSY,
    EEXIST = libc::EEXIST,
    ENODEV = libc::ENODEV,
    EINVAL = libc::EINVAL,
    EMFILE = libc::EMFILE,
    ENOTTY = libc::ENOTTY,
    ENOSPC = libc::ENOSPC,
    ERANGE = libc::ERANGE,
    EDEADLK = libc::EDEADLK,
    ENAMETOOLONG = libc::ENAMETOOLONG,
    EXFULL = libc::EXFULL,
    EREMOTE = libc::EREMOTE,
    ENOTUNIQ = libc::ENOTUNIQ,
    EMSGSIZE = libc::EMSGSIZE,
    EOPNOTSUPP = libc::EOPNOTSUPP,
    ECONNREFUSED = libc::ECONNREFUSED,
    ESHUTDOWN = libc::ESHUTDOWN,
    ETOOMANYREFS = libc::ETOOMANYREFS,
    ESTALE = libc::ESTALE,
    EDQUOT = libc::EDQUOT,
    EOWNERDEAD = libc::EOWNERDEAD,
    ENOTRECOVERABLE = libc::ENOTRECOVERABLE,
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// Result of a bus operation.
pub type Result<T> = core::result::Result<T, Errno>;
