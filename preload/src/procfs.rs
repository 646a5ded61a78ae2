//! What `/proc` shows about this process's peer fds, as for the module's
//! file (docs/reference.md §1.1): `/proc/self/fd/N` links to the device path, and
//! `/proc/self/fdinfo/N` reads like the module's, ending in its
//! `bus1-peer:` line. Only this process's own entries are recognised; the
//! fd tables of other processes are not ours to see.

use std::ffi::CStr;

/// A `/proc` entry about one of this process's descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `…/fd/N`: a symbolic link to the open file.
    FdLink(i32),
    /// `…/fdinfo/N`: the file's position, flags and driver lines.
    FdInfo(i32),
}

/// A decimal number as procfs spells it: digits only, no leading zero.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || (s.len() > 1 && s[0] == b'0') || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(s).ok()?.parse().ok()
}

/// Recognises `/proc/{self,thread-self,<pid>}[/task/<tid>]/{fd,fdinfo}/<n>`
/// when it names process `own_pid`.
pub fn parse(path: &[u8], own_pid: u32) -> Option<Entry> {
    let rest = path.strip_prefix(b"/proc/")?;
    let mut parts = rest.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".");
    match parts.next()? {
        b"self" | b"thread-self" => {}
        pid if number(pid)? == own_pid as u64 => {}
        _ => return None,
    }
    let mut kind = parts.next()?;
    if kind == b"task" {
        number(parts.next()?)?;
        kind = parts.next()?;
    }
    let fd = number(parts.next()?)?;
    if parts.next().is_some() || fd > i32::MAX as u64 {
        return None;
    }
    match kind {
        b"fd" => Some(Entry::FdLink(fd as i32)),
        b"fdinfo" => Some(Entry::FdInfo(fd as i32)),
        _ => None,
    }
}

/// [`parse`] for a C path argument; cheap for every path that does not
/// start with `/proc/`.
pub fn entry(path: &CStr) -> Option<Entry> {
    let p = path.to_bytes();
    if !p.starts_with(b"/proc/") {
        return None;
    }
    parse(p, std::process::id())
}

/// The text of the module's fdinfo: the kernel's generic lines for the
/// device file, then, for a peer, the driver's line with the peer's serial
/// number in hex, right-aligned in 16 characters.
pub fn fdinfo_text(flags: i32, mnt_id: u64, ino: u64, serial: Option<u64>) -> String {
    let generic = format!("pos:\t0\nflags:\t0{flags:o}\nmnt_id:\t{mnt_id}\nino:\t{ino}\n");
    match serial {
        Some(serial) => format!("{generic}bus1-peer:\t{serial:>16x}\n"),
        None => generic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_fd_entries_are_recognised() {
        assert_eq!(parse(b"/proc/self/fd/3", 77), Some(Entry::FdLink(3)));
        assert_eq!(parse(b"/proc/self/fdinfo/12", 77), Some(Entry::FdInfo(12)));
        assert_eq!(parse(b"/proc/thread-self/fdinfo/0", 77), Some(Entry::FdInfo(0)));
        assert_eq!(parse(b"/proc/77/fd/5", 77), Some(Entry::FdLink(5)));
        assert_eq!(parse(b"/proc/77/task/78/fdinfo/5", 77), Some(Entry::FdInfo(5)));
        assert_eq!(parse(b"/proc/self/task/78/fd/5", 77), Some(Entry::FdLink(5)));
        assert_eq!(parse(b"/proc//self/./fdinfo//9", 77), Some(Entry::FdInfo(9)));
    }

    #[test]
    fn other_paths_are_not() {
        for p in [
            &b"/proc/78/fd/5"[..],
            b"/proc/self/fd",
            b"/proc/self/fd/",
            b"/proc/self/fd/05",
            b"/proc/self/fd/-1",
            b"/proc/self/fd/3/x",
            b"/proc/self/fd/99999999999",
            b"/proc/self/maps",
            b"/proc/self/task/fd/3",
            b"/dev/bus1",
            b"proc/self/fd/3",
        ] {
            assert_eq!(parse(p, 77), None, "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn fdinfo_ends_in_the_module_line() {
        assert_eq!(
            fdinfo_text(0o2100002, 24, 0xb051, Some(0x2a)),
            "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t45137\nbus1-peer:\t              2a\n"
        );
        assert_eq!(fdinfo_text(0o12000000, 24, 0xb051, None), "pos:\t0\nflags:\t012000000\nmnt_id:\t24\nino:\t45137\n");
    }
}
