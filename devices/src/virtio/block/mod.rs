//! virtio-blk (VIRTIO 1.2 §5.2): a disk backed by a raw file or block device.
//!
//! Three layers, per the crate's design: [`request`] turns a descriptor chain into a typed
//! request (pure, fuzzed); [`Executor`] carries it out against a [`backend::DiskBackend`] and
//! turns host errors into a status for that request alone; [`Block`] is the [`VirtioDevice`]
//! the transport drives, whose worker thread owns the queues, the memory and the backend
//! while the device is active and gives the backend back on reset.

pub mod backend;
pub mod request;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::{Address, Bytes, GuestMemory};

use self::backend::DiskBackend;
use self::request::{Request, RequestKind, SectorRange, ID_BYTES, SECTOR_SIZE};
use super::worker::WorkerHandle;
use super::{
    ActivateError, Activation, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1,
    TYPE_BLOCK,
};
pub use worker::BlockWorker;

/// Feature bits (§5.2.3).
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_MQ: u64 = 1 << 12;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Largest queue the device offers (the and Linux's usual upper bound).
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Most queues a disk may have.
pub const MAX_QUEUES: u16 = 16;
/// Most DISCARD/WRITE_ZEROES segments per request (advertised in the config space).
pub const MAX_RANGE_SEGMENTS: u32 = 16;
/// Bytes moved between the backend and guest memory per step; bounds the host buffer a
/// request can make the worker allocate, whatever the guest's buffer sizes.
const CHUNK_BYTES: usize = 1 << 20;
/// Length of `struct virtio_blk_config` up to `write_zeroes_may_unmap` and its padding.
const CONFIG_BYTES: usize = 60;

/// Errors creating a block device (host configuration).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("queue size {0} is not a power of two between 2 and {MAX_QUEUE_SIZE}")]
    QueueSize(u16),
    #[error("number of queues {0} is not between 1 and {MAX_QUEUES}")]
    NumQueues(u16),
    #[error("disk id {0:?} is longer than {ID_BYTES} bytes")]
    IdTooLong(String),
}

/// How the device is configured (from `--disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOptions {
    /// Name of the device: returned by GET_ID and used to name the worker thread.
    pub id: String,
    pub readonly: bool,
    pub num_queues: u16,
    pub queue_size: u16,
}

/// What happened to requests, for observability and tests.
#[derive(Debug, Default)]
pub struct BlockCounters {
    pub requests: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered `IOERR` because the host failed (EIO, ENOSPC, …).
    pub host_errors: AtomicU64,
    /// Requests the guest got wrong (bad chain, out of range, write to a read-only disk).
    pub guest_errors: AtomicU64,
    /// Queues the guest broke so that the device needs a reset.
    pub queue_errors: AtomicU64,
}

impl BlockCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Why a request failed after parsing.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("host I/O error: {0}")]
    Host(std::io::Error),
    #[error("guest memory access failed: {0}")]
    Memory(vm_memory::GuestMemoryError),
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("request not supported: {0}")]
    Unsupported(&'static str),
}

impl ExecError {
    /// The status byte this error becomes.
    pub fn status(&self) -> u8 {
        match self {
            ExecError::Unsupported(_) => request::S_UNSUPP,
            _ => request::S_IOERR,
        }
    }
}

/// Carries out parsed requests against a backend.
pub struct Executor {
    backend: Box<dyn DiskBackend>,
    readonly: bool,
    id: [u8; ID_BYTES],
    buf: Vec<u8>,
}

impl Executor {
    pub fn new(backend: Box<dyn DiskBackend>, readonly: bool, id: &str) -> Self {
        let mut raw = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        raw[..n].copy_from_slice(&id.as_bytes()[..n]);
        Self {
            backend,
            readonly,
            id: raw,
            buf: Vec::new(),
        }
    }

    /// Capacity in 512-byte sectors (a trailing partial sector is not addressable).
    pub fn capacity(&self) -> u64 {
        self.backend.size() / SECTOR_SIZE
    }

    pub fn into_backend(self) -> Box<dyn DiskBackend> {
        self.backend
    }

    /// Executes `req`; returns how many data bytes were written into guest buffers.
    pub fn execute<M: GuestMemory>(
        &mut self,
        mem: &M,
        req: &Request,
        counters: &BlockCounters,
    ) -> Result<u32, ExecError> {
        match &req.kind {
            RequestKind::Read { sector } => {
                let n = self.transfer(mem, req, sector * SECTOR_SIZE, true)?;
                BlockCounters::add(&counters.bytes_read, n);
                // The parser bounds a chain to 4 GiB, so this fits.
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            }
            RequestKind::Write { sector } => {
                if self.readonly {
                    return Err(ExecError::ReadOnly);
                }
                let n = self.transfer(mem, req, sector * SECTOR_SIZE, false)?;
                BlockCounters::add(&counters.bytes_written, n);
                Ok(0)
            }
            RequestKind::Flush => {
                if !self.readonly {
                    self.backend.flush().map_err(ExecError::Host)?;
                }
                BlockCounters::add(&counters.flushes, 1);
                Ok(0)
            }
            RequestKind::GetId => {
                let mut left = &self.id[..];
                let mut written = 0u32;
                for seg in &req.data {
                    let n = (seg.len as usize).min(left.len());
                    mem.write_slice(&left[..n], seg.addr)
                        .map_err(ExecError::Memory)?;
                    left = &left[n..];
                    written += n as u32;
                }
                Ok(written)
            }
            RequestKind::Discard(ranges) => self.ranges(ranges, true).map(|_| 0),
            RequestKind::WriteZeroes(ranges) => self.ranges(ranges, false).map(|_| 0),
        }
    }

    /// Moves the request's data between guest buffers and the disk, starting at byte
    /// `offset`, in chunks of at most [`CHUNK_BYTES`].
    fn transfer<M: GuestMemory>(
        &mut self,
        mem: &M,
        req: &Request,
        mut offset: u64,
        to_guest: bool,
    ) -> Result<u64, ExecError> {
        let mut total = 0u64;
        for seg in &req.data {
            let mut done = 0usize;
            while done < seg.len as usize {
                let n = (seg.len as usize - done).min(CHUNK_BYTES);
                if self.buf.len() < n {
                    self.buf.resize(n, 0);
                }
                let buf = &mut self.buf[..n];
                let addr = seg.addr.checked_add(done as u64).ok_or(ExecError::Memory(
                    vm_memory::GuestMemoryError::InvalidBackendAddress,
                ))?;
                if to_guest {
                    self.backend.read_at(buf, offset).map_err(ExecError::Host)?;
                    mem.write_slice(buf, addr).map_err(ExecError::Memory)?;
                } else {
                    mem.read_slice(buf, addr).map_err(ExecError::Memory)?;
                    self.backend
                        .write_at(buf, offset)
                        .map_err(ExecError::Host)?;
                }
                done += n;
                offset += n as u64;
                total += n as u64;
            }
        }
        Ok(total)
    }

    fn ranges(&mut self, ranges: &[SectorRange], discard: bool) -> Result<(), ExecError> {
        if self.readonly {
            return Err(ExecError::ReadOnly);
        }
        if !self.backend.supports_discard() {
            return Err(ExecError::Unsupported(
                "discard/write-zeroes on this backend",
            ));
        }
        for r in ranges {
            let (offset, len) = (r.sector * SECTOR_SIZE, u64::from(r.sectors) * SECTOR_SIZE);
            if discard {
                // §5.2.6.1: the unmap flag is reserved for DISCARD.
                if r.flags != 0 {
                    return Err(ExecError::Unsupported("DISCARD with flags"));
                }
                self.backend.discard(offset, len).map_err(ExecError::Host)?;
            } else {
                if r.flags & !request::WRITE_ZEROES_FLAG_UNMAP != 0 {
                    return Err(ExecError::Unsupported("WRITE_ZEROES with unknown flags"));
                }
                let unmap = r.flags & request::WRITE_ZEROES_FLAG_UNMAP != 0;
                self.backend
                    .write_zeroes(offset, len, unmap)
                    .map_err(ExecError::Host)?;
            }
        }
        Ok(())
    }
}

/// The virtio-blk device.
pub struct Block {
    options: BlockOptions,
    queue_sizes: Vec<u16>,
    features: u64,
    config: [u8; CONFIG_BYTES],
    /// Present while inactive; the worker owns it while active.
    executor: Option<Executor>,
    worker: Option<WorkerHandle<BlockWorker>>,
    counters: Arc<BlockCounters>,
}

impl Block {
    pub fn new(options: BlockOptions, backend: Box<dyn DiskBackend>) -> Result<Self, BlockError> {
        let qs = options.queue_size;
        if !qs.is_power_of_two() || !(2..=MAX_QUEUE_SIZE).contains(&qs) {
            return Err(BlockError::QueueSize(qs));
        }
        if !(1..=MAX_QUEUES).contains(&options.num_queues) {
            return Err(BlockError::NumQueues(options.num_queues));
        }
        if options.id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong(options.id.clone()));
        }
        let discard = backend.supports_discard() && !options.readonly;
        let executor = Executor::new(backend, options.readonly, &options.id);
        let mut features =
            F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC | F_SEG_MAX | F_FLUSH;
        if options.readonly {
            features |= F_RO;
        }
        if options.num_queues > 1 {
            features |= F_MQ;
        }
        if discard {
            features |= F_DISCARD | F_WRITE_ZEROES;
        }
        let mut config = [0u8; CONFIG_BYTES];
        config[0..8].copy_from_slice(&executor.capacity().to_le_bytes());
        // seg_max: the header and status take two descriptors of a chain.
        config[12..16].copy_from_slice(&u32::from(qs - 2).to_le_bytes());
        config[34..36].copy_from_slice(&options.num_queues.to_le_bytes());
        if discard {
            let max_sectors = u32::MAX.to_le_bytes();
            config[36..40].copy_from_slice(&max_sectors);
            config[40..44].copy_from_slice(&MAX_RANGE_SEGMENTS.to_le_bytes());
            config[44..48].copy_from_slice(&1u32.to_le_bytes());
            config[48..52].copy_from_slice(&max_sectors);
            config[52..56].copy_from_slice(&MAX_RANGE_SEGMENTS.to_le_bytes());
            config[56] = 1;
        }
        Ok(Self {
            queue_sizes: vec![qs; usize::from(options.num_queues)],
            options,
            features,
            config,
            executor: Some(executor),
            worker: None,
            counters: Arc::new(BlockCounters::default()),
        })
    }

    /// The device's counters (shared with its worker).
    pub fn counters(&self) -> Arc<BlockCounters> {
        self.counters.clone()
    }

    /// Capacity in sectors, as the config space reports it.
    pub fn capacity(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.config[0..8]);
        u64::from_le_bytes(b)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn id(&self) -> &str {
        &self.options.id
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing is writable: `writeback` needs VIRTIO_BLK_F_CONFIG_WCE, not offered.
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if activation.queues.is_empty() {
            return Err(ActivateError::BadQueues(0));
        }
        if let Some(q) = activation
            .queues
            .iter()
            .find(|q| usize::from(q.index) >= self.queue_sizes.len())
        {
            return Err(ActivateError::BadQueues(q.index));
        }
        let executor = self.executor.take().ok_or(ActivateError::AlreadyActive)?;
        let (worker, kicks) = BlockWorker::new(activation, executor, self.counters.clone());
        match WorkerHandle::spawn(format!("blk-{}", self.options.id), kicks, worker) {
            Ok(handle) => {
                self.worker = Some(handle);
                Ok(())
            }
            Err((e, worker)) => {
                self.executor = Some(worker.into_executor());
                Err(ActivateError::Worker(e))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(mut handle) = self.worker.take() {
            match handle.stop() {
                Some(worker) => self.executor = Some(worker.into_executor()),
                None => log::error!(
                    "disk {}: worker gone without handing the backend back; disk stays offline",
                    self.options.id
                ),
            }
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.reset();
    }
}
