//! Which processes hold a peer's fd: the kernel lists every bound AF_UNIX
//! socket with its inode and address in `/proc/net/unix`, and a process's
//! descriptors link to `socket:[<inode>]` in `/proc/<pid>/fd`. Processes
//! whose descriptors cannot be read (another user's, without privilege)
//! are not seen, and an fd in flight in a message belongs to no process.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// For each socket address in `addresses`: the IDs of the processes that
/// hold a descriptor of the socket bound there (sorted, no duplicates).
pub fn holders(addresses: &[PathBuf]) -> HashMap<PathBuf, Vec<u32>> {
    let wanted: std::collections::HashSet<&Path> = addresses.iter().map(PathBuf::as_path).collect();
    let mut by_inode: HashMap<u64, PathBuf> = HashMap::new();
    if let Ok(table) = std::fs::read("/proc/net/unix") {
        for line in table.split(|b| *b == b'\n').skip(1) {
            if let Some((inode, path)) = parse_unix_line(line) {
                if wanted.contains(path.as_path()) {
                    by_inode.insert(inode, path);
                }
            }
        }
    }
    let mut found: HashMap<PathBuf, BTreeSet<u32>> = HashMap::new();
    if !by_inode.is_empty() {
        for pid in proc_pids() {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                if let Some(path) = socket_inode(target.as_os_str().as_bytes()).and_then(|i| by_inode.get(&i)) {
                    found.entry(path.clone()).or_default().insert(pid);
                }
            }
        }
    }
    found.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

/// Inode and address of one line of `/proc/net/unix` ("Num RefCount
/// Protocol Flags Type St Inode Path"), if the socket has a path.
fn parse_unix_line(line: &[u8]) -> Option<(u64, PathBuf)> {
    let text = std::str::from_utf8(line).ok()?;
    // Seven fields, then the path: the rest of the line (it may contain
    // spaces).
    let mut rest = text.trim_start();
    let mut inode = None;
    for i in 0..7 {
        let end = rest.find(' ')?;
        if i == 6 {
            inode = rest[..end].parse().ok();
        }
        rest = rest[end..].trim_start();
    }
    let inode = inode?;
    rest.starts_with('/').then(|| (inode, PathBuf::from(rest)))
}

/// The inode of a descriptor link "socket:[N]".
fn socket_inode(link: &[u8]) -> Option<u64> {
    let n = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(n).ok()?.parse().ok()
}

fn proc_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_table_lines_give_inode_and_path() {
        let l = b"0000000000000000: 00000002 00000000 00000000 0002 01 123456 /dev/shm/d/peer.1";
        assert_eq!(parse_unix_line(l), Some((123456, PathBuf::from("/dev/shm/d/peer.1"))));
        let spaced = b"0000000000000000: 00000002 00000000 00000000 0002 01 7 /tmp/a b/peer.2";
        assert_eq!(parse_unix_line(spaced), Some((7, PathBuf::from("/tmp/a b/peer.2"))));
        assert_eq!(parse_unix_line(b"0000000000000000: 00000002 00000000 00000000 0002 01 7"), None);
        assert_eq!(parse_unix_line(b"0000000000000000: 00000002 00000000 00000000 0002 01 7 @abstract"), None);
        assert_eq!(socket_inode(b"socket:[42]"), Some(42));
        assert_eq!(socket_inode(b"pipe:[42]"), None);
    }

    #[test]
    fn this_process_holds_its_bound_socket() {
        let dir = std::env::temp_dir().join(format!("bus1ctl-owners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peer.1");
        let _sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let got = holders(std::slice::from_ref(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.get(&path), Some(&vec![std::process::id()]));
    }
}
