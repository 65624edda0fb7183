//! Unit tests of the block device over fake guest memory and an in-memory disk: the guest's
//! side is played by [`Driver`], which writes descriptors and the available ring by hand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{DiskBackend, MemDisk};
use super::request::*;
use super::*;
use crate::virtio::worker::QueueHandler;
use crate::virtio::{ActiveQueue, GuestMemory, VirtioInterrupt};

const MEM_SIZE: usize = 1 << 20;
const QUEUE_SIZE: u16 = 64;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

#[derive(Default)]
struct Irq {
    queue: AtomicU32,
    needs_reset: AtomicU32,
}

impl VirtioInterrupt for Irq {
    fn notify_queue(&self, _queue: u16) {
        self.queue.fetch_add(1, Ordering::SeqCst);
    }
    fn notify_config(&self) {}
    fn needs_reset(&self) {
        self.needs_reset.fetch_add(1, Ordering::SeqCst);
    }
}

/// A disk whose bytes stay visible to the test after the device took the backend.
#[derive(Clone)]
struct SharedDisk(Arc<Mutex<MemDisk>>);

impl DiskBackend for SharedDisk {
    fn size(&self) -> u64 {
        self.0.lock().unwrap().size()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().write_at(buf, offset)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
    fn supports_discard(&self) -> bool {
        true
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> std::io::Result<()> {
        self.0.lock().unwrap().write_zeroes(offset, len, unmap)
    }
}

/// The guest's half of one split queue.
struct Driver {
    mem: GuestMemory,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl Driver {
    fn new(size: u16) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        Self {
            mem,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(&self.mem));
        q
    }

    fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + u64::from(index) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Publishes `head` in the available ring.
    fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + slot * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Adds a chain of (addr, len, device-writable) buffers; returns its head.
    fn add(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(index, addr, len, flags, (index + 1) % self.size);
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn used(&self, n: u16) -> (u32, u32) {
        let at = USED + 4 + u64::from(n % self.size) * 8;
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn byte(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }
}

struct Harness {
    driver: Driver,
    worker: BlockWorker,
    disk: Arc<Mutex<MemDisk>>,
    irq: Arc<Irq>,
    counters: Arc<BlockCounters>,
}

fn harness(disk_bytes: usize, readonly: bool) -> Harness {
    let driver = Driver::new(QUEUE_SIZE);
    let disk = Arc::new(Mutex::new(MemDisk::new(disk_bytes)));
    let executor = Executor::new(Box::new(SharedDisk(disk.clone())), readonly, "disk0");
    let irq = Arc::new(Irq::default());
    let counters = Arc::new(BlockCounters::default());
    let activation = Activation {
        mem: driver.mem.clone(),
        queues: vec![ActiveQueue {
            index: 0,
            queue: driver.queue(),
            kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }],
        interrupt: irq.clone(),
        features: F_VERSION_1,
        dma: Default::default(),
    };
    let (worker, _kicks) = BlockWorker::new(activation, executor, counters.clone());
    Harness {
        driver,
        worker,
        disk,
        irq,
        counters,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_read_flush_and_get_id_round_trip() {
    let mut h = harness(64 * 1024, false);
    let data = pattern(1024, 7);
    h.driver
        .mem
        .write_slice(&data, GuestAddress(0x10000))
        .unwrap();
    h.driver.header(0x8000, T_OUT, 3);
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 1024, false),
        (0x9000, 1, true),
    ]);
    h.driver.header(0x8100, T_FLUSH, 0);
    h.driver.add(&[(0x8100, 16, false), (0x9001, 1, true)]);
    h.driver.header(0x8200, T_IN, 3);
    // Read into two buffers; the second one also carries the status byte.
    h.driver.add(&[
        (0x8200, 16, false),
        (0x20000, 512, true),
        (0x20200, 513, true),
    ]);
    h.driver.header(0x8300, T_GET_ID, 0);
    h.driver
        .add(&[(0x8300, 16, false), (0x30000, 20, true), (0x9003, 1, true)]);
    assert!(!h.worker.process(0));
    assert_eq!(h.driver.used_idx(), 4);
    assert_eq!(h.driver.used(0), (0, 1));
    assert_eq!(h.driver.used(1), (3, 1));
    assert_eq!(h.driver.used(2), (5, 1025));
    assert_eq!(h.driver.used(3), (8, 21));
    for at in [0x9000, 0x9001, 0x20400, 0x9003] {
        assert_eq!(h.driver.byte(at), S_OK, "status at {at:#x}");
    }
    let disk = h.disk.lock().unwrap();
    assert_eq!(&disk.data[3 * 512..3 * 512 + 1024], &data[..]);
    assert_eq!(disk.flushes, 1);
    let mut back = vec![0u8; 1024];
    h.driver
        .mem
        .read_slice(&mut back, GuestAddress(0x20000))
        .unwrap();
    assert_eq!(back, data);
    let mut id = [0u8; 20];
    h.driver
        .mem
        .read_slice(&mut id, GuestAddress(0x30000))
        .unwrap();
    assert_eq!(&id[..6], b"disk0\0");
    assert!(h.irq.queue.load(Ordering::SeqCst) >= 1);
    assert_eq!(BlockCounters::get(&h.counters.bytes_written), 1024);
    assert_eq!(BlockCounters::get(&h.counters.bytes_read), 1024);
}

#[test]
fn header_may_span_descriptors_and_share_one_with_data() {
    let mut h = harness(8192, false);
    h.driver
        .mem
        .write_slice(&[0x5a; 512], GuestAddress(0x10010))
        .unwrap();
    h.driver.header(0x10000, T_OUT, 1);
    // Header split 10 + 6 bytes; the second buffer continues with the data.
    h.driver
        .mem
        .write_slice(&[0u8; 10], GuestAddress(0x11000))
        .unwrap();
    let mut hdr = [0u8; 16];
    h.driver
        .mem
        .read_slice(&mut hdr, GuestAddress(0x10000))
        .unwrap();
    h.driver
        .mem
        .write_slice(&hdr[..10], GuestAddress(0x11000))
        .unwrap();
    h.driver
        .mem
        .write_slice(&hdr[10..], GuestAddress(0x1000a))
        .unwrap();
    h.driver.add(&[
        (0x11000, 10, false),
        (0x1000a, 6 + 512, false),
        (0x9000, 1, true),
    ]);
    h.worker.process(0);
    assert_eq!(h.driver.byte(0x9000), S_OK);
    assert_eq!(&h.disk.lock().unwrap().data[512..1024], &[0x5a; 512][..]);
}

#[test]
fn read_only_disk_refuses_writes_and_keeps_its_bytes() {
    let mut h = harness(8192, true);
    h.disk.lock().unwrap().data.fill(0x11);
    h.driver.header(0x8000, T_OUT, 0);
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, false),
        (0x9000, 1, true),
    ]);
    h.driver.header(0x8100, T_WRITE_ZEROES, 0);
    h.driver.mem.write_obj(0u64, GuestAddress(0x11000)).unwrap();
    h.driver.mem.write_obj(1u32, GuestAddress(0x11008)).unwrap();
    h.driver
        .add(&[(0x8100, 16, false), (0x11000, 16, false), (0x9001, 1, true)]);
    h.driver.header(0x8200, T_FLUSH, 0);
    h.driver.add(&[(0x8200, 16, false), (0x9002, 1, true)]);
    h.worker.process(0);
    assert_eq!(h.driver.byte(0x9000), S_IOERR);
    assert_eq!(h.driver.byte(0x9001), S_IOERR);
    assert_eq!(h.driver.byte(0x9002), S_OK);
    assert!(h.disk.lock().unwrap().data.iter().all(|&b| b == 0x11));
    assert_eq!(BlockCounters::get(&h.counters.guest_errors), 2);
}

#[test]
fn out_of_range_and_unaligned_requests_get_ioerr() {
    let mut h = harness(8192, false);
    let cases = [
        (T_IN, 16u64, 512u32),  // one past the last sector
        (T_IN, 15, 1024),       // crosses the end
        (T_OUT, u64::MAX, 512), // sector arithmetic overflows
        (T_IN, 0, 100),         // not a whole sector
    ];
    for (i, &(kind, sector, len)) in cases.iter().enumerate() {
        let hdr = 0x8000 + i as u64 * 0x100;
        h.driver.header(hdr, kind, sector);
        h.driver.add(&[
            (hdr, 16, false),
            (0x10000, len, kind == T_IN),
            (0x9000 + i as u64, 1, true),
        ]);
    }
    h.driver.header(0x8f00, 99, 0);
    h.driver.add(&[(0x8f00, 16, false), (0x9f00, 1, true)]);
    h.worker.process(0);
    for i in 0..cases.len() as u64 {
        assert_eq!(h.driver.byte(0x9000 + i), S_IOERR, "case {i}");
    }
    assert_eq!(h.driver.byte(0x9f00), S_UNSUPP);
    assert_eq!(h.driver.used_idx(), 5);
}

#[test]
fn chains_without_a_usable_status_are_returned_unanswered() {
    let mut h = harness(8192, false);
    h.driver
        .mem
        .write_obj(0xeeu8, GuestAddress(0x9000))
        .unwrap();
    h.driver.header(0x8000, T_IN, 0);
    // Status descriptor read-only.
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, true),
        (0x9000, 1, false),
    ]);
    // Status descriptor of length zero.
    h.driver
        .add(&[(0x8000, 16, false), (0x10000, 512, true), (0x9000, 0, true)]);
    // Status byte outside guest RAM.
    h.driver
        .add(&[(0x8000, 16, false), (MEM_SIZE as u64, 1, true)]);
    // Header writable / too short.
    h.driver.add(&[(0x8000, 16, true), (0x9001, 1, true)]);
    h.driver.add(&[(0x8000, 8, false), (0x9002, 1, true)]);
    // Data outside RAM, and data whose length overflows the address space.
    h.driver.add(&[
        (0x8000, 16, false),
        (MEM_SIZE as u64 - 256, 512, true),
        (0x9003, 1, true),
    ]);
    h.driver.add(&[
        (0x8000, 16, false),
        (u64::MAX - 100, 512, true),
        (0x9004, 1, true),
    ]);
    h.worker.process(0);
    assert_eq!(h.driver.used_idx(), 7);
    for n in 0..3 {
        assert_eq!(h.driver.used(n).1, 0, "chain {n} has no status");
    }
    assert_eq!(h.driver.byte(0x9000), 0xee, "read-only status untouched");
    for at in 0x9001..=0x9004 {
        assert_eq!(h.driver.byte(at), S_IOERR, "status at {at:#x}");
    }
    assert_eq!(BlockCounters::get(&h.counters.guest_errors), 7);
}

#[test]
fn descriptor_loops_and_indirect_abuse_terminate() {
    let mut h = harness(8192, false);
    // A descriptor pointing at itself.
    h.driver.header(0x8000, T_IN, 0);
    h.driver.write_desc(0, 0x8000, 16, F_NEXT, 0);
    h.driver.publish(0);
    // A two-descriptor cycle.
    h.driver.write_desc(1, 0x8000, 16, F_NEXT, 2);
    h.driver.write_desc(2, 0x10000, 512, F_NEXT | F_WRITE, 1);
    h.driver.publish(1);
    // An indirect table that points into itself and outside RAM.
    h.driver.write_desc(3, 0x40000, 64, F_INDIRECT, 0);
    for i in 0..4u64 {
        let at = GuestAddress(0x40000 + i * 16);
        h.driver.mem.write_obj(0x40000u64, at).unwrap();
        h.driver
            .mem
            .write_obj(64u32, GuestAddress(at.0 + 8))
            .unwrap();
        h.driver
            .mem
            .write_obj(F_NEXT, GuestAddress(at.0 + 12))
            .unwrap();
        h.driver
            .mem
            .write_obj(((i + 1) % 4) as u16, GuestAddress(at.0 + 14))
            .unwrap();
    }
    h.driver.publish(3);
    // An indirect descriptor whose table is outside RAM.
    h.driver.write_desc(4, u64::MAX - 15, 16, F_INDIRECT, 0);
    h.driver.publish(4);
    h.worker.process(0);
    assert_eq!(h.driver.used_idx(), 4);
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 0);
    // A head index beyond the queue cannot be returned: the device needs a reset.
    h.driver.publish(200);
    h.worker.process(0);
    assert_eq!(h.driver.used_idx(), 4);
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_through_an_indirect_table_work() {
    let mut h = harness(8192, false);
    h.driver
        .mem
        .write_slice(&[0x3c; 1024], GuestAddress(0x10000))
        .unwrap();
    h.driver.header(0x8000, T_OUT, 4);
    // Indirect table at 0x40000: header, data, status, linked by NEXT.
    let entries: [(u64, u32, u16); 3] = [
        (0x8000, 16, F_NEXT),
        (0x10000, 1024, F_NEXT),
        (0x9000, 1, F_WRITE),
    ];
    for (i, (addr, len, flags)) in entries.iter().enumerate() {
        let at = 0x40000 + i as u64 * 16;
        h.driver.mem.write_obj(*addr, GuestAddress(at)).unwrap();
        h.driver.mem.write_obj(*len, GuestAddress(at + 8)).unwrap();
        h.driver
            .mem
            .write_obj(*flags, GuestAddress(at + 12))
            .unwrap();
        h.driver
            .mem
            .write_obj(i as u16 + 1, GuestAddress(at + 14))
            .unwrap();
    }
    h.driver.write_desc(0, 0x40000, 48, F_INDIRECT, 0);
    h.driver.publish(0);
    h.worker.process(0);
    assert_eq!(h.driver.used_idx(), 1);
    assert_eq!(h.driver.used(0), (0, 1));
    assert_eq!(h.driver.byte(0x9000), S_OK);
    assert_eq!(&h.disk.lock().unwrap().data[2048..3072], &[0x3c; 1024][..]);
}

#[test]
fn a_broken_available_index_needs_a_reset_and_stops_the_queue() {
    let mut h = harness(8192, false);
    h.driver
        .mem
        .write_obj(1000u16, GuestAddress(AVAIL + 2))
        .unwrap();
    assert!(!h.worker.process(0));
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 1);
    assert_eq!(BlockCounters::get(&h.counters.queue_errors), 1);
    // The queue stays quiet until reset.
    assert!(!h.worker.process(0));
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 1);
}

#[test]
fn host_errors_fail_only_their_request() {
    let mut h = harness(8192, false);
    h.disk.lock().unwrap().fail_with = Some(libc::ENOSPC);
    h.driver.header(0x8000, T_OUT, 0);
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, false),
        (0x9000, 1, true),
    ]);
    h.worker.process(0);
    assert_eq!(h.driver.byte(0x9000), S_IOERR);
    assert_eq!(BlockCounters::get(&h.counters.host_errors), 1);
    h.disk.lock().unwrap().fail_with = None;
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, false),
        (0x9001, 1, true),
    ]);
    h.worker.process(0);
    assert_eq!(h.driver.byte(0x9001), S_OK);
}

#[test]
fn discard_and_write_zeroes_clear_ranges() {
    let mut h = harness(8192, false);
    h.disk.lock().unwrap().data.fill(0xff);
    let seg = |at: u64, sector: u64, n: u32, flags: u32| {
        h.driver.mem.write_obj(sector, GuestAddress(at)).unwrap();
        h.driver.mem.write_obj(n, GuestAddress(at + 8)).unwrap();
        h.driver
            .mem
            .write_obj(flags, GuestAddress(at + 12))
            .unwrap();
    };
    seg(0x11000, 1, 1, 0);
    seg(0x11010, 4, 2, 0);
    seg(0x12000, 8, 1, WRITE_ZEROES_FLAG_UNMAP);
    seg(0x13000, 9, 1, 1); // DISCARD with the reserved unmap flag
    seg(0x14000, 15, 2, 0); // past the end
    h.driver.header(0x8000, T_DISCARD, 0);
    h.driver
        .add(&[(0x8000, 16, false), (0x11000, 32, false), (0x9000, 1, true)]);
    h.driver.header(0x8100, T_WRITE_ZEROES, 0);
    h.driver
        .add(&[(0x8100, 16, false), (0x12000, 16, false), (0x9001, 1, true)]);
    h.driver
        .add(&[(0x8000, 16, false), (0x13000, 16, false), (0x9002, 1, true)]);
    h.driver
        .add(&[(0x8000, 16, false), (0x14000, 16, false), (0x9003, 1, true)]);
    h.driver
        .add(&[(0x8000, 16, false), (0x14000, 8, false), (0x9004, 1, true)]);
    h.worker.process(0);
    assert_eq!(h.driver.byte(0x9000), S_OK);
    assert_eq!(h.driver.byte(0x9001), S_OK);
    assert_eq!(h.driver.byte(0x9002), S_UNSUPP);
    assert_eq!(h.driver.byte(0x9003), S_IOERR);
    assert_eq!(h.driver.byte(0x9004), S_IOERR);
    let disk = h.disk.lock().unwrap();
    let zero = |s: usize| disk.data[s * 512..(s + 1) * 512].iter().all(|&b| b == 0);
    assert!(zero(1) && zero(4) && zero(5) && zero(8));
    assert!(!zero(0) && !zero(2) && !zero(6) && !zero(9));
}

#[test]
fn work_per_notification_is_bounded_by_the_queue_size() {
    let mut h = harness(8192, false);
    h.driver.header(0x8000, T_FLUSH, 0);
    h.driver.write_desc(0, 0x8000, 16, F_NEXT, 1);
    h.driver.write_desc(1, 0x9000, 1, F_WRITE, 0);
    for _ in 0..QUEUE_SIZE {
        h.driver.publish(0);
    }
    assert!(h.worker.process(0), "a full queue reports leftover work");
    assert_eq!(h.driver.used_idx(), QUEUE_SIZE);
    assert!(!h.worker.process(0));
}

#[test]
fn random_descriptor_tables_never_panic() {
    let mut h = harness(8192, false);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        for i in 0..16u16 {
            let r = rnd();
            let addr = match r % 4 {
                0 => r >> 8,
                1 => 0x8000 + (r >> 40) % 0x10000,
                2 => MEM_SIZE as u64 - (r >> 60),
                _ => 0x8000,
            };
            let len = match (r >> 20) % 4 {
                0 => 16,
                1 => 1,
                2 => (r >> 24) as u32,
                _ => 512,
            };
            h.driver
                .write_desc(i, addr, len, (r >> 32) as u16 & 7, (r >> 48) as u16 % 20);
        }
        h.driver.header(0x8000, (rnd() % 16) as u32, rnd() % 20);
        for _ in 0..(rnd() % 16) {
            h.driver.publish((rnd() % 16) as u16);
        }
        h.worker.process(0);
        assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 0, "round {round}");
    }
}

#[test]
fn device_advertises_capacity_features_and_queues() {
    let opts = BlockOptions {
        id: "vda".into(),
        readonly: true,
        num_queues: 2,
        queue_size: 256,
    };
    let dev = Block::new(opts.clone(), Box::new(MemDisk::new(10 * 512 + 100))).unwrap();
    assert_eq!(dev.capacity(), 10);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    let f = dev.features();
    assert_ne!(f & F_RO, 0);
    assert_ne!(f & F_MQ, 0);
    assert_ne!(f & F_FLUSH, 0);
    assert_ne!(f & F_VERSION_1, 0);
    assert_ne!(f & crate::virtio::F_RING_INDIRECT_DESC, 0);
    assert_eq!(f & F_DISCARD, 0, "no discard on a read-only disk");
    let mut nq = [0u8; 2];
    dev.read_config(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 2);
    let mut past = [0xffu8; 8];
    dev.read_config(58, &mut past);
    assert_eq!(past, [0; 8]);
    for bad in [0u16, 3, 2048] {
        let o = BlockOptions {
            queue_size: bad,
            ..opts.clone()
        };
        assert_eq!(
            Block::new(o, Box::new(MemDisk::new(512))).err(),
            Some(BlockError::QueueSize(bad))
        );
    }
    let o = BlockOptions {
        num_queues: 0,
        ..opts
    };
    assert!(Block::new(o, Box::new(MemDisk::new(512))).is_err());
}

#[test]
fn activate_runs_a_named_worker_and_reset_returns_the_backend() {
    let mut driver = Driver::new(16);
    let mem = driver.mem.clone();
    let disk = Arc::new(Mutex::new(MemDisk::new(8192)));
    let opts = BlockOptions {
        id: "t0".into(),
        readonly: false,
        num_queues: 1,
        queue_size: 16,
    };
    let mut dev = Block::new(opts, Box::new(SharedDisk(disk.clone()))).unwrap();
    let irq = Arc::new(Irq::default());
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let activation = |q: Queue, kick: EventFd| Activation {
        mem: mem.clone(),
        queues: vec![ActiveQueue {
            index: 0,
            queue: q,
            kick,
        }],
        interrupt: irq.clone(),
        features: F_VERSION_1,
        dma: Default::default(),
    };
    dev.activate(activation(driver.queue(), kick.try_clone().unwrap()))
        .unwrap();
    assert!(matches!(
        dev.activate(activation(driver.queue(), kick.try_clone().unwrap())),
        Err(ActivateError::AlreadyActive)
    ));
    driver
        .mem
        .write_slice(&[0x42; 512], GuestAddress(0x10000))
        .unwrap();
    driver.header(0x8000, T_OUT, 2);
    driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, false),
        (0x9000, 1, true),
    ]);
    kick.write(1).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while driver.used_idx() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "worker never completed"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(driver.byte(0x9000), S_OK);
    assert_eq!(&disk.lock().unwrap().data[1024..1536], &[0x42; 512][..]);
    dev.reset();
    // The backend came back: the device activates again.
    dev.activate(activation(driver.queue(), kick.try_clone().unwrap()))
        .unwrap();
    dev.reset();
}

mod private_memory;
