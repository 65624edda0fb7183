//! `blk-stream`: a write stream for the crash test. Writes 4 KiB blocks from sector 0 of the
//! first virtio-blk disk, block `n` holding the bytes of `n` (little-endian u64) followed by
//! `0xB5` padding, and flushes after every `probe.flush-every` blocks (default 8); after each
//! flush it prints `blk-flushed=<blocks>`: everything before that block is durable on the
//! host. It stops at the end of the disk or after `probe.blk-kib` KiB (default: the whole
//! disk) and powers off; the host usually kills the VMM well before that.

use super::blk_common::{fail, Disks};
use super::Context;
use crate::power::Ending;
use crate::serial::result;
use virtio_drivers::device::blk::SECTOR_SIZE;

const BLOCK: usize = 4096;

pub fn run(ctx: &Context) -> Ending {
    let _ = stream(ctx);
    Ending::PowerOff
}

fn stream(ctx: &Context) -> Option<()> {
    let every = match ctx.cmdline.number("probe.flush-every") {
        Ok(v) => v.unwrap_or(8).max(1),
        Err(_) => return fail("blk: probe.flush-every must be a number"),
    };
    let limit_kib = match ctx.cmdline.number("probe.blk-kib") {
        Ok(v) => v,
        Err(_) => return fail("blk: probe.blk-kib must be a number"),
    };
    let mut disks = Disks::discover(ctx)?;
    let Some(mut blk) = disks.open(0, "blk0-bdf") else {
        return fail("blk: no virtio-blk disk");
    };
    let disk_blocks = blk.capacity().saturating_mul(SECTOR_SIZE as u64) / BLOCK as u64;
    let blocks = limit_kib.map_or(disk_blocks, |kib| (kib / 4).min(disk_blocks));
    let mut buf = [0xB5u8; BLOCK];
    for n in 0..blocks {
        if let Some(head) = buf.get_mut(..8) {
            head.copy_from_slice(&n.to_le_bytes());
        }
        let sector = (n * (BLOCK / SECTOR_SIZE) as u64) as usize;
        if blk.write_blocks(sector, &buf).is_err() {
            return fail("blk: write failed");
        }
        let written = n + 1;
        if written % every == 0 || written == blocks {
            if blk.flush().is_err() {
                return fail("blk: flush failed");
            }
            result("blk-flushed").dec(written).nl();
        }
    }
    Some(())
}
