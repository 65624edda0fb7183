//! The PCI wiring against real KVM, without a guest: a disk attached by
//! `vmm::pci_devices::attach` answers on the legacy configuration ports and through ECAM, its
//! BAR decodes once memory decoding is on (which also places its notify ioeventfds in KVM), and
//! MSI routes go through `KVM_SET_GSI_ROUTING` next to the irqchip's own routes.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use devices::bus::Bus;
use devices::pci::msix::{MsiMessage, MsiRouter};
use kvm_ioctls::Kvm;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::config::disk::DiskConfig;
use vmm::layout;
use vmm::pci_devices::{self, KvmMsiRouter, PlacedDevice, FIRST_MSI_GSI};

mod common;
use common::kvm_available;

fn read32(bus: &Bus, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    assert!(bus.read(addr, &mut b), "nothing at {addr:#x}");
    u32::from_le_bytes(b)
}

#[test]
fn attached_disks_answer_through_both_configuration_doors_and_route_msis() {
    if !kvm_available() {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let dir = std::env::temp_dir().join(format!("podvisor-pci-kvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disks = vec![
        DiskConfig::new(img.clone()),
        DiskConfig {
            readonly: true,
            num_queues: 2,
            id: Some("second".into()),
            ..DiskConfig::new(img)
        },
    ];
    let (mut pio, mut mmio) = (Bus::new(), Bus::new());
    let placed = pci_devices::attach(
        &vm,
        &mem,
        pci_devices::DeviceSet {
            disks: &disks,
            vsock: None,
            shares: &[],
            rng: None,
            dma: Default::default(),
        },
        &mut pio,
        &mut mmio,
        Box::new(|_| {}),
    )
    .unwrap();
    let placed = placed.0.list().snapshot();
    assert_eq!(
        placed,
        vec![
            PlacedDevice {
                failed: None,
                id: "disk0".into(),
                slot: 1
            },
            PlacedDevice {
                failed: None,
                id: "second".into(),
                slot: 2
            }
        ]
    );
    // Mechanism #1: address at 0xcf8, data at 0xcfc.
    for (slot, want) in [(0u32, 0x0008_1b36u32), (1, 0x1042_1af4), (2, 0x1042_1af4)] {
        assert!(pio.write(0xcf8, &(0x8000_0000 | slot << 11).to_le_bytes()));
        assert_eq!(read32(&pio, 0xcfc), want, "slot {slot}");
    }
    // ECAM.
    let ecam = layout::PCI_MMCONFIG_START;
    assert_eq!(read32(&mmio, ecam + (2 << 15)), 0x1042_1af4);
    assert_eq!(read32(&mmio, ecam + (3 << 15)), 0xffff_ffff, "empty slot");
    // BAR 0 of slot 2 decodes after memory decoding is turned on.
    let bar = u64::from(read32(&mmio, ecam + (2 << 15) + 0x10));
    assert!((layout::MMIO32_DEVICES_START..layout::MMIO32_DEVICES_END).contains(&bar));
    let mut b = [0u8; 2];
    assert!(mmio.write(ecam + (2 << 15) + 4, &2u16.to_le_bytes()));
    assert!(mmio.read(bar + 0x12, &mut b));
    assert_eq!(u16::from_le_bytes(b), 2, "num_queues of the second disk");
    std::fs::remove_dir_all(&dir).unwrap();

    // MSI routes are accepted by KVM next to the default irqchip routes.
    let router = KvmMsiRouter::new(vm.clone());
    let msg = MsiMessage {
        address: 0xfee0_0000,
        data: 0x4041,
    };
    router.route(FIRST_MSI_GSI, Some(msg)).unwrap();
    router.route(FIRST_MSI_GSI + 1, Some(msg)).unwrap();
    router.route(FIRST_MSI_GSI, None).unwrap();
}
