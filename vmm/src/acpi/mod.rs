//! ACPI tables for direct boot: how the guest learns about its CPUs, interrupt controllers,
//! legacy devices and how to power off or reset.
//!
//! Consumers are Linux (which finds the RSDP by scanning `[0xE0000, 0x100000)` or through the
//! PVH start info / boot params) and the probe guest. The platform is ACPI 6.5
//! *hardware-reduced* (§4.1): no PM1/GPE blocks, no SCI, no FACS; sleeping and reset go
//! through the FADT's SLEEP_CONTROL_REG / SLEEP_STATUS_REG / RESET_REG, which point at
//! [`devices::legacy::acpi_pm`].
//!
//! ```text
//! RSDP (rev 2, at layout::RSDP_ADDR) ─► XSDT ─┬► FACP (rev 6.5) ─► DSDT (\_S5_, CPUs, COM1)
//!                                             ├► APIC (LAPIC per vCPU, IOAPIC, IRQ0→GSI2, LINT1 NMI)
//!                                             └► MCFG (ECAM of PCI bus 0; with PCI0 in the DSDT)
//! ```
//!
//! Everything lives in `[layout::ACPI_START, layout::ACPI_END)`, which the VMM reserves in e820;
//! tables that do not fit are an error, never a silent overflow into RAM the guest owns.
//! Byte layouts come from the `acpi_tables` crate wherever it has them; the two MADT entries it
//! lacks (interrupt source override, local APIC NMI) are declared here with `zerocopy`.

mod dsdt;
mod fadt;
mod madt;
mod pci;

use std::ops::Range;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::layout;

/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"PODVSR";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"PODVISOR";
/// OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;

/// The most vCPUs the tables can describe: one xAPIC ID each, 0 to 254 (0xFF is broadcast).
pub const MAX_VCPUS: u32 = 255;

/// Tables start on this alignment; ACPI needs 4 for most, 8 reads cleanly in 64-bit guests.
const TABLE_ALIGN: u64 = 16;

/// What the tables describe. Grows with the platform (PCI host bridge, MCFG, hot-plug slots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; vCPU `i` has ACPI processor UID `i` and local APIC ID `i`.
    pub vcpus: u32,
    /// Whether COM1 ([`devices::legacy::serial`]) exists and goes into the DSDT.
    pub serial: bool,
    /// Whether the PCI root bus exists: MCFG table plus host bridge in the DSDT.
    pub pci: bool,
}

/// Errors from building or placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("{vcpus} vCPUs cannot be described in the MADT: xAPIC allows 1 to {MAX_VCPUS}")]
    VcpuCount { vcpus: u32 },
    #[error(
        "ACPI tables need [{start:#x}, {end:#x}), which overflows the reserved area ending at \
         {limit:#x}"
    )]
    TooLarge { start: u64, end: u64, limit: u64 },
    #[error("cannot write the {table} table to guest memory at {addr:#x}: {source}")]
    GuestMemory {
        table: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// Builds all tables for `config`, writes them into `mem` inside the reserved ACPI area and
/// returns the address of the RSDP (always [`layout::RSDP_ADDR`]), which the loader hands to
/// the guest (boot params `acpi_rsdp_addr`, PVH `rsdp_paddr`).
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    config: &AcpiConfig,
) -> Result<GuestAddress, AcpiError> {
    write_tables(mem, config, layout::ACPI_START..layout::ACPI_END)
}

/// Hands out aligned, non-overlapping addresses inside the ACPI area.
struct Placer {
    next: u64,
    area: Range<u64>,
}

impl Placer {
    fn place(&mut self, len: usize) -> Result<u64, AcpiError> {
        let start = self
            .next
            .checked_next_multiple_of(TABLE_ALIGN)
            .unwrap_or(u64::MAX);
        let end = start.saturating_add(len as u64);
        if end > self.area.end {
            return Err(AcpiError::TooLarge {
                start: self.area.start,
                end,
                limit: self.area.end,
            });
        }
        self.next = end;
        Ok(start)
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

fn write<M: GuestMemory>(
    mem: &M,
    table: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), AcpiError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| AcpiError::GuestMemory {
            table,
            addr,
            source,
        })
}

/// [`create_acpi_tables`] with the area as a parameter; the RSDP goes at its start.
fn write_tables<M: GuestMemory>(
    mem: &M,
    config: &AcpiConfig,
    area: Range<u64>,
) -> Result<GuestAddress, AcpiError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount {
            vcpus: config.vcpus,
        });
    }
    let mut placer = Placer {
        next: area.start,
        area: area.clone(),
    };
    let rsdp_addr = placer.place(Rsdp::len())?;

    // Build everything first, then write: a table that does not fit leaves guest memory
    // untouched.
    let dsdt = dsdt::build(config);
    let dsdt_addr = placer.place(dsdt.len())?;
    let fadt = fadt::build(dsdt_addr);
    let fadt_addr = placer.place(fadt.len())?;
    let madt = madt::build(config.vcpus);
    let madt_addr = placer.place(madt.len())?;
    let mcfg = match config.pci {
        true => Some(pci::mcfg()),
        false => None,
    };
    let mcfg_addr = match &mcfg {
        Some(t) => Some(placer.place(t.len())?),
        None => None,
    };

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if let Some(addr) = mcfg_addr {
        xsdt.add_entry(addr);
    }
    let xsdt = to_bytes(&xsdt);
    let xsdt_addr = placer.place(xsdt.len())?;
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    write(mem, "DSDT", dsdt_addr, &dsdt)?;
    write(mem, "FACP", fadt_addr, &fadt)?;
    write(mem, "APIC", madt_addr, &madt)?;
    if let (Some(addr), Some(t)) = (mcfg_addr, &mcfg) {
        write(mem, "MCFG", addr, t)?;
    }
    write(mem, "XSDT", xsdt_addr, &xsdt)?;
    write(mem, "RSDP", rsdp_addr, &rsdp)?;
    log::debug!(
        "ACPI tables at {:#x}..{:#x} for {} vCPUs",
        area.start,
        placer.next,
        config.vcpus
    );
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests;
