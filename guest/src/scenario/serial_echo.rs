//! `serial-echo`: reads one line from COM1 and reports it, so tests can check that what is
//! typed into the VMM's console reaches the guest's UART receive path.
//!
//! Prints `probe: serial-echo waiting` when it starts listening, then collects bytes until a
//! newline, [`MAX_LINE`] bytes, or `probe.secs=N` seconds (default 30) without a full line.
//! Results: `echo=TEXT` (control and non-ASCII bytes shown as `?`) and `echo-bytes=N`.

use super::Context;
use crate::clock::Clock;
use crate::lapic::Ticker;
use crate::power::Ending;
use crate::serial::{error, out, result, try_read_byte};

pub const MAX_LINE: usize = 200;
const DEFAULT_SECS: u64 = 30;

pub fn run(ctx: &Context) -> Ending {
    let secs = match ctx.cmdline.number("probe.secs") {
        Ok(v) => v.unwrap_or(DEFAULT_SECS).min(3600),
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
    let mut line = [0u8; MAX_LINE];
    let mut len = 0;
    // Sleep between polls (the UART interrupt stays off; the tick bounds the latency).
    let ticker = Ticker::start();
    out().s("probe: serial-echo waiting").nl();
    let start = clock.now_ns();
    let complete = loop {
        if let Some(b) = try_read_byte() {
            if b == b'\n' || b == b'\r' {
                break true;
            }
            if let Some(slot) = line.get_mut(len) {
                *slot = b;
                len += 1;
            } else {
                break true;
            }
        } else if clock.now_ns().wrapping_sub(start) >= secs * 1_000_000_000 {
            break false;
        } else {
            match &ticker {
                Some(t) => t.wait(),
                None => crate::port::spin_hint(),
            }
        }
    };
    let text = line.get(..len).unwrap_or_default();
    if !complete {
        error()
            .s("serial-echo: no full line within ")
            .dec(secs)
            .s(" s (got ")
            .dec(len as u64)
            .s(" bytes)")
            .nl();
    }
    result("echo").bytes(text).nl();
    result("echo-bytes").dec(len as u64).nl();
    Ending::PowerOff
}
