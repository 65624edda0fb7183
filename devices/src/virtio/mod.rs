//! Virtio devices: the narrow [`VirtioDevice`] trait every device implements, the virtio-pci
//! transport that presents one to the guest ([`pci`]), the per-device worker thread
//! ([`worker`]) and the devices themselves ([`block`], [`vsock`], [`rng`], and [`fs`], whose
//! queues a vhost-user backend serves).
//!
//! Data flow (VIRTIO 1.2 §2.7 split virtqueues, §4.1 virtio over PCI): the guest programs the
//! transport's common configuration; on `DRIVER_OK` the transport builds `virtio-queue`
//! queues and hands them, the guest memory and an interrupt handle to
//! [`VirtioDevice::activate`] *by value*. The device moves them into its worker thread, which
//! wakes on the queues' notification eventfds (ioeventfds on the notify region), pops
//! descriptor chains, runs them through the device's pure request logic and a host backend,
//! fills the used ring and signals the guest through [`VirtioInterrupt`] (MSI-X over irqfd).
//! Reset stops the worker and drops everything it owned.

pub mod block;
pub mod fs;
pub mod pci;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_driver;
pub mod vsock;
pub mod worker;

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::dma::DmaGuard;

/// Device status bits (VIRTIO 1.2 §2.1).
pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

/// Reserved feature bits (VIRTIO 1.2 §6) the devices here offer.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Device types (VIRTIO 1.2 §5).
pub const TYPE_BLOCK: u32 = 2;

/// The guest memory every device works on.
pub type GuestMemory = GuestMemoryMmap<()>;

/// How a device tells the guest something happened. Implemented by the transport (MSI-X
/// vectors and the ISR register); tests use a recorder.
pub trait VirtioInterrupt: Send + Sync {
    /// The device put buffers in the used ring of `queue`.
    fn notify_queue(&self, queue: u16);
    /// The device's configuration or status changed.
    fn notify_config(&self);
    /// The device hit an error it cannot recover from on its own (a queue the guest broke):
    /// sets `DEVICE_NEEDS_RESET` and raises a configuration interrupt (VIRTIO 1.2 §2.1.2).
    fn needs_reset(&self);
}

/// One queue handed to a device on activation.
pub struct ActiveQueue {
    /// The queue's index in the device (its position in [`VirtioDevice::queue_max_sizes`]).
    pub index: u16,
    pub queue: Queue,
    /// Readable when the guest notified this queue.
    pub kick: EventFd,
}

/// Everything a device's worker needs, moved in on activation.
pub struct Activation {
    pub mem: GuestMemory,
    /// The enabled queues, in index order.
    pub queues: Vec<ActiveQueue>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub features: u64,
    /// Which guest pages the device may follow addresses into (see [`crate::dma`]).
    pub dma: DmaGuard,
}

/// Errors activating a device (the guest set `DRIVER_OK`).
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver enabled no queue or queue {0}, which the device does not have")]
    BadQueues(u16),
    #[error("the device is already active")]
    AlreadyActive,
    #[error("cannot start the worker thread: {0}")]
    Worker(#[from] std::io::Error),
    #[error("the device's backend refused: {0}")]
    Backend(String),
    #[error("the rings of queue {0} are not in shared guest memory")]
    PrivateRing(u16),
}

/// A virtio device as the transport sees it: identity, features, configuration space, and
/// the activate/reset life cycle. Everything about queues beyond their sizes belongs to the
/// device's worker.
pub trait VirtioDevice: Send {
    /// The virtio device type (§5), e.g. [`TYPE_BLOCK`].
    fn device_type(&self) -> u32;
    /// A short, stable name, used for the worker thread and log lines.
    fn id(&self) -> &str;
    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Every feature bit the device offers, [`F_VERSION_1`] included.
    fn features(&self) -> u64;
    /// A guest read of the device-specific configuration at `offset`; bytes past its end read
    /// as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A guest write of the device-specific configuration; most devices ignore it.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Takes the queues, memory and interrupt and starts processing.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops processing and drops what activation handed over; returns once the worker is
    /// gone. A no-op on an inactive device.
    fn reset(&mut self);
}

/// Copies `data.len()` bytes of a device's config space from `offset`; bytes past its end
/// (or an offset the guest made up) read as zero, as the transport promises the driver.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// True if `dma` lets the device touch all three rings of `queue` (VIRTIO 1.2 §2.7: the
/// descriptor table, the driver area and the device area, each with its event index).
pub(crate) fn rings_allowed(dma: &DmaGuard, queue: &Queue) -> bool {
    if !dma.is_restricted() {
        return true;
    }
    let n = u64::from(queue.size());
    dma.allows(queue.desc_table(), 16 * n)
        && dma.allows(queue.avail_ring(), 6 + 2 * n)
        && dma.allows(queue.used_ring(), 6 + 8 * n)
}

/// `VIRTQ_DESC_F_INDIRECT` (VIRTIO 1.2 §2.7.5.3).
const DESC_F_INDIRECT: u16 = 4;

/// For a restricted guard, checks the indirect table the head descriptor `head` points at,
/// which `virtio-queue` reads while walking the chain (the spec lets only a chain's head
/// carry one). True when there is nothing to check or the table is shared.
pub(crate) fn indirect_table_allowed(
    dma: &DmaGuard,
    mem: &GuestMemory,
    queue: &Queue,
    head: u16,
) -> bool {
    use vm_memory::{Bytes, GuestAddress};
    if !dma.is_restricted() {
        return true;
    }
    let at = queue.desc_table() + u64::from(head) * 16;
    let (Ok(addr), Ok(len), Ok(flags)) = (
        mem.read_obj::<u64>(GuestAddress(at)),
        mem.read_obj::<u32>(GuestAddress(at + 8)),
        mem.read_obj::<u16>(GuestAddress(at + 12)),
    ) else {
        // The walk reports an unreadable table itself.
        return true;
    };
    flags & DESC_F_INDIRECT == 0 || dma.allows(addr, u64::from(len))
}

/// For a restricted guard: true if the chain `chain` (just popped from `queue`), its
/// indirect table included, lies wholly in pages `dma` allows. Devices with no status to
/// answer a refused chain with stop and ask for a reset when this is false.
pub(crate) fn chain_allowed(
    dma: &DmaGuard,
    mem: &GuestMemory,
    queue: &Queue,
    chain: &virtio_queue::DescriptorChain<&GuestMemory>,
) -> bool {
    if !dma.is_restricted() {
        return true;
    }
    indirect_table_allowed(dma, mem, queue, chain.head_index())
        && chain
            .clone()
            .all(|d| dma.allows(d.addr().0, u64::from(d.len())))
}
