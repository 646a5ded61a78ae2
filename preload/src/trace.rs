//! `BUS1_TRACE`: one line for every call the shim answers for the device
//! or a peer fd, with its arguments and results decoded.
//!
//! `BUS1_TRACE=1` writes to stderr; any other value other than `0` names
//! a file, appended to (created mode 0600), in which `%p` stands for the
//! process ID, so that every process of a program writes its own. Each
//! line is
//!
//! ```text
//! bus1 <pid>/<tid> <monotonic seconds>: <what> -> <result>
//! ```
//!
//! written with one `write`, so lines of several threads or processes
//! sharing a file never mix. IDs, offsets and pointers are in hex; message
//! types, flags and errno values by name. Opens, ioctls, mmaps and closes
//! are traced here; the interposed waits call [`wait`] and [`epoll_wait`].
//!
//! With tracing off, a call pays one load of a cached flag ([`on`]).

use crate::uaccess::ProcMem;
use shm_core::{read_struct, sys, AbiPlain, Errno, Result, UserMem};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;
use uapi::*;

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Where the lines go.
enum Sink {
    Stderr,
    /// An absolute path, `%p` not yet replaced.
    File(Vec<u8>),
}
static SINK: OnceLock<Sink> = OnceLock::new();

/// The descriptor of the trace file and the process it was opened by (a
/// forked child opens its own, since `%p` names another file for it).
static FILE_FD: AtomicI32 = AtomicI32::new(-1);
static FILE_PID: AtomicU32 = AtomicU32::new(0);

/// How many array elements a line shows before it abbreviates.
const SHOW_MAX: u64 = 8;

/// Whether tracing is on (`BUS1_TRACE` is read once per process).
#[inline]
pub fn on() -> bool {
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => init(),
    }
}

#[cold]
fn init() -> bool {
    let sink = sys::with_env(c"BUS1_TRACE", |v| {
        let v = v?.to_bytes();
        match v {
            b"" | b"0" => None,
            b"1" => Some(Sink::Stderr),
            path => Some(Sink::File(absolute(path))),
        }
    });
    let on = sink.is_some();
    if let Some(s) = sink {
        let _ = SINK.set(s);
    }
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
    on
}

/// `path` against the working directory at the first traced call, so that
/// a later `chdir` does not move the file.
fn absolute(path: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    use std::os::unix::ffi::OsStrExt;
    let mut p = std::env::current_dir().map(|d| d.as_os_str().as_bytes().to_vec()).unwrap_or_default();
    p.push(b'/');
    p.extend_from_slice(path);
    p
}

/// The trace file's name for process `pid`.
fn file_name(pattern: &[u8], pid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'%' && pattern.get(i + 1) == Some(&b'p') {
            out.extend_from_slice(pid.to_string().as_bytes());
            i += 2;
        } else {
            out.push(pattern[i]);
            i += 1;
        }
    }
    out
}

/// The descriptor to write this process's lines to, if any.
fn sink_fd(pid: u32) -> Option<i32> {
    match SINK.get()? {
        Sink::Stderr => Some(2),
        Sink::File(pattern) => {
            if FILE_PID.load(Ordering::Acquire) == pid {
                let fd = FILE_FD.load(Ordering::Acquire);
                return (fd >= 0).then_some(fd);
            }
            let path = sys::cstr(&file_name(pattern, pid)).ok()?;
            let fd = sys::open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o600).ok()?;
            // Kept out of the application's way, and safe from its
            // closefrom(), like the shim's other descriptors.
            let fd = shm_core::adopt_internal_fd(fd);
            let old = FILE_FD.swap(fd, Ordering::AcqRel);
            // A descriptor of this process opened by another thread just
            // now (the loser's is closed); one inherited from the parent
            // stays the parent's.
            if old >= 0 && FILE_PID.load(Ordering::Acquire) == pid {
                shm_core::release_internal_fd(old);
            }
            FILE_PID.store(pid, Ordering::Release);
            Some(fd)
        }
    }
}

/// Writes one line: the prefix, `what`, a newline.
pub fn emit(what: &str) {
    let pid = sys::getpid();
    let t = sys::now_ns();
    let mut line = String::with_capacity(what.len() + 48);
    let _ = writeln!(line, "bus1 {pid}/{} {}.{:06}: {what}", sys::gettid(), t / 1_000_000_000, t % 1_000_000_000 / 1000);
    if let Some(fd) = sink_fd(pid) {
        let _ = sys::write_all(fd, line.as_bytes());
    }
}

// ------------------------------------------------------------------ names

/// The symbolic name of an errno value ("E?<n>" for one Linux does not have).
pub fn errno_name(e: i32) -> std::borrow::Cow<'static, str> {
    macro_rules! names {
        ($($n:ident),* $(,)?) => {
            $(if e == libc::$n { return stringify!($n).into(); })*
        };
    }
    names!(
        EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG, ENOEXEC, EBADF, ECHILD, EAGAIN, ENOMEM, EACCES, EFAULT,
        ENOTBLK, EBUSY, EEXIST, EXDEV, ENODEV, ENOTDIR, EISDIR, EINVAL, ENFILE, EMFILE, ENOTTY, ETXTBSY, EFBIG,
        ENOSPC, ESPIPE, EROFS, EMLINK, EPIPE, EDOM, ERANGE, EDEADLK, ENAMETOOLONG, ENOLCK, ENOSYS, ENOTEMPTY,
        ELOOP, ENOMSG, EIDRM, ECHRNG, EL2NSYNC, EL3HLT, EL3RST, ELNRNG, EUNATCH, ENOCSI, EL2HLT, EBADE, EBADR,
        EXFULL, ENOANO, EBADRQC, EBADSLT, EBFONT, ENOSTR, ENODATA, ETIME, ENOSR, ENONET, ENOPKG, EREMOTE, ENOLINK,
        EADV, ESRMNT, ECOMM, EPROTO, EMULTIHOP, EDOTDOT, EBADMSG, EOVERFLOW, ENOTUNIQ, EBADFD, EREMCHG, ELIBACC,
        ELIBBAD, ELIBSCN, ELIBMAX, ELIBEXEC, EILSEQ, ERESTART, ESTRPIPE, EUSERS, ENOTSOCK, EDESTADDRREQ, EMSGSIZE,
        EPROTOTYPE, ENOPROTOOPT, EPROTONOSUPPORT, ESOCKTNOSUPPORT, EOPNOTSUPP, EPFNOSUPPORT, EAFNOSUPPORT,
        EADDRINUSE, EADDRNOTAVAIL, ENETDOWN, ENETUNREACH, ENETRESET, ECONNABORTED, ECONNRESET, ENOBUFS, EISCONN,
        ENOTCONN, ESHUTDOWN, ETOOMANYREFS, ETIMEDOUT, ECONNREFUSED, EHOSTDOWN, EHOSTUNREACH, EALREADY,
        EINPROGRESS, ESTALE, EUCLEAN, ENOTNAM, ENAVAIL, EISNAM, EREMOTEIO, EDQUOT, ENOMEDIUM, EMEDIUMTYPE,
        ECANCELED, ENOKEY, EKEYEXPIRED, EKEYREVOKED, EKEYREJECTED, EOWNERDEAD, ENOTRECOVERABLE, ERFKILL,
        EHWPOISON,
    );
    // The kernel-internal value bus1's specification mentions.
    if e == 524 {
        return "ENOTSUPP".into();
    }
    format!("E?{e}").into()
}

/// `v` as names joined by `|`, with unnamed bits in hex ("0" for none).
pub fn flag_names(v: u64, names: &[(u64, &str)]) -> String {
    if v == 0 {
        return "0".into();
    }
    let mut out = String::new();
    let mut rest = v;
    for &(bit, name) in names {
        if bit != 0 && v & bit == bit {
            if !out.is_empty() {
                out.push('|');
            }
            out.push_str(name);
            rest &= !bit;
        }
    }
    if rest != 0 {
        if !out.is_empty() {
            out.push('|');
        }
        let _ = write!(out, "{rest:#x}");
    }
    out
}

const SEND_FLAGS: &[(u64, &str)] = &[(BUS1_SEND_FLAG_CONTINUE, "CONTINUE"), (BUS1_SEND_FLAG_SEED, "SEED")];
const RECV_FLAGS: &[(u64, &str)] =
    &[(BUS1_RECV_FLAG_PEEK, "PEEK"), (BUS1_RECV_FLAG_SEED, "SEED"), (BUS1_RECV_FLAG_INSTALL_FDS, "INSTALL_FDS")];
const RESET_FLAGS: &[(u64, &str)] =
    &[(BUS1_PEER_RESET_FLAG_FLUSH, "FLUSH"), (BUS1_PEER_RESET_FLAG_FLUSH_SEED, "FLUSH_SEED")];
const PEER_FLAGS: &[(u64, &str)] = &[(BUS1_PEER_FLAG_WANT_SECCTX, "WANT_SECCTX")];
const DESTROY_FLAGS: &[(u64, &str)] = &[(BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES, "RELEASE_HANDLES")];
const MSG_FLAGS: &[(u64, &str)] = &[(BUS1_MSG_FLAG_HAS_SECCTX, "HAS_SECCTX"), (BUS1_MSG_FLAG_CONTINUE, "CONTINUE")];
/// The final ABI's RECV and message flags (renumbered).
const FINAL_RECV_FLAGS: &[(u64, &str)] =
    &[(final_abi::BUS1_RECV_FLAG_SEED, "SEED"), (final_abi::BUS1_RECV_FLAG_INSTALL_FDS, "INSTALL_FDS")];
const FINAL_MSG_FLAGS: &[(u64, &str)] = &[(final_abi::BUS1_MSG_FLAG_CONTINUE, "CONTINUE")];

/// Flags of open(2) (the access mode first, by name).
pub fn open_flags(flags: i32) -> String {
    let acc = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE",
    };
    const NAMES: &[(i32, &str)] = &[
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
    ];
    let names: Vec<(u64, &str)> = NAMES.iter().map(|&(b, n)| (b as u32 as u64, n)).collect();
    let rest = (flags & !libc::O_ACCMODE) as u32 as u64;
    if rest == 0 {
        acc.into()
    } else {
        format!("{acc}|{}", flag_names(rest, &names))
    }
}

fn prot_names(prot: i32) -> String {
    if prot == libc::PROT_NONE {
        return "PROT_NONE".into();
    }
    let names = [(libc::PROT_READ, "PROT_READ"), (libc::PROT_WRITE, "PROT_WRITE"), (libc::PROT_EXEC, "PROT_EXEC")];
    flag_names(prot as u32 as u64, &names.map(|(b, n)| (b as u64, n)))
}

fn map_names(flags: i32) -> String {
    let names = [
        (libc::MAP_SHARED, "MAP_SHARED"),
        (libc::MAP_PRIVATE, "MAP_PRIVATE"),
        (libc::MAP_FIXED, "MAP_FIXED"),
        (libc::MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
        (libc::MAP_POPULATE, "MAP_POPULATE"),
        (libc::MAP_NORESERVE, "MAP_NORESERVE"),
    ];
    flag_names(flags as u32 as u64, &names.map(|(b, n)| (b as u64, n)))
}

fn msg_type(t: u64) -> String {
    match t {
        BUS1_MSG_NONE => "NONE".into(),
        BUS1_MSG_DATA => "DATA".into(),
        BUS1_MSG_NODE_DESTROY => "NODE_DESTROY".into(),
        BUS1_MSG_NODE_RELEASE => "NODE_RELEASE".into(),
        t => format!("{t:#x}"),
    }
}

/// A limit field of PEER_RESET: all-ones leaves it as it is.
fn limit(v: u64, all_ones: u64) -> String {
    if v == all_ones {
        "keep".into()
    } else {
        v.to_string()
    }
}

fn result(r: &Result<i32>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("-1 {}", errno_name(e.0)),
    }
}

// ----------------------------------------------------------- arguments

/// Reads `n` elements of `size` bytes at `addr` (at most [`SHOW_MAX`])
/// and formats each with `f`: "[a, b, …+3]", or "<unreadable 0x…>".
fn array(addr: u64, n: u64, size: usize, f: impl Fn(&[u8]) -> String) -> String {
    let shown = n.min(SHOW_MAX) as usize;
    let mut buf = vec![0u8; shown * size];
    if shown > 0 && ProcMem.read(addr, &mut buf).is_err() {
        return format!("<unreadable {addr:#x}>");
    }
    let mut out = String::from("[");
    for (i, chunk) in buf.chunks(size).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&f(chunk));
    }
    if n > shown as u64 {
        let _ = write!(out, "{}…+{}", if shown > 0 { ", " } else { "" }, n - shown as u64);
    }
    out.push(']');
    out
}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_ne_bytes(b[..8].try_into().unwrap_or_default())
}

fn hex_ids(addr: u64, n: u64) -> String {
    array(addr, n, 8, |b| format!("{:#x}", u64_at(b)))
}

/// The total length of a SEND's iovecs, if they can be read.
fn vec_bytes(addr: u64, n: u64) -> Option<u64> {
    let mut total = 0u64;
    for i in 0..n.min(1024) {
        // struct iovec: base, then length
        let len: u64 = read_struct(&ProcMem, addr.checked_add(16 * i + 8)?).ok()?;
        total = total.saturating_add(len);
    }
    Some(total)
}

fn read<T: AbiPlain>(arg: u64) -> Option<T> {
    read_struct(&ProcMem, arg).ok()
}

/// The decoded input of an ioctl, before it runs: `<NAME> {…}`, or the raw
/// number and argument of a command the module does not have.
pub fn ioctl_args(fd: i32, serial: u64, request: u64, arg: u64) -> String {
    let mut s = format!("fd {fd} peer {serial:#x} ");
    let Some(name) = u32::try_from(request).ok().and_then(command_name) else {
        let _ = write!(s, "ioctl {request:#x} arg {arg:#x}");
        return s;
    };
    s.push_str(name.strip_prefix("BUS1_CMD_").unwrap_or(name));
    let unreadable = format!(" <unreadable {arg:#x}>");
    let body = match request as u32 {
        BUS1_CMD_PEER_DISCONNECT => Some(format!("arg {arg:#x}")),
        BUS1_CMD_PEER_QUERY => read::<bus1_cmd_peer_reset>(arg).map(|q| format!("flags {}", flag_names(q.flags, &[]))),
        BUS1_CMD_PEER_QUERY_U64 => {
            read::<bus1_cmd_peer_reset_u64>(arg).map(|q| format!("flags {}", flag_names(q.flags, &[])))
        }
        BUS1_CMD_PEER_RESET => read::<bus1_cmd_peer_reset>(arg).map(|r| {
            let all = u32::MAX as u64;
            reset_body(r.flags, r.peer_flags, [r.max_slices, r.max_handles, r.max_inflight_bytes, r.max_inflight_fds].map(u64::from), all)
        }),
        BUS1_CMD_PEER_RESET_U64 => read::<bus1_cmd_peer_reset_u64>(arg)
            .map(|r| reset_body(r.flags, r.peer_flags, [r.max_slices, r.max_handles, r.max_inflight_bytes, r.max_inflight_fds], u64::MAX)),
        BUS1_CMD_HANDLE_RELEASE | BUS1_CMD_SLICE_RELEASE => read::<u64>(arg).map(|v| {
            let what = if request as u32 == BUS1_CMD_HANDLE_RELEASE { "id" } else { "offset" };
            format!("{what} {v:#x}")
        }),
        BUS1_CMD_HANDLE_TRANSFER => read::<bus1_cmd_handle_transfer>(arg).map(|t| {
            let dst = if t.dst_fd == u64::MAX { "self".to_string() } else { (t.dst_fd as u32 as i32).to_string() };
            format!("flags {}, src_handle {:#x}, dst_fd {dst}", flag_names(t.flags, &[]), t.src_handle)
        }),
        BUS1_CMD_NODES_DESTROY => read::<bus1_cmd_nodes_destroy>(arg)
            .map(|d| format!("flags {}, nodes {}", flag_names(d.flags, DESTROY_FLAGS), hex_ids(d.ptr_nodes, d.n_nodes))),
        BUS1_CMD_SEND => read::<bus1_cmd_send>(arg).map(|c| {
            let bytes = vec_bytes(c.ptr_vecs, c.n_vecs).map_or_else(|| "?".to_string(), |b| b.to_string());
            let fds = array(c.ptr_fds, c.n_fds, 4, |b| i32::from_ne_bytes(b[..4].try_into().unwrap_or_default()).to_string());
            format!(
                "flags {}, destinations {}, vecs {} ({bytes} bytes), handles {}, fds {fds}",
                flag_names(c.flags, SEND_FLAGS),
                hex_ids(c.ptr_destinations, c.n_destinations),
                c.n_vecs,
                hex_ids(c.ptr_handles, c.n_handles),
            )
        }),
        BUS1_CMD_RECV => read::<bus1_cmd_recv>(arg)
            .map(|r| format!("flags {}, max_offset {:#x}", flag_names(r.flags, RECV_FLAGS), r.max_offset)),
        final_abi::BUS1_CMD_RECV => read::<final_abi::bus1_cmd_recv>(arg)
            .map(|r| format!("flags {}, max_offset {:#x}", flag_names(r.flags, FINAL_RECV_FLAGS), r.max_offset)),
        _ => Some(format!("arg {arg:#x}")),
    };
    match body {
        Some(b) => {
            let _ = write!(s, " {{{b}}}");
        }
        None => s.push_str(&unreadable),
    }
    s
}

fn reset_body(flags: u64, peer_flags: u64, limits: [u64; 4], all_ones: u64) -> String {
    let pf = if peer_flags == u64::MAX { "keep".into() } else { flag_names(peer_flags, PEER_FLAGS) };
    format!(
        "flags {}, peer_flags {pf}, max_slices {}, max_handles {}, max_inflight_bytes {}, max_inflight_fds {}",
        flag_names(flags, RESET_FLAGS),
        limit(limits[0], all_ones),
        limit(limits[1], all_ones),
        limit(limits[2], all_ones),
        limit(limits[3], all_ones)
    )
}

/// Completes the line `args` (from [`ioctl_args`]) with the result and
/// what the call wrote back, and emits it.
pub fn ioctl_done(mut line: String, request: u64, arg: u64, r: &Result<i32>) {
    let _ = write!(line, " -> {}", result(r));
    if r.is_ok() {
        match request as u32 {
            BUS1_CMD_PEER_QUERY => {
                if let Some(q) = read::<bus1_cmd_peer_reset>(arg) {
                    let limits = [q.max_slices, q.max_handles, q.max_inflight_bytes, q.max_inflight_fds].map(u64::from);
                    line.push_str(&query_result(q.peer_flags, limits));
                }
            }
            BUS1_CMD_PEER_QUERY_U64 => {
                if let Some(q) = read::<bus1_cmd_peer_reset_u64>(arg) {
                    let limits = [q.max_slices, q.max_handles, q.max_inflight_bytes, q.max_inflight_fds];
                    line.push_str(&query_result(q.peer_flags, limits));
                }
            }
            BUS1_CMD_HANDLE_TRANSFER => {
                if let Some(t) = read::<bus1_cmd_handle_transfer>(arg) {
                    let _ = write!(line, " {{dst_handle {:#x}}}", t.dst_handle);
                }
            }
            BUS1_CMD_RECV => {
                if let Some(m) = read::<bus1_cmd_recv>(arg).map(|r| r.msg) {
                    line.push(' ');
                    line.push_str(&message(&m));
                }
            }
            final_abi::BUS1_CMD_RECV => {
                if let Some(m) = read::<final_abi::bus1_cmd_recv>(arg).map(|r| r.msg) {
                    line.push(' ');
                    line.push_str(&final_message(&m));
                }
            }
            _ => {}
        }
    }
    if request as u32 == BUS1_CMD_SEND {
        // Per-destination results of CONTINUE, success or not.
        if let Some(c) = read::<bus1_cmd_send>(arg).filter(|c| c.flags & BUS1_SEND_FLAG_CONTINUE != 0 && c.ptr_errors != 0) {
            let errs = array(c.ptr_errors, c.n_destinations, 8, |b| match u64_at(b) {
                0 => "0".into(),
                e => errno_name(e as i32).into_owned(),
            });
            let _ = write!(line, " {{errors {errs}}}");
        }
    }
    emit(&line);
}

/// What PEER_QUERY reported, in either layout.
fn query_result(peer_flags: u64, limits: [u64; 4]) -> String {
    format!(
        " {{peer_flags {}, max_slices {}, max_handles {}, max_inflight_bytes {}, max_inflight_fds {}}}",
        flag_names(peer_flags, PEER_FLAGS),
        limits[0],
        limits[1],
        limits[2],
        limits[3]
    )
}

/// What a RECV reported, in either layout (the final one has nothing
/// about the sender).
struct Reported<'a> {
    ty: u64,
    flags: u64,
    flag_table: &'a [(u64, &'a str)],
    destination: u64,
    /// uid, gid, pid and tid, then n_secctx (2016 layout only).
    sender: Option<([u32; 4], u64)>,
    offset: u64,
    n_bytes: u64,
    n_handles: u64,
    n_fds: u64,
}

fn reported(r: Reported) -> String {
    let mut s = format!("{{type {}, flags {}, destination {:#x}", msg_type(r.ty), flag_names(r.flags, r.flag_table), r.destination);
    if r.ty == BUS1_MSG_DATA {
        if let Some(([uid, gid, pid, tid], _)) = r.sender {
            let _ = write!(s, ", uid {uid}, gid {gid}, pid {pid}, tid {tid}");
        }
        let _ = write!(s, ", offset {:#x}, n_bytes {}, n_handles {}, n_fds {}", r.offset, r.n_bytes, r.n_handles, r.n_fds);
        if let Some((_, n_secctx)) = r.sender {
            let _ = write!(s, ", n_secctx {n_secctx}");
        }
    }
    s.push('}');
    s
}

/// What the 2016 RECV reported.
fn message(m: &bus1_msg) -> String {
    reported(Reported {
        ty: m.r#type,
        flags: m.flags,
        flag_table: MSG_FLAGS,
        destination: m.destination,
        sender: Some(([m.uid, m.gid, m.pid, m.tid], m.n_secctx)),
        offset: m.offset,
        n_bytes: m.n_bytes,
        n_handles: m.n_handles,
        n_fds: m.n_fds,
    })
}

/// What the final ABI's RECV reported.
fn final_message(m: &final_abi::bus1_msg) -> String {
    reported(Reported {
        ty: m.r#type,
        flags: m.flags,
        flag_table: FINAL_MSG_FLAGS,
        destination: m.destination,
        sender: None,
        offset: m.offset,
        n_bytes: m.n_bytes,
        n_handles: m.n_handles,
        n_fds: m.n_fds,
    })
}

// ------------------------------------------------------- other calls

/// open(2) of the device (or of a peer fd's `/proc` link): `outcome` is
/// the new descriptor or the errno, `note` says more about it.
pub fn open(path: &[u8], flags: i32, domain: Option<&std::path::Path>, outcome: std::result::Result<i32, Errno>, note: &str) {
    let mut s = format!("open \"{}\" {}", String::from_utf8_lossy(path), open_flags(flags));
    if let Some(d) = domain {
        let _ = write!(s, " domain {}", d.display());
    }
    match outcome {
        Ok(fd) => {
            let _ = write!(s, " -> fd {fd}");
        }
        Err(e) => {
            let _ = write!(s, " -> -1 {}", errno_name(e.0));
        }
    }
    if !note.is_empty() {
        let _ = write!(s, " ({note})");
    }
    emit(&s);
}

/// mmap(2) of a peer fd: the pool.
pub fn mmap(fd: i32, serial: u64, len: usize, prot: i32, flags: i32, off: i64, r: std::result::Result<usize, i32>) {
    let res = match r {
        Ok(addr) => format!("{addr:#x}"),
        Err(e) => format!("-1 {}", errno_name(e)),
    };
    emit(&format!(
        "fd {fd} peer {serial:#x} mmap {{len {len:#x}, prot {}, flags {}, offset {off:#x}}} -> {res}",
        prot_names(prot),
        map_names(flags)
    ));
}

/// A peer fd was closed (by close, fclose, dup2 over it, close_range or at
/// exit); `last` says whether it was this process's last one of the peer.
pub fn close(fd: i32, serial: u64, last: bool) {
    let note = if last { " (the last in this process)" } else { "" };
    emit(&format!("fd {fd} peer {serial:#x} closed{note}"));
}

/// One descriptor of an interposed wait: what was asked and what came
/// back (poll-style bits).
pub struct WaitFd {
    pub fd: i32,
    /// The peer's serial, None for a descriptor that is not a peer.
    pub serial: Option<u64>,
    pub events: i16,
    pub revents: i16,
}

fn poll_names(v: i16) -> String {
    let names = [
        (libc::POLLIN, "IN"),
        (libc::POLLPRI, "PRI"),
        (libc::POLLOUT, "OUT"),
        (libc::POLLERR, "ERR"),
        (libc::POLLHUP, "HUP"),
        (libc::POLLNVAL, "NVAL"),
        (libc::POLLRDNORM, "RDNORM"),
        (libc::POLLRDBAND, "RDBAND"),
        (libc::POLLWRNORM, "WRNORM"),
        (libc::POLLWRBAND, "WRBAND"),
        (libc::POLLRDHUP, "RDHUP"),
    ];
    flag_names(v as u16 as u64, &names.map(|(b, n)| (b as u16 as u64, n)))
}

fn count_or_errno(r: std::result::Result<usize, i32>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => format!("-1 {}", errno_name(e)),
    }
}

/// An interposed poll-style wait (poll, ppoll, select, pselect) that
/// involved peer fds, after it returned: `call` is the function's name,
/// `r` the number of ready descriptors or the errno.
pub fn wait(call: &str, fds: &[WaitFd], r: std::result::Result<usize, i32>) {
    emit(&wait_line(call, fds, r));
}

fn wait_line(call: &str, fds: &[WaitFd], r: std::result::Result<usize, i32>) -> String {
    let mut s = format!("{call} [");
    for (i, w) in fds.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "fd {}", w.fd);
        if let Some(serial) = w.serial {
            let _ = write!(s, " peer {serial:#x}");
        }
        let _ = write!(s, " {} -> {}", poll_names(w.events), poll_names(w.revents));
    }
    let _ = write!(s, "] -> {}", count_or_errno(r));
    s
}

/// An interposed epoll wait on the set `epfd`, whose registrations include
/// the peer fds `peers`, after it returned (`r` as for [`wait`]).
pub fn epoll_wait(call: &str, epfd: i32, peers: &[i32], r: std::result::Result<usize, i32>) {
    let list: Vec<String> = peers.iter().map(i32::to_string).collect();
    emit(&format!("{call} epfd {epfd} [peer fds {}] -> {}", list.join(", "), count_or_errno(r)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_have_their_names() {
        assert_eq!(errno_name(libc::ENOTDIR), "ENOTDIR");
        assert_eq!(errno_name(libc::ESHUTDOWN), "ESHUTDOWN");
        assert_eq!(errno_name(libc::EXFULL), "EXFULL");
        assert_eq!(errno_name(libc::ENOTRECOVERABLE), "ENOTRECOVERABLE");
        assert_eq!(errno_name(524), "ENOTSUPP");
        assert_eq!(errno_name(9999), "E?9999");
        // every value the kernel defines up to EHWPOISON has a name
        for e in 1..=libc::EHWPOISON {
            if e != 41 && e != 58 {
                assert!(!errno_name(e).starts_with("E?"), "{e}");
            }
        }
    }

    #[test]
    fn flags_are_named_and_unknown_bits_kept() {
        assert_eq!(flag_names(0, SEND_FLAGS), "0");
        assert_eq!(flag_names(3, SEND_FLAGS), "CONTINUE|SEED");
        assert_eq!(flag_names(0x14, RECV_FLAGS), "INSTALL_FDS|0x10");
        assert_eq!(open_flags(libc::O_RDWR | libc::O_CLOEXEC), "O_RDWR|O_CLOEXEC");
        assert_eq!(open_flags(libc::O_RDONLY), "O_RDONLY");
        assert_eq!(prot_names(libc::PROT_READ | libc::PROT_WRITE), "PROT_READ|PROT_WRITE");
        assert_eq!(poll_names(libc::POLLIN | libc::POLLHUP), "IN|HUP");
        assert_eq!(msg_type(BUS1_MSG_NODE_RELEASE), "NODE_RELEASE");
    }

    #[test]
    fn waits_show_each_descriptor_with_asked_and_returned_events() {
        let fds = [
            WaitFd { fd: 3, serial: Some(0x1f), events: libc::POLLIN, revents: libc::POLLIN | libc::POLLRDNORM },
            WaitFd { fd: 7, serial: None, events: libc::POLLIN | libc::POLLOUT, revents: 0 },
        ];
        assert_eq!(wait_line("poll", &fds, Ok(1)), "poll [fd 3 peer 0x1f IN -> IN|RDNORM, fd 7 IN|OUT -> 0] -> 1");
        assert_eq!(wait_line("select", &[], Err(libc::EINTR)), "select [] -> -1 EINTR");
    }

    #[test]
    fn percent_p_names_one_file_per_process() {
        assert_eq!(file_name(b"/tmp/t.%p.log", 42), b"/tmp/t.42.log");
        assert_eq!(file_name(b"/tmp/%%p%", 7), b"/tmp/%7%");
        assert_eq!(file_name(b"/tmp/plain", 7), b"/tmp/plain");
    }

    #[test]
    fn arrays_are_abbreviated_and_bad_pointers_named() {
        let ids: Vec<u64> = (1..=10).map(|i| i << 8).collect();
        let s = hex_ids(ids.as_ptr() as u64, ids.len() as u64);
        assert_eq!(s, "[0x100, 0x200, 0x300, 0x400, 0x500, 0x600, 0x700, 0x800, …+2]");
        assert_eq!(hex_ids(ids.as_ptr() as u64, 0), "[]");
        assert_eq!(hex_ids(8, 1), "<unreadable 0x8>");
    }
}
