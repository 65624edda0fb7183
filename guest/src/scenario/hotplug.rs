//! `hotplug`: watches bus 0 for devices the VMM plugs in and out while the probe runs. The probe
//! runs no AML, so it does what the DSDT's slot methods do: it polls the hot-plug register block
//! (`probe_parse::hotplug`, ports 0xae00..0xae10) every few milliseconds instead of waiting for
//! the GED notification, binds what appears and acknowledges ejects after resetting the device.
//!
//! Devices present at boot are ignored. A new virtio-blk function (1af4:1042) is bound and the
//! SHA-256 of its first `probe.hash-kib` KiB (default 8192) computed; a new virtio-fs function
//! (1af4:105a) gets a FUSE session and the SHA-256 of `in.bin` in its root. An eject request
//! resets the slot's device (device status 0), drops the probe's state for it and writes the
//! slot's bit to EJECT. Ring pages and buffers go back to the DMA pool on release, so add and
//! remove cycles do not use the pool up.
//!
//! Results: `hotplug-ready=PPPPPPPP` (PRESENT, 8 hex digits), then one line per event, numbered
//! from 0: `hotplug-N=add,SS,VVVV:DDDD` (slot and IDs in hex) with `,sha256=<hex>` for a disk or
//! share, or `,error=<text>`; and `hotplug-N=eject,SS` (with `,error=<text>` if the device did
//! not finish its reset). Ends after `probe.secs` (60) or `probe.hotplug-events=N` events with a
//! power-off. Without a controller (PRESENT reads all ones): `PROBE-ERROR hotplug: no hot-plug
//! controller` and a power-off. Every wait on a device is bounded by `probe.fs-timeout-ms`
//! (10000).
#![allow(unsafe_code)] // reason: bounded disk reads use the driver's non-blocking requests,
                       // whose buffers the device holds until the request completes.

extern crate alloc;

use super::blk_common::{open_function, pci_root, Blk};
use super::Context;
use crate::clock::Clock;
use crate::fuse_client::Session;
use crate::port::{inl, outl};
use crate::power::Ending;
use crate::serial::{error, out, result, Out};
use crate::virtio_fs::{self, dma_buffer, FsDevice, FS_DEVICE_ID, VIRTIO_VENDOR};
use alloc::boxed::Box;
use probe_parse::acpi::Ecam;
use probe_parse::hotplug::{self, slots, Tracker};
use sha2::{Digest, Sha256};
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{DeviceFunction, MmioCam, PciRoot};
use virtio_drivers::PAGE_SIZE;

const BLK_DEVICE_ID: u16 = 0x1042;
const DEFAULT_SECS: u64 = 60;
const DEFAULT_HASH_KIB: u64 = 8 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Poll period of UP and DOWN.
const POLL_NS: u64 = 5_000_000;
/// Bytes per disk read; the buffer is allocated once for the whole run.
const CHUNK: usize = 16 * 1024;
const SLOTS: usize = 32;

/// What the probe holds for a hot-plugged slot (boxed: 32 slots of driver state would crowd
/// the probe's 64 KiB stack; the heap recycles the blocks).
enum Bound {
    Empty,
    Disk(Box<Blk>),
    Share(Box<Session>),
}

/// What an add event reports after the IDs.
enum Outcome {
    Plain,
    Digest([u8; 32]),
    Error(&'static str),
}

struct Watcher<'a> {
    root: PciRoot<MmioCam<'static>>,
    ecam: Ecam,
    clock: &'a Clock,
    timeout_ns: u64,
    hash_bytes: u64,
    bound: [Bound; SLOTS],
    events: u64,
    /// Disk request buffers, shared by every disk (one request in flight at a time).
    chunk: &'static mut [u8],
    req: BlkReq,
    resp: BlkResp,
}

pub fn run(ctx: &Context) -> Ending {
    let _ = watch(ctx);
    Ending::PowerOff
}

fn watch(ctx: &Context) -> Option<()> {
    let secs = ctx.number_or("probe.secs", DEFAULT_SECS)?.min(86_400);
    let max_events = ctx.number_or("probe.hotplug-events", u64::MAX)?;
    let hash_kib = ctx.number_or("probe.hash-kib", DEFAULT_HASH_KIB)?;
    if hash_kib == 0 || hash_kib > 4 << 20 {
        error()
            .s("hotplug: probe.hash-kib must be 1 to 4194304")
            .nl();
        return None;
    }
    let timeout_ms = ctx
        .number_or("probe.fs-timeout-ms", DEFAULT_TIMEOUT_MS)?
        .min(3_600_000);
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(e) => {
            e.report(error()).nl();
            return None;
        }
    };
    let (root, ecam) = pci_root(ctx)?;
    // Whatever arrived before the probe looked counts as present at boot.
    let _ = inl(hotplug::UP);
    let present = inl(hotplug::PRESENT);
    if present == hotplug::NO_CONTROLLER {
        error().s("hotplug: no hot-plug controller").nl();
        return None;
    }
    result("hotplug-ready")
        .hex_digits(u64::from(present), 8)
        .nl();
    let mut watcher = Watcher {
        root,
        ecam,
        clock: &clock,
        timeout_ns: timeout_ms * 1_000_000,
        hash_bytes: hash_kib << 10,
        bound: core::array::from_fn(|_| Bound::Empty),
        events: 0,
        chunk: dma_buffer(CHUNK / PAGE_SIZE),
        req: BlkReq::default(),
        resp: BlkResp::default(),
    };
    let mut tracker = Tracker::new();
    let start = clock.now_ns();
    let end = secs.saturating_mul(1_000_000_000);
    while watcher.events < max_events && clock.now_ns().wrapping_sub(start) < end {
        let work = tracker.poll(inl(hotplug::UP), inl(hotplug::DOWN));
        for slot in slots(work.add) {
            if watcher.events >= max_events {
                break;
            }
            watcher.add(slot);
        }
        for slot in slots(work.eject) {
            if watcher.events >= max_events {
                break;
            }
            watcher.eject(slot);
            tracker.acknowledged(slot);
        }
        let poll_start = clock.now_ns();
        while clock.now_ns().wrapping_sub(poll_start) < POLL_NS {
            crate::port::spin_hint();
        }
    }
    Some(())
}

/// Starts `PROBE-RESULT hotplug-<n>=`.
fn event_line(n: u64) -> Out {
    out().s("PROBE-RESULT hotplug-").dec(n).s("=")
}

impl Watcher<'_> {
    fn function(&self, slot: u8) -> DeviceFunction {
        DeviceFunction {
            bus: self.ecam.start_bus,
            device: slot,
            function: 0,
        }
    }

    /// Vendor and device ID of function 0 of `slot` (all ones when nothing answers).
    fn ids(&self, slot: u8) -> (u16, u16) {
        let id = self
            .ecam
            .address(self.ecam.start_bus, slot, 0, 0)
            .and_then(|addr| crate::identity::read(addr, 4).ok())
            .unwrap_or(u64::from(u32::MAX)) as u32;
        (id as u16, (id >> 16) as u16)
    }

    fn next_event(&mut self) -> u64 {
        let n = self.events;
        self.events += 1;
        n
    }

    fn add(&mut self, slot: u8) {
        let n = self.next_event();
        // A device the host replaced without an eject: let the old state go first.
        let _ = self.release(slot);
        let (vendor, device) = self.ids(slot);
        let outcome = match (vendor, device) {
            (0xffff, _) => Outcome::Error("empty slot"),
            (VIRTIO_VENDOR, BLK_DEVICE_ID) => self.add_disk(slot),
            (VIRTIO_VENDOR, FS_DEVICE_ID) => self.add_share(slot),
            _ => Outcome::Plain,
        };
        let line = event_line(n)
            .s("add,")
            .hex_digits(u64::from(slot), 2)
            .s(",")
            .hex_digits(u64::from(vendor), 4)
            .s(":")
            .hex_digits(u64::from(device), 4);
        match outcome {
            Outcome::Plain => line.nl(),
            Outcome::Digest(d) => {
                let mut line = line.s(",sha256=");
                for b in d {
                    line = line.hex_digits(u64::from(b), 2);
                }
                line.nl()
            }
            Outcome::Error(e) => line.s(",error=").s(e).nl(),
        }
    }

    fn add_disk(&mut self, slot: u8) -> Outcome {
        let function = self.function(slot);
        let mut blk = match open_function(&mut self.root, function) {
            Ok(blk) => blk,
            Err(e) => return Outcome::Error(e),
        };
        let outcome = match self.hash_disk(&mut blk) {
            Ok(d) => Outcome::Digest(d),
            // Dropping the driver resets the device, which ends any request still pending
            // before the buffers are used again.
            Err(e) => return Outcome::Error(e),
        };
        if let Some(b) = self.bound.get_mut(usize::from(slot)) {
            *b = Bound::Disk(Box::new(blk));
        }
        outcome
    }

    /// SHA-256 of the first `hash_bytes` of the disk, each request bounded by the timeout.
    fn hash_disk(&mut self, blk: &mut Blk) -> Result<[u8; 32], &'static str> {
        if blk.capacity().saturating_mul(SECTOR_SIZE as u64) < self.hash_bytes {
            return Err("disk smaller than probe.hash-kib");
        }
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        while offset < self.hash_bytes {
            // A whole number of KiB, so a whole number of sectors.
            let len = (self.hash_bytes - offset).min(CHUNK as u64) as usize;
            let sector = (offset / SECTOR_SIZE as u64) as usize;
            let Some(buf) = self.chunk.get_mut(..len) else {
                return Err("chunk buffer too small");
            };
            // SAFETY: `buf`, `req` and `resp` live in `self` for the whole run and are not
            // touched until the request completes, or until the caller dropped the driver
            // (resetting the device) after a timeout.
            let token = unsafe { blk.read_blocks_nb(sector, &mut self.req, buf, &mut self.resp) }
                .map_err(|_| "read request refused")?;
            let start = self.clock.now_ns();
            while blk.peek_used() != Some(token) {
                if self.clock.now_ns().wrapping_sub(start) > self.timeout_ns {
                    return Err("read timed out");
                }
                crate::port::spin_hint();
            }
            // SAFETY: the same buffers as passed to `read_blocks_nb` for this token.
            unsafe { blk.complete_read_blocks(token, &self.req, buf, &mut self.resp) }
                .map_err(|_| "read failed")?;
            hash.update(&*buf);
            offset += len as u64;
        }
        Ok(hash.finalize().into())
    }

    fn add_share(&mut self, slot: u8) -> Outcome {
        let function = self.function(slot);
        let dev = match FsDevice::open(&mut self.root, self.ecam.base, function, self.timeout_ns) {
            Ok(dev) => dev,
            Err(_) => return Outcome::Error("virtio-fs bring-up failed"),
        };
        let mut session = Session::new(dev);
        let mut hash = Sha256::new();
        let outcome = match session.init(self.clock) {
            Err(_) => Outcome::Error("FUSE_INIT failed"),
            Ok(_) => match session.read_file(b"in.bin", self.clock, |d| hash.update(d)) {
                Ok(_) => Outcome::Digest(hash.finalize().into()),
                Err(_) => Outcome::Error("reading in.bin failed"),
            },
        };
        if let Some(b) = self.bound.get_mut(usize::from(slot)) {
            *b = Bound::Share(Box::new(session));
        }
        outcome
    }

    /// Resets the device in `slot` and drops the probe's state for it; false if the device did
    /// not finish its reset in time.
    fn release(&mut self, slot: u8) -> bool {
        let Some(bound) = self.bound.get_mut(usize::from(slot)) else {
            return true;
        };
        let state = core::mem::replace(bound, Bound::Empty);
        match state {
            // The host took the device away without an eject (a new one arrived in its slot
            // unannounced): nothing is left to reset, and dropping the driver would wait for
            // a status register that may never read 0 again. Its memory stays allocated.
            Bound::Disk(blk) if self.ids(slot).0 != VIRTIO_VENDOR => {
                core::mem::forget(blk);
                true
            }
            // The transport writes device status 0 and waits for it when dropped.
            Bound::Disk(blk) => {
                drop(blk);
                true
            }
            Bound::Share(session) => session.close(self.clock),
            Bound::Empty => true,
        }
    }

    fn eject(&mut self, slot: u8) {
        let n = self.next_event();
        let mut reset = self.release(slot);
        if reset {
            // Not bound by the probe (failed bring-up, or not a device it drives): reset it
            // anyway if it is virtio, so it stops using guest memory before it goes.
            let (vendor, _) = self.ids(slot);
            if vendor == VIRTIO_VENDOR {
                let function = self.function(slot);
                reset = virtio_fs::reset_function(
                    &mut self.root,
                    self.ecam.base,
                    function,
                    self.clock,
                    self.timeout_ns,
                );
            }
        }
        if let Some(bit) = 1u32.checked_shl(u32::from(slot)) {
            outl(hotplug::EJECT, bit);
        }
        let line = event_line(n).s("eject,").hex_digits(u64::from(slot), 2);
        if reset {
            line.nl()
        } else {
            line.s(",error=device reset timed out").nl()
        }
    }
}
