//! The Fixed ACPI Description Table (ACPI 6.5 §5.2.9), for a hardware-reduced platform.
//!
//! With HW_REDUCED_ACPI set, the OS ignores every PM1/PM2/GPE/PM-timer field, so they stay
//! zero; what it does use is the DSDT pointer, the sleep registers (§4.8.3.7) and the reset
//! register (§4.8.3.6), all of which point at the I/O ports of `devices::legacy::acpi_pm`.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use devices::legacy::acpi_pm::{
    ACPI_PM_PORT, RESET_OFFSET, RESET_VALUE, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET,
};

use super::{to_bytes, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// IA-PC boot architecture flags (§5.2.9.3): no VGA to probe, no CMOS RTC (the VM has none;
/// wall-clock time comes from kvmclock), no i8042 in firmware (the controller on ports
/// 0x60/0x64 is only there for its reset line; Linux then skips probing it).
pub(super) const IAPC_BOOT_ARCH: u16 = IAPC_NO_VGA | IAPC_NO_CMOS_RTC;
const IAPC_NO_VGA: u16 = 1 << 2;
const IAPC_NO_CMOS_RTC: u16 = 1 << 5;

/// Identifies the VMM to the guest (FADT "Hypervisor Vendor Identity", §5.2.9).
pub(super) const HYPERVISOR_VENDOR_ID: u64 = u64::from_le_bytes(*b"PODVISOR");

/// A byte-wide register in I/O space.
fn io_byte(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The FADT bytes, pointing at the DSDT at `dsdt_addr` through X_DSDT.
pub(super) fn build(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button: a VM has neither.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.reset_reg = io_byte(ACPI_PM_PORT + RESET_OFFSET);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io_byte(ACPI_PM_PORT + SLEEP_CONTROL_OFFSET);
    fadt.sleep_status_reg = io_byte(ACPI_PM_PORT + SLEEP_STATUS_OFFSET);
    fadt.hypervisor_vendor_identity = HYPERVISOR_VENDOR_ID.into();
    to_bytes(&fadt.finalize())
}
