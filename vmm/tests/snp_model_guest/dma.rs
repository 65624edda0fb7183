//! The model SNP guest points a real virtio-blk device at memory it made private: the
//! device, whose view of shared pages follows the guest's conversions, answers IOERR and
//! leaves the disk alone; once the guest privatises a ring, the device asks for a reset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::dma::{DmaGuard, SharedPages};
use snp::ghcb::guest::{ModelGuest, ModelServices};
use snp::page_state::memory::ModelRam;
use snp::page_state::{PageSize, PageStates};
use snp::plan::RamRegion;
use snp::report::firmware::{LaunchFacts, ModelFirmware};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::snp_memory::ModelDeviceView;

use super::{devices_on, Console, BAR, GHCB};

const RAM: u64 = 16 << 20;
const DESC: u64 = 0x100_000;
const AVAIL: u64 = 0x101_000;
const USED: u64 = 0x102_000;
/// Request headers and status bytes.
const REQS: u64 = 0x103_000;
const SHARED_DATA: u64 = 0x104_000;
const PRIVATE_DATA: u64 = 0x105_000;
const QUEUE_SIZE: u16 = 16;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const NEEDS_RESET: u8 = 0x40;

fn facts() -> LaunchFacts {
    LaunchFacts::without_id_block([0; 48], [0; 32], 0x30000)
}

/// The guest's virtio-blk driver, writing its rings with the C-bit clear.
struct Driver<'g, 'a> {
    g: &'g mut ModelGuest<'a>,
    next: u16,
    avail: u16,
}

impl Driver<'_, '_> {
    fn shared_write(&mut self, gpa: u64, data: &[u8]) {
        self.g.mem.guest_write(gpa, data, false).unwrap();
    }

    fn shared_read(&mut self, gpa: u64, buf: &mut [u8]) {
        self.g.mem.guest_read(gpa, buf, false).unwrap();
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.g.mmio_write(BAR + off, &v.to_le_bytes()).unwrap();
    }

    fn status(&mut self) -> u8 {
        self.g.mmio_read(BAR + 0x14, 1).unwrap()[0]
    }

    /// PCI memory decoding and bus mastering, then the virtio start-up of queue 0.
    fn bring_up(&mut self) {
        let addr = 0x8000_0000u32 | (1 << 11) | 4;
        self.g.pio_out(0xcf8, 4, addr).unwrap();
        self.g.pio_out(0xcfc, 2, 0x6).unwrap();
        self.g.mmio_write(BAR + 0x14, &[3]).unwrap();
        self.w32(0x08, 1);
        self.w32(0x0c, 1); // VIRTIO_F_VERSION_1
        self.g.mmio_write(BAR + 0x14, &[0x0b]).unwrap();
        assert_eq!(self.status(), 0x0b, "FEATURES_OK");
        self.g.mmio_write(BAR + 0x16, &[0, 0]).unwrap();
        assert_eq!(
            self.g.mmio_read(BAR + 0x18, 2).unwrap(),
            QUEUE_SIZE.to_le_bytes()
        );
        for (off, gpa) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            self.w32(off, gpa as u32);
            self.w32(off + 4, 0);
        }
        self.g.mmio_write(BAR + 0x1c, &[1, 0]).unwrap();
        self.g.mmio_write(BAR + 0x14, &[0x0f]).unwrap();
        assert_eq!(self.status(), 0x0f, "DRIVER_OK without NEEDS_RESET");
    }

    /// Header, one data buffer, status byte; published in the available ring.
    fn request(&mut self, slot: u64, kind: u32, data: u64, data_writable: bool) {
        let header = REQS + slot * 0x20;
        let status = header + 0x10;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        self.shared_write(header, &h);
        self.shared_write(status, &[0xff]);
        let head = self.next;
        let bufs = [
            (header, 16u32, 0u16),
            (data, 512, if data_writable { 2 } else { 0 }),
            (status, 1, 2),
        ];
        for (i, (addr, len, flags)) in bufs.into_iter().enumerate() {
            let index = head + i as u16;
            let last = i == bufs.len() - 1;
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&(flags | if last { 0 } else { 1 }).to_le_bytes());
            d[14..16].copy_from_slice(&(index + 1).to_le_bytes());
            self.shared_write(DESC + u64::from(index) * 16, &d);
        }
        self.next += bufs.len() as u16;
        let ring_slot = u64::from(self.avail % QUEUE_SIZE);
        self.shared_write(AVAIL + 4 + ring_slot * 2, &head.to_le_bytes());
        self.avail += 1;
        let idx = self.avail.to_le_bytes();
        self.shared_write(AVAIL + 2, &idx);
    }

    fn notify(&mut self) {
        self.g.mmio_write(BAR + 0x3000, &[0, 0]).unwrap();
    }

    fn wait_used(&mut self, n: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut idx = [0u8; 2];
            self.shared_read(USED + 2, &mut idx);
            if u16::from_le_bytes(idx) == n {
                return;
            }
            assert!(Instant::now() < deadline, "the device never completed {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn status_byte(&mut self, slot: u64) -> u8 {
        let mut b = [0u8];
        self.shared_read(REQS + slot * 0x20 + 0x10, &mut b);
        b[0]
    }
}

#[test]
fn a_model_guest_pointing_virtio_blk_at_private_memory_gets_ioerr_then_a_reset() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let view = Arc::new(SharedPages::new(&[(0, RAM)], true));
    let mut bus = devices_on(
        Console::default(),
        mem.clone(),
        DmaGuard::shared_only(view.clone()),
    );
    let mut ram =
        ModelRam::with_memory(PageStates::new(&[RamRegion { gpa: 0, size: RAM }]), mem).unwrap();
    ram.convert(GHCB, PageSize::Size4K, true).unwrap();
    ram.states_mut()
        .pvalidate(GHCB, PageSize::Size4K, true)
        .unwrap();
    ram.observe(Arc::new(ModelDeviceView(view.clone())));
    assert!(!view.is_shared(GHCB, 1), "the view starts from the RMP");
    let mut services = ModelServices::new(ModelFirmware::new(facts()), 1);
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);
    g.register_ghcb().unwrap();
    assert!(
        view.is_shared(GHCB, 4096),
        "sharing the GHCB reached the view"
    );
    // A private page holding data the host must not take.
    g.accept(PRIVATE_DATA, 1).unwrap();
    g.mem.guest_write(PRIVATE_DATA, &[0x66; 512], true).unwrap();
    assert!(!view.is_shared(PRIVATE_DATA, 1));

    let mut d = Driver {
        g: &mut g,
        next: 0,
        avail: 0,
    };
    d.bring_up();
    // Write sector 0 from the private page, then read sector 0 back into a shared one.
    d.request(0, T_OUT, PRIVATE_DATA, false);
    d.request(1, T_IN, SHARED_DATA, true);
    d.shared_write(SHARED_DATA, &[0xee; 512]);
    d.notify();
    d.wait_used(2);
    assert_eq!(d.status_byte(0), S_IOERR, "the private buffer is refused");
    assert_eq!(d.status_byte(1), S_OK);
    let mut back = [0u8; 512];
    d.shared_read(SHARED_DATA, &mut back);
    assert_eq!(back, [0u8; 512], "the disk never got the private bytes");
    assert_eq!(
        d.status() & NEEDS_RESET,
        0,
        "one bad request breaks nothing"
    );

    // The guest takes its available ring private: the device stops and asks for a reset.
    d.g.accept(AVAIL, 1).unwrap();
    d.notify();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.status() & NEEDS_RESET == 0 {
        assert!(
            Instant::now() < deadline,
            "the device never asked for a reset"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
