//! Crash and freeze injection for the recovery and isolation tests.
//!
//! `BUS1_CRASH_AT=<point>[:<n>]` (or [`arm`]) makes the process kill itself
//! with SIGKILL the n-th time it reaches the named point, so that tests can
//! check that whoever meets its work next (the next locker, a receiver, a
//! sender needing the room) recovers it. `BUS1_PARK_AT=<point>[:<n>]` (or
//! [`arm_park`]) stops the process with SIGSTOP there instead, so that
//! tests can check that a frozen process delays nobody else; it goes on
//! when sent SIGCONT. Unarmed, a point costs one relaxed atomic load and
//! a branch.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, Once};

/// What happens at the armed point.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Park,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static REMAINING: AtomicI64 = AtomicI64::new(0);
static TARGET: Mutex<(String, Option<Action>)> = Mutex::new((String::new(), None));
static ENV: Once = Once::new();

/// Set once the environment was read and nothing is armed: then a point
/// is one load and a branch, inlined.
static QUIET: AtomicBool = AtomicBool::new(false);

fn arm_with(name: &str, n: i64, action: Action) {
    // The environment is read first, so that its reading cannot mark the
    // process quiet after this arming.
    ENV.call_once(from_env);
    QUIET.store(false, Ordering::Relaxed);
    arm_with_read(name, n, action);
}

fn arm_with_read(name: &str, n: i64, action: Action) {
    *TARGET.lock().unwrap() = (name.to_string(), Some(action));
    REMAINING.store(n, Ordering::Relaxed);
    ARMED.store(true, Ordering::Release);
}

/// Arms point `name`: the process dies the `n`-th time it gets there.
pub fn arm(name: &str, n: i64) {
    arm_with(name, n, Action::Kill);
}

/// Arms point `name`: the process stops (SIGSTOP) the `n`-th time it gets
/// there.
pub fn arm_park(name: &str, n: i64) {
    arm_with(name, n, Action::Park);
}

fn from_env() {
    for (var, action) in [("BUS1_CRASH_AT", Action::Kill), ("BUS1_PARK_AT", Action::Park)] {
        if let Ok(v) = std::env::var(var) {
            let (name, n) = match v.split_once(':') {
                Some((a, b)) => (a.to_string(), b.parse().unwrap_or(1)),
                None => (v, 1),
            };
            arm_with_read(&name, n, action);
        }
    }
    if !ARMED.load(Ordering::Relaxed) {
        QUIET.store(true, Ordering::Relaxed);
    }
}

/// A place where the process may be killed or stopped for testing.
#[inline]
pub fn point(name: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    point_armed(name);
}

#[cold]
#[inline(never)]
fn point_armed(name: &str) {
    ENV.call_once(from_env);
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let action = {
        let t = TARGET.lock().unwrap();
        if t.0 != name || REMAINING.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        t.1
    };
    match action {
        Some(Action::Kill) => {
            crate::sys::kill_self();
            loop {
                std::hint::spin_loop();
            }
        }
        Some(Action::Park) => crate::sys::stop_self(),
        None => {}
    }
}
