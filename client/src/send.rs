//! SEND: the builder, and what a SEND with CONTINUE reports per
//! destination.

use crate::error::{Error, Result};
use crate::id::HandleId;
use crate::peer::Peer;
use crate::sys::{self, SendArrays};
use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use uapi::{BUS1_SEND_FLAG_CONTINUE, BUS1_SEND_FLAG_SEED};

/// A message being put together: destinations, payload, handles and fds,
/// all borrowed (nothing is copied before the SEND itself). Made by
/// [`Peer::message`].
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// use std::io::IoSlice;
/// use std::os::fd::AsFd;
/// # let scratch = bus1::ScratchDomain::new()?;
/// let (a, b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
/// let to_a = b.handle_from(&a, bus1::NodeId::new(0x100).unwrap())?;
/// let file = std::fs::File::open("/dev/null")?;
/// let mine = bus1::NodeId::new(0x200).unwrap();
/// b.message()
///     .to(&[to_a])
///     .payload(&[IoSlice::new(b"a file and a handle")])
///     .handles(&[mine.into()])
///     .fds(&[file.as_fd()])
///     .send()?;
/// if let bus1::Event::Message(mut m) = a.recv()? {
///     assert_eq!(m.fds().len(), 1);
///     let reply_to = m.handles().next().unwrap().unwrap();
///     assert!(reply_to.is_remote());
///     let _file: std::fs::File = m.take_fds().remove(0).into();
/// }
/// # Ok(())
/// # }
/// ```
#[must_use = "nothing is sent until `send`, `send_continue` or `set_seed`"]
pub struct Send<'p, 'a> {
    peer: &'p Peer,
    to: &'a [HandleId],
    payload: &'a [IoSlice<'a>],
    handles: &'a [HandleId],
    fds: &'a [BorrowedFd<'a>],
}

impl Peer {
    /// Starts a message (see [`Send`]).
    pub fn message<'a>(&self) -> Send<'_, 'a> {
        Send { peer: self, to: &[], payload: &[], handles: &[], fds: &[] }
    }

    /// SEND of `payload` to every destination in `to`, all or nothing:
    /// the common case of [`Peer::message`].
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// use std::io::IoSlice;
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// let node = bus1::NodeId::new(0x100).unwrap();
    /// peer.send(&[node.into()], &[IoSlice::new(&[1u8; 1024])])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, to: &[HandleId], payload: &[IoSlice<'_>]) -> Result<()> {
        self.message().to(to).payload(payload).send()
    }
}

impl<'p, 'a> Send<'p, 'a> {
    /// The destinations (handles this peer holds, its own nodes included;
    /// each at most once).
    pub fn to(mut self, to: &'a [HandleId]) -> Self {
        self.to = to;
        self
    }

    /// The payload, gathered from these buffers.
    pub fn payload(mut self, payload: &'a [IoSlice<'a>]) -> Self {
        self.payload = payload;
        self
    }

    /// Handles to pass along: each receiver gets a reference of each.
    pub fn handles(mut self, handles: &'a [HandleId]) -> Self {
        self.handles = handles;
        self
    }

    /// Files to pass along: each receiver gets its own descriptors of
    /// them. The caller's stay open and its own.
    pub fn fds(mut self, fds: &'a [BorrowedFd<'a>]) -> Self {
        self.fds = fds;
        self
    }

    /// The command's arrays; `errors` may be borrowed for less than 'a.
    fn arrays<'e>(&self, flags: u64, errors: Option<&'e mut [u64]>) -> SendArrays<'e>
    where
        'a: 'e,
    {
        SendArrays {
            flags,
            destinations: sys::handle_words(self.to),
            errors,
            payload: self.payload,
            handles: sys::handle_words(self.handles),
            fds: sys::fd_numbers(self.fds),
        }
    }

    /// SEND: to every destination, or (on any error) to none.
    pub fn send(self) -> Result<()> {
        self.peer.engine.send(self.arrays(0, None))
    }

    /// SEND with CONTINUE: a destination that cannot take the message
    /// (its owner is gone, its quota or pool is full) is skipped and the
    /// rest still get it, in one transaction. Errors that concern the
    /// whole message still fail the call.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// use std::io::IoSlice;
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let (a, mut b) = (bus1::Peer::open(scratch.backend())?, bus1::Peer::open(scratch.backend())?);
    /// let to_b = a.handle_from(&b, bus1::NodeId::new(0x4).unwrap())?;
    /// let mine = bus1::NodeId::new(0x8).unwrap().into();
    /// b.disconnect()?;
    /// let d = a.message().to(&[to_b, mine]).payload(&[IoSlice::new(b"hi")]).send_continue()?;
    /// assert_eq!(d.result(0), Some(Err(bus1::Error::Shutdown)));
    /// assert_eq!(d.result(1), Some(Ok(())));
    /// assert!(!d.all_delivered());
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_continue(self) -> Result<Delivery> {
        let mut errors = vec![0u64; self.to.len()];
        let a = self.arrays(BUS1_SEND_FLAG_CONTINUE, Some(&mut errors));
        self.peer.engine.send(a)?;
        Ok(Delivery { errors })
    }

    /// SEND with SEED: makes the message this peer's seed (replacing the
    /// one it had), for [`Peer::recv_seed`]. It takes no destinations.
    ///
    /// ```
    /// # fn main() -> bus1::Result<()> {
    /// use std::io::IoSlice;
    /// # let scratch = bus1::ScratchDomain::new()?;
    /// let peer = bus1::Peer::open(scratch.backend())?;
    /// peer.message().payload(&[IoSlice::new(b"first")]).set_seed()?;
    /// assert_eq!(peer.recv_seed()?.payload(), b"first");
    /// assert_eq!(peer.recv_seed().err(), Some(bus1::Error::Again));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_seed(self) -> Result<()> {
        self.peer.engine.send(self.arrays(BUS1_SEND_FLAG_SEED, None))
    }
}

/// What a [`Send::send_continue`] did for each destination, in the order
/// they were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    errors: Vec<u64>,
}

impl Delivery {
    /// The outcome for destination `i` (None past the last).
    pub fn result(&self, i: usize) -> Option<Result<()>> {
        self.errors.get(i).map(|&e| if e == 0 { Ok(()) } else { Err(Error::from_errno(e as i32)) })
    }

    /// The outcomes, one per destination.
    pub fn results(&self) -> impl ExactSizeIterator<Item = Result<()>> + '_ {
        (0..self.errors.len()).map(|i| self.result(i).expect("in range"))
    }

    /// The destinations that did not get the message: (index, error).
    pub fn failures(&self) -> impl Iterator<Item = (usize, Error)> + '_ {
        self.results().enumerate().filter_map(|(i, r)| r.err().map(|e| (i, e)))
    }

    /// Whether every destination got the message.
    pub fn all_delivered(&self) -> bool {
        self.errors.iter().all(|e| *e == 0)
    }
}
