//! Configuration from the environment: `BUS1_DEVICE`, `BUS1_DOMAIN` and
//! `BUS1_ABI` (`BUS1_TRACE` is read by `trace`). Device, domain and ABI
//! are read at every open, so a program (or a test) may change them at
//! run time.

use shm_core::{sys, AbiMode};
use std::ffi::CStr;
use std::path::PathBuf;

/// Calls `f` with the device path to intercept, as a C string and without
/// copying or allocating (every open() of the process asks).
pub fn with_device<R>(f: impl FnOnce(&CStr) -> R) -> R {
    sys::with_env(c"BUS1_DEVICE", |v| match v {
        Some(p) if !p.is_empty() => f(p),
        _ => f(c"/dev/bus1"),
    })
}

/// The domain directory for new peers.
pub fn domain() -> PathBuf {
    shm_core::configured_dir()
}

/// How the ABI of a new peer is chosen: `BUS1_ABI=v1` or `final` fix it,
/// anything else lets its first calls tell.
pub fn abi_mode() -> AbiMode {
    sys::with_env(c"BUS1_ABI", |v| AbiMode::parse(v.map(CStr::to_bytes)))
}
