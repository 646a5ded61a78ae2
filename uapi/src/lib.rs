//! The bus1 binary interface and nothing else.
//!
//! Every constant, structure and ioctl number a bus1 client sees, laid out
//! exactly as in `include/linux/bus1.h`. The crate root is the RFC v1 ABI
//! (the header's default); [`final_abi`] holds what bus1's final (2019)
//! ABI changed, which the header gives when `BUS1_ABI_FINAL` is defined.
//! Sizes and field offsets are checked at compile time here, and
//! `tests/abi.rs` checks both layouts against the C header by compiling a
//! program against it in each mode. Section numbers in comments are those
//! of `docs/reference.md`.
#![no_std]
// The C names are the interface; keep them.
#![allow(non_camel_case_types)]

use core::mem::size_of;

/// Checks a struct's size, alignment and field offsets at compile time.
macro_rules! assert_layout {
    ($t:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == 8);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
    };
}

/// ioctl "type" byte of every bus1 command.
pub const BUS1_IOCTL_MAGIC: u32 = 0x96;
/// Maximum number of file descriptors attached to one message.
pub const BUS1_FD_MAX: u64 = 256;
/// "No handle".
pub const BUS1_HANDLE_INVALID: u64 = u64::MAX;
/// "No slice" (offset reported for notifications).
pub const BUS1_OFFSET_INVALID: u64 = u64::MAX;

pub const BUS1_HANDLE_FLAG_MANAGED: u64 = 1 << 0;
pub const BUS1_HANDLE_FLAG_REMOTE: u64 = 1 << 1;

pub const BUS1_PEER_FLAG_WANT_SECCTX: u64 = 1 << 0;

pub const BUS1_PEER_RESET_FLAG_FLUSH: u64 = 1 << 0;
pub const BUS1_PEER_RESET_FLAG_FLUSH_SEED: u64 = 1 << 1;

pub const BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES: u64 = 1 << 0;

pub const BUS1_SEND_FLAG_CONTINUE: u64 = 1 << 0;
pub const BUS1_SEND_FLAG_SEED: u64 = 1 << 1;

pub const BUS1_RECV_FLAG_PEEK: u64 = 1 << 0;
pub const BUS1_RECV_FLAG_SEED: u64 = 1 << 1;
pub const BUS1_RECV_FLAG_INSTALL_FDS: u64 = 1 << 2;

pub const BUS1_MSG_NONE: u64 = 0;
pub const BUS1_MSG_DATA: u64 = 1;
pub const BUS1_MSG_NODE_DESTROY: u64 = 2;
pub const BUS1_MSG_NODE_RELEASE: u64 = 3;

pub const BUS1_MSG_FLAG_HAS_SECCTX: u64 = 1 << 0;
pub const BUS1_MSG_FLAG_CONTINUE: u64 = 1 << 1;

/// Argument of `PEER_QUERY` and `PEER_RESET` (the module's 32-byte layout).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_peer_reset {
    pub flags: u64,
    pub peer_flags: u64,
    pub max_slices: u32,
    pub max_handles: u32,
    pub max_inflight_bytes: u32,
    pub max_inflight_fds: u32,
}

/// The man page's 48-byte variant of [`bus1_cmd_peer_reset`] (an extension
/// of this implementation, accepted under both ABIs).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_peer_reset_u64 {
    pub flags: u64,
    pub peer_flags: u64,
    pub max_slices: u64,
    pub max_handles: u64,
    pub max_inflight_bytes: u64,
    pub max_inflight_fds: u64,
}

/// Argument of `HANDLE_TRANSFER`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_handle_transfer {
    pub flags: u64,
    pub src_handle: u64,
    pub dst_fd: u64,
    pub dst_handle: u64,
}

/// Argument of `NODES_DESTROY` (the man page's `bus1_cmd_node_destroy`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_nodes_destroy {
    pub flags: u64,
    pub ptr_nodes: u64,
    pub n_nodes: u64,
}

/// The man page's name for [`bus1_cmd_nodes_destroy`].
pub type bus1_cmd_node_destroy = bus1_cmd_nodes_destroy;

/// Argument of `SEND`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_send {
    pub flags: u64,
    pub ptr_destinations: u64,
    pub ptr_errors: u64,
    pub n_destinations: u64,
    pub ptr_vecs: u64,
    pub n_vecs: u64,
    pub ptr_handles: u64,
    pub n_handles: u64,
    pub ptr_fds: u64,
    pub n_fds: u64,
}

/// The message description filled in by `RECV`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_msg {
    pub r#type: u64,
    pub flags: u64,
    pub destination: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub tid: u32,
    pub offset: u64,
    pub n_bytes: u64,
    pub n_handles: u64,
    pub n_fds: u64,
    pub n_secctx: u64,
}

/// Argument of `RECV`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_cmd_recv {
    pub flags: u64,
    pub max_offset: u64,
    pub msg: bus1_msg,
}

/// One element of the `ptr_vecs` array (`struct iovec` on 64-bit Linux).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bus1_iovec {
    pub base: u64,
    pub len: u64,
}

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_READ_WRITE: u32 = 3;

/// `_IOWR(BUS1_IOCTL_MAGIC, nr, T)` with `size_of::<T>() == size`.
pub const fn iowr(nr: u32, size: usize) -> u32 {
    (IOC_READ_WRITE << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | (BUS1_IOCTL_MAGIC << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}

pub const BUS1_CMD_PEER_DISCONNECT: u32 = iowr(0x00, size_of::<u64>());
pub const BUS1_CMD_PEER_QUERY: u32 = iowr(0x01, size_of::<bus1_cmd_peer_reset>());
pub const BUS1_CMD_PEER_RESET: u32 = iowr(0x02, size_of::<bus1_cmd_peer_reset>());
pub const BUS1_CMD_HANDLE_RELEASE: u32 = iowr(0x10, size_of::<u64>());
pub const BUS1_CMD_HANDLE_TRANSFER: u32 = iowr(0x11, size_of::<bus1_cmd_handle_transfer>());
pub const BUS1_CMD_NODES_DESTROY: u32 = iowr(0x20, size_of::<bus1_cmd_nodes_destroy>());
/// The man page's name for [`BUS1_CMD_NODES_DESTROY`].
pub const BUS1_CMD_NODE_DESTROY: u32 = BUS1_CMD_NODES_DESTROY;
pub const BUS1_CMD_SLICE_RELEASE: u32 = iowr(0x30, size_of::<u64>());
pub const BUS1_CMD_SEND: u32 = iowr(0x40, size_of::<bus1_cmd_send>());
pub const BUS1_CMD_RECV: u32 = iowr(0x50, size_of::<bus1_cmd_recv>());
/// Man-page layout of `PEER_QUERY` (extension).
pub const BUS1_CMD_PEER_QUERY_U64: u32 = iowr(0x01, size_of::<bus1_cmd_peer_reset_u64>());
/// Man-page layout of `PEER_RESET` (extension).
pub const BUS1_CMD_PEER_RESET_U64: u32 = iowr(0x02, size_of::<bus1_cmd_peer_reset_u64>());

/// Man-page spellings of the reset flags.
pub const BUS1_CMD_PEER_RESET_FLAG_FLUSH: u64 = BUS1_PEER_RESET_FLAG_FLUSH;
pub const BUS1_CMD_PEER_RESET_FLAG_FLUSH_SEED: u64 = BUS1_PEER_RESET_FLAG_FLUSH_SEED;

/// Every command number with its name, for tracing and for the ABI test.
pub const COMMANDS: &[(&str, u32)] = &[
    ("BUS1_CMD_PEER_DISCONNECT", BUS1_CMD_PEER_DISCONNECT),
    ("BUS1_CMD_PEER_QUERY", BUS1_CMD_PEER_QUERY),
    ("BUS1_CMD_PEER_RESET", BUS1_CMD_PEER_RESET),
    ("BUS1_CMD_HANDLE_RELEASE", BUS1_CMD_HANDLE_RELEASE),
    ("BUS1_CMD_HANDLE_TRANSFER", BUS1_CMD_HANDLE_TRANSFER),
    ("BUS1_CMD_NODES_DESTROY", BUS1_CMD_NODES_DESTROY),
    ("BUS1_CMD_SLICE_RELEASE", BUS1_CMD_SLICE_RELEASE),
    ("BUS1_CMD_SEND", BUS1_CMD_SEND),
    ("BUS1_CMD_RECV", BUS1_CMD_RECV),
    ("BUS1_CMD_PEER_QUERY_U64", BUS1_CMD_PEER_QUERY_U64),
    ("BUS1_CMD_PEER_RESET_U64", BUS1_CMD_PEER_RESET_U64),
];

/// Name of a command number, if it is one of ours (the final ABI's RECV
/// included).
pub fn command_name(cmd: u32) -> Option<&'static str> {
    if cmd == final_abi::BUS1_CMD_RECV {
        return Some("BUS1_CMD_RECV (final)");
    }
    COMMANDS.iter().find(|(_, c)| *c == cmd).map(|(n, _)| *n)
}

/// bus1's final ABI (the bus1 tree's last state, 2019): what differs from
/// the RFC v1 ABI of the crate root. Everything not here is shared:
/// every other structure, constant and ioctl number is byte-for-byte the
/// same in both.
///
/// Gone in the final ABI: `BUS1_PEER_FLAG_WANT_SECCTX` (there are no peer
/// flags; `peer_flags` must be all-ones in PEER_RESET), `BUS1_RECV_FLAG_PEEK`,
/// `BUS1_MSG_FLAG_HAS_SECCTX`, and the message's `uid`, `gid`, `pid`, `tid`
/// and `n_secctx`.
pub mod final_abi {
    use super::iowr;
    use core::mem::size_of;

    pub const BUS1_RECV_FLAG_SEED: u64 = 1 << 0;
    pub const BUS1_RECV_FLAG_INSTALL_FDS: u64 = 1 << 1;

    pub const BUS1_MSG_FLAG_CONTINUE: u64 = 1 << 0;

    /// The message description filled in by the final `RECV`.
    #[repr(C, align(8))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct bus1_msg {
        pub r#type: u64,
        pub flags: u64,
        pub destination: u64,
        pub offset: u64,
        pub n_bytes: u64,
        pub n_handles: u64,
        pub n_fds: u64,
    }

    /// Argument of the final `RECV` (72 bytes).
    #[repr(C, align(8))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct bus1_cmd_recv {
        pub flags: u64,
        pub max_offset: u64,
        pub msg: bus1_msg,
    }

    /// The final ABI's RECV: the one ioctl number that differs.
    pub const BUS1_CMD_RECV: u32 = iowr(0x50, size_of::<bus1_cmd_recv>());

    assert_layout!(bus1_msg, 56, {
        r#type: 0, flags: 8, destination: 16, offset: 24, n_bytes: 32, n_handles: 40, n_fds: 48,
    });
    assert_layout!(bus1_cmd_recv, 72, { flags: 0, max_offset: 8, msg: 16 });
    const _: () = assert!(BUS1_CMD_RECV == 0xC048_9650);
}

// Compile-time layout checks (the module's header, and the man page's
// 48-byte reset/query struct).

assert_layout!(bus1_cmd_peer_reset, 32, {
    flags: 0, peer_flags: 8, max_slices: 16, max_handles: 20,
    max_inflight_bytes: 24, max_inflight_fds: 28,
});
assert_layout!(bus1_cmd_peer_reset_u64, 48, {
    flags: 0, peer_flags: 8, max_slices: 16, max_handles: 24,
    max_inflight_bytes: 32, max_inflight_fds: 40,
});
assert_layout!(bus1_cmd_handle_transfer, 32, {
    flags: 0, src_handle: 8, dst_fd: 16, dst_handle: 24,
});
assert_layout!(bus1_cmd_nodes_destroy, 24, { flags: 0, ptr_nodes: 8, n_nodes: 16 });
assert_layout!(bus1_cmd_send, 80, {
    flags: 0, ptr_destinations: 8, ptr_errors: 16, n_destinations: 24,
    ptr_vecs: 32, n_vecs: 40, ptr_handles: 48, n_handles: 56, ptr_fds: 64, n_fds: 72,
});
assert_layout!(bus1_msg, 80, {
    r#type: 0, flags: 8, destination: 16, uid: 24, gid: 28, pid: 32, tid: 36,
    offset: 40, n_bytes: 48, n_handles: 56, n_fds: 64, n_secctx: 72,
});
assert_layout!(bus1_cmd_recv, 96, { flags: 0, max_offset: 8, msg: 16 });
const _: () = assert!(size_of::<bus1_iovec>() == 16);

const _: () = assert!(BUS1_CMD_PEER_DISCONNECT == 0xC008_9600);
const _: () = assert!(BUS1_CMD_PEER_QUERY == 0xC020_9601);
const _: () = assert!(BUS1_CMD_PEER_RESET == 0xC020_9602);
const _: () = assert!(BUS1_CMD_HANDLE_RELEASE == 0xC008_9610);
const _: () = assert!(BUS1_CMD_HANDLE_TRANSFER == 0xC020_9611);
const _: () = assert!(BUS1_CMD_NODES_DESTROY == 0xC018_9620);
const _: () = assert!(BUS1_CMD_SLICE_RELEASE == 0xC008_9630);
const _: () = assert!(BUS1_CMD_SEND == 0xC050_9640);
const _: () = assert!(BUS1_CMD_RECV == 0xC060_9650);
const _: () = assert!(BUS1_CMD_PEER_QUERY_U64 == 0xC030_9601);
const _: () = assert!(BUS1_CMD_PEER_RESET_U64 == 0xC030_9602);
