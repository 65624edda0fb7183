//! `rng`: reads entropy from the virtio-rng device twice and reports how much arrived and
//! whether it looks like entropy (not all zero, the two reads differ).
//!
//! Results: `rng-bdf=BB:DD.F`, `rng-bytes=N` (bytes over both reads), `rng-nonzero=0|1`,
//! `rng-differ=0|1`.

use super::blk_common::{fail, Disks};
use super::Context;
use crate::dma::ProbeHal;
use crate::power::Ending;
use crate::serial::result;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::DeviceType;

/// Bytes asked for per read.
const READ: usize = 64;

pub fn run(ctx: &Context) -> Ending {
    let _ = read(ctx);
    Ending::PowerOff
}

fn read(ctx: &Context) -> Option<()> {
    let mut functions = Disks::discover_kind(ctx, DeviceType::EntropySource)?;
    if functions.count() == 0 {
        return fail("rng: no virtio-rng device");
    }
    let transport = functions.transport(0, "rng-bdf")?;
    let Ok(mut rng) = VirtIORng::<ProbeHal, _>::new(transport) else {
        return fail("rng: device initialisation failed");
    };
    let mut first = [0u8; READ];
    let mut second = [0u8; READ];
    let (Ok(a), Ok(b)) = (
        rng.request_entropy(&mut first),
        rng.request_entropy(&mut second),
    ) else {
        return fail("rng: a request failed");
    };
    result("rng-bytes").dec((a + b) as u64).nl();
    let nonzero = first.iter().chain(second.iter()).any(|&x| x != 0);
    result("rng-nonzero").dec(u64::from(nonzero)).nl();
    result("rng-differ").dec(u64::from(first != second)).nl();
    Some(())
}
