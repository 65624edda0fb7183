//! A confidential guest's block requests that point into pages it made private: the device
//! refuses them (IOERR, or no answer when even the status byte is private) and touches
//! neither the disk nor the private page; rings made private break the queue.

use crate::dma::{DmaGuard, SharedPages};

use super::*;

const PAGE: u64 = 0x1000;

/// A harness whose worker only sees the pages `pages` marks shared (all of them to start).
fn guarded() -> (Harness, Arc<SharedPages>) {
    let driver = Driver::new(QUEUE_SIZE);
    let disk = Arc::new(Mutex::new(MemDisk::new(64 * 1024)));
    let executor = Executor::new(Box::new(SharedDisk(disk.clone())), false, "disk0");
    let irq = Arc::new(Irq::default());
    let counters = Arc::new(BlockCounters::default());
    let pages = Arc::new(SharedPages::new(&[(0, MEM_SIZE as u64)], true));
    let activation = Activation {
        mem: driver.mem.clone(),
        queues: vec![ActiveQueue {
            index: 0,
            queue: driver.queue(),
            kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }],
        interrupt: irq.clone(),
        features: F_VERSION_1,
        dma: DmaGuard::shared_only(pages.clone()),
    };
    let (worker, _kicks) = BlockWorker::new(activation, executor, counters.clone());
    let h = Harness {
        driver,
        worker,
        disk,
        irq,
        counters,
    };
    (h, pages)
}

#[test]
fn a_data_buffer_in_a_private_page_gets_ioerr_and_the_disk_is_untouched() {
    let (mut h, pages) = guarded();
    h.driver
        .mem
        .write_slice(&pattern(1024, 3), GuestAddress(0x10000))
        .unwrap();
    pages.set(0x10000 + PAGE, PAGE, false).unwrap(); // the second half of the buffer
    h.driver.header(0x8000, T_OUT, 0);
    h.driver.add(&[
        (0x8000, 16, false),
        (0x10000, 512, false),
        (0x10000 + PAGE, 512, false),
        (0x9000, 1, true),
    ]);
    // A read whose destination is private must not write there either.
    h.driver
        .mem
        .write_slice(&[0x5a; 512], GuestAddress(0x10000 + PAGE))
        .unwrap();
    h.driver.header(0x8100, T_IN, 0);
    h.driver.add(&[
        (0x8100, 16, false),
        (0x10000 + PAGE, 512, true),
        (0x9001, 1, true),
    ]);
    // A request wholly in shared pages still works: the queue is not broken.
    h.driver.header(0x8200, T_FLUSH, 0);
    h.driver.add(&[(0x8200, 16, false), (0x9002, 1, true)]);
    assert!(!h.worker.process(0));
    assert_eq!(h.driver.used_idx(), 3);
    assert_eq!(h.driver.byte(0x9000), S_IOERR);
    assert_eq!(h.driver.byte(0x9001), S_IOERR);
    assert_eq!(h.driver.byte(0x9002), S_OK);
    assert_eq!(h.driver.used(0).1, 1, "only the status byte was written");
    let disk = h.disk.lock().unwrap();
    assert!(
        disk.data.iter().all(|b| *b == 0),
        "nothing reached the disk"
    );
    assert_eq!(disk.flushes, 1);
    let mut back = [0u8; 512];
    h.driver
        .mem
        .read_slice(&mut back, GuestAddress(0x10000 + PAGE))
        .unwrap();
    assert_eq!(back, [0x5a; 512], "the private page was not written");
    assert_eq!(h.counters.guest_errors.load(Ordering::Relaxed), 2);
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 0);
}

#[test]
fn a_private_header_or_status_byte_or_indirect_table_is_refused() {
    let (mut h, pages) = guarded();
    pages.set(0x20000, PAGE, false).unwrap();
    // Header in the private page: IOERR at the (shared) status byte.
    h.driver.header(0x20000, T_OUT, 0);
    h.driver.add(&[
        (0x20000, 16, false),
        (0x10000, 512, false),
        (0x9000, 1, true),
    ]);
    // Status byte in the private page: nothing can be answered.
    h.driver.header(0x8000, T_FLUSH, 0);
    h.driver.add(&[(0x8000, 16, false), (0x20010, 1, true)]);
    // An indirect table in the private page.
    h.driver.write_desc(10, 0x20100, 48, F_INDIRECT, 0);
    h.driver.publish(10);
    assert!(!h.worker.process(0));
    assert_eq!(h.driver.used_idx(), 3);
    assert_eq!(h.driver.byte(0x9000), S_IOERR);
    assert_eq!(h.driver.used(1), (3, 0));
    assert_eq!(h.driver.used(2), (10, 0));
    let disk = h.disk.lock().unwrap();
    assert!(disk.data.iter().all(|b| *b == 0));
    assert_eq!(disk.flushes, 0);
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 0);
}

#[test]
fn a_ring_made_private_breaks_the_queue_until_reset() {
    let (mut h, pages) = guarded();
    h.driver.header(0x8000, T_FLUSH, 0);
    h.driver.add(&[(0x8000, 16, false), (0x9000, 1, true)]);
    pages.set(AVAIL, PAGE, false).unwrap();
    assert!(!h.worker.process(0));
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 1);
    assert_eq!(h.counters.queue_errors.load(Ordering::Relaxed), 1);
    assert_eq!(h.driver.used_idx(), 0, "nothing was taken from the ring");
    assert_eq!(h.disk.lock().unwrap().flushes, 0);
    // Sharing it again does not revive a broken queue; only a device reset does.
    pages.set(AVAIL, PAGE, true).unwrap();
    assert!(!h.worker.process(0));
    assert_eq!(h.driver.used_idx(), 0);
    assert_eq!(h.irq.needs_reset.load(Ordering::SeqCst), 1);
}
