//! Configuration from the environment (ARCHITECTURE.md decision 7):
//! `BUS1_DEVICE`, `BUS1_DOMAIN`, `BUS1_TRACE`. Device and domain are read
//! at every open, so a program (or a test) may change them at run time.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The device path to intercept, as a C string and without allocating
/// (every open() of the process asks).
pub fn device_cstr() -> *const libc::c_char {
    // SAFETY: getenv returns NULL or a NUL-terminated string that stays
    // valid until the environment changes.
    let p = unsafe { libc::getenv(c"BUS1_DEVICE".as_ptr()) };
    // SAFETY: p is non-null here, so it points at a NUL-terminated string.
    if p.is_null() || unsafe { *p } == 0 {
        c"/dev/bus1".as_ptr()
    } else {
        p
    }
}

/// The domain directory for new peers.
pub fn domain() -> PathBuf {
    match std::env::var_os("BUS1_DOMAIN") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => shm_core::default_dir(),
    }
}

/// Whether each decoded ioctl is logged to stderr.
pub fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("BUS1_TRACE").is_some_and(|v| v != "0" && !v.is_empty()))
}
