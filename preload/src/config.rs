//! Configuration from the environment (ARCHITECTURE.md decision 7):
//! `BUS1_DEVICE`, `BUS1_DOMAIN`, `BUS1_TRACE`. Device and domain are read
//! at every open, so a program (or a test) may change them at run time.

use std::path::PathBuf;
use std::sync::OnceLock;

pub const DEFAULT_DEVICE: &[u8] = b"/dev/bus1";

/// The device path to intercept.
pub fn device() -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    match std::env::var_os("BUS1_DEVICE") {
        Some(d) if !d.is_empty() => d.as_bytes().to_vec(),
        _ => DEFAULT_DEVICE.to_vec(),
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
