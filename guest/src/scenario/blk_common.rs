//! What the `blk-*` scenarios share: finding the virtio-blk functions on the root bus (through
//! the MCFG's ECAM window), bringing one up with `virtio-drivers`, a reproducible pseudo-random
//! byte stream, and the SHA-256 line format.
#![allow(unsafe_code)] // reason: the ECAM window is handed to the PCI driver as a raw pointer.

use super::Context;
use crate::acpi::{mcfg_windows, AcpiError, Tables};
use crate::dma::ProbeHal;
use crate::serial::{error, result};
use probe_parse::acpi::Ecam;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::pci::bus::{Cam, Command, DeviceFunction, MmioCam, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

/// KiB the scenarios move by default: 8 MiB.
pub const DEFAULT_KIB: u64 = 8 * 1024;
/// Bytes per request: 32 sectors, a buffer that fits the probe's stack comfortably.
pub const CHUNK: usize = 16 * 1024;
/// Most virtio-blk functions looked at.
const MAX_DISKS: usize = 4;

pub type Blk = VirtIOBlk<ProbeHal, PciTransport>;

/// The root bus and the virtio-blk functions on it, in slot order.
pub struct Disks {
    root: PciRoot<MmioCam<'static>>,
    found: [Option<DeviceFunction>; MAX_DISKS],
}

/// Reports an error line and returns `None`, for `?`-style early exits in scenarios.
pub fn fail<T>(what: &str) -> Option<T> {
    error().s(what).nl();
    None
}

impl Disks {
    /// Finds the ECAM window in the MCFG and every virtio-blk function on its first bus.
    pub fn discover(ctx: &Context) -> Option<Self> {
        Self::discover_kind(ctx, DeviceType::Block)
    }

    /// The same for the virtio functions of another device type.
    pub fn discover_kind(ctx: &Context, kind: DeviceType) -> Option<Self> {
        let (root, ecam) = pci_root(ctx)?;
        let mut found = [None; MAX_DISKS];
        let blocks = root
            .enumerate_bus(ecam.start_bus)
            .filter(|(_, info)| virtio_device_type(info) == Some(kind))
            .map(|(function, _)| function);
        for (slot, function) in found.iter_mut().zip(blocks) {
            *slot = Some(function);
        }
        Some(Self { root, found })
    }

    /// How many virtio-blk functions there are (up to the probe's limit).
    pub fn count(&self) -> usize {
        self.found.iter().flatten().count()
    }

    /// Brings up disk `index` (0 = lowest slot) and reports its address under `key`.
    pub fn open(&mut self, index: usize, key: &str) -> Option<Blk> {
        let transport = self.transport(index, key)?;
        match VirtIOBlk::<ProbeHal, _>::new(transport) {
            Ok(blk) => Some(blk),
            Err(_) => fail("blk: device initialisation failed"),
        }
    }

    /// The PCI transport of function `index` (bus mastering on), its address reported
    /// under `key`.
    pub fn transport(&mut self, index: usize, key: &str) -> Option<PciTransport> {
        let function = self.found.get(index).copied().flatten()?;
        result(key)
            .bdf(function.bus, function.device, function.function)
            .nl();
        match transport(&mut self.root, function) {
            Ok(transport) => Some(transport),
            Err(what) => fail(what),
        }
    }
}

/// The first ECAM window of the MCFG as a PCI root, or `None` after reporting why not.
pub fn pci_root(ctx: &Context) -> Option<(PciRoot<MmioCam<'static>>, Ecam)> {
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
            return None;
        }
    };
    // The driver may index the whole 256 MiB ECAM window of the bus range.
    if crate::identity::region(ecam.base, 256 << 20).is_err() {
        return fail("blk: ECAM window outside the identity map");
    }
    // SAFETY: the MCFG names this as the ECAM window, it is identity-mapped (checked
    // above) and 1 MiB aligned, and nothing else in the probe touches it meanwhile.
    let cam = unsafe { MmioCam::new(ecam.base as *mut u8, Cam::Ecam) };
    Some((PciRoot::new(cam), ecam))
}

/// The PCI transport of a virtio function, with memory decoding and bus mastering on.
pub fn transport(
    root: &mut PciRoot<MmioCam<'static>>,
    function: DeviceFunction,
) -> Result<PciTransport, &'static str> {
    root.set_command(function, Command::MEMORY_SPACE | Command::BUS_MASTER);
    PciTransport::new::<ProbeHal, _>(root, function)
        .map_err(|_| "virtio: the function's PCI capabilities are unusable")
}

/// Binds a virtio-blk function.
pub fn open_function(
    root: &mut PciRoot<MmioCam<'static>>,
    function: DeviceFunction,
) -> Result<Blk, &'static str> {
    VirtIOBlk::<ProbeHal, _>::new(transport(root, function)?)
        .map_err(|_| "blk: device initialisation failed")
}

/// xorshift64*: the bytes `blk-write` writes, reproducible from the seed.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Prints `PROBE-RESULT <key>=<64 hex digits>`.
pub fn print_digest(key: &str, digest: &[u8]) {
    let mut line = result(key);
    for b in digest {
        line = line.hex_digits(u64::from(*b), 2);
    }
    line.nl();
}

/// `probe.blk-kib` (default [`DEFAULT_KIB`]) as bytes, or `None` after reporting a bad
/// value. A whole number of [`CHUNK`]s, at most 4 GiB.
pub fn size_param(ctx: &Context) -> Option<u64> {
    match ctx.cmdline.number("probe.blk-kib") {
        Ok(v) => {
            let kib = v.unwrap_or(DEFAULT_KIB);
            let chunk_kib = (CHUNK / 1024) as u64;
            if kib == 0 || kib % chunk_kib != 0 || kib > 4 << 20 {
                return fail("blk: probe.blk-kib must be a multiple of 16 up to 4 GiB");
            }
            Some(kib << 10)
        }
        Err(e) => {
            e.report(error()).nl();
            None
        }
    }
}
