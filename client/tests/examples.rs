//! The examples run and succeed, on the embedded backend and on the
//! device backend under the shim (`cargo test` builds them).

mod common;

use std::path::PathBuf;
use std::process::Command;

const EXAMPLES: &[&str] = &["echo", "multicast", "fdpass", "async_service", "async_subscriber"];

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile.join("examples").join(name);
    assert!(path.exists(), "{} is not built", path.display());
    path
}

fn run(name: &str, device: bool) {
    let scratch = bus1::ScratchDomain::new().unwrap();
    let mut cmd = Command::new(example(name));
    cmd.env("BUS1_DOMAIN", scratch.path());
    if device {
        cmd.arg("--device").env("LD_PRELOAD", common::shim());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "{name} (device: {device}): {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn examples_run_embedded() {
    EXAMPLES.iter().for_each(|e| run(e, false));
}

#[test]
fn examples_run_on_the_device_under_the_shim() {
    EXAMPLES.iter().for_each(|e| run(e, true));
}
