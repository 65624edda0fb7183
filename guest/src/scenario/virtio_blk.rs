//! `virtio-blk`: drives the first virtio-blk PCI function on the first ECAM bus with the
//! `virtio-drivers` crate: reads the first `probe.blk-sectors=N` sectors (default 8) and, with
//! `probe.blk-write=1`, writes a pattern to the last sector and reads it back.
//!
//! Results: `blk-bdf=BB:DD.F`, `blk-capacity-sectors=N`, `blk-readonly=0|1`,
//! `blk-read-fnv1a=0x...` (FNV-1a 64 of the bytes read, for comparison with the backing file),
//! and with writing `blk-write=ok`. The pattern written is 512 bytes of
//! `(i * 7 + 3) & 0xff`, so the host can check its file afterwards.
#![allow(unsafe_code)] // reason: the PCI configuration window is handed to the driver as a pointer.

use super::Context;
use crate::acpi::{mcfg_windows, AcpiError, Tables};
use crate::dma::ProbeHal;
use crate::power::Ending;
use crate::serial::{error, result};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Cam, Command, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

const DEFAULT_SECTORS: u64 = 8;
const MAX_SECTORS: u64 = 2048;

/// FNV-1a, 64-bit: a checksum the host side can recompute in one line.
fn fnv1a(hash: u64, data: &[u8]) -> u64 {
    data.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn pattern() -> [u8; SECTOR_SIZE] {
    let mut p = [0u8; SECTOR_SIZE];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    p
}

fn fail(what: &str) -> Ending {
    error().s("virtio-blk: ").s(what).nl();
    Ending::PowerOff
}

pub fn run(ctx: &Context) -> Ending {
    let (sectors, write) = match (
        ctx.cmdline.number("probe.blk-sectors"),
        ctx.cmdline.number("probe.blk-write"),
    ) {
        (Ok(s), Ok(w)) => (s.unwrap_or(DEFAULT_SECTORS).min(MAX_SECTORS), w == Some(1)),
        (Err(e), _) | (_, Err(e)) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    let window = Tables::discover(&crate::identity::MEMORY, ctx.rsdp_hint())
        .and_then(|t| t.find(b"MCFG"))
        .and_then(|mcfg| {
            mcfg_windows(&mcfg)
                .next()
                .unwrap_or(Err(AcpiError::Missing(*b"MCFG")))
        });
    let ecam = match window {
        Ok(w) => w,
        Err(e) => {
            e.report(error()).nl();
            return Ending::PowerOff;
        }
    };
    // The driver indexes the whole 256 MiB ECAM window of the bus range it is given.
    if crate::identity::region(ecam.base, 256 << 20).is_err() {
        return fail("ECAM window outside the identity map");
    }
    // SAFETY: the MCFG names this as the ECAM window, it is identity-mapped (checked above),
    // 4-byte aligned (ECAM windows are 1 MiB aligned), and nothing else in the probe touches it
    // while the driver holds it.
    let cam = unsafe { MmioCam::new(ecam.base as *mut u8, Cam::Ecam) };
    let mut root = PciRoot::new(cam);
    let found = root
        .enumerate_bus(ecam.start_bus)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Block));
    let Some((function, _)) = found else {
        return fail("no virtio-blk PCI function on the first bus");
    };
    result("blk-bdf")
        .bdf(function.bus, function.device, function.function)
        .nl();
    root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    let Ok(transport) = PciTransport::new::<ProbeHal, _>(&mut root, function) else {
        return fail("the function's virtio PCI capabilities are unusable");
    };
    let Ok(mut blk) = VirtIOBlk::<ProbeHal, _>::new(transport) else {
        return fail("device initialisation failed");
    };
    let capacity = blk.capacity();
    result("blk-capacity-sectors").dec(capacity).nl();
    result("blk-readonly").dec(u64::from(blk.readonly())).nl();

    let mut hash = FNV_OFFSET;
    let mut buf = [0u8; SECTOR_SIZE];
    for sector in 0..sectors.min(capacity) {
        if blk.read_blocks(sector as usize, &mut buf).is_err() {
            return fail("read failed");
        }
        hash = fnv1a(hash, &buf);
    }
    result("blk-read-fnv1a").hex(hash).nl();

    if write {
        let Some(last) = capacity.checked_sub(1) else {
            return fail("no sector to write");
        };
        let data = pattern();
        if blk.write_blocks(last as usize, &data).is_err() {
            return fail("write failed");
        }
        if blk.flush().is_err() {
            return fail("flush failed");
        }
        let mut back = [0u8; SECTOR_SIZE];
        if blk.read_blocks(last as usize, &mut back).is_err() || back != data {
            return fail("the written sector reads back differently");
        }
        result("blk-write").s("ok").nl();
    }
    Ending::PowerOff
}
