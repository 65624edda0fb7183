//! How the guest finds the PCI root bus: the MCFG table (PCI Firmware 3.2 §4.1.2) gives the
//! ECAM window of segment 0, and the DSDT gets the host bridge `\_SB_.PCI0` (`PNP0A08`,
//! compatible `PNP0A03`, ACPI 6.5 §6.1.5) whose `_CRS` lists bus 0, the legacy configuration
//! ports and the MMIO window BARs are allocated from, plus a motherboard-resource device
//! (`PNP0C02`) reserving the ECAM window, which Linux requires before it trusts MCFG.
//!
//! The ranges come from [`crate::pci_devices`], which places the same devices on the buses.
//!
//! Hot-plug (ACPI PCI hot-plug, which Linux's `acpiphp` drives): every slot 1–31 is a device
//! `SLxx` under `PCI0` with `_ADR`, `_SUN` and an `_EJ0` that writes the slot's bit to the
//! hot-plug controller's `EJECT` register ([`devices::pci::hotplug`]). `PCI0.PCNT`, called by
//! the GED on its hot-plug event, reads `UP` and `DOWN` and notifies each slot: device check
//! (1) for an arrival, eject request (3) for a departure.

use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable, EISAName, ResourceTemplate};
use acpi_tables::mcfg::MCFG;
use devices::pci::hotplug::{HOTPLUG_PORT, HOTPLUG_PORT_LEN};
use devices::pci::root::{NUM_SLOTS, PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_LEN};

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
    let hid = aml::Name::new("_HID".into(), &EISAName::new("PNP0A08"));
    let cid = aml::Name::new("_CID".into(), &EISAName::new("PNP0A03"));
    let adr = aml::Name::new("_ADR".into(), &aml::ZERO);
    let seg = aml::Name::new("_SEG".into(), &aml::ZERO);
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let bbn = aml::Name::new("_BBN".into(), &aml::ZERO);
    let bus_range = AddressSpace::new_bus_number(0u16, u16::from(LAST_BUS));
    let config_ports = aml::IO::new(port, port, 1, port_len);
    let window = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::MMIO32_DEVICES_START as u32,
        window_end,
        None,
    );
    let crs = aml::Name::new(
        "_CRS".into(),
        &ResourceTemplate::new(vec![&bus_range, &config_ports, &window]),
    );
    let hp_port = u64::from(HOTPLUG_PORT);
    let hp_len = u64::from(HOTPLUG_PORT_LEN);
    let region = aml::OpRegion::new(
        "PCST".into(),
        aml::OpRegionSpace::SystemIO,
        &hp_port,
        &hp_len,
    );
    let fields = aml::Field::new(
        "PCST".into(),
        aml::FieldAccessType::DWord,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::WriteAsZeroes,
        vec![
            aml::FieldEntry::Named(*b"PCIU", 32),
            aml::FieldEntry::Named(*b"PCID", 32),
            aml::FieldEntry::Named(*b"B0EJ", 32),
            aml::FieldEntry::Named(*b"PRES", 32),
        ],
    );
    let slots = HotplugSlots::new();
    let pcnt = slots.pcnt();
    let mut children: Vec<&dyn acpi_tables::Aml> =
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs, &region, &fields];
    let slot_devices = slots.devices();
    children.extend(slot_devices.iter().map(|d| d as &dyn acpi_tables::Aml));
    children.push(&pcnt);
    dsdt.system_bus_device(&aml::Device::new("PCI0".into(), children));
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

/// The values the slot objects are built from, kept alive while the AML borrows them.
struct HotplugSlots {
    /// (slot, name, `_ADR`, bit)
    slots: Vec<(u8, String, u32, u32)>,
}

impl HotplugSlots {
    fn new() -> Self {
        let slots = (1..NUM_SLOTS)
            .filter_map(|s| u8::try_from(s).ok())
            .map(|s| (s, format!("SL{s:02X}"), u32::from(s) << 16, 1u32 << s))
            .collect();
        Self { slots }
    }

    /// `Device (SLxx) { _ADR, _SUN, Method (_EJ0, 1) { B0EJ = bit } }` per slot.
    fn devices(&self) -> Vec<SlotAml<'_>> {
        self.slots
            .iter()
            .map(|(slot, name, adr, bit)| SlotAml {
                name,
                slot: *slot,
                adr: *adr,
                bit: *bit,
            })
            .collect()
    }

    /// `PCNT`: notify each slot whose bit is set in `UP` (1) or `DOWN` (3).
    fn pcnt(&self) -> PcntAml<'_> {
        PcntAml { slots: self }
    }
}

struct SlotAml<'a> {
    name: &'a str,
    slot: u8,
    adr: u32,
    bit: u32,
}

impl acpi_tables::Aml for SlotAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let slot = u32::from(self.slot);
        let adr = aml::Name::new("_ADR".into(), &self.adr);
        let sun = aml::Name::new("_SUN".into(), &slot);
        let register = aml::Path::new("B0EJ");
        let eject = aml::Store::new(&register, &self.bit);
        let ej0 = aml::Method::new("_EJ0".into(), 1, false, vec![&eject]);
        aml::Device::new(self.name.into(), vec![&adr, &sun, &ej0]).to_aml_bytes(sink);
    }
}

struct PcntAml<'a> {
    slots: &'a HotplugSlots,
}

impl acpi_tables::Aml for PcntAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        let up = aml::Local(0);
        let down = aml::Local(1);
        let scratch = aml::Local(2);
        let device_check: u8 = 1;
        let eject_request: u8 = 3;
        let (pciu, pcid) = (aml::Path::new("PCIU"), aml::Path::new("PCID"));
        let read_up = aml::Store::new(&up, &pciu);
        let read_down = aml::Store::new(&down, &pcid);
        let paths: Vec<aml::Path> = self
            .slots
            .slots
            .iter()
            .map(|(_, name, _, _)| aml::Path::new(name))
            .collect();
        let mut checks = Vec::new();
        for ((_, _, _, bit), path) in self.slots.slots.iter().zip(&paths) {
            checks.push((
                aml::And::new(&scratch, &up, bit),
                aml::Notify::new(path, &device_check),
                aml::And::new(&scratch, &down, bit),
                aml::Notify::new(path, &eject_request),
                *bit,
            ));
        }
        let conditions: Vec<(aml::Equal, aml::Equal)> = checks
            .iter()
            .map(|(a, _, d, _, bit)| (aml::Equal::new(a, bit), aml::Equal::new(d, bit)))
            .collect();
        let ifs: Vec<(aml::If, aml::If)> = checks
            .iter()
            .zip(&conditions)
            .map(|((_, n_up, _, n_down, _), (c_up, c_down))| {
                (
                    aml::If::new(c_up, vec![n_up]),
                    aml::If::new(c_down, vec![n_down]),
                )
            })
            .collect();
        let mut body: Vec<&dyn acpi_tables::Aml> = vec![&read_up, &read_down];
        for (a, b) in &ifs {
            body.push(a);
            body.push(b);
        }
        aml::Method::new("PCNT".into(), 0, true, body).to_aml_bytes(sink);
    }
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
