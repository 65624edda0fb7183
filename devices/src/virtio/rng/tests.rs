//! The device filling guest buffers from a host source, through a fake split queue.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::virtio::test_driver::{mem, Driver};
use crate::virtio::ActiveQueue;

#[derive(Default)]
struct Irq {
    queue: AtomicU32,
    resets: AtomicU32,
}

impl VirtioInterrupt for Irq {
    fn notify_queue(&self, _queue: u16) {
        self.queue.fetch_add(1, Ordering::SeqCst);
    }
    fn notify_config(&self) {}
    fn needs_reset(&self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

/// A source file holding `bytes`, opened for reading.
fn source(bytes: &[u8]) -> File {
    let path = std::env::temp_dir().join(format!(
        "podvisor-rng-{}-{}",
        std::process::id(),
        bytes.len()
    ));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    let file = File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

fn worker(driver: &Driver, mem: &GuestMemory, src: File, irq: Arc<Irq>) -> RngWorker {
    RngWorker {
        mem: mem.clone(),
        dma: DmaGuard::unrestricted(),
        queue: driver.queue(mem),
        broken: false,
        source: src,
        interrupt: irq,
        log: RateLimitedLog::default(),
    }
}

#[test]
fn buffers_are_filled_from_the_source_and_readable_ones_skipped() {
    let mem = mem();
    let mut driver = Driver::new(0x1_0000);
    let pattern: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let irq = Arc::new(Irq::default());
    let mut w = worker(&driver, &mem, source(&pattern), irq.clone());
    // One chain: 1000 writable bytes, a readable buffer (skipped), 500 writable bytes.
    driver.add(
        &mem,
        &[
            (0x4_0000, 1000, true),
            (0x5_0000, 64, false),
            (0x6_0000, 500, true),
        ],
    );
    assert!(!w.drain());
    assert_eq!(driver.used_idx(&mem), 1);
    assert_eq!(driver.used(&mem, 0), (0, 1500));
    let mut got = vec![0u8; 1000];
    mem.read_slice(&mut got, GuestAddress(0x4_0000)).unwrap();
    assert_eq!(got, pattern[..1000]);
    let mut got = vec![0u8; 500];
    mem.read_slice(&mut got, GuestAddress(0x6_0000)).unwrap();
    assert_eq!(got, pattern[1000..1500]);
    assert_eq!(irq.queue.load(Ordering::SeqCst), 1);
}

#[test]
fn a_huge_buffer_gets_at_most_the_cap_and_an_ended_source_fills_what_it_has() {
    let mem = mem();
    let mut driver = Driver::new(0x1_0000);
    let irq = Arc::new(Irq::default());
    let urandom = File::open("/dev/urandom").unwrap();
    let mut w = worker(&driver, &mem, urandom, irq.clone());
    driver.add(
        &mem,
        &[(0x2_0000, 0x8_0000, true), (0x2_0000, 0x8_0000, true)],
    );
    w.drain();
    assert_eq!(driver.used(&mem, 0).1, MAX_BYTES_PER_CHAIN as u32);

    let mut driver = Driver::new(0x1_0000);
    let mut w = worker(&driver, &mem, source(&[7u8; 100]), irq);
    driver.add(&mem, &[(0x4_0000, 4096, true)]);
    w.drain();
    assert_eq!(driver.used(&mem, 0).1, 100, "only what the source had");
}

#[test]
fn a_buffer_outside_ram_or_a_broken_ring_never_panics() {
    let mem = mem();
    let mut driver = Driver::new(0x1_0000);
    let irq = Arc::new(Irq::default());
    let mut w = worker(&driver, &mem, source(&[1u8; 64]), irq.clone());
    driver.add(&mem, &[(u64::MAX - 10, 64, true)]);
    w.drain();
    assert_eq!(driver.used(&mem, 0).1, 0);
    // An available index far ahead of the ring: the queue is broken, the device asks for reset.
    mem.write_obj(0x8000u16, GuestAddress(0x1_0000 + 0x1000 + 2))
        .unwrap();
    w.drain();
    assert_eq!(irq.resets.load(Ordering::SeqCst), 1);
    assert!(!w.drain(), "a broken queue is left alone");
}

#[test]
fn activation_runs_a_named_worker_and_reset_returns_the_source() {
    let mem = mem();
    let driver = Driver::new(0x1_0000);
    let mut rng = Rng::with_source("rng0", source(&[0u8; 16]));
    assert_eq!(rng.device_type(), TYPE_RNG);
    assert_eq!(rng.queue_max_sizes(), &[QUEUE_SIZE]);
    let mut config = [0xffu8; 4];
    rng.read_config(0, &mut config);
    assert_eq!(config, [0; 4]);
    let activation = |queues| Activation {
        mem: mem.clone(),
        queues,
        interrupt: Arc::new(Irq::default()),
        features: F_VERSION_1,
        dma: Default::default(),
    };
    assert!(matches!(
        rng.activate(activation(Vec::new())),
        Err(ActivateError::BadQueues(0))
    ));
    let queue = ActiveQueue {
        index: 0,
        queue: driver.queue(&mem),
        kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    };
    rng.activate(activation(vec![queue])).unwrap();
    assert!(rng.source.is_none());
    rng.reset();
    assert!(rng.source.is_some(), "reset hands the source back");
    assert!(Rng::open("x", Path::new("/nonexistent/entropy")).is_err());
}

#[test]
fn a_buffer_or_ring_in_private_memory_stops_the_device() {
    use crate::dma::SharedPages;
    let mem = mem();
    let pages = Arc::new(SharedPages::new(&[(0, 1 << 20)], true));
    pages.set(0x4_0000, 0x1000, false).unwrap();
    let mut driver = Driver::new(0x1_0000);
    let irq = Arc::new(Irq::default());
    let mut w = worker(&driver, &mem, source(&[9u8; 64]), irq.clone());
    w.dma = DmaGuard::shared_only(pages.clone());
    // A shared buffer is served.
    driver.add(&mem, &[(0x5_0000, 16, true)]);
    assert!(!w.drain());
    assert_eq!(driver.used(&mem, 0), (0, 16));
    // A private one: nothing is written there, the device asks for a reset.
    mem.write_slice(&[0x33; 16], GuestAddress(0x4_0000))
        .unwrap();
    driver.add(&mem, &[(0x5_0100, 8, true), (0x4_0000, 16, true)]);
    assert!(!w.drain());
    assert_eq!(irq.resets.load(Ordering::SeqCst), 1);
    assert_eq!(driver.used_idx(&mem), 1, "the chain was not completed");
    let mut back = [0u8; 16];
    mem.read_slice(&mut back, GuestAddress(0x4_0000)).unwrap();
    assert_eq!(back, [0x33; 16]);
    // A fresh worker whose used ring is private stops before touching anything.
    let mut driver = Driver::new(0x2_0000);
    let mut w = worker(&driver, &mem, source(&[9u8; 64]), irq.clone());
    w.dma = DmaGuard::shared_only(pages.clone());
    pages.set(0x2_2000, 0x1000, false).unwrap();
    driver.add(&mem, &[(0x5_0000, 16, true)]);
    assert!(!w.drain());
    assert_eq!(irq.resets.load(Ordering::SeqCst), 2);
}
