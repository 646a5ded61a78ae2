//! Separate, unrelated processes (not forked from each other) attach to
//! the same domain.

mod common;

use common::Bus;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BUS1_RT_ATTACH_DIR";

/// A process that did not inherit the mapping attaches while the first
/// one still has the segment mapped, and sees its peer.
#[test]
fn unrelated_process_attaches_to_a_mapped_domain() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let d = shm_core::Domain::attach(std::path::Path::new(&dir)).unwrap();
        assert_eq!(d.stats().unwrap().peers, 1);
        return;
    }
    let bus = Bus::new("attach");
    let _a = bus.peer();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "unrelated_process_attaches_to_a_mapped_domain", "--quiet"])
        .env(CHILD_ENV, &bus.dir)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("second process did not attach within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "child failed: {status}");
}
