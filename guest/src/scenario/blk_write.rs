//! `blk-write`: writes `probe.blk-kib` KiB (default 8 MiB) of pseudo-random bytes (seed
//! `probe.blk-seed`, default 1) from sector 0 of the first virtio-blk disk, flushes, and prints
//! their SHA-256, which the host compares with its file.
//!
//! Results: `blk0-bdf=BB:DD.F`, `blk-capacity-sectors=N`, then `blk-write-sha256=<hex>` on
//! success. When the device answers a write with an error (a full host filesystem), it prints
//! `blk-write=ioerr` and `blk-write-failed-at=<byte offset>`, then reads sector 0 again and
//! prints `blk-alive=1` if the device still serves requests — the VM carries on either way.

use super::blk_common::{fail, print_digest, size_param, Disks, Stream, CHUNK};
use super::Context;
use crate::power::Ending;
use crate::serial::result;
use sha2::{Digest, Sha256};
use virtio_drivers::device::blk::SECTOR_SIZE;

pub fn run(ctx: &Context) -> Ending {
    let _ = write(ctx);
    Ending::PowerOff
}

fn write(ctx: &Context) -> Option<()> {
    let bytes = size_param(ctx)?;
    let seed = match ctx.cmdline.number("probe.blk-seed") {
        Ok(v) => v.unwrap_or(1),
        Err(_) => return fail("blk: probe.blk-seed must be a number"),
    };
    let mut disks = Disks::discover(ctx)?;
    let Some(mut blk) = disks.open(0, "blk0-bdf") else {
        return fail("blk: no virtio-blk disk");
    };
    let capacity = blk.capacity();
    result("blk-capacity-sectors").dec(capacity).nl();
    if capacity.saturating_mul(SECTOR_SIZE as u64) < bytes {
        return fail("blk: the disk is smaller than the data to write");
    }
    let mut stream = Stream::new(seed);
    let mut hash = Sha256::new();
    let mut buf = [0u8; CHUNK];
    let mut offset = 0u64;
    while offset < bytes {
        stream.fill(&mut buf);
        hash.update(buf);
        let sector = (offset / SECTOR_SIZE as u64) as usize;
        if blk.write_blocks(sector, &buf).is_err() {
            result("blk-write").s("ioerr").nl();
            result("blk-write-failed-at").dec(offset).nl();
            let alive = blk.read_blocks(0, &mut buf[..SECTOR_SIZE]).is_ok();
            result("blk-alive").dec(u64::from(alive)).nl();
            return None;
        }
        offset += CHUNK as u64;
    }
    if blk.flush().is_err() {
        return fail("blk: flush failed");
    }
    print_digest("blk-write-sha256", &hash.finalize());
    Some(())
}
