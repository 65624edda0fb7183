//! `boot`: reports what the VMM described to the guest — vCPUs from the MADT and RAM from the
//! PVH memory map — so tests can check them against the configuration, then powers off.
//!
//! Results: `cpus=N` (enabled Local APIC and x2APIC entries), `ram-bytes=N` (sum of type-1
//! memory-map entries) and `ram-mib=N` (`ram-bytes` rounded up to whole MiB).

use super::Context;
use crate::acpi::{count_cpus, Tables};
use crate::power::Ending;
use crate::serial::{error, result};
use crate::start_info::MEMMAP_RAM;

const MIB: u64 = 1 << 20;

pub fn run(ctx: &Context) -> Ending {
    match Tables::discover(&crate::identity::MEMORY, ctx.rsdp_hint()).and_then(|t| t.find(b"APIC"))
    {
        Ok(madt) => match count_cpus(&madt) {
            Ok(cpus) => result("cpus").dec(cpus).nl(),
            Err(e) => e.report(error()).nl(),
        },
        Err(e) => e.report(error()).nl(),
    }

    match ctx.start_info.filter(|s| s.memmap.is_some()) {
        Some(info) => {
            let ram: u64 = info
                .memmap()
                .filter(|e| e.kind == MEMMAP_RAM)
                .fold(0u64, |sum, e| sum.saturating_add(e.size));
            result("ram-bytes").dec(ram).nl();
            result("ram-mib").dec(ram.div_ceil(MIB)).nl();
        }
        None => error().s("no memory map in the start info").nl(),
    }
    Ending::PowerOff
}
