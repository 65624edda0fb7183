//! The guest-physical memory map of an x86-64 podvisor VM.
//!
//! Every address the VMM writes boot data to, and every range it tells the guest about through
//! e820 or the PVH memory map, is fixed here so that the loader, the ACPI builder and the device
//! wiring agree without talking to each other. The map follows the PC conventions a Linux guest
//! expects (real-mode area, EBDA, BIOS area, kernel at 1 MiB, a 32-bit MMIO hole below 4 GiB):
//!
//! ```text
//! 0x0000_0000 ..0x0000_0500   real-mode IVT + BIOS data area (RAM, left zero)
//! 0x0000_0500 ..0x0000_0528   boot GDT (5 entries)                    GDT_START
//! 0x0000_0530 ..0x0000_0538   boot IDT (empty, limit 0)               IDT_START
//! 0x0000_6000 ..0x0000_7000   PVH hvm_start_info, module list, memmap PVH_INFO_START ..
//! 0x0000_7000 ..0x0000_8000   Linux boot_params ("zero page")         ZERO_PAGE_START
//! 0x0000_8000 ..0x0000_8ff0   boot stack (grows down)                 BOOT_STACK_POINTER
//! 0x0000_9000 ..0x0000_f000   identity page tables: PML4, PDPT, 4 PDs PML4_START ..
//! 0x0002_0000 ..0x0003_0000   kernel command line (NUL-terminated)    CMDLINE_START
//! 0x0009_fc00 ..0x000a_0000   EBDA (reserved in e820)                 EBDA_START
//! 0x000a_0000 ..0x000e_0000   legacy VGA/ROM hole (absent from e820)
//! 0x000e_0000 ..0x0010_0000   ACPI tables, RSDP first (reserved)      ACPI_START, RSDP_ADDR
//! 0x0010_0000 ..              kernel image (bzImage protected-mode part or ELF segments)
//!             .. top of low RAM: initramfs, page-aligned, below the kernel's initrd_addr_max
//! 0xc000_0000 ..0x1_0000_0000 32-bit MMIO hole (no RAM):              MMIO32_START
//!     0xc000_0000..0xe000_0000  device BARs / MMIO windows            MMIO32_DEVICES_START
//!     0xe000_0000..0xf000_0000  PCI ECAM (MMCONFIG, buses 0..255)     PCI_MMCONFIG_START
//!     0xfec0_0000               IOAPIC                                IOAPIC_START
//!     0xfee0_0000               local APIC                            LAPIC_START
//!     0xfffb_c000..0xfffc_0000  KVM identity-map page + TSS pages     KVM_IDENTITY_MAP_ADDRESS
//! 0x1_0000_0000 ..            RAM that did not fit below the hole     HIGH_RAM_START
//! ```
//!
//! Guest RAM is at most two slots: `[0, min(size, MMIO32_START))` and, if the VM has more,
//! `[HIGH_RAM_START, HIGH_RAM_START + size - MMIO32_START)`.

use std::ops::Range;

/// Start of the real-mode interrupt vector table; RAM from here is visible in e820.
pub const LOW_RAM_START: u64 = 0x0;

/// The GDT the VMM installs for direct boot: two null entries, code (selector 0x10, Linux's
/// `__BOOT_CS`), data (0x18, `__BOOT_DS`), TSS (0x20).
pub const GDT_START: u64 = 0x500;
/// Number of 8-byte descriptors at [`GDT_START`].
pub const GDT_ENTRIES: u64 = 5;
/// The IDT the VMM installs: empty (limit 0), so any early exception triple-faults visibly.
pub const IDT_START: u64 = 0x530;

/// PVH `hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h), passed in EBX.
pub const PVH_INFO_START: u64 = 0x6000;
/// The PVH module list (one `hvm_modlist_entry` for the initramfs) right after start info.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// The PVH memory map (`hvm_memmap_table_entry`, 24 bytes each) up to the zero page.
pub const PVH_MEMMAP_START: u64 = 0x6080;
/// How many PVH memmap entries fit between [`PVH_MEMMAP_START`] and [`ZERO_PAGE_START`].
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;

/// Linux `struct boot_params` (Documentation/arch/x86/zero-page.rst), passed in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;

/// Initial stack pointer for the boot vCPU; 16-byte aligned, below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Identity-mapping page tables for the 64-bit Linux entry: one PML4, one PDPT and four page
/// directories of 2 MiB pages covering the first 4 GiB (kernel, zero page, command line and
/// an initramfs anywhere in low RAM are all reachable).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Number of page directories after [`PDE_START`] (each maps 1 GiB).
pub const PDE_COUNT: u64 = 4;

/// The kernel command line, NUL-terminated.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Room reserved for the command line, terminator included. The kernel's own limit
/// (`cmdline_size` in the setup header) may be smaller and is checked too.
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;

/// Extended BIOS data area: the top 1 KiB of conventional memory, reserved in e820 because
/// Linux probes it for an MP table and keeps it out of the page allocator.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory (640 KiB).
pub const EBDA_END: u64 = 0xa_0000;

/// ACPI tables are written into `[ACPI_START, ACPI_END)`, the BIOS area Linux scans for the
/// RSDP when no pointer is handed over; it is reserved in e820.
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_END: u64 = 0x10_0000;
/// The RSDP sits at the start of the ACPI area (16-byte aligned, inside the scanned range).
pub const RSDP_ADDR: u64 = ACPI_START;

/// Where kernels are loaded: bzImage protected-mode code goes here, ELF kernels are linked here.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO hole: no RAM between 3 GiB and 4 GiB.
pub const MMIO32_START: u64 = 0xc000_0000;
pub const MMIO32_END: u64 = 0x1_0000_0000;
/// MMIO windows and BARs for devices, at the bottom of the hole.
pub const MMIO32_DEVICES_START: u64 = MMIO32_START;
pub const MMIO32_DEVICES_END: u64 = PCI_MMCONFIG_START;
/// PCI Express enhanced configuration space (ECAM), 1 MiB per bus, 256 buses.
pub const PCI_MMCONFIG_START: u64 = 0xe000_0000;
pub const PCI_MMCONFIG_SIZE: u64 = 0x1000_0000;
/// The in-kernel IOAPIC, at its architectural default address.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
/// The local APIC of every vCPU, at its architectural default address.
pub const LAPIC_START: u64 = 0xfee0_0000;
pub const LAPIC_SIZE: u64 = 0x1000;

/// KVM's three-page TSS area and its identity-map page (used by Intel hosts for real mode),
/// parked in the hole just below the firmware area where nothing else lives.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Guest RAM above the hole starts at 4 GiB.
pub const HIGH_RAM_START: u64 = MMIO32_END;

/// The smallest VM worth booting: room for the boot data, the ACPI area and a small kernel.
pub const MIN_MEMORY: u64 = 16 << 20;

// I/O ports are not part of this map: each legacy device owns its port numbers
// (`devices::legacy::{serial, boot_marker, acpi_pm, i8042}`) and the VMM places it there.

// The fixed addresses above must keep their order; checked at compile time.
const _: () = {
    assert!(PDE_START + PDE_COUNT * 0x1000 <= CMDLINE_START);
    assert!(MMIO32_START < PCI_MMCONFIG_START);
    assert!(PCI_MMCONFIG_START + PCI_MMCONFIG_SIZE <= IOAPIC_START);
    assert!(IOAPIC_START + IOAPIC_SIZE <= LAPIC_START);
    assert!(LAPIC_START + LAPIC_SIZE <= KVM_IDENTITY_MAP_ADDRESS);
    assert!(KVM_IDENTITY_MAP_ADDRESS + 0x1000 == KVM_TSS_ADDRESS);
    assert!(KVM_TSS_ADDRESS + 0x3000 <= MMIO32_END);
    assert!(RSDP_ADDR % 16 == 0);
    assert!(PVH_MEMMAP_MAX_ENTRIES >= 16);
};

/// Guest RAM for a VM of `mem_size` bytes, as (start, length) ranges in address order.
///
/// RAM below [`MMIO32_START`] comes first; whatever does not fit continues at
/// [`HIGH_RAM_START`]. Returns `None` if the high range would overflow the address space.
pub fn ram_ranges(mem_size: u64) -> Option<Vec<Range<u64>>> {
    let low = mem_size.min(MMIO32_START);
    let mut ranges = Vec::with_capacity(2);
    ranges.push(LOW_RAM_START..low);
    let high = mem_size - low;
    if high > 0 {
        let end = HIGH_RAM_START.checked_add(high)?;
        ranges.push(HIGH_RAM_START..end);
    }
    Some(ranges)
}

/// End of RAM below the MMIO hole: the highest address (exclusive) an initramfs may reach.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO32_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (GDT_START, GDT_START + GDT_ENTRIES * 8),
            (IDT_START, IDT_START + 8),
            (PVH_INFO_START, PVH_MODLIST_START),
            (PVH_MODLIST_START, PVH_MEMMAP_START),
            (PVH_MEMMAP_START, ZERO_PAGE_START),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (BOOT_STACK_POINTER - 0x800, BOOT_STACK_POINTER),
            (PML4_START, PDE_START + PDE_COUNT * 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
            (EBDA_START, EBDA_END),
            (ACPI_START, ACPI_END),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{:x?} overlaps {:x?}",
                pair[0],
                pair[1]
            );
        }
        assert!(areas.iter().all(|a| a.1 <= HIMEM_START));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // reason: one RAM range is the expected value
    fn ram_splits_around_the_hole() {
        assert_eq!(ram_ranges(512 << 20), Some(vec![0..512 << 20]));
        assert_eq!(ram_ranges(3 << 30), Some(vec![0..3 << 30]));
        assert_eq!(
            ram_ranges(5 << 30),
            Some(vec![0..3 << 30, 4 << 30..6 << 30])
        );
        assert_eq!(ram_ranges(u64::MAX), None);
        assert_eq!(low_ram_end(8 << 30), MMIO32_START);
        assert_eq!(low_ram_end(64 << 20), 64 << 20);
    }
}
