//! `libbus1_preload.so`: makes `/dev/bus1` behave as the bus1 kernel
//! module did, for unmodified programs run with `LD_PRELOAD`.
//!
//! This crate only translates: it interposes the libc calls that touch the
//! device or a peer descriptor (`interpose`), copies ioctl arguments in and
//! out with fault-safe copies (`uaccess`), keeps track of which
//! descriptors are peers (`fdtable`) and which epoll sets hold them
//! (`epolls`), shows peer fds in `/proc` as the module's files (`procfs`),
//! maps results to errno (`dispatch`), drives the waits of `poll`,
//! `select` and `epoll` over peers (`wait`), holds the application's
//! signal handlers until the call they land in is over (`sigdefer`), keeps
//! a `vfork` child's calls out of its parent's tables (`owner`) and,
//! with `BUS1_TRACE`, logs every call it answers (`trace`). All bus
//! semantics live in `shm-core`.
//! Section numbers in comments (2.0, §1.1) are those of
//! `docs/reference.md`.

#[macro_use]
mod real;
mod config;
mod device;
mod dispatch;
mod epolls;
mod fdtable;
mod interpose;
mod owner;
mod procfs;
mod sigdefer;
mod trace;
mod uaccess;
mod wait;
