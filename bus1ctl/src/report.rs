//! What `status` and `gc` print: text for people, JSON for scripts (a
//! top-level object whose `peers` list has one entry per peer; the layout
//! is described in docs/man/bus1ctl.1).

use crate::json::Json;
use shm_core::{Abi, HandleInfo, NodeInfo, PeerInfo, Quota, Quotas, Snapshot};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What `status` finds out about the peers outside the domain.
pub struct Seen {
    /// The processes holding each peer socket, by address.
    pub holders: HashMap<PathBuf, Vec<u32>>,
    /// Serials of peers whose last fd is gone but which nobody has torn
    /// down yet.
    pub gone: HashSet<u64>,
}

impl Seen {
    fn pids(&self, p: &PeerInfo) -> &[u32] {
        self.holders.get(&p.socket).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Memory a file really uses (its allocated blocks; pools and the segment
/// are sparse, so their length says nothing).
fn resident(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

fn abi_name(p: &PeerInfo) -> Option<&'static str> {
    p.abi.map(|a| match a {
        Abi::V1 => "v1",
        Abi::Final => "final",
    })
}

/// "abi v1", "abi final (fixed)", "abi undetermined".
fn abi_text(p: &PeerInfo) -> String {
    match abi_name(p) {
        Some(a) => format!("abi {a}{}", if p.abi_fixed { " (fixed)" } else { "" }),
        None => "abi undetermined".into(),
    }
}

fn access_name(a: u32) -> &'static str {
    match a as i32 {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "?",
    }
}

/// A byte count for people: "512 B", "4.0 KiB", "1.5 MiB".
fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if v < 1024 {
        return format!("{v} B");
    }
    let mut x = v as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn opt_hex(v: Option<u64>) -> String {
    v.map_or_else(|| "(no id)".into(), |v| format!("{v:#x}"))
}

/// A node as "owner:id" ("0x2:0x100"), or "(owner gone)".
fn node_name(owner: Option<u64>, id: Option<u64>) -> String {
    match owner {
        Some(o) => format!("{o:#x}:{}", opt_hex(id)),
        None => "(owner gone)".into(),
    }
}

fn quota_text(q: &Quotas) -> String {
    let one = |name: &str, q: Quota| format!("{name} {}/{}", q.used, q.max);
    [one("slices", q.slices), one("handles", q.handles), one("inflight bytes", q.inflight_bytes), one("inflight fds", q.inflight_fds)]
        .join(", ")
}

fn handle_text(h: &HandleInfo) -> String {
    let mut s = opt_hex(h.id);
    if h.owner {
        s.push_str(" (own node");
    } else {
        let _ = write!(s, " (node {}", node_name(h.node_owner, h.node_id));
    }
    let _ = write!(s, ", {}", plural(h.user_refs, "ref", "refs"));
    if h.inflight > 0 {
        let _ = write!(s, ", {} queued", h.inflight);
    }
    s.push(')');
    s
}

fn node_state(n: &NodeInfo) -> &'static str {
    match (n.destroyed, n.released) {
        (false, _) => "live",
        (true, false) => "destroyed",
        (true, true) => "released",
    }
}

/// `status` for people.
pub fn status_text(s: &Snapshot, seen: &Seen) -> String {
    let mut o = String::new();
    let seg = resident(&s.memory_dir.join("segment"));
    let _ = writeln!(o, "domain {}", s.dir.display());
    if s.memory_dir != s.dir {
        let _ = writeln!(o, "  memory {} (the domain's files, in memory)", s.memory_dir.display());
    }
    let _ = writeln!(
        o,
        "  layout {}, {}, {}, clock {}, next serial {:#x}",
        s.version,
        plural(s.peers.len() as u64, "peer", "peers"),
        plural(s.nodes.len() as u64, "node", "nodes"),
        s.clock,
        s.next_serial
    );
    let _ = writeln!(
        o,
        "  segment: {} in memory (a sparse file: its length is address space, not memory); heap {} in {}, {} reserved; {}",
        seg.map_or_else(|| "?".into(), bytes),
        bytes(s.heap_bytes),
        plural(s.heap_blocks, "block", "blocks"),
        bytes(s.heap_reserved),
        plural(s.recoveries, "recovery", "recoveries")
    );
    for u in &s.users {
        let _ = writeln!(o, "  user {}: {}", u.uid, quota_text(&u.quota));
    }
    for p in &s.peers {
        o.push('\n');
        peer_text(&mut o, p, seen.pids(p), seen.gone.contains(&p.serial));
    }
    if !s.nodes.is_empty() {
        o.push_str("\nnodes (owner:id):\n");
        for n in &s.nodes {
            let _ = write!(o, "  {}  {}  strong {}", node_name(n.owner, n.id), node_state(n), n.strong);
            // Other peers' handles (an owner that is gone holds none).
            let held: Vec<String> = n
                .holders
                .iter()
                .filter_map(|&(holder, id, refs, inflight)| Some((holder.filter(|h| Some(*h) != n.owner)?, id, refs, inflight)))
                .map(|(holder, id, refs, inflight)| {
                    let mut t = format!("{holder:#x} as {} ({}", opt_hex(id), plural(refs, "ref", "refs"));
                    if inflight > 0 {
                        let _ = write!(t, ", {inflight} queued");
                    }
                    t.push(')');
                    t
                })
                .collect();
            if !held.is_empty() {
                let _ = write!(o, "  held by {}", held.join(", "));
            }
            o.push('\n');
        }
    }
    o
}

fn peer_text(o: &mut String, p: &PeerInfo, pids: &[u32], gone: bool) {
    let pids = if gone {
        "none: its last fd is gone (bus1ctl gc tears it down)".to_string()
    } else if pids.is_empty() {
        "none seen (its fds are in flight, or held by processes not visible here)".to_string()
    } else {
        pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    };
    let _ = writeln!(
        o,
        "peer {:#x}  {}  {}  {}  uid {} gid {}  pids {pids}",
        p.serial,
        if p.connected { "connected" } else { "disconnected" },
        access_name(p.access),
        abi_text(p),
        p.uid,
        p.gid
    );
    let q = &p.queue;
    let _ = writeln!(
        o,
        "  queue    {}: {} data, {} NODE_DESTROY, {} NODE_RELEASE; {} with fds; {}",
        plural(q.len, "entry", "entries"),
        q.data,
        q.node_destroy,
        q.node_release,
        q.with_fds,
        if q.seed { "a seed" } else { "no seed" }
    );
    let _ = writeln!(
        o,
        "  pool     {}: {} ({} published), {} in slices, largest free range {}, {} in memory",
        bytes(p.pool.size),
        plural(p.pool.slices, "slice", "slices"),
        p.pool.published,
        bytes(p.pool.used_bytes),
        bytes(p.pool.largest_free),
        resident(&p.pool_file).map_or_else(|| "?".into(), bytes)
    );
    let _ = writeln!(o, "  quota    {}", quota_text(&p.quota));
    let handles: Vec<String> = p.handles.iter().map(handle_text).collect();
    let _ = writeln!(
        o,
        "  handles  {}{}",
        if handles.is_empty() { "none".into() } else { handles.join(", ") },
        if p.live_nodes > 0 { format!("; owns {}", plural(p.live_nodes, "live node", "live nodes")) } else { String::new() }
    );
}

fn quota_json(q: Quota) -> Json {
    Json::obj(vec![("max", Json::Int(q.max)), ("used", Json::Int(q.used))])
}

fn quotas_json(q: &Quotas) -> Json {
    Json::obj(vec![
        ("slices", quota_json(q.slices)),
        ("handles", quota_json(q.handles)),
        ("inflight_bytes", quota_json(q.inflight_bytes)),
        ("inflight_fds", quota_json(q.inflight_fds)),
    ])
}

fn path_json(p: &Path) -> Json {
    Json::str(p.to_string_lossy())
}

/// `status --json`.
pub fn status_json(s: &Snapshot, seen: &Seen) -> Json {
    let peers = s
        .peers
        .iter()
        .map(|p| {
            Json::obj(vec![
                ("serial", Json::UInt(p.serial)),
                ("state", Json::str(if p.connected { "connected" } else { "disconnected" })),
                ("fd_open", Json::Bool(!seen.gone.contains(&p.serial))),
                ("access", Json::str(access_name(p.access))),
                ("abi", abi_name(p).map_or(Json::Null, Json::str)),
                ("abi_fixed", Json::Bool(p.abi_fixed)),
                ("uid", Json::UInt(p.uid as u64)),
                ("gid", Json::UInt(p.gid as u64)),
                ("pids", Json::Arr(seen.pids(p).iter().map(|&pid| Json::UInt(pid as u64)).collect())),
                ("socket", path_json(&p.socket)),
                ("peer_flags", Json::UInt(p.flags)),
                (
                    "queue",
                    Json::obj(vec![
                        ("length", Json::UInt(p.queue.len)),
                        ("data", Json::UInt(p.queue.data)),
                        ("node_destroy", Json::UInt(p.queue.node_destroy)),
                        ("node_release", Json::UInt(p.queue.node_release)),
                        ("with_fds", Json::UInt(p.queue.with_fds)),
                        ("seed", Json::Bool(p.queue.seed)),
                    ]),
                ),
                (
                    "pool",
                    Json::obj(vec![
                        ("size", Json::UInt(p.pool.size)),
                        ("slices", Json::UInt(p.pool.slices)),
                        ("published", Json::UInt(p.pool.published)),
                        ("used_bytes", Json::UInt(p.pool.used_bytes)),
                        ("largest_free", Json::UInt(p.pool.largest_free)),
                        ("resident_bytes", Json::opt_uint(resident(&p.pool_file))),
                    ]),
                ),
                ("quota", quotas_json(&p.quota)),
                ("live_nodes", Json::UInt(p.live_nodes)),
                (
                    "handles",
                    Json::Arr(
                        p.handles
                            .iter()
                            .map(|h| {
                                Json::obj(vec![
                                    ("id", Json::opt_hex(h.id)),
                                    ("owner", Json::Bool(h.owner)),
                                    ("node_owner", Json::opt_uint(h.node_owner)),
                                    ("node_id", Json::opt_hex(h.node_id)),
                                    ("user_refs", Json::UInt(h.user_refs)),
                                    ("inflight", Json::UInt(h.inflight)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let nodes = s
        .nodes
        .iter()
        .map(|n| {
            Json::obj(vec![
                ("owner", Json::opt_uint(n.owner)),
                ("id", Json::opt_hex(n.id)),
                ("state", Json::str(node_state(n))),
                ("strong", Json::UInt(n.strong)),
                (
                    "handles",
                    Json::Arr(
                        n.holders
                            .iter()
                            .map(|&(holder, id, refs, inflight)| {
                                Json::obj(vec![
                                    ("holder", Json::opt_uint(holder)),
                                    ("id", Json::opt_hex(id)),
                                    ("user_refs", Json::UInt(refs)),
                                    ("inflight", Json::UInt(inflight)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let users = s
        .users
        .iter()
        .map(|u| Json::obj(vec![("uid", Json::UInt(u.uid)), ("refs", Json::UInt(u.refs)), ("quota", quotas_json(&u.quota))]))
        .collect();
    Json::obj(vec![
        ("domain", path_json(&s.dir)),
        ("memory", path_json(&s.memory_dir)),
        (
            "segment",
            Json::obj(vec![
                ("version", Json::UInt(s.version)),
                ("resident_bytes", Json::opt_uint(resident(&s.memory_dir.join("segment")))),
                ("heap_bytes", Json::UInt(s.heap_bytes)),
                ("heap_blocks", Json::UInt(s.heap_blocks)),
                ("heap_reserved", Json::UInt(s.heap_reserved)),
                ("table_entries", Json::UInt(s.table_entries)),
                ("clock", Json::UInt(s.clock)),
                ("next_serial", Json::UInt(s.next_serial)),
                ("recoveries", Json::UInt(s.recoveries)),
            ]),
        ),
        ("users", Json::Arr(users)),
        ("peers", Json::Arr(peers)),
        ("nodes", Json::Arr(nodes)),
    ])
}

/// What `gc` did.
pub struct Gc {
    pub peers_torn_down: u64,
    pub files_removed: u64,
    pub pool_bytes_released: u64,
    /// The domain was unused, and its memory is gone.
    pub memory_removed: bool,
}

pub fn gc_text(dir: &Path, g: &Gc) -> String {
    format!(
        "domain {}: {} torn down, {} removed, {} of pool memory given back{}\n",
        dir.display(),
        plural(g.peers_torn_down, "dead peer", "dead peers"),
        plural(g.files_removed, "leftover file", "leftover files"),
        bytes(g.pool_bytes_released),
        if g.memory_removed { "; nothing used it any more, so its memory is removed" } else { "" }
    )
}

pub fn gc_json(dir: &Path, g: &Gc) -> Json {
    Json::obj(vec![
        ("domain", path_json(dir)),
        ("peers_torn_down", Json::UInt(g.peers_torn_down)),
        ("files_removed", Json::UInt(g.files_removed)),
        ("pool_bytes_released", Json::UInt(g.pool_bytes_released)),
        ("memory_removed", Json::Bool(g.memory_removed)),
    ])
}

/// What `check` found: one line per violated invariant, or that the
/// domain is consistent.
pub fn check_text(dir: &Path, violations: &[String]) -> String {
    if violations.is_empty() {
        return format!("domain {}: consistent\n", dir.display());
    }
    let mut out = format!("domain {}: {}\n", dir.display(), plural(violations.len() as u64, "violation", "violations"));
    for v in violations {
        out.push_str("  ");
        out.push_str(v);
        out.push('\n');
    }
    out
}

pub fn check_json(dir: &Path, violations: &[String]) -> Json {
    Json::obj(vec![
        ("domain", path_json(dir)),
        ("consistent", Json::Bool(violations.is_empty())),
        ("violations", Json::Arr(violations.iter().map(|v| Json::str(v.as_str())).collect())),
    ])
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(3 << 19), "1.5 MiB");
        assert_eq!(bytes(8 << 30), "8.0 GiB");
    }
}
