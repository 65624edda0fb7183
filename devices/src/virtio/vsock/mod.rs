//! virtio-vsock (VIRTIO 1.2 §5.10) with a hybrid Unix-socket backend: the channel through
//! which the host (Kata's runtime, containerd) reaches the agent in the pod VM.
//!
//! Layers, per the crate's design: [`packet`] parses and writes packets (pure, fuzzed);
//! [`conn`] is one connection's state machine with credit flow control (pure);
//! [`muxer`] maps connections onto Unix sockets; [`Vsock`] is the [`VirtioDevice`] whose
//! worker ([`worker`]) owns the queues, the memory and the muxer while the device is active.
//!
//! The listening socket is bound when the device is created, so clients may connect before
//! the guest drives the device; they are served once it does.

pub mod conn;
pub mod muxer;
pub mod packet;
pub mod worker;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use self::muxer::Muxer;
use self::worker::{VsockWorker, VsockWorkerHandle};
use super::{ActivateError, Activation, VirtioDevice, F_VERSION_1};

/// Device type (§5.10.1).
pub const TYPE_VSOCK: u32 = 19;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Smallest CID a guest may have (0–2 are reserved, §5.10.4).
pub const MIN_GUEST_CID: u64 = 3;
/// Largest CID: `0xffffffff` is `VMADDR_CID_ANY` (§5.10.4 uses the low 32 bits only).
pub const MAX_GUEST_CID: u64 = 0xffff_fffe;

/// Errors creating a vsock device (host configuration).
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is not between {MIN_GUEST_CID} and {MAX_GUEST_CID}")]
    Cid(u64),
    #[error("{path:?} exists and is not a socket")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path:?}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Muxer(#[from] muxer::MuxerError),
}

/// A virtio-vsock device listening on one Unix socket.
pub struct Vsock {
    cid: u64,
    path: PathBuf,
    config: [u8; 8],
    queue_sizes: [u16; 3],
    /// Present while inactive; the muxer owns it while the worker runs.
    listener: Option<UnixListener>,
    worker: Option<VsockWorkerHandle>,
}

/// Binds `path`, replacing a stale socket left by an earlier run (never another file).
fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(VsockError::NotASocket {
                path: path.to_owned(),
            });
        }
        let _ = fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| VsockError::Bind {
        path: path.to_owned(),
        source,
    })
}

impl Vsock {
    /// A device for guest CID `cid` whose host side listens on `path`.
    pub fn new(cid: u64, path: PathBuf) -> Result<Self, VsockError> {
        if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&cid) {
            return Err(VsockError::Cid(cid));
        }
        let listener = bind(&path)?;
        Ok(Self {
            cid,
            path,
            config: cid.to_le_bytes(),
            queue_sizes: [QUEUE_SIZE; 3],
            listener: Some(listener),
            worker: None,
        })
    }

    pub fn cid(&self) -> u64 {
        self.cid
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn id(&self) -> &str {
        "vsock"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // `guest_cid` is read-only (§5.10.4).
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if let Some(q) = activation.queues.iter().find(|q| q.index > worker::EVENT) {
            return Err(ActivateError::BadQueues(q.index));
        }
        for needed in [worker::RX, worker::TX] {
            if !activation.queues.iter().any(|q| q.index == needed) {
                return Err(ActivateError::BadQueues(needed));
            }
        }
        let listener = self.listener.take().ok_or(ActivateError::AlreadyActive)?;
        // Keep a second handle so a failed start leaves the device able to try again.
        let spare = listener.try_clone().map_err(ActivateError::Worker)?;
        let muxer = match Muxer::new(self.cid, self.path.clone(), listener) {
            Ok(m) => m,
            Err(e) => {
                self.listener = Some(spare);
                return Err(ActivateError::Worker(io::Error::other(e.to_string())));
            }
        };
        drop(spare);
        let worker = VsockWorker::new(activation, muxer);
        match VsockWorkerHandle::spawn(format!("vsock-{}", self.cid), worker) {
            Ok(handle) => {
                self.worker = Some(handle);
                Ok(())
            }
            Err(failed) => {
                let (e, worker) = *failed;
                self.listener = Some(worker.into_muxer().into_listener());
                Err(ActivateError::Worker(e))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(mut handle) = self.worker.take() {
            match handle.stop() {
                // Every connection closes with the muxer; the listener stays bound.
                Some(worker) => self.listener = Some(worker.into_muxer().into_listener()),
                None => log::error!(
                    "vsock {}: worker gone without handing the listener back; vsock offline",
                    self.path.display()
                ),
            }
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        if self.listener.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}
