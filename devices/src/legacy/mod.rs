//! PC legacy devices on the port-I/O bus: the COM1 UART, the boot-progress marker port, the
//! ACPI power-management registers, the ACPI Generic Event Device and a minimal i8042
//! keyboard controller.
//!
//! These are the devices a direct-booted guest touches before any PCI device exists: Linux and
//! the probe guest print to COM1, the probe reports its progress through the marker port, and
//! both leave the VM through the ACPI sleep/reset registers (or, for Linux `reboot=k`, the
//! i8042 reset line). Each device is a [`crate::bus::BusDevice`] with offsets relative to its
//! base port; the port numbers below are the contract with the VMM (which places the devices)
//! and with the ACPI tables (which describe them to the guest).

pub mod acpi_pm;
pub mod boot_marker;
pub mod ged;
pub mod i8042;
pub mod serial;

use std::fmt;
use std::time::{Duration, Instant};

/// Logs guest misbehaviour (bad register accesses) at `warn`, but at most [`Self::BURST`]
/// messages per [`Self::WINDOW`]: a guest that hammers a port must not be able to flood the
/// host log. Suppressed messages are counted and reported when the next window opens.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    const BURST: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(1);

    pub(crate) fn warn(&mut self, args: fmt::Arguments<'_>) {
        let now = Instant::now();
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
        if expired {
            if self.suppressed > 0 {
                log::warn!("{} similar messages suppressed", self.suppressed);
            }
            self.window_start = Some(now);
            self.in_window = 0;
            self.suppressed = 0;
        }
        if self.in_window < Self::BURST {
            self.in_window += 1;
            log::warn!("{args}");
        } else {
            self.suppressed += 1;
        }
    }

    /// How many messages the current window has dropped so far.
    #[cfg(test)]
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// The low byte of a port access of any width: byte-wide registers take `outw`/`outl` as
/// a write of their low byte, the way an ISA bus drops the upper data lines.
pub(crate) fn low_byte(data: &[u8]) -> Option<u8> {
    data.first().copied()
}

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_drops_after_a_burst() {
        let mut log = RateLimitedLog::default();
        for i in 0..RateLimitedLog::BURST + 5 {
            log.warn(format_args!("bad access {i}"));
        }
        assert_eq!(log.suppressed(), 5);
    }

    #[test]
    fn low_byte_of_any_width() {
        assert_eq!(low_byte(&[0x34, 0x12]), Some(0x34));
        assert_eq!(low_byte(&[]), None);
    }
}
