//! The VM's PCI side: the root bus with one virtio-blk function per `--disk`, then vsock, one
//! virtio-fs function per `--fs`, and rng when configured, wired to KVM.
//!
//! Device order is configuration order, so disk *n* always sits in slot *n + 1*
//! (`0000:00:0N.0`; the host bridge holds slot 0). Each disk gets one BAR 0 of
//! [`VirtioPciDevice`]'s size from the 32-bit window `[MMIO32_DEVICES_START,
//! MMIO32_DEVICES_END)`, one GSI and irqfd per MSI-X vector (GSIs from [`FIRST_MSI_GSI`]), and
//! one ioeventfd per queue, which the transport moves whenever the guest moves the BAR.
//!
//! KVM's GSI routing table is replaced whole on every change, so [`KvmMsiRouter`] keeps the
//! complete table: the default IOAPIC/PIC routes of GSIs 0–23 plus every MSI route.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use devices::bus::{Bus, BusError};
use devices::pci::hotplug::{
    EjectHandler, HotplugController, HotplugPorts, HOTPLUG_PORT, HOTPLUG_PORT_LEN,
};
use devices::pci::msix::{MsiMessage, MsiRouter};
use devices::pci::root::{
    PciConfigIo, PciConfigMmio, PciMmioWindow, PciRootError, PCI_CONFIG_IO_PORT,
    PCI_CONFIG_IO_PORT_LEN,
};
use devices::virtio::block::backend::BackendError;
use devices::virtio::block::BlockError;
use devices::virtio::pci::{IoEventRegistry, TransportError};
use devices::virtio::vsock::VsockError;
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_irqchip, kvm_irq_routing_msi, KvmIrqRouting,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::config::disk::DiskConfig;
use crate::config::fs::FsConfig;
use crate::config::rng::RngConfig;
use crate::config::vsock::VsockConfig;
use crate::layout;
use crate::pci_bus::{DeviceSpec, PciBus};

/// The last bus number the ECAM window covers: only the root bus exists.
pub const LAST_BUS: u8 = 0;
/// Bytes of ECAM for buses `0..=LAST_BUS` (1 MiB per bus).
pub const ECAM_SIZE: u64 = (LAST_BUS as u64 + 1) << 20;
/// GSIs below this are the IOAPIC pins; MSI vectors get GSIs from here up.
pub const FIRST_MSI_GSI: u32 = 24;
const IOAPIC_PINS: u32 = 24;
const PIC_PINS: u32 = 16;

/// Errors building the PCI devices.
#[derive(Debug, thiserror::Error)]
pub enum PciSetupError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("disk {id}: {source}")]
    Block { id: String, source: BlockError },
    #[error("vsock: {0}")]
    Vsock(#[from] VsockError),
    #[error("device {id}: {source}")]
    DeviceTransport { id: String, source: TransportError },
    #[error("fs {tag}: {source}")]
    Fs {
        tag: String,
        source: devices::virtio::fs::FsError,
    },
    #[error("rng: {0}")]
    Rng(#[from] devices::virtio::rng::RngError),
    #[error(
        "fs {0}: guest RAM is private; a vhost-user device needs the VM started with shared \
         memory (memory.shared=true, --memory shared=on)"
    )]
    PrivateMemory(String),
    #[error("a device named {0:?} already exists")]
    DuplicateId(String),
    #[error("the VM already has a {0} device")]
    AlreadyPresent(&'static str),
    #[error(transparent)]
    Slots(#[from] PciRootError),
    #[error("cannot create an MSI-X eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("{op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot place the {what} on a bus: {source}")]
    Bus {
        what: &'static str,
        source: BusError,
    },
}

/// The complete GSI routing table of a VM.
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    msi: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl KvmMsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            msi: Mutex::new(BTreeMap::new()),
        }
    }

    fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip = kvm_irq_routing_irqchip { irqchip: chip, pin };
        e
    }

    /// KVM's default routes (what `KVM_CREATE_IRQCHIP` set up) and the MSI routes.
    fn table(msi: &BTreeMap<u32, MsiMessage>) -> Result<KvmIrqRouting, std::io::Error> {
        let mut entries = Vec::new();
        for gsi in 0..IOAPIC_PINS {
            if gsi < PIC_PINS {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(Self::irqchip_entry(gsi, chip, gsi % 8));
            }
            entries.push(Self::irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (&gsi, m) in msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi = kvm_irq_routing_msi {
                address_lo: m.address as u32,
                address_hi: (m.address >> 32) as u32,
                data: m.data,
                ..Default::default()
            };
            entries.push(e);
        }
        let mut routing =
            KvmIrqRouting::new(0).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        for e in entries {
            routing
                .push(e)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        Ok(routing)
    }
}

impl MsiRouter for KvmMsiRouter {
    fn route(&self, gsi: u32, msg: Option<MsiMessage>) -> std::io::Result<()> {
        let mut msi = self.msi.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = match msg {
            Some(m) => msi.insert(gsi, m),
            None => msi.remove(&gsi),
        };
        let result = Self::table(&msi).and_then(|t| {
            self.vm
                .set_gsi_routing(&t)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        });
        if result.is_err() {
            // Keep the table in line with what KVM has.
            match previous {
                Some(p) => msi.insert(gsi, p),
                None => msi.remove(&gsi),
            };
        }
        result
    }
}

/// ioeventfds through `KVM_IOEVENTFD`, matching writes of any width.
pub struct KvmIoEvents {
    vm: Arc<VmFd>,
}

impl IoEventRegistry for KvmIoEvents {
    fn register(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, fd: &EventFd, addr: u64) -> std::io::Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// Where each device landed: its id and slot (`0000:00:<slot>.0`).
#[derive(Debug, Clone, Default)]
pub struct PlacedDevice {
    pub id: String,
    pub slot: u8,
    /// For devices whose backend lives in another process: set once it went away, so the
    /// API can report the device failed while the VM runs on.
    pub failed: Option<Arc<AtomicBool>>,
}

impl PlacedDevice {
    /// `0000:00:XX.0`, as shims read it back.
    pub fn bdf(&self) -> String {
        format!("0000:00:{:02x}.0", self.slot)
    }

    pub fn has_failed(&self) -> bool {
        self.failed
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }
}

impl PartialEq for PlacedDevice {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.slot, self.has_failed()) == (&other.id, other.slot, other.has_failed())
    }
}

/// The PCI devices a VM is configured with, in the order they take slots.
#[derive(Clone)]
pub struct DeviceSet<'a> {
    pub disks: &'a [DiskConfig],
    pub vsock: Option<&'a VsockConfig>,
    pub shares: &'a [FsConfig],
    pub rng: Option<&'a RngConfig>,
    /// What the devices may touch (see [`devices::dma`]).
    pub dma: devices::dma::DmaGuard,
}

impl<'a> DeviceSet<'a> {
    pub fn of(config: &'a crate::config::VmConfig) -> Self {
        Self {
            disks: &config.disks,
            vsock: config.vsock.as_ref(),
            shares: &config.fs,
            rng: config.rng.as_ref(),
            dma: devices::dma::DmaGuard::unrestricted(),
        }
    }

    /// The same devices, restricted to what `dma` allows.
    pub fn with_dma(self, dma: devices::dma::DmaGuard) -> Self {
        Self { dma, ..self }
    }
}

/// Builds the root bus with the configured devices (in [`DeviceSet`] order, so slots are
/// stable), puts the configuration ports and the hot-plug registers on `pio` and ECAM and the
/// BAR window on `mmio`. `on_eject` is called with the slots the guest released.
pub fn attach(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    set: DeviceSet<'_>,
    pio: &mut Bus,
    mmio: &mut Bus,
    on_eject: EjectHandler,
) -> Result<(PciBus, Arc<HotplugController>), PciSetupError> {
    let router: Arc<dyn MsiRouter> = Arc::new(KvmMsiRouter::new(vm.clone()));
    let ioevents: Arc<dyn IoEventRegistry> = Arc::new(KvmIoEvents { vm: vm.clone() });
    let mut bus = PciBus::new(vm.clone(), mem.clone(), router, ioevents);
    bus.set_dma_guard(set.dma.clone());
    let specs = set
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| {
            let mut disk = disk.clone();
            disk.id = Some(disk.id_or_default(index));
            DeviceSpec::Disk(disk)
        })
        .chain(set.vsock.cloned().map(DeviceSpec::Vsock))
        .chain(set.shares.iter().enumerate().map(|(index, share)| {
            let mut share = share.clone();
            share.id = Some(share.id_or_default(index));
            DeviceSpec::Fs(share)
        }))
        .chain(set.rng.cloned().map(DeviceSpec::Rng));
    for spec in specs {
        bus.add(&spec)?;
    }
    let root = bus.root();
    let hotplug = HotplugController::new(bus.present(), on_eject);
    let bus_err = |what| move |source| PciSetupError::Bus { what, source };
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        u64::from(PCI_CONFIG_IO_PORT),
        u64::from(PCI_CONFIG_IO_PORT_LEN),
    )
    .map_err(bus_err("PCI configuration ports"))?;
    pio.insert(
        Arc::new(Mutex::new(HotplugPorts(hotplug.clone()))),
        u64::from(HOTPLUG_PORT),
        u64::from(HOTPLUG_PORT_LEN),
    )
    .map_err(bus_err("PCI hot-plug registers"))?;
    mmio.insert(
        Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
        layout::PCI_MMCONFIG_START,
        ECAM_SIZE,
    )
    .map_err(bus_err("PCI ECAM window"))?;
    mmio.insert(
        Arc::new(Mutex::new(PciMmioWindow::new(
            root,
            layout::MMIO32_DEVICES_START,
        ))),
        layout::MMIO32_DEVICES_START,
        layout::MMIO32_DEVICES_END - layout::MMIO32_DEVICES_START,
    )
    .map_err(bus_err("PCI BAR window"))?;
    Ok((bus, hotplug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table_keeps_the_irqchip_routes() {
        let mut msi = BTreeMap::new();
        msi.insert(
            30,
            MsiMessage {
                address: 0x1_fee0_0000,
                data: 0x41,
            },
        );
        let t = KvmMsiRouter::table(&msi).unwrap();
        let entries = t.as_slice();
        assert_eq!(entries.len(), 16 + 24 + 1);
        let pic: Vec<_> = entries
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP && e.gsi == 4)
            .count()
            .to_string()
            .into_bytes();
        assert_eq!(pic, b"2", "GSI 4 routes to the PIC and the IOAPIC");
        let last = entries.last().unwrap();
        assert_eq!((last.gsi, last.type_), (30, KVM_IRQ_ROUTING_MSI));
    }
}
