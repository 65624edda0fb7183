//! The Multiple APIC Description Table (ACPI 6.5 §5.2.12).
//!
//! Describes what KVM's in-kernel irqchip provides: one local APIC per vCPU at
//! `layout::LAPIC_START` (APIC ID = vCPU index), one IOAPIC at `layout::IOAPIC_START` with
//! GSIs from 0, the PC's ISA IRQ 0 wired to IOAPIC pin 2 (KVM routes the PIT there), and LINT1
//! of every local APIC as the NMI input.

use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::{Aml, AmlSink};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes};

use super::{to_bytes, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout;

/// The IOAPIC's ID, matching the reset value of KVM's in-kernel IOAPIC ID register.
pub(super) const IOAPIC_ID: u8 = 0;

/// MADT structure types the `acpi_tables` crate does not provide (§5.2.12, Table 5.21).
const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;

/// MPS INTI flags "conforms to the bus" for both polarity and trigger mode (§5.2.12.5).
const MPS_INTI_CONFORMS: u16 = 0;
/// ACPI processor UID meaning "all processors" in a Local APIC NMI structure (§5.2.12.7).
const ALL_PROCESSORS: u8 = 0xff;

/// Interrupt Source Override (§5.2.12.5): ISA `source` arrives on `gsi`.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    r#type: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32,
    flags: U16,
}

impl InterruptSourceOverride {
    fn isa(source: u8, gsi: u32) -> Self {
        Self {
            r#type: TYPE_INTERRUPT_SOURCE_OVERRIDE,
            length: size_of::<Self>() as u8,
            bus: 0, // ISA
            source,
            gsi: gsi.into(),
            flags: MPS_INTI_CONFORMS.into(),
        }
    }
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// Local APIC NMI (§5.2.12.7): which LINT pin of which processor's local APIC carries NMI.
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    r#type: u8,
    length: u8,
    processor_uid: u8,
    flags: U16,
    lint: u8,
}

impl LocalApicNmi {
    fn all_processors(lint: u8) -> Self {
        Self {
            r#type: TYPE_LOCAL_APIC_NMI,
            length: size_of::<Self>() as u8,
            processor_uid: ALL_PROCESSORS,
            flags: MPS_INTI_CONFORMS.into(),
            lint,
        }
    }
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

const _: () = assert!(size_of::<InterruptSourceOverride>() == 10);
const _: () = assert!(size_of::<LocalApicNmi>() == 6);

/// The MADT bytes for `vcpus` vCPUs. The caller checks `vcpus <= MAX_VCPUS`; larger counts
/// are clamped so that no APIC ID wraps.
pub(super) fn build(vcpus: u32) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::LAPIC_START as u32),
    );
    for id in (0..vcpus.min(super::MAX_VCPUS)).filter_map(|i| u8::try_from(i).ok()) {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, layout::IOAPIC_START as u32, 0));
    madt.add_structure(InterruptSourceOverride::isa(0, 2));
    madt.add_structure(LocalApicNmi::all_processors(1));
    to_bytes(&madt)
}
