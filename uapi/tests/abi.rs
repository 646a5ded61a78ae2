//! Checks the Rust definitions against the C header: a C program compiled
//! against `include/linux/bus1.h` prints every size, offset and number, and
//! each must equal the value computed on the Rust side.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;
use uapi::*;

fn rust_values() -> BTreeMap<String, u64> {
    let mut v = BTreeMap::new();
    let mut put = |k: &str, x: u64| {
        v.insert(k.to_string(), x);
    };
    macro_rules! layout {
        ($c:literal, $t:ty, [$($f:ident),*]) => {
            put(concat!("sizeof ", $c), size_of::<$t>() as u64);
            $(put(concat!("offsetof ", $c, ".", stringify!($f)), offset_of!($t, $f) as u64);)*
        };
    }
    layout!("bus1_cmd_peer_reset", bus1_cmd_peer_reset,
        [flags, peer_flags, max_slices, max_handles, max_inflight_bytes, max_inflight_fds]);
    layout!("bus1_cmd_peer_reset_u64", bus1_cmd_peer_reset_u64,
        [flags, peer_flags, max_slices, max_handles, max_inflight_bytes, max_inflight_fds]);
    layout!("bus1_cmd_handle_transfer", bus1_cmd_handle_transfer,
        [flags, src_handle, dst_fd, dst_handle]);
    layout!("bus1_cmd_nodes_destroy", bus1_cmd_nodes_destroy, [flags, ptr_nodes, n_nodes]);
    layout!("bus1_cmd_node_destroy", bus1_cmd_node_destroy, [flags, ptr_nodes, n_nodes]);
    layout!("bus1_cmd_send", bus1_cmd_send,
        [flags, ptr_destinations, ptr_errors, n_destinations, ptr_vecs, n_vecs,
         ptr_handles, n_handles, ptr_fds, n_fds]);
    layout!("bus1_cmd_recv", bus1_cmd_recv, [flags, max_offset, msg]);
    put("offsetof bus1_cmd_recv.msg.type", 16 + offset_of!(bus1_msg, r#type) as u64);
    macro_rules! msg {
        ($($f:ident),*) => {
            $(put(concat!("offsetof bus1_cmd_recv.msg.", stringify!($f)),
                  16 + offset_of!(bus1_msg, $f) as u64);)*
        };
    }
    msg!(flags, destination, uid, gid, pid, tid, offset, n_bytes, n_handles, n_fds, n_secctx);
    put("sizeof bus1_cmd_recv.msg", size_of::<bus1_msg>() as u64);
    for (name, num) in COMMANDS {
        put(name, *num as u64);
    }
    put("BUS1_CMD_NODE_DESTROY", BUS1_CMD_NODE_DESTROY as u64);
    macro_rules! consts {
        ($($c:ident),*) => { $(put(stringify!($c), $c as u64);)* };
    }
    consts!(BUS1_IOCTL_MAGIC, BUS1_FD_MAX, BUS1_HANDLE_INVALID, BUS1_OFFSET_INVALID,
        BUS1_HANDLE_FLAG_MANAGED, BUS1_HANDLE_FLAG_REMOTE, BUS1_PEER_FLAG_WANT_SECCTX,
        BUS1_PEER_RESET_FLAG_FLUSH, BUS1_PEER_RESET_FLAG_FLUSH_SEED,
        BUS1_CMD_PEER_RESET_FLAG_FLUSH, BUS1_CMD_PEER_RESET_FLAG_FLUSH_SEED,
        BUS1_NODES_DESTROY_FLAG_RELEASE_HANDLES, BUS1_SEND_FLAG_CONTINUE, BUS1_SEND_FLAG_SEED,
        BUS1_RECV_FLAG_PEEK, BUS1_RECV_FLAG_SEED, BUS1_RECV_FLAG_INSTALL_FDS,
        BUS1_MSG_NONE, BUS1_MSG_DATA, BUS1_MSG_NODE_DESTROY, BUS1_MSG_NODE_RELEASE,
        BUS1_MSG_FLAG_HAS_SECCTX, BUS1_MSG_FLAG_CONTINUE);
    v
}

/// Builds the C side: one printf line per value, named like the Rust keys.
fn c_program(keys: &BTreeMap<String, u64>) -> String {
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

#[test]
fn c_header_matches_rust_definitions() {
    let rust = rust_values();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi-check");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi.c");
    let bin = dir.join("abi");
    std::fs::write(&src, c_program(&rust)).unwrap();
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .output()
        .expect("a C compiler is needed for the ABI check");
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
        assert_eq!(c.get(k), Some(v), "{k}: C says {:?}, Rust says {v}", c.get(k));
    }
}
