//! Scratch directories for unit tests that need files on disk (kernels, initramfs, disks).
//! Each removes itself when dropped, also when its test fails, so test runs leave nothing in the
//! temp directory: a leaked 60 MiB initramfs per run fills a CI disk within days.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `podvisor-<area>-<pid>-<n>`: unique per test even when tests share a process.
    pub fn new(area: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("podvisor-{area}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("creating {}: {e}", dir.display());
        }
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl ScratchDir {
    /// Leaves the directory in place (for a developer who asked to inspect it).
    pub fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
