//! How the guest finds the PCI root bus: the MCFG table (PCI Firmware 3.2 §4.1.2) gives the
//! ECAM window of segment 0, and the DSDT gets the host bridge `\_SB_.PCI0` (`PNP0A08`,
//! compatible `PNP0A03`, ACPI 6.5 §6.1.5) whose `_CRS` lists bus 0, the legacy configuration
//! ports and the MMIO window BARs are allocated from, plus a motherboard-resource device
//! (`PNP0C02`) reserving the ECAM window, which Linux requires before it trusts MCFG.
//!
//! The ranges come from [`crate::pci_devices`], which places the same devices on the buses.

use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable, EISAName, ResourceTemplate};
use acpi_tables::mcfg::MCFG;
use devices::pci::root::{PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_LEN};

use super::dsdt::Dsdt;
use super::{to_bytes, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout;
use crate::pci_devices::{ECAM_SIZE, LAST_BUS};

/// The MCFG bytes: one ECAM window, segment 0, buses 0..=[`LAST_BUS`].
pub(super) fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::PCI_MMCONFIG_START, 0, 0, LAST_BUS);
    to_bytes(&mcfg)
}

/// Adds `\_SB_.PCI0` and the ECAM reservation to the DSDT.
pub(super) fn add_host_bridge(dsdt: &mut Dsdt) {
    let port = PCI_CONFIG_IO_PORT;
    let port_len = PCI_CONFIG_IO_PORT_LEN as u8;
    let window_end = (layout::MMIO32_DEVICES_END - 1) as u32;
    dsdt.system_bus_device(&aml::Device::new(
        "PCI0".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &aml::Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &aml::Name::new("_ADR".into(), &aml::ZERO),
            &aml::Name::new("_SEG".into(), &aml::ZERO),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_BBN".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &AddressSpace::new_bus_number(0u16, u16::from(LAST_BUS)),
                    &aml::IO::new(port, port, 1, port_len),
                    &AddressSpace::new_memory(
                        AddressSpaceCacheable::NotCacheable,
                        true,
                        layout::MMIO32_DEVICES_START as u32,
                        window_end,
                        None,
                    ),
                ]),
            ),
        ],
    ));
    dsdt.system_bus_device(&aml::Device::new(
        "MRES".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &aml::Name::new("_UID".into(), &aml::ONE),
            &aml::Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&aml::Memory32Fixed::new(
                    false,
                    layout::PCI_MMCONFIG_START as u32,
                    ECAM_SIZE as u32,
                )]),
            ),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn mcfg_describes_bus_0_of_segment_0() {
        let t = mcfg();
        assert_eq!(&t[0..4], b"MCFG");
        assert_eq!(t.len(), 44 + 16);
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
        let entry = &t[44..];
        assert_eq!(
            u64::from_le_bytes(entry[0..8].try_into().unwrap()),
            layout::PCI_MMCONFIG_START
        );
        assert_eq!(&entry[8..12], &[0, 0, 0, LAST_BUS]);
    }

    #[test]
    fn dsdt_gets_a_host_bridge_and_the_ecam_reservation() {
        let mut dsdt = Dsdt::default();
        add_host_bridge(&mut dsdt);
        let t = dsdt.into_table();
        // PNP0A08, PNP0A03 and PNP0C02 as compressed EISA IDs.
        assert_eq!(count(&t, &[0x41, 0xd0, 0x0a, 0x08]), 1);
        assert_eq!(count(&t, &[0x41, 0xd0, 0x0a, 0x03]), 1);
        assert_eq!(count(&t, &[0x41, 0xd0, 0x0c, 0x02]), 1);
        // IO(Decode16, 0xcf8, 0xcf8, 1, 8)
        assert_eq!(
            count(&t, &[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]),
            1
        );
        // Memory32Fixed(ReadOnly, ECAM base, ECAM size)
        let mut fixed = vec![0x86, 0x09, 0x00, 0x00];
        fixed.extend_from_slice(&(layout::PCI_MMCONFIG_START as u32).to_le_bytes());
        fixed.extend_from_slice(&(ECAM_SIZE as u32).to_le_bytes());
        assert_eq!(count(&t, &fixed), 1);
    }
}
