//! virtio-rng (VIRTIO 1.2 §5.4): one request queue whose device-writable buffers the device
//! fills from a host entropy source (Kata passes `/dev/urandom`). A guest without enough
//! entropy at boot stalls in `getrandom()`; this device is how a pod VM gets it from the host.
//!
//! Work per notification is bounded twice: at most a queue's worth of chains, and at most
//! [`MAX_BYTES_PER_CHAIN`] bytes per chain, so a guest posting huge buffers cannot keep the
//! worker (or the host's entropy pool) busy. A source that fails or ends leaves the rest of
//! the buffer unfilled; the used length tells the driver how much it got.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::worker::{QueueHandler, WorkerHandle};
use super::{
    chain_allowed, rings_allowed, ActivateError, Activation, GuestMemory, VirtioDevice,
    VirtioInterrupt, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1,
};
use crate::dma::DmaGuard;
use crate::legacy::RateLimitedLog;

/// The virtio device type of an entropy source.
pub const TYPE_RNG: u32 = 4;
/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one chain gets, however large the buffers the guest posted.
pub const MAX_BYTES_PER_CHAIN: usize = 64 * 1024;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("cannot open the entropy source {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// The virtio-rng device.
pub struct Rng {
    id: String,
    /// The source while inactive; the worker owns it while active.
    source: Option<File>,
    worker: Option<WorkerHandle<RngWorker>>,
}

impl Rng {
    /// Opens `path` (read-only) as the entropy source.
    pub fn open(id: impl Into<String>, path: &Path) -> Result<Self, RngError> {
        let source = File::open(path).map_err(|source| RngError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::with_source(id, source))
    }

    /// A device reading from an already open source.
    pub fn with_source(id: impl Into<String>, source: File) -> Self {
        Self {
            id: id.into(),
            source: Some(source),
            worker: None,
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // The device has no configuration space.
        super::read_config_bytes(&[], offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let mut queues = activation.queues.into_iter();
        let Some(q) = queues.next() else {
            return Err(ActivateError::BadQueues(0));
        };
        if let Some(extra) = queues.next() {
            return Err(ActivateError::BadQueues(extra.index));
        }
        if q.index != 0 {
            return Err(ActivateError::BadQueues(q.index));
        }
        let source = self.source.take().ok_or(ActivateError::AlreadyActive)?;
        let worker = RngWorker {
            mem: activation.mem,
            dma: activation.dma,
            queue: q.queue,
            broken: false,
            source,
            interrupt: activation.interrupt,
            log: RateLimitedLog::default(),
        };
        match WorkerHandle::spawn(format!("rng-{}", self.id), vec![q.kick], worker) {
            Ok(handle) => {
                self.worker = Some(handle);
                Ok(())
            }
            Err((e, worker)) => {
                self.source = Some(worker.source);
                Err(ActivateError::Worker(e))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(mut handle) = self.worker.take() {
            match handle.stop() {
                Some(worker) => self.source = Some(worker.source),
                None => log::error!(
                    "rng {}: worker gone with its source; device stays offline",
                    self.id
                ),
            }
        }
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        self.reset();
    }
}

/// What an active device works with.
pub struct RngWorker {
    mem: GuestMemory,
    dma: DmaGuard,
    queue: Queue,
    /// Set once the guest broke the queue; it stays alone until the device is reset.
    broken: bool,
    source: File,
    interrupt: Arc<dyn VirtioInterrupt>,
    log: RateLimitedLog,
}

impl RngWorker {
    fn break_queue(&mut self, error: &dyn std::fmt::Display) {
        self.broken = true;
        self.log.warn(format_args!(
            "virtio-rng queue: {error}; device needs reset"
        ));
        self.interrupt.needs_reset();
    }

    /// Fills one chain's device-writable buffers; returns the bytes written.
    fn fill(&mut self, chain: virtio_queue::DescriptorChain<&GuestMemory>) -> u32 {
        let mut written = 0usize;
        let mut buf = [0u8; 4096];
        for desc in chain {
            if !desc.is_write_only() {
                self.log.warn(format_args!(
                    "virtio-rng: a driver-readable buffer; skipped"
                ));
                continue;
            }
            let mut at = desc.addr();
            let mut left = (desc.len() as usize).min(MAX_BYTES_PER_CHAIN - written);
            while left > 0 {
                let want = left.min(buf.len());
                let Some(piece) = buf.get_mut(..want) else {
                    return written as u32;
                };
                let got = match self.source.read(piece) {
                    Ok(0) => {
                        self.log.warn(format_args!("virtio-rng: the source ended"));
                        return written as u32;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.log
                            .warn(format_args!("virtio-rng: cannot read the source: {e}"));
                        return written as u32;
                    }
                };
                let Some(bytes) = buf.get(..got) else {
                    return written as u32;
                };
                if let Err(e) = self.mem.write_slice(bytes, at) {
                    self.log
                        .warn(format_args!("virtio-rng: buffer outside guest RAM: {e}"));
                    return written as u32;
                }
                written += got;
                left -= got;
                at = GuestAddress(at.0.wrapping_add(got as u64));
            }
            if written >= MAX_BYTES_PER_CHAIN {
                break;
            }
        }
        written as u32
    }

    /// Serves at most a queue's worth of chains; true if more are waiting.
    fn drain(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if !rings_allowed(&self.dma, &self.queue) {
            self.break_queue(&"its rings are not in shared memory");
            return false;
        }
        // The chains borrow this handle (cheap: the regions are shared), not `self`.
        let mem = self.mem.clone();
        let mut budget = self.queue.size();
        let mut completed = 0u32;
        let mut more = false;
        loop {
            if budget == 0 {
                more = true;
                break;
            }
            let chain = match self.queue.iter(&mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    self.break_queue(&e);
                    return false;
                }
            };
            let Some(chain) = chain else {
                match self.queue.enable_notification(&self.mem) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        self.break_queue(&e);
                        return false;
                    }
                }
            };
            budget -= 1;
            let head = chain.head_index();
            // A confidential guest's buffer in a page it made private: there is no status to
            // answer with, so the device stops and asks for a reset (VIRTIO 1.2 §2.1.2).
            if !chain_allowed(&self.dma, &self.mem, &self.queue, &chain) {
                self.break_queue(&format_args!("chain {head} points into private memory"));
                return false;
            }
            let len = self.fill(chain);
            if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                self.break_queue(&e);
                return false;
            }
            completed += 1;
        }
        if completed > 0 {
            match self.queue.needs_notification(&self.mem) {
                Ok(false) => {}
                Ok(true) | Err(_) => self.interrupt.notify_queue(0),
            }
        }
        more
    }
}

impl QueueHandler for RngWorker {
    fn process(&mut self, _queue: usize) -> bool {
        self.drain()
    }
}

#[cfg(test)]
mod tests;
