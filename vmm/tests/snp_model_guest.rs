//! The model SNP guest (`snp::ghcb::guest`) against the real device models: its GHCB IOIO
//! events reach the 16550 UART and the PCI configuration ports on a `devices::bus::Bus`, its
//! MMIO events reach a virtio-pci block device's BAR through the `PciRoot`, exactly as a
//! userspace GHCB handler would dispatch them.

// Test crate: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "snp_model_guest/dma.rs"]
mod dma;

use devices::bus::Bus;
use devices::dma::DmaGuard;
use devices::legacy::serial::Serial;
use devices::pci::msix::{MsiMessage, MsiRouter, MsixVector};
use devices::pci::root::{PciConfigIo, PciRoot};
use devices::virtio::block::backend::MemDisk;
use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::pci::VirtioPciDevice;
use snp::ghcb::guest::{ModelGuest, ModelServices};
use snp::ghcb::IoBus;
use snp::page_state::memory::ModelRam;
use snp::page_state::{PageSize, PageStates};
use snp::plan::RamRegion;
use snp::report::firmware::{LaunchFacts, ModelFirmware};
use snp::report::{verify, Expected};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub(crate) const GHCB: u64 = 0x10_000;
const SECRETS: u64 = 0x5000;
pub(crate) const BAR: u64 = 0xC000_0000;

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);
impl Write for Console {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct NoRoutes;
impl MsiRouter for NoRoutes {
    fn route(&self, _: u32, _: Option<MsiMessage>) -> io::Result<()> {
        Ok(())
    }
}

/// The dispatch a userspace GHCB handler does: ports to the PIO bus, MMIO to the PCI BARs;
/// unclaimed reads float high.
struct Devices {
    pio: Bus,
    pci: Arc<PciRoot>,
}

impl IoBus for Devices {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        if !self.pio.read(port.into(), data) {
            data.fill(0xFF);
        }
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        self.pio.write(port.into(), data);
    }
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        if !self.pci.mmio_read(gpa, data) {
            data.fill(0xFF);
        }
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.pci.mmio_write(gpa, data);
    }
}

fn devices(console: Console) -> Devices {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    devices_on(console, mem, DmaGuard::unrestricted())
}

/// The serial port, the PCI configuration ports and one virtio-blk device working on `mem`
/// and restricted by `dma`.
fn devices_on(console: Console, mem: GuestMemoryMmap, dma: DmaGuard) -> Devices {
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
    let vectors = (0..2)
        .map(|i| MsixVector {
            gsi: 24 + i,
            irqfd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        })
        .collect();
    let mut dev = VirtioPciDevice::new(
        Box::new(block),
        mem,
        BAR as u32,
        vectors,
        Arc::new(NoRoutes),
        None,
    )
    .unwrap();
    dev.set_dma_guard(dma);
    let root = PciRoot::new();
    root.add_device(Arc::new(Mutex::new(dev))).unwrap();
    let root = Arc::new(root);
    let mut pio = Bus::new();
    let serial = Serial::new(EventFd::new(libc::EFD_NONBLOCK).unwrap(), console);
    pio.insert(Arc::new(Mutex::new(serial)), 0x3f8, 8).unwrap();
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        0xcf8,
        8,
    )
    .unwrap();
    Devices { pio, pci: root }
}

#[test]
fn model_snp_guest_drives_the_real_devices() {
    let console = Console::default();
    let mut bus = devices(console.clone());
    let mut ram = ModelRam::new(PageStates::new(&[RamRegion {
        gpa: 0,
        size: 16 << 20,
    }]));
    for gpa in [GHCB, SECRETS] {
        ram.convert(gpa, PageSize::Size4K, true).unwrap();
        ram.states_mut()
            .pvalidate(gpa, PageSize::Size4K, true)
            .unwrap();
    }
    let facts = LaunchFacts::without_id_block([0x5e; 48], [0xab; 32], 0x30000);
    let fw = ModelFirmware::new(facts);
    fw.install_secrets(&mut ram, SECRETS).unwrap();
    let vcek = fw.vcek();
    let mut services = ModelServices::new(fw, 2);
    let mut g = ModelGuest::new(&mut ram, &mut bus, &mut services, GHCB);

    g.register_ghcb().unwrap();
    g.accept(0x100_000, 2).unwrap();
    g.share(0x100_000, 2).unwrap(); // the virtqueue rings
    g.print(0x3f8, b"snp guest up\n").unwrap();

    // PCI: slot 1 (slot 0 is the host bridge) through 0xcf8/0xcfc.
    let addr = |reg: u32| 0x8000_0000 | (1 << 11) | reg;
    g.pio_out(0xcf8, 4, addr(0)).unwrap();
    let id = g.pio_in(0xcfc, 4).unwrap();
    assert_eq!(id & 0xFFFF, 0x1af4, "virtio vendor");
    g.pio_out(0xcf8, 4, addr(4)).unwrap();
    g.pio_out(0xcfc, 2, 0x6).unwrap(); // memory space + bus master

    // virtio common configuration in BAR 0: device_status and num_queues.
    g.mmio_write(BAR + 0x14, &[1]).unwrap();
    assert_eq!(g.mmio_read(BAR + 0x14, 1).unwrap(), [1]);
    assert_eq!(g.mmio_read(BAR + 0x12, 2).unwrap(), [1, 0]);

    g.start_ap(1, 0x200_000, 1).unwrap();
    let report = g
        .request_report(SECRETS, 0x300_000, 0x301_000, &[9; 64])
        .unwrap();

    assert_eq!(console.0.lock().unwrap().as_slice(), b"snp guest up\n");
    assert_eq!(services.aps.len(), 1);
    let expected = Expected {
        measurement: Some([0x5e; 48]),
        host_data: Some([0xab; 32]),
        report_data: Some([9; 64]),
        policy: Some(0x30000),
    };
    verify(&report, &vcek, &expected).unwrap();
}
