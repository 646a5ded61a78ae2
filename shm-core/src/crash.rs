//! Crash injection for the recovery tests.
//!
//! `BUS1_CRASH_AT=<point>[:<n>]` (or [`arm`]) makes the process kill itself
//! with SIGKILL the n-th time it reaches the named point inside a critical
//! section, so that tests can check that the next process to take the lock
//! rolls the dead transaction back. Unarmed, a point costs one relaxed
//! atomic load.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, Once};

static ARMED: AtomicBool = AtomicBool::new(false);
static REMAINING: AtomicI64 = AtomicI64::new(0);
static TARGET: Mutex<String> = Mutex::new(String::new());
static ENV: Once = Once::new();

/// Arms point `name`: the process dies the `n`-th time it gets there.
pub fn arm(name: &str, n: i64) {
    *TARGET.lock().unwrap() = name.to_string();
    REMAINING.store(n, Ordering::Relaxed);
    ARMED.store(true, Ordering::Release);
}

fn from_env() {
    if let Ok(v) = std::env::var("BUS1_CRASH_AT") {
        let (name, n) = match v.split_once(':') {
            Some((a, b)) => (a.to_string(), b.parse().unwrap_or(1)),
            None => (v, 1),
        };
        arm(&name, n);
    }
}

/// A place where the process may be killed for testing.
#[inline]
pub fn point(name: &str) {
    ENV.call_once(from_env);
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    if *TARGET.lock().unwrap() == name && REMAINING.fetch_sub(1, Ordering::Relaxed) == 1 {
        crate::sys::kill_self();
        loop {
            std::hint::spin_loop();
        }
    }
}
