//! The ACPI Generic Event Device (ACPI 6.5 §5.6.9): how a hardware-reduced platform, which has
//! no fixed power button and no GPE blocks, tells the guest that something happened. The VMM
//! sets an event bit and raises the GED's interrupt; the guest's AML (`_EVT`, see the DSDT)
//! reads the event register — which hands over and clears the pending bits — and notifies the
//! device the bit stands for (the power button, `PNP0C0C`, with 0x80).
//!
//! Register map relative to [`GED_PORT`]: one byte, read-to-clear; writes are ignored.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// The event register's port; the device decodes [`GED_PORT_LEN`] port from here.
pub const GED_PORT: u16 = 0x610;
pub const GED_PORT_LEN: u16 = 1;
/// The GED's interrupt (an ISA line no other device uses; edge-triggered, active-high).
pub const GED_IRQ: u32 = 5;
/// Event bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u8 = 1 << 0;
/// Event bit: a PCI slot gained a device or the host asks for one to be ejected (the DSDT's
/// `\_SB_.PCI0.PCNT` reads the hot-plug registers and notifies the slots).
pub const EVENT_PCI_HOTPLUG: u8 = 1 << 1;

/// The guest-visible register, shared with whoever raises events.
pub struct Ged {
    pending: AtomicU8,
    irq: EventFd,
}

impl Ged {
    /// A GED raising `irq` (an irqfd the VMM bound to [`GED_IRQ`]).
    pub fn new(irq: EventFd) -> Arc<Self> {
        Arc::new(Self {
            pending: AtomicU8::new(0),
            irq,
        })
    }

    /// Marks `events` pending and interrupts the guest.
    pub fn raise(&self, events: u8) -> std::io::Result<()> {
        self.pending.fetch_or(events, Ordering::AcqRel);
        self.irq.write(1)
    }

    fn take(&self) -> u8 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

/// The bus face of a [`Ged`].
pub struct GedPort(pub Arc<Ged>);

impl BusDevice for GedPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(first) = data.first_mut() {
                *first = self.0.take();
            }
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_interrupts_once_and_reading_hands_it_over() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ged = Ged::new(irq.try_clone().unwrap());
        let mut port = GedPort(ged.clone());
        let mut byte = [0xffu8];
        port.read(0, &mut byte);
        assert_eq!(byte, [0], "nothing pending");
        ged.raise(EVENT_POWER_BUTTON).unwrap();
        assert_eq!(irq.read().unwrap(), 1, "the interrupt fired");
        port.write(0, &[0xff]);
        let mut wide = [0xffu8; 4];
        port.read(0, &mut wide);
        assert_eq!(wide, [EVENT_POWER_BUTTON, 0, 0, 0]);
        port.read(0, &mut byte);
        assert_eq!(byte, [0], "reading cleared it");
    }
}
