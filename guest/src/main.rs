//! The probe guest: a bare-metal x86_64 program that podvisor's integration tests and
//! benchmarks boot to observe the VMM from inside the VM.
//!
//! # Boot
//! A PVH ELF (`XEN_ELFNOTE_PHYS32_ENTRY` note, type 18) linked at 1 MiB. The VMM enters it in
//! 32-bit protected mode with EBX pointing at `hvm_start_info`; [`start`] switches to long mode
//! with the first 64 GiB identity-mapped and calls [`probe_main`].
//!
//! # Command line
//! `probe.run=NAME` selects a scenario from [`scenario::REGISTRY`] — `boot`, `poweroff`,
//! `reboot`, `triple-fault`, `page-fault`, `idle`, `smp`, `memory`, `pci`, `serial-echo` (each module documents its results);
//! scenarios read further `probe.*` keys (`probe.secs=N` for `idle` and `serial-echo`, `probe.reset=acpi|i8042`
//! for `reboot`, `probe.smp-timeout-ms=N` for `smp`).
//!
//! The parsers of what the VMM hands over (start info, command line, ACPI tables) live in the
//! `probe-parse` crate (`guest/parse`) so they can be tested on the host.
//!
//! # Output protocol (serial, 16550 at I/O port 0x3f8)
//! - `PROBE-RESULT key=value` — a measured result, one per line.
//! - `PROBE-ERROR text` — something went wrong; a run with such a line is a failed run,
//!   whatever the exit status (after an exception or panic the probe reports it and powers off,
//!   so the failure shows at once rather than as a hang).
//! - other lines (prefix `probe:`) are informational.
//!
//! # Boot-progress marker (I/O port 0x440, one-byte writes)
//! - `0x01` on entering Rust (long mode, stack and `.bss` ready),
//! - `0x02` right before the scenario runs,
//! - `0x03` right before the final power-off, reset or triple fault.
//!
//! # Ending
//! Every scenario ends with ACPI power-off (`\_S5_` through the FADT's sleep control register on
//! hardware-reduced platforms, else PM1a/PM1b control), reset (FADT RESET_REG, then the i8042),
//! or a triple fault (empty IDT, then UD2). With podvisor those exit with status 0, 3 and 4.
//! A request that does not take effect gives a `PROBE-ERROR` and a halt with interrupts off.
//! An unknown or missing scenario is reported as a `PROBE-ERROR`, then the probe powers off.
//!
//! # Build
//! `tests/build/probe.rs` builds it (`cargo build --release` at the workspace root leaves it at
//! `target/release/probe`). By hand, from this directory:
//! `RUSTFLAGS="-C target-feature=-sse,-sse2 -C relocation-model=static -C no-redzone=yes"
//! cargo build --release --target x86_64-unknown-linux-gnu`.
//! SSE is switched off because on hosts whose KVM emulates privileged instructions (PVM) any SSE
//! instruction in the guest ends the run with an emulation failure; the workspace build
//! disassembles the image and refuses it if any SSE instruction remains. For the same reason the
//! probe formats its output by hand instead of with `core::fmt`, and reports errors through a
//! `report` method on each module's error enum rather than `Display`.
#![no_std]
#![no_main]

mod ap;
mod clock;
mod dma;
mod fuse_client;
mod heap;
mod identity;
mod idt;
mod lapic;
mod marker;
mod mem;
mod port;
mod power;
mod scenario;
mod serial;
mod start;
mod virtio_fs;

use probe_parse::{acpi, cmdline, phys, start_info};

use cmdline::Cmdline;
use power::Ending;
use serial::{error, out};
use start_info::StartInfo;

/// Rust entry, called by the startup code with the start-info address from EBX.
#[no_mangle]
#[allow(unsafe_code)] // reason: exported unmangled so the startup assembly can call it.
pub extern "C" fn probe_main(start_info_paddr: u32) -> ! {
    marker::write(marker::ENTERED_RUST);
    serial::init();
    idt::init();
    out().s("probe: started").nl();

    let start_info = match StartInfo::read(&identity::MEMORY, u64::from(start_info_paddr)) {
        Ok(info) => {
            out()
                .s("probe: start info version ")
                .dec(u64::from(info.version))
                .nl();
            // Map the RAM above 4 GiB the memory map lists (the boot map stops at 4 GiB).
            let ram_end = info
                .memmap()
                .filter(|e| e.kind == start_info::MEMMAP_RAM)
                .map(|e| e.addr.saturating_add(e.size))
                .max()
                .unwrap_or(0);
            if ram_end > identity::MAPPED_LIMIT {
                error()
                    .s("RAM beyond ")
                    .hex(identity::MAPPED_LIMIT)
                    .s(" is not mapped")
                    .nl();
            }
            identity::map_ram(ram_end);
            Some(info)
        }
        Err(e) => {
            e.report(error()).nl();
            None
        }
    };
    let cmdline = match start_info.map(|s| Cmdline::read(&identity::MEMORY, s.cmdline_paddr)) {
        Some(Ok(line)) => line,
        Some(Err(e)) => {
            e.report(error()).nl();
            Cmdline::empty()
        }
        None => Cmdline::empty(),
    };
    power::remember_rsdp(start_info.map_or(0, |s| s.rsdp_paddr));
    let ctx = scenario::Context {
        start_info,
        cmdline: &cmdline,
    };

    let ending = match cmdline.get("probe.run") {
        Some(name) => match scenario::find(name) {
            Some(s) => {
                out().s("probe: scenario ").s(s.name).nl();
                marker::write(marker::SCENARIO_START);
                (s.run)(&ctx)
            }
            None => {
                error().s("unknown scenario ").bytes(name).nl();
                Ending::PowerOff
            }
        },
        None => {
            error().s("no probe.run=NAME on the command line").nl();
            Ending::PowerOff
        }
    };
    power::finish(ending, ctx.rsdp_hint())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let e = error().s("panic");
    match info.location() {
        Some(loc) => e
            .s(" at ")
            .s(loc.file())
            .s(":")
            .dec(u64::from(loc.line()))
            .nl(),
        None => e.nl(),
    }
    power::abort()
}
