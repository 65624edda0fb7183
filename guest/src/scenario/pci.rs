//! `pci`: lists the PCI functions on the first bus of the first ECAM window in the MCFG table,
//! reading configuration space through ECAM (memory-mapped), the way a guest driver finds
//! virtio-pci devices and the way tests see hot-plugged devices at the BDF the API returned.
//!
//! Results: `pci-devices=N`, then one `pci.BB:DD.F=VVVV:DDDD` (vendor and device ID, hex) per
//! function found.

use super::Context;
use crate::acpi::{mcfg_windows, Tables};
use crate::identity;
use crate::power::Ending;
use crate::serial::{error, out};
use probe_parse::acpi::Ecam;

/// Header type register bit 7: the device has functions other than 0.
const MULTI_FUNCTION: u32 = 0x80;

fn config32(ecam: &Ecam, bus: u8, device: u8, function: u8, offset: u16) -> Option<u32> {
    let addr = ecam.address(bus, device, function, offset)?;
    identity::read(addr, 4).ok().map(|v| v as u32)
}

pub fn run(ctx: &Context) -> Ending {
    let window = Tables::discover(&identity::MEMORY, ctx.rsdp_hint())
        .and_then(|t| t.find(b"MCFG"))
        .and_then(|mcfg| {
            mcfg_windows(&mcfg)
                .next()
                .unwrap_or(Err(crate::acpi::AcpiError::Missing(*b"MCFG")))
        });
    let ecam = match window {
        Ok(w) => w,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    let bus = ecam.start_bus;
    let mut found = [(0u8, 0u8, 0u32); 64];
    let mut count = 0;
    for device in 0..32u8 {
        for function in 0..8u8 {
            let Some(id) = config32(&ecam, bus, device, function, 0) else {
                continue;
            };
            if id & 0xffff == 0xffff {
                if function == 0 {
                    break;
                }
                continue;
            }
            if let Some(slot) = found.get_mut(count) {
                *slot = (device, function, id);
                count += 1;
            }
            let header = config32(&ecam, bus, device, function, 0x0c).unwrap_or(0) >> 16;
            if function == 0 && header & MULTI_FUNCTION == 0 {
                break;
            }
        }
    }
    crate::serial::result("pci-devices").dec(count as u64).nl();
    for &(device, function, id) in found.iter().take(count) {
        out()
            .s("PROBE-RESULT pci.")
            .bdf(bus, device, function)
            .s("=")
            .hex_digits(u64::from(id & 0xffff), 4)
            .s(":")
            .hex_digits(u64::from(id >> 16), 4)
            .nl();
    }
    Ending::PowerOff
}
