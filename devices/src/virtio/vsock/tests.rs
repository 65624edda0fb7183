//! Unit tests: the packet parser over fake guest memory, the connection state machine on its
//! own, the muxer with real Unix sockets and the guest played by hand, and the worker moving
//! packets between fake queues and the muxer.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::conn::{Connection, Event, State, BUF_ALLOC};
use super::muxer::{parse_connect, Muxer, FIRST_HOST_PORT};
use super::packet::*;
use super::worker::VsockWorker;
use crate::virtio::{Activation, ActiveQueue, GuestMemory, VirtioInterrupt, F_VERSION_1};

const GUEST_CID: u64 = 3;
use crate::virtio::test_driver::{mem, Driver};

fn hdr(op: Op, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op: op.to_u16(),
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// Pops the single chain `driver` published and parses it.
fn parse_one(mem: &GuestMemory, driver: &Driver) -> Result<TxPacket, PacketError> {
    let mut q = driver.queue(mem);
    let chain = q.iter(mem).unwrap().next().unwrap();
    parse_tx(mem, chain)
}

#[test]
fn header_layout_matches_the_spec() {
    let h = Header {
        src_cid: 0x0102,
        dst_cid: 2,
        src_port: 0x11,
        dst_port: 0x22,
        len: 5,
        type_: 1,
        op: 5,
        flags: 3,
        buf_alloc: 0x1000,
        fwd_cnt: 7,
    };
    let b = h.to_bytes();
    assert_eq!(b[0..2], [0x02, 0x01]);
    assert_eq!(b[8], 2);
    assert_eq!(b[16], 0x11);
    assert_eq!(b[20], 0x22);
    assert_eq!(b[24], 5);
    assert_eq!((b[28], b[30], b[32]), (1, 5, 3));
    assert_eq!(b[36..40], 0x1000u32.to_le_bytes());
    assert_eq!(b[40], 7);
    assert_eq!(Header::from_bytes(&b), h);
    assert_eq!(h.op(), Some(Op::Rw));
    assert_eq!(Op::from_u16(8), None);
}

#[test]
fn tx_header_and_payload_may_span_descriptors() {
    let mem = mem();
    let mut d = Driver::new(0x10000);
    let mut h = hdr(Op::Rw, 5, 6);
    h.len = 10;
    let raw = h.to_bytes();
    mem.write_slice(&raw[..20], GuestAddress(0x40000)).unwrap();
    mem.write_slice(&raw[20..], GuestAddress(0x41000)).unwrap();
    mem.write_slice(b"0123456789", GuestAddress(0x41000 + 24))
        .unwrap();
    d.add(&mem, &[(0x40000, 20, false), (0x41000, 34, false)]);
    let pkt = parse_one(&mem, &d).unwrap();
    assert_eq!(pkt.hdr, h);
    assert_eq!(pkt.payload, b"0123456789");
}

#[test]
fn hostile_tx_chains_are_refused() {
    let mem = mem();
    // Too short for a header.
    let mut d = Driver::new(0x10000);
    d.add(&mem, &[(0x40000, 43, false)]);
    assert_eq!(parse_one(&mem, &d), Err(PacketError::ShortHeader(43)));
    // Length beyond the chain.
    let mut d = Driver::new(0x10000);
    let mut h = hdr(Op::Rw, 5, 6);
    h.len = 100;
    mem.write_slice(&h.to_bytes(), GuestAddress(0x40000))
        .unwrap();
    d.add(&mem, &[(0x40000, 64, false)]);
    assert_eq!(
        parse_one(&mem, &d),
        Err(PacketError::ShortPayload { len: 100, have: 20 })
    );
    // Length beyond the host limit, whatever the chain holds.
    let mut d = Driver::new(0x10000);
    h.len = u32::MAX;
    mem.write_slice(&h.to_bytes(), GuestAddress(0x40000))
        .unwrap();
    d.add(&mem, &[(0x40000, 64, false)]);
    assert_eq!(parse_one(&mem, &d), Err(PacketError::TooLong(u32::MAX)));
    // Writable descriptors are not read; a length on a control op is not copied.
    let mut d = Driver::new(0x10000);
    let mut h = hdr(Op::Request, 5, 6);
    h.len = 1000;
    mem.write_slice(&h.to_bytes(), GuestAddress(0x40000))
        .unwrap();
    d.add(&mem, &[(0x40000, 44, false), (0x50000, 4096, true)]);
    let pkt = parse_one(&mem, &d).unwrap();
    assert!(pkt.payload.is_empty());
    // A descriptor outside guest memory.
    let mut d = Driver::new(0x10000);
    d.add(&mem, &[(0x2_0000_0000, 44, false)]);
    assert!(matches!(parse_one(&mem, &d), Err(PacketError::Memory(_))));
}

#[test]
fn rx_packets_fill_split_buffers() {
    let mem = mem();
    let mut d = Driver::new(0x10000);
    d.add(&mem, &[(0x40000, 30, true), (0x41000, 100, true)]);
    let mut q = d.queue(&mem);
    let chain = q.iter(&mem).unwrap().next().unwrap();
    let buf = RxBuffer::new(chain).unwrap();
    assert_eq!(buf.max_payload(), 130 - HDR_LEN);
    let h = hdr(Op::Rw, 1, 2);
    let used = buf.write(&mem, &h, b"payload").unwrap();
    assert_eq!(used as usize, HDR_LEN + 7);
    let mut raw = [0u8; HDR_LEN];
    mem.read_slice(&mut raw[..30], GuestAddress(0x40000))
        .unwrap();
    mem.read_slice(&mut raw[30..], GuestAddress(0x41000))
        .unwrap();
    assert_eq!(Header::from_bytes(&raw).len, 7);
    let mut data = [0u8; 7];
    mem.read_slice(&mut data, GuestAddress(0x41000 + 14))
        .unwrap();
    assert_eq!(&data, b"payload");
    assert!(matches!(
        buf.write(&mem, &h, &[0u8; 200]),
        Err(PacketError::RxTooSmall { .. })
    ));
    // A buffer smaller than a header is refused outright.
    let mut d = Driver::new(0x10000);
    d.add(&mem, &[(0x40000, 43, true), (0x41000, 100, false)]);
    let mut q = d.queue(&mem);
    let chain = q.iter(&mem).unwrap().next().unwrap();
    assert!(RxBuffer::new(chain).is_err());
}

#[test]
fn connect_lines() {
    assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
    assert_eq!(parse_connect(b"connect 52"), Some(52));
    assert_eq!(parse_connect(b"CoNnEcT 7\r"), Some(7));
    assert_eq!(parse_connect(b"CONNECT"), None);
    assert_eq!(parse_connect(b"CONNECT -1"), None);
    assert_eq!(parse_connect(b"CONNECT +1"), None);
    assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
    assert_eq!(parse_connect(b"CONNECT 1 2"), None);
    assert_eq!(parse_connect(b"LISTEN 1"), None);
    assert_eq!(parse_connect(b"\xffCONNECT 1"), None);
}

#[test]
fn host_initiated_connection_life() {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut c = Connection::host_initiated(FIRST_HOST_PORT, 1024, b"early".to_vec(), deadline);
    let req = c.next_control(GUEST_CID).unwrap();
    assert_eq!(req.op(), Some(Op::Request));
    assert_eq!((req.src_port, req.dst_port), (FIRST_HOST_PORT, 1024));
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!(req.buf_alloc, BUF_ALLOC);
    assert!(c.next_control(GUEST_CID).is_none());
    // Data before the guest accepted is a protocol error.
    let mut early = Connection::host_initiated(1, 2, Vec::new(), deadline);
    assert_eq!(early.on_packet(&hdr(Op::Rw, 2, 1), b"x"), Event::Reset);

    let mut resp = hdr(Op::Response, 1024, FIRST_HOST_PORT);
    resp.buf_alloc = 8;
    assert_eq!(c.on_packet(&resp, &[]), Event::Connected);
    assert_eq!(c.state(), State::Established);
    // Early bytes go out first, bounded by the guest's credit.
    assert!(c.has_early_data());
    assert_eq!(c.take_early_data(100), b"early");
    c.sent_to_guest(5);
    assert_eq!(c.peer_free(), 3);
    // Guest data lands behind the OK line, which does not count as forwarded.
    assert_eq!(
        c.on_packet(&hdr(Op::Rw, 1024, FIRST_HOST_PORT), b"abc"),
        Event::DataForHost
    );
    c.queue_ok_line();
    let line = format!("OK {FIRST_HOST_PORT}\n");
    let mut out = Vec::new();
    while c.has_data_for_host() {
        let chunk = c.to_host()[..1.min(c.to_host().len())].to_vec();
        out.extend_from_slice(&chunk);
        c.wrote_to_host(chunk.len());
    }
    assert_eq!(out, [line.as_bytes(), b"abc"].concat());
    let h = c.header(GUEST_CID, Op::CreditUpdate);
    assert_eq!(h.fwd_cnt, 3);
    // Host closes: SHUTDOWN owed, then the guest's RST ends it.
    c.host_closed(deadline);
    let sd = c.next_control(GUEST_CID).unwrap();
    assert_eq!(sd.op(), Some(Op::Shutdown));
    assert_eq!(sd.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(
        c.on_packet(&hdr(Op::Rst, 1024, FIRST_HOST_PORT), &[]),
        Event::Closed
    );
}

#[test]
fn credit_is_enforced_both_ways() {
    let mut req = hdr(Op::Request, 40, 2000);
    req.buf_alloc = 1000;
    req.fwd_cnt = 0;
    let mut c = Connection::guest_initiated(&req);
    assert_eq!(c.next_control(GUEST_CID).unwrap().op(), Some(Op::Response));
    assert_eq!(c.peer_free(), 1000);
    c.sent_to_guest(1000);
    assert_eq!(c.peer_free(), 0);
    assert!(!c.can_send_data());
    let mut upd = hdr(Op::CreditUpdate, 40, 2000);
    upd.buf_alloc = 1000;
    upd.fwd_cnt = 600;
    assert_eq!(c.on_packet(&upd, &[]), Event::None);
    assert_eq!(c.peer_free(), 600);
    // Nonsense credit (consumed more than was sent) means no credit, not a wrap-around.
    upd.fwd_cnt = 5000;
    c.on_packet(&upd, &[]);
    assert_eq!(c.peer_free(), 0);
    // Counters wrap as the spec's do.
    let mut w = Connection::guest_initiated(&req);
    w.sent_to_guest(u32::MAX as usize);
    w.sent_to_guest(11);
    upd.fwd_cnt = 5;
    w.on_packet(&upd, &[]);
    assert_eq!(w.peer_free(), 1000 - 5);

    // The guest may not send more than BUF_ALLOC unconsumed bytes.
    let rw = hdr(Op::Rw, 40, 2000);
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..(BUF_ALLOC as usize / chunk.len()) {
        assert_eq!(c.on_packet(&rw, &chunk), Event::DataForHost);
    }
    c.wrote_to_host(BUF_ALLOC as usize / 2);
    assert!(c.owes_control(), "freed space is announced");
    assert_eq!(
        c.next_control(GUEST_CID).unwrap().op(),
        Some(Op::CreditUpdate)
    );
    assert_eq!(c.on_packet(&rw, &chunk), Event::DataForHost);
    assert_eq!(c.on_packet(&rw, &chunk), Event::DataForHost);
    assert_eq!(c.on_packet(&rw, &[0u8; 1]), Event::Reset);

    let mut r = Connection::guest_initiated(&req);
    assert_eq!(
        r.on_packet(&hdr(Op::CreditRequest, 40, 2000), &[]),
        Event::None
    );
    r.next_control(GUEST_CID);
    assert_eq!(
        r.next_control(GUEST_CID).unwrap().op(),
        Some(Op::CreditUpdate)
    );
}

#[test]
fn shutdown_and_protocol_errors() {
    let req = hdr(Op::Request, 40, 2000);
    let mut c = Connection::guest_initiated(&req);
    let mut sd = hdr(Op::Shutdown, 40, 2000);
    sd.flags = SHUTDOWN_SEND;
    assert_eq!(c.on_packet(&sd, &[]), Event::PeerShutdownSend);
    assert!(c.peer_done_sending());
    assert_eq!(c.on_packet(&hdr(Op::Rw, 40, 2000), b"late"), Event::Reset);
    sd.flags = SHUTDOWN_RCV;
    let mut c = Connection::guest_initiated(&req);
    assert_eq!(c.on_packet(&sd, &[]), Event::None);
    assert!(!c.can_send_data());
    sd.flags = SHUTDOWN_SEND;
    assert_eq!(c.on_packet(&sd, &[]), Event::Reset);

    let mut c = Connection::guest_initiated(&req);
    assert_eq!(c.on_packet(&req, &[]), Event::Reset, "second REQUEST");
    let mut c = Connection::guest_initiated(&req);
    let mut bad = hdr(Op::Rw, 40, 2000);
    bad.op = 99;
    assert_eq!(c.on_packet(&bad, &[]), Event::Reset, "unknown op");
    let mut c = Connection::guest_initiated(&req);
    let mut dgram = hdr(Op::Rw, 40, 2000);
    dgram.type_ = 2;
    assert_eq!(c.on_packet(&dgram, b"x"), Event::Reset, "unknown type");
}

mod muxer_tests;
