//! A real `virtiofsd` (the one scripts/setup installs) serving a directory for a test, killed
//! by its PID when dropped or when the test simulates a backend crash.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/setup installs virtiofsd: `${PODVISOR_CACHE:-~/.cache/podvisor}/virtiofsd`.
pub fn binary() -> PathBuf {
    let cache = std::env::var_os("PODVISOR_CACHE").map_or_else(
        || Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/podvisor"),
        PathBuf::from,
    );
    cache.join("virtiofsd/bin/virtiofsd")
}

/// A running virtiofsd.
pub struct Virtiofsd {
    child: Child,
    socket: PathBuf,
}

impl Virtiofsd {
    /// Serves `shared` on `<dir>/<name>.sock` (log in `<dir>/<name>.log`) without a sandbox
    /// and without caching, and waits for the socket.
    pub fn start(dir: &Path, shared: &Path, name: &str) -> io::Result<Self> {
        let bin = binary();
        if !bin.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} missing: scripts/setup installs virtiofsd",
                    bin.display()
                ),
            ));
        }
        let socket = dir.join(format!("{name}.sock"));
        let child = Command::new(&bin)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(shared)
            .args(["--sandbox", "none", "--cache", "never"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()?;
        let mut daemon = Self { child, socket };
        let end = Instant::now() + Duration::from_secs(30);
        while !daemon.socket.exists() {
            if Instant::now() > end || daemon.child.try_wait()?.is_some() {
                daemon.kill();
                return Err(io::Error::other(format!(
                    "virtiofsd did not create {}",
                    daemon.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills it now and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        self.kill();
    }
}
