//! Checks the Rust definitions against the C header: a C program compiled
//! against `include/linux/bus1.h` prints every size, offset and number, and
//! each must equal the value computed on the Rust side. The header is
//! checked in both of its modes: the RFC v1 ABI (the default) against the
//! crate root, and the final ABI (`-DBUS1_ABI_FINAL`) against
//! `uapi::final_abi` plus everything the two share.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::{Command, Output};
use uapi::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    V1,
    Final,
}

type Values = BTreeMap<String, u64>;

fn put(v: &mut Values, k: &str, x: u64) {
    v.insert(k.to_string(), x);
}

macro_rules! layout {
    ($v:expr, $c:literal, $t:ty, [$($f:ident),*]) => {
        put($v, concat!("sizeof ", $c), size_of::<$t>() as u64);
        $(put($v, concat!("offsetof ", $c, ".", stringify!($f)), offset_of!($t, $f) as u64);)*
    };
}

macro_rules! consts {
    ($v:expr, $($c:path),* $(,)?) => { $(put($v, stringify!($c).rsplit("::").next().unwrap().trim(), $c as u64);)* };
}

/// What both ABIs share.
fn shared_values() -> Values {
    let v = &mut Values::new();
    layout!(v, "bus1_cmd_peer_reset", bus1_cmd_peer_reset,
        [flags, peer_flags, max_slices, max_handles, max_inflight_bytes, max_inflight_fds]);
    layout!(v, "bus1_cmd_peer_reset_u64", bus1_cmd_peer_reset_u64,
        [flags, peer_flags, max_slices, max_handles, max_inflight_bytes, max_inflight_fds]);
    layout!(v, "bus1_cmd_handle_transfer", bus1_cmd_handle_transfer,
        [flags, src_handle, dst_fd, dst_handle]);
    layout!(v, "bus1_cmd_nodes_destroy", bus1_cmd_nodes_destroy, [flags, ptr_nodes, n_nodes]);
    layout!(v, "bus1_cmd_node_destroy", bus1_cmd_node_destroy, [flags, ptr_nodes, n_nodes]);
    layout!(v, "bus1_cmd_send", bus1_cmd_send,
        [flags, ptr_destinations, ptr_errors, n_destinations, ptr_vecs, n_vecs,
         ptr_handles, n_handles, ptr_fds, n_fds]);
    for (name, num) in COMMANDS.iter().filter(|(n, _)| *n != "BUS1_CMD_RECV") {
        put(v, name, *num as u64);
    }
    put(v, "BUS1_CMD_NODE_DESTROY", BUS1_CMD_NODE_DESTROY as u64);
    consts!(v, BUS1_IOCTL_MAGIC, BUS1_FD_MAX, BUS1_HANDLE_INVALID, BUS1_OFFSET_INVALID,
        BUS1_HANDLE_FLAG_MANAGED, BUS1_HANDLE_FLAG_REMOTE,
        BUS1_PEER_RESET_FLAG_FLUSH, BUS1_PEER_RESET_FLAG_FLUSH_SEED,
        BUS1_CMD_PEER_RESET_FLAG_FLUSH, BUS1_CMD_PEER_RESET_FLAG_FLUSH_SEED,
        BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES, BUS1_SEND_FLAG_CONTINUE, BUS1_SEND_FLAG_SEED,
        BUS1_MSG_NONE, BUS1_MSG_DATA, BUS1_MSG_NODE_DESTROY, BUS1_MSG_NODE_RELEASE);
    v.clone()
}

fn rust_values(mode: Mode) -> Values {
    let mut values = shared_values();
    let v = &mut values;
    macro_rules! recv {
        ($recv:ty, $msg:ty, [$($f:ident),*]) => {
            layout!(v, "bus1_cmd_recv", $recv, [flags, max_offset, msg]);
            put(v, "offsetof bus1_cmd_recv.msg.type", 16 + offset_of!($msg, r#type) as u64);
            $(put(v, concat!("offsetof bus1_cmd_recv.msg.", stringify!($f)), 16 + offset_of!($msg, $f) as u64);)*
            put(v, "sizeof bus1_cmd_recv.msg", size_of::<$msg>() as u64);
        };
    }
    match mode {
        Mode::V1 => {
            recv!(bus1_cmd_recv, bus1_msg,
                [flags, destination, uid, gid, pid, tid, offset, n_bytes, n_handles, n_fds, n_secctx]);
            put(v, "BUS1_CMD_RECV", BUS1_CMD_RECV as u64);
            consts!(v, BUS1_PEER_FLAG_WANT_SECCTX, BUS1_RECV_FLAG_PEEK, BUS1_RECV_FLAG_SEED,
                BUS1_RECV_FLAG_INSTALL_FDS, BUS1_MSG_FLAG_HAS_SECCTX, BUS1_MSG_FLAG_CONTINUE);
        }
        Mode::Final => {
            use uapi::final_abi as f;
            recv!(f::bus1_cmd_recv, f::bus1_msg, [flags, destination, offset, n_bytes, n_handles, n_fds]);
            consts!(v, f::BUS1_CMD_RECV, f::BUS1_RECV_FLAG_SEED, f::BUS1_RECV_FLAG_INSTALL_FDS,
                f::BUS1_MSG_FLAG_CONTINUE);
        }
    }
    values
}

/// Builds the C side: one printf line per value, named like the Rust keys.
fn c_program(keys: &Values) -> String {
    let mut body = String::new();
    for key in keys.keys() {
        let expr = if let Some(t) = key.strip_prefix("sizeof ") {
            if let Some(s) = t.strip_suffix(".msg") {
                format!("sizeof(((struct {s} *)0)->msg)")
            } else {
                format!("sizeof(struct {t})")
            }
        } else if let Some(t) = key.strip_prefix("offsetof ") {
            let (ty, field) = t.split_once('.').unwrap();
            format!("offsetof(struct {ty}, {field})")
        } else {
            key.clone()
        };
        body.push_str(&format!(
            "    printf(\"%s %llu\\n\", \"{key}\", (unsigned long long)({expr}));\n"
        ));
    }
    format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/bus1.h>\n\
         int main(void)\n{{\n{body}    return 0;\n}}\n"
    )
}

/// Compiles `src` against the header in `mode` (and runs nothing).
fn compile(name: &str, src: &str, mode: Mode) -> (PathBuf, Output) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi-check");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&file, src).unwrap();
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=gnu11", "-Wall", "-Werror", "-o"]).arg(&bin).arg("-I").arg(&include);
    if mode == Mode::Final {
        cmd.arg("-DBUS1_ABI_FINAL");
    }
    let out = cmd.arg(&file).output().expect("a C compiler is needed for the ABI check");
    (bin, out)
}

fn check(mode: Mode) {
    let rust = rust_values(mode);
    let (bin, out) = compile(&format!("abi-{mode:?}"), &c_program(&rust), mode);
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&bin).output().unwrap();
    assert!(run.status.success());
    let mut c = BTreeMap::new();
    for line in String::from_utf8(run.stdout).unwrap().lines() {
        let (k, v) = line.rsplit_once(' ').unwrap();
        c.insert(k.to_string(), v.parse::<u64>().unwrap());
    }
    assert_eq!(c.len(), rust.len());
    for (k, v) in &rust {
        assert_eq!(c.get(k), Some(v), "{mode:?} {k}: C says {:?}, Rust says {v}", c.get(k));
    }
}

#[test]
fn c_header_matches_rust_definitions() {
    check(Mode::V1);
}

#[test]
fn c_header_in_final_mode_matches_rust_definitions() {
    check(Mode::Final);
}

/// What the final ABI removed is absent from the header in final mode (a
/// program using it does not compile), and present by default.
#[test]
fn final_mode_leaves_out_what_the_final_abi_removed() {
    let uses = [
        ("peer_flag", "(void)BUS1_PEER_FLAG_WANT_SECCTX;"),
        ("peek", "(void)BUS1_RECV_FLAG_PEEK;"),
        ("secctx_flag", "(void)BUS1_MSG_FLAG_HAS_SECCTX;"),
        ("uid", "struct bus1_cmd_recv r = { 0 }; (void)r.msg.uid;"),
        ("pid", "struct bus1_cmd_recv r = { 0 }; (void)r.msg.tid;"),
        ("n_secctx", "struct bus1_cmd_recv r = { 0 }; (void)r.msg.n_secctx;"),
    ];
    for (name, stmt) in uses {
        let src = format!("#include <linux/bus1.h>\nint main(void)\n{{\n    {stmt}\n    return 0;\n}}\n");
        let (_, v1) = compile(&format!("removed-{name}-v1"), &src, Mode::V1);
        assert!(v1.status.success(), "{name} must compile against the v1 header: {}", String::from_utf8_lossy(&v1.stderr));
        let (_, fin) = compile(&format!("removed-{name}-final"), &src, Mode::Final);
        assert!(!fin.status.success(), "{name} must not compile against the final header");
    }
}
