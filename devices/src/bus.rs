//! Address-range dispatch for port I/O and MMIO exits.
//!
//! A vCPU exit carries an absolute address; the bus finds the one device whose range holds it
//! and passes the offset into that range, so devices never see absolute addresses and can be
//! moved (PCI BAR relocation) without knowing it. Ranges never overlap: insertion refuses it,
//! which keeps lookup a single ordered-map probe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through port I/O or MMIO.
///
/// Accesses come straight from a guest: `data` may have any length the instruction allows and
/// the offset may point anywhere inside the device's range. Implementations must treat both as
/// hostile (answer reads of unknown registers with all-ones or zeros, ignore bad writes).
pub trait BusDevice: Send {
    /// Fills `data` with the value the guest reads at `offset` within the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Applies a guest write of `data` at `offset` within the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from building or using a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    InvalidRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}+{other_len:#x}")]
    Overlap {
        base: u64,
        len: u64,
        other: u64,
        other_len: u64,
    },
    #[error("no device at bus address {0:#x}")]
    NoDevice(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An ordered set of non-overlapping address ranges, each owned by one device.
///
/// Cloning a bus is cheap and shares the devices: every vCPU thread holds its own clone.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        // The only ranges that can overlap are the last one starting below `end`.
        if let Some((&other, entry)) = self.ranges.range(..end).next_back() {
            if other + entry.len > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other,
                    other_len: entry.len,
                });
            }
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the device whose range starts at `base`.
    pub fn remove(&mut self, base: u64) -> Result<(), BusError> {
        self.ranges
            .remove(&base)
            .map(|_| ())
            .ok_or(BusError::NoDevice(base))
    }

    fn resolve(&self, addr: u64, len: usize) -> Option<(u64, &Entry)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the range, or no device answers it.
        let end = offset.checked_add(len as u64)?;
        (end <= entry.len).then_some((offset, entry))
    }

    /// Dispatches a guest read. Returns `false` (leaving `data` untouched) if no device owns
    /// the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, entry)) => {
                // A poisoned lock means a device panicked; with panic=abort that cannot
                // happen in production, so recover the guard rather than spread the failure.
                let mut dev = entry.device.lock().unwrap_or_else(|e| e.into_inner());
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest write. Returns `false` if no device owns the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, entry)) => {
                let mut dev = entry.device.lock().unwrap_or_else(|e| e.into_inner());
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_and_refuses_partial_accesses() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f9, &[7]));
        assert_eq!(dev.lock().unwrap().last_write, Some((1, vec![7])));
        let mut w = [0u8; 4];
        assert!(!bus.read(0x3fe, &mut w), "access crossing the end");
        assert!(!bus.read(0x3f7, &mut b), "below the range");
        assert!(!bus.read(0x400, &mut b), "above the range");
    }

    #[test]
    fn refuses_overlaps_and_empty_ranges() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(dev.clone(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0xf8, 0x9),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0x200, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(dev.clone(), 0x110, 0x10).unwrap();
        bus.insert(dev, 0xf0, 0x10).unwrap();
        bus.remove(0x100).unwrap();
        assert_eq!(bus.remove(0x100), Err(BusError::NoDevice(0x100)));
    }
}
