//! `hostile`: the probe as a malicious guest. It drives the request queue of the first
//! virtio-blk disk (or, with `probe.hostile-device=rng|vsock|fs`, of the virtio-rng device, the
//! vsock device's tx queue or the first virtio-fs share's request queue) by hand and feeds it
//! what no driver should: a descriptor loop, buffers outside RAM, a
//! length of 4 GiB, a read-only status byte, an available index far ahead of the ring, a storm
//! of notifications (also for queues that do not exist), writes all over the configuration
//! structures, and its BAR moved on top of guest RAM. After each case it resets the device,
//! brings it up again and makes one proper request (a disk: read sector 0; rng: 64 bytes of
//! entropy): `hostile-<case>=survived` if that works (the VMM and the device are fine),
//! `hostile-<case>=broken` if not. At the end a disk the cases never touched (the second one,
//! or the first when the target is not a disk) is read through the ordinary driver
//! (`hostile-other-disk-sha256`).
//!
//! vsock and virtio-fs get more cases (`hostile_queues.rs`): malformed vsock packets and
//! abuse of the rx and event queues, FUSE requests with lying headers and abuse of the
//! hiprio queue. For them the other disk is also read after every case, and it is that read
//! (with, for vsock, a connection request the device must refuse with an RST) that makes the
//! case `survived`: virtio-fs queues are served by the vhost-user backend, which may give up
//! on the share, so what must survive is the VMM and its other devices. A share takes every
//! case in one activation, without resets in between: virtiofsd ends its session (and
//! exits) when the device is reset, and the cases are meant for it.
#![allow(unsafe_code)] // reason: the ring pages are raw DMA memory.

use super::blk_common::{fail, pci_root, print_digest, Disks};
use super::hostile_queues;
use super::Context;
use crate::clock::Clock;
use crate::power::Ending;
use crate::serial::result;
use crate::virtio_fs::{
    self as raw, read, reset_common, write, Capabilities, FsDevice, Queue, DESC_F_NEXT,
    DESC_F_WRITE,
};
use sha2::{Digest, Sha256};
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, MmioCam, PciRoot};

const BLK_DEVICE_ID: u16 = 0x1042;
const RNG_DEVICE_ID: u16 = 0x1044;
const VSOCK_DEVICE_ID: u16 = 0x1053;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Blk,
    Rng,
    Vsock,
    Fs,
}

impl Target {
    fn device_id(self) -> u16 {
        match self {
            Target::Blk => BLK_DEVICE_ID,
            Target::Rng => RNG_DEVICE_ID,
            Target::Vsock => VSOCK_DEVICE_ID,
            Target::Fs => raw::FS_DEVICE_ID,
        }
    }

    /// The queues brought up, and the one the common cases attack.
    fn queues(self) -> (&'static [u16], u16) {
        match self {
            Target::Blk | Target::Rng => (&[0], 0),
            // rx, tx, event: the device parses what the guest sends on tx.
            Target::Vsock => (&[0, 1, 2], 1),
            // hiprio, request.
            Target::Fs => (&[0, 1], 1),
        }
    }
}
/// How long the probe waits for the device to answer a hostile chain (it may never).
const HOSTILE_WAIT_NS: u64 = 200_000_000;
/// How long a proper request may take.
const GOOD_WAIT_NS: u64 = 5_000_000_000;
/// Offset of the first BAR in configuration space.
const BAR0: u8 = 0x10;

pub(super) struct RawDevice {
    ecam: u64,
    pub(super) common: u64,
    device: u64,
    /// The queue the common cases attack.
    pub(super) queue: Queue,
    /// The device's other queues (vsock: rx and event; virtio-fs: hiprio), by index.
    pub(super) others: [Option<Queue>; 2],
    /// Header, data and status buffers, one DMA page.
    pub(super) buf: u64,
}

fn bring_up(
    root: &mut PciRoot<MmioCam<'static>>,
    ecam: u64,
    function: DeviceFunction,
    target: Target,
) -> Option<RawDevice> {
    let caps = Capabilities::find(root, ecam, function);
    let (common, notify) = (caps.common?, caps.notify?);
    // A device without configuration fields: the config writes land on the common structure.
    let device = caps.device.unwrap_or(common);
    write::<u8>(common + raw::DEVICE_STATUS, 0);
    write::<u8>(
        common + raw::DEVICE_STATUS,
        raw::STATUS_ACKNOWLEDGE | raw::STATUS_DRIVER,
    );
    write::<u32>(common + raw::DRIVER_FEATURE_SELECT, 0);
    write::<u32>(common + raw::DRIVER_FEATURE, 0);
    write::<u32>(common + raw::DRIVER_FEATURE_SELECT, 1);
    write::<u32>(common + raw::DRIVER_FEATURE, raw::VERSION_1_HIGH);
    let ok = raw::STATUS_ACKNOWLEDGE | raw::STATUS_DRIVER | raw::STATUS_FEATURES_OK;
    write::<u8>(common + raw::DEVICE_STATUS, ok);
    let (indices, attacked) = target.queues();
    let mut queue = None;
    let mut others = [None, None];
    let mut other_slots = others.iter_mut();
    for &index in indices {
        let q = FsDevice::setup_queue(common, notify, index).ok()?;
        if index == attacked {
            queue = Some(q);
        } else if let Some(slot) = other_slots.next() {
            *slot = Some(q);
        }
    }
    write::<u8>(common + raw::DEVICE_STATUS, ok | raw::STATUS_DRIVER_OK);
    let buf = raw::dma_buffer(1).as_mut_ptr() as u64;
    Some(RawDevice {
        ecam,
        common,
        device,
        queue: queue?,
        others,
        buf,
    })
}

/// Publishes the chain starting at descriptor `head` on `q` and notifies.
pub(super) fn submit_on(q: &mut Queue, head: u16) {
    let slot = u64::from(q.avail_idx % q.size);
    write::<u16>(q.avail + 4 + 2 * slot, head);
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    q.avail_idx = q.avail_idx.wrapping_add(1);
    write::<u16>(q.avail + 2, q.avail_idx);
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    write::<u16>(q.notify, q.index);
}

/// Waits up to `wait_ns` for a used entry on `q`; its length.
pub(super) fn wait_on(q: &mut Queue, clock: &Clock, wait_ns: u64) -> Option<u32> {
    let start = clock.now_ns();
    loop {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if read::<u16>(q.used + 2) != q.used_idx {
            let elem = q.used + 4 + 8 * u64::from(q.used_idx % q.size);
            q.used_idx = q.used_idx.wrapping_add(1);
            return Some(read::<u32>(elem + 4));
        }
        if clock.now_ns().wrapping_sub(start) > wait_ns {
            return None;
        }
        core::hint::spin_loop();
    }
}

impl RawDevice {
    /// Resets the device and, once it has let go, gives its ring and buffer pages back (the
    /// DMA pool is small; a device that does not let go keeps them).
    fn reset_and_release(self, clock: &Clock) -> bool {
        if !reset_common(self.common, clock, GOOD_WAIT_NS) {
            return false;
        }
        self.queue.free();
        for q in self.others.iter().flatten() {
            q.free();
        }
        raw::free_pages(self.buf, 1);
        true
    }

    /// Publishes the chain starting at descriptor `head` and notifies.
    pub(super) fn submit(&mut self, head: u16) {
        submit_on(&mut self.queue, head);
    }

    /// Waits up to `wait_ns` for a used entry; its length.
    pub(super) fn wait(&mut self, clock: &Clock, wait_ns: u64) -> Option<u32> {
        wait_on(&mut self.queue, clock, wait_ns)
    }

    /// One proper request for `target`; true if it completed as it should. virtio-fs has
    /// none here: its backend may have given the share up (see the module documentation).
    fn proper_request(&mut self, target: Target, clock: &Clock) -> bool {
        match target {
            Target::Blk => self.read_sector0(clock),
            Target::Rng => {
                FsDevice::put_desc(self.queue.desc, 0, self.buf, 64, DESC_F_WRITE, 0);
                self.submit(0);
                self.wait(clock, GOOD_WAIT_NS) == Some(64)
            }
            Target::Vsock => hostile_queues::refused_connection(self, clock, GOOD_WAIT_NS),
            // Never asked: a share takes every case in one activation.
            Target::Fs => true,
        }
    }

    /// A proper read of sector 0: header, 512-byte data, status. True if it completed OK.
    fn read_sector0(&mut self, clock: &Clock) -> bool {
        let (hdr, data, status) = (self.buf, self.buf + 64, self.buf + 1024);
        write::<u32>(hdr, 0); // VIRTIO_BLK_T_IN
        write::<u32>(hdr + 4, 0);
        write::<u64>(hdr + 8, 0);
        write::<u8>(status, 0xff);
        let d = self.queue.desc;
        FsDevice::put_desc(d, 0, hdr, 16, DESC_F_NEXT, 1);
        FsDevice::put_desc(d, 1, data, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
        FsDevice::put_desc(d, 2, status, 1, DESC_F_WRITE, 0);
        self.submit(0);
        self.wait(clock, GOOD_WAIT_NS).is_some() && read::<u8>(status) == 0
    }
}

/// One hostile case: what it does to the device.
pub(super) type Case = fn(&mut RawDevice, &mut PciRoot<MmioCam<'static>>, DeviceFunction, &Clock);

fn descriptor_loop(
    b: &mut RawDevice,
    _: &mut PciRoot<MmioCam<'static>>,
    _: DeviceFunction,
    c: &Clock,
) {
    let d = b.queue.desc;
    FsDevice::put_desc(d, 0, b.buf, 16, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, b.buf + 64, 512, DESC_F_NEXT | DESC_F_WRITE, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn outside_ram(b: &mut RawDevice, _: &mut PciRoot<MmioCam<'static>>, _: DeviceFunction, c: &Clock) {
    let d = b.queue.desc;
    FsDevice::put_desc(d, 0, 0xffff_ffff_f000, 16, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, 0x7fff_0000_0000, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
    FsDevice::put_desc(d, 2, b.buf + 1024, 1, DESC_F_WRITE, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn huge_length(b: &mut RawDevice, _: &mut PciRoot<MmioCam<'static>>, _: DeviceFunction, c: &Clock) {
    let d = b.queue.desc;
    write::<u32>(b.buf, 0);
    write::<u64>(b.buf + 8, 0);
    FsDevice::put_desc(d, 0, b.buf, 16, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, b.buf + 64, u32::MAX, DESC_F_NEXT | DESC_F_WRITE, 2);
    FsDevice::put_desc(d, 2, b.buf + 1024, 1, DESC_F_WRITE, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn read_only_status(
    b: &mut RawDevice,
    _: &mut PciRoot<MmioCam<'static>>,
    _: DeviceFunction,
    c: &Clock,
) {
    let d = b.queue.desc;
    write::<u32>(b.buf, 0);
    FsDevice::put_desc(d, 0, b.buf, 16, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, b.buf + 64, 512, DESC_F_NEXT | DESC_F_WRITE, 2);
    FsDevice::put_desc(d, 2, b.buf + 1024, 1, 0, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn index_jump(b: &mut RawDevice, _: &mut PciRoot<MmioCam<'static>>, _: DeviceFunction, c: &Clock) {
    let q = &mut b.queue;
    q.avail_idx = q.avail_idx.wrapping_add(1000);
    write::<u16>(q.avail + 2, q.avail_idx);
    write::<u16>(q.notify, q.index);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn notify_storm(
    b: &mut RawDevice,
    _: &mut PciRoot<MmioCam<'static>>,
    _: DeviceFunction,
    _: &Clock,
) {
    for i in 0..20_000u32 {
        write::<u16>(b.queue.notify, if i % 2 == 0 { 0 } else { 999 });
    }
}

fn config_writes(
    b: &mut RawDevice,
    _: &mut PciRoot<MmioCam<'static>>,
    _: DeviceFunction,
    _: &Clock,
) {
    // The device-specific structure and past it, then nonsense into the common structure.
    for off in (0..256u64).step_by(4) {
        write::<u32>(b.device + off, 0xffff_ffff);
    }
    write::<u16>(b.common + raw::QUEUE_SELECT, 999);
    write::<u16>(b.common + raw::QUEUE_SIZE, 0xffff);
    write::<u32>(b.common + raw::DEVICE_FEATURE_SELECT, 0xffff_ffff);
    let _ = read::<u32>(b.common + raw::DEVICE_FEATURE);
}

fn bar_over_ram(
    b: &mut RawDevice,
    root: &mut PciRoot<MmioCam<'static>>,
    f: DeviceFunction,
    _: &Clock,
) {
    let old = raw::cfg_read(b.ecam, f, BAR0) & !0xf;
    // Guest RAM at 1 MiB: the BAR now claims memory the guest's own pages back.
    root.set_command(f, Command::MEMORY_SPACE | Command::BUS_MASTER);
    root.set_bar_32(f, 0, 0x0010_0000);
    let _ = read::<u32>(0x0010_0000);
    root.set_bar_32(f, 0, old);
    root.set_command(f, Command::MEMORY_SPACE | Command::BUS_MASTER);
}

const CASES: &[(&str, Case)] = &[
    ("descriptor-loop", descriptor_loop),
    ("outside-ram", outside_ram),
    ("huge-length", huge_length),
    ("read-only-status", read_only_status),
    ("index-jump", index_jump),
    ("notify-storm", notify_storm),
    ("config-writes", config_writes),
    ("bar-over-ram", bar_over_ram),
];

pub fn run(ctx: &Context) -> Ending {
    let _ = hostile(ctx);
    Ending::PowerOff
}

fn hostile(ctx: &Context) -> Option<()> {
    let clock = match Clock::start() {
        Ok(c) => c,
        Err(_) => return fail("hostile: no clock"),
    };
    let target = match ctx.cmdline.get("probe.hostile-device") {
        None | Some(b"blk") => Target::Blk,
        Some(b"rng") => Target::Rng,
        Some(b"vsock") => Target::Vsock,
        Some(b"fs") => Target::Fs,
        Some(_) => return fail("hostile: probe.hostile-device is blk, rng, vsock or fs"),
    };
    let device_id = target.device_id();
    // Targets other than a disk check the other disk after every case.
    let mut disks = Disks::discover(ctx)?;
    let mut watched = match target {
        Target::Blk | Target::Rng => None,
        Target::Vsock | Target::Fs => Some(disks.open(0, "other-bdf")?),
    };
    let (mut root, ecam) = pci_root(ctx)?;
    let Some(function) = root
        .enumerate_bus(ecam.start_bus)
        .find(|(_, i)| i.vendor_id == raw::VIRTIO_VENDOR && i.device_id == device_id)
        .map(|(f, _)| f)
    else {
        return fail("hostile: no target device");
    };
    let extra = hostile_queues::cases(target);
    // virtiofsd ends when its device is reset, so a share takes every case in one activation.
    let mut kept: Option<RawDevice> = None;
    // A share's own cases first: virtiofsd gives up at the first chain it cannot map, and
    // the FUSE-level cases are meant for a live backend.
    let (first, then) = match target {
        Target::Fs => (extra, CASES),
        _ => (CASES, extra),
    };
    for (name, case) in first.iter().chain(then) {
        let Some(mut dev) = kept
            .take()
            .or_else(|| bring_up(&mut root, ecam.base, function, target))
        else {
            result(&format_key(name)).s("broken").nl();
            continue;
        };
        case(&mut dev, &mut root, function, &clock);
        let mut verdict = if target == Target::Fs {
            kept = Some(dev);
            true
        } else {
            let _ = dev.reset_and_release(&clock);
            match bring_up(&mut root, ecam.base, function, target) {
                Some(mut again) => {
                    let ok = again.proper_request(target, &clock);
                    let _ = again.reset_and_release(&clock);
                    ok
                }
                None => false,
            }
        };
        if let Some(disk) = watched.as_mut() {
            let mut sector = [0u8; 512];
            verdict &= disk.read_blocks(0, &mut sector).is_ok();
        }
        result(&format_key(name))
            .s(if verdict { "survived" } else { "broken" })
            .nl();
    }
    if let Some(dev) = kept {
        let _ = dev.reset_and_release(&clock);
    }
    // The other disk never saw any of it.
    let mut other = match watched.take() {
        Some(disk) => disk,
        None => disks.open(usize::from(target == Target::Blk), "other-bdf")?,
    };
    let mut sector = [0u8; 512];
    if other.read_blocks(0, &mut sector).is_err() {
        return fail("hostile: the other disk does not answer");
    }
    print_digest("hostile-other-disk-sha256", &Sha256::digest(sector));
    Some(())
}

/// `hostile-<case>` in a fixed buffer (the probe has no allocator for strings).
fn format_key(case: &str) -> HostileKey {
    let mut key = HostileKey {
        bytes: [0; 40],
        len: 0,
    };
    for b in b"hostile-".iter().chain(case.as_bytes()) {
        if let Some(slot) = key.bytes.get_mut(key.len) {
            *slot = *b;
            key.len += 1;
        }
    }
    key
}

struct HostileKey {
    bytes: [u8; 40],
    len: usize,
}

impl core::ops::Deref for HostileKey {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("hostile")
    }
}
