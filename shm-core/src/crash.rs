//! Crash injection for the recovery tests.
//!
//! `BUS1_CRASH_AT=<point>[:<n>]` makes the process kill itself with
//! SIGKILL the n-th time (default first) it reaches the named point inside
//! a critical section, so that tests can check that the next process to
//! take the lock rolls the dead transaction back. Unset, a point costs one
//! relaxed atomic load.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

static REMAINING: AtomicI64 = AtomicI64::new(0);

fn target() -> Option<&'static str> {
    static T: OnceLock<Option<String>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("BUS1_CRASH_AT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((a, b)) => (a.to_string(), b.parse().unwrap_or(1)),
            None => (v, 1),
        };
        REMAINING.store(n, Ordering::Relaxed);
        Some(name)
    })
    .as_deref()
}

/// A place where the process may be killed for testing.
#[inline]
pub fn point(name: &str) {
    static ARMED: OnceLock<bool> = OnceLock::new();
    if !*ARMED.get_or_init(|| std::env::var_os("BUS1_CRASH_AT").is_some()) {
        return;
    }
    if target() == Some(name) && REMAINING.fetch_sub(1, Ordering::Relaxed) == 1 {
        // SAFETY: killing ourselves has no memory-safety implications.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        loop {
            std::hint::spin_loop();
        }
    }
}
