//! `idle`: stays alive for `probe.secs=N` seconds (default 1), then powers off. Gives tests and
//! benchmarks a running guest to observe (API state, memory use) for a known time.
//!
//! The wait sleeps in HLT, woken by a periodic local APIC timer tick, so an idle guest costs the
//! host (nearly) no CPU; without a local APIC it falls back to spinning.
//!
//! Results: `clock=NAME` (time source used), `idle-wait=hlt|spin`, and `idle-ms=N` (time
//! actually waited).

use super::Context;
use crate::clock::Clock;
use crate::lapic::Ticker;
use crate::power::Ending;
use crate::serial::{error, result};

const DEFAULT_SECS: u64 = 1;
/// A day; longer waits are almost certainly a typo and would outlive any test.
const MAX_SECS: u64 = 86_400;

pub fn run(ctx: &Context) -> Ending {
    let secs = match ctx.cmdline.number("probe.secs") {
        Ok(Some(n)) if n <= MAX_SECS => n,
        Ok(Some(_)) => {
            error().s("probe.secs is more than ").dec(MAX_SECS).nl();
            return Ending::PowerOff;
        }
        Ok(None) => DEFAULT_SECS,
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
    result("clock").s(clock.name()).nl();
    let ticker = Ticker::start();
    result("idle-wait")
        .s(if ticker.is_some() { "hlt" } else { "spin" })
        .nl();
    let start = clock.now_ns();
    let wait = secs * 1_000_000_000;
    loop {
        let elapsed = clock.now_ns().wrapping_sub(start);
        if elapsed >= wait {
            result("idle-ms").dec(elapsed / 1_000_000).nl();
            break;
        }
        match &ticker {
            Some(t) => t.wait(),
            None => crate::port::spin_hint(),
        }
    }
    Ending::PowerOff
}
