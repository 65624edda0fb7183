//! `memory`: checks that the RAM the memory map lists is really there and distinct — including
//! RAM above the 32-bit MMIO hole. It writes a per-address pattern into sample words spread over
//! every RAM entry above 1 MiB (one per stride, plus each entry's last word), then reads them all
//! back, so two guest addresses backed by the same host page (overlapping memory slots) show up
//! as mismatches; finally it puts the old values back.
//!
//! Skipped: the first MiB (the VMM's boot data and firmware tables) and the probe's own image.
//! Results: `mem-samples=N`, `mem-stride-kib=N`, `mem-top=0x...` (end of the highest word
//! tested), `mem-errors=N`; each mismatch is also a `PROBE-ERROR`.

use super::Context;
use crate::identity;
use crate::power::Ending;
use crate::serial::{error, result};
use crate::start_info::{MemEntry, MEMMAP_RAM};

/// At most this many sample words (their old values live on the stack).
const MAX_SAMPLES: usize = 2048;
const MAX_ENTRIES: usize = 128;
const LOW_SKIP: u64 = 1 << 20;
const MIN_STRIDE: u64 = 2 << 20;
const PATTERN: u64 = 0x5a5a_a5a5_c3c3_3c3c;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The probe's own image, from linker-script symbols (only their addresses are used).
fn image() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

/// Sample addresses of one RAM entry: every `stride` from its first 8-byte-aligned word, plus
/// its last word; none below 1 MiB, in the image, or outside the identity map.
fn entry_samples(e: MemEntry, stride: u64) -> impl Iterator<Item = u64> {
    let (img_start, img_end) = image();
    let start = e.addr.max(LOW_SKIP).next_multiple_of(8);
    let end = e.addr.saturating_add(e.size).min(identity::mapped_end()) & !7;
    let last = end.checked_sub(8).filter(|&l| l >= start);
    let strided = (0..)
        .map(move |k: u64| start.saturating_add(k.saturating_mul(stride)))
        .take_while(move |&a| a.saturating_add(8) <= end && a != last.unwrap_or(u64::MAX));
    strided
        .chain(last)
        .filter(move |&a| !(img_start <= a && a < img_end))
}

pub fn run(ctx: &Context) -> Ending {
    let Some(info) = ctx.start_info else {
        error().s("memory: no start info").nl();
        return Ending::PowerOff;
    };
    let mut entries = [MemEntry {
        addr: 0,
        size: 0,
        kind: 0,
    }; MAX_ENTRIES];
    let mut count = 0;
    for e in info.memmap().filter(|e| e.kind == MEMMAP_RAM) {
        if let Some(slot) = entries.get_mut(count) {
            *slot = e;
            count += 1;
        }
    }
    let entries = entries.get(..count).unwrap_or_default();
    let ram: u64 = entries.iter().map(|e| e.size).fold(0, u64::saturating_add);
    let mut stride = MIN_STRIDE;
    while ram / stride + 2 * count as u64 > MAX_SAMPLES as u64 {
        stride *= 2;
    }
    let samples = || {
        entries
            .iter()
            .flat_map(move |&e| entry_samples(e, stride))
            .take(MAX_SAMPLES)
    };

    let mut old = [0u64; MAX_SAMPLES];
    let mut n = 0;
    for (slot, addr) in old.iter_mut().zip(samples()) {
        match identity::read(addr, 8) {
            Ok(v) => *slot = v,
            Err(e) => {
                e.report(error().s("memory: ")).nl();
                return Ending::PowerOff;
            }
        }
        let _ = identity::write(addr, 8, addr ^ PATTERN);
        n += 1;
    }
    let mut errors = 0u64;
    let mut top = 0;
    for (&value, addr) in old.iter().zip(samples()) {
        let got = identity::read(addr, 8).unwrap_or(!(addr ^ PATTERN));
        if got != addr ^ PATTERN {
            errors += 1;
            if errors <= 10 {
                error()
                    .s("memory at ")
                    .hex(addr)
                    .s(" reads ")
                    .hex(got)
                    .s(", wrote ")
                    .hex(addr ^ PATTERN)
                    .nl();
            }
        }
        let _ = identity::write(addr, 8, value);
        top = top.max(addr + 8);
    }
    result("mem-samples").dec(n).nl();
    result("mem-stride-kib").dec(stride >> 10).nl();
    result("mem-top").hex(top).nl();
    result("mem-errors").dec(errors).nl();
    Ending::PowerOff
}
