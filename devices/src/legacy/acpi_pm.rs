//! The ACPI power-management registers of a hardware-reduced platform.
//!
//! A hardware-reduced FADT (ACPI 6.5 §4.1, §4.8.3.7) has no PM1 blocks; the OS sleeps through
//! SLEEP_CONTROL_REG / SLEEP_STATUS_REG and resets through RESET_REG. This device provides
//! those three byte-wide registers in one block of I/O ports, which the FADT built by the VMM
//! points at. Only S5 (soft off) exists, because the DSDT declares only `\_S5_`; entering it,
//! or writing [`RESET_VALUE`] to the reset register, becomes a [`GuestRequest`] for the VMM.
//!
//! ```text
//! ACPI_PM_PORT + 0  SLEEP_CONTROL  write (SLP_TYP << 2) | SLP_EN; reads 0
//! ACPI_PM_PORT + 1  SLEEP_STATUS   WAK_STS (bit 7), never set: nothing wakes a VM that slept
//! ACPI_PM_PORT + 2  RESET          write RESET_VALUE to reset; reads 0
//! ACPI_PM_PORT + 3  reserved       reads 0, writes ignored
//! ```

use super::{low_byte, RateLimitedLog};
use crate::bus::BusDevice;
use crate::{GuestRequest, GuestRequestHandler};

/// The first I/O port of the register block.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Number of ports in the block.
pub const ACPI_PM_PORT_LEN: u16 = 4;
/// Offset of SLEEP_CONTROL_REG within the block.
pub const SLEEP_CONTROL_OFFSET: u16 = 0;
/// Offset of SLEEP_STATUS_REG within the block.
pub const SLEEP_STATUS_OFFSET: u16 = 1;
/// Offset of RESET_REG within the block.
pub const RESET_OFFSET: u16 = 2;
/// The value the FADT advertises as RESET_VALUE.
pub const RESET_VALUE: u8 = 0x06;
/// SLP_TYP of the S5 state, as published in the DSDT's `\_S5_` package.
pub const S5_SLP_TYP: u8 = 5;
/// SLP_EN in SLEEP_CONTROL_REG (ACPI 6.5 §4.8.3.7).
pub const SLP_EN: u8 = 1 << 5;
/// Shift of the 3-bit SLP_TYP field in SLEEP_CONTROL_REG.
pub const SLP_TYP_SHIFT: u8 = 2;

const SLP_TYP_MASK: u8 = 0x7;

/// The register block; see the module docs.
pub struct AcpiPm {
    on_request: GuestRequestHandler,
    bad_access: RateLimitedLog,
}

impl AcpiPm {
    /// `on_request` receives [`GuestRequest::PowerOff`] and [`GuestRequest::Reset`]; it runs on
    /// the vCPU thread inside the register write.
    pub fn new(on_request: GuestRequestHandler) -> Self {
        Self {
            on_request,
            bad_access: RateLimitedLog::default(),
        }
    }

    fn write_sleep_control(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            // Setting SLP_TYP without SLP_EN arms nothing.
            return;
        }
        let slp_typ = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if slp_typ == S5_SLP_TYP {
            log::info!("guest entered ACPI S5 (power off)");
            (self.on_request)(GuestRequest::PowerOff);
        } else {
            self.bad_access.warn(format_args!(
                "acpi-pm: sleep type {slp_typ} requested, only S5 ({S5_SLP_TYP}) exists"
            ));
        }
    }

    fn write_reset(&mut self, value: u8) {
        if value == RESET_VALUE {
            log::info!("guest wrote the ACPI reset register");
            (self.on_request)(GuestRequest::Reset);
        } else {
            self.bad_access.warn(format_args!(
                "acpi-pm: reset register written with {value:#04x}, expected {RESET_VALUE:#04x}"
            ));
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // SLEEP_CONTROL and RESET are write-only (read as zero), WAK_STS never gets set and
        // the reserved port reads zero too: every readable bit here is zero.
        data.fill(0);
        if offset >= u64::from(ACPI_PM_PORT_LEN) {
            self.bad_access
                .warn(format_args!("acpi-pm: read of unknown offset {offset:#x}"));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(value) = low_byte(data) else {
            return;
        };
        match offset {
            o if o == u64::from(SLEEP_CONTROL_OFFSET) => self.write_sleep_control(value),
            // Write-one-to-clear of a status bit that is never set: nothing to do.
            o if o == u64::from(SLEEP_STATUS_OFFSET) => {}
            o if o == u64::from(RESET_OFFSET) => self.write_reset(value),
            _ => self.bad_access.warn(format_args!(
                "acpi-pm: write of {value:#04x} to unknown offset {offset:#x}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn device() -> (AcpiPm, Arc<Mutex<Vec<GuestRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let pm = AcpiPm::new(Arc::new(move |r| sink.lock().unwrap().push(r)));
        (pm, seen)
    }

    const SLEEP_CONTROL: u64 = SLEEP_CONTROL_OFFSET as u64;
    const SLEEP_STATUS: u64 = SLEEP_STATUS_OFFSET as u64;
    const RESET: u64 = RESET_OFFSET as u64;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut pm, seen) = device();
        // The probe guest's write: (SLP_TYP << 2) | (1 << 5).
        pm.write(SLEEP_CONTROL, &[(5 << 2) | (1 << 5)]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::PowerOff]);
    }

    #[test]
    fn other_sleep_writes_do_nothing() {
        let (mut pm, seen) = device();
        pm.write(SLEEP_CONTROL, &[5 << 2]); // no SLP_EN
        pm.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]); // S3 does not exist
        pm.write(SLEEP_CONTROL, &[SLP_EN]); // S0
        pm.write(SLEEP_STATUS, &[0x80]); // clearing WAK_STS
        pm.write(SLEEP_CONTROL, &[]);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn reset_value_resets_and_others_are_ignored() {
        let (mut pm, seen) = device();
        pm.write(RESET, &[RESET_VALUE.wrapping_add(1)]);
        pm.write(3, &[RESET_VALUE]);
        pm.write(u64::MAX, &[RESET_VALUE]);
        assert!(seen.lock().unwrap().is_empty());
        // A word-wide write uses its low byte.
        pm.write(RESET, &[RESET_VALUE, 0xff]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
    }

    #[test]
    fn registers_read_as_zero() {
        let (mut pm, _seen) = device();
        for offset in 0..6 {
            let mut data = [0xaa; 4];
            pm.read(offset, &mut data);
            assert_eq!(data, [0; 4]);
        }
    }
}
