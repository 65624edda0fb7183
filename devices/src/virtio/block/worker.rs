//! The block device's worker: pops chains from its queues, parses and executes them, and
//! completes them in the used ring. Runs on the device's thread (see
//! [`crate::virtio::worker`]); every guest mistake ends as a status byte, a counter and a
//! rate-limited log line, never a panic.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, Limits, Parsed};
use super::{BlockCounters, Executor, MAX_RANGE_SEGMENTS};
use crate::dma::DmaGuard;
use crate::legacy::RateLimitedLog;
use crate::virtio::worker::QueueHandler;
use crate::virtio::{
    indirect_table_allowed, rings_allowed, Activation, GuestMemory, VirtioInterrupt,
};

struct WorkerQueue {
    index: u16,
    queue: Queue,
    /// Set once the guest broke the queue; it is left alone until the device is reset.
    broken: bool,
}

/// Owns everything an active block device works with.
pub struct BlockWorker {
    mem: GuestMemory,
    dma: DmaGuard,
    queues: Vec<WorkerQueue>,
    executor: Executor,
    interrupt: Arc<dyn VirtioInterrupt>,
    counters: Arc<BlockCounters>,
    log: RateLimitedLog,
}

impl BlockWorker {
    /// Builds the worker; returns it with the queues' notification eventfds, in the order
    /// [`QueueHandler::process`] numbers them.
    pub fn new(
        activation: Activation,
        executor: Executor,
        counters: Arc<BlockCounters>,
    ) -> (Self, Vec<EventFd>) {
        let mut kicks = Vec::with_capacity(activation.queues.len());
        let mut queues = Vec::with_capacity(activation.queues.len());
        for q in activation.queues {
            kicks.push(q.kick);
            queues.push(WorkerQueue {
                index: q.index,
                queue: q.queue,
                broken: false,
            });
        }
        (
            Self {
                mem: activation.mem,
                dma: activation.dma,
                queues,
                executor,
                interrupt: activation.interrupt,
                counters,
                log: RateLimitedLog::default(),
            },
            kicks,
        )
    }

    pub fn into_executor(self) -> Executor {
        self.executor
    }

    /// Handles at most one queue's worth of chains from queue `slot`; returns true if more
    /// are waiting.
    fn drain(&mut self, slot: usize) -> bool {
        let limits = Limits {
            capacity: self.executor.capacity(),
            max_descriptors: 0,
            max_range_segments: MAX_RANGE_SEGMENTS as usize,
        };
        let Some(wq) = self.queues.get_mut(slot) else {
            return false;
        };
        if wq.broken {
            return false;
        }
        // A confidential guest may have made a ring private since activation.
        if !rings_allowed(&self.dma, &wq.queue) {
            let why = "its rings are no longer in shared memory";
            break_queue(wq, &self.interrupt, &self.counters, &mut self.log, &why);
            return false;
        }
        let limits = Limits {
            // Header and status around at most a queue's worth of data descriptors.
            max_descriptors: usize::from(wq.queue.size()) + 2,
            ..limits
        };
        let mut budget = wq.queue.size();
        let mut completed = 0u32;
        let mut more = false;
        loop {
            if budget == 0 {
                more = true;
                break;
            }
            let chain = match wq.queue.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    break_queue(wq, &self.interrupt, &self.counters, &mut self.log, &e);
                    return false;
                }
            };
            let Some(chain) = chain else {
                // Re-enable notifications; if the guest added chains meanwhile, go on.
                match wq.queue.enable_notification(&self.mem) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        break_queue(wq, &self.interrupt, &self.counters, &mut self.log, &e);
                        return false;
                    }
                }
            };
            budget -= 1;
            let head = chain.head_index();
            if !indirect_table_allowed(&self.dma, &self.mem, &wq.queue, head) {
                // The table cannot be read, so neither can the status address: the chain
                // goes back unanswered, like one whose status byte is unusable.
                BlockCounters::add(&self.counters.guest_errors, 1);
                self.log.warn(format_args!(
                    "virtio-blk: indirect table of chain {head} is in private memory"
                ));
                if let Err(e) = wq.queue.add_used(&self.mem, head, 0) {
                    break_queue(wq, &self.interrupt, &self.counters, &mut self.log, &e);
                    return false;
                }
                completed += 1;
                continue;
            }
            let used = handle_chain(
                &self.mem,
                chain,
                &limits,
                &self.dma,
                &mut self.executor,
                &self.counters,
                &mut self.log,
            );
            if let Err(e) = wq.queue.add_used(&self.mem, head, used) {
                break_queue(wq, &self.interrupt, &self.counters, &mut self.log, &e);
                return false;
            }
            completed += 1;
        }
        if completed > 0 {
            match wq.queue.needs_notification(&self.mem) {
                Ok(false) => {}
                // If the ring cannot be read, interrupt anyway: a spurious interrupt is
                // harmless, a lost one stalls the guest.
                Ok(true) | Err(_) => self.interrupt.notify_queue(wq.index),
            }
        }
        more
    }
}

fn break_queue(
    wq: &mut WorkerQueue,
    interrupt: &Arc<dyn VirtioInterrupt>,
    counters: &BlockCounters,
    log: &mut RateLimitedLog,
    error: &dyn std::fmt::Display,
) {
    wq.broken = true;
    BlockCounters::add(&counters.queue_errors, 1);
    log.warn(format_args!(
        "virtio-blk queue {}: {error}; device needs reset",
        wq.index
    ));
    interrupt.needs_reset();
}

/// Parses and executes one chain, writes its status; returns the used length.
fn handle_chain(
    mem: &GuestMemory,
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    limits: &Limits,
    dma: &DmaGuard,
    executor: &mut Executor,
    counters: &BlockCounters,
    log: &mut RateLimitedLog,
) -> u32 {
    use vm_memory::Bytes;
    BlockCounters::add(&counters.requests, 1);
    let (status, at, data_written) = match request::parse_guarded(mem, chain, limits, dma) {
        Parsed::Ok(req) => match executor.execute(mem, &req, counters) {
            Ok(n) => (request::S_OK, req.status, n),
            Err(e) => {
                match e {
                    super::ExecError::Host(_) => BlockCounters::add(&counters.host_errors, 1),
                    _ => BlockCounters::add(&counters.guest_errors, 1),
                }
                log.warn(format_args!(
                    "virtio-blk request {:?} failed: {e}",
                    req.kind
                ));
                (e.status(), req.status, 0)
            }
        },
        Parsed::Failed { error, at, status } => {
            BlockCounters::add(&counters.guest_errors, 1);
            log.warn(format_args!("virtio-blk: bad request: {error}"));
            (status, at, 0)
        }
        Parsed::Unanswerable(error) => {
            BlockCounters::add(&counters.guest_errors, 1);
            log.warn(format_args!("virtio-blk: unanswerable chain: {error}"));
            return 0;
        }
    };
    match mem.write_obj(status, at) {
        Ok(()) => data_written.saturating_add(1),
        Err(e) => {
            log.warn(format_args!("virtio-blk: cannot write status: {e}"));
            0
        }
    }
}

impl QueueHandler for BlockWorker {
    fn process(&mut self, queue: usize) -> bool {
        self.drain(queue)
    }
}
