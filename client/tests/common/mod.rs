//! What the tests share: every test of an operation runs on both backends.
//!
//! `both_backends!` turns each `fn name(b: Backend)` into two tests:
//! `embedded::name`, run here in a scratch domain, and `device::name`,
//! which runs this test binary again for that one test under the shim
//! (`LD_PRELOAD`, a fresh `BUS1_DOMAIN`), where `Backend::device()` is
//! served by the shim as it would be by the module. The shim is built
//! first (a `cargo build` of the preload crate in this test's profile), so
//! a plain `cargo test` runs the device tests against the current source.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set in the environment of a test run again under the shim.
pub const UNDER_SHIM: &str = "BUS1_CLIENT_TEST_UNDER_SHIM";

pub fn under_shim() -> bool {
    std::env::var_os(UNDER_SHIM).is_some()
}

/// The target directory's profile directory this binary was built in.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// The shim of this build, built now if needed.
pub fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let profile = profile_dir();
        let target = profile.parent().expect("target dir");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(workspace).args(["build", "--quiet", "-p", "bus1-preload", "--target-dir"]).arg(target);
        if profile.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo to build the shim");
        assert!(st.success(), "building the shim failed");
        let so = profile.join("libbus1_preload.so");
        assert!(so.exists(), "{} missing after the build", so.display());
        so
    })
}

/// A command running this test binary's test `name` alone under the shim
/// in domain `domain`.
pub fn shimmed_test(name: &str, domain: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_PRELOAD", shim())
        .env("BUS1_DOMAIN", domain)
        .env(UNDER_SHIM, "1");
    cmd
}

/// Runs test `name` of this binary under the shim in a fresh domain and
/// fails if it did not run and pass.
pub fn run_under_shim(name: &str) {
    let scratch = bus1::ScratchDomain::new().expect("scratch domain");
    let out = shimmed_test(name, scratch.path()).output().expect("run the test under the shim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under the shim: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// Generates `embedded::NAME` and `device::NAME` for every
/// `fn NAME(b: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($(fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(fn $name($b: bus1::Backend) $body)*

        mod embedded {
            $(#[test]
            fn $name() {
                let scratch = bus1::ScratchDomain::new().expect("scratch domain");
                super::$name(scratch.backend());
            })*
        }

        mod device {
            $(#[test]
            fn $name() {
                if $crate::common::under_shim() {
                    super::$name(bus1::Backend::device());
                } else {
                    $crate::common::run_under_shim(concat!("device::", stringify!($name)));
                }
            })*
        }
    };
}

/// The payload of a message event (panics on anything else).
pub fn payload(e: bus1::Event<'_>) -> Vec<u8> {
    match e {
        bus1::Event::Message(m) => m.payload().to_vec(),
        other => panic!("expected a message, got {other:?}"),
    }
}
