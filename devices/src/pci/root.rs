//! The root bus (segment 0, bus 0) and its three doors: the legacy configuration mechanism #1
//! ports, the ECAM (MMCONFIG) window, and the 32-bit MMIO window through which BARs decode.
//!
//! Slot 0 is the host bridge; devices take the lowest free slot, so a configuration always
//! yields the same `0000:00:XX.0` addresses and a slot freed by hot-unplug is reused by the
//! next device added. Only function 0 of each slot exists and only bus 0 answers; everything
//! else reads as all-ones (no device).
//!
//! BAR decoding follows what the guest programmed: every configuration write that touches a
//! BAR or the command register rebuilds the address map, so a guest that moves a BAR (or turns
//! memory decoding off while it sizes one) is routed correctly without the VMM's bus changing.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::config::{
    PciConfig, PciIdentity, BAR0_OFFSET, COMMAND_MEMORY_SPACE, COMMAND_OFFSET, NUM_BARS,
};
use crate::bus::BusDevice;

/// Number of device slots on a PCI bus.
pub const NUM_SLOTS: usize = 32;
/// The legacy configuration ports: address at 0xcf8, data at 0xcfc..0xd00.
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
pub const PCI_CONFIG_IO_PORT_LEN: u16 = 8;
/// ECAM stride: 4 KiB of configuration space per function, 8 functions per slot, 32 slots.
const ECAM_FUNCTION_SHIFT: u32 = 12;
const ECAM_SLOT_SHIFT: u32 = 15;
const ECAM_BUS_SHIFT: u32 = 20;

/// Errors building the root bus (host side).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciRootError {
    #[error("all {NUM_SLOTS} slots of bus 0 are taken")]
    NoFreeSlot,
    #[error("slot {0} is taken or does not exist")]
    SlotTaken(u8),
}

/// A function on the root bus, as the bus sees it.
///
/// Configuration and BAR accesses come straight from the guest with any offset and width up to
/// 8 bytes; implementations answer unknown registers with zeros and ignore bad writes.
pub trait PciDevice: Send {
    /// The configuration header, for the bus to know the BARs and the command register.
    fn config(&self) -> &PciConfig;
    /// A read of configuration space at `offset` (0..4096).
    fn read_config(&mut self, offset: u64, data: &mut [u8]);
    /// A write of configuration space at `offset` (0..4096).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// A read of BAR `bar` at `offset` from its start.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A write of BAR `bar` at `offset` from its start.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);
    /// Called after the guest changed where the BARs decode (new address, decoding on or
    /// off), so a device with doorbells registered elsewhere (ioeventfds) can follow them.
    fn bars_changed(&mut self) {}
}

/// The host bridge at 00:00.0: identification only.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    pub fn new() -> Self {
        Self {
            config: PciConfig::new(&PciIdentity {
                // Red Hat's "PCIe host bridge" ID, which guests bind no driver to.
                vendor_id: 0x1b36,
                device_id: 0x0008,
                revision: 0,
                class_code: 0x06_00_00,
                subsystem_vendor_id: 0x1b36,
                subsystem_id: 0,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BarMapping {
    start: u64,
    size: u64,
    slot: usize,
    bar: usize,
}

type SlotDevice = Arc<Mutex<dyn PciDevice>>;

/// The devices of bus 0 and the current BAR address map. Slots change at run time
/// (hot-plug), so they sit behind a lock that configuration and BAR accesses only read.
pub struct PciRoot {
    slots: RwLock<Vec<Option<SlotDevice>>>,
    bar_map: RwLock<Vec<BarMapping>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a device panicked; with panic=abort that cannot happen in
    // production, so recover the guard rather than spread the failure.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PciRoot {
    /// A bus holding only the host bridge at slot 0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<SlotDevice>> = vec![None; NUM_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        Self {
            slots: RwLock::new(slots),
            bar_map: RwLock::new(Vec::new()),
        }
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<SlotDevice>>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lowest free slot, if any.
    pub fn free_slot(&self) -> Option<u8> {
        self.read_slots()
            .iter()
            .position(Option::is_none)
            .and_then(|s| u8::try_from(s).ok())
    }

    /// Puts `device` in the lowest free slot and returns the slot number.
    pub fn add_device(&self, device: SlotDevice) -> Result<u8, PciRootError> {
        let slot = self.free_slot().ok_or(PciRootError::NoFreeSlot)?;
        self.insert_device(slot, device)?;
        Ok(slot)
    }

    /// Puts `device` in `slot`, which must be free.
    pub fn insert_device(&self, slot: u8, device: SlotDevice) -> Result<(), PciRootError> {
        {
            let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
            match slots.get_mut(usize::from(slot)) {
                Some(entry @ None) => *entry = Some(device),
                _ => return Err(PciRootError::SlotTaken(slot)),
            }
        }
        self.refresh_bars(usize::from(slot));
        Ok(())
    }

    /// Takes the device out of `slot` (never the host bridge): it stops decoding at once and
    /// the slot is free for the next device. Returns the device so the caller can shut it down.
    pub fn remove_device(&self, slot: u8) -> Option<SlotDevice> {
        if slot == 0 {
            return None;
        }
        let removed = {
            let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
            slots.get_mut(usize::from(slot)).and_then(Option::take)
        };
        let mut map = self.bar_map.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|m| m.slot != usize::from(slot));
        removed
    }

    /// Number of occupied slots, the host bridge included.
    pub fn len(&self) -> usize {
        self.read_slots().iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn device(&self, bus: u32, slot: u32, function: u32) -> Option<SlotDevice> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.read_slots().get(slot as usize).cloned().flatten()
    }

    /// A configuration read of bus/slot/function at `offset`; absent functions read all-ones.
    pub fn config_read(&self, bus: u32, slot: u32, function: u32, offset: u64, data: &mut [u8]) {
        match self.device(bus, slot, function) {
            Some(dev) => lock(&dev).read_config(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write; writes to absent functions vanish.
    pub fn config_write(&self, bus: u32, slot: u32, function: u32, offset: u64, data: &[u8]) {
        let Some(dev) = self.device(bus, slot, function) else {
            return;
        };
        let touches =
            |lo: u64, hi: u64| offset < hi && offset.saturating_add(data.len() as u64) > lo;
        let bar_end = (BAR0_OFFSET + NUM_BARS * 4) as u64;
        let relevant = touches(BAR0_OFFSET as u64, bar_end)
            || touches(COMMAND_OFFSET as u64, COMMAND_OFFSET as u64 + 2);
        let mut dev = lock(&dev);
        dev.write_config(offset, data);
        if relevant {
            dev.bars_changed();
            drop(dev);
            self.refresh_bars(slot as usize);
        }
    }

    /// Rebuilds the map entries of `slot` from its header.
    fn refresh_bars(&self, slot: usize) {
        let Some(dev) = self.read_slots().get(slot).cloned().flatten() else {
            return;
        };
        let fresh: Vec<BarMapping> = {
            let dev = lock(&dev);
            let cfg = dev.config();
            if cfg.command() & COMMAND_MEMORY_SPACE == 0 {
                Vec::new()
            } else {
                cfg.memory_bars()
                    .map(|(bar, start)| BarMapping {
                        start,
                        size: bar.size,
                        slot,
                        bar: bar.index,
                    })
                    .collect()
            }
        };
        let mut map = self.bar_map.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|m| m.slot != slot);
        map.extend(fresh);
    }

    /// Finds the BAR decoding `[addr, addr + len)`. Where a guest made two BARs overlap, the
    /// lower slot wins, the way a real bus would see contention: some answer, never a crash.
    fn bar_at(&self, addr: u64, len: usize) -> Option<(BarMapping, u64)> {
        let map = self.bar_map.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .filter(|m| {
                addr >= m.start
                    && (addr - m.start)
                        .checked_add(len as u64)
                        .is_some_and(|end| end <= m.size)
            })
            .min_by_key(|m| m.slot)
            .map(|m| (*m, addr - m.start))
    }

    /// An MMIO read at guest-physical `addr`; returns false if no BAR decodes it.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((m, offset)) = self.bar_at(addr, data.len()) else {
            return false;
        };
        match self.read_slots().get(m.slot).cloned().flatten() {
            Some(dev) => {
                lock(&dev).read_bar(m.bar, offset, data);
                true
            }
            None => false,
        }
    }

    /// An MMIO write at guest-physical `addr`; returns false if no BAR decodes it.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((m, offset)) = self.bar_at(addr, data.len()) else {
            return false;
        };
        match self.read_slots().get(m.slot).cloned().flatten() {
            Some(dev) => {
                lock(&dev).write_bar(m.bar, offset, data);
                true
            }
            None => false,
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// Configuration mechanism #1: a 32-bit address register at 0xcf8 (enable bit 31, bus 23:16,
/// slot 15:11, function 10:8, register 7:2) and a data window at 0xcfc..0xd00.
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root, address: 0 }
    }

    /// The target of a data-window access at byte `offset` (0..4) of the window.
    fn target(&self, offset: u64) -> Option<(u32, u32, u32, u64)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let slot = (self.address >> 11) & 0x1f;
        let function = (self.address >> 8) & 0x7;
        let register = u64::from(self.address & 0xfc);
        Some((bus, slot, function, register + offset))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 if offset - 4 + data.len() as u64 <= 4 => match self.target(offset - 4) {
                Some((bus, slot, function, reg)) => {
                    self.root.config_read(bus, slot, function, reg, data)
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            4..=7 if offset - 4 + data.len() as u64 <= 4 => {
                if let Some((bus, slot, function, reg)) = self.target(offset - 4) {
                    self.root.config_write(bus, slot, function, reg, data);
                }
            }
            _ => {}
        }
    }
}

/// PCI Express enhanced configuration access (ECAM): bus, slot, function and register are
/// the bits of the offset into the window the MCFG table describes.
pub struct PciConfigMmio {
    root: Arc<PciRoot>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root }
    }

    fn decode(offset: u64, len: usize) -> Option<(u32, u32, u32, u64)> {
        let register = offset & 0xfff;
        // An access may not cross from one function's space into the next.
        if register + len as u64 > 0x1000 || len > 8 {
            return None;
        }
        let bus = u32::try_from(offset >> ECAM_BUS_SHIFT).ok()?;
        let slot = ((offset >> ECAM_SLOT_SHIFT) & 0x1f) as u32;
        let function = ((offset >> ECAM_FUNCTION_SHIFT) & 0x7) as u32;
        Some((bus, slot, function, register))
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::decode(offset, data.len()) {
            Some((bus, slot, function, reg)) => {
                self.root.config_read(bus, slot, function, reg, data)
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, slot, function, reg)) = Self::decode(offset, data.len()) {
            self.root.config_write(bus, slot, function, reg, data);
        }
    }
}

/// The MMIO window BARs are allocated from, placed on the VMM's MMIO bus at `base`: it
/// forwards each access to whichever BAR decodes the address now.
pub struct PciMmioWindow {
    root: Arc<PciRoot>,
    base: u64,
}

impl PciMmioWindow {
    pub fn new(root: Arc<PciRoot>, base: u64) -> Self {
        Self { root, base }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let ok = self
            .base
            .checked_add(offset)
            .is_some_and(|addr| self.root.mmio_read(addr, data));
        if !ok {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(addr) = self.base.checked_add(offset) {
            self.root.mmio_write(addr, data);
        }
    }
}

#[cfg(test)]
mod tests;
