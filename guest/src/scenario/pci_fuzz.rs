//! `pci-fuzz`: the probe as a guest that writes garbage into PCI configuration space. It saves
//! the standard header and capability area of every function on the first bus, then makes
//! `probe.pci-fuzz-ops` (default 3000) pseudo-random accesses (seed `probe.pci-fuzz-seed`):
//! writes and reads of 1, 2 or 4 bytes at random offsets of random slots and functions (present
//! or not, the host bridge included, extended space too) through ECAM, and through the legacy
//! ports 0xCF8/0xCFC with random (also disabled or other-bus) addresses in the latch. BARs land
//! on RAM, on each other, on the ECAM window; MSI-X is switched on with garbage; decoding goes
//! off and on.
//!
//! Then it puts every saved function back (decoding off, BARs, the rest, command last),
//! enumerates the bus again and reads the first disk through an ordinary driver, so the host
//! can check that the VMM and its devices came through.
//!
//! Results: `pci-fuzz-functions=N` (before), `pci-fuzz-ops=N`, `pci-fuzz-bars-moved=N` (functions
//! whose BAR0 the fuzz left elsewhere), `pci-fuzz-functions-after=N`,
//! `blk0-bdf=BB:DD.F`, `pci-fuzz-disk-sha256=<hex>` (of the first disk's first sector).

use super::blk_common::{fail, print_digest, Disks};
use super::Context;
use crate::acpi::{mcfg_windows, AcpiError, Tables};
use crate::identity;
use crate::port::{inb, inl, outb, outl, outw};
use crate::power::Ending;
use crate::serial::{error, result};
use probe_parse::acpi::Ecam;
use sha2::{Digest, Sha256};

/// Legacy configuration mechanism #1: address latch and data window.
const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// Dwords saved per function: the 256-byte conventional space.
const SAVED_DWORDS: usize = 64;
/// Functions saved at most (the probe's VMs have a handful).
const MAX_SAVED: usize = 32;
const COMMAND: u16 = 0x04;
const FIRST_BAR: u16 = 0x10;
/// Past the last BAR of a type-0 header (BAR5 ends at 0x28; 0x30 is the expansion ROM BAR).
const BARS_END: u16 = 0x28;
const EXPANSION_ROM: u16 = 0x30;

pub fn run(ctx: &Context) -> Ending {
    let _ = fuzz(ctx);
    Ending::PowerOff
}

/// One present function and its conventional configuration space as found.
#[derive(Clone, Copy)]
struct Saved {
    device: u8,
    function: u8,
    dwords: [u32; SAVED_DWORDS],
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ecam_window(ctx: &Context) -> Option<Ecam> {
    let window = Tables::discover(&identity::MEMORY, ctx.rsdp_hint())
        .and_then(|t| t.find(b"MCFG"))
        .and_then(|mcfg| {
            mcfg_windows(&mcfg)
                .next()
                .unwrap_or(Err(AcpiError::Missing(*b"MCFG")))
        });
    match window {
        Ok(w) => Some(w),
        Err(e) => {
            e.report(error()).nl();
            None
        }
    }
}

fn ecam_read(ecam: &Ecam, device: u8, function: u8, offset: u16, size: u64) -> Option<u64> {
    let addr = ecam.address(ecam.start_bus, device, function, offset)?;
    identity::read(addr, size).ok()
}

fn ecam_write(ecam: &Ecam, device: u8, function: u8, offset: u16, size: u64, value: u64) {
    if let Some(addr) = ecam.address(ecam.start_bus, device, function, offset) {
        // A refused width or alignment is simply not issued; the fuzz picks aligned ones.
        let _ = identity::write(addr, size, value);
    }
}

/// Functions present on the first bus, their conventional space saved.
fn save_all(ecam: &Ecam, saved: &mut [Saved; MAX_SAVED]) -> usize {
    let mut count = 0;
    for device in 0..32u8 {
        for function in 0..8u8 {
            let id = ecam_read(ecam, device, function, 0, 4).unwrap_or(u64::from(u32::MAX));
            if id & 0xffff == 0xffff {
                continue;
            }
            let Some(slot) = saved.get_mut(count) else {
                return count;
            };
            slot.device = device;
            slot.function = function;
            for (i, dword) in slot.dwords.iter_mut().enumerate() {
                *dword = ecam_read(ecam, device, function, (i * 4) as u16, 4).unwrap_or(0) as u32;
            }
            count += 1;
        }
    }
    count
}

fn count_functions(ecam: &Ecam) -> u64 {
    let mut n = 0;
    for device in 0..32u8 {
        for function in 0..8u8 {
            let id = ecam_read(ecam, device, function, 0, 4).unwrap_or(u64::from(u32::MAX));
            if id & 0xffff != 0xffff {
                n += 1;
            }
        }
    }
    n
}

/// A value for a write: half the time one that means something to a BAR or a command
/// register (RAM, the ECAM window, another function's BAR, all ones for sizing, zero).
fn value(ecam: &Ecam, saved: &[Saved], rng: &mut Xorshift) -> u64 {
    match rng.below(12) {
        0 => 0,
        1 => u64::MAX,
        2 => 0x10_0000,
        3 => ecam.base,
        4 => 0x7,
        5 => match saved.get(rng.below(saved.len().max(1) as u64) as usize) {
            Some(s) => u64::from(s.dwords[usize::from(FIRST_BAR / 4)]),
            None => 0,
        },
        _ => rng.next(),
    }
}

/// One random access. Offsets are naturally aligned for their width, as PCI requires. Half the
/// accesses go to functions that exist, the rest anywhere on the bus.
fn access(ecam: &Ecam, saved: &[Saved], rng: &mut Xorshift) {
    let size = [1u64, 2, 4][rng.below(3) as usize];
    let (device, function) = match saved.get(rng.below(2 * saved.len().max(1) as u64) as usize) {
        Some(s) => (s.device, s.function),
        None => (rng.below(32) as u8, rng.below(8) as u8),
    };
    let value = value(ecam, saved, rng);
    let write = rng.below(4) != 0;
    if rng.below(4) != 0 {
        // ECAM, extended space included; half the time the header, where BARs live.
        let limit = if rng.below(2) == 0 { 0x40 } else { 0x1000 };
        let offset = (rng.below(limit) & !(size - 1)) as u16;
        if write {
            ecam_write(ecam, device, function, offset, size, value);
        } else {
            let _ = ecam_read(ecam, device, function, offset, size);
        }
        return;
    }
    // Mechanism #1: usually an enabled address on our bus, sometimes anything at all.
    let offset = rng.below(0x100) as u32;
    let address = if rng.below(8) == 0 {
        rng.next() as u32
    } else {
        0x8000_0000
            | u32::from(ecam.start_bus) << 16
            | u32::from(device) << 11
            | u32::from(function) << 8
            | (offset & 0xfc)
    };
    outl(CONFIG_ADDRESS, address);
    let port = CONFIG_DATA + (offset & 3 & !(size as u32 - 1)) as u16;
    match (write, size) {
        (true, 1) => outb(port, value as u8),
        (true, 2) => outw(port, value as u16),
        (true, _) => outl(CONFIG_DATA, value as u32),
        (false, 1) => {
            let _ = inb(port);
        }
        (false, _) => {
            let _ = inl(CONFIG_DATA);
        }
    }
}

/// Puts a saved function back: decoding off, BARs and ROM BAR, the rest of the header and the
/// capability area, then the saved command register.
fn restore(ecam: &Ecam, s: &Saved) {
    let (d, f) = (s.device, s.function);
    ecam_write(ecam, d, f, COMMAND, 2, 0);
    let dword = |offset: u16| u64::from(s.dwords[usize::from(offset / 4)]);
    for offset in (FIRST_BAR..BARS_END).step_by(4).chain([EXPANSION_ROM]) {
        ecam_write(ecam, d, f, offset, 4, dword(offset));
    }
    for offset in [0x0c, 0x3c] {
        ecam_write(ecam, d, f, offset, 4, dword(offset));
    }
    for offset in (0x40..0x100).step_by(4) {
        ecam_write(ecam, d, f, offset, 4, dword(offset));
    }
    ecam_write(ecam, d, f, COMMAND, 2, dword(COMMAND) & 0xffff);
}

fn fuzz(ctx: &Context) -> Option<()> {
    let ops = ctx.number_or("probe.pci-fuzz-ops", 3000)?;
    let seed = ctx.number_or("probe.pci-fuzz-seed", 1)?;
    let ecam = ecam_window(ctx)?;
    let mut saved = [Saved {
        device: 0,
        function: 0,
        dwords: [0; SAVED_DWORDS],
    }; MAX_SAVED];
    let count = save_all(&ecam, &mut saved);
    result("pci-fuzz-functions").dec(count as u64).nl();

    let present = saved.get(..count).unwrap_or(&[]);
    let mut rng = Xorshift(seed | 1);
    for _ in 0..ops {
        access(&ecam, present, &mut rng);
    }
    result("pci-fuzz-ops").dec(ops).nl();
    let moved = present
        .iter()
        .filter(|s| {
            let bar0 = ecam_read(&ecam, s.device, s.function, FIRST_BAR, 4).unwrap_or(0);
            bar0 != u64::from(s.dwords[usize::from(FIRST_BAR / 4)])
        })
        .count();
    result("pci-fuzz-bars-moved").dec(moved as u64).nl();

    for s in saved.iter().take(count) {
        restore(&ecam, s);
    }
    result("pci-fuzz-functions-after")
        .dec(count_functions(&ecam))
        .nl();

    let mut disks = Disks::discover(ctx)?;
    let Some(mut blk) = disks.open(0, "blk0-bdf") else {
        return fail("pci-fuzz: no virtio-blk disk after the restore");
    };
    let mut sector = [0u8; 512];
    if blk.read_blocks(0, &mut sector).is_err() {
        return fail("pci-fuzz: the disk does not answer after the fuzz");
    }
    print_digest("pci-fuzz-disk-sha256", &Sha256::digest(sector));
    Some(())
}
