//! `blk-bench`: what `scripts/bench/blk` measures on the first virtio-blk disk, timed with the
//! probe's clock around the I/O only (the probe never touches the data, so its own speed
//! matters only per request):
//!
//! - sequential write of `probe.blk-kib` KiB (default 8 MiB) in requests of `probe.blk-seq-kib`
//!   KiB (default 16, at most 1024, a multiple of 16 dividing the range), then FLUSH;
//! - sequential read of the same range in requests of the same size;
//! - `probe.blk-ops` (default 1024) 4 KiB reads at pseudo-random 4 KiB-aligned offsets in that
//!   range, one at a time (queue depth 1), then the same with up to `probe.blk-qd` (default 32)
//!   requests in flight.
//!
//! Results: `bench-bytes`, `bench-seq-kib`, `bench-seq-write-ns`, `bench-seq-read-ns`, `bench-ops`,
//! `bench-rand-qd1-ns`, `bench-qd` (the depth actually reached: the driver's ring holds 16
//! descriptors, so deeper requests are capped) and `bench-rand-qd-ns`.
#![allow(unsafe_code)] // reason: the driver's non-blocking requests are unsafe functions, and their buffers are a static arena.

use super::blk_common::{fail, size_param, Blk, Disks};
use super::Context;
use crate::clock::Clock;
use crate::power::Ending;
use crate::serial::{error, result};
use core::cell::UnsafeCell;
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE};

const BLOCK: usize = 4096;
/// Most requests in flight the arena has buffers for.
const MAX_QD: usize = 32;
/// Largest sequential request: what fio's sequential jobs use by default, large enough that the
/// per-request cost of a slow guest (PVM) no longer hides the device's throughput.
const MAX_SEQ: usize = 1 << 20;

/// Request buffers for the deep-queue phase, outside the probe's 64 KiB stack.
#[repr(C, align(4096))]
struct Arena(UnsafeCell<[[u8; BLOCK]; MAX_QD]>);

// SAFETY: the probe runs scenarios on one CPU; only `rand_qd` touches the arena, once.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([[0; BLOCK]; MAX_QD]));

/// The sequential phases' buffer, too large for the stack.
#[repr(C, align(4096))]
struct SeqBuffer(UnsafeCell<[u8; MAX_SEQ]>);

// SAFETY: as for `Arena`: one CPU, and only `bench` touches it, once.
unsafe impl Sync for SeqBuffer {}

/// In `.noinit`, so boot does not spend the emulated time of clearing a megabyte every
/// scenario would pay for; the contents do not matter (the probe never looks at the data), and
/// guest RAM starts out zeroed anyway.
#[link_section = ".noinit.probe_seq"]
static SEQ_BUFFER: SeqBuffer = SeqBuffer(UnsafeCell::new([0; MAX_SEQ]));

pub fn run(ctx: &Context) -> Ending {
    let _ = bench(ctx);
    Ending::PowerOff
}

/// [`Context::number_or`], refused (and reported) outside `1..=max`.
fn param(ctx: &Context, key: &str, default: u64, max: u64) -> Option<u64> {
    let v = ctx.number_or(key, default)?;
    if v == 0 || v > max {
        error().s(key).s(" out of range").nl();
        return None;
    }
    Some(v)
}

/// xorshift64 over the 4 KiB blocks of the range.
fn next_block(state: &mut u64, blocks: u64) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    ((*state % blocks) as usize) * (BLOCK / SECTOR_SIZE)
}

fn bench(ctx: &Context) -> Option<()> {
    let bytes = size_param(ctx)?;
    let ops = param(ctx, "probe.blk-ops", 1024, 1 << 20)?;
    let qd = param(ctx, "probe.blk-qd", 32, MAX_QD as u64)? as usize;
    let seq_kib = param(ctx, "probe.blk-seq-kib", 16, (MAX_SEQ >> 10) as u64)?;
    let chunk = (seq_kib << 10) as usize;
    if seq_kib % 16 != 0 || bytes % chunk as u64 != 0 {
        return fail("blk: probe.blk-seq-kib must be a multiple of 16 dividing probe.blk-kib");
    }
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return None;
        }
    };
    let mut disks = Disks::discover(ctx)?;
    let Some(mut blk) = disks.open(0, "blk0-bdf") else {
        return fail("blk: no virtio-blk disk");
    };
    if blk.capacity().saturating_mul(SECTOR_SIZE as u64) < bytes {
        return fail("blk: the disk is smaller than the benchmark range");
    }
    result("bench-bytes").dec(bytes).nl();
    result("bench-seq-kib").dec(seq_kib).nl();
    // SAFETY: `bench` runs once per probe boot and is the buffer's only user, so this is the
    // only reference to it.
    let seq = unsafe { &mut *SEQ_BUFFER.0.get() };
    let buf = &mut seq[..chunk];
    let chunks = bytes / chunk as u64;
    let sector_of = |i: u64| (i * (chunk / SECTOR_SIZE) as u64) as usize;

    let t = clock.now_ns();
    for i in 0..chunks {
        if blk.write_blocks(sector_of(i), buf).is_err() {
            return fail("blk: write failed");
        }
    }
    if blk.flush().is_err() {
        return fail("blk: flush failed");
    }
    result("bench-seq-write-ns").dec(clock.now_ns() - t).nl();

    let t = clock.now_ns();
    for i in 0..chunks {
        if blk.read_blocks(sector_of(i), buf).is_err() {
            return fail("blk: read failed");
        }
    }
    result("bench-seq-read-ns").dec(clock.now_ns() - t).nl();

    let blocks = bytes / BLOCK as u64;
    result("bench-ops").dec(ops).nl();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let t = clock.now_ns();
    for _ in 0..ops {
        let sector = next_block(&mut state, blocks);
        if blk.read_blocks(sector, &mut buf[..BLOCK]).is_err() {
            return fail("blk: random read failed");
        }
    }
    result("bench-rand-qd1-ns").dec(clock.now_ns() - t).nl();

    let t = clock.now_ns();
    let reached = rand_qd(&mut blk, ops, qd, blocks, &mut state)?;
    let elapsed = clock.now_ns() - t;
    result("bench-qd").dec(reached as u64).nl();
    result("bench-rand-qd-ns").dec(elapsed).nl();
    Some(())
}

/// `ops` random 4 KiB reads keeping up to `qd` in flight; returns the depth reached.
fn rand_qd(blk: &mut Blk, ops: u64, qd: usize, blocks: u64, state: &mut u64) -> Option<usize> {
    let mut reqs: [BlkReq; MAX_QD] = core::array::from_fn(|_| BlkReq::default());
    let mut resps: [BlkResp; MAX_QD] = core::array::from_fn(|_| BlkResp::default());
    let mut tokens: [Option<u16>; MAX_QD] = [None; MAX_QD];
    // SAFETY: the arena is used by this function only and it runs once per probe boot, so this
    // is the only reference to it.
    let bufs = unsafe { &mut *ARENA.0.get() };
    let (mut submitted, mut done, mut reached) = (0u64, 0u64, 0usize);
    while done < ops {
        // Fill free slots until the depth or the driver's ring is full.
        for slot in 0..qd {
            if submitted == ops || tokens[slot].is_some() {
                continue;
            }
            let sector = next_block(state, blocks);
            // SAFETY: the request, buffer and response of `slot` stay untouched until the
            // matching `complete_read_blocks` below, which passes the same three back.
            let token = unsafe {
                blk.read_blocks_nb(sector, &mut reqs[slot], &mut bufs[slot], &mut resps[slot])
            };
            match token {
                Ok(t) => {
                    tokens[slot] = Some(t);
                    submitted += 1;
                }
                Err(_) => break, // ring full: this is the depth the driver allows
            }
        }
        reached = reached.max(tokens.iter().flatten().count());
        let Some(used) = blk.peek_used() else {
            if tokens.iter().all(Option::is_none) {
                return fail("blk: nothing in flight and nothing completed");
            }
            core::hint::spin_loop();
            continue;
        };
        let Some(slot) = tokens.iter().position(|t| *t == Some(used)) else {
            return fail("blk: completion for a request never made");
        };
        // SAFETY: `slot` holds the request that returned token `used`, with its own buffers.
        let r = unsafe {
            blk.complete_read_blocks(used, &reqs[slot], &mut bufs[slot], &mut resps[slot])
        };
        if r.is_err() {
            return fail("blk: deep-queue read failed");
        }
        tokens[slot] = None;
        done += 1;
    }
    Some(reached)
}
