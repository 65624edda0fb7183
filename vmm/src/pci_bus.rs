//! The VM's root bus at run time: which virtio function sits in which slot, and what each one
//! took from the VM (BAR, MSI GSIs with their irqfds), so that a device added after boot gets
//! the same treatment as one configured at start and a removed one gives everything back.
//!
//! Slots are handed out lowest-free-first and a slot's BAR 0 is fixed by its number
//! (`MMIO32_DEVICES_START + (slot - 1) × BAR_SIZE`), so a freed slot is reused with its BAR and
//! cold-plugged devices land where they always did. MSI GSIs come from a pool that takes them
//! back on removal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use devices::dma::DmaGuard;
use devices::pci::msix::{MsiRouter, MsixVector};
use devices::pci::root::PciRoot;
use devices::virtio::block::backend::FileDisk;
use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::pci::{IoEventRegistry, VirtioPciDevice, BAR_SIZE};
use devices::virtio::vsock::Vsock;
use devices::virtio::VirtioDevice;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::config::disk::DiskConfig;
use crate::config::fs::FsConfig;
use crate::config::rng::RngConfig;
use crate::config::vsock::VsockConfig;
use crate::layout;
use crate::pci_devices::{PciSetupError, PlacedDevice, FIRST_MSI_GSI};

// Every slot's BAR fits the window: the BAR address needs no check at run time.
const _: () = assert!(
    layout::MMIO32_DEVICES_START + (devices::pci::root::NUM_SLOTS as u64 - 1) * BAR_SIZE
        <= layout::MMIO32_DEVICES_END
);

/// A device to put on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Disk(DiskConfig),
    Vsock(VsockConfig),
    Fs(FsConfig),
    Rng(RngConfig),
}

/// What kind of device a slot holds, for the per-kind rules (one vsock, distinct tags).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Disk,
    Vsock,
    Fs { tag: String },
    Rng,
}

/// The live list of placed devices the API reads (`vm.info`).
#[derive(Debug, Default)]
pub struct DeviceList(Mutex<Vec<PlacedDevice>>);

impl DeviceList {
    pub fn snapshot(&self) -> Vec<PlacedDevice> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, devices: Vec<PlacedDevice>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = devices;
    }
}

/// A device built from a spec: the device, its id, its kind and its failure flag.
type Built = (Box<dyn VirtioDevice>, String, Kind, Option<Arc<AtomicBool>>);
/// GSIs with duplicates of their irqfds.
type IrqfdDups = Vec<(u32, EventFd)>;

struct Record {
    placed: PlacedDevice,
    kind: Kind,
    /// Duplicates of the vectors' irqfds (the transport owns the originals), to unregister.
    irqfds: Vec<(u32, EventFd)>,
}

/// MSI GSIs, reused after removal.
struct GsiPool {
    next: u32,
    free: BTreeSet<u32>,
}

impl GsiPool {
    fn take(&mut self) -> u32 {
        match self.free.pop_first() {
            Some(gsi) => gsi,
            None => {
                self.next += 1;
                self.next - 1
            }
        }
    }
}

/// The root bus and the VM resources its devices hold.
pub struct PciBus {
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    router: Arc<dyn MsiRouter>,
    ioevents: Arc<dyn IoEventRegistry>,
    root: Arc<PciRoot>,
    gsis: GsiPool,
    records: BTreeMap<u8, Record>,
    list: Arc<DeviceList>,
    /// What every virtio device (cold- or hot-plugged) may touch.
    dma: DmaGuard,
}

impl PciBus {
    pub fn new(
        vm: Arc<VmFd>,
        mem: GuestMemoryMmap,
        router: Arc<dyn MsiRouter>,
        ioevents: Arc<dyn IoEventRegistry>,
    ) -> Self {
        Self {
            vm,
            mem,
            router,
            ioevents,
            root: Arc::new(PciRoot::new()),
            gsis: GsiPool {
                next: FIRST_MSI_GSI,
                free: BTreeSet::new(),
            },
            records: BTreeMap::new(),
            list: Arc::new(DeviceList::default()),
            dma: DmaGuard::unrestricted(),
        }
    }

    /// Restricts the devices added from now on to what `dma` allows (a confidential guest's
    /// shared pages).
    pub fn set_dma_guard(&mut self, dma: DmaGuard) {
        self.dma = dma;
    }

    pub fn root(&self) -> Arc<PciRoot> {
        self.root.clone()
    }

    pub fn list(&self) -> Arc<DeviceList> {
        self.list.clone()
    }

    /// Occupied slots as a bitmap (bit N = slot N), the host bridge included.
    pub fn present(&self) -> u32 {
        self.records.keys().fold(1, |bits, slot| {
            bits | 1u32.checked_shl(u32::from(*slot)).unwrap_or(0)
        })
    }

    /// The slot of the device named `id`.
    pub fn slot_of(&self, id: &str) -> Option<u8> {
        self.records
            .iter()
            .find(|(_, r)| r.placed.id == id)
            .map(|(slot, _)| *slot)
    }

    /// The first `prefix{n}` no device uses.
    fn free_id(&self, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}{n}"))
            .find(|id| self.slot_of(id).is_none())
            .unwrap_or_else(|| prefix.to_owned())
    }

    /// Builds `spec`'s device, named `id` (or a free default name), and puts it in the lowest
    /// free slot.
    pub fn add(&mut self, spec: &DeviceSpec) -> Result<PlacedDevice, PciSetupError> {
        let slot = self.root.free_slot().ok_or(PciSetupError::Slots(
            devices::pci::root::PciRootError::NoFreeSlot,
        ))?;
        let (device, id, kind, failed) = self.build(spec)?;
        let bar = layout::MMIO32_DEVICES_START + u64::from(slot - 1) * BAR_SIZE;
        let (vectors, irqfds) = self.msix_vectors(device.as_ref())?;
        let transport = VirtioPciDevice::new(
            device,
            self.mem.clone(),
            bar as u32,
            vectors,
            self.router.clone(),
            Some(self.ioevents.clone()),
        );
        let transport = match transport {
            Ok(mut t) => {
                t.set_dma_guard(self.dma.clone());
                t
            }
            Err(source) => {
                self.release_vectors(irqfds);
                return Err(PciSetupError::DeviceTransport { id, source });
            }
        };
        if let Err(e) = self
            .root
            .insert_device(slot, Arc::new(Mutex::new(transport)))
        {
            self.release_vectors(irqfds);
            return Err(e.into());
        }
        let placed = PlacedDevice { id, slot, failed };
        log::info!(
            "{} {} at {}, BAR 0 {bar:#x}",
            kind_name(&kind),
            placed.id,
            placed.bdf()
        );
        self.records.insert(
            slot,
            Record {
                placed: placed.clone(),
                kind,
                irqfds,
            },
        );
        self.publish();
        Ok(placed)
    }

    /// Takes the device out of `slot`: it stops decoding, its worker and backend (file,
    /// socket, vhost-user connection) are released, and its GSIs go back to the pool.
    pub fn remove(&mut self, slot: u8) -> Option<PlacedDevice> {
        let record = self.records.remove(&slot)?;
        // Dropping the last handle resets the virtio device (the worker stops, the backend is
        // closed) and unregisters its ioeventfds.
        drop(self.root.remove_device(slot));
        self.release_vectors(record.irqfds);
        self.publish();
        log::info!("{} removed from {}", record.placed.id, record.placed.bdf());
        Some(record.placed)
    }

    fn publish(&self) {
        self.list
            .set(self.records.values().map(|r| r.placed.clone()).collect());
    }

    fn build(&self, spec: &DeviceSpec) -> Result<Built, PciSetupError> {
        let taken = |id: &str| self.slot_of(id).is_some();
        match spec {
            DeviceSpec::Disk(disk) => {
                let id = disk.id.clone().unwrap_or_else(|| self.free_id("disk"));
                if taken(&id) {
                    return Err(PciSetupError::DuplicateId(id));
                }
                let backend = FileDisk::open(&disk.path, disk.readonly)?;
                let options = BlockOptions {
                    id: id.clone(),
                    readonly: disk.readonly,
                    num_queues: disk.num_queues,
                    queue_size: disk.queue_size,
                };
                let block = Block::new(options, Box::new(backend)).map_err(|source| {
                    PciSetupError::Block {
                        id: id.clone(),
                        source,
                    }
                })?;
                Ok((Box::new(block), id, Kind::Disk, None))
            }
            DeviceSpec::Vsock(config) => {
                if self.records.values().any(|r| r.kind == Kind::Vsock) {
                    return Err(PciSetupError::AlreadyPresent("vsock"));
                }
                let id = config.id.clone().unwrap_or_else(|| "vsock".to_owned());
                if taken(&id) {
                    return Err(PciSetupError::DuplicateId(id));
                }
                let device = Vsock::new(config.cid, config.socket.clone())?;
                Ok((Box::new(device), id, Kind::Vsock, None))
            }
            DeviceSpec::Fs(share) => {
                // A vhost-user backend maps guest RAM; private anonymous RAM cannot be shared
                // after the fact.
                if self.mem.iter().any(|r| r.file_offset().is_none()) {
                    return Err(PciSetupError::PrivateMemory(share.tag.clone()));
                }
                let tag_used = self
                    .records
                    .values()
                    .any(|r| matches!(&r.kind, Kind::Fs { tag } if *tag == share.tag));
                if tag_used {
                    return Err(PciSetupError::DuplicateId(share.tag.clone()));
                }
                let mut options = share.options(0);
                options.id = share.id.clone().unwrap_or_else(|| self.free_id("fs"));
                if taken(&options.id) {
                    return Err(PciSetupError::DuplicateId(options.id));
                }
                let device = devices::virtio::fs::Fs::connect(&options).map_err(|source| {
                    PciSetupError::Fs {
                        tag: share.tag.clone(),
                        source,
                    }
                })?;
                let failed = device.failed_flag();
                let kind = Kind::Fs {
                    tag: share.tag.clone(),
                };
                Ok((Box::new(device), options.id, kind, Some(failed)))
            }
            DeviceSpec::Rng(config) => {
                let id = "rng".to_owned();
                if taken(&id) {
                    return Err(PciSetupError::AlreadyPresent("rng"));
                }
                let device = devices::virtio::rng::Rng::open(id.clone(), &config.src)?;
                Ok((Box::new(device), id, Kind::Rng, None))
            }
        }
    }

    /// One irqfd-backed GSI per MSI-X vector `device` needs.
    fn msix_vectors(
        &mut self,
        device: &dyn VirtioDevice,
    ) -> Result<(Vec<MsixVector>, IrqfdDups), PciSetupError> {
        let mut vectors = Vec::new();
        let mut dups = Vec::new();
        for _ in 0..VirtioPciDevice::vectors_needed(device) {
            let made =
                EventFd::new(libc::EFD_NONBLOCK).and_then(|fd| fd.try_clone().map(|dup| (fd, dup)));
            let (irqfd, dup) = match made {
                Ok(pair) => pair,
                Err(e) => {
                    self.release_vectors(dups);
                    return Err(PciSetupError::EventFd(e));
                }
            };
            let gsi = self.gsis.take();
            if let Err(source) = self.vm.register_irqfd(&irqfd, gsi) {
                self.gsis.free.insert(gsi);
                self.release_vectors(dups);
                return Err(PciSetupError::Kvm {
                    op: "KVM_IRQFD (MSI-X)",
                    source,
                });
            }
            vectors.push(MsixVector { gsi, irqfd });
            dups.push((gsi, dup));
        }
        Ok((vectors, dups))
    }

    fn release_vectors(&mut self, irqfds: Vec<(u32, EventFd)>) {
        for (gsi, fd) in irqfds {
            if let Err(e) = self.vm.unregister_irqfd(&fd, gsi) {
                log::warn!("cannot unregister the irqfd of GSI {gsi}: {e}");
            }
            if let Err(e) = self.router.route(gsi, None) {
                log::warn!("cannot drop the MSI route of GSI {gsi}: {e}");
            }
            self.gsis.free.insert(gsi);
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Disk => "disk",
        Kind::Vsock => "vsock",
        Kind::Fs { .. } => "fs",
        Kind::Rng => "rng",
    }
}
