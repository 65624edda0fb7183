//! `smp`: starts every application processor with INIT and STARTUP IPIs and counts the ones
//! that reach Rust code, so tests see that each vCPU the VMM described actually runs.
//!
//! Results: `cpus=N` (enabled processors in the MADT) and `cpus-online=N` (the boot CPU plus
//! the APs that checked in within `probe.smp-timeout-ms`, default 10000).

use super::Context;
use crate::acpi::{count_cpus, Tables};
use crate::ap;
use crate::clock::Clock;
use crate::power::Ending;
use crate::serial::{error, result};
use crate::start_info::MEMMAP_RAM;

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const LOW_MEMORY_END: u64 = 0xA_0000;
const PAGE: u64 = 4096;
/// Local APIC interrupt command register, low and high halves (SDM Vol. 3A §11.6.1).
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// Destination shorthand "all excluding self", level assert, delivery mode INIT / STARTUP.
const ICR_ALL_BUT_SELF_INIT: u64 = (0b11 << 18) | (1 << 14) | (0b101 << 8);
const ICR_ALL_BUT_SELF_STARTUP: u64 = (0b11 << 18) | (1 << 14) | (0b110 << 8);

fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

/// A free RAM page below 640 KiB for the trampoline: inside a RAM entry of the memory map and
/// clear of everything the VMM handed over (start info, memory map, command line).
fn trampoline_page(ctx: &Context) -> Option<u64> {
    let info = ctx.start_info?;
    let mut busy = [(info.paddr, PAGE), (0, 0), (0, 0)];
    if let Some(map) = info.memmap {
        busy[1] = (map.addr, map.len);
    }
    if info.cmdline_paddr != 0 {
        busy[2] = (info.cmdline_paddr, crate::cmdline::MAX_LEN as u64 + 1);
    }
    (1..LOW_MEMORY_END / PAGE).map(|n| n * PAGE).find(|&page| {
        let in_ram = info.memmap().any(|e| {
            e.kind == MEMMAP_RAM && e.addr <= page && page + PAGE <= e.addr.saturating_add(e.size)
        });
        in_ram && !busy.iter().any(|&(a, l)| overlaps(page, PAGE, a, l))
    })
}

fn wait_ns(clock: &Clock, ns: u64) {
    let start = clock.now_ns();
    while clock.now_ns().wrapping_sub(start) < ns {
        crate::port::spin_hint();
    }
}

pub fn run(ctx: &Context) -> Ending {
    let cpus = match Tables::discover(&crate::identity::MEMORY, ctx.rsdp_hint())
        .and_then(|t| count_cpus(&t.find(b"APIC")?))
    {
        Ok(n) => n,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    result("cpus").dec(cpus).nl();
    let timeout_ms = match ctx.cmdline.number("probe.smp-timeout-ms") {
        Ok(v) => v.unwrap_or(DEFAULT_TIMEOUT_MS),
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    if cpus > 1 {
        let Some(page) = trampoline_page(ctx) else {
            error()
                .s("smp: no free RAM page below 640 KiB for the AP trampoline")
                .nl();
            return Ending::PowerOff;
        };
        let vector = match ap::install_trampoline(page) {
            Ok(v) => v,
            Err(e) => {
                e.report(error().s("smp: ")).nl();
                return Ending::PowerOff;
            }
        };
        let apic = crate::port::rdmsr(0x1B) & 0x000F_FFFF_FFFF_F000;
        let icr = |value: u64| {
            let _ = crate::identity::write(apic + ICR_HIGH, 4, 0);
            let _ = crate::identity::write(apic + ICR_LOW, 4, value);
        };
        // INIT, 10 ms, STARTUP, 200 us, STARTUP (SDM Vol. 3A §9.4.4.1).
        icr(ICR_ALL_BUT_SELF_INIT);
        wait_ns(&clock, 10_000_000);
        for _ in 0..2 {
            icr(ICR_ALL_BUT_SELF_STARTUP | u64::from(vector));
            wait_ns(&clock, 200_000);
        }
        let start = clock.now_ns();
        let deadline = timeout_ms.saturating_mul(1_000_000);
        while u64::from(ap::online()) + 1 < cpus && clock.now_ns().wrapping_sub(start) < deadline {
            crate::port::spin_hint();
        }
    }
    result("cpus-online").dec(u64::from(ap::online()) + 1).nl();
    Ending::PowerOff
}
