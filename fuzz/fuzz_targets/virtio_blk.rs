//! virtio-blk request handling over arbitrary guest memory: the input is the guest's RAM
//! (descriptor table, available ring, headers, buffers, all of it), and the worker pops and
//! executes whatever chains it finds against an in-memory disk. It must never panic, never
//! loop forever, and keep every access inside guest RAM (vm-memory checks each one).
#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use devices::virtio::block::backend::MemDisk;
use devices::virtio::block::{BlockCounters, BlockWorker, Executor};
use devices::virtio::worker::QueueHandler;
use devices::virtio::{Activation, ActiveQueue, VirtioInterrupt, F_VERSION_1};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const RAM: usize = 64 * 1024;
const QUEUE_SIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

#[derive(Default)]
struct Irq(AtomicU32);

impl VirtioInterrupt for Irq {
    fn notify_queue(&self, _queue: u16) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn notify_config(&self) {}
    fn needs_reset(&self) {}
}

fuzz_target!(|data: &[u8]| {
    // First byte: flags (read-only disk, event index); the rest is guest RAM.
    let Some((&flags, ram)) = data.split_first() else {
        return;
    };
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]) else {
        return;
    };
    let n = ram.len().min(RAM);
    if mem.write_slice(&ram[..n], GuestAddress(0)).is_err() {
        return;
    }
    let Ok(mut queue) = Queue::new(QUEUE_SIZE) else {
        return;
    };
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_event_idx(flags & 2 != 0);
    queue.set_ready(true);
    let Ok(kick) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    let activation = Activation {
        mem,
        queues: vec![ActiveQueue {
            index: 0,
            queue,
            kick,
        }],
        interrupt: Arc::new(Irq::default()),
        features: F_VERSION_1,
        dma: Default::default(),
    };
    let executor = Executor::new(Box::new(MemDisk::new(64 * 512)), flags & 1 != 0, "fuzz");
    let (mut worker, _kicks) =
        BlockWorker::new(activation, executor, Arc::new(BlockCounters::default()));
    // A few rounds, as repeated notifications would cause; each is bounded by the queue size.
    for _ in 0..4 {
        if !worker.process(0) {
            break;
        }
    }
});
