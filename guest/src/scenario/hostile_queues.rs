//! The `hostile` scenario's cases for virtio-vsock and virtio-fs, beside the common ones in
//! `hostile.rs` (which attack the vsock tx queue and the virtio-fs request queue).
//!
//! vsock (VIRTIO 1.2 §5.10; the VMM must run with `--vsock cid=3,...`): headers cut short or
//! split over odd descriptors, payload lengths of 4 GiB, unknown operations and socket
//! types, CIDs that are not the guest's, rx buffers outside RAM, read-only or in a loop, junk
//! on the event queue, and a burst of connection requests with no rx buffer to answer them
//! in (more answers than the device queues). virtio-fs (§5.11): FUSE headers whose length
//! lies, an unknown opcode, a request with nowhere to put the reply, and junk on the hiprio
//! queue. Each case only has to leave the VMM and its other devices working.
#![allow(unsafe_code)] // reason: the ring pages are raw DMA memory (through `write`/`read`).

use super::hostile::{submit_on, wait_on, Case, RawDevice, Target};
use crate::clock::Clock;
use crate::virtio_fs::{read, write, FsDevice, Queue, DESC_F_NEXT, DESC_F_WRITE};
use virtio_drivers::transport::pci::bus::{DeviceFunction, MmioCam, PciRoot};

/// The guest's CID (the test runs the VMM with `--vsock cid=3,...`).
const GUEST_CID: u64 = 3;
const HOST_CID: u64 = 2;
const HEADER_LEN: u32 = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RST: u16 = 3;
const OP_RW: u16 = 5;
/// A host port no one listens on: a request to it is refused with an RST.
const DEAD_PORT: u32 = 4444;
/// The guest port the proper request comes from.
const PROBE_PORT: u32 = 5000;
/// How long the probe waits for the device to answer a hostile chain (it may never).
const HOSTILE_WAIT_NS: u64 = 200_000_000;
/// Requests in the burst: more than the 2048 answers the device queues for a guest that
/// does not read its rx queue.
const BURST: u32 = 2100;
/// An address far outside guest RAM.
const NOWHERE: u64 = 0x7fff_0000_0000;
/// FUSE_INIT.
const FUSE_INIT: u32 = 26;
const FUSE_IN_HEADER: u32 = 40;

type Root = PciRoot<MmioCam<'static>>;

const VSOCK_CASES: &[(&str, Case)] = &[
    ("vsock-short-header", short_header),
    ("vsock-split-header", split_header),
    ("vsock-huge-payload", huge_payload),
    ("vsock-bad-op", bad_op),
    ("vsock-bad-type", bad_type),
    ("vsock-bad-cid", bad_cid),
    ("vsock-rx-outside-ram", rx_outside_ram),
    ("vsock-rx-loop", rx_loop),
    ("vsock-rx-read-only", rx_read_only),
    ("vsock-event-junk", event_junk),
    ("vsock-request-burst", request_burst),
];

const FS_CASES: &[(&str, Case)] = &[
    ("fs-lying-length", fuse_lying_length),
    ("fs-unknown-opcode", fuse_unknown_opcode),
    ("fs-no-reply-buffer", fuse_no_reply_buffer),
    ("fs-hiprio-junk", hiprio_junk),
];

/// The cases `target` gets beside the common ones.
pub(super) fn cases(target: Target) -> &'static [(&'static str, Case)] {
    match target {
        Target::Vsock => VSOCK_CASES,
        Target::Fs => FS_CASES,
        Target::Blk | Target::Rng => &[],
    }
}

/// Writes a vsock packet header at `at`.
fn header(at: u64, src_cid: u64, dst_cid: u64, dst_port: u32, len: u32, ty: u16, op: u16) {
    write::<u64>(at, src_cid);
    write::<u64>(at + 8, dst_cid);
    write::<u32>(at + 16, PROBE_PORT);
    write::<u32>(at + 20, dst_port);
    write::<u32>(at + 24, len);
    write::<u16>(at + 28, ty);
    write::<u16>(at + 30, op);
    write::<u32>(at + 32, 0);
    write::<u32>(at + 36, 64 * 1024);
    write::<u32>(at + 40, 0);
}

/// Sends the header at `b.buf` as one descriptor of `len` bytes on tx.
fn send(b: &mut RawDevice, len: u32, c: &Clock) {
    FsDevice::put_desc(b.queue.desc, 0, b.buf, len, 0, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

/// The rx queue (vsock brings up rx, tx, event: rx is the first of the others).
fn rx(b: &mut RawDevice) -> Option<&mut Queue> {
    b.others.get_mut(0).and_then(Option::as_mut)
}

/// A connection request to a dead host port: the device must answer it with an RST in the
/// rx buffer the probe posts. True if it did.
pub(super) fn refused_connection(b: &mut RawDevice, c: &Clock, wait_ns: u64) -> bool {
    let reply = b.buf + 2048;
    write::<u16>(reply + 30, 0);
    let Some(q) = rx(b) else {
        return false;
    };
    FsDevice::put_desc(q.desc, 0, reply, 1024, DESC_F_WRITE, 0);
    submit_on(q, 0);
    header(
        b.buf,
        GUEST_CID,
        HOST_CID,
        DEAD_PORT,
        0,
        TYPE_STREAM,
        OP_REQUEST,
    );
    FsDevice::put_desc(b.queue.desc, 0, b.buf, HEADER_LEN, 0, 0);
    b.submit(0);
    if b.wait(c, wait_ns).is_none() {
        return false;
    }
    let Some(q) = rx(b) else {
        return false;
    };
    wait_on(q, c, wait_ns).is_some()
        && read::<u16>(reply + 30) == OP_RST
        && read::<u32>(reply + 16) == DEAD_PORT
        && read::<u32>(reply + 20) == PROBE_PORT
}

fn short_header(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    header(
        b.buf,
        GUEST_CID,
        HOST_CID,
        DEAD_PORT,
        0,
        TYPE_STREAM,
        OP_REQUEST,
    );
    send(b, 10, c);
}

fn split_header(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    // 4 + 7 + 33 header bytes over three descriptors, then 100 payload bytes outside RAM.
    header(
        b.buf,
        GUEST_CID,
        HOST_CID,
        DEAD_PORT,
        100,
        TYPE_STREAM,
        OP_RW,
    );
    let d = b.queue.desc;
    FsDevice::put_desc(d, 0, b.buf, 4, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, b.buf + 4, 7, DESC_F_NEXT, 2);
    FsDevice::put_desc(d, 2, b.buf + 11, 33, DESC_F_NEXT, 3);
    FsDevice::put_desc(d, 3, NOWHERE, 100, 0, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn huge_payload(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    header(
        b.buf,
        GUEST_CID,
        HOST_CID,
        DEAD_PORT,
        0xffff_fff0,
        TYPE_STREAM,
        OP_RW,
    );
    let d = b.queue.desc;
    FsDevice::put_desc(d, 0, b.buf, HEADER_LEN, DESC_F_NEXT, 1);
    FsDevice::put_desc(d, 1, b.buf + 64, u32::MAX, 0, 0);
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn bad_op(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    header(b.buf, GUEST_CID, HOST_CID, DEAD_PORT, 0, TYPE_STREAM, 0x77);
    send(b, HEADER_LEN, c);
}

fn bad_type(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    header(b.buf, GUEST_CID, HOST_CID, DEAD_PORT, 0, 9, OP_REQUEST);
    send(b, HEADER_LEN, c);
}

fn bad_cid(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    header(b.buf, 77, u64::MAX, DEAD_PORT, 0, TYPE_STREAM, OP_REQUEST);
    send(b, HEADER_LEN, c);
    header(
        b.buf,
        HOST_CID,
        GUEST_CID,
        DEAD_PORT,
        0,
        TYPE_STREAM,
        OP_REQUEST,
    );
    send(b, HEADER_LEN, c);
}

/// Posts rx descriptors with `post`, then asks for an RST the device must put in them.
fn rx_abuse(b: &mut RawDevice, c: &Clock, post: fn(u64, u64)) {
    let buf = b.buf;
    let Some(q) = rx(b) else {
        return;
    };
    post(q.desc, buf);
    submit_on(q, 0);
    header(
        b.buf,
        GUEST_CID,
        HOST_CID,
        DEAD_PORT,
        0,
        TYPE_STREAM,
        OP_REQUEST,
    );
    send(b, HEADER_LEN, c);
    if let Some(q) = rx(b) {
        let _ = wait_on(q, c, HOSTILE_WAIT_NS);
    }
}

fn rx_outside_ram(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    rx_abuse(b, c, |d, _| {
        FsDevice::put_desc(d, 0, NOWHERE, 16, DESC_F_NEXT | DESC_F_WRITE, 1);
        FsDevice::put_desc(d, 1, 0xffff_ffff_f000, u32::MAX, DESC_F_WRITE, 0);
    });
}

fn rx_loop(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    rx_abuse(b, c, |d, buf| {
        FsDevice::put_desc(d, 0, buf + 2048, 8, DESC_F_NEXT | DESC_F_WRITE, 1);
        FsDevice::put_desc(d, 1, buf + 3072, 8, DESC_F_NEXT | DESC_F_WRITE, 0);
    });
}

fn rx_read_only(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    rx_abuse(b, c, |d, buf| {
        FsDevice::put_desc(d, 0, buf + 2048, 1024, 0, 0);
    });
}

fn event_junk(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, _: &Clock) {
    let Some(q) = b.others.get_mut(1).and_then(Option::as_mut) else {
        return;
    };
    FsDevice::put_desc(q.desc, 0, NOWHERE, u32::MAX, DESC_F_NEXT | DESC_F_WRITE, 1);
    FsDevice::put_desc(q.desc, 1, NOWHERE, 8, DESC_F_NEXT | DESC_F_WRITE, 0);
    submit_on(q, 0);
    q.avail_idx = q.avail_idx.wrapping_add(5000);
    write::<u16>(q.avail + 2, q.avail_idx);
    for _ in 0..2000 {
        write::<u16>(q.notify, q.index);
    }
}

fn request_burst(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    for port in 0..BURST {
        header(
            b.buf,
            GUEST_CID,
            HOST_CID,
            10_000 + port,
            0,
            TYPE_STREAM,
            OP_REQUEST,
        );
        FsDevice::put_desc(b.queue.desc, 0, b.buf, HEADER_LEN, 0, 0);
        b.submit(0);
        if b.wait(c, HOSTILE_WAIT_NS).is_none() {
            return;
        }
    }
}

/// A FUSE request: an in header claiming `len` bytes and `opcode`, then `reply` writable
/// bytes (none: no descriptor for the reply).
fn fuse(b: &mut RawDevice, c: &Clock, len: u32, opcode: u32, reply: u32) {
    let (req, out) = (b.buf, b.buf + 1024);
    write::<u32>(req, len);
    write::<u32>(req + 4, opcode);
    write::<u64>(req + 8, 1);
    write::<u64>(req + 16, 1);
    // FUSE_INIT's body: protocol 7.31.
    write::<u32>(req + 40, 7);
    write::<u32>(req + 44, 31);
    let d = b.queue.desc;
    if reply == 0 {
        FsDevice::put_desc(d, 0, req, FUSE_IN_HEADER + 64, 0, 0);
    } else {
        FsDevice::put_desc(d, 0, req, FUSE_IN_HEADER + 64, DESC_F_NEXT, 1);
        FsDevice::put_desc(d, 1, out, reply, DESC_F_WRITE, 0);
    }
    b.submit(0);
    let _ = b.wait(c, HOSTILE_WAIT_NS);
}

fn fuse_lying_length(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    fuse(b, c, u32::MAX, FUSE_INIT, 16);
    fuse(b, c, 8, FUSE_INIT, 16);
}

fn fuse_unknown_opcode(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    fuse(b, c, FUSE_IN_HEADER, 9999, 256);
}

fn fuse_no_reply_buffer(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, c: &Clock) {
    fuse(b, c, FUSE_IN_HEADER + 64, FUSE_INIT, 0);
}

fn hiprio_junk(b: &mut RawDevice, _: &mut Root, _: DeviceFunction, _: &Clock) {
    let Some(q) = b.others.get_mut(0).and_then(Option::as_mut) else {
        return;
    };
    FsDevice::put_desc(q.desc, 0, NOWHERE, u32::MAX, DESC_F_NEXT, 1);
    FsDevice::put_desc(q.desc, 1, NOWHERE, 8, DESC_F_NEXT, 0);
    submit_on(q, 0);
    for _ in 0..2000 {
        write::<u16>(q.notify, q.index);
    }
}
