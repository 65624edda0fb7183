//! The Differentiated System Description Table: the AML namespace (ACPI 6.5 §5.2.11.1).
//!
//! ```text
//! \_S5_            Package {5, 0, 0, 0}   soft-off SLP_TYP for SLEEP_CONTROL_REG (§7.4.2)
//! \_SB_.Cnnn       ACPI0007 processor, _UID n = MADT processor UID (§8.4)
//! \_SB_.COM1       PNP0501 16550 at 0x3f8, IRQ 4 (when the VM has a serial port)
//! \_SB_.PCI0       PNP0A08 PCI root bridge, \_SB_.MRES PNP0C02 ECAM reservation (see pci.rs)
//! \_SB_.GED0       ACPI0013 Generic Event Device: IRQ 5, event byte at port 0x610, _EVT
//! \_SB_.PWRB       PNP0C0C power button, notified 0x80 by GED0 on the power-button event
//! ```
//!
//! The namespace is assembled from independent parts ([`Dsdt::system_bus_device`] and
//! [`Dsdt::root_object`]), so a PCI host bridge (`PNP0A08` with `_CRS` windows) and its
//! hot-plug slots become one more system-bus part without touching the others.

use acpi_tables::aml::{self, EISAName, Path, ResourceTemplate};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use devices::legacy::acpi_pm::S5_SLP_TYP;
use devices::legacy::ged::{
    EVENT_PCI_HOTPLUG, EVENT_POWER_BUTTON, GED_IRQ, GED_PORT, GED_PORT_LEN,
};
use devices::legacy::serial::{COM1_IRQ, COM1_PORT, SERIAL_PORT_LEN};

use super::{to_bytes, AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// DSDT revision 2: the AML interpreter uses 64-bit integers (§5.2.11.1).
const DSDT_REVISION: u8 = 2;
/// Size of the common table header that precedes the AML.
const HEADER_LEN: u32 = 36;

/// Parts of the namespace, each already encoded as AML.
#[derive(Default)]
pub(super) struct Dsdt {
    root: Vec<u8>,
    system_bus: Vec<u8>,
}

impl Dsdt {
    /// Adds an object at the root of the namespace (`\`).
    pub(super) fn root_object(&mut self, object: &dyn Aml) {
        object.to_aml_bytes(&mut self.root);
    }

    /// Adds a device (or any object) under the system bus (`\_SB_`).
    pub(super) fn system_bus_device(&mut self, device: &dyn Aml) {
        device.to_aml_bytes(&mut self.system_bus);
    }

    /// The complete table, header and checksum included.
    pub(super) fn into_table(self) -> Vec<u8> {
        let mut table = Sdt::new(
            *b"DSDT",
            HEADER_LEN,
            DSDT_REVISION,
            OEM_ID,
            OEM_TABLE_ID,
            OEM_REVISION,
        );
        table.append_slice(&self.root);
        if !self.system_bus.is_empty() {
            table.append_slice(&aml::Scope::raw("\\_SB_".into(), self.system_bus));
        }
        to_bytes(&table)
    }
}

/// `Name (_S5_, Package {SLP_TYP_a, SLP_TYP_b, reserved, reserved})`; a hardware-reduced
/// platform has only the one sleep control register, so the "b" value is unused (zero).
fn s5_package() -> aml::Name {
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLP_TYP, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
}

/// The name of processor `uid`'s device: `C` and three hex digits (`C000` .. `C0FE`).
fn processor_name(uid: u8) -> String {
    format!("C{uid:03X}")
}

/// A processor device (§8.4, `ACPI0007`) whose `_UID` matches the MADT processor UID.
fn add_processor(dsdt: &mut Dsdt, uid: u8) {
    let name = processor_name(uid);
    dsdt.system_bus_device(&aml::Device::new(
        Path::new(&name),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0007"),
            &aml::Name::new("_UID".into(), &uid),
        ],
    ));
}

/// COM1 as a PNP0501 16550A with its fixed port range and edge-triggered, active-high ISA IRQ.
fn add_com1(dsdt: &mut Dsdt) {
    let port_len = SERIAL_PORT_LEN as u8;
    dsdt.system_bus_device(&aml::Device::new(
        "COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![
                    &aml::IO::new(COM1_PORT, COM1_PORT, 1, port_len),
                    &aml::Interrupt::new(true, true, false, false, COM1_IRQ),
                ]),
            ),
        ],
    ));
}

/// The Generic Event Device and the power button it reports. `_EVT` reads the event byte
/// (which clears it in the device) and notifies the power button when its bit is set; Linux's
/// `button` driver turns that into `KEY_POWER`. With a PCI bus, the hot-plug bit calls
/// `\_SB_.PCI0.PCNT`, which notifies the slots that changed.
fn add_ged_and_power_button(dsdt: &mut Dsdt, pci: bool) {
    let port = u64::from(GED_PORT);
    let len = u64::from(GED_PORT_LEN);
    let event = aml::Local(0);
    let bit = aml::Local(1);
    let power_button = EVENT_POWER_BUTTON;
    let notify_value: u8 = 0x80;
    let hotplug = EVENT_PCI_HOTPLUG;
    let pcnt = aml::MethodCall::new(Path::new("\\_SB_.PCI0.PCNT"), vec![]);
    let hotplug_bit = aml::And::new(&bit, &event, &hotplug);
    let hotplug_check = aml::Equal::new(&hotplug_bit, &hotplug);
    let on_hotplug = aml::If::new(&hotplug_check, vec![&pcnt]);
    let power_bit = aml::And::new(&bit, &event, &power_button);
    let power_check = aml::Equal::new(&power_bit, &power_button);
    let button = Path::new("\\_SB_.PWRB");
    let notify = aml::Notify::new(&button, &notify_value);
    let on_power = aml::If::new(&power_check, vec![&notify]);
    let gdat = Path::new("GDAT");
    let read_event = aml::Store::new(&event, &gdat);
    let mut evt: Vec<&dyn acpi_tables::Aml> = vec![&read_event, &on_power];
    if pci {
        evt.push(&on_hotplug);
    }
    dsdt.system_bus_device(&aml::Device::new(
        "GED0".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, GED_IRQ,
                )]),
            ),
            &aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemIO, &port, &len),
            &aml::Field::new(
                "GDST".into(),
                aml::FieldAccessType::Byte,
                aml::FieldLockRule::NoLock,
                aml::FieldUpdateRule::Preserve,
                vec![aml::FieldEntry::Named(*b"GDAT", 8)],
            ),
            &aml::Method::new("_EVT".into(), 1, true, evt),
        ],
    ));
    dsdt.system_bus_device(&aml::Device::new(
        "PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    ));
}

/// The DSDT bytes for `config`. The caller validated the vCPU count (≤ 255).
pub(super) fn build(config: &AcpiConfig) -> Vec<u8> {
    let mut dsdt = Dsdt::default();
    dsdt.root_object(&s5_package());
    for uid in (0..config.vcpus).filter_map(|i| u8::try_from(i).ok()) {
        add_processor(&mut dsdt, uid);
    }
    if config.serial {
        add_com1(&mut dsdt);
    }
    if config.pci {
        super::pci::add_host_bridge(&mut dsdt);
    }
    add_ged_and_power_button(&mut dsdt, config.pci);
    dsdt.into_table()
}
