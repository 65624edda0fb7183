//! `blk-read`: reads the first `probe.blk-kib` KiB (default 8 MiB) of the first virtio-blk disk
//! and prints their SHA-256; when a second disk exists and is read-only, tries to write its
//! first sector and reports whether the device refused.
//!
//! Results: `blk0-bdf=BB:DD.F`, `blk-read-sha256=<hex>`, `blk-disks=N`; with a second disk
//! `blk1-bdf=BB:DD.F`, `blk1-readonly=0|1` and, if read-only, `rowrite=refused` (the device
//! answered the write with an error) or `rowrite=accepted`.

use super::blk_common::{fail, print_digest, size_param, Disks, CHUNK};
use super::Context;
use crate::power::Ending;
use crate::serial::result;
use sha2::{Digest, Sha256};
use virtio_drivers::device::blk::SECTOR_SIZE;

pub fn run(ctx: &Context) -> Ending {
    let _ = read(ctx);
    Ending::PowerOff
}

fn read(ctx: &Context) -> Option<()> {
    let bytes = size_param(ctx)?;
    let mut disks = Disks::discover(ctx)?;
    result("blk-disks").dec(disks.count() as u64).nl();
    let Some(mut blk) = disks.open(0, "blk0-bdf") else {
        return fail("blk: no virtio-blk disk");
    };
    if blk.capacity().saturating_mul(SECTOR_SIZE as u64) < bytes {
        return fail("blk: the disk is smaller than the data to read");
    }
    let mut hash = Sha256::new();
    let mut buf = [0u8; CHUNK];
    let mut offset = 0u64;
    while offset < bytes {
        let sector = (offset / SECTOR_SIZE as u64) as usize;
        if blk.read_blocks(sector, &mut buf).is_err() {
            return fail("blk: read failed");
        }
        hash.update(buf);
        offset += CHUNK as u64;
    }
    print_digest("blk-read-sha256", &hash.finalize());
    drop(blk);

    if disks.count() < 2 {
        return Some(());
    }
    let mut second = disks.open(1, "blk1-bdf")?;
    let readonly = second.readonly();
    result("blk1-readonly").dec(u64::from(readonly)).nl();
    if readonly {
        // The driver does not police VIRTIO_BLK_F_RO, so the write reaches the device, which
        // must answer with an error and leave its file alone.
        let refused = second.write_blocks(0, &[0xa5u8; SECTOR_SIZE]).is_err();
        result("rowrite")
            .s(if refused { "refused" } else { "accepted" })
            .nl();
    }
    Some(())
}
