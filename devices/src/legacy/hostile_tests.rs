//! Every legacy device under a stream of arbitrary guest accesses: any offset (inside the
//! range, just past it, far away), any width including zero, any value. Nothing may panic,
//! and the bounded state (queues, logs) must stay bounded.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::acpi_pm::AcpiPm;
use super::boot_marker::{BootMarkerLog, BootMarkerPort, MAX_MARKERS};
use super::i8042::I8042;
use super::serial::Serial;
use crate::bus::BusDevice;
use crate::GuestRequestHandler;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn hammer(dev: &mut dyn BusDevice, range_len: u64, seed: u64, rounds: usize) {
    let mut rng = Rng(seed);
    let mut buf = [0u8; 8];
    for _ in 0..rounds {
        let r = rng.next();
        let offset = match r % 8 {
            0 => rng.next(),               // anywhere
            1 => range_len + (r >> 8) % 4, // just past the end
            _ => (r >> 8) % range_len,     // a real register
        };
        let len = [0usize, 1, 1, 1, 2, 4, 8, 3][((r >> 16) % 8) as usize];
        if r & (1 << 40) == 0 {
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            dev.write(offset, &buf[..len]);
        } else {
            dev.read(offset, &mut buf[..len]);
        }
    }
}

fn counting_handler() -> (GuestRequestHandler, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    (
        Arc::new(move |_| {
            c.fetch_add(1, Ordering::Relaxed);
        }),
        count,
    )
}

const ROUNDS: usize = 50_000;

#[test]
fn serial_survives_arbitrary_accesses() {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut dev = Serial::new(irq, io::sink());
    hammer(&mut dev, 8, 0x1234_5678, ROUNDS);
    // Still a working UART afterwards: scratch register round-trips.
    dev.write(7, &[0xa5]);
    let mut b = [0];
    dev.read(7, &mut b);
    assert_eq!(b, [0xa5]);
}

#[test]
fn boot_marker_survives_arbitrary_accesses_and_stays_bounded() {
    let log = BootMarkerLog::new();
    let mut dev = BootMarkerPort::new(Instant::now(), log.clone());
    hammer(&mut dev, 1, 0x9abc_def0, ROUNDS);
    assert_eq!(log.markers().len(), MAX_MARKERS);
    assert!(log.dropped() > 0);
}

#[test]
fn acpi_pm_survives_arbitrary_accesses() {
    let (handler, requests) = counting_handler();
    let mut dev = AcpiPm::new(handler);
    hammer(&mut dev, 4, 0x0f0f_f0f0, ROUNDS);
    // Random bytes hit S5 and the reset value now and then; each is one request.
    assert!(requests.load(Ordering::Relaxed) > 0);
}

#[test]
fn i8042_survives_arbitrary_accesses_and_stays_bounded() {
    let (handler, _requests) = counting_handler();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut dev = I8042::new(handler).with_keyboard_irq(irq);
    hammer(&mut dev, 5, 0x5555_aaaa, ROUNDS);
    // Draining the output buffer ends: it never holds more than the controller's queue.
    let mut drained = 0;
    let mut b = [0u8];
    loop {
        dev.read(4, &mut b);
        if b[0] & 1 == 0 {
            break;
        }
        dev.read(0, &mut b);
        drained += 1;
        assert!(drained <= 16, "output queue unbounded");
    }
    // And the controller still answers its self-test.
    dev.write(4, &[0xaa]);
    dev.read(0, &mut b);
    assert_eq!(b, [0x55]);
}
