//! `power-button`: waits up to `probe.secs=N` seconds (default 60) for the ACPI power button.
//! The probe runs no AML, so it does what the DSDT's `\_SB_.GED0._EVT` does: it reads the
//! Generic Event Device's event byte (port 0x610, read-to-clear) and treats bit 0 as the
//! power button; then it powers off, as an OS would.
//!
//! Results: `power-button-waiting=1` once it polls, then `power-button=pressed` (power-off) or
//! `power-button=timeout`.

use super::Context;
use crate::clock::Clock;
use crate::lapic::Ticker;
use crate::power::Ending;
use crate::serial::{error, result};

/// The GED's event register and its power-button bit (the VMM's `devices::legacy::ged`).
const GED_PORT: u16 = 0x610;
const EVENT_POWER_BUTTON: u8 = 1;
const DEFAULT_SECS: u64 = 60;

pub fn run(ctx: &Context) -> Ending {
    let secs = match ctx.cmdline.number("probe.secs") {
        Ok(n) => n.unwrap_or(DEFAULT_SECS).min(86_400),
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
    let ticker = Ticker::start();
    result("power-button-waiting").dec(1).nl();
    let start = clock.now_ns();
    loop {
        if crate::port::inb(GED_PORT) & EVENT_POWER_BUTTON != 0 {
            result("power-button").s("pressed").nl();
            return Ending::PowerOff;
        }
        if clock.now_ns().wrapping_sub(start) >= secs * 1_000_000_000 {
            result("power-button").s("timeout").nl();
            return Ending::PowerOff;
        }
        match &ticker {
            Some(t) => t.wait(),
            None => crate::port::spin_hint(),
        }
    }
}
