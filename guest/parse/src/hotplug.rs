//! The hot-plug register block the VMM exposes for bus 0 (I/O ports 0xae00..0xae10, 32-bit
//! accesses), as the DSDT's slot methods use it and as the probe, which runs no AML, drives it
//! by polling; and the bookkeeping that turns register reads into add and eject events.

/// First port of the block.
pub const BASE: u16 = 0xae00;
/// Bitmap of slots where a device appeared since the last read (read-to-clear).
pub const UP: u16 = BASE;
/// Bitmap of slots the host asks the guest to eject (stays set until the guest acknowledges).
pub const DOWN: u16 = BASE + 4;
/// Write: bitmap of slots the guest has released (device reset); the host then removes them.
pub const EJECT: u16 = BASE + 8;
/// Bitmap of occupied slots (slot 0 is the host bridge).
pub const PRESENT: u16 = BASE + 12;
/// What PRESENT reads as when no controller decodes the ports.
pub const NO_CONTROLLER: u32 = 0xffff_ffff;
/// Slot 0 holds the host bridge, which is never plugged or ejected.
const HOST_BRIDGE: u32 = 1;

/// The set bits of a slot bitmap, lowest slot first.
pub fn slots(bitmap: u32) -> Slots {
    Slots(bitmap)
}

/// Iterator returned by [`slots`].
#[derive(Debug, Clone, Copy)]
pub struct Slots(u32);

impl Iterator for Slots {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.0 == 0 {
            return None;
        }
        let slot = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(slot as u8)
    }
}

/// What one poll of UP and DOWN asks the guest to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    /// Slots to bind (a device appeared).
    pub add: u32,
    /// Slots to release and acknowledge.
    pub eject: u32,
}

/// Remembers the ejects the guest already acknowledged whose DOWN bit the host has not cleared
/// yet, so a slow host does not make the guest release the same device twice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracker {
    acknowledged: u32,
}

impl Tracker {
    pub const fn new() -> Self {
        Self { acknowledged: 0 }
    }

    /// Turns one read of UP and DOWN into work. An acknowledged slot is forgotten once the host
    /// clears its DOWN bit or a device appears in it again. A register reading all ones is not
    /// decoded (no controller answered) and counts as empty; the host bridge's bit is ignored.
    pub fn poll(&mut self, up: u32, down: u32) -> Work {
        let decoded = |v: u32| {
            if v == NO_CONTROLLER {
                0
            } else {
                v & !HOST_BRIDGE
            }
        };
        let (up, down) = (decoded(up), decoded(down));
        self.acknowledged &= down & !up;
        Work {
            add: up,
            eject: down & !self.acknowledged,
        }
    }

    /// Records that the guest wrote `slot`'s bit to EJECT.
    pub fn acknowledged(&mut self, slot: u8) {
        if let Some(bit) = 1u32.checked_shl(u32::from(slot)) {
            self.acknowledged |= bit;
        }
    }
}
