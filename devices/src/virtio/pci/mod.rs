//! The virtio-pci modern transport (VIRTIO 1.2 §4.1): presents a [`VirtioDevice`] as a PCI
//! function with the vendor capabilities for the common, notify, ISR and device-specific
//! configuration, an MSI-X table, and a `VIRTIO_PCI_CAP_PCI_CFG` window.
//!
//! Everything lives in one 32-bit memory BAR (BAR 0), laid out as:
//!
//! ```text
//! 0x0000  common configuration  (§4.1.4.3)     0x3000  notify: queue i at 4*i (§4.1.4.4)
//! 0x1000  ISR status            (§4.1.4.5)     0x4000  MSI-X table
//! 0x2000  device configuration  (§4.1.4.6)     0x5000  MSI-X pending-bit array
//! ```
//!
//! Notifications normally never reach this code: each queue's notify address is an
//! ioeventfd (registered through [`IoEventRegistry`] wherever the guest puts the BAR), which
//! wakes the device worker directly. A notify write that does arrive here (before memory
//! decoding is on, or if registration failed) is forwarded to the same eventfd.

pub mod common;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use self::common::{CommonConfig, StatusChange, COMMON_CFG_BYTES, NO_VECTOR};
use super::{
    ActivateError, Activation, ActiveQueue, GuestMemory, VirtioDevice, VirtioInterrupt,
    F_RING_EVENT_IDX, STATUS_DEVICE_NEEDS_RESET,
};
use crate::dma::DmaGuard;
use crate::legacy::RateLimitedLog;
use crate::pci::config::{ConfigError, PciConfig, PciIdentity, COMMAND_MEMORY_SPACE};
use crate::pci::msix::{MsiRouter, Msix, MsixVector, CONTROL_ENABLE, CONTROL_FUNCTION_MASK};
use crate::pci::root::PciDevice;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
const COMMON_OFFSET: u64 = 0x0000;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_BYTES: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notify addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x5000;
/// PCI vendor ID of virtio; modern device IDs are 0x1040 + type (§4.1.2.1).
const VIRTIO_VENDOR: u16 = 0x1af4;
const MODERN_DEVICE_ID_BASE: u16 = 0x1040;
/// Capability types (§4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
const CAP_ID_VENDOR: u8 = 0x09;
const CAP_ID_MSIX: u8 = 0x11;

/// Registers and removes ioeventfds; implemented by the VMM over `KVM_IOEVENTFD`.
pub trait IoEventRegistry: Send + Sync {
    /// Makes a guest write of any width to MMIO address `addr` signal `fd`.
    fn register(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
    fn unregister(&self, fd: &EventFd, addr: u64) -> io::Result<()>;
}

/// Errors building the transport (host side).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("PCI configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot create a queue notification eventfd: {0}")]
    EventFd(io::Error),
    #[error("device has {queues} queues; the transport needs {needed} MSI-X vectors, got {got}")]
    Vectors {
        queues: usize,
        needed: usize,
        got: usize,
    },
}

/// What the transport shares with the device worker to signal the guest.
struct Signals {
    msix: Arc<Msix>,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    needs_reset: AtomicBool,
}

impl Signals {
    fn fire(&self, vector: u16) {
        if vector != NO_VECTOR {
            self.msix.trigger(vector);
        }
    }
}

impl VirtioInterrupt for Signals {
    fn notify_queue(&self, queue: u16) {
        self.isr.fetch_or(1, Ordering::AcqRel);
        if let Some(v) = self.queue_vectors.get(usize::from(queue)) {
            self.fire(v.load(Ordering::Acquire));
        }
    }

    fn notify_config(&self) {
        self.isr.fetch_or(2, Ordering::AcqRel);
        self.fire(self.config_vector.load(Ordering::Acquire));
    }

    fn needs_reset(&self) {
        self.needs_reset.store(true, Ordering::Release);
        self.notify_config();
    }
}

/// Offsets of the capabilities the transport must watch in configuration space.
struct CapOffsets {
    msix: usize,
    pci_cfg: usize,
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: PciConfig,
    caps: CapOffsets,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    common: CommonConfig,
    signals: Arc<Signals>,
    kicks: Vec<EventFd>,
    ioevents: Option<Arc<dyn IoEventRegistry>>,
    /// BAR 0's base the notify ioeventfds follow, while memory decoding is on.
    notify_base: Option<u64>,
    /// Per queue, the address its ioeventfd is registered at, if it could be placed (a guest
    /// that moves the BAR over another device's finds the address taken).
    notify_placed: Vec<Option<u64>>,
    active: bool,
    /// Handed to the device on activation; the rings are checked against it first.
    dma: DmaGuard,
    log: RateLimitedLog,
}

impl VirtioPciDevice {
    /// MSI-X vectors the transport wants for `device`: one per queue plus configuration.
    pub fn vectors_needed(device: &dyn VirtioDevice) -> usize {
        device.queue_max_sizes().len() + 1
    }

    /// Wraps `device`; BAR 0 starts at `bar_addr` (from the VMM's BAR allocator).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        bar_addr: u32,
        vectors: Vec<MsixVector>,
        router: Arc<dyn MsiRouter>,
        ioevents: Option<Arc<dyn IoEventRegistry>>,
    ) -> Result<Self, TransportError> {
        let queues = device.queue_max_sizes().len();
        let needed = queues + 1;
        if vectors.len() != needed {
            return Err(TransportError::Vectors {
                queues,
                needed,
                got: vectors.len(),
            });
        }
        let device_type = device.device_type();
        let mut config = PciConfig::new(&PciIdentity {
            vendor_id: VIRTIO_VENDOR,
            device_id: MODERN_DEVICE_ID_BASE + device_type as u16,
            revision: 1,
            class_code: class_code(device_type),
            subsystem_vendor_id: VIRTIO_VENDOR,
            subsystem_id: 0x40,
        });
        config.add_memory_bar(0, BAR_SIZE, bar_addr)?;
        let caps = add_capabilities(&mut config, queues, needed)?;
        let kicks = (0..queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()
            .map_err(TransportError::EventFd)?;
        let signals = Arc::new(Signals {
            msix: Arc::new(Msix::new(vectors, router)),
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            needs_reset: AtomicBool::new(false),
        });
        Ok(Self {
            common: CommonConfig::new(device.features(), device.queue_max_sizes(), needed as u16),
            config,
            caps,
            device,
            mem,
            signals,
            kicks,
            ioevents,
            notify_base: None,
            notify_placed: Vec::new(),
            active: false,
            dma: DmaGuard::unrestricted(),
            log: RateLimitedLog::default(),
        })
    }

    /// Restricts the device to the pages `dma` allows (a confidential guest's shared pages)
    /// from its next activation on.
    pub fn set_dma_guard(&mut self, dma: DmaGuard) {
        self.dma = dma;
    }

    /// The queue notification eventfds (what the ioeventfds signal), in queue order.
    pub fn kicks(&self) -> &[EventFd] {
        &self.kicks
    }

    /// The device's current status byte, as the driver reads it.
    pub fn status(&self) -> u8 {
        self.common.status | self.needs_reset_bit()
    }

    fn needs_reset_bit(&self) -> u8 {
        if self.signals.needs_reset.load(Ordering::Acquire) {
            STATUS_DEVICE_NEEDS_RESET
        } else {
            0
        }
    }

    fn bar0_base(&self) -> Option<u64> {
        if self.config.command() & COMMAND_MEMORY_SPACE == 0 {
            return None;
        }
        self.config
            .memory_bars()
            .find(|(bar, _)| bar.index == 0)
            .map(|(_, addr)| addr)
    }

    /// Moves the notify ioeventfds to where BAR 0 decodes now.
    fn follow_bar(&mut self) {
        let Some(registry) = self.ioevents.clone() else {
            return;
        };
        let new = self.bar0_base();
        if new == self.notify_base {
            return;
        }
        self.remove_notifiers(registry.as_ref());
        self.notify_base = new;
        let Some(base) = new else {
            return;
        };
        let placed = self
            .kicks
            .iter()
            .enumerate()
            .map(|(q, kick)| {
                let addr = base + NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_MULTIPLIER);
                match registry.register(kick, addr) {
                    Ok(()) => Some(addr),
                    Err(e) => {
                        // Notifications still arrive through MMIO exits, only slower.
                        self.log.warn(format_args!(
                            "{}: cannot place notify ioeventfd {q} at {addr:#x}: {e}",
                            self.device.id()
                        ));
                        None
                    }
                }
            })
            .collect();
        self.notify_placed = placed;
    }

    /// Unregisters every notify ioeventfd that was placed.
    fn remove_notifiers(&mut self, registry: &dyn IoEventRegistry) {
        for (q, (kick, placed)) in self.kicks.iter().zip(&mut self.notify_placed).enumerate() {
            if let Some(addr) = placed.take() {
                if let Err(e) = registry.unregister(kick, addr) {
                    log::error!(
                        "{}: cannot remove notify ioeventfd {q} at {addr:#x}: {e}",
                        self.device.id()
                    );
                }
            }
        }
    }

    fn reset_device(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.common.reset();
        self.signals.isr.store(0, Ordering::Release);
        self.signals.needs_reset.store(false, Ordering::Release);
        self.signals
            .config_vector
            .store(NO_VECTOR, Ordering::Release);
        for v in &self.signals.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
    }

    /// `DRIVER_OK`: builds the queues and activates the device, or flags `NEEDS_RESET`.
    fn activate(&mut self) {
        if self.active {
            return;
        }
        match self
            .build_activation()
            .and_then(|a| self.device.activate(a))
        {
            Ok(()) => self.active = true,
            Err(e) => {
                self.log
                    .warn(format_args!("{}: activation failed: {e}", self.device.id()));
                self.signals.needs_reset();
            }
        }
    }

    fn build_activation(&self) -> Result<Activation, ActivateError> {
        use virtio_queue::{Queue, QueueT};
        let event_idx = self.common.driver_features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (i, regs) in self.common.queues.iter().enumerate() {
            let index = i as u16;
            if !regs.enabled {
                continue;
            }
            let bad = || ActivateError::BadQueues(index);
            let mut queue = Queue::new(regs.max_size).map_err(|_| bad())?;
            queue.try_set_size(regs.size).map_err(|_| bad())?;
            queue
                .try_set_desc_table_address(vm_memory::GuestAddress(regs.desc))
                .map_err(|_| bad())?;
            queue
                .try_set_avail_ring_address(vm_memory::GuestAddress(regs.driver))
                .map_err(|_| bad())?;
            queue
                .try_set_used_ring_address(vm_memory::GuestAddress(regs.device))
                .map_err(|_| bad())?;
            queue.set_event_idx(event_idx);
            queue.set_ready(true);
            if !queue.is_valid(&self.mem) {
                return Err(bad());
            }
            if !super::rings_allowed(&self.dma, &queue) {
                return Err(ActivateError::PrivateRing(index));
            }
            self.signals.queue_vectors[i].store(regs.msix_vector, Ordering::Release);
            let kick = self.kicks[i].try_clone()?;
            queues.push(ActiveQueue { index, queue, kick });
        }
        self.signals
            .config_vector
            .store(self.common.config_msix_vector, Ordering::Release);
        Ok(Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: self.signals.clone(),
            features: self.common.driver_features,
            dma: self.dma.clone(),
        })
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        match self.common.write(offset, data) {
            StatusChange::Reset => self.reset_device(),
            StatusChange::DriverOk => self.activate(),
            StatusChange::None => {}
        }
        // Vectors may change while running (e.g. a driver re-binding its interrupts).
        self.signals
            .config_vector
            .store(self.common.config_msix_vector, Ordering::Release);
        if self.active {
            for (regs, v) in self.common.queues.iter().zip(&self.signals.queue_vectors) {
                v.store(regs.msix_vector, Ordering::Release);
            }
        }
    }

    /// Applies `VIRTIO_PCI_CAP_PCI_CFG` (§4.1.4.9): a BAR access through config space.
    fn pci_cfg_window(&mut self, data: Option<&[u8]>, out: Option<&mut [u8]>) {
        let cap = self.caps.pci_cfg;
        let bar = self.config.u16_at(cap + 4) as u8;
        let offset = u64::from(self.config.u32_at(cap + 8));
        let len = self.config.u32_at(cap + 12) as usize;
        if bar != 0 || !matches!(len, 1 | 2 | 4) {
            return;
        }
        match (data, out) {
            (Some(d), _) if d.len() >= len => self.write_bar(0, offset, &d[..len]),
            (_, Some(o)) if o.len() >= len => self.read_bar(0, offset, &mut o[..len]),
            _ => {}
        }
    }
}

fn class_code(device_type: u32) -> u32 {
    match device_type {
        super::TYPE_BLOCK => 0x01_80_00,
        _ => 0xff_00_00,
    }
}

/// A virtio vendor capability body (§4.1.4): 16 bytes, plus `extra`.
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let len = 16 + extra.len();
    let mut cap = vec![CAP_ID_VENDOR, 0, len as u8, cfg_type, 0, 0, 0, 0];
    cap.extend_from_slice(&(offset as u32).to_le_bytes());
    cap.extend_from_slice(&(length as u32).to_le_bytes());
    cap.extend_from_slice(extra);
    cap
}

fn add_capabilities(
    config: &mut PciConfig,
    queues: usize,
    vectors: usize,
) -> Result<CapOffsets, ConfigError> {
    config.add_capability(
        &virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_CFG_BYTES, &[]),
        &[],
    )?;
    let notify_len = (queues as u64 * u64::from(NOTIFY_MULTIPLIER)).max(4);
    config.add_capability(
        &virtio_cap(
            CAP_NOTIFY,
            NOTIFY_OFFSET,
            notify_len,
            &NOTIFY_MULTIPLIER.to_le_bytes(),
        ),
        &[],
    )?;
    config.add_capability(&virtio_cap(CAP_ISR, ISR_OFFSET, 4, &[]), &[])?;
    config.add_capability(
        &virtio_cap(CAP_DEVICE, DEVICE_CFG_OFFSET, DEVICE_CFG_BYTES, &[]),
        &[],
    )?;
    // The PCI_CFG window: bar (byte 4), offset, length and data are the driver's to write.
    let window = virtio_cap(CAP_PCI_CFG, 0, 0, &[0; 4]);
    let mut wmask = vec![0u8; window.len()];
    wmask[4] = 0xff;
    wmask[8..20].fill(0xff);
    let pci_cfg = config.add_capability(&window, &wmask)?;
    let mut msix = vec![CAP_ID_MSIX, 0];
    msix.extend_from_slice(&((vectors - 1) as u16).to_le_bytes());
    msix.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
    msix.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
    let msix_wmask = [0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0];
    let msix = config.add_capability(&msix, &msix_wmask)?;
    Ok(CapOffsets { msix, pci_cfg })
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        let window = (self.caps.pci_cfg + 16) as u64;
        if offset == window {
            self.pci_cfg_window(None, Some(data));
            return;
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let window = (self.caps.pci_cfg + 16) as u64;
        if offset == window {
            self.pci_cfg_window(Some(data), None);
            return;
        }
        self.config.write(offset, data);
        let control = (self.caps.msix + 2) as u64;
        if offset <= control + 1 && offset.saturating_add(data.len() as u64) > control {
            let value = self.config.u16_at(self.caps.msix + 2);
            self.signals
                .msix
                .set_control(value & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK));
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_BYTES => {
                let extra = self.needs_reset_bit();
                self.common.read(o, data, extra)
            }
            // Reading the ISR acknowledges it (§4.1.4.5); its other bytes read zero.
            ISR_OFFSET => {
                if let Some(b) = data.first_mut() {
                    *b = self.signals.isr.swap(0, Ordering::AcqRel);
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_BYTES).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.signals.msix.read_table(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.signals.msix.read_pba(o - MSIX_PBA_OFFSET, data)
            }
            _ => {}
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_BYTES => self.write_common(o, data),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_BYTES).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                let queue = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER);
                if let Some(kick) = usize::try_from(queue).ok().and_then(|q| self.kicks.get(q)) {
                    if let Err(e) = kick.write(1) {
                        self.log
                            .warn(format_args!("cannot forward a notification: {e}"));
                    }
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.signals.msix.write_table(o - MSIX_TABLE_OFFSET, data)
            }
            _ => {}
        }
    }

    fn bars_changed(&mut self) {
        self.follow_bar();
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
        if let Some(registry) = self.ioevents.clone() {
            self.remove_notifiers(registry.as_ref());
        }
    }
}
