//! A throwaway private bus, for tests and examples.

use crate::peer::Backend;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A private domain in a new directory (mode 0700, under `/dev/shm` when
/// there is one, so that its memory is the directory itself, else under
/// the temporary directory), removed with everything in it when dropped.
/// Peers opened in it meet nobody else's, so tests and examples run side
/// by side without seeing each other.
///
/// ```
/// # fn main() -> bus1::Result<()> {
/// let scratch = bus1::ScratchDomain::new()?;
/// let peer = bus1::Peer::open(scratch.backend())?;
/// assert!(scratch.path().is_dir());
/// # drop(peer);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ScratchDomain {
    dir: PathBuf,
}

impl ScratchDomain {
    /// Makes the directory.
    pub fn new() -> std::io::Result<ScratchDomain> {
        static N: AtomicU32 = AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("bus1-scratch.{}.{n}.{stamp:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(ScratchDomain { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The domain directory (what `BUS1_DOMAIN` would name).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The embedded backend in this domain.
    pub fn backend(&self) -> Backend {
        Backend::Embedded(self.dir.clone())
    }
}

impl Drop for ScratchDomain {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
