//! The PCI hot-plug register block the guest's AML (and the probe guest directly) talks to.
//!
//! The VMM puts a device in a slot, sets its bit in `UP` and raises the GED's hot-plug event;
//! the DSDT's `PCNT` method reads `UP` and `DOWN` and notifies the slots (device check for
//! arrivals, eject request for departures). The guest's driver lets go of a departing device
//! and its `_EJ0` method writes the slot's bit to `EJECT`; only then does the VMM take the
//! device off the bus. Register map from [`HOTPLUG_PORT`], 32-bit registers, bit N = slot N:
//!
//! | offset | name | access |
//! | --- | --- | --- |
//! | 0x0 | `UP` | read: slots that gained a device since the last read; reading clears |
//! | 0x4 | `DOWN` | read: slots the host asks the guest to eject; cleared per slot by `EJECT` |
//! | 0x8 | `EJECT` | write: slots the guest has released |
//! | 0xc | `PRESENT` | read: occupied slots (slot 0 is the host bridge) |

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::bus::BusDevice;

/// First port of the register block; [`HOTPLUG_PORT_LEN`] ports are decoded.
pub const HOTPLUG_PORT: u16 = 0xae00;
pub const HOTPLUG_PORT_LEN: u16 = 0x10;
pub const REG_UP: u64 = 0x0;
pub const REG_DOWN: u64 = 0x4;
pub const REG_EJECT: u64 = 0x8;
pub const REG_PRESENT: u64 = 0xc;

/// Called (from a vCPU thread, so it must not block) with the slots the guest just released.
pub type EjectHandler = Box<dyn Fn(u32) + Send + Sync>;

/// The hot-plug state shared by the VMM (which adds and asks to remove) and the guest.
pub struct HotplugController {
    up: AtomicU32,
    down: AtomicU32,
    present: AtomicU32,
    on_eject: EjectHandler,
}

impl HotplugController {
    /// A controller for a bus whose occupied slots are `present`.
    pub fn new(present: u32, on_eject: EjectHandler) -> Arc<Self> {
        Arc::new(Self {
            up: AtomicU32::new(0),
            down: AtomicU32::new(0),
            present: AtomicU32::new(present | 1),
            on_eject,
        })
    }

    /// A device now sits in `slot`.
    pub fn plugged(&self, slot: u8) {
        let bit = slot_bit(slot);
        self.present.fetch_or(bit, Ordering::AcqRel);
        self.up.fetch_or(bit, Ordering::AcqRel);
        self.down.fetch_and(!bit, Ordering::AcqRel);
    }

    /// Asks the guest to release `slot`.
    pub fn request_eject(&self, slot: u8) {
        self.down.fetch_or(slot_bit(slot), Ordering::AcqRel);
    }

    /// `slot` is empty again (its device is gone).
    pub fn unplugged(&self, slot: u8) {
        let bit = slot_bit(slot);
        self.present.fetch_and(!bit, Ordering::AcqRel);
        self.down.fetch_and(!bit, Ordering::AcqRel);
        self.up.fetch_and(!bit, Ordering::AcqRel);
    }

    pub fn present(&self) -> u32 {
        self.present.load(Ordering::Acquire)
    }

    pub fn pending_ejects(&self) -> u32 {
        self.down.load(Ordering::Acquire)
    }

    /// The guest released `slots`: only slots the host asked for count, so a guest cannot
    /// unplug devices on its own.
    fn eject(&self, slots: u32) {
        let asked = self.down.fetch_and(!slots, Ordering::AcqRel) & slots;
        if asked != 0 {
            (self.on_eject)(asked);
        }
    }
}

fn slot_bit(slot: u8) -> u32 {
    1u32.checked_shl(u32::from(slot)).unwrap_or(0) & !1
}

/// The bus face of a [`HotplugController`].
pub struct HotplugPorts(pub Arc<HotplugController>);

impl BusDevice for HotplugPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let c = &self.0;
        let value = match (offset, data.len()) {
            (REG_UP, 4) => c.up.swap(0, Ordering::AcqRel),
            (REG_DOWN, 4) => c.down.load(Ordering::Acquire),
            (REG_PRESENT, 4) => c.present.load(Ordering::Acquire),
            // Odd widths and offsets: nothing, and nothing consumed.
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        for (d, b) in data
            .iter_mut()
            .zip(bytes.iter().chain(std::iter::repeat(&0)))
        {
            *d = *b;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != REG_EJECT {
            return;
        }
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.0.eject(u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn read(ports: &mut HotplugPorts, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        ports.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn arrivals_departures_and_guest_acknowledgements() {
        let ejected = Arc::new(Mutex::new(Vec::new()));
        let seen = ejected.clone();
        let c = HotplugController::new(0b110, Box::new(move |s| seen.lock().unwrap().push(s)));
        let mut ports = HotplugPorts(c.clone());
        assert_eq!(read(&mut ports, REG_PRESENT), 0b111, "host bridge included");
        c.plugged(5);
        assert_eq!(read(&mut ports, REG_UP), 1 << 5);
        assert_eq!(read(&mut ports, REG_UP), 0, "reading clears");
        assert_eq!(read(&mut ports, REG_PRESENT), 0b111 | 1 << 5);
        // A guest may not unplug what the host did not ask for.
        ports.write(REG_EJECT, &(1u32 << 2).to_le_bytes());
        assert!(ejected.lock().unwrap().is_empty());
        c.request_eject(5);
        assert_eq!(read(&mut ports, REG_DOWN), 1 << 5);
        assert_eq!(read(&mut ports, REG_DOWN), 1 << 5, "reading does not clear");
        ports.write(REG_EJECT, &(1u32 << 5 | 1 << 2).to_le_bytes());
        assert_eq!(*ejected.lock().unwrap(), vec![1 << 5]);
        assert_eq!(read(&mut ports, REG_DOWN), 0);
        c.unplugged(5);
        assert_eq!(read(&mut ports, REG_PRESENT), 0b111);
        // Slot 0 and out-of-range slots are never touched.
        c.request_eject(0);
        c.request_eject(40);
        assert_eq!(read(&mut ports, REG_DOWN), 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let c = HotplugController::new(0, Box::new(|_| {}));
        c.plugged(3);
        let mut ports = HotplugPorts(c.clone());
        let mut b = [0xaau8; 2];
        ports.read(REG_UP, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(
            read(&mut ports, REG_UP),
            1 << 3,
            "a narrow read consumed nothing"
        );
        let mut big = [0xaau8; 8];
        ports.read(REG_PRESENT, &mut big);
        ports.read(0x7, &mut [0u8; 1]);
        ports.write(REG_EJECT, &[0xff]);
        ports.write(0x100, &[0xff; 4]);
    }
}
