//! Scratch directories and reproducible test data shared by the integration tests.

use std::io;
use std::path::{Path, PathBuf};

/// A directory under the system temp dir, named after the test process, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `podvisor-<area>-<pid>-<name>`, empty.
    pub fn new(area: &str, name: &str) -> io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("podvisor-{area}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory.
    pub fn file(&self, name: &str, contents: &[u8]) -> io::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }

    /// [`sha256_file`] of `data`, written to `name` inside the directory first.
    pub fn sha256(&self, name: &str, data: &[u8]) -> io::Result<String> {
        sha256_file(&self.file(name, data)?)
    }
}

/// SHA-256 of a file as lowercase hex, computed by coreutils' `sha256sum`: an implementation
/// independent of the probe's (and the same as the Linux guest's busybox).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "sha256sum {} failed",
            path.display()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("sha256sum printed nothing"))
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One file under the system temp dir, `podvisor-<area>-<pid>-<name>`, removed on drop (also
/// when the test fails), so runs leave nothing behind.
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// The path only; nothing is created, and a stale file of the same name is removed.
    pub fn new(area: &str, name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("podvisor-{area}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    /// A new file holding `contents`.
    pub fn with(area: &str, name: &str, contents: &[u8]) -> io::Result<Self> {
        let file = Self::new(area, name);
        std::fs::write(&file.0, contents)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for ScratchFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// xorshift bytes, reproducible from the seed: no zero-filled, shifted or truncated copy
/// matches them by accident.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
