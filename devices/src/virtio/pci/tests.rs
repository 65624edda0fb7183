//! The transport driven the way a guest driver does (§3.1.1 initialisation, §4.1.5), over
//! fake guest memory, a fake MSI router and a fake ioeventfd registry.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::pci::msix::MsiMessage;
use crate::virtio::block::backend::MemDisk;
use crate::virtio::block::{Block, BlockOptions};
use crate::virtio::{
    F_VERSION_1, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};

#[derive(Default)]
struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);
impl MsiRouter for Routes {
    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()> {
        self.0.lock().unwrap().push((gsi, msg));
        Ok(())
    }
}

/// Records (register?, address) of every call; registering at the address in the second field
/// fails as KVM fails for an address another device's ioeventfd holds, and removing what was
/// never placed fails the test.
#[derive(Default)]
struct IoEvents(Mutex<Vec<(bool, u64)>>, Mutex<Option<u64>>);
impl IoEventRegistry for IoEvents {
    fn register(&self, _fd: &EventFd, addr: u64) -> io::Result<()> {
        if *self.1.lock().unwrap() == Some(addr) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.0.lock().unwrap().push((true, addr));
        Ok(())
    }
    fn unregister(&self, _fd: &EventFd, addr: u64) -> io::Result<()> {
        let mut events = self.0.lock().unwrap();
        let placed =
            events.iter().filter(|e| e.1 == addr).fold(
                0i32,
                |n, e| {
                    if e.0 {
                        n + 1
                    } else {
                        n - 1
                    }
                },
            );
        // KVM would answer ENOENT; the transport must not ask in the first place.
        assert!(
            placed > 0,
            "unregistering {addr:#x}, which holds no ioeventfd"
        );
        events.push((false, addr));
        Ok(())
    }
}

struct Setup {
    dev: VirtioPciDevice,
    mem: GuestMemory,
    irqfds: Vec<EventFd>,
    ioevents: Arc<IoEvents>,
}

fn setup() -> Setup {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let block = Block::new(
        BlockOptions {
            id: "vda".into(),
            readonly: false,
            num_queues: 1,
            queue_size: 16,
        },
        Box::new(MemDisk::new(64 * 1024)),
    )
    .unwrap();
    let mut irqfds = Vec::new();
    let vectors = (0..2)
        .map(|i| {
            let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            irqfds.push(fd.try_clone().unwrap());
            MsixVector {
                gsi: 24 + i,
                irqfd: fd,
            }
        })
        .collect();
    let ioevents = Arc::new(IoEvents::default());
    let dev = VirtioPciDevice::new(
        Box::new(block),
        mem.clone(),
        0xc000_0000,
        vectors,
        Arc::new(Routes::default()),
        Some(ioevents.clone()),
    )
    .unwrap();
    Setup {
        dev,
        mem,
        irqfds,
        ioevents,
    }
}

fn cfg_read32(dev: &mut VirtioPciDevice, off: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(off, &mut b);
    u32::from_le_bytes(b)
}

fn w8(dev: &mut VirtioPciDevice, off: u64, v: u8) {
    dev.write_bar(0, off, &[v]);
}
fn w16(dev: &mut VirtioPciDevice, off: u64, v: u16) {
    dev.write_bar(0, off, &v.to_le_bytes());
}
fn w32(dev: &mut VirtioPciDevice, off: u64, v: u32) {
    dev.write_bar(0, off, &v.to_le_bytes());
}
fn r8(dev: &mut VirtioPciDevice, off: u64) -> u8 {
    let mut b = [0u8; 1];
    dev.read_bar(0, off, &mut b);
    b[0]
}
fn r16(dev: &mut VirtioPciDevice, off: u64) -> u16 {
    let mut b = [0u8; 2];
    dev.read_bar(0, off, &mut b);
    u16::from_le_bytes(b)
}
fn r32(dev: &mut VirtioPciDevice, off: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_bar(0, off, &mut b);
    u32::from_le_bytes(b)
}

/// Walks the capability list; returns (offset, bytes) of each.
fn capabilities(dev: &mut VirtioPciDevice) -> Vec<(u64, Vec<u8>)> {
    let mut caps = Vec::new();
    let mut p = [0u8; 1];
    dev.read_config(0x34, &mut p);
    let mut at = u64::from(p[0]);
    while at != 0 && caps.len() < 16 {
        let mut body = vec![0u8; 20];
        dev.read_config(at, &mut body);
        caps.push((at, body.clone()));
        at = u64::from(body[1]);
    }
    caps
}

#[test]
fn identity_and_capabilities_follow_the_spec() {
    let mut s = setup();
    assert_eq!(cfg_read32(&mut s.dev, 0), 0x1042_1af4);
    assert_eq!(cfg_read32(&mut s.dev, 8) >> 24, 0x01, "mass storage");
    let caps = capabilities(&mut s.dev);
    let vendor: Vec<u8> = caps
        .iter()
        .filter(|c| c.1[0] == 0x09)
        .map(|c| c.1[3])
        .collect();
    assert_eq!(vendor, vec![1, 2, 3, 4, 5]);
    let notify = caps.iter().find(|c| c.1[0] == 0x09 && c.1[3] == 2).unwrap();
    assert_eq!(
        u32::from_le_bytes(notify.1[16..20].try_into().unwrap()),
        NOTIFY_MULTIPLIER
    );
    let msix = caps.iter().find(|c| c.1[0] == 0x11).unwrap();
    assert_eq!(
        u16::from_le_bytes([msix.1[2], msix.1[3]]) & 0x7ff,
        1,
        "two vectors"
    );
}

/// Performs the driver's initialisation up to DRIVER_OK with one 16-entry queue.
fn bring_up(s: &mut Setup) {
    // Memory decoding on: the notify ioeventfd lands at BAR 0 + 0x3000.
    s.dev.write_config(4, &COMMAND_MEMORY_SPACE.to_le_bytes());
    s.dev.bars_changed();
    assert_eq!(
        s.ioevents.0.lock().unwrap().last(),
        Some(&(true, 0xc000_3000))
    );
    // MSI-X on, both vectors programmed and unmasked.
    let msix = capabilities(&mut s.dev)
        .into_iter()
        .find(|c| c.1[0] == 0x11)
        .unwrap()
        .0;
    s.dev.write_config(msix + 2, &CONTROL_ENABLE.to_le_bytes());
    for v in 0..2u64 {
        let e = MSIX_TABLE_OFFSET + v * 16;
        w32(&mut s.dev, e, 0xfee0_0000);
        w32(&mut s.dev, e + 4, 0);
        w32(&mut s.dev, e + 8, 0x40 + v as u32);
        w32(&mut s.dev, e + 12, 0);
    }
    w8(&mut s.dev, 0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(&mut s.dev, 0x00, 1);
    assert_eq!(r32(&mut s.dev, 0x04) & 1, 1, "VIRTIO_F_VERSION_1 offered");
    w32(&mut s.dev, 0x08, 1);
    w32(&mut s.dev, 0x0c, (F_VERSION_1 >> 32) as u32);
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_ne!(r8(&mut s.dev, 0x14) & STATUS_FEATURES_OK, 0);
    w16(&mut s.dev, 0x10, 0);
    assert_eq!(r16(&mut s.dev, 0x12), 1, "num_queues");
    w16(&mut s.dev, 0x16, 0);
    assert_eq!(r16(&mut s.dev, 0x18), 16);
    w16(&mut s.dev, 0x1a, 1);
    assert_eq!(r16(&mut s.dev, 0x1a), 1);
    w32(&mut s.dev, 0x20, 0x1000);
    w32(&mut s.dev, 0x24, 0);
    w32(&mut s.dev, 0x28, 0x2000);
    w32(&mut s.dev, 0x2c, 0);
    w32(&mut s.dev, 0x30, 0x3000);
    w32(&mut s.dev, 0x34, 0);
    w16(&mut s.dev, 0x1c, 1);
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    assert_eq!(
        r8(&mut s.dev, 0x14),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
}

#[test]
fn a_driver_brings_the_device_up_and_gets_an_msix_interrupt() {
    let mut s = setup();
    bring_up(&mut s);
    // One FLUSH request: header at 0x8000, status at 0x9000.
    s.mem.write_obj(4u32, GuestAddress(0x8000)).unwrap();
    s.mem.write_obj(0xffu8, GuestAddress(0x9000)).unwrap();
    let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let at = 0x1000 + i * 16;
        s.mem.write_obj(addr, GuestAddress(at)).unwrap();
        s.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        s.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        s.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    };
    desc(0, 0x8000, 16, 1, 1);
    desc(1, 0x9000, 1, 2, 0);
    s.mem.write_obj(0u16, GuestAddress(0x2004)).unwrap();
    s.mem.write_obj(1u16, GuestAddress(0x2002)).unwrap();
    // Notify through the MMIO path (as if no ioeventfd were registered).
    w16(&mut s.dev, NOTIFY_OFFSET, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.mem.read_obj::<u16>(GuestAddress(0x3002)).unwrap() != 1 {
        assert!(Instant::now() < deadline, "request never completed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(s.mem.read_obj::<u8>(GuestAddress(0x9000)).unwrap(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.irqfds[1].read().is_err() {
        assert!(Instant::now() < deadline, "queue vector never fired");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r8(&mut s.dev, ISR_OFFSET), 1, "ISR queue bit");
    assert_eq!(r8(&mut s.dev, ISR_OFFSET), 0, "reading the ISR clears it");
    // Reset stops the worker and clears everything the driver set.
    w8(&mut s.dev, 0x14, 0);
    assert_eq!(r8(&mut s.dev, 0x14), 0);
    assert_eq!(r16(&mut s.dev, 0x1c), 0);
    assert_eq!(r16(&mut s.dev, 0x1a), NO_VECTOR);
    // And the device comes up again.
    bring_up_again(&mut s);
}

fn bring_up_again(s: &mut Setup) {
    w8(&mut s.dev, 0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(&mut s.dev, 0x08, 1);
    w32(&mut s.dev, 0x0c, 1);
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    w16(&mut s.dev, 0x16, 0);
    w32(&mut s.dev, 0x20, 0x1000);
    w32(&mut s.dev, 0x28, 0x2000);
    w32(&mut s.dev, 0x30, 0x3000);
    w16(&mut s.dev, 0x1c, 1);
    w8(&mut s.dev, 0x14, 0x0f);
    assert_eq!(r8(&mut s.dev, 0x14), 0x0f);
}

#[test]
fn bad_feature_sets_and_broken_queues_are_refused() {
    let mut s = setup();
    w8(&mut s.dev, 0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // A legacy driver (no VERSION_1) does not get FEATURES_OK.
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(r8(&mut s.dev, 0x14) & STATUS_FEATURES_OK, 0);
    // Neither does one asking for a feature not offered.
    w32(&mut s.dev, 0x08, 1);
    w32(&mut s.dev, 0x0c, 1 | 0x8000_0000);
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(r8(&mut s.dev, 0x14) & STATUS_FEATURES_OK, 0);
    w32(&mut s.dev, 0x0c, 1);
    w8(
        &mut s.dev,
        0x14,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_ne!(r8(&mut s.dev, 0x14) & STATUS_FEATURES_OK, 0);
    // Queue rings outside guest RAM, a size that is not a power of two, an MSI-X vector
    // past the table: activation refuses and the device asks for a reset.
    w16(&mut s.dev, 0x16, 0);
    w16(&mut s.dev, 0x1a, 9);
    assert_eq!(r16(&mut s.dev, 0x1a), NO_VECTOR);
    w16(&mut s.dev, 0x18, 12);
    w32(&mut s.dev, 0x20, 0xffff_f000);
    w32(&mut s.dev, 0x24, 0xffff_ffff);
    w16(&mut s.dev, 0x1c, 1);
    w8(&mut s.dev, 0x14, 0x0f);
    assert_ne!(r8(&mut s.dev, 0x14) & STATUS_DEVICE_NEEDS_RESET, 0);
    w8(&mut s.dev, 0x14, 0);
    assert_eq!(r8(&mut s.dev, 0x14), 0);
    // Queue selector past the last queue reads as an absent queue.
    w16(&mut s.dev, 0x16, 7);
    assert_eq!(r16(&mut s.dev, 0x18), 0);
}

#[test]
fn the_pci_cfg_window_reaches_the_bar() {
    let mut s = setup();
    let cap = capabilities(&mut s.dev)
        .into_iter()
        .find(|c| c.1[0] == 0x09 && c.1[3] == 5)
        .unwrap()
        .0;
    s.dev.write_config(cap + 4, &[0]);
    s.dev.write_config(cap + 8, &0x12u32.to_le_bytes());
    s.dev.write_config(cap + 12, &2u32.to_le_bytes());
    let mut b = [0u8; 4];
    s.dev.read_config(cap + 16, &mut b);
    assert_eq!(
        u16::from_le_bytes([b[0], b[1]]),
        1,
        "num_queues through the window"
    );
}

#[test]
fn a_notify_address_that_is_taken_is_skipped_and_never_unregistered() {
    let mut s = setup();
    *s.ioevents.1.lock().unwrap() = Some(0xd000_3000);
    s.dev.write_config(4, &COMMAND_MEMORY_SPACE.to_le_bytes());
    s.dev.bars_changed();
    // Over another device's notify address: this queue's ioeventfd cannot be placed.
    s.dev.write_config(0x10, &0xd000_0000u32.to_le_bytes());
    s.dev.bars_changed();
    s.dev.write_config(0x10, &0xe000_0000u32.to_le_bytes());
    s.dev.bars_changed();
    let ioevents = s.ioevents.clone();
    drop(s);
    assert_eq!(
        *ioevents.0.lock().unwrap(),
        vec![
            (true, 0xc000_3000),
            (false, 0xc000_3000),
            (true, 0xe000_3000),
            (false, 0xe000_3000)
        ],
        "only what was placed is removed, on every move and when the device goes"
    );
}

#[test]
fn moving_the_bar_moves_the_ioeventfds_and_hostile_accesses_are_harmless() {
    let mut s = setup();
    s.dev.write_config(4, &COMMAND_MEMORY_SPACE.to_le_bytes());
    s.dev.bars_changed();
    s.dev.write_config(0x10, &0xd000_0000u32.to_le_bytes());
    s.dev.bars_changed();
    let events = s.ioevents.0.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            (true, 0xc000_3000),
            (false, 0xc000_3000),
            (true, 0xd000_3000)
        ]
    );
    s.dev.write_config(4, &0u16.to_le_bytes());
    s.dev.bars_changed();
    assert_eq!(
        s.ioevents.0.lock().unwrap().last(),
        Some(&(false, 0xd000_3000))
    );
    for offset in [
        0u64,
        1,
        0x13,
        0x3b,
        0x1001,
        0x2ffe,
        0x3000,
        0x3ffc,
        0x4ffe,
        0x7fff,
        BAR_SIZE,
        u64::MAX,
    ] {
        for len in [1usize, 2, 4, 8] {
            let mut b = vec![0u8; len];
            s.dev.write_bar(0, offset, &vec![0xff; len]);
            s.dev.read_bar(0, offset, &mut b);
            s.dev.write_bar(3, offset, &vec![0xff; len]);
            s.dev.write_config(offset, &vec![0xff; len]);
            s.dev.read_config(offset, &mut b);
        }
    }
}

#[test]
fn rings_in_private_memory_are_refused_at_activation() {
    use crate::dma::{DmaGuard, SharedPages};
    let mut s = setup();
    let pages = Arc::new(SharedPages::new(&[(0, 1 << 20)], true));
    pages.set(0x2000, 0x1000, false).unwrap(); // the driver area
    s.dev.set_dma_guard(DmaGuard::shared_only(pages.clone()));
    w8(&mut s.dev, 0x14, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(&mut s.dev, 0x08, 1);
    w32(&mut s.dev, 0x0c, 1);
    w8(&mut s.dev, 0x14, 0x0b);
    w16(&mut s.dev, 0x16, 0);
    w32(&mut s.dev, 0x20, 0x1000);
    w32(&mut s.dev, 0x28, 0x2000);
    w32(&mut s.dev, 0x30, 0x3000);
    w16(&mut s.dev, 0x1c, 1);
    w8(&mut s.dev, 0x14, 0x0f);
    assert_ne!(r8(&mut s.dev, 0x14) & STATUS_DEVICE_NEEDS_RESET, 0);
    // Once the guest shares the page, a reset and a fresh start bring the device up.
    pages.set(0x2000, 0x1000, true).unwrap();
    w8(&mut s.dev, 0x14, 0);
    bring_up_again(&mut s);
}
