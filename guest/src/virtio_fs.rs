//! A virtio-fs driver for the probe (VIRTIO 1.2 §5.11, PCI device 1af4:105a): the modern PCI
//! transport (§4.1.4) and one split virtqueue (§2.7) with a single request in flight.
//!
//! `virtio-drivers` 0.12 has no virtio-fs device and its `PciTransport` refuses device types it
//! does not know, and its virtqueue is private, so the probe carries this small driver. Waits are
//! bounded by the probe clock: a backend that stops answering gives [`FsError::Timeout`], after
//! which the device is left alone (its descriptors may still be the device's).
#![allow(unsafe_code)] // reason: MMIO registers and DMA rings are raw guest memory.

use crate::clock::Clock;
use crate::dma::ProbeHal;
use core::sync::atomic::{fence, Ordering};
use virtio_drivers::transport::pci::bus::{Cam, Command, DeviceFunction, MmioCam, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE};

pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// 0x1040 + device id 26.
pub const FS_DEVICE_ID: u16 = 0x105a;
/// Length of the `tag` field of the device configuration.
pub const TAG_LEN: usize = 36;

const CAP_VENDOR: u8 = 0x09;
pub(crate) const CFG_COMMON: u8 = 1;
pub(crate) const CFG_NOTIFY: u8 = 2;
const CFG_DEVICE: u8 = 4;

/// `struct virtio_pci_common_cfg` offsets.
pub(crate) const DEVICE_FEATURE_SELECT: u64 = 0;
pub(crate) const DEVICE_FEATURE: u64 = 4;
pub(crate) const DRIVER_FEATURE_SELECT: u64 = 8;
pub(crate) const DRIVER_FEATURE: u64 = 12;
pub(crate) const DEVICE_STATUS: u64 = 20;
pub(crate) const QUEUE_SELECT: u64 = 22;
pub(crate) const QUEUE_SIZE: u64 = 24;
const QUEUE_ENABLE: u64 = 28;
const QUEUE_NOTIFY_OFF: u64 = 30;
const QUEUE_DESC: u64 = 32;
const QUEUE_DRIVER: u64 = 40;
const QUEUE_DEVICE: u64 = 48;

pub(crate) const STATUS_ACKNOWLEDGE: u8 = 1;
pub(crate) const STATUS_DRIVER: u8 = 2;
pub(crate) const STATUS_DRIVER_OK: u8 = 4;
pub(crate) const STATUS_FEATURES_OK: u8 = 8;
pub(crate) const STATUS_NEEDS_RESET: u8 = 64;
/// VIRTIO_F_VERSION_1 is bit 32: bit 0 of feature word 1.
pub(crate) const VERSION_1_HIGH: u32 = 1;

pub(crate) const DESC_F_NEXT: u16 = 1;
pub(crate) const DESC_F_WRITE: u16 = 2;
/// Entries per queue the probe asks for (it keeps one request, two descriptors, in flight).
const QUEUE_ENTRIES: u16 = 8;
/// The hiprio queue is 0; request queues start at 1.
const HIPRIO_QUEUE: u16 = 0;
const REQUEST_QUEUE: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// A virtio PCI capability is missing or points outside its BAR.
    Capability(u8),
    /// The device refused the features the probe needs (VIRTIO_F_VERSION_1).
    Features,
    /// A queue the probe needs does not exist.
    NoQueue(u16),
    /// The device did not answer within the wait bound.
    Timeout,
    /// The device asked for a reset, or an earlier request timed out.
    Failed,
    /// The device reported a used length past the reply buffer.
    BadUsedLength(u32),
    /// A request or reply larger than the probe's buffers.
    TooLarge(usize),
}

impl FsError {
    pub fn report(&self, out: crate::serial::Out) -> crate::serial::Out {
        match *self {
            FsError::Capability(t) => out
                .s("virtio-fs: unusable PCI capability type ")
                .dec(t.into()),
            FsError::Features => out.s("virtio-fs: device refused VIRTIO_F_VERSION_1"),
            FsError::NoQueue(q) => out.s("virtio-fs: no queue ").dec(q.into()),
            FsError::Timeout => out.s("virtio-fs: no answer within the wait bound"),
            FsError::Failed => out.s("virtio-fs: device failed (needs reset or timed out before)"),
            FsError::BadUsedLength(l) => out.s("virtio-fs: used length ").dec(l.into()),
            FsError::TooLarge(l) => out
                .s("virtio-fs: message of ")
                .dec(l as u64)
                .s(" bytes too large"),
        }
    }
}

/// Volatile access to an identity-mapped MMIO or DMA address.
pub(crate) fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: callers pass addresses inside a BAR region named by the device's capabilities
    // (checked against the BAR size) or inside DMA pages this driver allocated; both are
    // identity-mapped and suitably aligned for `T`.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

pub(crate) fn write<T: Copy>(addr: u64, value: T) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut T, value) }
}

/// One split virtqueue in DMA pages.
pub(crate) struct Queue {
    pub(crate) index: u16,
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) notify: u64,
    pub(crate) avail_idx: u16,
    pub(crate) used_idx: u16,
}

impl Queue {
    /// Gives the ring pages back to the DMA pool; the device must no longer use them.
    pub(crate) fn free(&self) {
        for page in [self.desc, self.avail, self.used] {
            free_pages(page, 1);
        }
    }
}

fn dma_page() -> u64 {
    let (paddr, _) = ProbeHal::dma_alloc(1, BufferDirection::Both);
    paddr
}

/// A bound virtio-fs function: its tag and its request queue.
pub struct FsDevice {
    common: u64,
    queue: Queue,
    _hiprio: Queue,
    tag: [u8; TAG_LEN],
    pub num_request_queues: u32,
    failed: bool,
    timeout_ns: u64,
}

/// Reads a config-space dword of `function` through the ECAM window at `ecam`.
pub(crate) fn cfg_read(ecam: u64, function: DeviceFunction, reg: u8) -> u32 {
    read::<u32>(ecam + u64::from(Cam::Ecam.cam_offset(function, reg & !3)))
}

/// Where a modern virtio-pci function's configuration structures are (VIRTIO 1.2 §4.1.4).
pub(crate) struct Capabilities {
    pub(crate) common: Option<u64>,
    /// Notify base, offset multiplier and length.
    pub(crate) notify: Option<(u64, u64, u64)>,
    pub(crate) device: Option<u64>,
}

impl Capabilities {
    /// Walks the vendor capabilities of `function`, with memory decoding and bus mastering on.
    pub(crate) fn find(
        root: &mut PciRoot<MmioCam<'static>>,
        ecam: u64,
        function: DeviceFunction,
    ) -> Self {
        root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
        let mut common = None;
        let mut notify = None;
        let mut device = None;
        // (cfg_type, offset) of the vendor capabilities, collected first: reading BAR sizes
        // below needs the root mutably.
        let mut caps: [Option<(u8, u8)>; 16] = [None; 16];
        let vendor = root.capabilities(function).filter(|c| c.id == CAP_VENDOR);
        for (slot, cap) in caps.iter_mut().zip(vendor) {
            *slot = Some(((cap.private_header >> 8) as u8, cap.offset));
        }
        for (cfg_type, off) in caps.iter().flatten().copied() {
            let bar = cfg_read(ecam, function, off.wrapping_add(4)) as u8;
            let offset = cfg_read(ecam, function, off.wrapping_add(8));
            let length = cfg_read(ecam, function, off.wrapping_add(12));
            let Ok(Some(info)) = root.bar_info(function, bar) else {
                continue;
            };
            let Some((base, size)) = info.memory_address_size() else {
                continue;
            };
            if u64::from(offset) + u64::from(length) > size || base == 0 {
                continue;
            }
            let addr = base + u64::from(offset);
            if crate::identity::region(addr, length.into()).is_err() {
                continue;
            }
            match cfg_type {
                CFG_COMMON if common.is_none() => common = Some(addr),
                CFG_NOTIFY if notify.is_none() => {
                    let mult = cfg_read(ecam, function, off.wrapping_add(16));
                    notify = Some((addr, u64::from(mult), u64::from(length)));
                }
                CFG_DEVICE if device.is_none() && length as usize >= TAG_LEN + 4 => {
                    device = Some(addr)
                }
                _ => {}
            }
        }
        // bar_info turns decoding off and back on; make sure it is on.
        root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
        Self {
            common,
            notify,
            device,
        }
    }
}

/// Writes 0 to the device status of any modern virtio-pci function and waits (up to
/// `timeout_ns`) until the device reads back 0, as VIRTIO 1.2 §4.1.4.3.2 asks before its
/// memory may be reused. False if the function has no common configuration or did not finish.
pub fn reset_function(
    root: &mut PciRoot<MmioCam<'static>>,
    ecam: u64,
    function: DeviceFunction,
    clock: &Clock,
    timeout_ns: u64,
) -> bool {
    match Capabilities::find(root, ecam, function).common {
        Some(common) => reset_common(common, clock, timeout_ns),
        None => false,
    }
}

pub(crate) fn reset_common(common: u64, clock: &Clock, timeout_ns: u64) -> bool {
    write::<u8>(common + DEVICE_STATUS, 0);
    let start = clock.now_ns();
    while read::<u8>(common + DEVICE_STATUS) != 0 {
        if clock.now_ns().wrapping_sub(start) > timeout_ns {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

impl FsDevice {
    /// Binds `function` (a 1af4:105a function on the bus behind `ecam`) and brings it up.
    pub fn open(
        root: &mut PciRoot<MmioCam<'static>>,
        ecam: u64,
        function: DeviceFunction,
        timeout_ns: u64,
    ) -> Result<Self, FsError> {
        let caps = Capabilities::find(root, ecam, function);
        let common = caps.common.ok_or(FsError::Capability(CFG_COMMON))?;
        let notify = caps.notify.ok_or(FsError::Capability(CFG_NOTIFY))?;
        let device = caps.device.ok_or(FsError::Capability(CFG_DEVICE))?;

        write::<u8>(common + DEVICE_STATUS, 0);
        write::<u8>(common + DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        write::<u32>(common + DEVICE_FEATURE_SELECT, 1);
        if read::<u32>(common + DEVICE_FEATURE) & VERSION_1_HIGH == 0 {
            return Err(FsError::Features);
        }
        write::<u32>(common + DRIVER_FEATURE_SELECT, 0);
        write::<u32>(common + DRIVER_FEATURE, 0);
        write::<u32>(common + DRIVER_FEATURE_SELECT, 1);
        write::<u32>(common + DRIVER_FEATURE, VERSION_1_HIGH);
        let ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        write::<u8>(common + DEVICE_STATUS, ok);
        if read::<u8>(common + DEVICE_STATUS) & STATUS_FEATURES_OK == 0 {
            return Err(FsError::Features);
        }
        let hiprio = Self::setup_queue(common, notify, HIPRIO_QUEUE)?;
        let queue = match Self::setup_queue(common, notify, REQUEST_QUEUE) {
            Ok(q) => q,
            Err(e) => {
                // Before DRIVER_OK the device uses no ring, so after a reset the hiprio pages
                // can go back to the pool (a hot-plug loop retries failing devices).
                write::<u8>(common + DEVICE_STATUS, 0);
                hiprio.free();
                return Err(e);
            }
        };
        let mut tag = [0u8; TAG_LEN];
        for (i, b) in tag.iter_mut().enumerate() {
            *b = read::<u8>(device + i as u64);
        }
        let num_request_queues = read::<u32>(device + TAG_LEN as u64);
        write::<u8>(common + DEVICE_STATUS, ok | STATUS_DRIVER_OK);
        Ok(Self {
            common,
            queue,
            _hiprio: hiprio,
            tag,
            num_request_queues,
            failed: false,
            timeout_ns,
        })
    }

    pub(crate) fn setup_queue(
        common: u64,
        notify: (u64, u64, u64),
        index: u16,
    ) -> Result<Queue, FsError> {
        write::<u16>(common + QUEUE_SELECT, index);
        let max = read::<u16>(common + QUEUE_SIZE);
        if max == 0 {
            return Err(FsError::NoQueue(index));
        }
        let size = max.min(QUEUE_ENTRIES);
        write::<u16>(common + QUEUE_SIZE, size);
        let (desc, avail, used) = (dma_page(), dma_page(), dma_page());
        write::<u64>(common + QUEUE_DESC, desc);
        write::<u64>(common + QUEUE_DRIVER, avail);
        write::<u64>(common + QUEUE_DEVICE, used);
        let off = u64::from(read::<u16>(common + QUEUE_NOTIFY_OFF)).saturating_mul(notify.1);
        if off.saturating_add(2) > notify.2 {
            // Not enabled, so the device never used these pages.
            for reg in [QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE] {
                write::<u64>(common + reg, 0);
            }
            for page in [desc, avail, used] {
                free_pages(page, 1);
            }
            return Err(FsError::Capability(CFG_NOTIFY));
        }
        write::<u16>(common + QUEUE_ENABLE, 1);
        Ok(Queue {
            index,
            size,
            desc,
            avail,
            used,
            notify: notify.0 + off,
            avail_idx: 0,
            used_idx: 0,
        })
    }

    /// Resets the device (bounded by the request wait) and gives its ring pages back to the DMA
    /// pool. False if the device did not acknowledge the reset in time; its pages are then kept
    /// out of the pool, since the device may still write to them.
    pub fn close(self, clock: &Clock) -> bool {
        if !reset_common(self.common, clock, self.timeout_ns) {
            return false;
        }
        self.queue.free();
        self._hiprio.free();
        true
    }

    /// The tag, without its NUL padding.
    pub fn tag(&self) -> &[u8] {
        let end = self.tag.iter().position(|&b| b == 0).unwrap_or(TAG_LEN);
        self.tag.get(..end).unwrap_or(&[])
    }

    /// Sends `request` (device-readable) and waits for the device to fill `reply`
    /// (device-writable); returns the used length. Both buffers must be DMA-reachable
    /// (identity-mapped probe memory).
    pub fn transact(
        &mut self,
        request: &[u8],
        reply: &mut [u8],
        clock: &Clock,
    ) -> Result<usize, FsError> {
        if self.failed || read::<u8>(self.common + DEVICE_STATUS) & STATUS_NEEDS_RESET != 0 {
            self.failed = true;
            return Err(FsError::Failed);
        }
        let rlen = u32::try_from(request.len()).map_err(|_| FsError::TooLarge(request.len()))?;
        let wlen = u32::try_from(reply.len()).map_err(|_| FsError::TooLarge(reply.len()))?;
        let q = &mut self.queue;
        Self::put_desc(q.desc, 0, request.as_ptr() as u64, rlen, DESC_F_NEXT, 1);
        Self::put_desc(q.desc, 1, reply.as_mut_ptr() as u64, wlen, DESC_F_WRITE, 0);
        let slot = u64::from(q.avail_idx % q.size);
        write::<u16>(q.avail + 4 + 2 * slot, 0);
        fence(Ordering::SeqCst);
        q.avail_idx = q.avail_idx.wrapping_add(1);
        write::<u16>(q.avail + 2, q.avail_idx);
        fence(Ordering::SeqCst);
        write::<u16>(q.notify, q.index);
        let start = clock.now_ns();
        loop {
            fence(Ordering::SeqCst);
            if read::<u16>(q.used + 2) != q.used_idx {
                break;
            }
            if clock.now_ns().wrapping_sub(start) > self.timeout_ns
                || read::<u8>(self.common + DEVICE_STATUS) & STATUS_NEEDS_RESET != 0
            {
                self.failed = true;
                return Err(FsError::Timeout);
            }
            core::hint::spin_loop();
        }
        fence(Ordering::SeqCst);
        let elem = q.used + 4 + 8 * u64::from(q.used_idx % q.size);
        let len = read::<u32>(elem + 4);
        q.used_idx = q.used_idx.wrapping_add(1);
        if len > wlen {
            return Err(FsError::BadUsedLength(len));
        }
        Ok(len as usize)
    }

    pub(crate) fn put_desc(table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let d = table + 16 * i;
        write::<u64>(d, addr);
        write::<u32>(d + 8, len);
        write::<u16>(d + 12, flags);
        write::<u16>(d + 14, next);
    }
}

/// Every 1af4:105a function on bus `bus`, in slot order (at most 4).
pub fn find(root: &PciRoot<MmioCam<'static>>, bus: u8) -> [Option<DeviceFunction>; 4] {
    let mut found = [None; 4];
    let fs = root
        .enumerate_bus(bus)
        .filter(|(_, info)| info.vendor_id == VIRTIO_VENDOR && info.device_id == FS_DEVICE_ID)
        .map(|(f, _)| f);
    for (slot, f) in found.iter_mut().zip(fs) {
        *slot = Some(f);
    }
    found
}

pub(crate) fn free_pages(paddr: u64, pages: usize) {
    let Some(vaddr) = core::ptr::NonNull::new(paddr as *mut u8) else {
        return;
    };
    // SAFETY: `paddr` came from `ProbeHal::dma_alloc` with this page count, and the caller
    // neither uses it again nor lets the (reset) device reach it.
    unsafe { ProbeHal::dma_dealloc(paddr, vaddr, pages) };
}

/// Gives a [`dma_buffer`] back to the DMA pool once no device can reach it any more.
pub fn release_dma_buffer(buffer: &'static mut [u8]) {
    free_pages(buffer.as_mut_ptr() as u64, buffer.len() / PAGE_SIZE);
}

/// Reply and request buffers: page-aligned DMA memory, allocated once for the whole run.
pub fn dma_buffer(pages: usize) -> &'static mut [u8] {
    let (paddr, _) = ProbeHal::dma_alloc(pages, BufferDirection::Both);
    // SAFETY: `dma_alloc` hands out these pages once, zeroed and identity-mapped; the slice is
    // the only reference to them for the rest of the run.
    unsafe { core::slice::from_raw_parts_mut(paddr as *mut u8, pages * PAGE_SIZE) }
}
